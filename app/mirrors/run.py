"""The mirror task: one run of a mirror repository from its source into a new snapshot.

1. Fetch InRelease (or Release + Release.gpg; rpm: repodata/repomd.xml + repomd.xml.asc) and check it
   with the source's own keys; from here on only the text the signature covers is read. An expired
   Valid-Until is refused.
2. Unchanged upstream (same verified text, same mirror settings) and the last snapshot still there:
   done, after that one request and the signature check.
3. Read the indexes it lists (deb: Packages, by-hash where offered; rpm: primary), each checked against
   the signed SHA-256 and size, decompressed with a cap; select the entries (architectures, include,
   exclude, keep-latest). rpm: the errata, module and group files it lists are fetched and checked the
   same way, kept as they are and republished with the snapshot.
4. Download, with bounded concurrency, only the files whose SHA-256 has no package row yet: each is
   streamed to a temp file next to the pool, its size and SHA-256 checked against the index, parsed as
   a package (the same checks as an upload), then its row written and the file renamed into the pool.
   A bad file is recorded and the others go on, so a retry fetches only what is still missing.
5. Any failure: the task fails naming the files, no snapshot, environments untouched. Else one
   transaction makes the new snapshot of exactly the selected files; it is rebuilt with Depot's key
   and, if asked, an environment is pointed at it.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from yarl import URL

from app.hosts.versions import dpkg_compare, rpm_compare
from app.repos.gc import POOL_LOCK
from app.repos.model import get_snapshot
from app.repos.packages import Digests, PackageError, ParsedPackage, file_digests
from app.repos.packages.deb import parse_index_stanza
from app.repos.packages.rpm import parse_rpm
from app.repos.publish import sign_in_memory
from app.repos.rebuild import point_env, rebuild_snapshot
from app.repos.storage import Incoming, Storage, TooLarge
from app.repos.upload import store_rows
from app.sources.keys import SignatureError, verify
from app.sources.model import Source, keyring

from . import deb, rpm
from .common import ArchiveError, Entry, check_index, decompress, select
from .model import Mirror, get_mirror, last_snapshot, mirror_source
from .net import Fetcher, TooBig, UpstreamError, tls_context
from .pins import pin, unpin

MAX_RELEASE_BYTES = 64 * 1024 * 1024
MAX_REPORTED = 10          # failed files named in the task's error
ROW_BATCH = 500            # package rows written per statement
ROW_WAIT = 0.05           # seconds a batch of rows waits for more (a transaction per file costs more than it)


def _digests(data: bytes) -> Digests:
    return Digests(len(data), hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest(),
                   hashlib.sha256(data).hexdigest())


class MirrorError(Exception):
    """A run refused or failed; the message says why, naming the file."""


def _bases(source: Source, mirror: Mirror) -> tuple[list[URL], aiohttp.BasicAuth | None]:
    """The repository roots to read (variables replaced; rpm: one per architecture when the URL holds
    $basearch, as the reference does) and the basic-auth credentials to send to their host."""
    repo = mirror.repo
    url = source.definition["url"].replace("$dist", repo.dist or "").replace("$component", repo.section or "") \
        .replace("$releasever", repo.releasever or "")
    parts = urlsplit(url)
    auth = None
    if parts.username:
        auth = aiohttp.BasicAuth(parts.username, source.secrets.get("url_password", ""))
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    urls = [url]
    if "$basearch" in url:
        urls = [url.replace("$basearch", a) for a in mirror.arches if a not in ("noarch", "src")] or \
            [url.replace("$basearch", "noarch")]
    return [URL(u.rstrip("/")) for u in urls], auth


def _join(base: URL, rel: str) -> URL:
    return base.joinpath(*rel.split("/"))


async def _release(fetcher: Fetcher, dist_url: URL, keys: list[bytes], gpg_check: bool) -> tuple[bytes, str | None]:
    """The Release text to trust, and the fingerprint that signed it (None when not checked)."""
    loop = asyncio.get_running_loop()
    if not gpg_check:
        return await fetcher.get_bytes(_join(dist_url, "Release"), MAX_RELEASE_BYTES), None
    inrelease = await fetcher.get_bytes(_join(dist_url, "InRelease"), MAX_RELEASE_BYTES, missing_ok=True)
    first_error = None
    if inrelease is not None:
        try:
            got = await loop.run_in_executor(None, lambda: verify(keys, inrelease, label="InRelease"))
            return got.text, got.fingerprint
        except SignatureError as exc:
            first_error = exc      # some upstreams sign Release.gpg right and InRelease wrong: try it
    release = await fetcher.get_bytes(_join(dist_url, "Release"), MAX_RELEASE_BYTES, missing_ok=first_error is not None)
    signature = await fetcher.get_bytes(_join(dist_url, "Release.gpg"), 1 << 20, missing_ok=True) \
        if release is not None else None
    if release is None or signature is None:
        if first_error is not None:
            raise MirrorError(str(first_error))
        raise MirrorError(f"{dist_url}: no InRelease and no Release.gpg: the upstream is not signed "
                          "(mirror it with gpgCheck false to accept that)")
    try:
        got = await loop.run_in_executor(None, lambda: verify(keys, release, signature, label="Release.gpg"))
    except SignatureError as exc:
        raise MirrorError(str(first_error or exc)) from None
    return got.text, got.fingerprint


async def _repomd(fetcher: Fetcher, base: URL, keys: list[bytes], gpg_check: bool) -> tuple[bytes, str | None]:
    text = await fetcher.get_bytes(_join(base, "repodata/repomd.xml"), MAX_RELEASE_BYTES)
    if not gpg_check:
        return text, None
    signature = await fetcher.get_bytes(_join(base, "repodata/repomd.xml.asc"), 1 << 20, missing_ok=True)
    if signature is None:
        raise MirrorError(f"{base}/repodata/repomd.xml is not signed (no repomd.xml.asc): mirror it with gpgCheck "
                          "false to accept that")
    try:
        got = await asyncio.get_running_loop().run_in_executor(
            None, lambda: verify(keys, text, signature, label="repomd.xml.asc"))
    except SignatureError as exc:
        raise MirrorError(str(exc)) from None
    return got.text, got.fingerprint


async def _rpm_entries(fetcher: Fetcher, base: URL, repomd: rpm.Repomd, mirror: Mirror, limit: int) -> list[Entry]:
    index = repomd.primary
    if index.size > limit:
        raise MirrorError(f"{index.path}: {index.size} bytes, more than the index limit ({limit})")
    data = await fetcher.get_bytes(_join(base, index.path), index.size)
    arches = set(mirror.arches) | {"noarch"}

    def read() -> list[Entry]:
        check_index(index, data)
        return rpm.parse_primary(decompress(index, data, limit), index.path, arches, base)

    return await asyncio.get_running_loop().run_in_executor(None, read)


async def _rpm_metadata(fetcher: Fetcher, roots: list[tuple[URL, rpm.Repomd]],
                        limit: int) -> list[tuple[rpm.Carried, bytes]]:
    """The metadata carried over (rpm.CARRIED), each file checked against the signed repomd.xml; with several
    roots ($basearch), each type from the first root that lists it (a snapshot publishes one of each)."""
    loop = asyncio.get_running_loop()
    out: list[tuple[rpm.Carried, bytes]] = []
    seen: set[str] = set()
    for base, repomd in roots:
        for rec in repomd.carried:
            if rec.type in seen:
                continue
            if rec.index.size > limit:
                raise MirrorError(f"{rec.index.path}: {rec.index.size} bytes, more than the index limit ({limit})")
            data = await fetcher.get_bytes(_join(base, rec.index.path), rec.index.size)
            await loop.run_in_executor(None, check_index, rec.index, data)
            seen.add(rec.type)
            out.append((rec, data))
    return out


async def _deb_entries(fetcher: Fetcher, base: URL, dist_url: URL, release: deb.Release, mirror: Mirror,
                       limit: int, flat: bool) -> list[Entry]:
    section = mirror.repo.section
    # `all` packages install on every architecture, and each architecture's index lists them.
    arches = set(mirror.arches) | {"all"}
    folders = [f"{section}/binary-{a}" for a in mirror.arches if a != "all"]
    if "all" in mirror.arches:
        folders.append(f"{section}/binary-all")
    if mirror.udebs and not flat:
        folders += [f"{section}/debian-installer/{f.rsplit('/', 1)[1]}" for f in folders]
    loop = asyncio.get_running_loop()
    entries: list[Entry] = []
    for folder in folders:
        udebs = "/debian-installer/" in folder
        index = deb.choose_index(release, folder)
        if index is None and flat:
            index = deb.choose_index(release, "")       # a flat repository: one bare Packages index
        if index is None:
            if folder.endswith("/binary-all") and len(folders) > 1:
                continue       # `all` packages are usually listed in each architecture's index
            raise MirrorError(f"the Release lists no Packages index for {folder}"
                              + (" (the mirror asks for udebs)" if udebs else ""))
        if index.size > limit:
            raise MirrorError(f"{index.path}: {index.size} bytes, more than the index limit ({limit})")
        data = None
        if release.by_hash:
            data = await fetcher.get_bytes(_join(dist_url, deb.by_hash_path(index)), index.size, missing_ok=True)
        if data is None:
            data = await fetcher.get_bytes(_join(dist_url, index.path), index.size)

        def read(index=index, data=data, udebs=udebs) -> list[Entry]:
            check_index(index, data)
            found = deb.parse_packages(decompress(index, data, limit), index.path, arches, base)
            # Each index lists its own kind: a .udeb is taken from the installer's, a .deb from the others.
            wrong = None if flat else next((e for e in found if e.filename.endswith(".udeb") != udebs), None)
            if wrong is not None:
                raise ArchiveError(f"{index.path}: package {wrong.name} has the Filename {wrong.filename[:200]!r}, "
                                   f"{'not a .udeb' if udebs else 'a .udeb'} in this index")
            return found

        entries += await loop.run_in_executor(None, read)
    return entries


class _Refused(Exception):
    """A downloaded file refused; the message names it."""


class _Downloads:
    """The files to fetch, fetched by `concurrency` workers; failures collected, not raised.

    Each file's body is read (in memory up to DEPOT_MIRROR_MEMORY_FILE_BYTES, else streamed to tmp/), then one thread
    call checks its size and SHA-256 against the index, reads the package and places the file in the pool:
    the event loop only does HTTP, and the checks of some files overlap the downloads of others. An rpm held in
    memory is signed with Depot's key there too, its signed copy placed beside it: the rebuild then finds it
    signed (while the network is what a run waits for, the signatures take no time of it)."""

    def __init__(self, pool, storage: Storage, fetcher: Fetcher, kind: str, settings, progress, check_stop,
                 signer=None):
        self.pool, self.storage, self.fetcher, self.kind = pool, storage, fetcher, kind
        self.signer = signer if kind == "rpm" else None
        self.fpr = signer.fingerprint if self.signer is not None else None
        self.max_size, self.in_memory = settings.max_upload_bytes, settings.mirror_memory_file_bytes
        self.progress, self.check_stop = progress, check_stop
        self.files = self.bytes = 0
        self.total_files = self.total_bytes = 0
        self.failures: list[str] = []
        self.rows: asyncio.Queue = asyncio.Queue()
        self._shown = 0.0
        # Files are checked and placed in threads of the run's own, one per core: the work is CPU (digests,
        # reading and signing packages, the kernel making files), and more threads only hand the GIL and the
        # cores back and forth. At most `concurrency` bodies wait for them, so memory stays bounded whatever
        # the number of files.
        self.executor = ThreadPoolExecutor(max_workers=min(fetcher.concurrency, os.cpu_count() or 2),
                                           thread_name_prefix="depot-mirror")
        self.landing = asyncio.Semaphore(fetcher.concurrency)
        self.landing_tasks: set[asyncio.Task] = set()
        self.crash: BaseException | None = None
        self.reused_files = self.reused_bytes = 0        # found in the pool without a row: not downloaded
        self.in_pool: set[str] = set()

    async def run(self, todo: list[Entry]) -> None:
        self.total_files, self.total_bytes = len(todo), sum(e.size for e in todo)
        queue = iter(todo)
        writer = asyncio.create_task(self.write_rows())

        async def worker() -> None:
            for entry in queue:
                if writer.done() or self.crash is not None:   # pointless to download more
                    return
                if self.check_stop is not None:
                    await self.check_stop()
                await self.one(entry)

        error: BaseException | None = None
        try:
            # Which of them a killed run left in the pool, looked up once in a thread (a stat each, which would
            # otherwise wait on the directories the landing threads are writing, on the event loop).
            self.in_pool = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: {e.sha256 for e in todo if self.storage.has(e.sha256)})
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.fetcher.concurrency, len(todo))):
                    group.create_task(worker())
        except BaseExceptionGroup as eg:       # a stop, or an error: the first one, as itself
            error = _first(eg)
        finally:
            # Whatever stopped the downloads, the files being checked are finished and those already in the
            # pool get their rows: a stopped run keeps every file it finished.
            if self.landing_tasks:
                await asyncio.gather(*self.landing_tasks, return_exceptions=True)
            self.executor.shutdown(wait=False)
            self.rows.put_nowait(None)
            await writer
        error = error or self.crash
        if error is not None:
            raise error
        await self.report(force=True)

    async def write_rows(self) -> None:
        """The rows of the files the workers placed in the pool, on one connection, in batches of what
        arrives within ROW_WAIT of a batch's first row (up to ROW_BATCH, one statement each), without a WAL
        flush each (a row lost in a crash is a file a resumed run finds in the pool without a row; the
        snapshot's own flushed commit makes every earlier one durable)."""
        loop = asyncio.get_running_loop()
        async with self.pool.acquire() as conn:
            await conn.execute("SET synchronous_commit TO off")
            done = False
            while not done:
                batch = [await self.rows.get()]
                until = loop.time() + ROW_WAIT
                while len(batch) < ROW_BATCH and batch[-1] is not None:
                    if self.rows.empty():
                        try:
                            batch.append(await asyncio.wait_for(self.rows.get(), until - loop.time()))
                        except TimeoutError:
                            break
                    else:
                        batch.append(self.rows.get_nowait())
                if batch[-1] is None:          # the end mark is put last
                    done = True
                    batch.pop()
                if batch:
                    # A signed copy's row comes with its link, or not at all (then the rebuild signs it).
                    async with conn.transaction():
                        await store_rows(conn, [parsed for parsed, _, _ in batch], [c for _, _, c in batch], self.fpr)
                    self.files += len(batch)
                    self.bytes += sum(size for _, size, _ in batch)
                    await self.report()

    async def one(self, e: Entry) -> None:
        if e.size > self.max_size:
            return self.failures.append(f"{e.filename}: {e.size} bytes, more than DEPOT_MAX_UPLOAD_BYTES")
        loop = asyncio.get_running_loop()
        if e.sha256 in self.in_pool:
            # In the pool but without a row: a killed run placed it and its row was not written yet. It is read
            # there, so a resumed run downloads again only the files that were still downloading.
            try:
                found = await loop.run_in_executor(self.executor, self.reuse, e)
            except _Refused as exc:
                return self.failures.append(str(exc))
            if found is not None:
                self.reused_files += 1
                self.reused_bytes += e.size
                return self.rows.put_nowait((found[0], e.size, found[1]))
        url = _join(e.base, e.filename)
        body = incoming = None
        try:
            if e.size <= self.in_memory:
                body = await self.fetcher.get_bytes(url, e.size)
            else:
                incoming = await self.storage.receive(self.fetcher.stream(url), max_size=e.size)
        except (TooLarge, TooBig):
            return self.failures.append(f"{e.filename}: larger than the {e.size} bytes its index gives")
        except UpstreamError as exc:
            return self.failures.append(str(exc))
        try:
            await self.landing.acquire()
        except BaseException:
            if incoming is not None:
                incoming.discard()
            raise
        task = asyncio.create_task(self.place(e, body, incoming))
        self.landing_tasks.add(task)
        task.add_done_callback(self.landing_tasks.discard)

    async def place(self, e: Entry, body: bytes | None, incoming: Incoming | None) -> None:
        try:
            parsed, signed = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.land, e, body, incoming)
        except _Refused as exc:
            return self.failures.append(str(exc))
        except BaseException as exc:
            self.crash = self.crash or exc
            return
        finally:
            self.landing.release()
        # The file is in the pool, then its row is written (write_rows): a row never lacks its file, and a
        # file whose row never came (a crash in between) is an orphan the pool GC removes after its grace.
        self.rows.put_nowait((parsed, e.size, signed))

    def land(self, e: Entry, body: bytes | None,
             incoming: Incoming | None) -> tuple[ParsedPackage, ParsedPackage | None]:
        """Check a downloaded file against its index entry, read it as a package and place it in the pool
        (in a thread), with its signed copy (see sign). _Refused names what is wrong; a refused file is not
        kept."""
        got = _digests(body) if body is not None else incoming.digests
        try:
            self._check(e, got)
            found: list[ParsedPackage] = []
            if body is not None:
                self.storage.put_bytes(body, got.sha256, check=lambda path: found.append(self._read(e, got, path)))
                return found[0], self.sign(found[0], body)
            found.append(self._read(e, got, str(incoming.path)))
            self.storage.adopt(incoming)
            incoming = None
            return found[0], None
        finally:
            if incoming is not None:
                incoming.discard()

    def reuse(self, e: Entry) -> tuple[ParsedPackage, ParsedPackage | None] | None:
        """The package of a file already in the pool without a row (placed by a run killed before its row was
        written), checked as a download is, and its signed copy; None if it is not there (any more)."""
        path = self.storage.pool_path(e.sha256)
        body = None
        try:
            os.utime(path)          # the pool GC leaves a fresh file alone (storage.adopt does the same)
            if e.size <= self.in_memory:
                body = path.read_bytes()
                got = _digests(body)
            else:
                got = file_digests(path)
        except FileNotFoundError:
            return None
        try:
            self._check(e, got)
        except _Refused as exc:
            raise _Refused(f"{exc} (the copy already in the pool, without a row: the pool GC removes it after its "
                           "grace period, then a run downloads the file again)") from None
        parsed = self._read(e, got, str(path))
        return parsed, self.sign(parsed, body) if body is not None else None

    def sign(self, parsed: ParsedPackage, body: bytes) -> ParsedPackage | None:
        """An rpm's copy signed with Depot's key, in the pool (publish.sign_in_memory); None when there is no key or
        the package is left to rpmsign: the rebuild signs it then."""
        return None if self.signer is None else sign_in_memory(self.storage, self.signer, parsed, body)

    @staticmethod
    def _check(e: Entry, got: Digests) -> None:
        if got.size != e.size:
            raise _Refused(f"{e.filename}: {got.size} bytes, the index gives {e.size}")
        if got.sha256 != e.sha256:
            raise _Refused(f"{e.filename}: SHA-256 {got.sha256}, the index gives {e.sha256}")

    def _read(self, e: Entry, got: Digests, path: str) -> ParsedPackage:
        try:
            if self.kind == "deb":
                # The file's SHA-256 is the one the stanza gives, in an index whose digest the signed Release
                # gives: the stanza describes this very file, and is what apt reads upstream.
                parsed = parse_index_stanza(e.stanza, got, udeb=e.filename.endswith(".udeb"))
            else:
                # Header read from the file (its filelists and changelog are stored); the payload digests are
                # not checked again: the whole file is the one the signed repodata lists.
                parsed = parse_rpm(path, got, verify_payload=False)
        except PackageError as exc:
            raise _Refused(f"{e.filename}: not a valid package ({exc.reason})") from None
        version = parsed.version if self.kind == "deb" else f"{parsed.epoch or '0'}:{parsed.version}-{parsed.release}"
        if (parsed.name, version, parsed.arch) != (e.name, e.version, e.arch):
            raise _Refused(f"{e.filename}: the package is {parsed.name} {version} {parsed.arch}, "
                           f"the index says {e.name} {e.version} {e.arch}")
        return parsed

    async def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is None or (not force and now - self._shown < 0.5):
            return
        self._shown = now
        share = self.bytes / self.total_bytes if self.total_bytes else 1.0
        await self.progress(10 + int(80 * share),
                            f"downloaded {self.files}/{self.total_files} files, "
                            f"{self.bytes / 2**20:.1f}/{self.total_bytes / 2**20:.1f} MiB")


