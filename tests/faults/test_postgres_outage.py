"""PostgreSQL stops under load: JSON 503 + Retry-After within seconds (never a 500 or a hang), then recovery."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp

from tests.helpers import bearer
from tests.faults import procs

# A request during an outage must be answered within this many seconds (acquire/connect timeouts).
MAX_LATENCY = 6.0


async def _hammer(session, url, headers, results, stop: asyncio.Event, pause: float = 0.02):
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                body = await resp.read()
                results.append((t0, time.monotonic() - t0, resp.status, resp.headers.get("Retry-After"),
                                resp.content_type, body))
        except aiohttp.ClientError as exc:  # the server must keep answering: record it as a failure
            results.append((t0, time.monotonic() - t0, f"client error {type(exc).__name__}", None, None, b""))
        await asyncio.sleep(pause)


async def test_postgres_stop_gives_503_then_recovers(processes, fpool, private_pg, fault_admin_key):
    server, base = processes.server()
    await fpool.close()  # our own connections must not matter to the outage
    results: list = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        hammers = [
            asyncio.create_task(_hammer(session, base + "/api/v2/status", bearer(fault_admin_key), results, stop))
            for _ in range(4)
        ]
        await asyncio.sleep(1.0)
        down_at = time.monotonic()
        await asyncio.to_thread(private_pg.stop, "fast")
        await asyncio.sleep(3.0)
        await asyncio.to_thread(private_pg.start)
        up_at = time.monotonic()
        # Recovery: wait for a run of successes after PostgreSQL is back.
        deadline = up_at + 20
        while time.monotonic() < deadline:
            recent = [r for r in results if r[0] > up_at]
            if len(recent) >= 20 and all(r[2] == 200 for r in recent[-10:]):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*hammers)

    statuses = [r[2] for r in results]
    bad = [r for r in results if r[2] not in (200, 503)]
    assert not bad, f"unexpected answers: {[(r[2], r[5][:200]) for r in bad][:5]}"
    during = [r for r in results if down_at + 0.5 < r[0] < up_at - 0.2]
    assert during and all(r[2] == 503 for r in during), "requests while PostgreSQL was down must get 503"
    for r in results:
        if r[2] == 503:
            assert r[3] and int(r[3]) > 0, "503 without Retry-After"
            assert r[4] == "application/json" and b'"rc":503' in r[5]
    slowest = max(r[1] for r in results)
    assert slowest < MAX_LATENCY, f"a request took {slowest:.1f}s"
    after = [r for r in results if r[0] > up_at]
    assert after and after[-1][2] == 200, "server did not recover by itself"
    first_ok = min(r[0] + r[1] for r in after if r[2] == 200)
    assert server.alive()
    print(
        f"\nPG outage: {len(results)} requests, {statuses.count(200)} x 200, {statuses.count(503)} x 503, "
        f"slowest {slowest:.2f}s, outage {up_at - down_at:.1f}s, recovered {first_ok - up_at:.2f}s after restart"
    )


async def test_hung_postgres_gives_503_within_the_timeouts(processes, fpool, private_pg, fault_admin_key):
    """PostgreSQL frozen (SIGSTOP: a network partition, a stuck host): answers stay bounded by the timeouts."""
    server, base = processes.server(
        DEPOT_DB_CONNECT_TIMEOUT="1", DEPOT_DB_ACQUIRE_TIMEOUT="2", DEPOT_DB_COMMAND_TIMEOUT="2"
    )
    await fpool.close()
    results: list = []
    stop = asyncio.Event()
    pids: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            hammers = [
                asyncio.create_task(_hammer(session, base + "/api/v2/status", bearer(fault_admin_key), results, stop))
                for _ in range(4)
            ]
            await asyncio.sleep(0.5)
            frozen_at = time.monotonic()
            pids = procs.postgres_pids(private_pg)  # now: the server's backends included
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(5.0)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            thawed_at = time.monotonic()
            deadline = thawed_at + 20
            while time.monotonic() < deadline:
                recent = [r for r in results if r[0] > thawed_at]
                if len(recent) >= 10 and all(r[2] == 200 for r in recent[-5:]):
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*hammers)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    bad = [r for r in results if r[2] not in (200, 503)]
    assert not bad, f"unexpected answers: {[(r[2], r[5][:200]) for r in bad][:5]}"
    # Requests answered while PostgreSQL was still frozen can only be 503s (the timeouts fired).
    frozen = [r for r in results if frozen_at + 0.5 < r[0] + r[1] < thawed_at - 0.1]
    assert frozen and all(r[2] == 503 for r in frozen)
    assert all(r[3] for r in results if r[2] == 503)
    slowest = max(r[1] for r in results)
    assert slowest < MAX_LATENCY, f"a request took {slowest:.1f}s"
    assert results[-1][2] == 200 and server.alive()
    statuses = [r[2] for r in results]
    print(f"\nPG frozen 5s: {len(results)} requests, {statuses.count(200)} x 200, {statuses.count(503)} x 503, "
          f"slowest {slowest:.2f}s")


def test_follow_up_errors_of_a_lost_connection_count_as_database_down():
    """asyncpg may raise InternalClientError while resetting a connection PostgreSQL just dropped."""
    import asyncpg

    from app.errors import _caused_by_db_down

    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        except Exception:
            raise asyncpg.exceptions._base.InternalClientError("cannot switch to state 15")
    except Exception as exc:
        assert _caused_by_db_down(exc)
    assert not _caused_by_db_down(ValueError("a bug"))
