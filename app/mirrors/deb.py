"""A Debian archive as a mirror reads it: the verified Release, the Packages indexes it lists (each
checked against the Release's SHA-256 and size, decompressed with a cap), and their entries.

python-debian's deb822 parses Release (the format's reference parser in Python; apt_pkg is not used, so
nothing depends on the system's apt bindings); Packages paragraphs are split here (see parse_packages).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from debian import deb822
from yarl import URL

from .common import ArchiveError, Entry, IndexFile, is_hex_digest, safe_filename

# Preferred first: the quickest to download and decompress. xz is the smallest but decompresses five
# to ten times slower than gzip or zstd, which costs more than its smaller download on most links.
COMPRESSIONS = (".zst", ".gz", ".xz", ".bz2", "")


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
    """The Packages index of `folder` (e.g. main/binary-amd64; "" for a flat repository's own) to fetch: the
    first compression listed."""
    prefix = f"{folder}/" if folder else ""
    for ext in COMPRESSIONS:
        found = release.files.get(f"{prefix}Packages{ext}")
        if found is not None:
            return found
    return None


def by_hash_path(index: IndexFile) -> str:
    folder = index.path.rsplit("/", 1)[0] + "/" if "/" in index.path else ""
    return f"{folder}by-hash/SHA256/{index.sha256}"


_PARAGRAPHS = re.compile(r"\n(?:[ \t]*\n)+")


def parse_packages(text: bytes, source: str, arches: set[str], base: URL) -> list[Entry]:
    """The entries of a Packages index for these architectures, each with its stanza's text (the package's
    stored stanza once its file is checked); ArchiveError on a malformed or unsafe one."""
    out = []
    # A paragraph splitter reading the few fields a plan needs with one regex per paragraph: several times
    # faster than deb822 paragraphs on big indexes. The stanza text itself is read strictly later
    # (packages.deb.parse_index_stanza), for each file that is downloaded.
    for para in _PARAGRAPHS.split(text.decode("utf-8", "replace").replace("\r\n", "\n").strip("\n")):
        # The fields as archives spell them (a literal-led regex, fast); else any case, as field names are.
        fields = {k: v.strip() for k, v in _FIELDS.findall("\n" + para)}
        if len(fields) < len(_WANTED):
            fields = {_WANTED[k.lower()]: v.strip() for k, v in _ANY_CASE.findall(para)}
        name = fields.get("Package")
        if not name:
            continue
        arch = fields.get("Architecture", "")
        if arch not in arches:
            continue
        filename, sha256, size = fields.get("Filename", ""), fields.get("SHA256", "").lower(), fields.get("Size", "")
        filename = filename.removeprefix("./")          # flat repositories name files "./x.deb"
        if not safe_filename(filename):
            raise ArchiveError(f"{source}: package {name} has an unsafe Filename {filename[:200]!r} "
                               "(outside the archive)")
        if not is_hex_digest(sha256) or not size.isdigit():
            raise ArchiveError(f"{source}: package {name} has no valid SHA256 and Size")
        out.append(Entry(name, fields.get("Version", ""), arch, filename, int(size), sha256, base, para))
    return out


_WANTED = {k.lower(): k for k in ("Package", "Version", "Architecture", "Filename", "Size", "SHA256")}
# A field starts its line (continuation lines start with a space or a tab, comments with #).
_FIELDS = re.compile(r"\n(Package|Version|Architecture|Filename|Size|SHA256):([^\n]*)")
_ANY_CASE = re.compile(r"^(Package|Version|Architecture|Filename|Size|SHA256):(.*)$", re.IGNORECASE | re.MULTILINE)
