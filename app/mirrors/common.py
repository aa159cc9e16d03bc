"""What every archive type shares: index files checked against their signed digests and decompressed
with a cap, the entries of a plan (one file to have), and their selection."""
from __future__ import annotations

import bz2
import fnmatch
import functools
import hashlib
import lzma
import re
import zlib
from dataclasses import dataclass
from typing import Callable

import zstandard
from yarl import URL


class ArchiveError(Exception):
    """The archive's metadata is refused; the message names the file."""


@dataclass
class IndexFile:
    path: str            # relative to dists/<dist>/
    sha256: str
    size: int


def check_index(index: IndexFile, data: bytes) -> None:
    if len(data) != index.size:
        raise ArchiveError(f"{index.path}: {len(data)} bytes, the Release says {index.size}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != index.sha256:
        raise ArchiveError(f"{index.path}: SHA-256 {actual}, the Release says {index.sha256}")


def decompress(index: IndexFile, data: bytes, limit: int) -> bytes:
    """The index's text, refusing more than `limit` bytes once decompressed (checked as it grows)."""
    ext = "." + index.path.rsplit(".", 1)[1] if "." in index.path.rsplit("/", 1)[-1] else ""
    too_big = ArchiveError(f"{index.path}: larger than the {limit} byte limit once decompressed "
                           "(DEPOT_MIRROR_INDEX_MAX_BYTES)")
    try:
        if ext == "":
            out = data
        elif ext == ".gz":
            d = zlib.decompressobj(wbits=47)
            out = d.decompress(data, limit + 1)
        elif ext == ".xz":
            d = lzma.LZMADecompressor()
            out = d.decompress(data, max_length=limit + 1)
        elif ext == ".bz2":
            d = bz2.BZ2Decompressor()
            out = d.decompress(data, max_length=limit + 1)
        elif ext == ".zst":
            reader = zstandard.ZstdDecompressor().stream_reader(data)
            out = reader.read(limit + 1)
        else:
            raise ArchiveError(f"{index.path}: unknown compression")
    except (zlib.error, lzma.LZMAError, OSError, EOFError, zstandard.ZstdError) as exc:
        raise ArchiveError(f"{index.path}: cannot be decompressed ({exc})") from None
    if len(out) > limit:
        raise too_big
    return out


@dataclass
class Entry:
    name: str
    version: str
    arch: str
    filename: str         # relative to the archive root, checked
    size: int
    sha256: str
    base: URL             # the URL `filename` is relative to
    stanza: str | None = None   # deb: the package's paragraph in the signed index


def safe_filename(value: str) -> bool:
    """A Filename must stay inside the archive: relative, no `..`, no backslash, no scheme, no NUL."""
    if not value or value.startswith("/") or "\\" in value or "\x00" in value or ":" in value.split("/", 1)[0]:
        return False
    parts = value.split("/")
    return all(p not in ("", ".", "..") for p in parts) and _CONTROL.search(value) is None


_CONTROL = re.compile(r"[\x00-\x1f]")
_HEX = re.compile(r"[0-9a-f]+")


def is_hex_digest(value: str, lengths: tuple[int, ...] = (64,)) -> bool:
    """Lower-case hex of one of these lengths (64: a SHA-256)."""
    return len(value) in lengths and _HEX.fullmatch(value) is not None


def select(entries: list[Entry], include: list[str], exclude: list[str], keep_latest: int | None,
           compare: Callable[[str, str], int]) -> list[Entry]:
    """One entry per file; include/exclude are glob patterns on package names; keep_latest keeps the N
    highest versions of each (name, arch) (udebs apart), in the package type's version order (`compare`)."""
    by_sha: dict[str, Entry] = {}
    for e in entries:
        if include and not any(fnmatch.fnmatchcase(e.name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(e.name, p) for p in exclude):
            continue
        by_sha.setdefault(e.sha256, e)
    chosen = list(by_sha.values())
    if keep_latest:
        groups: dict[tuple[str, str, bool], list[Entry]] = {}
        for e in chosen:
            groups.setdefault((e.name, e.arch, e.filename.endswith(".udeb")), []).append(e)
        chosen = []
        for group in groups.values():
            try:
                group.sort(key=functools.cmp_to_key(lambda a, b: compare(a.version, b.version)), reverse=True)
            except ValueError as exc:
                raise ArchiveError(f"{group[0].name}: an invalid version ({exc})") from None
            versions: list[str] = []
            for e in group:
                if e.version not in versions:
                    versions.append(e.version)
                if versions.index(e.version) < keep_latest:
                    chosen.append(e)
    return chosen
