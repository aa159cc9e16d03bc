"""Render repodata/ (primary, filelists, other .xml.gz and repomd.xml) from stored chunks, beside any
metadata files a mirror carried over as they are (CarriedFile).

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
import mmap
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

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
    primary: str | None = None      # None: loaded on demand through load_chunks (str or UTF-8 bytes)
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
    """The previous builds' blocks of one snapshot, compressed and plain: per kind one pack file of
    gzip members (<kind>.gz) and one of plain XML (<kind>.xml), memory-mapped, and index.json giving
    each live block's id and offsets. Packs only grow: a build appends its new blocks and rewrites
    the small index; a pack is rewritten (compacted) only when most of it is dead blocks. So an
    add-one reads and writes a few kilobytes, not the whole 7 MB of XML. Packs are written by one
    rebuild of the snapshot at a time; bytes already in them never change (readers may map them)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.blocks: dict[str, dict[str, tuple]] = {k: {} for k in KINDS}     # id -> (gz, plain, offsets)
        self.sizes = {k: [0, 0] for k in KINDS}
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            index = orjson.loads((folder / "index.json").read_bytes())
            for kind in KINDS:
                views = [self._map(folder / f"{kind}.{suffix}") for suffix in ("gz", "xml")]
                self.sizes[kind] = [len(v) for v in views]
                for bid, go, gl, po, pl in index[kind]:
                    if go + gl > len(views[0]) or po + pl > len(views[1]):
                        raise ValueError("index points past the end of a pack")
                    self.blocks[kind][bid] = (views[0][go:go + gl], views[1][po:po + pl], (go, gl, po, pl))
        except (FileNotFoundError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            self.blocks = {k: {} for k in KINDS}         # no (usable) cache: a full render
            self.sizes = {k: [0, 0] for k in KINDS}

    @staticmethod
    def _map(path: Path) -> memoryview:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)) if size else memoryview(b"")

    def get(self, block_id: str, kind: str):
        hit = self.blocks[kind].get(block_id)
        return hit[:2] if hit else None

    def save(self, ids: list[str], parts: dict[str, list]) -> None:
        """Append this build's new blocks, then replace the index (written last: a build that
        stops half-way leaves unreferenced bytes at the end of a pack, nothing worse)."""
        if self.folder is None:
            return
        index = {}
        for kind in KINDS:
            known = self.blocks[kind]
            live = sum(len(gz) + len(plain) for gz, plain in parts[kind])
            compact = live * 2 < sum(self.sizes[kind])       # mostly dead blocks: rewrite from scratch
            rows = []
            # Compacting writes new files renamed over the old ones: the old ones are mapped (the
            # blocks being copied are views of them) and truncating a mapped file would fault.
            gz_path, xml_path = self.folder / f"{kind}.gz", self.folder / f"{kind}.xml"
            suffix = ".tmp" if compact else ""
            with open(f"{gz_path}{suffix}", "wb" if compact else "ab") as fgz, \
                    open(f"{xml_path}{suffix}", "wb" if compact else "ab") as fxml:
                go, po = (0, 0) if compact else self.sizes[kind]
                for bid, (gz, plain) in zip(ids, parts[kind]):
                    hit = known.get(bid)
                    if hit is not None and not compact:
                        rows.append((bid, *hit[2]))
                        continue
                    fgz.write(gz)
                    fxml.write(plain)
                    rows.append((bid, go, len(gz), po, len(plain)))
                    go, po = go + len(gz), po + len(plain)
            if compact:
                (self.folder / "index.json").unlink(missing_ok=True)    # old offsets die with the old packs
                os.replace(f"{gz_path}.tmp", gz_path)
                os.replace(f"{xml_path}.tmp", xml_path)
            index[kind] = rows
        tmp = self.folder / "index.json.tmp"
        tmp.write_bytes(orjson.dumps(index))
        os.replace(tmp, self.folder / "index.json")


@dataclass(frozen=True)
class CarriedFile:
    """A metadata file published as it is beside the rendered ones (a mirror's errata, modules, groups)."""
    type: str
    name: str                     # its file name, the digest prefix aside (the suffix says its compression)
    data: bytes
    open_sha256: str | None = None
    open_size: int | None = None


def _carried_record(repodata: Path, c: CarriedFile, now: int) -> str:
    digest = hashlib.sha256(c.data).hexdigest()
    href = f"repodata/{digest}-{c.name}"
    (repodata / f"{digest}-{c.name}").write_bytes(c.data)
    opened = ""
    if c.open_sha256:
        opened = f'    <open-checksum type="sha256">{c.open_sha256}</open-checksum>\n'
    return (f'  <data type="{escape(c.type)}">\n'
            f'    <checksum type="sha256">{digest}</checksum>\n' + opened +
            f'    <location href={quoteattr(href)}/>\n'
            f"    <timestamp>{now}</timestamp>\n"
            f"    <size>{len(c.data)}</size>\n" +
            (f"    <open-size>{c.open_size}</open-size>\n" if c.open_size else "") +
            "  </data>\n")


def render_rpm(out_dir, entries: list[RpmEntry], *, revision: int | None = None, cache_dir=None,
               load_chunks: Callable[[list[str]], dict[str, tuple[str, str, str]]] | None = None,
               timings: dict | None = None, carried: list[CarriedFile] = ()) -> Path:
    """Write repodata/ under out_dir; return the repomd.xml path (unsigned)."""
    marks = timings if timings is not None else {}
    t0 = time.perf_counter()
    repodata = Path(out_dir) / "repodata"
    repodata.mkdir(parents=True, exist_ok=True)
    now = int(time.time()) if revision is None else revision
    entries = sorted(entries, key=lambda e: (e.name, e.arch, e.key))
    blocks = _blocks(entries)
    ids = [hashlib.sha256("\n".join(e.key for e in b).encode()).hexdigest()[:32] for b in blocks]
    t1 = time.perf_counter()
    cache = _BlockCache(Path(cache_dir) if cache_dir else None)
    t2 = time.perf_counter()

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
    t3 = time.perf_counter()

    def build_block(i: int) -> None:
        texts = {k: [] for k in KINDS}
        for e in blocks[i]:
            chunk = (e.primary, e.filelists, e.other) if e.primary is not None else loaded[e.key]
            for k, c in zip(KINDS, chunk):
                texts[k].append(c)
        for k in KINDS:
            items = texts[k]     # str (entries given whole) or UTF-8 bytes (load_chunks)
            if all(isinstance(c, bytes) for c in items):
                plain = b"".join(items)
            else:
                plain = "".join(c if isinstance(c, str) else c.decode("utf-8") for c in items).encode("utf-8")
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
    t4 = time.perf_counter()
    if missing or set(ids) != set(cache.blocks["primary"]):
        cache.save(ids, parts)
    t5 = time.perf_counter()
    marks.update(rpm_sort=round(t1 - t0, 4), rpm_cache_load=round(t2 - t1, 4), rpm_chunks=round(t3 - t2, 4),
                 rpm_blocks_write=round(t4 - t3, 4), rpm_cache_save=round(t5 - t4, 4), rpm_blocks_new=len(missing))
    repomd = (XML_DECL + '<repomd xmlns="http://linux.duke.edu/metadata/repo" '
              'xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n'
              f"  <revision>{now}</revision>\n" + "".join(records)
              + "".join(_carried_record(repodata, c, now) for c in carried) + "</repomd>\n")
    path = repodata / "repomd.xml"
    path.write_text(repomd, encoding="utf-8")
    return path
