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


_NO_ID = bytes(4)


class Ids(dict):
    """Item key -> its dictionary id as the IDS form stores it (int32, little-endian; put() and id_of()), and
    four zero bytes for a key it lacks, also as `ids[key]`, that key then appended to `missed`: encode_ids looks
    a report's items up in one operator.itemgetter call and joins their ids in one bytes.join, both in C (an
    itemgetter call would otherwise stop at the first item not known), and has the keys it lacked in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.missed: list[bytes] = []

    def __missing__(self, key) -> bytes:
        self.missed.append(key)
        return _NO_ID

    def put(self, key: bytes, id_: int) -> None:
        self[key] = id_.to_bytes(4, "little")

    def id_of(self, key: bytes) -> int | None:
        packed = self.get(key)
        return None if packed is None else int.from_bytes(packed, "little")


def encode_ids(raw: bytes, known: Ids, max_missing: float = 0.25) -> tuple[bytes, int] | None:
    """An installed report in the agent's exact form as the IDS form, and its item count; None if it is not
    in that form or `known` (a copy of the dictionary) lacks more than `max_missing` of its items (then the
    caller checks and stores it whole).

    An item `known` holds is a valid one: the dictionary's keys are made from checked reports. Only the
    others are checked, each on its own (reports.is_agent_item); the layout, and that no item holds "}, {",
    follow from the split. So the body is valid JSON whose items are exactly these."""
    keys = agent_items(raw)
    if keys is None:
        return None
    missed = known.missed = []  # (no other coroutine runs until this call returns)
    packed = b"".join(operator.itemgetter(*keys)(known)) if len(keys) > 1 else known[keys[0]]
    if missed:
        if len(missed) > len(keys) * max_missing:
            return None
        if not all(map(is_agent_item, missed)):
            return None
    return IDS + len(keys).to_bytes(4, "little") + packed + b"}, {".join(missed), len(keys)


def decode_ids(stored: bytes) -> tuple[array.array, list[bytes]]:
    """An IDS body -> (each item's id in report order, 0 where the server lacked it; the keys of those 0s, in order)."""
    n = int.from_bytes(stored[1:5], "little")
    found = array.array("i")
    found.frombytes(memoryview(stored)[5:5 + 4 * n])
    if sys.byteorder == "big":
        found.byteswap()
    rest = stored[5 + 4 * n:]
    return found, rest.split(b"}, {") if rest else []
