"""gzip for repository indexes: ISA-L (python-isal) when installed, zlib otherwise.

Metadata compression is most of a rebuild's CPU with zlib. ISA-L level 2 writes a standard gzip
stream (any zlib reader, so apt, dnf, yum and libsolv, reads it) many times faster, a little larger
than zlib 6 and smaller than zlib 1-3.
The output never depends on the machine's CPU: a block compressed once is reused as it is.
"""
from __future__ import annotations

import zlib

try:
    from isal import isal_zlib as _impl
    LEVEL = 2
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps Depot working without it
    _impl = zlib
    LEVEL = 3

BACKEND = _impl.__name__


def gzip_bytes(data: bytes, level: int | None = None) -> bytes:
    """One gzip member (mtime 0, no file name: identical input gives identical output)."""
    c = _impl.compressobj(LEVEL if level is None else level, _impl.DEFLATED, 31)
    return c.compress(data) + c.flush()
