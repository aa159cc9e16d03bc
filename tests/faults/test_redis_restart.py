"""Redis restarted empty while jobs are queued and running: PostgreSQL's tasks table brings every job back,
and each piece of work happens exactly once in effect. Redis away: requests still record their task."""
from __future__ import annotations

import asyncio
import time

from app.tasks import dispatch
from tests.faults.test_shutdown import procs_wait

SLOW = {"steps": 15, "step_seconds": 0.1}


async def test_redis_restarted_empty_loses_no_task(processes, fpool, fredis, private_valkey):
    workers = [processes.worker(DEPOT_WORKER_MAX_JOBS="2") for _ in range(2)]
    refs = [await dispatch.enqueue(fpool, fredis, "fault_slow", f"snap:{n}", SLOW) for n in range(6)]
    await procs_wait(lambda: fpool.fetchval("SELECT count(*) >= 2 FROM tasks WHERE status = 'running'"))
    # A request while its target runs: exactly one more run after it (queued in PostgreSQL and Redis).
    again = await dispatch.enqueue(fpool, fredis, "fault_slow", "snap:0", SLOW)
    assert again.created and again.id not in {r.id for r in refs}
    before = dict(await fpool.fetch("SELECT status, count(*) FROM tasks GROUP BY status"))
    assert before.get("queued", 0) >= 1 and before.get("running", 0) >= 1
    await fredis.aclose()
    t0 = time.monotonic()
    # Down long enough that every worker polls into the gap (arq's poll loop must ride it out).
    await asyncio.to_thread(private_valkey.restart_empty, 1.5)
    restart_seconds = time.monotonic() - t0
    ids = [r.id for r in refs] + [again.id]
    await procs_wait(
        lambda: fpool.fetchval("SELECT bool_and(status = 'done') FROM tasks WHERE id = any($1::bigint[])", ids),
        timeout=60,
    )
    all_done = time.monotonic() - t0
    runs = dict(await fpool.fetch("SELECT task_id, runs FROM fault_effects"))
    assert runs == {i: 1 for i in ids}, runs
    assert all(w.alive() for w in workers), "a worker died when Redis restarted"
    # Never two runs of one target at once.
    overlaps = await fpool.fetchval(
        "SELECT count(*) FROM tasks a JOIN tasks b ON a.target = b.target AND a.id < b.id"
        " WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at"
    )
    assert overlaps == 0
    print(f"\nRedis restart: {dict(before)} at restart ({restart_seconds:.2f}s), all {len(ids)} tasks done once "
          f"{all_done:.1f}s later")


async def test_requests_while_redis_is_down_keep_their_task(processes, fpool, fredis, private_valkey):
    private_valkey.stop()
    t0 = time.monotonic()
    ref = await dispatch.enqueue(fpool, fredis, "fault_slow", "snap:down", {"steps": 1, "step_seconds": 0})
    took = time.monotonic() - t0
    assert took < 5, f"enqueue waited {took:.1f}s for a Redis that is down"
    assert await fpool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "queued"
    private_valkey.start()
    processes.worker()
    await procs_wait(lambda: fpool.fetchval("SELECT status = 'done' FROM tasks WHERE id = $1", ref.id), timeout=30)
    assert await fpool.fetchval("SELECT runs FROM fault_effects WHERE task_id = $1", ref.id) == 1


async def test_host_reports_are_accepted_while_redis_is_down(processes, fpool, fredis, private_valkey, fault_admin_key):
    import aiohttp

    from tests.helpers import bearer, host_auth

    server, base = processes.server()
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/api/v2/host/registering", json={"hostname": "db1", "ip": "192.0.2.5"},
                                headers=bearer(fault_admin_key)) as resp:
            creds = (await resp.json())["results"]
        private_valkey.stop()
        report = {"installed_packages": [{"name": "postgresql", "version": "16.4"}]}
        t0 = time.monotonic()
        async with session.put(base + "/api/v2/host/packages/installed", json=report,
                               headers=host_auth(creds["id"], creds["token"])) as resp:
            status, took = resp.status, time.monotonic() - t0
            body = await resp.json()
    assert status == 200 and body["changed"], body
    assert took < 6, f"the report waited {took:.1f}s for Redis"
    task = await fpool.fetchrow("SELECT id, status FROM tasks WHERE kind = 'host_diff'")
    assert task["status"] == "queued"
    private_valkey.start()
    processes.worker()  # its reconciler re-sends the job Redis never got
    await procs_wait(lambda: fpool.fetchval("SELECT status = 'done' FROM tasks WHERE id = $1", task["id"]), timeout=30)
    assert await fpool.fetchval("SELECT version FROM package_versions WHERE name = 'postgresql'") == "16.4"

    async def counted() -> bool:  # the server kept its count of the report and sent it once Redis was back
        total = 0
        async for key in fredis.scan_iter(match="depot:fault-queue:reports:m:*"):
            total += sum(int(v) for v in (await fredis.hgetall(key)).values())
        return total == 1

    await procs_wait(counted, timeout=30)
    print(f"\nRedis down: host report acknowledged in {took:.2f}s, applied and counted after Redis came back")
