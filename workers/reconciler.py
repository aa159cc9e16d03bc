"""Re-send what Redis lost, and hand back the tasks of workers that stopped beating.

PostgreSQL holds every task; this runs at worker start-up and then on the workers' cron, so a
flushed or restarted Redis, or a worker killed with SIGKILL, loses no work.
"""
from __future__ import annotations

import logging

from app.tasks import rows
from app.tasks.dispatch import hand_back, job_id, redispatch, redispatch_many
from workers.runner import BATCH_HANDLERS

log = logging.getLogger(__name__)

BATCH = 1000
RESEND_BATCH = 200  # tasks per re-sent batch job


async def reconcile(pool, redis, settings) -> dict:
    requeued = await requeue_stale_running(pool, redis, settings.task_stale_seconds)
    resent = await resend_lost_queued(pool, redis, settings.reconcile_seconds)
    await pool.execute(
        "UPDATE workers SET stopped_at = now() WHERE stopped_at IS NULL AND heartbeat_at < now() - make_interval(secs => $1)",
        float(settings.task_stale_seconds),
    )
    if requeued or resent:
        log.info("reconciler: %d stale running task(s) re-queued, %d lost job(s) re-sent", requeued, resent)
    return {"requeued": requeued, "resent": resent}


async def requeue_stale_running(pool, redis, stale_seconds: int) -> int:
    count = 0
    async with pool.acquire() as conn:
        for task_id in await rows.stale_running(conn, stale_seconds, BATCH):
            count += await hand_back(conn, redis, task_id, "lost")
    return count


async def resend_lost_queued(pool, redis, older_than_seconds: int) -> int:
    """Queued tasks whose arq job is gone from Redis, or stuck, get a new job.

    Stuck: arq holds the job "in progress" while the task row is still queued. A delivery claims its
    row within milliseconds, so this only lasts if the worker that took the job lost it (died, or a
    reply lost in a Redis hiccup); arq would leave it alone until the in-progress key expires (an hour).
    """
    waiting = await rows.queued_before(pool, older_than_seconds, BATCH)
    if not waiting:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for row in waiting:
            job = row["job_id"] or job_id(row["id"], row["enqueue_count"])
            pipe.exists(f"arq:job:{job}")
            pipe.exists(f"arq:in-progress:{job}")
        found = await pipe.execute()
    lost = [row for row, there, taken in zip(waiting, found[0::2], found[1::2]) if not there or taken]
    # Kinds that run in batches go back in batch jobs (after a Redis restart, a fleet's worth of
    # host diffs would otherwise come back one job each).
    batched = [row["id"] for row in lost if row["kind"] in BATCH_HANDLERS]
    async with pool.acquire() as conn:
        for row in lost:
            if row["kind"] not in BATCH_HANDLERS:
                await redispatch(conn, redis, row["id"])
        for start in range(0, len(batched), RESEND_BATCH):
            await redispatch_many(conn, redis, batched[start:start + RESEND_BATCH])
    return len(lost)
