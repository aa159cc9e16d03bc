"""Parse and verify an uploaded .deb without trusting anything the client said about it.

We walk the ar archive ourselves instead of using `debian.debfile.DebFile` for the control
member: DebFile decompresses members without a bound, and a few kilobytes of xz can expand to
gigabytes (decompression bomb). python-debian still supplies the version grammar check.
The data member is only located and size-checked, never decompressed: Depot does not install
packages, and hashing the bytes is what upload throughput is measured against.
"""
from __future__ import annotations

import io
import lzma
import re
import subprocess
import tarfile
import zlib
from pathlib import Path

from debian.debian_support import Version

from . import Digests, PackageError, ParsedPackage, file_digests

CONTROL_LIMIT = 1 << 20          # decompressed control.tar; real ones are a few KiB
CONTROL_COMPRESSED_LIMIT = 1 << 20
AR_MAGIC = b"!<arch>\n"

# Debian policy §5.6.1 (name), §5.6.12 (version), dpkg-architecture names.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
VERSION_RE = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")
ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
FIELD_RE = re.compile(r"^[!-9;-~][!-9;-~]*$")   # printable ASCII, no space, no colon
# Fields Depot writes into Packages itself; a control file carrying them would shadow ours.
RESERVED = {"filename", "size", "md5sum", "sha1", "sha256", "sha512", "description-md5"}
COMPRESSED_SUFFIXES = ("", ".gz", ".xz", ".zst")


def _ar_members(f, file_size: int):
    """Yield (name, offset, size) for each ar member, checking the structure as we go."""
    if f.read(8) != AR_MAGIC:
        raise PackageError("not a Debian package (no ar archive signature)")
    pos = 8
    while pos < file_size:
        if pos % 2:
            pos += 1
            f.seek(pos)
            if pos == file_size:
                break
        header = f.read(60)
        if len(header) != 60 or header[58:60] != b"`\n":
            raise PackageError("truncated or corrupt ar archive")
        raw_name = header[0:16].decode("ascii", "replace").rstrip(" ")
        name = raw_name.removesuffix("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise PackageError("corrupt ar member header") from None
        if size < 0 or pos + 60 + size > file_size:
            raise PackageError("truncated ar archive (member runs past the end of the file)")
        if not name or "/" in name or name.startswith(".") or "\x00" in name:
            raise PackageError(f"invalid ar member name {name!r}")
        yield name, pos + 60, size
        pos += 60 + size
        f.seek(pos)


def _bounded_decompress(data: bytes, suffix: str) -> bytes:
    """Decompress `data`, refusing output past CONTROL_LIMIT (a bomb) and corrupt input."""
    limit = CONTROL_LIMIT + 1
    try:
        if suffix == "":
            out = data
        elif suffix == ".gz":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, limit)
            if not d.eof and len(out) < limit:
                raise PackageError("truncated or corrupt control archive")
        elif suffix == ".xz":
            d = lzma.LZMADecompressor()
            out = d.decompress(data, limit)
            if not d.eof and len(out) < limit:
                raise PackageError("truncated or corrupt control archive")
        elif suffix == ".zst":
            # No zstd in the 3.11 stdlib: stream through the zstd tool, reading at most `limit`.
            proc = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
            try:
                proc.stdin.write(data)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            out = proc.stdout.read(limit)
            proc.kill()
            rc = proc.wait()
            if len(out) < limit and rc not in (0, -9):
                raise PackageError("truncated or corrupt control archive")
        else:  # pragma: no cover - filtered by the caller
            raise PackageError("unsupported control compression")
    except (zlib.error, lzma.LZMAError, EOFError):
        raise PackageError("truncated or corrupt control archive") from None
    if len(out) > CONTROL_LIMIT:
        raise PackageError("control archive too large once decompressed")
    return out


