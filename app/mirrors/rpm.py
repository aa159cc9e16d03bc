"""An rpm repository as a mirror reads it: the verified repodata/repomd.xml, its primary index (checked
against repomd's SHA-256 and size, decompressed with a cap, any compression), its entries, and the other
metadata a mirror carries over (errata, module streams, package groups).

createrepo_c parses both (the library createrepo_c and dnf's own tools use).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import createrepo_c as cr
from yarl import URL

from .common import ArchiveError, Entry, IndexFile, is_hex_digest, safe_filename

# The repomd records a mirror republishes as the upstream served them: errata (`dnf updateinfo`, `dnf upgrade
# --security`), module streams (`dnf module`) and package groups (`dnf group`). Not the sqlite, zchunk or delta
# records: they describe the upstream's own primary, which Depot renders again.
CARRIED = frozenset({"updateinfo", "modules", "group", "group_gz", "group_xz", "group_bz2", "group_zst"})


@dataclass(frozen=True)
class Carried:
    """One carried record: its file (checked as an index is) and what the upstream's repomd says of it."""
    type: str
    index: IndexFile
    open_sha256: str | None
    open_size: int | None

    @property
    def name(self) -> str:
        """The file's name without the digest the upstream may prefix it with (its suffix is its compression)."""
        base = self.index.path.rsplit("/", 1)[-1]
        head, _, rest = base.partition("-")
        return rest if rest and is_hex_digest(head, (32, 40, 64, 128)) else base


def _parse_file(data: bytes, parse) -> None:
    fd, path = tempfile.mkstemp(prefix="depot-repodata-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        parse(path)
    finally:
        os.unlink(path)


def _records(repomd_text: bytes) -> list:
    repomd = cr.Repomd()
    try:
        _parse_file(repomd_text, lambda path: cr.xml_parse_repomd(path, repomd, lambda *a: None))
    except Exception as exc:  # createrepo_c raises its own error type with a C message
        raise ArchiveError(f"repomd.xml: unreadable ({str(exc)[:200]})") from None
    return repomd.records


def _index(rec) -> IndexFile:
    """A record's file, refused unless it lives in the repository and has a SHA-256."""
    if rec.location_base:
        raise ArchiveError(f"repomd.xml: the {rec.type} index lives on another server (xml:base)")
    if (rec.checksum_type or "").lower() != "sha256":
        raise ArchiveError(f"repomd.xml: {rec.type} has a {rec.checksum_type} checksum (SHA-256 is required)")
    if not safe_filename(rec.location_href or ""):
        raise ArchiveError(f"repomd.xml: unsafe {rec.type} location {rec.location_href!r}")
    return IndexFile(rec.location_href, rec.checksum.lower(), int(rec.size))


@dataclass(frozen=True)
class Repomd:
    """What a mirror reads of a verified repomd.xml: its primary index and the records it carries over."""
    primary: IndexFile
    carried: list[Carried]


def read_repomd(repomd_text: bytes) -> Repomd:
    """ArchiveError if it lists no primary index, or a record used is unusable (another server, no SHA-256,
    unsafe location)."""
    primary, carried = None, []
    for rec in _records(repomd_text):
        if rec.type == "primary" and primary is None:
            primary = _index(rec)
        elif rec.type in CARRIED:
            sha = (rec.checksum_open or "").lower() if (rec.checksum_open_type or "").lower() == "sha256" else ""
            sha = sha if is_hex_digest(sha) else None
            size = int(rec.size_open or 0) if sha else 0
            carried.append(Carried(rec.type, _index(rec), sha, size if size > 0 else None))
    if primary is None:
        raise ArchiveError("repomd.xml lists no primary index")
    return Repomd(primary, carried)


def parse_primary(xml: bytes, source: str, arches: set[str], base: URL) -> list[Entry]:
    out: list[Entry] = []
    problems: list[str] = []

    def package(pkg) -> bool:
        if pkg.arch not in arches:
            return True
        href = pkg.location_href or ""
        if pkg.location_base:
            problems.append(f"package {pkg.name} lives on another server (xml:base)")
        elif not safe_filename(href):
            problems.append(f"package {pkg.name} has an unsafe location {href[:200]!r} (outside the repository)")
        elif (pkg.checksum_type or "").lower() != "sha256" or len(pkg.pkgId or "") != 64:
            problems.append(f"package {pkg.name} has no SHA-256 checksum")
        else:
            evr = f"{pkg.epoch or '0'}:{pkg.version}-{pkg.release}"
            out.append(Entry(pkg.name, evr, pkg.arch, href, int(pkg.size_package or 0), pkg.pkgId.lower(), base))
        return not problems          # stop at the first refused entry

    try:
        _parse_file(xml, lambda path: cr.xml_parse_primary(path, pkgcb=package, do_files=False,
                                                           warningcb=lambda *a: None))
    except Exception as exc:
        if not problems:
            raise ArchiveError(f"{source}: unreadable ({str(exc)[:200]})") from None
    if problems:
        raise ArchiveError(f"{source}: {problems[0]}")
    return out
