"""Local-disk storage: a content-addressed package pool and atomically swapped published trees.

Layout under the storage root:
  tmp/                        uploads in flight (same filesystem, so moves are renames)
  pool/<sha[:2]>/<sha256>     every package file, stored once
  trees/<key>-<n>/            built snapshot trees (never served directly while being built)
  public/                     what /repo serves: symlinks into trees/, plus gpgkeys/
Every path below is built from database values checked by the callers' regexes, and
`safe_join` refuses anything that would leave its base folder, so a client path never
reaches the filesystem unchecked.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .packages import Digests


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"file is larger than the {limit} byte limit")
        self.limit = limit


class UnsafePath(ValueError):
    pass


@dataclass
class Incoming:
    """A fully received, hashed upload waiting in tmp/ to be parsed, then adopted or discarded."""
    path: Path
    digests: Digests

    def discard(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def safe_join(base: Path, *parts: str) -> Path:
    """Join relative parts under base, refusing absolute parts, `..`, NUL and empty parts."""
    for part in parts:
        for seg in str(part).split("/"):
            if seg in ("", ".", "..") or "\x00" in seg or "\\" in seg:
                raise UnsafePath(f"unsafe path component {part!r}")
    return base.joinpath(*parts)


class _Hasher:
    def __init__(self):
        self.md5, self.sha1, self.sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.md5.update(chunk)
        self.sha1.update(chunk)
        self.sha256.update(chunk)

    def digests(self) -> Digests:
        return Digests(self.size, self.md5.hexdigest(), self.sha1.hexdigest(), self.sha256.hexdigest())


class Storage:
    def __init__(self, root):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.pool = self.root / "pool"
        self.trees = self.root / "trees"
        self.public = self.root / "public"
        for d in (self.tmp, self.pool, self.trees, self.public):
            d.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()      # pool folders known to exist (put_bytes)

    # ---- pool -------------------------------------------------------------------------------
    def pool_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise UnsafePath("not a sha256 digest")
        return self.pool / sha256[:2] / sha256

    def _new_temp(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        return fd, Path(name)

    async def receive(self, chunks: AsyncIterator[bytes], max_size: int) -> Incoming:
        """Stream chunks to a temp file while hashing; never holds the whole file in memory.
        Writes and hashing run in a thread (hashlib and write release the GIL on big buffers),
        so the event loop keeps serving other requests during a large upload."""
        fd, path = self._new_temp()
        hasher = _Hasher()
        loop = asyncio.get_running_loop()

        def consume(chunk: bytes) -> None:
            hasher.update(chunk)
            _write_all(fd, chunk)

        try:
            pending = bytearray()
            async for chunk in chunks:
                if hasher.size + len(pending) + len(chunk) > max_size:
                    raise TooLarge(max_size)
                # Batch small network reads into ~1 MiB writes: fewer thread hops.
                pending += chunk
                if len(pending) >= 1 << 20:
                    data, pending = bytes(pending), bytearray()
                    await loop.run_in_executor(None, consume, data)
            if pending:
                await loop.run_in_executor(None, consume, bytes(pending))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return Incoming(path, hasher.digests())

    def receive_file(self, src, max_size: int | None = None) -> Incoming:
        """Synchronous variant for files already on disk (CLI import, bench)."""
        fd, path = self._new_temp()
        hasher = _Hasher()
        try:
            with open(src, "rb") as f:
                while chunk := f.read(1 << 20):
                    hasher.update(chunk)
                    if max_size is not None and hasher.size > max_size:
                        raise TooLarge(max_size)
                    _write_all(fd, chunk)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return Incoming(path, hasher.digests())

    def adopt(self, incoming: Incoming) -> Path:
        """Move a verified upload into the pool (atomic rename); a second copy is dropped.

        Either way the pool file's mtime becomes now: the pool GC (gc.py) leaves files with no row
        alone for a grace period counted from it. The existing copy is kept only if touching it
        succeeds, i.e. it is still there: a GC that moved it aside a moment ago makes us store ours."""
        target = self.pool_path(incoming.digests.sha256)
        target.parent.mkdir(exist_ok=True)
        try:
            os.utime(target)
        except FileNotFoundError:
            os.chmod(incoming.path, 0o644)
            os.utime(incoming.path)
            os.replace(incoming.path, target)
        else:
            incoming.discard()
        return target

    def put_bytes(self, data: bytes, sha256: str, check: Callable[[str], None] | None = None) -> Path:
        """Place a checked file held in memory in the pool, as adopt() does (an existing copy is kept and
        touched), in one thread and with few directory operations: the bytes go to an unnamed file of
        the pool folder that is linked in once written (a temp file renamed where the filesystem has no
        O_TMPFILE), so a crash leaves no partial pool file and no temp file. `check(path)` reads the
        written file before it enters the pool; what it raises keeps it out."""
        target = self.pool_path(sha256)
        folder = target.parent
        if folder not in self._folders:
            folder.mkdir(exist_ok=True)
            self._folders.add(folder)
        try:
            try:
                fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
            except FileNotFoundError:          # the folder was removed meanwhile (tests empty the pool)
                folder.mkdir(exist_ok=True)
                fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
        except (OSError, AttributeError):
            fd = None
        if fd is None:
            fd, tmp = self._new_temp()
            try:
                _write_all(fd, data)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
            try:
                if check is not None:
                    check(str(tmp))
                self.adopt(Incoming(tmp, Digests(len(data), "", "", sha256)))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return target
        try:
            _write_all(fd, data)
            os.fchmod(fd, 0o644)       # the umask may have narrowed the mode given to open
            unnamed = f"/proc/self/fd/{fd}"
            if check is not None:
                check(unnamed)
            # A folder descriptor makes os.link use linkat(AT_SYMLINK_FOLLOW), which links the file
            # /proc/self/fd/N stands for (plain link(2) would link the symlink itself).
            folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                linked = _link_unnamed(unnamed, folder_fd, target)
            finally:
                os.close(folder_fd)
            return linked
        finally:
            os.close(fd)

    def has(self, sha256: str) -> bool:
        return self.pool_path(sha256).exists()

    def remove_from_pool(self, sha256: str) -> None:
        self.pool_path(sha256).unlink(missing_ok=True)

    # ---- published trees --------------------------------------------------------------------
    def link_into(self, tree: Path, rel: str, sha256: str) -> None:
        """Place a pool file in a tree being built: a hard link (no copy; same filesystem)."""
        dst = safe_join(tree, *rel.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = self.pool_path(sha256)
        try:
            os.link(src, dst)
        except OSError:
            os.symlink(src, dst)

    def files_dir(self, key: str) -> Path:
        """Package files of one snapshot, shared by its successive trees: a rebuild only adds
        the links that are new and drops the stale ones, instead of linking every file again."""
        return safe_join(self.trees, f"{key}.files")

    def cache_dir(self, key: str) -> Path:
        return safe_join(self.trees, f"{key}.cache")

    def _sync_files(self, key: str, files: dict[str, str]) -> list[str]:
        """Make files_dir(key) hold a link for every rel -> sha256 in `files`; return the stale
        names, removed only after the swap so the old metadata stays valid until then."""
        import orjson

        root = self.files_dir(key)
        root.mkdir(exist_ok=True)
        manifest = root / ".manifest.json"
        try:
            have = orjson.loads(manifest.read_bytes())
        except (FileNotFoundError, ValueError):
            have = {}
        # Plain string paths: this loop runs once per package on a first build (5,000+).
        root_s, pool_s = str(root), str(self.pool)
        made: set[str] = set()
        new: list[tuple[str, str]] = []           # (pool file, published name) not there yet
        replaced: list[tuple[str, str]] = []      # same name, other content
        for rel, sha in files.items():
            old = have.get(rel)
            if old == sha:
                continue
            if ".." in rel.split("/") or rel.startswith("/") or len(sha) != 64:
                raise UnsafePath(f"unsafe published path {rel!r}")
            dst = f"{root_s}/{rel}"
            parent = dst.rsplit("/", 1)[0]
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            (new if old is None else replaced).append((f"{pool_s}/{sha[:2]}/{sha}", dst))

        def link_all(pairs) -> None:
            for src, dst in pairs:
                try:
                    os.link(src, dst)
                except FileExistsError:           # left by an interrupted build
                    os.unlink(dst)
                    os.link(src, dst)

        # One thread: a link holds its directory's lock for nearly all its work, so a second thread
        # linking into the same folder mostly waits, and takes a core from the metadata render.
        link_all(new)
        for src, dst in replaced:
            tmp = f"{dst.rsplit('/', 1)[0]}/.new-{uuid.uuid4().hex[:8]}"
            os.link(src, tmp)
            os.replace(tmp, dst)                  # overwrite of the same name: swap atomically
        stale = [rel for rel in have if rel not in files]
        tmp = manifest.with_name(".manifest.tmp")
        tmp.write_bytes(orjson.dumps(files))
        os.replace(tmp, manifest)
        return stale

    def _stamp(self, tree: Path, entry_files: list[str]) -> None:
        """Give a new tree's entry files (InRelease, repomd.xml...) a modification time, in whole
        seconds, later than any tree published before. HTTP caches and apt revalidate with
        If-Modified-Since at one-second resolution: two builds within one second would otherwise
        look unchanged and the client would keep the old index."""
        import fcntl

        with open(self.root / ".publish-stamp", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            last = int(f.read().strip() or 0)
            stamp = max(int(time.time()), last + 1)
            f.seek(0)
            f.truncate()
            f.write(str(stamp))
        for rel in entry_files:
            path = tree / rel
            if path.exists():
                os.utime(path, (stamp, stamp))

    def publish(self, public_rel: str, key: str, build: Callable[[Path], None],
                files: dict[str, str] | None = None, entry_files: list[str] = (),
                timings: dict | None = None) -> Path:
        """Build a tree aside with `build(dir)`, then swap `public/<public_rel>` to it atomically.

        `files` maps paths inside the tree (e.g. pool/main/x.deb) to pool digests; their top
        folders become links to the snapshot's shared files folder. The public entry is a
        symlink replaced by rename(2), so a client sees the old tree or the new one, never a
        mix. The old tree is removed after the swap."""
        link = safe_join(self.public, *public_rel.split("/"))
        link.parent.mkdir(parents=True, exist_ok=True)
        # A build folder of this key left by a worker killed mid-rebuild: the per-snapshot lock of
        # rebuild_snapshot makes this build the only one of the key, so any other is garbage.
        for stale_build in self.trees.glob(f".build-{key}-*"):
            shutil.rmtree(stale_build, ignore_errors=True)
        build_dir = Path(tempfile.mkdtemp(dir=self.trees, prefix=f".build-{key}-"))
        stale: list[str] = []
        marks = timings if timings is not None else {}   # seconds spent linking files / building metadata
        try:
            if files is not None:
                # Linking runs in a thread while build() renders metadata (syscalls drop the GIL).
                from concurrent.futures import ThreadPoolExecutor

                def sync() -> list[str]:
                    t = time.perf_counter()
                    try:
                        return self._sync_files(key, files)
                    finally:
                        marks["link"] = round(time.perf_counter() - t, 4)

                with ThreadPoolExecutor(max_workers=1) as ex:
                    fut = ex.submit(sync)
                    t = time.perf_counter()
                    build(build_dir)
                    marks["build"] = round(time.perf_counter() - t, 4)
                    stale = fut.result()
                for top in {rel.split("/", 1)[0] for rel in files}:
                    if not (build_dir / top).exists():
                        os.symlink(os.path.join("..", f"{key}.files", top), build_dir / top)
            else:
                build(build_dir)
            os.chmod(build_dir, 0o755)
            self._stamp(build_dir, list(entry_files))
            final = self.trees / f"{key}-{uuid.uuid4().hex[:12]}"
            os.rename(build_dir, final)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        old = Path(os.readlink(link)) if link.is_symlink() else None
        self._swap_symlink(link, os.path.relpath(final, link.parent))
        if old is not None:
            old_abs = (link.parent / old).resolve()
            if old_abs.parent == self.trees.resolve() and old_abs != final.resolve():
                shutil.rmtree(old_abs, ignore_errors=True)
        for rel in stale:
            safe_join(self.files_dir(key), *rel.split("/")).unlink(missing_ok=True)
        return final

    def unpublish(self, public_rel: str) -> None:
        link = safe_join(self.public, *public_rel.split("/"))
        if link.is_symlink():
            target = (link.parent / os.readlink(link)).resolve()
            link.unlink()
            if target.parent == self.trees.resolve():
                key = target.name.rsplit("-", 1)[0]
                shutil.rmtree(target, ignore_errors=True)
                shutil.rmtree(self.files_dir(key), ignore_errors=True)
                shutil.rmtree(self.cache_dir(key), ignore_errors=True)

    def point(self, public_rel: str, target_rel: str) -> None:
        """Stable environment link: public/<public_rel> -> sibling public entry <target_rel>."""
        link = safe_join(self.public, *public_rel.split("/"))
        target = safe_join(self.public, *target_rel.split("/"))
        link.parent.mkdir(parents=True, exist_ok=True)
        self._swap_symlink(link, os.path.relpath(target, link.parent))

    def remove_tree(self, public_rel: str) -> None:
        """Drop a repository's public folder (links only; trees are removed by unpublish)."""
        path = safe_join(self.public, *public_rel.split("/"))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)

    def remove_link(self, public_rel: str) -> None:
        link = safe_join(self.public, *public_rel.split("/"))
        if link.is_symlink():
            link.unlink()

    @staticmethod
    def _swap_symlink(link: Path, target: str) -> None:
        tmp = link.parent / f".{link.name}.{uuid.uuid4().hex[:8]}"
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def write_public(self, rel: str, data: bytes) -> Path:
        path = safe_join(self.public, *rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def resolve_public(self, rel: str) -> Path | None:
        """Map a /repo/<rel> request to a file, or None. Symlinks may only lead into public/
        or trees/ (our own links), never elsewhere."""
        try:
            path = safe_join(self.public, *rel.split("/")) if rel else self.public
        except UnsafePath:
            return None
        try:
            real = path.resolve()
            allowed = (self.public.resolve(), self.trees.resolve(), self.pool.resolve())
            if not any(real == a or a in real.parents for a in allowed):
                return None
            # Trees still being built start with ".build-"; they are never reachable by a link.
            return real if real.is_file() else None
        except OSError:  # e.g. a name longer than the filesystem allows (ENAMETOOLONG): not found
            return None


def storage_from_settings(settings) -> Storage:
    """The Storage of the settings' storage folder, made once per folder and process."""
    return _storage_at(str(settings.storage_dir))


@lru_cache(maxsize=8)
def _storage_at(path: str) -> Storage:
    return Storage(path)


def _link_unnamed(unnamed: str, folder_fd: int, target: Path) -> Path:
    while True:
        try:
            os.link(unnamed, target.name, dst_dir_fd=folder_fd, follow_symlinks=True)
            return target
        except FileExistsError:
            try:
                os.utime(target)
                return target
            except FileNotFoundError:       # moved aside by the pool GC meanwhile: ours goes in
                continue


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def iter_file_chunks(path, size: int = 1 << 20) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
