"""Build a published tree for one snapshot from stored rows, then swap it in atomically.

Used by the rebuild worker; HTTP-free. Package files are hard links to the pool; metadata is
rendered from the rows (metadata/deb.py, metadata/rpm.py) and signed when asked.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .metadata.deb import DebEntry, render_deb, write_indexes
from .metadata.rpm import RpmEntry, render_rpm
from .packages import ParsedPackage
from .packages.rpm import location_href, parse_rpm
from .signing import Signer
from .storage import Storage


def publish_deb(storage: Storage, public_rel: str, key: str, *, dist: str, component: str,
                entries: list[DebEntry] | None = None, signer: Signer | None, origin: str | None = None,
                files: dict[str, str] | None = None, load_indexes=None, timings: dict | None = None) -> Path:
    """Either `entries` (rendered here), or `files` (published path -> sha256) and `load_indexes()`
    returning the full Packages text of each architecture (the rebuild renders it in SQL)."""
    if entries is not None:
        files = {f"pool/{component}/{e.filename}": e.sha256 for e in entries}
    origin = origin or f"{dist} {component} repository"

    def build(tree: Path) -> None:
        if entries is not None:
            release = render_deb(tree, dist, component, entries, origin=origin)
        else:
            release = write_indexes(tree / "dists" / dist, component, load_indexes(), origin=origin, suite=dist)
        if signer is not None:
            signer.sign_release(release)

    entry = [f"dists/{dist}/{n}" for n in ("InRelease", "Release", "Release.gpg")]
    return storage.publish(public_rel, key, build, files=files, entry_files=entry, timings=timings)


def publish_rpm(storage: Storage, public_rel: str, key: str, *, entries: list[tuple[RpmEntry, str]],
                signer: Signer | None, load_chunks=None, timings: dict | None = None) -> Path:
    """entries: (RpmEntry whose key is the sha256 of the file to publish, published file name)."""
    files = {location_href(filename, e.arch): e.key for e, filename in entries}

    def build(tree: Path) -> None:
        repomd = render_rpm(tree, [e for e, _ in entries], cache_dir=storage.cache_dir(key),
                            load_chunks=load_chunks, timings=timings)
        if signer is not None:
            signer.sign_repomd(repomd)

    return storage.publish(public_rel, key, build, files=files,
                           entry_files=["repodata/repomd.xml", "repodata/repomd.xml.asc"], timings=timings)


def sign_rpm_file(storage: Storage, signer: Signer, path) -> ParsedPackage:
    """Sign a verified rpm file (an upload still in tmp/); the signed copy goes into the pool."""
    with tempfile.TemporaryDirectory(dir=storage.tmp, prefix="sign-") as tmp:
        (signed,) = signer.sign_rpms([(path, Path(tmp) / "pkg.rpm")])
        incoming = storage.receive_file(signed)
        parsed = parse_rpm(incoming.path, incoming.digests, verify_payload=False)
        storage.adopt(incoming)
    return parsed


def sign_rpm_into_pool(storage: Storage, signer: Signer, sha256: str) -> ParsedPackage:
    return sign_rpms_into_pool(storage, signer, [sha256])[0]


def sign_rpms_into_pool(storage: Storage, signer: Signer, digests: list[str]) -> list[ParsedPackage]:
    """Sign pooled rpms once; each signed copy goes into the pool under its own digest and is
    parsed again (its header and checksum changed), so later rebuilds just reuse the result."""
    out = []
    with tempfile.TemporaryDirectory(dir=storage.tmp, prefix="sign-") as tmp:
        pairs = [(storage.pool_path(sha), Path(tmp) / f"{i}.rpm") for i, sha in enumerate(digests)]
        for signed in signer.sign_rpms(pairs):
            incoming = storage.receive_file(signed)
            parsed = parse_rpm(incoming.path, incoming.digests, verify_payload=False)
            storage.adopt(incoming)
            out.append(parsed)
    return out


def deb_entry(p: ParsedPackage) -> DebEntry:
    from .metadata.deb import render_stanza

    return DebEntry(p.name, p.version, p.arch, p.filename, p.size, p.md5, p.sha1, p.sha256,
                    render_stanza(p.control))


def rpm_entry(p: ParsedPackage) -> RpmEntry:
    return RpmEntry(p.sha256, p.name, p.arch, p.chunks["primary"], p.chunks["filelists"], p.chunks["other"])
