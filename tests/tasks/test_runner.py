"""Tasks: rows in PostgreSQL first, coalescing per (kind, target), one running per target, reconciler."""
from __future__ import annotations

import asyncio
import signal

import pytest
from arq import cron

from app.tasks import dispatch
from tests.helpers import wait_for
from workers import runner, reconciler
from workers.settings import Worker, worker_settings

RUNS: list[tuple[int, dict]] = []


@pytest.fixture(autouse=True)
def test_handlers():
    RUNS.clear()

    async def record(ctx):
        await ctx.progress(50, "half way")
        RUNS.append((ctx.id, dict(ctx.params)))
        return {"seen": ctx.params.get("n")}

    async def slow(ctx):
        RUNS.append((ctx.id, dict(ctx.params)))
        for _ in range(40):
            await asyncio.sleep(0.05)
            await ctx.check_stop()

    async def boom(ctx):
        raise ValueError("broken input")

    runner.HANDLERS.update(test_record=record, test_slow=slow, test_boom=boom)
    yield
    for kind in ("test_record", "test_slow", "test_boom"):
        runner.HANDLERS.pop(kind, None)


async def test_requests_while_queued_coalesce_into_one_task(pool, redis, run_worker):
    first = await dispatch.enqueue(pool, redis, "test_record", "thing:1", {"n": 1})
    second = await dispatch.enqueue(pool, redis, "test_record", "thing:1", {"n": 2})
    other = await dispatch.enqueue(pool, redis, "test_record", "thing:2", {"n": 3})
    assert first.id == second.id and first.created and not second.created
    assert other.id != first.id
    await run_worker()
    assert sorted(RUNS) == [(first.id, {"n": 2}), (other.id, {"n": 3})]
    rows = await pool.fetch("SELECT id, status, progress, result FROM tasks ORDER BY id")
    assert [(r["status"], r["progress"]) for r in rows] == [("done", 100), ("done", 100)]
    assert rows[0]["result"] == {"seen": 2}


@pytest.mark.slow
async def test_a_request_while_running_causes_exactly_one_more_run(pool, redis, live_worker):
    running = await dispatch.enqueue(pool, redis, "test_slow", "snap:1", {"n": 1})
    await wait_for(lambda: pool.fetchval("SELECT status = 'running' FROM tasks WHERE id = $1", running.id))
    later = [await dispatch.enqueue(pool, redis, "test_slow", "snap:1", {"n": n}) for n in (2, 3, 4)]
    assert len({t.id for t in later}) == 1 and later[0].id != running.id
    await wait_for(lambda: pool.fetchval("SELECT bool_and(status = 'done') FROM tasks"), timeout=15)
    assert [r[0] for r in RUNS] == [running.id, later[0].id]
    assert RUNS[1][1] == {"n": 4}
    first_end, second_start = await pool.fetchval(
        "SELECT array[(SELECT finished_at FROM tasks WHERE id = $1), (SELECT started_at FROM tasks WHERE id = $2)]",
        running.id,
        later[0].id,
    )
    assert second_start >= first_end  # never both running on one target


async def test_errors_are_recorded_not_raised(pool, redis, run_worker):
    ref = await dispatch.enqueue(pool, redis, "test_boom", "x:1")
    await run_worker()
    row = await pool.fetchrow("SELECT status, error, finished_at FROM tasks WHERE id = $1", ref.id)
    assert row["status"] == "error" and "broken input" in row["error"] and row["finished_at"]


async def test_stop_requested_task_stops_between_steps(pool, redis, live_worker):
    ref = await dispatch.enqueue(pool, redis, "test_slow", "x:1")
    await wait_for(lambda: pool.fetchval("SELECT status = 'running' FROM tasks WHERE id = $1", ref.id))
    await pool.execute("UPDATE tasks SET stop_requested = true WHERE id = $1", ref.id)
    await wait_for(lambda: pool.fetchval("SELECT status = 'stopped' FROM tasks WHERE id = $1", ref.id))


async def test_reconciler_resends_jobs_that_redis_lost(pool, redis, settings, run_worker):
    ref = await dispatch.enqueue(pool, redis, "test_record", "thing:9", {"n": 9})
    await redis.flushdb()  # Redis restarted empty
    await run_worker()
    assert RUNS == []
    await pool.execute("UPDATE tasks SET created_at = now() - interval '1 minute'")
    assert (await reconciler.reconcile(pool, redis, settings))["resent"] == 1
    await run_worker()
    assert RUNS == [(ref.id, {"n": 9})]


