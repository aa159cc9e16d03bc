"""Build a published tree for one snapshot from stored rows, then swap it in atomically.

Used by the rebuild worker; HTTP-free. Package files are hard links to the pool; metadata is
rendered from the rows (metadata/deb.py, metadata/rpm.py) and signed when asked.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .metadata.deb import DebEntry, render_deb, write_indexes
from .metadata.rpm import CarriedFile, RpmEntry, render_rpm
from .packages import PackageError, ParsedPackage
from .packages.rpm import location_href, parse_rpm, signed_copy
from .signing import Signer
from .storage import Storage


def publish_deb(storage: Storage, public_rel: str, key: str, *, dist: str, component: str,
                entries: list[DebEntry] | None = None, signer: Signer | None, origin: str | None = None,
                files: dict[str, str] | None = None, load_indexes=None, timings: dict | None = None) -> Path:
    """Either `entries` (rendered here), or `files` (published path -> sha256) and `load_indexes()`
    returning the full Packages text of each architecture, of the debs and of the udebs (the rebuild renders
    them in SQL)."""
    if entries is not None:
        files = {f"pool/{component}/{e.filename}": e.sha256 for e in entries}
    origin = origin or f"{dist} {component} repository"

    def build(tree: Path) -> None:
        if entries is not None:
            release = render_deb(tree, dist, component, entries, origin=origin)
        else:
            plains, installer = load_indexes()
            release = write_indexes(tree / "dists" / dist, component, plains, origin=origin, suite=dist,
                                    installer=installer)
        if signer is not None:
            signer.sign_release(release)

    entry = [f"dists/{dist}/{n}" for n in ("InRelease", "Release", "Release.gpg")]
    return storage.publish(public_rel, key, build, files=files, entry_files=entry, timings=timings)


def publish_rpm(storage: Storage, public_rel: str, key: str, *, entries: list[tuple[RpmEntry, str]],
                signer: Signer | None, load_chunks=None, timings: dict | None = None,
                carried: list[CarriedFile] = ()) -> Path:
    """entries: (RpmEntry whose key is the sha256 of the file to publish, published file name); carried: metadata
    files published as they are (a mirror's)."""
    files = {location_href(filename, e.arch): e.key for e, filename in entries}

    def build(tree: Path) -> None:
        repomd = render_rpm(tree, [e for e, _ in entries], cache_dir=storage.cache_dir(key),
                            load_chunks=load_chunks, timings=timings, carried=carried)
        if signer is not None:
            signer.sign_repomd(repomd)

    return storage.publish(public_rel, key, build, files=files,
                           entry_files=["repodata/repomd.xml", "repodata/repomd.xml.asc"], timings=timings)


SIGN_IN_MEMORY_BYTES = 64 << 20    # a larger rpm is signed file to file


def sign_in_memory(storage: Storage, signer: Signer, original: ParsedPackage, body: bytes) -> ParsedPackage | None:
    """Sign `body`, the rpm of `original`, in memory and place the copy in the pool; its ParsedPackage is derived
    from the original's (packages/rpm.signed_copy), not read again. None, with nothing placed, when rpmsig leaves
    the package to rpmsign or the entry is not in createrepo_c's usual shape: the caller then signs it file to file
    and reads the copy."""
    signed = signer.sign_rpm_bytes(body)
    if signed is None:
        return None
    try:
        parsed = signed_copy(original, signed)
    except PackageError:
        return None
    if parsed.sha256 != original.sha256:       # else already signed so: the original is its own copy
        storage.put_bytes(signed, parsed.sha256)
    return parsed


def sign_rpm_file(storage: Storage, signer: Signer, path, original: ParsedPackage) -> ParsedPackage:
    """Sign a verified rpm file (an upload still in tmp/); the signed copy goes into the pool."""
    return _sign(storage, signer, [(path, original)])[0]


def sign_rpms_into_pool(storage: Storage, signer: Signer, originals: list[ParsedPackage]) -> list[ParsedPackage]:
    """Sign pooled rpms once; each signed copy goes into the pool under its own digest, so later rebuilds
    just reuse the result."""
    return _sign(storage, signer, [(storage.pool_path(p.sha256), p) for p in originals])


def _sign(storage: Storage, signer: Signer, files: list[tuple[Path, ParsedPackage]]) -> list[ParsedPackage]:
    """In memory when rpmsig can (no temp file, no second parse); a larger file, or one left to rpmsign,
    is signed to a temp file and read again with createrepo_c."""
    out: list[ParsedPackage | None] = [None] * len(files)
    left = []
    for i, (path, original) in enumerate(files):
        if original.size <= SIGN_IN_MEMORY_BYTES:
            out[i] = sign_in_memory(storage, signer, original, Path(path).read_bytes())
        if out[i] is None:
            left.append(i)
    if left:
        with tempfile.TemporaryDirectory(dir=storage.tmp, prefix="sign-") as tmp:
            pairs = [(files[i][0], Path(tmp) / f"{i}.rpm") for i in left]
            for i, signed in zip(left, signer.sign_rpms(pairs)):
                incoming = storage.receive_file(signed)
                out[i] = parse_rpm(incoming.path, incoming.digests, verify_payload=False)
                storage.adopt(incoming)
    return out


def deb_entry(p: ParsedPackage) -> DebEntry:
    from .metadata.deb import render_stanza

    return DebEntry(p.name, p.version, p.arch, p.filename, p.size, p.md5, p.sha1, p.sha256,
                    render_stanza(p.control))


def rpm_entry(p: ParsedPackage) -> RpmEntry:
    return RpmEntry(p.sha256, p.name, p.arch, p.chunks["primary"], p.chunks["filelists"], p.chunks["other"])
