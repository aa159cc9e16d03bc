"""The task runner: arq's two job functions, `run_task` (one task id) and `run_tasks` (a batch).

Each claims its task rows, runs the handler of each task's kind, records the outcome and re-sends
the next queued task of the same target (app/tasks/rows.py states these transitions). Handlers are
domain functions `async def handler(ctx: TaskContext) -> dict | None`, registered by kind with
@handler in the thin *_jobs modules; they call ctx.progress() and ctx.check_stop() between steps.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import asyncpg

from app.settings import Settings
from app.tasks import rows, turns
from app.tasks.dispatch import hand_back, redispatch, redispatch_many
from app.tasks.rows import TaskStatus
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
        await rows.progress(self.pool, self.id, percent, text)

    async def check_stop(self) -> None:
        """Raise TaskStopped if an operator asked this task to stop.

        The heartbeat refreshes stop_requested every task_heartbeat_seconds; between beats the row is read
        at most every STOP_POLL_SECONDS, so a handler may call this in a tight loop and still stop promptly.
        """
        if not self.stop_requested:
            now = time.monotonic()
            if now - self.extra.get("stop_checked_at", 0.0) >= STOP_POLL_SECONDS:
                self.extra["stop_checked_at"] = now
                self.stop_requested = await rows.stop_requested(self.pool, self.id)
        if self.stop_requested:
            raise TaskStopped()


Handler = Callable[[TaskContext], Awaitable[dict | None]]
HANDLERS: dict[str, Handler] = {}

# Kinds whose tasks a batch job runs together: fn(pool, targets, turn) -> {target: result or exception};
# the handler writes in `async with turns.writing(turn):` (app/tasks/turns.py).
BatchHandler = Callable[[asyncpg.Pool, list[str], turns.Turn], Awaitable[dict[str, Any]]]
BATCH_HANDLERS: dict[str, BatchHandler] = {}
# A batch kind's claim group (rows.claim_queued): the batch's work is cheaper when its targets fill whole groups.
BATCH_GROUPS: dict[str, int] = {}


def handler(kind: str, *, batch: BatchHandler | None = None, group: int = 0):
    """Register a domain function as the handler of a task kind (and, for kinds a batch job runs
    together, the function that runs a batch of them, and the group its backlog is claimed by)."""

    name = str(kind)

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        if batch is not None:
            BATCH_HANDLERS[name] = batch
            BATCH_GROUPS[name] = group
        return fn

    return register


async def run_task(ctx: dict, task_id: int) -> str:
    pool: asyncpg.Pool = ctx["pool"]
    try:
        task = await rows.claim(pool, task_id, ctx["worker_id"])
    except rows.TargetBusy:
        # The running task of the same target re-sends this one when it ends.
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
    status, error, result = TaskStatus.done, None, None
    try:
        if fn is None:
            raise RuntimeError(f"no handler for task kind {task['kind']!r}")
        result = await fn(tctx)
    except TaskStopped:
        status = TaskStatus.stopped
    except asyncio.CancelledError:
        # Worker shutting down (SIGTERM): hand the task back so another worker runs it.
        beat.cancel()
        _observe(task["kind"], "cancelled", time.perf_counter() - started)
        await _hand_back(pool, ctx["redis"], task_id)
        raise
    except Exception as exc:
        log.exception("task %s (%s) failed", task_id, task["kind"])
        status, error = TaskStatus.error, _error_text(exc)
    finally:
        beat.cancel()
    next_id = await rows.finish(pool, task_id, status, error, result)
    elapsed = time.perf_counter() - started
    _observe(task["kind"], status.value, elapsed)
    log.info("task %s %s %s %.0fms", task_id, task["kind"], status.value, elapsed * 1000,
             extra={"task_id": task_id, "kind": task["kind"], "status": status.value,
                    "duration_ms": round(elapsed * 1000, 1)})
    if next_id is not None:
        async with pool.acquire() as conn:
            await redispatch(conn, ctx["redis"], next_id)
    return status.value


@dataclass
class BatchGate:
    """One per worker process (arq gives each job its own copy of the worker's ctx, sharing its values)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    more: bool = False  # a job came while the running batch was claiming
    writes: asyncio.Lock = field(default_factory=asyncio.Lock)  # the batches' turns to write (app/tasks/turns.py)


async def run_tasks(ctx: dict, task_ids: list[int]) -> str:
    """The batch job (app/tasks/batcher.py; only kinds with a batch handler are sent this way): claim its
    tasks in one statement, run each kind's batch handler once for all of them, finish them in one
    statement; then, while queued tasks of those kinds are waiting, claim up to diff_batch_max_tasks of
    them and run them the same way. The next batch is claimed and started as soon as the running one
    is done reading and waits for its turn to write (app/tasks/turns.py): at most two at once.

    One batch job at a time per worker process: a job that finds another running returns at once, its
    tasks left queued for that job's next claim (a backlog is then applied in large batches of
    neighbouring hosts instead of many small ones racing for the same rows). If that claim misses one,
    the reconciler re-sends it."""
    gate: BatchGate = ctx.get("batch_gate") or BatchGate()
    if gate.lock.locked():
        # Read by the running job after its claim: tasks queued while it was claiming are claimed again.
        gate.more = True
        metrics.DELIVERIES_SKIPPED.labels("drained").inc(len(task_ids))
        return "left to the running batch"
    async with gate.lock:
        pool: asyncpg.Pool = ctx["pool"]
        try:
            claimed = await rows.claim_many(pool, task_ids, ctx["worker_id"])
        except rows.TargetBusy:
            # Raced with another claim of the same target (rare): claim them one at a time.
            for task_id in task_ids:
                await run_task(ctx, task_id)
            return "one by one"
        if len(claimed) < len(task_ids):
            metrics.DELIVERIES_SKIPPED.labels("skipped").inc(len(task_ids) - len(claimed))
        kinds = sorted({t["kind"] for t in claimed} & BATCH_HANDLERS.keys())
        claimed += await _claim_queued(ctx, kinds, claimed)
        done = 0
        batches: list[asyncio.Task] = []  # at most two: one writing, the next reading or waiting to write
        try:
            while claimed:
                turn = turns.Turn(gate.writes)
                batches.append(asyncio.create_task(_run_claimed_batch(ctx, claimed, turn)))
                done += len(claimed)
                await _first(batches[-1], turn.planned.wait())
                if len(batches) == 2:  # the one before writes first: let it end (and raise, if it failed)
                    await batches.pop(0)
                while True:
                    gate.more = False
                    claimed = await _claim_queued(ctx, kinds, [])
                    if claimed:
                        break
                    if batches:  # its tasks' finish may leave other tasks of its targets queued
                        await batches.pop(0)
                        continue
                    # No await between an empty claim with no job come meanwhile and the lock's release.
                    if not gate.more:
                        break
        finally:
            for batch in batches:
                batch.cancel()  # its handler hands its tasks back (_run_batch)
            await asyncio.gather(*batches, return_exceptions=True)
        return f"{done} task(s) for a job of {len(task_ids)}"


async def _first(task: asyncio.Task, other: Awaitable) -> None:
    """Wait until `task` ends or `other` does (the other is then dropped)."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _run_claimed_batch(ctx: dict, claimed: list[asyncpg.Record], turn: turns.Turn) -> None:
    by_kind: dict[str, list[asyncpg.Record]] = {}
    for task in claimed:
        by_kind.setdefault(task["kind"], []).append(task)
    for kind, group in by_kind.items():
        await _run_group(ctx, kind, group, turn)


async def _claim_queued(ctx: dict, kinds: list[str], have: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """Queued tasks of these kinds, each kind up to diff_batch_max_tasks with the ones `have` holds."""
    limit = max(ctx["settings"].diff_batch_max_tasks, 1)
    out: list[asyncpg.Record] = []
    for kind in kinds:
        out += await rows.claim_queued(ctx["pool"], kind, ctx["worker_id"],
                                       limit - sum(t["kind"] == kind for t in have), BATCH_GROUPS.get(kind, 0))
    return out


async def _run_group(ctx: dict, kind: str, group: list[asyncpg.Record], turn: turns.Turn) -> None:
    metrics.JOBS_STARTED.labels(kind).inc(len(group))
    metrics.IN_PROGRESS.labels(kind).inc(len(group))
    try:
        if kind in BATCH_HANDLERS:
            await _run_batch(ctx, kind, group, turn)
        else:
            for task in group:
                await _run_claimed(ctx, task)
    finally:
        metrics.IN_PROGRESS.labels(kind).dec(len(group))


async def _run_batch(ctx: dict, kind: str, group: list[asyncpg.Record], turn: turns.Turn) -> None:
    pool: asyncpg.Pool = ctx["pool"]
    ids = [t["id"] for t in group]
    beat = asyncio.create_task(_heartbeat_many(pool, ctx["settings"], ids))
    started = time.perf_counter()
    try:
        results = await BATCH_HANDLERS[kind](pool, [t["target"] for t in group], turn)
    except asyncio.CancelledError:
        beat.cancel()
        for task_id in ids:
            _observe(kind, "cancelled", time.perf_counter() - started)
            await _hand_back(pool, ctx["redis"], task_id)
        raise
    except Exception as exc:
        log.exception("batch of %d %s task(s) failed", len(ids), kind)
        results = {t["target"]: exc for t in group}
    finally:
        beat.cancel()
    outcomes = []
    for task in group:
        result = results.get(task["target"])
        if isinstance(result, Exception):
            log.error("task %s (%s) failed", task["id"], kind, exc_info=result)
            outcomes.append((task["id"], TaskStatus.error, _error_text(result), None))
        else:
            outcomes.append((task["id"], TaskStatus.done, None, result))
    next_ids = await rows.finish_many(pool, outcomes)
    elapsed = time.perf_counter() - started
    errors = sum(o[1] is TaskStatus.error for o in outcomes)
    for _, status, _, _ in outcomes:
        _observe(kind, status.value, elapsed)
    log.info("%d %s task(s) in one batch: %d done, %d failed, %.0fms", len(outcomes), kind, len(outcomes) - errors,
             errors, elapsed * 1000, extra={"kind": kind, "tasks": len(outcomes), "errors": errors,
                                            "duration_ms": round(elapsed * 1000, 1)})
    if next_ids:
        async with pool.acquire() as conn:
            await redispatch_many(conn, ctx["redis"], next_ids)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _observe(kind: str, outcome: str, seconds: float) -> None:
    metrics.JOBS_FINISHED.labels(kind, outcome).inc()
    metrics.JOB_SECONDS.labels(kind, outcome).observe(seconds)


async def _heartbeat(tctx: TaskContext) -> None:
    while True:
        await asyncio.sleep(tctx.settings.task_heartbeat_seconds)
        try:
            tctx.stop_requested = await rows.beat(tctx.pool, tctx.id)
        except Exception as exc:  # a missed beat is not fatal; the reconciler waits task_stale_seconds
            log.warning("heartbeat of task %s failed: %s", tctx.id, type(exc).__name__)


async def _heartbeat_many(pool, settings, ids: list[int]) -> None:
    while True:
        await asyncio.sleep(settings.task_heartbeat_seconds)
        try:
            await rows.beat_many(pool, ids)
        except Exception as exc:  # a missed beat is not fatal; the reconciler waits task_stale_seconds
            log.warning("heartbeat of %d task(s) failed: %s", len(ids), type(exc).__name__)


async def _hand_back(pool, redis, task_id: int) -> None:
    try:
        async with pool.acquire() as conn:
            await hand_back(conn, redis, task_id, "stopped")
    except Exception:
        log.exception("could not hand back task %s on shutdown; the reconciler will", task_id)
