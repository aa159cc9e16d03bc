"""`make bench`, mirrors: Depot's mirror task beside aptly's `mirror update` (debs) and `dnf reposync` (rpms), on
the same upstream, in the same run.

Each half (BENCH_MIRROR_COUNT generated packages, 5,000 by default, cached under bench/out/, signed with a
throwaway key: InRelease and Packages.xz with by-hash, or repomd.xml.asc and a zstd primary), once per
BENCH_MIRROR_DELAYS_MS ("0,5": every upstream answer waits that long first, a distant upstream), from an empty
store. The upstream is nginx on 127.0.0.1 (scripts/system-deps.sh installs it), or an aiohttp server in a process
of its own where a delay is asked or nginx is missing (it spends more CPU per answer than the clients do: on it,
every client measures mostly the server). Each timed run starts after a sync(2).
  first mirror          Depot: verify, indexes, download + check + read + pool, snapshot, rebuild + sign
                        aptly: `mirror update` (download + checks; publishing is a separate step)
                        reposync: `dnf reposync --download-metadata` (repo_gpgcheck, 10 parallel downloads)
  download floor        a plain aiohttp downloader on the selected files (SHA-256, one file each, nothing else)
  upstream unchanged    both again
  upstream +50/-50      both again (Depot: exactly 50 package downloads)
The reference of the first mirror and of +50/-50 is the mean of two copies kept in step, one run just before
Depot and one just after. Targets (printed beside each figure): first mirror and +50/-50 <= 0.5x the reference,
unchanged <= 0.1 s.
Then rpm signing alone (BENCH_MIRROR_SIGN_COUNT rpms, 1,000 by default): Depot's key in process against rpmsign.
Then the worker's memory: a real `depot worker` process mirrors BENCH_MIRROR_RSS ("1000,5000") generated debs
from an empty store; its peak RSS for each count (flat in the number of packages is the target).
aptly and dnf reposync (Debian's packages, scripts/system-deps.sh) are run only if installed.

    .venv/bin/python -m bench mirror
"""
from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from bench._common import free_port, fresh_database, private_settings, server_env
from tests.pkgfactory import bench_debs, bench_rpms, make_deb, make_rpms
from tests.upstream import DebArchive, GpgKey, RpmArchive, Upstream

BENCH_DB = "depot_bench_mirror"
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO, TARGET_UNCHANGED = 0.5, 0.1


