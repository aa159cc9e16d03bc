"""The inventory store on its own (no HTTP): the diff worker's code applying a fleet's first inventories
and then a round of changed ones, and the fleet questions, on a PostgreSQL given by URL.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres  (a database store_check_<pid> is
    created there and dropped after; default: the embedded server)
    BENCH_STORE_HOSTS=5000 BENCH_STORE_PACKAGES=2000 BENCH_STORE_CHANGED=5 BENCH_STORE_BATCH=500

Prints: bytes of database growth per installed package (pg_database_size before and after), onboarding
and steady-state apply rates (hosts/s, the worker's code in this process), WAL per changed host, this
process's peak RSS, and each question's median time. The end-to-end ratios against a do-nothing server
are bench/fleet.py's.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import statistics
import time


HOSTS = int(os.environ.get("BENCH_STORE_HOSTS", "5000"))
PACKAGES = int(os.environ.get("BENCH_STORE_PACKAGES", "2000"))
CHANGED = int(os.environ.get("BENCH_STORE_CHANGED", "5"))
BATCH = int(os.environ.get("BENCH_STORE_BATCH", "500"))
# Only the questions, on a fleet written straight into the store by SQL (bench/fleet.py's loader).
QUESTIONS_ONLY = os.environ.get("BENCH_STORE_QUESTIONS_ONLY") == "1"


def _inventory(h: int, common: list[str], rare: list[str]) -> dict[str, str]:
    # Hosts come in 7 generations (the version of every common package), plus 100 rarer packages each.
    rng = random.Random(h)
    return {**{n: f"1.{h % 7}.{len(n)}-1" for n in common}, **{n: f"2.{h % 3}-1" for n in rng.sample(rare, 100)}}


def _body(inv: dict[str, str]) -> bytes:
    """Stored as the intake stores an agent's report: its exact json.dumps() form, checked by the regex."""
    from app.hosts.bodies import encode_body, is_splittable
    from app.hosts.reports import INSTALLED, fast_count

    items = [{"name": n, "version": v} for n, v in inv.items()]
    raw = json.dumps({"installed_packages": items}).encode()
    return encode_body(raw, is_splittable(INSTALLED, fast_count(INSTALLED, raw, len(items))))


async def _size(pool) -> int:
    return await pool.fetchval("SELECT pg_database_size(current_database())")


async def _apply(pool, host_ids: list[int]) -> float:
    from app.hosts import inventory

    t0 = time.perf_counter()
    for i in range(0, len(host_ids), BATCH):
        out = await inventory.apply_pending(pool, host_ids[i:i + BATCH])
        bad = [r for r in out.values() if isinstance(r, Exception)]
        assert not bad, bad[0]
    return time.perf_counter() - t0


async def _store(pool, host_ids: list[int], bodies: dict[int, bytes]) -> None:
    await pool.copy_records_to_table("host_reports", columns=["host_id", "kind", "digest", "body"],
                                     records=[(h, "installed", b"\0", bodies[h]) for h in host_ids])


async def _time(pool, fn, *args, **kwargs) -> tuple[float, int]:
    times = []
    for i in range(7):
        t0 = time.perf_counter()
        result = await fn(pool, *args, **kwargs)
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    n = result[1] if isinstance(result, tuple) else len(result)
    return statistics.median(times), n


