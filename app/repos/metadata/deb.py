"""Render an apt repository index (Packages, Packages.gz, Release, by-hash) from stored rows.

Nothing here opens a package file: each entry carries the control stanza parsed at upload time
and the checksums computed while the file streamed in. The cost is linear in the number of
packages, independent of their size: 5,000 packages render and gzip in ~0.1 s.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from .compress import gzip_bytes


@dataclass
class DebEntry:
    name: str
    version: str
    arch: str
    filename: str            # canonical file name (pool/<component>/<filename>)
    size: int
    md5: str
    sha1: str
    sha256: str
    stanza: str              # control fields rendered as "Key: value\n" lines (see render_stanza)


def render_stanza(control: dict[str, str]) -> str:
    """Control fields -> stanza text, Package first. Done once at upload time and stored,
    so a rebuild only concatenates strings. Multi-line values keep their continuation lines."""
    lines = []
    for key, value in control.items():
        line = f"{key}:{value}\n" if value.startswith("\n") else f"{key}: {value}\n"
        if key.lower() == "package":
            lines.insert(0, line)
        else:
            lines.append(line)
    return "".join(lines)


def _entry_text(e: DebEntry, component: str) -> str:
    # Repository fields go after the control fields; apt does not care about field order.
    return (f"{e.stanza}Filename: pool/{component}/{e.filename}\nSize: {e.size}\nMD5sum: {e.md5}\n"
            f"SHA1: {e.sha1}\nSHA256: {e.sha256}\n\n")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _write_index(dist_dir: Path, rel: str, plain: bytes) -> list[tuple[str, int, str, str, str]]:
    """Packages and Packages.gz of one architecture, each written once, hashed from memory and
    hard-linked under by-hash/SHA256. Runs in a thread: gzip and hashlib release the GIL."""
    out = []
    for name, content in ((rel, plain), (rel + ".gz", gzip_bytes(plain))):
        path = dist_dir / name
        _write(path, content)
        digests = (hashlib.md5(content).hexdigest(), hashlib.sha1(content).hexdigest(),
                   hashlib.sha256(content).hexdigest())
        # Acquire-By-Hash: apt fetches by-hash/SHA256/<digest>, so a client reading while
        # a new tree is swapped in never mixes an old Release with a new Packages.
        by_hash = path.parent / "by-hash" / "SHA256" / digests[2]
        by_hash.parent.mkdir(parents=True, exist_ok=True)
        if not by_hash.exists():
            os.link(path, by_hash)
        out.append((name, len(content), *digests))
    return out


DEFAULT_ARCH = "amd64"      # the index written when a repository holds only arch `all` packages


def index_archs(entries, default_arch: str = DEFAULT_ARCH) -> list[str]:
    archs = sorted({e.arch for e in entries if e.arch != "all"})
    return archs or [default_arch]


def render_deb(out_dir, dist: str, component: str, entries: list[DebEntry], *, origin: str | None = None,
               label: str | None = None, description: str | None = None, default_arch: str = DEFAULT_ARCH,
               date: float | None = None) -> Path:
    """Write dists/<dist>/... under out_dir and return the Release path (unsigned)."""
    out_dir = Path(out_dir)
    dist_dir = out_dir / "dists" / dist
    archs = index_archs(entries, default_arch)
    entries = sorted(entries, key=lambda e: (e.name, e.version, e.arch, e.sha256))
    texts: dict[str, list[str]] = {a: [] for a in archs}
    for e in entries:
        text = _entry_text(e, component)
        for a in (archs if e.arch == "all" else (e.arch,)):
            texts[a].append(text)

    plains = {a: "".join(texts[a]).encode("utf-8") for a in archs}
    return write_indexes(dist_dir, component, plains, origin=origin or f"{dist} {component} repository",
                         suite=dist, label=label, description=description, date=date)


def write_indexes(dist_dir: Path, component: str, plains: dict[str, bytes], *, origin: str, suite: str,
                  label: str | None = None, description: str | None = None, date: float | None = None,
                  installer: dict[str, bytes] | None = None) -> Path:
    """Packages(.gz) per architecture from their full text (`installer`: the udebs', under debian-installer/),
    then Release; returns its path."""
    indexes = [(f"{component}/binary-{a}/Packages", plains[a]) for a in sorted(plains)]
    indexes += [(f"{component}/debian-installer/binary-{a}/Packages", text)
                for a, text in sorted((installer or {}).items())]
    archs = sorted(set(plains) | set(installer or {}))
    with ThreadPoolExecutor(max_workers=min(len(indexes), os.cpu_count() or 2)) as pool:
        written = [f for chunk in pool.map(lambda i: _write_index(dist_dir, *i), indexes) for f in chunk]
    width = max(len(str(size)) for _, size, *_ in written)
    sums = {"MD5Sum": [], "SHA1": [], "SHA256": []}
    for rel, size, *digests in written:
        for key, dg in zip(sums, digests):
            sums[key].append(f" {dg} {size:>{width}} {rel}\n")
    dist = suite
    release = [
        f"Origin: {origin}\n", f"Label: {label or origin}\n", f"Suite: {dist}\n", f"Codename: {dist}\n",
        f"Date: {formatdate(date, usegmt=True)}\n", f"Architectures: {' '.join(archs)}\n",
        f"Components: {component}\n", f"Description: {description or origin}\n", "Acquire-By-Hash: yes\n",
    ]
    for key, lines in sums.items():
        release.append(f"{key}:\n")
        release.extend(lines)
    release_path = dist_dir / "Release"
    _write(release_path, "".join(release).encode("utf-8"))
    return release_path
