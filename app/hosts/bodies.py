"""How report bodies are stored in host_reports.body until the diff worker applies them, told apart by
the first byte:

    b"L" + lz4(JSON)   an installed report in the agent's exact json.dumps() form (reports.fast_count
                       matched it) with no "}, {" inside its strings;
    b"M" + lz4(JSON)   anything else.

Read only (stored by earlier versions, replaced as hosts report): b"S" + zlib(JSON) and zlib(JSON)
(0x78), the same two forms zlib-compressed; b"{", plain JSON. lz4 rather than zlib: somewhat larger,
but faster both ways.
"""
from __future__ import annotations

import lz4.block
import orjson

try:  # ISA-L reads the zlib streams of earlier versions faster than zlib
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover - isal is a dependency
    import zlib

from app.hosts.reports import INSTALLED

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
