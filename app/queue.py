"""Enqueue helpers: the task row first (PostgreSQL is the truth), then the arq job that carries its id.

A request made while a task of the same (kind, target) is queued joins that task (coalescing);
one made while it runs creates exactly one more queued task, run after it (see workers/jobs.py).
"""
from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

JOB_FUNCTION = "run_task"


class TaskStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    error = "error"
    stopped = "stopped"
    scheduled = "scheduled"
    disabled = "disabled"


FINISHED = (TaskStatus.done.value, TaskStatus.error.value, TaskStatus.stopped.value)


@dataclass(frozen=True)
class TaskRef:
    id: int
    enqueue_count: int
    created: bool  # False when the request joined a task already queued


def job_id(task_id: int, enqueue_count: int) -> str:
    # A new id for each (re-)enqueue: arq refuses a job id it still holds, and a task re-queued
    # after its worker died must not wait for the old job's in-progress key to expire.
    return f"task-{task_id}-{enqueue_count}"


async def create_task(conn, kind: str, target: str, params: dict | None = None, *, requested_by: str | None = None) -> TaskRef:
    """Insert the queued task row, or join the one already queued for (kind, target).

    Call inside the caller's transaction; call dispatch() after it commits.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO tasks (kind, target, params, requested_by, enqueue_count)
        VALUES ($1, $2, $3, $4, 1)
        ON CONFLICT (kind, target) WHERE status = 'queued'
        DO UPDATE SET params = tasks.params || EXCLUDED.params
        RETURNING id, enqueue_count, (xmax = 0) AS created
        """,
        kind,
        target,
        params or {},
        requested_by,
    )
    return TaskRef(row["id"], row["enqueue_count"], row["created"])


async def dispatch(redis, ref: TaskRef, *, defer_seconds: float | None = None) -> None:
    """Send the arq job for a new task. If Redis is away the row stays queued for the reconciler."""
    if not ref.created:
        return
    try:
        await redis.enqueue_job(JOB_FUNCTION, ref.id, _job_id=job_id(ref.id, ref.enqueue_count), _defer_by=defer_seconds)
    except Exception as exc:  # the task row is the truth; the reconciler re-sends it
        log.warning("could not enqueue task %s (%s); the reconciler will retry", ref.id, type(exc).__name__)


def dispatch_soon(pending: set, redis, ref: TaskRef, *, defer_seconds: float | None = None) -> None:
    """dispatch() without making the caller wait: for the report endpoints, whose answer does not
    depend on it. Under load each Redis round trip waits for a turn of a busy event loop, and
    arq's enqueue takes three; the task row is committed already, and the reconciler re-sends a
    job that never arrived. `pending` keeps the asyncio tasks alive until they finish."""
    if not ref.created:
        return
    task = asyncio.create_task(dispatch(redis, ref, defer_seconds=defer_seconds))
    pending.add(task)
    task.add_done_callback(pending.discard)


async def enqueue(pool, redis, kind: str, target: str, params: dict | None = None, *, requested_by: str | None = None) -> TaskRef:
    async with pool.acquire() as conn:
        ref = await create_task(conn, kind, target, params, requested_by=requested_by)
    await dispatch(redis, ref)
    return ref


async def redispatch(conn, redis, task_id: int) -> None:
    """Give a queued task a fresh arq job (after its worker died or its target became free)."""
    count = await conn.fetchval(
        "UPDATE tasks SET enqueue_count = enqueue_count + 1 WHERE id = $1 AND status = 'queued' RETURNING enqueue_count",
        task_id,
    )
    if count is not None:
        await dispatch(redis, TaskRef(task_id, count, True))
