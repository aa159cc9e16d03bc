"""Re-enqueue what Redis lost, and hand back the tasks of workers that stopped beating.

PostgreSQL holds every task (design decision 1). This runs at worker start-up and then on the
workers' cron, so a flushed or restarted Redis, or a worker killed with SIGKILL, loses no work.
"""
from __future__ import annotations

import logging

from app import queue
from workers.jobs import BATCH_HANDLERS

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
        stale = await conn.fetch(
            "SELECT id, kind, target FROM tasks WHERE status = 'running'"
            " AND heartbeat_at < now() - make_interval(secs => $1) LIMIT $2",
            float(stale_seconds),
            BATCH,
        )
        for row in stale:
            async with conn.transaction():
                waiting = await conn.fetchval(
                    "SELECT id FROM tasks WHERE kind = $1 AND target = $2 AND status = 'queued'", row["kind"], row["target"]
                )
                if waiting is None:
                    await conn.execute(
                        "UPDATE tasks SET status = 'queued', worker_id = NULL, progress = 0 WHERE id = $1 AND status = 'running'",
                        row["id"],
                    )
                else:
                    # The queued task redoes the same resource from the database's state, so it carries on this work.
                    await conn.execute(
                        "UPDATE tasks SET status = 'error', finished_at = now(), error = $2 WHERE id = $1 AND status = 'running'",
                        row["id"],
                        f"worker lost; task #{waiting} carries on its work",
                    )
            if waiting is None:
                await queue.redispatch(conn, redis, row["id"])
                count += 1
    return count


async def resend_lost_queued(pool, redis, older_than_seconds: int) -> int:
    """Queued tasks whose arq job is gone from Redis, or stuck, get a new job.

    Stuck: arq holds the job "in progress" while the task row is still queued. A delivery claims its
    row within milliseconds, so this only lasts if the worker that took the job lost it (died, or a
    reply lost in a Redis hiccup); arq would leave it alone until the in-progress key expires (an hour).
    """
    rows = await pool.fetch(
        "SELECT id, kind, enqueue_count, job_id FROM tasks WHERE status = 'queued' AND NOT stop_requested"
        " AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
        float(older_than_seconds),
        BATCH,
    )
    if not rows:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for row in rows:
            job = row["job_id"] or queue.job_id(row["id"], row["enqueue_count"])
            pipe.exists(f"arq:job:{job}")
            pipe.exists(f"arq:in-progress:{job}")
        found = await pipe.execute()
    lost = [row for row, there, taken in zip(rows, found[0::2], found[1::2]) if not there or taken]
    # Kinds that run in batches go back in batch jobs (after a Redis restart, a fleet's worth of
    # host diffs would otherwise come back one job each).
    batched = [row["id"] for row in lost if row["kind"] in BATCH_HANDLERS]
    async with pool.acquire() as conn:
        for row in lost:
            if row["kind"] not in BATCH_HANDLERS:
                await queue.redispatch(conn, redis, row["id"])
        for start in range(0, len(batched), RESEND_BATCH):
            await queue.redispatch_many(conn, redis, batched[start:start + RESEND_BATCH])
    return len(lost)
