"""The state of the work queues: Redis (jobs waiting) and PostgreSQL (tasks, workers' heartbeats)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from arq.constants import in_progress_key_prefix

from app.tasks.listing import iso

# Two index scans (status, then finished_at) rather than one OR that would read the whole history.
KIND_COUNTS = """
WITH recent AS (
    SELECT kind, status, created_at FROM tasks WHERE status IN ('queued', 'running') AND type = 'immediate'
    UNION ALL
    SELECT kind, status, NULL FROM tasks
    WHERE finished_at > now() - interval '1 hour' AND status IN ('done', 'error', 'stopped') AND type = 'immediate'
)
SELECT kind,
       count(*) FILTER (WHERE status = 'queued')  AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'done')    AS done_last_hour,
       count(*) FILTER (WHERE status = 'error')   AS failed_last_hour,
       count(*) FILTER (WHERE status = 'stopped') AS stopped_last_hour,
       min(created_at) FILTER (WHERE status = 'queued') AS oldest_queued
FROM recent GROUP BY kind ORDER BY kind
"""

# The one list of workers (GET /api/v2/queues, the dashboard, /metrics). A worker is lost when it
# stopped beating for task_stale_seconds without a clean shutdown (the reconciler stamps stopped_at on
# lost workers too, long after their last beat). Shown: every worker not stopped, so a lost one stays
# until the reconciler has handled it; a stopped one for a day after it stopped, or for as long as it
# still holds running tasks (not handed back yet). Older ones leave the lists, not the table.
WORKERS = """
SELECT w.worker_id, w.hostname, w.pid, w.started_at, w.heartbeat_at, w.stopped_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS age,
       w.heartbeat_at < coalesce(w.stopped_at, now()) - make_interval(secs => $1) AS lost,
       (SELECT count(*) FROM tasks t WHERE t.worker_id = w.worker_id AND t.status = 'running') AS running
FROM workers w
WHERE w.stopped_at IS NULL OR w.stopped_at > now() - interval '1 day'
   OR EXISTS (SELECT 1 FROM tasks t WHERE t.worker_id = w.worker_id AND t.status = 'running')
ORDER BY w.stopped_at IS NOT NULL, w.heartbeat_at DESC
LIMIT $2
"""
WORKERS_SHOWN = 200


async def list_workers(pool, stale_seconds: float, limit: int = WORKERS_SHOWN) -> list[dict]:
    """The workers to show, newest beat first, each with its `state`: alive, lost or stopped."""
    rows = await pool.fetch(WORKERS, float(stale_seconds), limit)
    return [{**dict(r), "state": "lost" if r["lost"] else ("stopped" if r["stopped_at"] else "alive")} for r in rows]


# How many of the longest-waiting due jobs are checked for an arq in-progress key: arq leaves a job in the
# queue zset while it runs, and workers take jobs oldest first, so the running ones are at the front.
IN_PROGRESS_SCAN = 200


async def redis_depth(redis, queue_name: str) -> tuple[int, float | None]:
    """(jobs waiting, age in seconds of the oldest one) from arq's queue, a zset scored by run time in ms.

    Waiting means due now and not running: jobs deferred to later (the workers' next cron runs) and
    jobs a worker is running (arq keeps them in the zset) are not counted.
    """
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(queue_name, "-inf", now_ms)
        pipe.zrangebyscore(queue_name, "-inf", now_ms, start=0, num=IN_PROGRESS_SCAN, withscores=True)
        due, front = await pipe.execute()
    if not front:
        return int(due), None
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, _ in front:
            pipe.exists(in_progress_key_prefix + (job_id.decode() if isinstance(job_id, bytes) else job_id))
        running = await pipe.execute()
    waiting = [score for (_, score), busy in zip(front, running) if not busy]
    age = max(0.0, now_ms / 1000 - waiting[0] / 1000) if waiting else None
    return max(0, int(due) - sum(1 for busy in running if busy)), age


async def queue_state(pool, redis, settings) -> dict:
    """The queue (depth, oldest wait, per-kind counts of the last hour) and the workers."""
    redis_state = "ok"
    try:
        depth, redis_age = await redis_depth(redis, settings.queue_name)
    except Exception as exc:  # the table still tells what is waiting
        depth, redis_age, redis_state = None, None, f"error: {type(exc).__name__}"
    kinds = await pool.fetch(KIND_COUNTS)
    workers = await list_workers(pool, settings.task_stale_seconds)
    now = datetime.now(timezone.utc)
    oldest = min((k["oldest_queued"] for k in kinds if k["oldest_queued"]), default=None)
    oldest_age = (now - oldest).total_seconds() if oldest else None
    if redis_age is not None:
        oldest_age = max(oldest_age or 0.0, redis_age)
    totals = {c: sum(k[c] for k in kinds) for c in
              ("queued", "running", "done_last_hour", "failed_last_hour", "stopped_last_hour")}
    queue = {
        "name": settings.queue_name,
        "depth": depth if depth is not None else totals["queued"],
        "queued_tasks": totals["queued"],
        "in_progress": totals["running"],
        "oldest_waiting_seconds": round(oldest_age, 3) if oldest_age is not None else None,
        "done_last_hour": totals["done_last_hour"],
        "failed_last_hour": totals["failed_last_hour"],
        "stopped_last_hour": totals["stopped_last_hour"],
        "kinds": [
            {c: k[c] for c in ("kind", "queued", "running", "done_last_hour", "failed_last_hour", "stopped_last_hour")}
            for k in kinds
        ],
    }
    return {
        "queues": [queue],
        "workers": [
            {
                "worker_id": w["worker_id"],
                "hostname": w["hostname"],
                "pid": w["pid"],
                "state": ("busy" if w["running"] else "idle") if w["state"] == "alive" else w["state"],
                "started_at": iso(w["started_at"]),
                "last_heartbeat": iso(w["heartbeat_at"]),
                "heartbeat_age_seconds": round(w["age"], 3),
                "running_tasks": w["running"],
            }
            for w in workers
        ],
        "redis": redis_state,
    }