def _serve(root: str, delay: float, port_out) -> None:
    """The upstream, in a process of its own (as nginx would be): its CPU is not Depot's. GET /__counts
    answers its per-path request counts."""
    upstream = Upstream(Path(root))

    @web.middleware
    async def hooks(request, handler):
        if request.path == "/__counts":
            return web.json_response(dict(upstream.counts))
        if delay:
            await asyncio.sleep(delay)
        return await handler(request)

    upstream.app.middlewares.append(hooks)

    async def run() -> None:
        runner = web.AppRunner(upstream.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(run())


class _Nginx:
    """The upstream as nginx (one worker process, sendfile), when installed and no delay is asked: a server whose
    own CPU per answer is small, so the run measures the clients. The aiohttp server above spends about half a
    millisecond of its core per package: a plain aiohttp downloader fetching the 3,333 debs from it takes about
    as long as a whole mirror run, from nginx a fraction of that. Requests are counted from its access log."""

    name = "nginx"

    def __init__(self, root: Path):
        self.port = free_port()
        self.home = root.parent / "nginx"
        (self.home / "tmp").mkdir(parents=True)
        self.log = self.home / "access.log"
        temp = " ".join(f"{k}_temp_path {self.home}/tmp;"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;" if os.geteuid() == 0 else ""       # the work tree is private to this user
        conf = self.home / "nginx.conf"
        conf.write_text(
            f"daemon off; {user} worker_processes 1; pid {self.home}/nginx.pid; error_log {self.home}/error.log;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ log_format uri '$status $uri'; access_log {self.log} uri; sendfile on; tcp_nopush on;\n"
            f"  keepalive_requests 1000000; {temp} types {{ }} default_type application/octet-stream;\n"
            f"  server {{ listen 127.0.0.1:{self.port}; root {root}; }} }}\n")
        self.process = subprocess.Popen([_nginx(), "-c", str(conf), "-p", str(self.home)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"nginx did not start: {(self.home / 'error.log').read_text()}")

    async def package_requests(self) -> int:
        with open(self.log) as f:
            return sum(1 for line in f if line.rstrip().endswith((".deb", ".rpm")))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _nginx() -> str | None:
    """nginx's path (Debian puts it in /usr/sbin, which a user's PATH may lack), or None."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


class _Server:
    name = "aiohttp"

    def __init__(self, root: Path, delay: float):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_serve, args=(str(root), delay, send), daemon=True)
        self.process.start()
        self.port = receive.recv()

    async def package_requests(self) -> int:
        import aiohttp

        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.port}/__counts") as r:
            counts = await r.json()
        return sum(n for p, n in counts.items() if p.endswith((".deb", ".rpm")))

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --- the references --------------------------------------------------------------------------------------------

def _measured(cmd: list[str], env: dict | None = None, timeout: float = 3600) -> tuple[int, str, int]:
    """Run a reference command: (exit status, the end of its error output, its peak RSS in KiB)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read()[-500:].decode(errors="replace"), usage.ru_maxrss


def _settled() -> None:
    """Before each timed run: the dirty pages earlier runs left (over 100 MB of written packages a first mirror) are
    written out now, not inside whichever run comes next."""
    os.sync()


class _Aptly:
    name = "aptly"

    def __init__(self, home: Path, key: GpgKey, url: str):
        self.home, self.peak_kib = home, 0
        (home / ".aptly.conf").write_text(f'{{"rootDir": "{home / "aptly"}", "downloadConcurrency": 4, '
                                          f'"gpgProvider": "gpg"}}')
        (home / ".gnupg").mkdir(mode=0o700)
        subprocess.run(["gpg", "--homedir", str(home / ".gnupg"), "--no-default-keyring", "--keyring",
                        "trustedkeys.gpg", "--import"], input=key.armored().encode(), capture_output=True, check=True,
                       env={**os.environ, "HOME": str(home)})
        self._run("mirror", "create", "-architectures=amd64", "m1", url, "stable", "main")

    def _run(self, *args: str) -> None:
        code, err, peak = _measured(["aptly", f"-config={self.home / '.aptly.conf'}", *args],
                                    env={**os.environ, "HOME": str(self.home)})
        if code != 0:
            raise RuntimeError(f"aptly {args[0]} {args[1]} failed: {err}")
        self.peak_kib = max(self.peak_kib, peak)

    def timed(self) -> float:
        _settled()
        t = time.perf_counter()
        self._run("mirror", "update", "m1")
        return time.perf_counter() - t


class _Reposync:
    name = "reposync"

    def __init__(self, home: Path, key: GpgKey, url: str):
        self.home, self.peak_kib = home, 0
        (home / "key.asc").write_text(key.armored())
        (home / "repos.d").mkdir()
        # metadata_expire=0: each run asks for repomd.xml again, as Depot's does (else dnf trusts its cache 48 h).
        (home / "dnf.conf").write_text(
            f"[main]\ncachedir={home / 'cache'}\nreposdir={home / 'repos.d'}\nlogdir={home}\npersistdir={home / 'p'}\n"
            f"gpgcheck=0\nmax_parallel_downloads=10\nmetadata_expire=0\n\n"
            f"[up]\nname=up\nbaseurl={url}\nrepo_gpgcheck=1\ngpgcheck=0\ngpgkey=file://{home / 'key.asc'}\n")

    def timed(self) -> float:
        _settled()
        t = time.perf_counter()
        code, err, peak = _measured(
            ["dnf", "-c", str(self.home / "dnf.conf"), "--releasever=9", "--installroot", str(self.home / "root"),
             "-y", "-q", "reposync", "--repoid=up", f"--download-path={self.home / 'out'}", "--download-metadata",
             "--delete"])
        if code != 0:
            raise RuntimeError(f"dnf reposync failed: {err}")
        self.peak_kib = max(self.peak_kib, peak)
        return time.perf_counter() - t


def _reference(kind: str):
    if kind == "deb":
        return _Aptly if shutil.which("aptly") else None
    ok = shutil.which("dnf") and subprocess.run(["dnf", "reposync", "--help"], capture_output=True).returncode == 0
    return _Reposync if ok else None


# --- the upstreams ----------------------------------------------------------------------------------------------

class _DebUpstream:
    def __init__(self, www: Path, key: GpgKey, count: int):
        self.archive = DebArchive(www / "debian", key)
        # A smaller count takes the first files of the 5,000 generated once.
        debs = sorted(bench_debs(max(count, 5000), str(ROOT / "bench" / "out")).iterdir())[:count]
        for f in debs:
            os.link(f, self.archive.pool / f.name)
        self.archive.build(compressions=(".xz", ".gz"), arches=("amd64",))
        self.wanted = sum(1 for f in debs if not f.name.endswith("_arm64.deb"))

    def files(self) -> list[str]:
        """The package files the mirror selects, as paths under the served root (for the download floor)."""
        return [str(f.relative_to(self.archive.root.parent)) for f in sorted(self.archive.pool.iterdir())
                if not f.name.endswith("_arm64.deb")]

    def change(self) -> None:
        for f in sorted(self.archive.pool.glob("*_amd64.deb"))[:50]:
            f.unlink()
        for i in range(50):
            make_deb(self.archive.pool, f"bench-new{i:03d}", "1.0-1", "amd64")
        self.archive.build(compressions=(".xz", ".gz"), arches=("amd64",))

    async def mirror_repo(self, pool, url: str):
        from app.mirrors.model import create_mirror_repo
        from app.sources.model import add_keys, create_source

        await create_source(pool, "deb", {"name": "up", "type": "deb", "url": url, "distributions": [
            {"name": "stable", "components": [{"name": "main"}]}]})
        await add_keys(pool, "deb", "up", self.archive.key.armored())
        return await create_mirror_repo(pool, name="m", type="deb", dist="stable", section="main", source="up",
                                        arch=["amd64"])


class _RpmUpstream:
    def __init__(self, www: Path, key: GpgKey, count: int):
        self.archive = RpmArchive(www / "rpm", key)
        rpms = sorted(bench_rpms(max(count, 5000), str(ROOT / "bench" / "out")).iterdir())[:count]
        for f in rpms:
            os.link(f, self.archive.packages / f.name)
        self.archive.build(compress="zstd")
        self.wanted = len(rpms)

    def files(self) -> list[str]:
        return [str(f.relative_to(self.archive.root.parent)) for f in sorted(self.archive.packages.iterdir())]

    def change(self) -> None:
        for f in sorted(self.archive.packages.glob("*.x86_64.rpm"))[:50]:
            f.unlink()
        make_rpms(self.archive.packages, [(f"bench-new{i:03d}", "1.0", "1", "x86_64") for i in range(50)])
        self.archive.build(compress="zstd")

    async def mirror_repo(self, pool, url: str):
        from app.mirrors.model import create_mirror_repo
        from app.sources.model import add_keys, create_source

        await create_source(pool, "rpm", {"name": "up", "type": "rpm", "url": url, "releasever": [{"name": 9}]})
        await add_keys(pool, "rpm", "up", self.archive.key.armored())
        return await create_mirror_repo(pool, name="m", type="rpm", releasever="9", source="up",
                                        arch=["x86_64", "noarch"])


async def _floor(port: int, paths: list[str], concurrency: int, out: Path) -> float:
    """A plain aiohttp downloader on the same files: each body read whole, its SHA-256 taken and the body written
    to a file named by it in a thread; no index, signature, check against an index, database or publishing. What
    Python on this stack pays for the downloads and the files alone, beside the first mirror's figures."""
    import hashlib

    import aiohttp

    out.mkdir()
    queue = iter(paths)
    _settled()
    t = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), auto_decompress=False) as s:
        async def worker() -> None:
            for path in queue:
                async with s.get(f"http://127.0.0.1:{port}/{path}") as resp:
                    body = await resp.read()
                # In a thread, as Depot places its files: the kernel's file creation overlaps the downloads.
                await asyncio.to_thread(lambda: (out / hashlib.sha256(body).hexdigest()).write_bytes(body))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t


def _url(kind: str, port: int) -> str:
    return f"http://127.0.0.1:{port}/" + ("debian" if kind == "deb" else "rpm")


# --- one half, at one delay -------------------------------------------------------------------------------------

async def _half(kind: str, count: int, delay: float) -> None:
    from app import db
    from app.mirrors.run import mirror_repo
    from app.repos.signing import Signer
    from app.repos.storage import Storage

    work = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    key = GpgKey("bench")
    server = None
    try:
        upstream = (_DebUpstream if kind == "deb" else _RpmUpstream)(work / "www", key, count)
        server = _Nginx(work / "www") if not delay and _nginx() else _Server(work / "www", delay)
        url = _url(kind, server.port)
        settings = private_settings(BENCH_DB, 5, "depot:bench-mirror-queue", storage_dir=work / "storage",
                                    mirror_allow_hosts=("127.0.0.1",))
        await (await fresh_database(settings)).close()
        # As many connections as a worker process has (one per job, plus four).
        pool = await db.create_pool(settings, min_size=2, max_size=settings.worker_max_jobs + 4)
        storage, signer = Storage(settings.storage_dir), Signer(work / "gnupg", key_length=2048)
        signer.fingerprint          # the key is made now, not inside the first timed run
        repo = await upstream.mirror_repo(pool, url)
        reference_kind = _reference(kind)
        reference = early = None
        if reference_kind is not None:
            # Two references in step, one timed before Depot and one after (the mean is the figure): whichever
            # runs right after another run's files were deleted pays for it in the kernel, and neither side
            # should always be that one.
            (work / "ref").mkdir()
            (work / "ref-before").mkdir()
            reference = reference_kind(work / "ref", key, url)
            early = reference_kind(work / "ref-before", key, url)
        ref_name = reference_kind.name if reference_kind else ("aptly" if kind == "deb" else "reposync")

        async def depot() -> tuple[float, dict]:
            before = await server.package_requests()
            _settled()
            t, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            result = await mirror_repo(pool, replace(settings), storage, signer, repo.id)
            seconds, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
            user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
            return seconds, {**result, "package_requests": await server.package_requests() - before,
                             "cpu": f"{user + system:.2f} s (user {user:.2f}, system {system:.2f})"}

        async def bracketed() -> tuple[float, dict, float | None, str]:
            before = early.timed() if early else None
            seconds, result = await depot()
            after = reference.timed() if reference else None
            if before is None:
                return seconds, result, None, ""
            return seconds, result, (before + after) / 2, f"{ref_name} {before:.3f} s before, {after:.3f} s after; "

        rows: list[tuple[str, float, float | None, str, str]] = []
        seconds, result, ref, refs = await bracketed()
        rows.append(("first mirror", seconds, ref, _ratio_target(seconds, ref),
                     f"{refs}{result['package_requests']} downloads of {upstream.wanted}; rebuild + sign "
                     f"{result['rebuild']['seconds']:.2f} s (so {_without_rebuild(seconds, result, ref)}); "
                     f"Depot CPU {result['cpu']}; phases {_phases(result)}"))
        files = upstream.files()
        floor = await _floor(server.port, files, settings.mirror_concurrency, work / "floor")
        rows.append(("download floor", floor, ref, "-",
                     f"{len(files)} files: a plain aiohttp downloader (_floor), the bound of any Python "
                     "mirror on this upstream"))
        seconds, result = await depot()
        ref = reference.timed() if reference else None
        rows.append(("upstream unchanged", seconds, ref,
                     f"<= {TARGET_UNCHANGED} s: {'met' if seconds <= TARGET_UNCHANGED else 'NOT MET'}",
                     f"unchanged={result['unchanged']}, {result['requests']} request(s)"))
        upstream.change()
        seconds, result, ref, refs = await bracketed()
        exact = result["package_requests"] == 50
        rows.append(("upstream +50/-50", seconds, ref, _ratio_target(seconds, ref) + ("" if exact else "; NOT 50"),
                     f"{refs}{result['package_requests']} downloads; rebuild + sign {result['rebuild']['seconds']:.2f} s "
                     f"(so {_without_rebuild(seconds, result, ref)}); phases {_phases(result)}"))

        print(f"\n{kind}: {count} {kind}s ({upstream.wanted} selected), upstream {server.name}, "
              f"delay {delay * 1000:.0f} ms per answer, concurrency {settings.mirror_concurrency}; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'case':<20}{'depot s':>9}{ref_name + ' s':>12}{'ratio':>8}  {'target':<22}  notes")
        for name, mine, theirs, target, note in rows:
            ratio = f"{mine / theirs:.2f}x" if theirs else "-"
            print(f"{name:<20}{mine:>9.3f}{(f'{theirs:.3f}' if theirs else '-'):>12}{ratio:>8}  {target:<22}  {note}")
        if reference is None:
            print(f"({ref_name} not installed: scripts/system-deps.sh installs it, for the reference figures)")
        else:
            print(f"{ref_name}'s peak RSS in these runs: {max(reference.peak_kib, early.peak_kib) / 1024:.1f} MiB")
        await pool.close()
        signer.close()
    finally:
        if server is not None:
            server.stop()
        key.close()
        shutil.rmtree(work, ignore_errors=True)


def _phases(result: dict) -> str:
    """The run's phases and the rebuild's, in ms (a rebuild's counts, ints, as they are)."""
    def shown(marks: dict) -> str:
        return ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v * 1000:.0f}" for k, v in marks.items())

    rebuild = result["rebuild"]
    marks = {**result.get("timings", {}), "rebuild": rebuild["seconds"]}
    return f"{shown(marks)} ms ({shown(rebuild.get('timings', {}))})"