class _Clock:
    """Seconds each phase of a run took, shown in the task's result (where a slow mirror spends its time)."""

    def __init__(self):
        self.marks: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.marks[phase] = round(now - self._last, 4)
        self._last = now


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _commit(pool, mirror: Mirror, chosen: list[Entry], metadata: list[tuple[rpm.Carried, bytes]],
                  digest: str) -> tuple[int, int]:
    """The new snapshot of exactly these files and this carried metadata, and the mirror's record of this run. Returns
    (snapshot id, files left out because another file has the same package file name)."""
    shas = sorted({e.sha256 for e in chosen})
    async with pool.acquire() as conn, conn.transaction():
        # Shared with rebuilds, exclusive for the pool GC's batches: no row found here is collected
        # before the snapshot references it.
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *POOL_LOCK)
        snap_id = await conn.fetchval(
            "INSERT INTO snapshots (repo_id, reconstruct) VALUES ($1, 'needed') RETURNING id", mirror.repo.id)
        # One lookup of the rows: counted (a missing one was collected by the pool GC) and inserted, the
        # lowest digest of each file name (a plain insert: the snapshot is new, nothing can conflict).
        found, inserted = await conn.fetchrow(
            "WITH f AS (SELECT id, filename, sha256 FROM package_files WHERE sha256 = ANY($2::text[])),"
            " ins AS (INSERT INTO snapshot_packages (snapshot_id, filename, package_id)"
            "  SELECT DISTINCT ON (filename) $1::bigint, filename, id FROM f ORDER BY filename, sha256 RETURNING 1)"
            " SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM ins)", snap_id, shas)
        if found < len(shas):
            raise MirrorError(f"{len(shas) - found} downloaded files were removed by the pool GC meanwhile: "
                              "run the mirror again")
        if metadata:
            await conn.executemany(
                "INSERT INTO snapshot_metadata (snapshot_id, type, name, data, open_sha256, open_size)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [(snap_id, rec.type, rec.name, data, rec.open_sha256, rec.open_size) for rec, data in metadata])
        await conn.execute("UPDATE mirrors SET last_digest = $2, last_snapshot_id = $3, last_run_at = now()"
                           " WHERE repo_id = $1", mirror.repo.id, digest, snap_id)
        await unpin(conn, mirror.repo.id)
    return snap_id, len(shas) - inserted


async def mirror_repo(pool, settings, storage: Storage, signer, repo_id: int, *, env: str | None = None,
                      progress=None, check_stop=None) -> dict:
    mirror = await get_mirror(pool, repo_id)
    source = await mirror_source(pool, mirror)
    kind = mirror.repo.type
    keys = await keyring(pool, source.id) if mirror.gpg_check else []
    bases, auth = _bases(source, mirror)
    flat = source.definition.get("non-compliant") == "true"
    limit = settings.mirror_index_max_bytes
    clock = _Clock()
    try:
        tls = source.definition.get("ssl-authentication") or {}
        tls = tls_context(tls.get("certificate"), source.secrets.get("private-key"), tls.get("ca-certificate"))
        async with Fetcher(settings, auth=auth, auth_host=bases[0].host, tls=tls) as fetcher:
            # Every root's signed entry file first: an unchanged upstream costs these requests alone.
            verified: list[tuple[URL, bytes]] = []
            signed_by, date = None, None
            for base in bases:
                if kind == "deb":
                    meta = base if flat else _join(base, f"dists/{mirror.repo.dist}")
                    text, signed_by = await _release(fetcher, meta, keys, mirror.gpg_check)
                    date = deb.parse_release(text).date       # refuses an expired Valid-Until
                else:
                    text, signed_by = await _repomd(fetcher, base, keys, mirror.gpg_check)
                verified.append((base, text))
            clock.mark("release")
            digest = hashlib.sha256(b"".join(t for _, t in verified) + mirror.settings_key().encode()).hexdigest()
            result: dict = {"source": source.name, "signed_by": signed_by, "upstream_date": date}
            last = await last_snapshot(pool, mirror)
            if digest == mirror.last_digest and last is not None:
                result.update(unchanged=True, snapshot=last, requests=fetcher.requests)
                return await _finish(pool, storage, signer, last, env, result)
            if progress is not None:
                await progress(5, "reading the indexes")
            entries: list[Entry] = []
            metadata = []
            if kind == "deb":
                for base, text in verified:
                    meta = base if flat else _join(base, f"dists/{mirror.repo.dist}")
                    entries += await _deb_entries(fetcher, base, meta, deb.parse_release(text), mirror, limit, flat)
            else:
                loop = asyncio.get_running_loop()
                roots = [(base, await loop.run_in_executor(None, rpm.read_repomd, text)) for base, text in verified]
                metadata = await _rpm_metadata(fetcher, roots, limit)
                for base, repomd in roots:
                    entries += await _rpm_entries(fetcher, base, repomd, mirror, limit)
            clock.mark("indexes")
            chosen = select(entries, mirror.include, mirror.exclude, mirror.keep_latest,
                            dpkg_compare if kind == "deb" else rpm_compare)
            known = {r["sha256"] for r in await pool.fetch(
                "SELECT sha256 FROM package_files WHERE sha256 = ANY($1::text[])", [e.sha256 for e in chosen])}
            todo = [e for e in chosen if e.sha256 not in known]
            downloads = _Downloads(pool, storage, fetcher, kind, settings, progress, check_stop, signer)
            await pin(pool, mirror.repo.id, [e.sha256 for e in todo])     # kept from the pool GC until a run succeeds
            clock.mark("select")
            await downloads.run(todo)
            clock.mark("download")
            result.update(requests=fetcher.requests, downloaded=downloads.files - downloads.reused_files,
                          bytes=downloads.bytes - downloads.reused_bytes,
                          reused=len(chosen) - len(todo) + downloads.reused_files)
            if fetcher.rate:
                result["throttled_seconds"] = round(fetcher.throttled, 3)
    except (UpstreamError, ArchiveError) as exc:
        raise MirrorError(str(exc)) from None
    if downloads.failures:
        shown = "; ".join(downloads.failures[:MAX_REPORTED])
        more = len(downloads.failures) - MAX_REPORTED
        raise MirrorError(f"{len(downloads.failures)} of {len(todo)} files failed, no snapshot made "
                          f"(the {downloads.files} good ones are kept for the next run): {shown}"
                          + (f"; and {more} more" if more > 0 else ""))
    if check_stop is not None:
        await check_stop()
    if progress is not None:
        await progress(90, f"making the snapshot of {len(chosen)} packages")
    snap_id, duplicates = await _commit(pool, mirror, chosen, metadata, digest)
    clock.mark("commit")
    result.update(unchanged=False, snapshot=snap_id, packages=len(chosen) - duplicates, duplicates=duplicates,
                  metadata=sorted(rec.type for rec, _ in metadata), timings=clock.marks)
    return await _finish(pool, storage, signer, snap_id, env, result)


async def _finish(pool, storage: Storage, signer, snap_id: int, env: str | None, result: dict) -> dict:
    """Rebuild the snapshot if it is not built yet (signed with Depot's key), then point the environment."""
    if (await get_snapshot(pool, snap_id)).reconstruct is not None:
        result["rebuild"] = await rebuild_snapshot(pool, storage, signer, snap_id, sign=signer is not None)
    if env is not None:
        result["environment"] = await point_env(pool, storage, signer, env, snap_id)
    return result
