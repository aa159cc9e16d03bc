"""Tasks page and overview: task lists by state, queue figures, workers, jobs per minute."""
from __future__ import annotations

from app.dashboard.queries import Page, fetch_page, like_pattern

# Tabs of the tasks page: name -> statuses shown.
TABS = {
    "active": ("running", "queued"),
    "running": ("running",),
    "queued": ("queued",),
    "failed": ("error",),
    "stopped": ("stopped",),
    "done": ("done",),
    "scheduled": ("scheduled", "disabled"),
    "all": ("queued", "running", "done", "error", "stopped", "scheduled", "disabled"),
}

_COLUMNS = (
    "id, kind, target, type, status, progress, progress_text, error, requested_by, created_at, started_at,"
    " finished_at, worker_id, heartbeat_at, stop_requested, attempts,"
    " extract(epoch FROM coalesce(finished_at, now()) - coalesce(started_at, created_at))::float AS seconds"
)


async def list_tasks(pool, tab: str, q: str = "", page: int = 1, per_page: int = 50) -> Page:
    statuses = list(TABS.get(tab, TABS["active"]))
    # status = ANY(...) ORDER BY created_at uses tasks_status_created; the search narrows inside it.
    sql = f"SELECT {_COLUMNS} FROM tasks WHERE status = ANY($1::text[])"
    args: list = [statuses]
    if q:
        sql += " AND (kind ILIKE $2 OR target ILIKE $2 OR id::text = $3)"
        args += [like_pattern(q), q.strip()]
    sql += " ORDER BY created_at DESC, id DESC"
    return await fetch_page(pool, sql, *args, page=page, per_page=per_page)


async def get_task(pool, task_id: int):
    return await pool.fetchrow(f"SELECT {_COLUMNS}, params, result FROM tasks WHERE id = $1", task_id)


async def queue_summary(pool, redis, settings) -> dict:
    """Per task kind: queued, running, oldest waiting age, done and failed in the last hour."""
    rows = await pool.fetch(
        """
        SELECT kind,
               count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'running') AS running,
               extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued'))::float AS oldest_wait,
               count(*) FILTER (WHERE status = 'done' AND finished_at > now() - interval '1 hour') AS done_1h,
               count(*) FILTER (WHERE status = 'error' AND finished_at > now() - interval '1 hour') AS failed_1h
        FROM tasks
        WHERE status IN ('queued', 'running') OR finished_at > now() - interval '1 hour'
        GROUP BY kind ORDER BY kind
        """
    )
    kinds = [dict(r) for r in rows]
    try:
        redis_depth = await redis.zcard(settings.queue_name)
    except Exception:  # Redis away: the page still shows PostgreSQL's view
        redis_depth = None
    total = {
        "queued": sum(k["queued"] for k in kinds),
        "running": sum(k["running"] for k in kinds),
        "oldest_wait": max((k["oldest_wait"] or 0 for k in kinds), default=0) or None,
        "done_1h": sum(k["done_1h"] for k in kinds),
        "failed_1h": sum(k["failed_1h"] for k in kinds),
        "redis_depth": redis_depth,
    }
    return {"name": settings.queue_name, "kinds": kinds, "total": total}


async def workers(pool, stale_seconds: int, limit: int = 50) -> list[dict]:
    """Workers alive, lost (no heartbeat for stale_seconds) or stopped in the last day, newest first."""
    rows = await pool.fetch(
        """
        SELECT w.worker_id, w.hostname, w.pid, w.started_at, w.heartbeat_at, w.stopped_at,
               extract(epoch FROM now() - w.heartbeat_at)::float AS beat_age,
               (SELECT count(*) FROM tasks t WHERE t.status = 'running' AND t.worker_id = w.worker_id) AS running
        FROM workers w
        WHERE w.stopped_at IS NULL OR w.stopped_at > now() - interval '1 day'
        ORDER BY (w.stopped_at IS NULL) DESC, w.heartbeat_at DESC
        LIMIT $1
        """,
        limit,
    )
    out = []
    for r in rows:
        d = dict(r)
        d["state"] = "stopped" if r["stopped_at"] else ("lost" if r["beat_age"] > stale_seconds else "alive")
        out.append(d)
    return out


async def jobs_per_bucket(pool, bucket: str, buckets: int) -> dict:
    """Tasks created and finished per minute or hour over the last `buckets` buckets (indexed ranges)."""
    rows = await pool.fetch(
        """
        WITH b AS (
            SELECT generate_series(date_trunc($1, now()) - ($2 - 1) * ('1 ' || $1)::interval,
                                   date_trunc($1, now()), ('1 ' || $1)::interval) AS t
        ),
        c AS (SELECT date_trunc($1, created_at) AS t, count(*) AS n FROM tasks
              WHERE created_at >= (SELECT min(t) FROM b) GROUP BY 1),
        f AS (SELECT date_trunc($1, finished_at) AS t, count(*) AS n,
                     count(*) FILTER (WHERE status = 'error') AS failed FROM tasks
              WHERE finished_at >= (SELECT min(t) FROM b) GROUP BY 1)
        SELECT b.t, coalesce(c.n, 0) AS created, coalesce(f.n, 0) AS finished, coalesce(f.failed, 0) AS failed
        FROM b LEFT JOIN c USING (t) LEFT JOIN f USING (t) ORDER BY b.t
        """,
        bucket,
        buckets,
    )
    return {r["t"]: dict(r) for r in rows}