def _without_rebuild(seconds: float, result: dict, ref: float | None) -> str:
    """The run up to its new snapshot, before Depot's signed rebuild (which re-signs every new rpm: the references
    publish nothing)."""
    before = seconds - result["rebuild"]["seconds"]
    return f"{before:.2f} s before it" + (f", {before / ref:.2f}x" if ref else "")


def _ratio_target(mine: float, theirs: float | None) -> str:
    if not theirs:
        return f"<= {TARGET_RATIO}x: -"
    return f"<= {TARGET_RATIO}x: {'met' if mine / theirs <= TARGET_RATIO else 'NOT MET'}"


# --- rpm signing alone -----------------------------------------------------------------------------------------

def _rpm_signing(count: int) -> None:
    """`count` generated rpms signed by Depot's key in process (`Signer.sign_rpms`) and by rpmsign (its fallback,
    `Signer.rpmsign`), one after the other in the same run."""
    from app.repos.signing import Signer

    rpms = sorted(bench_rpms(max(count, 5000), str(ROOT / "bench" / "out")).iterdir())[:count]
    work = Path(tempfile.mkdtemp(prefix="bench-rpmsign-"))
    signer = Signer(work / "gnupg", key_length=3072)
    try:
        signer.fingerprint
        figures = []
        for name, sign in (("in process", signer.sign_rpms), ("rpmsign", signer.rpmsign)):
            out = work / name.replace(" ", "-")
            out.mkdir()
            t = time.perf_counter()
            sign([(f, out / f.name) for f in rpms])
            figures.append((name, time.perf_counter() - t))
        (_, mine), (_, theirs) = figures
        print(f"\nrpm signing alone: {count} generated rpms, Depot's key (RSA 3072); load average "
              f"{os.getloadavg()[0]:.1f}\n  in process {mine:.2f} s ({mine / count * 1000:.2f} ms per rpm), rpmsign "
              f"{theirs:.2f} s ({theirs / count * 1000:.2f} ms per rpm): {mine / theirs:.3f}x")
    finally:
        signer.close()
        shutil.rmtree(work, ignore_errors=True)