async def test_reconciler_requeues_tasks_of_a_lost_worker(pool, redis, settings, run_worker):
    ref = await dispatch.enqueue(pool, redis, "test_record", "thing:5", {"n": 5})
    # A worker claimed it, then died without a word (SIGKILL): heartbeat goes stale.
    await pool.execute(
        "UPDATE tasks SET status = 'running', worker_id = 'dead:1', heartbeat_at = now() - interval '1 hour' WHERE id = $1",
        ref.id,
    )
    await redis.flushdb()
    assert (await reconciler.reconcile(pool, redis, settings))["requeued"] == 1
    await run_worker()
    assert RUNS == [(ref.id, {"n": 5})]
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "done"


async def test_reconciler_resends_a_job_a_worker_took_and_lost(pool, redis, settings):
    ref = await dispatch.enqueue(pool, redis, "test_record", "thing:7", {"n": 7})
    # A worker marked the job in progress, then vanished before claiming the row: arq skips the job
    # until its in-progress key expires (an hour), so only the reconciler can rescue it.
    await redis.psetex(f"arq:in-progress:{dispatch.job_id(ref.id, ref.enqueue_count)}", 3_600_000, b"1")
    await pool.execute("UPDATE tasks SET created_at = now() - interval '1 minute'")
    assert (await reconciler.reconcile(pool, redis, settings))["resent"] == 1
    # A live worker: the stuck job stays in arq's queue, so a burst worker would never see it empty.
    worker, running = _start_worker(settings)
    try:
        await wait_for(lambda: pool.fetchval("SELECT status = 'done' FROM tasks WHERE id = $1", ref.id))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    assert RUNS == [(ref.id, {"n": 7})]


def _start_worker(settings, cron_jobs=None) -> tuple[Worker, asyncio.Task]:
    """A live worker (no cron jobs unless given) running in the background; the caller closes it."""
    kwargs = worker_settings(settings)
    kwargs.update(handle_signals=False, poll_delay=0.05, cron_jobs=cron_jobs)
    worker = Worker(**kwargs)
    return worker, asyncio.create_task(worker.main())


async def test_worker_close_finishes_the_shutdown_when_it_cancels_a_job_being_finished(settings, pool, monkeypatch):
    # A cron run of the reconciler had returned and arq was recording that in Redis when close()
    # cancelled its task: arq's close() raised that CancelledError and skipped on_shutdown.
    finishing = asyncio.Event()

    async def quick_cron(ctx):
        return None

    finish_job = Worker.finish_job

    async def slow_finish_job(self, *args):
        finishing.set()
        await asyncio.sleep(0.5)
        await finish_job(self, *args)

    monkeypatch.setattr(Worker, "finish_job", slow_finish_job)
    worker, running = _start_worker(settings, [cron(quick_cron, second=set(range(60)), run_at_startup=True)])
    await asyncio.wait_for(finishing.wait(), 10)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await worker.close()
    assert await pool.fetchval("SELECT stopped_at IS NOT NULL FROM workers WHERE worker_id = $1",
                               worker.ctx["worker_id"])


async def test_worker_close_after_sigterm_lets_a_task_finish_handing_itself_back(settings, pool, redis, monkeypatch):
    # After SIGTERM, arq has cancelled the task's job once; close() must not cancel it again while
    # the job hands its task back, or the task stays "running" until the reconciler finds it.
    handing_back = asyncio.Event()
    requeue = runner._hand_back

    async def slow_requeue(*args):
        handing_back.set()
        await asyncio.sleep(0.3)
        await requeue(*args)

    monkeypatch.setattr(runner, "_hand_back", slow_requeue)
    worker, running = _start_worker(settings)
    ref = await dispatch.enqueue(pool, redis, "test_slow", "thing:9")
    await wait_for(lambda: pool.fetchval("SELECT status = 'running' FROM tasks WHERE id = $1", ref.id))
    worker.handle_sig(signal.SIGTERM)  # what arq does on SIGTERM when it handles the signals
    await asyncio.wait_for(handing_back.wait(), 10)
    await worker.close()
    await asyncio.gather(running, return_exceptions=True)
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "queued"
