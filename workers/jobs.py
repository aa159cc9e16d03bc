"""The one arq job, `run_task`: claim the task row, run its handler, record the outcome.

Handlers are domain functions `async def handler(ctx: TaskContext) -> dict | None`, registered by
task kind in HANDLERS. They call ctx.progress() and ctx.check_stop() between steps.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import asyncpg

from app import queue
from app.hosts import inventory
from app.settings import Settings
from workers import metrics

log = logging.getLogger(__name__)


# How often check_stop() reads the task row at most (the heartbeat also refreshes the flag).
STOP_POLL_SECONDS = 0.25


class TaskStopped(Exception):
    """Raised by check_stop() when an operator asked the task to stop."""


@dataclass
class TaskContext:
    task: asyncpg.Record
    pool: asyncpg.Pool
    redis: Any
    settings: Settings
    worker_id: str
    stop_requested: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> int:
        return self.task["id"]

    @property
    def params(self) -> dict:
        return self.task["params"]

    async def progress(self, percent: int, text: str | None = None) -> None:
        await self.pool.execute(
            "UPDATE tasks SET progress = $2, progress_text = coalesce($3, progress_text), heartbeat_at = now()"
            " WHERE id = $1",
            self.id,
            max(0, min(100, int(percent))),
            text,
        )

    async def check_stop(self) -> None:
        """Raise TaskStopped if an operator asked this task to stop.

        The heartbeat refreshes stop_requested every task_heartbeat_seconds; between beats the row is read
        at most every STOP_POLL_SECONDS, so a handler may call this in a tight loop and still stop promptly.
        """
        if not self.stop_requested:
            now = time.monotonic()
            if now - self.extra.get("stop_checked_at", 0.0) >= STOP_POLL_SECONDS:
                self.extra["stop_checked_at"] = now
                self.stop_requested = bool(
                    await self.pool.fetchval("SELECT stop_requested FROM tasks WHERE id = $1", self.id))
        if self.stop_requested:
            raise TaskStopped()


Handler = Callable[[TaskContext], Awaitable[dict | None]]
HANDLERS: dict[str, Handler] = {}
HANDLERS["host_diff"] = inventory.host_diff  # apply a host's pending inventory reports

# Kinds whose tasks a batch job (run_tasks) runs together: fn(pool, targets) -> {target: result or exception}.
BatchHandler = Callable[[asyncpg.Pool, list[str]], Awaitable[dict[str, Any]]]
BATCH_HANDLERS: dict[str, BatchHandler] = {"host_diff": inventory.host_diff_batch}


def handler(kind: str):
    """Register a domain function as the handler of a task kind."""

    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


async def run_task(ctx: dict, task_id: int) -> str:
    pool: asyncpg.Pool = ctx["pool"]
    worker_id: str = ctx["worker_id"]
    try:
        task = await pool.fetchrow(
            "UPDATE tasks SET status = 'running', started_at = now(), heartbeat_at = now(), worker_id = $2,"
            " attempts = attempts + 1, progress = 0, error = NULL"
            " WHERE id = $1 AND status = 'queued' AND NOT stop_requested RETURNING *",
            task_id,
            worker_id,
        )
    except asyncpg.UniqueViolationError:
        # Another task of the same (kind, target) runs: that one re-dispatches us when it ends.
        metrics.DELIVERIES_SKIPPED.labels("busy").inc()
        return "busy"
    if task is None:
        metrics.DELIVERIES_SKIPPED.labels("skipped").inc()
        return "skipped"  # already run, stopped, or a duplicate delivery
    kind = task["kind"]
    metrics.JOBS_STARTED.labels(kind).inc()
    metrics.IN_PROGRESS.labels(kind).inc()
    try:
        return await _run_claimed(ctx, task)
    finally:
        metrics.IN_PROGRESS.labels(kind).dec()


async def _run_claimed(ctx: dict, task: asyncpg.Record) -> str:
    pool: asyncpg.Pool = ctx["pool"]
    task_id = task["id"]
    fn = HANDLERS.get(task["kind"])
    tctx = TaskContext(task, pool, ctx["redis"], ctx["settings"], ctx["worker_id"])
    beat = asyncio.create_task(_heartbeat(tctx))
    started = time.perf_counter()
    status, error, result = queue.TaskStatus.done, None, None
    try:
        if fn is None:
            raise RuntimeError(f"no handler for task kind {task['kind']!r}")
        result = await fn(tctx)
    except TaskStopped:
        status = queue.TaskStatus.stopped
    except asyncio.CancelledError:
        # Worker shutting down (SIGTERM): hand the task back so another worker runs it.
        beat.cancel()
        _observe(task["kind"], "cancelled", time.perf_counter() - started)
        await _requeue(pool, ctx["redis"], task_id)
        raise
    except Exception as exc:
        log.exception("task %s (%s) failed", task_id, task["kind"])
        status, error = queue.TaskStatus.error, f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        beat.cancel()
    # Finish, and find in the same round trip a task of the same target queued meanwhile: its job
    # found this one running ("busy") and waits to be sent again.
    next_id = await pool.fetchval(
        "WITH fin AS ("
        "  UPDATE tasks SET status = $2, error = $3, result = $4, finished_at = now(),"
        "  progress = CASE WHEN $2 = 'done' THEN 100 ELSE progress END WHERE id = $1 RETURNING kind, target)"
        " SELECT q.id FROM tasks q JOIN fin ON q.kind = fin.kind AND q.target = fin.target WHERE q.status = 'queued'",
        task_id,
        status.value,
        error,
        result,
    )
    elapsed = time.perf_counter() - started
    _observe(task["kind"], status.value, elapsed)
    log.info("task %s %s %s %.0fms", task_id, task["kind"], status.value, elapsed * 1000,
             extra={"task_id": task_id, "kind": task["kind"], "status": status.value,
                    "duration_ms": round(elapsed * 1000, 1)})
    if next_id is not None:
        async with pool.acquire() as conn:
            await queue.redispatch(conn, ctx["redis"], next_id)
    return status.value


# Claim every task of a batch that is still queued and whose target is free; the others are
# skipped (a task of a busy target is sent again by the running one when it ends). The rows are
# locked in queue.TASK_LOCK_ORDER, as hosts/intake.py locks the queued tasks its reports join.
_CLAIM_MANY_SQL = f"""
WITH c AS (
    SELECT id FROM tasks WHERE id = ANY($1::bigint[]) AND status = 'queued' AND NOT stop_requested
    ORDER BY {queue.TASK_LOCK_ORDER} FOR UPDATE
)
UPDATE tasks t SET status = 'running', started_at = now(), heartbeat_at = now(), worker_id = $2,
    attempts = attempts + 1, progress = 0, error = NULL