# --- the worker's memory ----------------------------------------------------------------------------------------

def _rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


async def _worker_rss(count: int) -> tuple[int, int, int]:
    """A `depot worker` mirrors `count` generated debs from an empty store: (selected, idle RSS, peak RSS) in KiB."""
    from arq import create_pool

    from app import db
    from app.mirrors.model import request_mirror
    from app.resources import redis_settings

    work = Path(tempfile.mkdtemp(prefix="bench-mirror-rss-"))
    key = GpgKey("bench")
    server = worker = None
    try:
        upstream = _DebUpstream(work / "www", key, count)
        server = _Server(work / "www", 0)
        settings = private_settings(BENCH_DB, 5, "depot:bench-mirror-queue", storage_dir=work / "storage")
        await (await fresh_database(settings)).close()
        redis = await create_pool(redis_settings(settings), default_queue_name=settings.queue_name)
        await redis.flushdb()
        pool = await db.create_pool(settings, min_size=1, max_size=2)
        repo = await upstream.mirror_repo(pool, _url("deb", server.port))
        env = server_env(settings, DEPOT_VAR_DIR=str(work / "var"), DEPOT_STORAGE_DIR=str(work / "storage"),
                         DEPOT_MIRROR_ALLOW_HOSTS="127.0.0.1", DEPOT_GPG_KEY_LENGTH="2048")
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(5)                         # started and idle
        idle = _rss_kib(worker.pid)["VmRSS"]
        ref = await request_mirror(pool, redis, repo.id, None)
        deadline = time.monotonic() + 600
        while (status := await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id)) in ("queued", "running"):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the worker's mirror did not finish")
            await asyncio.sleep(0.2)
        if status != "done":
            raise RuntimeError(f"the worker's mirror ended {status}")
        peak = _rss_kib(worker.pid)["VmHWM"]
        await redis.aclose()
        await pool.close()
        return upstream.wanted, idle, peak
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        if server is not None:
            server.stop()
        key.close()
        shutil.rmtree(work, ignore_errors=True)


