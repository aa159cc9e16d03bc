"""Create a task and send its job: the task row first (PostgreSQL is the truth), then the arq job
that carries its id. If Redis is away the row stays queued and the reconciler sends the job later.

A request made while a task of the same (kind, target) is queued joins that task (coalescing); one
made while it runs creates exactly one more queued task, run after it. A job carries one task id
(`run_task`), or several (`run_tasks`, see batcher.py).
"""
from __future__ import annotations

import logging
import secrets

from app.tasks import rows
from app.tasks.rows import TaskRef

log = logging.getLogger(__name__)

JOB_FUNCTION = "run_task"
BATCH_FUNCTION = "run_tasks"


def job_id(task_id: int, enqueue_count: int) -> str:
    # A new id for each (re-)enqueue: arq refuses a job id it still holds, and a task re-queued
    # after its worker died must not wait for the old job's in-progress key to expire.
    return f"task-{task_id}-{enqueue_count}"


async def create_task(conn, kind: str, target: str, params: dict | None = None, *,
                      requested_by: str | None = None) -> TaskRef:
    """The queued task for (kind, target), new or joined. Call inside the caller's transaction, and
    dispatch() after it commits."""
    return await rows.create(conn, kind, target, params, requested_by)


async def dispatch(redis, ref: TaskRef) -> None:
    """Send the job of a task just created (a joined task already has one)."""
    if not ref.created:
        return
    try:
        await redis.enqueue_job(JOB_FUNCTION, ref.id, _job_id=job_id(ref.id, ref.enqueue_count))
    except Exception as exc:  # the task row is the truth; the reconciler re-sends it
        log.warning("could not enqueue task %s (%s); the reconciler will retry", ref.id, type(exc).__name__)


async def enqueue(pool, redis, kind: str, target: str, params: dict | None = None, *,
                  requested_by: str | None = None) -> TaskRef:
    """create_task() in a transaction of its own, then dispatch()."""
    async with pool.acquire() as conn:
        ref = await create_task(conn, kind, target, params, requested_by=requested_by)
    await dispatch(redis, ref)
    return ref


async def send_batch(redis, task_ids: list[int], job: str) -> None:
    """Send one `run_tasks` job for these tasks."""
    try:
        await redis.enqueue_job(BATCH_FUNCTION, task_ids, _job_id=job)
    except Exception as exc:  # the task rows are the truth; the reconciler re-sends them
        log.warning("could not enqueue %d task(s) (%s); the reconciler will retry", len(task_ids), type(exc).__name__)


async def redispatch(conn, redis, task_id: int) -> None:
    """Give a queued task a fresh job (its worker died, its job was lost, or its target became free)."""
    count = await rows.renew_job(conn, task_id)
    if count is not None:
        await dispatch(redis, TaskRef(task_id, count, True))


async def hand_back(conn, redis, task_id: int, why: str) -> bool:
    """A running task whose worker went away ('stopped' or 'lost') goes back to the queue with a fresh
    job (rows.hand_back says when it ends in error instead). Returns whether it was re-queued."""
    if not await rows.hand_back(conn, task_id, why):
        return False
    await redispatch(conn, redis, task_id)
    return True


async def redispatch_many(conn, redis, task_ids: list[int]) -> None:
    """redispatch() for several tasks at once: one batch job for those still queued."""
    if len(task_ids) == 1:
        return await redispatch(conn, redis, task_ids[0])
    job = f"tasks-{min(task_ids)}-{secrets.token_hex(4)}"
    queued = await rows.renew_jobs(conn, task_ids, job)
    if queued:
        await send_batch(redis, queued, job)


async def stop_task(pool, redis, queue_name: str, task_id: int) -> str:
    """An operator's stop: a queued task is stopped at once and its job withdrawn ('stopped'); a
    running one stops at its next check ('stopping')."""
    outcome, row = await rows.stop(pool, task_id)
    if outcome == "stopped" and row["job_id"] is None:
        # (A batch job carries other tasks too: it stays, and skips this one.)
        await _withdraw(redis, queue_name, job_id(task_id, row["enqueue_count"]))
    return outcome


async def _withdraw(redis, queue_name: str, job: str) -> None:
    """Take a queued job out of arq's queue (best effort: the row's status already makes it a no-op)."""
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zrem(queue_name, job)
            pipe.delete(f"arq:job:{job}")
            await pipe.execute()
    except Exception as exc:
        log.warning("could not remove job %s from the queue: %s", job, type(exc).__name__)