async def run(url: str) -> None:
    import asyncpg

    from app import db

    await db.migrate_empty(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4, init=db._init_connection,
                                     server_settings={"jit": "off"})  # as app/db.py create_pool
    if QUESTIONS_ONLY:
        from types import SimpleNamespace

        from bench.fleet import _load_query_fleet

        loaded = await _load_query_fleet(SimpleNamespace(database_url=url), HOSTS, PACKAGES)
        print(f"{HOSTS} hosts x {PACKAGES} packages loaded by SQL in {loaded:.0f} s;"
              f" database {await _size(pool) / HOSTS / PACKAGES:.1f} bytes per installed package")
        await pool.execute("UPDATE hosts SET os_family = 'Redhat' WHERE id % 4 = 0")
        await _questions(pool, [r["id"] for r in await pool.fetch("SELECT id FROM hosts ORDER BY id")])
        await pool.close()
        return
    common = [f"lib{chr(97 + i % 26)}{i}-common" for i in range(PACKAGES - 100)]
    rare = [f"rare{i}-tool" for i in range(5000)]
    await pool.execute(
        "INSERT INTO hosts (hostname, ip, auth_id, token_digest, os, os_family)"
        " SELECT 'h' || lpad(i::text, 6, '0') || '.fleet', '10.0.0.1', 'id_' || i, '\\x00', 'Debian GNU/Linux',"
        " CASE WHEN i % 4 = 0 THEN 'Redhat' ELSE 'Debian' END FROM generate_series(1, $1) i", HOSTS)
    host_ids = [r["id"] for r in await pool.fetch("SELECT id FROM hosts ORDER BY id")]
    before = await _size(pool)
    # Onboarding: the bodies stored (as the API would), then applied in batches, a chunk at a time.
    onboard = 0.0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(0, len(host_ids), BATCH):
        part = host_ids[i:i + BATCH]
        await _store(pool, part, {h: _body(_inventory(h, common, rare)) for h in part})
        onboard += await _apply(pool, part)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await pool.execute("VACUUM ANALYZE")
    after = await _size(pool)
    installed = HOSTS * PACKAGES
    print(f"onboarding: {HOSTS} hosts x {PACKAGES} packages applied in {onboard:.1f} s ({HOSTS / onboard:.0f} hosts/s);"
          f" database growth {(after - before) / installed:.1f} bytes per installed package (target <= 20)")
    # Steady state: CHANGED versions changed per host (a fleet upgrade: the same new versions).
    changed = {}
    for h in host_ids:
        inv = _inventory(h, common, rare)
        for n in common[h % 50:h % 50 + CHANGED]:
            inv[n] = inv[n] + "+u1"
        changed[h] = _body(inv)
    await _store(pool, host_ids, changed)
    size0 = await _size(pool)
    lsn0 = await pool.fetchval("SELECT pg_current_wal_lsn()")
    fpi0 = await pool.fetchval("SELECT wal_fpi FROM pg_stat_wal")
    steady = await _apply(pool, host_ids)
    wal = await pool.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", lsn0)
    fpi = await pool.fetchval("SELECT wal_fpi FROM pg_stat_wal") - fpi0
    size1 = await _size(pool)
    print(f"steady state: {HOSTS} hosts with {CHANGED} versions changed applied in {steady:.1f} s"
          f" ({HOSTS / steady:.0f} hosts/s); WAL {wal / HOSTS / 1024:.1f} KiB ({fpi / HOSTS:.1f} full-page images,"
          f" all databases) and database growth"
          f" {(size1 - size0) / HOSTS / 1024:.1f} KiB per changed host")
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
    print(f"peak RSS of this process (the worker's code, and the bodies it is given): {rss / 1024:.0f} MB"
          f" ({rss0 / 1024:.0f} MB before the first batch; target < 300)")
    await _questions(pool, host_ids)
    await pool.close()


async def _questions(pool, host_ids: list[int]) -> None:
    from app.hosts import queries

    await pool.execute("VACUUM ANALYZE")
    await pool.execute("INSERT INTO host_available (host_id, name, version) SELECT id, 'libb1-common', '9.9-1'"
                       " FROM hosts WHERE id % 10 = 0")
    await pool.execute("UPDATE hosts SET available_count = 1 WHERE id % 10 = 0")
    page, everything = queries.Page(1, 100), queries.Page()
    cases = [
        ("hosts/package/<on every host>, all", queries.hosts_with_package, ("libq16-common", None),
         dict(strict_name=False, strict_version=False, page=everything)),
        ("hosts/package/<on every host>, a page", queries.hosts_with_package, ("libq16-common", None),
         dict(strict_name=False, strict_version=False, page=page)),
        ("hosts/package/<name>/<version>, all", queries.hosts_with_package, ("libq16-common", "1.3"),
         dict(strict_name=False, strict_version=False, page=everything)),
        ("hosts/package/<rare, strict>", queries.hosts_with_package, ("rare42-tool", None),
         dict(strict_name=True, strict_version=False, page=everything)),
        ("hosts/package/<short prefix 'rare4'>, all", queries.hosts_with_package, ("rare4", None),
         dict(strict_name=False, strict_version=False, page=everything)),
        ("hosts/package/<short prefix 'libq'>, a page", queries.hosts_with_package, ("libq", None),
         dict(strict_name=False, strict_version=False, page=page)),
        ("hosts/package/<*wildcard*>, a page", queries.hosts_with_package, ("*q16-comm*", None),
         dict(strict_name=False, strict_version=False, page=page)),
        ("hosts/package/<name>?older-than, all", queries.hosts_with_package, ("libq16-common", None),
         dict(strict_name=True, strict_version=False, page=everything, older_than="1.3")),
        ("hosts/package/<name>?older-than, a page", queries.hosts_with_package, ("libq16-common", None),
         dict(strict_name=True, strict_version=False, page=page, older_than="1.3")),
        ("hosts/outdated, a page", queries.hosts_by_updates, (True, page), {}),
        ("hosts/outdated, all", queries.hosts_by_updates, (True, everything), {}),
        ("fleet search package=libq16, a page", queries.search_hosts, ({"package": "libq16"}, queries.Page(1, 50)), {}),
        ("host/<id>/packages/installed", queries.installed, (host_ids[7], everything), {}),
        ("host/<id>/available", queries.available, (host_ids[9], everything), {}),
    ]
    for label, fn, args, kwargs in cases:
        ms, n = await _time(pool, fn, *args, **kwargs)
        print(f"{label:<45} {n:6d} rows  median {ms:7.1f} ms (target < 50)")


def main() -> None:
    import asyncpg

    base = os.environ.get("BENCH_DATABASE_URL")
    if not base:
        from app import embedded
        from app.settings import Settings

        url = embedded.own_database(Settings.from_env(), "depot_bench_store")
        asyncio.run(run(url))
        return
    name = f"store_check_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        asyncio.run(run(base.rsplit("/", 1)[0] + "/" + name))
    finally:
        asyncio.run(admin(f"DROP DATABASE {name}"))


if __name__ == "__main__":
    main()
