"""Parse and verify an uploaded .rpm with createrepo_c, once, at upload time.

The header is read by createrepo_c (the same library `createrepo_c` the tool uses), and the
primary/filelists/other XML chunks are produced here and stored, so a rebuild only
concatenates stored chunks and never opens a package file again.
createrepo_c reads only the header, so the payload digests are checked with `rpmkeys`:
a truncated or corrupted payload would otherwise be published.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import createrepo_c as cr

from . import Digests, PackageError, ParsedPackage, file_digests

NAME_RE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*$")
EVR_RE = re.compile(r"^[A-Za-z0-9._+~^]+$")
ARCH_RE = re.compile(r"^[A-Za-z0-9_]+$")
RPM_MAGIC = b"\xed\xab\xee\xdb"


def arch_dir(arch: str) -> str:
    """Folder of a package inside a published rpm tree (Repomanager's layout)."""
    return "SRPMS" if arch in ("src", "nosrc") else arch


def location_href(filename: str, arch: str) -> str:
    return f"packages/{arch_dir(arch)}/{filename}"


def _check_digests(path: Path) -> None:
    proc = subprocess.run(["rpmkeys", "--checksig", "--nosignature", str(path)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise PackageError("rpm digest check failed (truncated or corrupt package)")


def dump_chunks(pkg) -> dict[str, str]:
    primary, filelists, other = cr.xml_dump_primary(pkg), cr.xml_dump_filelists(pkg), cr.xml_dump_other(pkg)
    return {"primary": primary, "filelists": filelists, "other": other}


def parse_rpm(path, digests: Digests | None = None, *, verify_payload: bool = True) -> ParsedPackage:
    path = Path(path)
    if path.stat().st_size == 0:
        raise PackageError("empty file")
    with open(path, "rb") as f:
        if f.read(4) != RPM_MAGIC:
            raise PackageError("not an RPM package (bad lead signature)")
    try:
        pkg = cr.package_from_rpm(str(path), cr.SHA256, None, None, 10)
    except Exception as exc:  # createrepo_c raises its own error type with a C message
        raise PackageError(f"unreadable RPM header: {str(exc)[:200]}") from None
    name, version, release, arch = pkg.name, pkg.version, pkg.release, pkg.arch
    epoch = pkg.epoch or "0"
    if not name or not NAME_RE.match(name):
        raise PackageError(f"invalid package name {name!r}")
    for label, value in (("version", version), ("release", release)):
        if not value or not EVR_RE.match(value):
            raise PackageError(f"invalid {label} {value!r}")
    if not epoch.isdigit():
        raise PackageError(f"invalid epoch {epoch!r}")
    if not arch or not ARCH_RE.match(arch):
        raise PackageError(f"invalid architecture {arch!r}")
    # False only for a file whose SHA-256 is already vouched for: a copy Depot itself just signed from a
    # verified file, or a mirrored file matching the signed repodata's checksum.
    if verify_payload:
        _check_digests(path)

    d = digests or file_digests(path)
    if pkg.pkgId != d.sha256:
        raise PackageError("file changed while it was being parsed")
    filename = f"{name}-{version}-{release}.{arch}.rpm"
    pkg.location_href = location_href(filename, arch)
    pkg.location_base = None
    return ParsedPackage(
        type="rpm", name=name, version=version, release=release, epoch=epoch, arch=arch,
        filename=filename, size=d.size, md5=d.md5, sha1=d.sha1, sha256=d.sha256,
        chunks=dump_chunks(pkg),
    )


_HEADER_RANGE = re.compile(r'<rpm:header-range start="(\d+)" end="(\d+)"/>')


def signed_copy(original: ParsedPackage, signed: bytes) -> ParsedPackage:
    """The ParsedPackage of `signed`, a copy of `original` that only a new signature header sets apart
    (packages/rpmsig.py), without reading it with createrepo_c again: its chunks are the original's with the
    copy's checksum, size and header range (the main header moved by the signature header's change in size).
    Everything else createrepo_c writes comes from the main header or from signature entries rpmsig keeps.
    Text in a chunk is escaped, so each tag found is the element itself."""
    delta = len(signed) - original.size
    sha256 = hashlib.sha256(signed).hexdigest()
    old = original.sha256
    primary = original.chunks["primary"]
    pieces = [(f'<checksum type="sha256" pkgid="YES">{old}</checksum>',
               f'<checksum type="sha256" pkgid="YES">{sha256}</checksum>'),
              (f'<size package="{original.size}" ', f'<size package="{len(signed)}" ')]
    for before, after in pieces:
        if primary.count(before) != 1:
            raise PackageError("unexpected primary chunk")
        primary = primary.replace(before, after)
    ranges = _HEADER_RANGE.findall(primary)
    if len(ranges) != 1:
        raise PackageError("unexpected primary chunk")
    start, end = (int(n) + delta for n in ranges[0])
    primary = _HEADER_RANGE.sub(f'<rpm:header-range start="{start}" end="{end}"/>', primary)
    chunks = {"primary": primary}
    for name in ("filelists", "other"):
        text, tag = original.chunks[name], f'<package pkgid="{old}" '
        if not text.startswith(tag):
            raise PackageError(f"unexpected {name} chunk")
        chunks[name] = f'<package pkgid="{sha256}" ' + text[len(tag):]
    return replace(original, size=len(signed), md5=hashlib.md5(signed).hexdigest(),
                   sha1=hashlib.sha1(signed).hexdigest(), sha256=sha256, chunks=chunks)