FROM c WHERE t.id = c.id
AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.kind = t.kind AND r.target = t.target AND r.status = 'running')
RETURNING t.*
"""

_FINISH_MANY_SQL = """
WITH fin AS (
    UPDATE tasks t SET status = f.status, error = f.error, result = f.result, finished_at = now(),
        progress = CASE WHEN f.status = 'done' THEN 100 ELSE t.progress END
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[]) AS f(id, status, error, result)
    WHERE t.id = f.id RETURNING t.kind, t.target
)
SELECT coalesce(array_agg(q.id), '{}') FROM tasks q JOIN fin ON q.kind = fin.kind AND q.target = fin.target
WHERE q.status = 'queued'
"""


async def run_tasks(ctx: dict, task_ids: list[int]) -> str:
    """The batch job (queue.JobBatcher): claim its tasks in one statement, run each kind's batch
    handler once for all of them (other kinds one by one), finish them in one statement."""
    pool: asyncpg.Pool = ctx["pool"]
    try:
        claimed = await pool.fetch(_CLAIM_MANY_SQL, task_ids, ctx["worker_id"])
    except asyncpg.UniqueViolationError:
        # Raced with another claim of the same target (rare): claim them one at a time.
        for task_id in task_ids:
            await run_task(ctx, task_id)
        return "one by one"
    if len(claimed) < len(task_ids):
        metrics.DELIVERIES_SKIPPED.labels("skipped").inc(len(task_ids) - len(claimed))
    by_kind: dict[str, list[asyncpg.Record]] = {}
    for task in claimed:
        by_kind.setdefault(task["kind"], []).append(task)
    for kind, group in by_kind.items():
        metrics.JOBS_STARTED.labels(kind).inc(len(group))
        metrics.IN_PROGRESS.labels(kind).inc(len(group))
        try:
            if kind in BATCH_HANDLERS:
                await _run_batch(ctx, kind, group)
            else:
                for task in group:
                    await _run_claimed(ctx, task)
        finally:
            metrics.IN_PROGRESS.labels(kind).dec(len(group))
    return f"{len(claimed)} of {len(task_ids)}"


async def _run_batch(ctx: dict, kind: str, group: list[asyncpg.Record]) -> None:
    pool: asyncpg.Pool = ctx["pool"]
    ids = [t["id"] for t in group]
    beat = asyncio.create_task(_heartbeat_many(pool, ctx["settings"], ids))
    started = time.perf_counter()
    try:
        results = await BATCH_HANDLERS[kind](pool, [t["target"] for t in group])
    except asyncio.CancelledError:
        beat.cancel()
        for task_id in ids:
            _observe(kind, "cancelled", time.perf_counter() - started)
            await _requeue(pool, ctx["redis"], task_id)
        raise
    except Exception as exc:
        log.exception("batch of %d %s task(s) failed", len(ids), kind)
        results = {t["target"]: exc for t in group}
    finally:
        beat.cancel()
    rows = []
    for task in group:
        result = results.get(task["target"])
        if isinstance(result, Exception):
            log.error("task %s (%s) failed", task["id"], kind, exc_info=result)
            rows.append((task["id"], queue.TaskStatus.error.value, f"{type(result).__name__}: {result}"[:2000], None))
        else:
            rows.append((task["id"], queue.TaskStatus.done.value, None, result))
    next_ids = await pool.fetchval(_FINISH_MANY_SQL, *[list(c) for c in zip(*rows)])
    elapsed = time.perf_counter() - started
    errors = sum(r[1] == "error" for r in rows)
    for _, status, _, _ in rows:
        _observe(kind, status, elapsed)
    log.info("%d %s task(s) in one batch: %d done, %d failed, %.0fms", len(rows), kind, len(rows) - errors, errors,
             elapsed * 1000, extra={"kind": kind, "tasks": len(rows), "errors": errors,
                                    "duration_ms": round(elapsed * 1000, 1)})
    if next_ids:
        async with pool.acquire() as conn:
            await queue.redispatch_many(conn, ctx["redis"], next_ids)


async def _heartbeat_many(pool, settings, ids: list[int]) -> None:
    while True:
        await asyncio.sleep(settings.task_heartbeat_seconds)
        try:
            await pool.execute("UPDATE tasks SET heartbeat_at = now() WHERE id = ANY($1::bigint[])", ids)
        except Exception as exc:  # a missed beat is not fatal; the reconciler waits task_stale_seconds
            log.warning("heartbeat of %d task(s) failed: %s", len(ids), type(exc).__name__)


def _observe(kind: str, outcome: str, seconds: float) -> None:
    metrics.JOBS_FINISHED.labels(kind, outcome).inc()
    metrics.JOB_SECONDS.labels(kind, outcome).observe(seconds)


async def _heartbeat(tctx: TaskContext) -> None:
    every = tctx.settings.task_heartbeat_seconds
    while True:
        await asyncio.sleep(every)
        try:
            stop = await tctx.pool.fetchval(
                "UPDATE tasks SET heartbeat_at = now() WHERE id = $1 RETURNING stop_requested", tctx.id
            )
            tctx.stop_requested = bool(stop)
        except Exception as exc:  # a missed beat is not fatal; the reconciler waits task_stale_seconds
            log.warning("heartbeat of task %s failed: %s", tctx.id, type(exc).__name__)


async def _requeue(pool, redis, task_id: int) -> None:
    try:
        async with pool.acquire() as conn:
            moved = await conn.fetchval(
                "UPDATE tasks SET status = 'queued', worker_id = NULL WHERE id = $1 AND status = 'running'"
                " AND NOT EXISTS (SELECT 1 FROM tasks q WHERE q.kind = tasks.kind AND q.target = tasks.target"
                "                 AND q.status = 'queued') RETURNING id",
                task_id,
            )
            if moved:
                await queue.redispatch(conn, redis, task_id)
            else:
                await conn.execute(
                    "UPDATE tasks SET status = 'error', finished_at = now(),"
                    " error = 'worker stopped; a queued task of the same target carries on its work'"
                    " WHERE id = $1 AND status = 'running'",
                    task_id,
                )
    except Exception:
        log.exception("could not re-queue task %s on shutdown; the reconciler will", task_id)
