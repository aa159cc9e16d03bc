"""A mirror under faults: its worker SIGKILLed mid-download. Real `depot serve` and `depot worker` processes; the
upstream is served by the test on 127.0.0.1."""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
from aiohttp import web

from tests.faults.repo_client import wait_task
from tests.upstream import DebArchive, GpgKey, Upstream

PACKAGES = 40
CONCURRENCY = 4


async def test_worker_killed_mid_download_resumes_fetching_only_what_was_missing(processes, fpool, fault_admin_key,
                                                                                   tmp_path):
    key = GpgKey("faults")
    archive = DebArchive(tmp_path / "www" / "debian", key)
    for n in range(PACKAGES):
        archive.add(f"pkg{n:02d}")
    archive.build()
    upstream = Upstream(tmp_path / "www")
    upstream.package_delay = 0.1
    runner = web.AppRunner(upstream.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    storage = tmp_path / "storage"
    storage.mkdir()
    env = {"DEPOT_STORAGE_DIR": str(storage), "DEPOT_MIRROR_ALLOW_HOSTS": "127.0.0.1",
           "DEPOT_MIRROR_CONCURRENCY": str(CONCURRENCY)}
    try:
        _, base = processes.server(**env)
        worker = processes.worker(**env)
        h = {"Authorization": f"Bearer {fault_admin_key}"}
        async with aiohttp.ClientSession(headers=h) as session:
            async def post(path, body):
                async with session.post(f"{base}/api/v2/{path}", json=body) as r:
                    assert r.status in (201, 202), await r.text()
                    return await r.json()

            await post("source/deb/", {"name": "up", "type": "deb", "url": f"http://127.0.0.1:{port}/debian",
                                       "distributions": [{"name": "stable", "components": [{"name": "main"}]}]})
            await post("source/deb/up/keys", {"armored": key.armored()})
            await post("environment/", {"name": "prod"})
            repo = (await post("repo/", {"name": "m", "type": "deb", "dist": "stable", "section": "main",
                                         "source": "up", "arch": ["amd64"]}))["results"]["Id"]
            task_id = (await post(f"repo/{repo}/mirror", {"env": "prod"}))["task-id"]
            deadline = time.monotonic() + 30
            while await fpool.fetchval("SELECT count(*) FROM package_files") < 10:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            worker.signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait, 10)
            landed = await fpool.fetchval("SELECT count(*) FROM package_files")
            requested = upstream.package_requests()
            # Files placed in the pool, rows written or not: the re-run reads them there.
            placed = sum(1 for f in (storage / "pool").rglob("*") if f.is_file())
            upstream.package_delay = 0
            processes.worker(**env)    # its reconciler finds the stale task and runs it again
            await wait_task(fpool, task_id, ("done", "error"), timeout=60)
        row = await fpool.fetchrow("SELECT status, attempts, error, result FROM tasks WHERE id = $1", task_id)
        assert row["status"] == "done", row["error"]
        assert row["attempts"] >= 2
        assert row["result"]["reused"] >= landed and row["result"]["packages"] == PACKAGES
        # The re-run fetched exactly what the pool lacked; fetched twice are the files in flight when the worker
        # died: at most CONCURRENCY downloading and CONCURRENCY downloaded and still being checked.
        assert upstream.package_requests() - requested == PACKAGES - placed
        assert upstream.package_requests() - PACKAGES == requested - placed <= 2 * CONCURRENCY
        assert await fpool.fetchval("SELECT count(*) FROM snapshot_packages") == PACKAGES
        assert await fpool.fetchval("SELECT count(*) FROM environment_snapshots") == 1
        print(f"\nworker SIGKILL after {landed}/{PACKAGES} rows, {placed} files ({requested} requested): the re-run fetched "
              f"{upstream.package_requests() - requested} more, {upstream.package_requests() - PACKAGES} twice")
    finally:
        await runner.cleanup()
        key.close()
