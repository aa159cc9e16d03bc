"""Graceful shutdown: SIGTERM lets the server finish in-flight requests and the worker hand back its task."""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import asyncpg

from app.tasks import dispatch
from tests.helpers import bearer
from tests.faults import procs


async def test_sigterm_to_the_server_finishes_the_request_in_flight(processes, fpool, fault_settings, fault_admin_key):
    server, base = processes.server()
    port = int(base.rsplit(":", 1)[1])
    # Hold the table the authentication reads: the next request stays in flight until we let go.
    blocker = await asyncpg.connect(fault_settings.database_url)
    tr = blocker.transaction()
    await tr.start()
    await blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(
            session.get(base + "/api/v2/status", headers=bearer(fault_admin_key), timeout=aiohttp.ClientTimeout(total=30))
        )
        await procs_wait(lambda: blocker.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'api_keys'::regclass AND NOT granted"))
        server.signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert server.alive(), "the server exited with a request in flight"
        assert not procs.port_open(port), "the server still accepts new connections after SIGTERM"
        released_at = time.monotonic()
        await tr.commit()
        resp = await pending
        assert resp.status == 200 and (await resp.json())["status"] == "OK"
    await blocker.close()
    rc = await asyncio.to_thread(server.wait, 15)
    exit_after = time.monotonic() - released_at
    assert rc == 0, server.output()[-2000:]
    print(f"\nserver SIGTERM: in-flight request answered 200, exit code {rc}, {exit_after:.2f}s after it finished")


async def procs_wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_sigterm_to_a_worker_hands_its_task_back_and_it_runs_once(processes, fpool, fredis):
    worker = processes.worker()
    ref = await dispatch.enqueue(fpool, fredis, "fault_slow", "thing:1", {"steps": 40, "step_seconds": 0.1})
    await procs_wait(lambda: fpool.fetchval("SELECT progress > 0 FROM tasks WHERE id = $1", ref.id))
    worker.signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = await asyncio.to_thread(worker.wait, 20)
    stop_seconds = time.monotonic() - t0
    row = await fpool.fetchrow("SELECT status, attempts, worker_id FROM tasks WHERE id = $1", ref.id)
    assert row["status"] == "queued" and row["worker_id"] is None, dict(row)
    assert await fpool.fetchval("SELECT count(*) FROM fault_effects") == 0
    assert await fpool.fetchval("SELECT stopped_at IS NOT NULL FROM workers") is True
    # Another worker picks it up and the work completes exactly once.
    processes.worker()
    await procs_wait(lambda: fpool.fetchval("SELECT status = 'done' FROM tasks WHERE id = $1", ref.id), timeout=30)
    assert await fpool.fetchval("SELECT runs FROM fault_effects WHERE task_id = $1", ref.id) == 1
    assert await fpool.fetchval("SELECT attempts FROM tasks WHERE id = $1", ref.id) == 2
    await asyncio.sleep(1.5)  # a duplicate delivery of the old arq job would show up now
    assert await fpool.fetchval("SELECT runs FROM fault_effects WHERE task_id = $1", ref.id) == 1
    print(f"\nworker SIGTERM: exited rc={rc} in {stop_seconds:.2f}s, task re-queued, done once on the next worker")
