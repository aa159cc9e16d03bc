"""Build a published tree for one snapshot from stored rows, then swap it in atomically.

Used by the rebuild worker; HTTP-free. Package files are hard links to the pool; metadata is
rendered from the rows (metadata/deb.py, metadata/rpm.py) and signed when asked.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .metadata.deb import DebEntry, render_deb
from .metadata.rpm import RpmEntry, render_rpm
from .packages import ParsedPackage
from .packages.rpm import location_href, parse_rpm
from .signing import Signer
from .storage import Storage


def publish_deb(storage: Storage, public_rel: str, key: str, *, dist: str, component: str,
                entries: list[DebEntry], signer: Signer | None, origin: str | None = None,
                progress=None) -> Path:
    def build(tree: Path) -> None:
        for i, e in enumerate(entries):
            storage.link_into(tree, f"pool/{component}/{e.filename}", e.sha256)
            if progress and i % 500 == 0:
                progress(i, len(entries))
        release = render_deb(tree, dist, component, entries, origin=origin)
        if signer is not None:
            signer.sign_release(release)

    return storage.publish(public_rel, key, build)


def publish_rpm(storage: Storage, public_rel: str, key: str, *, entries: list[tuple[RpmEntry, str, str]],
                signer: Signer | None, progress=None) -> Path:
    """entries: (RpmEntry, published file name, sha256 of the file to publish)."""
    def build(tree: Path) -> None:
        for i, (e, filename, sha256) in enumerate(entries):
            storage.link_into(tree, location_href(filename, e.arch), sha256)
            if progress and i % 500 == 0:
                progress(i, len(entries))
        repomd = render_rpm(tree, [e for e, _, _ in entries])
        if signer is not None:
            signer.sign_repomd(repomd)

    return storage.publish(public_rel, key, build)


def sign_rpm_into_pool(storage: Storage, signer: Signer, sha256: str) -> ParsedPackage:
    """Sign a pooled rpm once; the signed copy goes into the pool under its own digest and is
    parsed again (its header and checksum changed), so later rebuilds just reuse the result."""
    with tempfile.TemporaryDirectory(dir=storage.tmp, prefix="sign-") as tmp:
        signed = signer.sign_rpm(storage.pool_path(sha256), Path(tmp) / "pkg.rpm")
        incoming = storage.receive_file(signed)
        parsed = parse_rpm(incoming.path, incoming.digests)
        storage.adopt(incoming)
    return parsed


def deb_entry(p: ParsedPackage) -> DebEntry:
    from .metadata.deb import render_stanza

    return DebEntry(p.name, p.version, p.arch, p.filename, p.size, p.md5, p.sha1, p.sha256,
                    render_stanza(p.control))


def rpm_entry(p: ParsedPackage) -> RpmEntry:
    return RpmEntry(p.name, p.arch, p.chunks["primary"], p.chunks["filelists"], p.chunks["other"])
