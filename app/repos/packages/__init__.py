"""Parse and verify uploaded packages. One record type for both formats, so the upload
path, the database rows and the metadata renderers never branch on file contents again."""
from __future__ import annotations

from dataclasses import dataclass, field


class PackageError(Exception):
    """An uploaded file is not an acceptable package. `reason` is safe to show to the client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Digests:
    size: int
    md5: str
    sha1: str
    sha256: str


@dataclass
class ParsedPackage:
    type: str                      # "deb" | "rpm"
    name: str
    version: str                   # deb: full version incl. epoch; rpm: version only
    arch: str
    filename: str                  # canonical name, built from the package's own metadata
    size: int
    md5: str
    sha1: str
    sha256: str
    release: str | None = None     # rpm only
    epoch: str | None = None       # rpm only ("0" when unset)
    # deb: control fields in file order, rendered as-is into Packages.
    control: dict[str, str] = field(default_factory=dict)
    # rpm: primary/filelists/other XML chunks produced once from the header.
    chunks: dict[str, str] = field(default_factory=dict)

    @property
    def digests(self) -> Digests:
        return Digests(self.size, self.md5, self.sha1, self.sha256)


def file_digests(path, bufsize: int = 1 << 20) -> Digests:
    """Hash a file we already hold (tests, CLI, bench). Uploads hash while streaming instead."""
    import hashlib

    md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            size += len(chunk)
            md5.update(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    return Digests(size, md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest())


def parse_package(path, pkg_type: str, digests: Digests | None = None) -> ParsedPackage:
    """Parse `path` as a package of the repository's type; anything else is a PackageError."""
    if pkg_type == "deb":
        from .deb import parse_deb

        return parse_deb(path, digests)
    if pkg_type == "rpm":
        from .rpm import parse_rpm

        return parse_rpm(path, digests)
    raise PackageError(f"unsupported package type {pkg_type!r}")
