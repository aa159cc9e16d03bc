"""Render repodata/ (primary, filelists, other .xml.gz and repomd.xml) from stored chunks.

Each package's XML chunks were produced by createrepo_c when it was uploaded (or signed), so a
rebuild is string concatenation + gzip + sha256: no rpm header is read again. The output is the
format createrepo_c writes (checksum-prefixed file names), which old yum and current dnf read.

Adding one package to a big snapshot must cost far less than a full rebuild, so the package list
is cut into blocks at content-defined boundaries (a block ends after a package whose key hash
hits a fixed pattern), each block is gzipped as its own gzip member and cached on disk (one pack file per kind). gzip
readers (zlib's gzread used by libsolv/librepo, Python's gzip used by yum) read concatenated
members as one stream. Inserting a package changes one block; the other blocks are reused
without loading their chunks from the database at all (`load_chunks` is called for misses only).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

from .compress import gzip_bytes

KINDS = ("primary", "filelists", "other")
HEADERS = {
    "primary": ('<metadata xmlns="http://linux.duke.edu/metadata/common" '
                'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{n}">\n', "</metadata>\n"),
    "filelists": ('<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="{n}">\n',
                  "</filelists>\n"),
    "other": ('<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="{n}">\n', "</otherdata>\n"),
}
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
BLOCK_MASK = 0x3F          # ~64 packages per block on average
BLOCK_MAX = 256


@dataclass(slots=True)
class RpmEntry:
    key: str                        # immutable identity of the published file (its sha256)
    name: str
    arch: str
    primary: str | None = None      # None: loaded on demand through load_chunks
    filelists: str | None = None
    other: str | None = None


def _gzip(data: bytes, level: int | None = None) -> bytes:
    return gzip_bytes(data, level)


def _blocks(entries: list[RpmEntry]) -> list[list[RpmEntry]]:
    blocks, current = [], []
    for e in entries:
        current.append(e)
        if (int(e.key[:8], 16) & BLOCK_MASK) == 0 or len(current) >= BLOCK_MAX:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


class _BlockCache:
    """The previous build's blocks of one snapshot, compressed and plain: per kind one pack file
    of gzip members (<kind>.gz), one of plain XML (<kind>.xml), and index.json giving each block's
    id and sizes. A handful of files read and written per build, whatever the number of blocks."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.blocks: dict[str, dict[str, tuple[memoryview, memoryview]]] = {k: {} for k in KINDS}
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            index = orjson.loads((folder / "index.json").read_bytes())
            for kind in KINDS:
                gz = memoryview((folder / f"{kind}.gz").read_bytes())
                plain = memoryview((folder / f"{kind}.xml").read_bytes())
                go = po = 0
                for bid, gl, pl in index[kind]:
                    self.blocks[kind][bid] = (gz[go:go + gl], plain[po:po + pl])
                    go, po = go + gl, po + pl
                if go != len(gz) or po != len(plain):
                    raise ValueError("pack sizes do not match the index")
        except (FileNotFoundError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            self.blocks = {k: {} for k in KINDS}         # no (usable) cache: a full render

    def get(self, block_id: str, kind: str):
        return self.blocks[kind].get(block_id)

    def save(self, ids: list[str], parts: dict[str, list]) -> None:
        """Replace the cache with this build's blocks (index last: a torn save reads as no cache)."""
        if self.folder is None:
            return
        index = {}
        (self.folder / "index.json").unlink(missing_ok=True)
        for kind in KINDS:
            index[kind] = [(bid, len(gz), len(plain)) for bid, (gz, plain) in zip(ids, parts[kind])]
            for suffix, pos in (("gz", 0), ("xml", 1)):
                tmp = self.folder / f"{kind}.{suffix}.tmp"
                with open(tmp, "wb") as f:
                    f.writelines(p[pos] for p in parts[kind])
                os.replace(tmp, self.folder / f"{kind}.{suffix}")
        tmp = self.folder / "index.json.tmp"
        tmp.write_bytes(orjson.dumps(index))
        os.replace(tmp, self.folder / "index.json")


def render_rpm(out_dir, entries: list[RpmEntry], *, revision: int | None = None, cache_dir=None,
               load_chunks: Callable[[list[str]], dict[str, tuple[str, str, str]]] | None = None) -> Path:
    """Write repodata/ under out_dir; return the repomd.xml path (unsigned)."""
    repodata = Path(out_dir) / "repodata"
    repodata.mkdir(parents=True, exist_ok=True)
    now = int(time.time()) if revision is None else revision
    entries = sorted(entries, key=lambda e: (e.name, e.arch, e.key))
    blocks = _blocks(entries)
    ids = [hashlib.sha256("\n".join(e.key for e in b).encode()).hexdigest()[:32] for b in blocks]
    cache = _BlockCache(Path(cache_dir) if cache_dir else None)

    parts: dict[str, list] = {k: [] for k in KINDS}
    missing: list[int] = []
    for i, bid in enumerate(ids):
        hits = [cache.get(bid, k) for k in KINDS]
        if all(hits):
            for k, h in zip(KINDS, hits):
                parts[k].append(h)
        else:
            missing.append(i)
            for k in KINDS:
                parts[k].append(None)

    need = [e for i in missing for e in blocks[i] if e.primary is None]
    loaded = load_chunks([e.key for e in need]) if need and load_chunks else {}

    def build_block(i: int) -> None:
        texts = {k: [] for k in KINDS}
        for e in blocks[i]:
            chunk = (e.primary, e.filelists, e.other) if e.primary is not None else loaded[e.key]
            for k, c in zip(KINDS, chunk):
                texts[k].append(c)
        for k in KINDS:
            plain = "".join(texts[k]).encode("utf-8")
            parts[k][i] = (_gzip(plain), plain)

    def write_kind(kind: str) -> str:
        head, tail = HEADERS[kind]
        head_b = (XML_DECL + head.format(n=len(entries))).encode()
        tail_b = tail.encode()
        members = [_gzip(head_b)] + [p[0] for p in parts[kind]] + [_gzip(tail_b)]
        open_sha = hashlib.sha256(head_b)
        open_size = len(head_b) + len(tail_b)
        for _, plain in parts[kind]:
            open_sha.update(plain)
            open_size += len(plain)
        open_sha.update(tail_b)
        # Hashed while written: the members go to a temporary name, renamed to their digest.
        sha, size = hashlib.sha256(), 0
        tmp = repodata / f".{kind}.xml.gz.tmp"
        with open(tmp, "wb") as f:
            for m in members:
                sha.update(m)
                size += len(m)
                f.write(m)
        digest = sha.hexdigest()
        href = f"repodata/{digest}-{kind}.xml.gz"
        os.rename(tmp, repodata / f"{digest}-{kind}.xml.gz")
        return (f'  <data type="{kind}">\n'
                f'    <checksum type="sha256">{digest}</checksum>\n'
                f'    <open-checksum type="sha256">{open_sha.hexdigest()}</open-checksum>\n'
                f'    <location href="{href}"/>\n'
                f"    <timestamp>{now}</timestamp>\n"
                f"    <size>{size}</size>\n"
                f"    <open-size>{open_size}</open-size>\n"
                f"  </data>\n")

    # gzip and hashlib release the GIL: compress missing blocks and write the three files on all cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(build_block, missing))
        records = list(pool.map(write_kind, KINDS))
    if missing or set(ids) != set(cache.blocks["primary"]):
        cache.save(ids, parts)
    repomd = (XML_DECL + '<repomd xmlns="http://linux.duke.edu/metadata/repo" '
              'xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n'
              f"  <revision>{now}</revision>\n" + "".join(records) + "</repomd>\n")
    path = repodata / "repomd.xml"
    path.write_text(repomd, encoding="utf-8")
    return path
