"""Tasks page and overview: task lists by state, queue figures, jobs per minute (the workers: app/tasks/status.py)."""
from __future__ import annotations

from app.tasks.status import redis_depth
from app.dashboard.queries import Page, cached, like_pattern

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
    " finished_at, worker_id, heartbeat_at, stop_requested, attempts, cron, next_run_at, last_run_at, schedule_id,"
    " extract(epoch FROM coalesce(finished_at, now()) - coalesce(started_at, created_at))::float AS seconds"
)


async def list_tasks(pool, tab: str, q: str = "", page: int = 1, per_page: int = 50) -> Page:
    statuses = list(TABS.get(tab, TABS["active"]))
    # Newest first by id (creation order), which tasks_status_id (status, id DESC) serves directly.
    # The page's ids come first, so the columns are computed for the rows shown, not the skipped ones.
    ids = "SELECT id FROM tasks WHERE status = ANY($1::text[])"
    args: list = [statuses]
    if q:
        ids += " AND (kind ILIKE $2 OR target ILIKE $2 OR id::text = $3)"
        args += [like_pattern(q), q.strip().lstrip("#")]
    n = len(args)
    sql = (
        f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({ids} ORDER BY id DESC"
        f" LIMIT ${n + 1} OFFSET ${n + 2}) ORDER BY id DESC"
    )
    page = max(1, page)
    rows = await pool.fetch(sql, *args, per_page + 1, (page - 1) * per_page)
    return Page(list(rows[:per_page]), page, per_page, len(rows) > per_page)


async def get_task(pool, task_id: int):
    return await pool.fetchrow(f"SELECT {_COLUMNS}, params, result FROM tasks WHERE id = $1", task_id)


async def queue_summary(pool, redis, settings) -> dict:
    """Per task kind: queued, running, oldest waiting age (live, from the status index), and done and
    failed in the last hour (a range scan of the hour's tasks, cached a few seconds)."""
    live = await pool.fetch(
        """
        SELECT kind,
               count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'running') AS running,
               extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued'))::float AS oldest_wait
        FROM tasks WHERE status IN ('queued', 'running') GROUP BY kind
        """
    )

    async def last_hour():
        rows = await pool.fetch(
            """
            SELECT kind, count(*) FILTER (WHERE status = 'done') AS done_1h,
                   count(*) FILTER (WHERE status = 'error') AS failed_1h
            FROM tasks WHERE finished_at > now() - interval '1 hour' GROUP BY kind
            """
        )
        return {r["kind"]: dict(r) for r in rows}

    hour = await cached(("tasks_last_hour", id(pool)), last_hour)
    kinds: dict[str, dict] = {}
    for r in live:
        kinds[r["kind"]] = {**dict(r), "done_1h": 0, "failed_1h": 0}
    for kind, r in hour.items():
        kinds.setdefault(kind, {"kind": kind, "queued": 0, "running": 0, "oldest_wait": None}).update(
            done_1h=r["done_1h"], failed_1h=r["failed_1h"]
        )
    ordered = [kinds[k] for k in sorted(kinds)]
    try:
        depth, _ = await redis_depth(redis, settings.queue_name)  # due, not running, not cron
    except Exception:  # noqa: BLE001 — Redis away: the page still shows PostgreSQL's view
        depth = None
    total = {
        "queued": sum(k["queued"] for k in ordered),
        "running": sum(k["running"] for k in ordered),
        "oldest_wait": max((k["oldest_wait"] or 0 for k in ordered), default=0) or None,
        "done_1h": sum(k["done_1h"] for k in ordered),
        "failed_1h": sum(k["failed_1h"] for k in ordered),
        "redis_depth": depth,
    }
    return {"name": settings.queue_name, "kinds": ordered, "total": total}


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
