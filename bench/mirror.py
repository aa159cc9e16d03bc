"""`make bench`, mirrors: Depot's mirror task beside aptly's `mirror update`, on the same upstream, one run.

Cases (BENCH_MIRROR_COUNT generated debs, 5,000 by default, cached under bench/out/; upstream served by aiohttp
on 127.0.0.1 in a process of its own, InRelease signed with a throwaway key, Packages.xz with by-hash):
  first mirror            Depot: verify, indexes, download + check + parse + pool, snapshot, rebuild + sign
                          aptly: `mirror update` (download + checks only; publishing is a separate step)
  upstream unchanged      both again                                  (Depot's target: <= 0.1 s)
  upstream +50/-50        both again                                  (Depot: exactly 50 package downloads)
With `BENCH_MIRROR_DELAY_MS` every upstream answer waits that long first (a distant upstream).
aptly (Debian's package) is run only if installed; its figures are the reference of the same run.

    .venv/bin/python -m bench mirror
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from bench._common import fresh_database, private_settings
from tests.pkgfactory import bench_debs, make_deb
from tests.upstream import DebArchive, GpgKey, Upstream

BENCH_DB = "depot_bench_mirror"
ROOT = Path(__file__).resolve().parent.parent


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


class _Server:
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
        return sum(n for p, n in counts.items() if p.endswith(".deb"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def _aptly(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["aptly", f"-config={home / '.aptly.conf'}", *args], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(home)}, timeout=3600)


def _aptly_setup(home: Path, key: GpgKey, url: str) -> None:
    (home / ".aptly.conf").write_text(f'{{"rootDir": "{home / "aptly"}", "downloadConcurrency": 4, '
                                      f'"gpgProvider": "gpg"}}')
    (home / ".gnupg").mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home / ".gnupg"), "--no-default-keyring", "--keyring", "trustedkeys.gpg",
                    "--import"], input=key.armored().encode(), capture_output=True, check=True,
                   env={**os.environ, "HOME": str(home)})
    out = _aptly(home, "mirror", "create", "-architectures=amd64", "m1", url, "stable", "main")
    if out.returncode != 0:
        raise RuntimeError(f"aptly mirror create failed: {out.stderr[-500:]}")


def _timed_aptly(home: Path) -> float:
    t = time.perf_counter()
    out = _aptly(home, "mirror", "update", "m1")
    if out.returncode != 0:
        raise RuntimeError(f"aptly mirror update failed: {out.stderr[-500:]}")
    return time.perf_counter() - t


async def _run(count: int, delay: float) -> None:
    from app import db
    from app.mirrors.model import create_mirror_repo
    from app.mirrors.run import mirror_repo
    from app.repos.signing import Signer
    from app.repos.storage import Storage
    from app.sources.model import add_keys, create_source

    work = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    key = GpgKey("bench")
    server = None
    try:
        debs = bench_debs(count, str(ROOT / "bench" / "out"))
        archive = DebArchive(work / "www" / "debian", key)
        for f in debs.iterdir():
            os.link(f, archive.pool / f.name)
        archive.build(compressions=(".xz", ".gz"), arches=("amd64",))
        server = _Server(work / "www", delay)
        url = f"http://127.0.0.1:{server.port}/debian"

        settings = private_settings(BENCH_DB, 5, "depot:bench-mirror-queue", storage_dir=work / "storage",
                                    mirror_allow_hosts=("127.0.0.1",))
        await (await fresh_database(settings)).close()
        # As many connections as a worker process has (one per job, plus four): the downloads share them.
        pool = await db.create_pool(settings, min_size=2, max_size=settings.worker_max_jobs + 4)
        storage, signer = Storage(settings.storage_dir), Signer(work / "gnupg", key_length=2048)
        signer.fingerprint          # the key is made now, not inside the first timed run
        await create_source(pool, "deb", {"name": "up", "type": "deb", "url": url, "distributions": [
            {"name": "stable", "components": [{"name": "main"}]}]})
        await add_keys(pool, "deb", "up", key.armored())
        repo = await create_mirror_repo(pool, name="m", type="deb", dist="stable", section="main", source="up",
                                        arch=["amd64"])
        rows: list[tuple[str, float, float | None, str]] = []

        async def depot() -> tuple[float, dict]:
            before = await server.package_requests()
            t, cpu = time.perf_counter(), time.process_time()
            result = await mirror_repo(pool, replace(settings), storage, signer, repo.id)
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
            return seconds, {**result, "package_requests": await server.package_requests() - before, "cpu": cpu}

        aptly_home = None
        if shutil.which("aptly"):
            aptly_home = work / "aptly-home"
            aptly_home.mkdir()
            _aptly_setup(aptly_home, key, url)
        wanted = sum(1 for f in debs.iterdir() if not f.name.endswith("_arm64.deb"))

        seconds, result = await depot()
        ref = _timed_aptly(aptly_home) if aptly_home else None
        rows.append(("first mirror", seconds, ref, f"{result['package_requests']} downloads of {wanted}; "
                                                   f"rebuild + sign {result['rebuild']['seconds']:.2f} s; "
                                                   f"Depot CPU {result['cpu']:.2f} s"))
        seconds, result = await depot()
        ref = _timed_aptly(aptly_home) if aptly_home else None
        rows.append(("upstream unchanged", seconds, ref, f"unchanged={result['unchanged']}, "
                                                         f"{result['requests']} request(s)"))
        gone = sorted(archive.pool.glob("*_amd64.deb"))[:50]
        for f in gone:
            f.unlink()
        for i in range(50):
            make_deb(archive.pool, f"bench-new{i:03d}", "1.0-1", "amd64")
        archive.build(compressions=(".xz", ".gz"), arches=("amd64",))
        seconds, result = await depot()
        ref = _timed_aptly(aptly_home) if aptly_home else None
        rows.append(("upstream +50/-50", seconds, ref, f"{result['package_requests']} downloads; "
                                                       f"rebuild + sign {result['rebuild']['seconds']:.2f} s"))

        print(f"{count} debs ({wanted} amd64+all), upstream delay {delay * 1000:.0f} ms per answer, "
              f"concurrency {settings.mirror_concurrency}")
        print(f"{'case':<22}{'depot s':>10}{'aptly s':>10}{'ratio':>8}  notes")
        for name, mine, theirs, note in rows:
            ratio = f"{mine / theirs:.2f}x" if theirs else "-"
            print(f"{name:<22}{mine:>10.3f}{(f'{theirs:.3f}' if theirs else '-'):>10}{ratio:>8}  {note}")
        if aptly_home is None:
            print("(aptly not installed: `apt-get install aptly` for the reference figures)")
        await pool.close()
        signer.close()
    finally:
        if server is not None:
            server.stop()
        key.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    count = int(os.environ.get("BENCH_MIRROR_COUNT", "5000"))
    delay = float(os.environ.get("BENCH_MIRROR_DELAY_MS", "0")) / 1000
    asyncio.run(_run(count, delay))


if __name__ == "__main__":
    main()
