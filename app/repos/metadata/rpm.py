"""Render repodata/ (primary, filelists, other .xml.gz and repomd.xml) from stored chunks.

Each package's XML chunks were produced by createrepo_c when it was uploaded (or signed), so a
rebuild is string concatenation + gzip + sha256: no rpm header is read again. The output is
the same format createrepo_c writes (unique, checksum-prefixed file names), which old yum and
current dnf both read.
"""
from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

GZIP_LEVEL = 6

HEADERS = {
    "primary": ('<metadata xmlns="http://linux.duke.edu/metadata/common" '
                'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{n}">\n', "</metadata>\n"),
    "filelists": ('<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="{n}">\n',
                  "</filelists>\n"),
    "other": ('<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="{n}">\n', "</otherdata>\n"),
}
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass
class RpmEntry:
    name: str
    arch: str
    primary: str
    filelists: str
    other: str


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def render_rpm(out_dir, entries: list[RpmEntry], *, revision: int | None = None) -> Path:
    """Write repodata/ under out_dir; return the repomd.xml path (unsigned)."""
    repodata = Path(out_dir) / "repodata"
    repodata.mkdir(parents=True, exist_ok=True)
    now = int(time.time()) if revision is None else revision
    n = len(entries)
    records = []
    for kind, (head, tail) in HEADERS.items():
        parts = [XML_DECL, head.format(n=n)]
        parts.extend(getattr(e, kind) for e in entries)
        parts.append(tail)
        plain = "".join(parts).encode("utf-8")
        packed = _gzip(plain)
        digest = hashlib.sha256(packed).hexdigest()
        href = f"repodata/{digest}-{kind}.xml.gz"
        (repodata / f"{digest}-{kind}.xml.gz").write_bytes(packed)
        records.append(
            f'  <data type="{kind}">\n'
            f'    <checksum type="sha256">{digest}</checksum>\n'
            f'    <open-checksum type="sha256">{hashlib.sha256(plain).hexdigest()}</open-checksum>\n'
            f'    <location href="{href}"/>\n'
            f"    <timestamp>{now}</timestamp>\n"
            f"    <size>{len(packed)}</size>\n"
            f"    <open-size>{len(plain)}</open-size>\n"
            f"  </data>\n")
    repomd = (XML_DECL + '<repomd xmlns="http://linux.duke.edu/metadata/repo" '
              'xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n'
              f"  <revision>{now}</revision>\n" + "".join(records) + "</repomd>\n")
    path = repodata / "repomd.xml"
    path.write_text(repomd, encoding="utf-8")
    return path
