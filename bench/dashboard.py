"""Dashboard benchmark: page times with a 100,000-host fleet (BENCH_DASH_HOSTS) and 300,000 tasks.

A real Depot app (create_app, aiohttp on a loopback port) on a fresh `depot_bench_dash` database of
the embedded PostgreSQL; the fleet is inserted with SQL (the report path has its own benchmark). A
logged-in session then fetches each page BENCH_DASH_REPEAT times; the median and the worst are
printed. Caches of fleet-wide figures are cleared before every request, so these are cold times.
"""
from __future__ import annotations

import asyncio
import os
import re
import statistics
import time

from bench._common import fresh_database, private_settings

HOSTS = int(os.environ.get("BENCH_DASH_HOSTS", "100000"))
TASKS = int(os.environ.get("BENCH_DASH_TASKS", "300000"))
REPEAT = int(os.environ.get("BENCH_DASH_REPEAT", "7"))
BENCH_DB = "depot_bench_dash"


def _settings():
    return private_settings(BENCH_DB, 3, "depot:bench-dash-queue")


async def _load(settings) -> None:
    from app import users
    from app.hosts.inventory import seed_inventories

    pool = await fresh_database(settings)
    await users.create_user(pool, "bench", "operator", password="bench-password")
    t = time.perf_counter()
    await pool.execute(
        """
        INSERT INTO hosts (hostname, ip, auth_id, token_digest, os, os_version, kernel, arch, reboot_required,
                           available_count, agent_status, last_seen_at)
        SELECT 'host' || lpad(i::text, 6, '0') || '.example.net',
               '10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256), 'id_' || i, '\\x00',
               (ARRAY['Debian GNU/Linux', 'Ubuntu', 'AlmaLinux'])[1 + i % 3], (10 + i % 4)::text,
               '6.1.0-' || (i % 50), 'x86_64', i % 13 = 0, i % 5, 'running',
               now() - ((i % 2000) || ' minutes')::interval
        FROM generate_series(1, $1) i
        """,
        HOSTS,
    )
    await seed_inventories(pool, [(h, f"pkg{p}", "amd64", f"1.{p}") for h in range(1, 201) for p in range(1, 2001)])
    await pool.execute(
        "INSERT INTO host_history (host_id, change, name, old_version, new_version, at)"
        " SELECT 1 + i % 200, 'upgraded', 'pkg' || (i % 2000), '1.0', '1.1', now() - (i || ' seconds')::interval"
        " FROM generate_series(1, 100000) i"
    )
    await pool.execute(
        """
        INSERT INTO tasks (kind, target, status, created_at, started_at, finished_at, progress)
        SELECT 'host_diff', 'host:' || (i % $2), CASE WHEN i % 97 = 0 THEN 'error' ELSE 'done' END,
               now() - ((i % 86400) || ' seconds')::interval, now() - ((i % 86400) || ' seconds')::interval,
               now() - ((i % 86400) || ' seconds')::interval, 100
        FROM generate_series(1, $1) i
        """,
        TASKS,
        HOSTS,
    )
    await pool.execute("ANALYZE")
    print(f"loaded {HOSTS} hosts, 400,000 inventory rows, 100,000 history rows, {TASKS} tasks"
          f" in {time.perf_counter() - t:.1f} s", flush=True)
    await pool.close()


async def _run() -> None:
    import aiohttp
    from aiohttp import web

    from app.dashboard import queries
    from app.main import create_app

    settings = _settings()
    await _load(settings)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.port)
    await site.start()
    base = settings.base_url
    try:
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            form = await (await s.get("/login")).text()
            token = re.search(r'name="login_token" value="([^"]+)"', form).group(1)
            r = await s.post("/login", data={"username": "bench", "password": "bench-password", "login_token": token},
                             allow_redirects=False)
            assert r.status == 303, r.status
            pages = [
                "/", "/ui/overview", "/tasks", "/tasks?tab=failed", "/tasks?tab=done&page=2000", "/tasks?q=host:4242",
                "/hosts", "/hosts?page=1000", "/hosts?q=host0999", "/hosts?filter=outdated", "/hosts?filter=stale",
                "/hosts?filter=reboot&page=100", "/hosts?package=pkg19", "/hosts?package=pkg1&version=1.1*",
                "/hosts?os=Ubuntu&reboot=yes&page=20", "/hosts?package=*kg77&exact-name=1", "/hosts/150", "/hosts/150?q=pkg19", "/hosts/150?hpage=50",
            ]
            print(f"{'page':34s} {'median ms':>10s} {'max ms':>8s}  bytes")
            for path in pages:
                times = []
                size = 0
                for _ in range(REPEAT):
                    queries.clear_cache()
                    t = time.perf_counter()
                    resp = await s.get(path, allow_redirects=False)
                    body = await resp.read()
                    times.append((time.perf_counter() - t) * 1000)
                    assert resp.status == 200, (path, resp.status)
                    size = len(body)
                print(f"{path:34s} {statistics.median(times):10.1f} {max(times):8.1f}  {size}", flush=True)
    finally:
        await runner.cleanup()


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
