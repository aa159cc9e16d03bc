"""An rpm repository as a mirror reads it: the verified repodata/repomd.xml, its primary index (checked
against repomd's SHA-256 and size, decompressed with a cap, any compression), and its entries.

createrepo_c parses both (the library createrepo_c and dnf's own tools use).
"""
from __future__ import annotations

import os
import tempfile

import createrepo_c as cr
from yarl import URL

from .common import ArchiveError, Entry, IndexFile, safe_filename


def _parse_file(data: bytes, parse) -> None:
    fd, path = tempfile.mkstemp(prefix="depot-repodata-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        parse(path)
    finally:
        os.unlink(path)


def primary_index(repomd_text: bytes) -> IndexFile:
    """The primary record of a repomd.xml; ArchiveError if it has none usable."""
    repomd = cr.Repomd()
    try:
        _parse_file(repomd_text, lambda path: cr.xml_parse_repomd(path, repomd, lambda *a: None))
    except Exception as exc:  # createrepo_c raises its own error type with a C message
        raise ArchiveError(f"repomd.xml: unreadable ({str(exc)[:200]})") from None
    for rec in repomd.records:
        if rec.type != "primary":
            continue
        if rec.location_base:
            raise ArchiveError("repomd.xml: the primary index lives on another server (xml:base)")
        if (rec.checksum_type or "").lower() != "sha256":
            raise ArchiveError(f"repomd.xml: primary has a {rec.checksum_type} checksum (SHA-256 is required)")
        if not safe_filename(rec.location_href or ""):
            raise ArchiveError(f"repomd.xml: unsafe primary location {rec.location_href!r}")
        return IndexFile(rec.location_href, rec.checksum.lower(), int(rec.size))
    raise ArchiveError("repomd.xml lists no primary index")


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
