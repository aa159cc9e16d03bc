"""A Debian archive as a mirror reads it: the verified Release, the Packages indexes it lists (each
checked against the Release's SHA-256 and size, decompressed with a cap), and their entries.

python-debian's deb822 parses Release and Packages (the format's reference parser in Python; apt_pkg
is not used, so nothing depends on the system's apt bindings).
"""
from __future__ import annotations

import bz2
import fnmatch
import hashlib
import lzma
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import zstandard
from debian import deb822
from debian.debian_support import Version


class ArchiveError(Exception):
    """The archive's metadata is refused; the message names the file."""


# Preferred first: the smallest to download; plain last.
COMPRESSIONS = (".xz", ".zst", ".gz", ".bz2", "")


@dataclass
class IndexFile:
    path: str            # relative to dists/<dist>/
    sha256: str
    size: int


@dataclass
class Release:
    text: bytes
    fields: deb822.Release
    files: dict[str, IndexFile]
    by_hash: bool

    @property
    def date(self) -> str | None:
        return self.fields.get("Date")


def parse_release(text: bytes, *, now: datetime | None = None) -> Release:
    try:
        fields = deb822.Release(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(f"Release: unreadable ({exc})") from None
    until = fields.get("Valid-Until")
    if until:
        try:
            expiry = parsedate_to_datetime(until)
        except (TypeError, ValueError):
            raise ArchiveError(f"Release: unreadable Valid-Until {until!r}") from None
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=timezone.utc)
        if expiry < (now or datetime.now(timezone.utc)):
            raise ArchiveError(f"Release expired on {until} (Valid-Until): the upstream is stale or replayed")
    files = {}
    for entry in fields.get("SHA256", []):
        try:
            files[entry["name"]] = IndexFile(entry["name"], entry["sha256"].lower(), int(entry["size"]))
        except (KeyError, ValueError):
            raise ArchiveError(f"Release: a malformed SHA256 entry ({entry})") from None
    if not files:
        raise ArchiveError("Release lists no file with a SHA256 checksum")
    by_hash = str(fields.get("Acquire-By-Hash", "no")).strip().lower() == "yes"
    return Release(text, fields, files, by_hash)


def choose_index(release: Release, folder: str) -> IndexFile | None:
    """The Packages index of `folder` (e.g. main/binary-amd64) to fetch: the first compression listed."""
    for ext in COMPRESSIONS:
        found = release.files.get(f"{folder}/Packages{ext}")
        if found is not None:
            return found
    return None


def by_hash_path(index: IndexFile) -> str:
    return f"{index.path.rsplit('/', 1)[0]}/by-hash/SHA256/{index.sha256}"


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


def safe_filename(value: str) -> bool:
    """A Filename must stay inside the archive: relative, no `..`, no backslash, no scheme, no NUL."""
    if not value or value.startswith("/") or "\\" in value or "\x00" in value or ":" in value.split("/", 1)[0]:
        return False
    parts = value.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not any(ord(c) < 32 for c in value)


def parse_packages(text: bytes, source: str, arches: set[str]) -> list[Entry]:
    """The entries of a Packages index for these architectures; ArchiveError on a malformed or unsafe one."""
    out = []
    for para in deb822.Packages.iter_paragraphs(text.decode("utf-8", "replace"), use_apt_pkg=False):
        name = para.get("Package")
        if not name:
            continue
        arch = para.get("Architecture", "")
        if arch not in arches:
            continue
        filename, sha256, size = para.get("Filename", ""), para.get("SHA256", "").lower(), para.get("Size", "")
        if not safe_filename(filename):
            raise ArchiveError(f"{source}: package {name} has an unsafe Filename {filename[:200]!r} "
                               "(outside the archive)")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256) or not size.isdigit():
            raise ArchiveError(f"{source}: package {name} has no valid SHA256 and Size")
        out.append(Entry(name, para.get("Version", ""), arch, filename, int(size), sha256))
    return out


def select(entries: list[Entry], include: list[str], exclude: list[str], keep_latest: int | None) -> list[Entry]:
    """One entry per file; include/exclude are glob patterns on package names; keep_latest keeps the N
    highest versions of each (name, arch), in dpkg's version order."""
    by_sha: dict[str, Entry] = {}
    for e in entries:
        if include and not any(fnmatch.fnmatchcase(e.name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(e.name, p) for p in exclude):
            continue
        by_sha.setdefault(e.sha256, e)
    chosen = list(by_sha.values())
    if keep_latest:
        groups: dict[tuple[str, str], list[Entry]] = {}
        for e in chosen:
            groups.setdefault((e.name, e.arch), []).append(e)
        chosen = []
        for group in groups.values():
            try:
                group.sort(key=lambda e: Version(e.version), reverse=True)
            except ValueError as exc:
                raise ArchiveError(f"{group[0].name}: an invalid version ({exc})") from None
            versions: list[str] = []
            for e in group:
                if e.version not in versions:
                    versions.append(e.version)
                if versions.index(e.version) < keep_latest:
                    chosen.append(e)
    return chosen