async def _rss(counts: list[int]) -> None:
    figures = [(n, *await _worker_rss(n)) for n in counts]
    print(f"\nworker memory (a `depot worker` process mirroring generated debs from an empty store; "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"{'debs':>6}{'selected':>10}{'idle RSS MiB':>14}{'peak RSS MiB':>14}")
    for n, wanted, idle, peak in figures:
        print(f"{n:>6}{wanted:>10}{idle / 1024:>14.1f}{peak / 1024:>14.1f}")
    if len(figures) > 1:
        (n0, _, _, p0), (n1, _, _, p1) = figures[0], figures[-1]
        print(f"peak RSS grows {(p1 - p0) / 1024:.1f} MiB from {n0} to {n1} debs "
              f"(target: flat in the number of packages; aptly's, above, is the reference)")


def main() -> None:
    count = int(os.environ.get("BENCH_MIRROR_COUNT", "5000"))
    delays = [float(d) / 1000 for d in os.environ.get("BENCH_MIRROR_DELAYS_MS", "0,5").split(",") if d.strip()]
    kinds = [k.strip() for k in os.environ.get("BENCH_MIRROR_KINDS", "deb,rpm").split(",") if k.strip()]
    rss = [int(n) for n in os.environ.get("BENCH_MIRROR_RSS", "1000,5000").split(",") if n.strip()]
    signing = int(os.environ.get("BENCH_MIRROR_SIGN_COUNT", "1000"))
    import uvloop

    # On uvloop, as `depot worker` runs its tasks (app/cli/server.py).
    for kind in kinds:
        for delay in delays:
            uvloop.run(_half(kind, count, delay))
    if "rpm" in kinds and signing:
        _rpm_signing(signing)
    if rss:
        uvloop.run(_rss(rss))


if __name__ == "__main__":
    main()