def _safe_member_name(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and ".." not in parts and "\x00" not in name


def parse_control(text: str, *, index: bool = False) -> dict[str, str]:
    """Strict deb822 single-stanza parser: one stanza, no duplicate fields, no stray lines.

    The result is rendered verbatim into Packages, so anything that could start a new stanza
    or a new field there (blank lines, whitespace-only continuations, CR, NUL) is refused.
    `index`: the stanza comes from a Packages index, whose own fields (Filename, Size, digests) are
    dropped rather than refused: Depot writes its own."""
    if "\r" in text or "\x00" in text:
        raise PackageError("control file contains CR or NUL characters")
    lines = text.rstrip("\n").split("\n")
    fields: dict[str, str] = {}
    seen: set[str] = set()
    current = None
    dropping = False                 # in a dropped field's continuation lines
    for line in lines:
        if line == "" or line.strip() == "":
            raise PackageError("control file has blank lines (more than one stanza)")
        if line[0] in " \t":
            if dropping:
                continue
            if current is None:
                raise PackageError("control file starts with a continuation line")
            fields[current] += "\n" + line
            continue
        if line.startswith("#"):
            raise PackageError("control file contains comment lines")
        key, sep, value = line.partition(":")
        if not sep or not FIELD_RE.match(key) or key.startswith("-"):
            raise PackageError(f"invalid control line {line[:60]!r}")
        low = key.lower()
        if low in seen:
            raise PackageError(f"duplicate control field {key!r}")
        seen.add(low)
        if low in RESERVED:
            if not index:
                raise PackageError(f"control field {key!r} is reserved for the repository index")
            current = None
            dropping = True
            continue
        dropping = False
        fields[key] = value.strip(" \t")
        current = key
    return fields


def _get(fields: dict[str, str], key: str) -> str | None:
    for k, v in fields.items():
        if k.lower() == key.lower():
            return v
    return None


def parse_deb(path, digests: Digests | None = None) -> ParsedPackage:
    path = Path(path)
    file_size = path.stat().st_size
    if file_size == 0:
        raise PackageError("empty file")
    control_bytes = None
    names: list[str] = []
    with open(path, "rb") as f:
        for name, offset, size in _ar_members(f, file_size):
            names.append(name)
            if name.startswith("control.tar"):
                suffix = name[len("control.tar"):]
                if suffix not in COMPRESSED_SUFFIXES:
                    raise PackageError(f"unsupported control member {name!r}")
                if size > CONTROL_COMPRESSED_LIMIT:
                    raise PackageError("control archive too large")
                f.seek(offset)
                control_bytes = (suffix, f.read(size))
            elif name == "debian-binary":
                f.seek(offset)
                if not f.read(min(size, 16)).startswith(b"2."):
                    raise PackageError("unsupported Debian package format version")
    # dpkg's own ordering rule: debian-binary, then control.tar.*, then data.tar.*.
    if len(names) < 3 or names[0] != "debian-binary" or not names[1].startswith("control.tar") \
            or not names[2].startswith("data.tar"):
        raise PackageError("not a Debian package (needs debian-binary, control.tar.*, data.tar.*)")
    if names[2][len("data.tar"):] not in COMPRESSED_SUFFIXES + (".bz2", ".lzma"):
        raise PackageError(f"unsupported data member {names[2]!r}")

    raw = _bounded_decompress(control_bytes[1], control_bytes[0])
    control_text = None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if not _safe_member_name(member.name):
                    raise PackageError(f"unsafe path in control archive: {member.name!r}")
                if member.name in ("./control", "control") and member.isfile():
                    if control_text is not None:
                        raise PackageError("control archive holds two control files")
                    data = tar.extractfile(member).read()
                    try:
                        control_text = data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise PackageError("control file is not UTF-8") from None
    except tarfile.TarError:
        raise PackageError("corrupt control archive") from None
    if control_text is None:
        raise PackageError("control archive has no control file")

    return _package(parse_control(control_text), digests or file_digests(path))


def parse_index_stanza(text: str, digests: Digests, *, udeb: bool = False) -> ParsedPackage:
    """A package of a mirrored archive from its Packages stanza, for the file whose digests are given
    (the caller has checked them against that stanza): the same checks as the control file of an
    upload, without opening the file. `udeb`: the file is a udeb (named .udeb)."""
    return _package(parse_control(text, index=True), digests, ".udeb" if udeb else ".deb")


def _package(fields: dict[str, str], d: Digests, ext: str = ".deb") -> ParsedPackage:
    name, version, arch = _get(fields, "Package"), _get(fields, "Version"), _get(fields, "Architecture")
    if not name or not NAME_RE.match(name):
        raise PackageError(f"invalid or missing package name {name!r}")
    if not version or not VERSION_RE.match(version) or version.endswith("-"):
        raise PackageError(f"invalid or missing version {version!r}")
    try:
        Version(version)
    except ValueError:
        raise PackageError(f"invalid version {version!r}") from None
    if not arch or not ARCH_RE.match(arch) or arch in ("any", "source"):
        raise PackageError(f"invalid or missing architecture {arch!r}")
    if _get(fields, "Description") is None:
        raise PackageError("control file has no Description")

    plain_version = version.split(":", 1)[1] if ":" in version else version
    return ParsedPackage(
        type="deb", name=name, version=version, arch=arch,
        filename=f"{name}_{plain_version}_{arch}{ext}",
        size=d.size, md5=d.md5, sha1=d.sha1, sha256=d.sha256,
        control=fields,
    )
