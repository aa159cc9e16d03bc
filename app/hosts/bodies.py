"""How report bodies are stored in host_reports.body until the diff worker applies them, told apart by
the first byte:

    b"I" + n + ids + keys
                       an installed report in the agent's exact json.dumps() form, read by the server
                       process (encode_ids): its n items' dictionary ids in report order (int32, little-endian;
                       0 for an item the process's copy of the dictionary lacked), then the keys of those
                       items (inventory.item_key, in order, joined by "}, {"). The worker then neither
                       decompresses nor parses it;
    b"L" + lz4(JSON)   an installed report in the agent's exact json.dumps() form (reports.fast_count
                       matched it) with no "}, {" inside its strings;
    b"M" + lz4(JSON)   anything else.

Read only (stored by earlier versions, replaced as hosts report): b"S" + zlib(JSON) and zlib(JSON)
(0x78), the same two forms zlib-compressed; b"{", plain JSON. lz4 rather than zlib: somewhat larger,
but faster both ways.
"""
from __future__ import annotations

import array
import itertools
import operator
import sys

import lz4.block
import orjson

try:  # ISA-L reads the zlib streams of earlier versions faster than zlib
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover - isal is a dependency
    import zlib

from app.hosts.reports import INSTALLED, is_agent_item

IDS = b"I"
SPLITTABLE = b"L"
_SPLIT_FORMS = (SPLITTABLE, b"S")
_PLAIN = b"M"


def encode_body(body: bytes, splittable: bool) -> bytes:
    # Compressed: far less WAL and TOAST work for PostgreSQL than raw JSON.
    return (SPLITTABLE if splittable else _PLAIN) + lz4.block.compress(body)


def is_split_form(stored: bytes) -> bool:
    """A stored body in the agent's exact form (is_splittable decided it when the report came)."""
    return stored[:1] in _SPLIT_FORMS


def is_splittable(kind: str, fast_count: int | None) -> bool:
    # fast_count proved the layout, and its strings hold no "}, {" (see reports._STR).
    return kind == INSTALLED and fast_count is not None


def decode_body(stored: bytes) -> bytes:
    """The JSON of a stored body, whichever form (see above) it is in."""
    form = stored[:1]
    if form == SPLITTABLE or form == _PLAIN:
        return lz4.block.decompress(memoryview(stored)[1:])
    if form == b"{":
        return stored
    return zlib.decompress(stored[1:] if form == b"S" else stored)


def load_body(stored: bytes) -> dict:
    return orjson.loads(decode_body(stored))


# A body in the agent's exact form is its items between these, separated by "}, {" (see reports._STR).
AGENT_HEAD = b'{"installed_packages": [{'
AGENT_TAIL = b"}]}"


def agent_items(raw: bytes) -> list[bytes] | None:
    """The items of an installed report laid out as the agent's (HEAD, "}, {" between items, TAIL), each as
    its key (`"name": ..., "version": ...`); None for any other layout. The items themselves are not checked."""
    if len(raw) < len(AGENT_HEAD) + len(AGENT_TAIL) or not raw.startswith(AGENT_HEAD) or not raw.endswith(AGENT_TAIL):
        return None
    items = raw.split(b"}, {")  # (not a slice of raw first: that would copy the whole body)
    items[0] = items[0][len(AGENT_HEAD):]
    items[-1] = items[-1][:-len(AGENT_TAIL)]
    return items


class Ids(dict):
    """Item key -> dictionary id, and 0 for a key it lacks, also as `ids[key]`: encode_ids looks a report's
    items up in one operator.itemgetter call, in C, which would otherwise stop at the first item not known."""

    def __missing__(self, key) -> int:
        return 0


def encode_ids(raw: bytes, known: dict[bytes, int], max_missing: float = 0.25) -> tuple[bytes, int] | None:
    """An installed report in the agent's exact form as the IDS form, and its item count; None if it is not
    in that form or `known` (a copy of the dictionary: key -> id) lacks more than `max_missing` of its items
    (then the caller checks and stores it whole).

    An item `known` holds is a valid one: the dictionary's keys are made from checked reports. Only the
    others are checked, each on its own (reports.is_agent_item); the layout, and that no item holds "}, {",
    follow from the split. So the body is valid JSON whose items are exactly these."""
    keys = agent_items(raw)
    if keys is None:
        return None
    if isinstance(known, Ids) and len(keys) > 1:  # its lookups, 0 for an unknown item, in one call in C
        found = array.array("i", operator.itemgetter(*keys)(known))
    else:
        found = array.array("i", map(known.get, keys, itertools.repeat(0)))
    missing = found.count(0)
    if missing:
        if missing > len(keys) * max_missing:
            return None
        keys = list(itertools.compress(keys, map(operator.not_, found)))
        if not all(map(is_agent_item, keys)):
            return None
    if sys.byteorder == "big":
        found.byteswap()
    return IDS + len(found).to_bytes(4, "little") + found.tobytes() + b"}, {".join(keys if missing else ()), len(found)


def decode_ids(stored: bytes) -> tuple[array.array, list[bytes]]:
    """An IDS body -> (each item's id in report order, 0 where the server lacked it; the keys of those 0s, in order)."""
    n = int.from_bytes(stored[1:5], "little")
    found = array.array("i")
    found.frombytes(memoryview(stored)[5:5 + 4 * n])
    if sys.byteorder == "big":
        found.byteswap()
    rest = stored[5 + 4 * n:]
    return found, rest.split(b"}, {") if rest else []
