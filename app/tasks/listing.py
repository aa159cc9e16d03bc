"""Tasks as operators see them: listings, one task, stop / enable / disable / delete, the wire rows.

Free of HTTP: errors are TaskError(status, message) that the handlers turn into JSON.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from app import queue, schedules

log = logging.getLogger(__name__)

# The listings of §7, by URL name: (WHERE clause, ORDER BY).
LISTINGS: dict[str, tuple[str, str]] = {
    "all": ("TRUE", "id DESC"),
    "running": ("status = 'running'", "started_at DESC NULLS LAST, id DESC"),
    "queued": ("status = 'queued'", "id ASC"),
    "scheduled": ("type = 'scheduled' AND status IN ('scheduled', 'disabled')", "next_run_at ASC NULLS LAST, id ASC"),
    # finished_at is set on every finished task; saying so lets the tasks_finished index give the order.
    "done": ("type = 'immediate' AND status IN ('done', 'error', 'stopped') AND finished_at IS NOT NULL",
             "finished_at DESC, id DESC"),
}

COLUMNS = (
    "id, kind, target, type, status, params, progress, progress_text, error, result, requested_by, created_at,"
    " started_at, finished_at, worker_id, heartbeat_at, attempts, stop_requested, cron, next_run_at, last_run_at,"
    " schedule_id"
)


COUNT_CAP = 10_000


class TaskError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Page:
    rows: list[dict]
    total: int
    page: int
    per_page: int
    total_capped: bool = False  # more than `total` rows match


def _duration(row, now: datetime) -> str | None:
    start = row["started_at"]
    if start is None:
        return None
    end = row["finished_at"] or (now if row["status"] == "running" else None)
    if end is None:
        return None
    seconds = max(0, int((end - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def raw_params(row) -> dict:
    """Repomanager-shaped params: the action, the task's own params, and a `schedule` block for schedules."""
    raw = {"action": row["kind"], **(row["params"] or {})}
    if row["type"] == "scheduled":
        raw["schedule"] = {
            "scheduled": "true",
            "schedule-type": "recurring",
            "schedule-cron": row["cron"],
            "schedule-date": row["next_run_at"].strftime("%Y-%m-%d") if row["next_run_at"] else None,
            "schedule-time": row["next_run_at"].strftime("%H:%M") if row["next_run_at"] else None,
        }
    return raw


def wire(row, now: datetime | None = None) -> dict:
    """One task in §7's shape (Id, Type, Date, Time, Raw_params as a JSON string, Pid, Logfile, Duration,
    Status), then Depot's extras."""
    now = now or datetime.now(timezone.utc)
    created = row["created_at"].astimezone(timezone.utc)
    return {
        "Id": row["id"],
        "Type": row["type"],
        "Date": created.strftime("%Y-%m-%d"),
        "Time": created.strftime("%H:%M:%S"),
        "Raw_params": orjson.dumps(raw_params(row)).decode(),
        "Pid": None,
        "Logfile": None,
        "Duration": _duration(row, now),
        "Status": row["status"],
        "Kind": row["kind"],
        "Target": row["target"],
        "Progress": row["progress"],
        "Progress_text": row["progress_text"],
        "Error": row["error"],
        "Result": row["result"],
        "Requested_by": row["requested_by"],
        "Worker": row["worker_id"],
        "Attempts": row["attempts"],
        "Stop_requested": row["stop_requested"],
        "Created_at": _iso(row["created_at"]),
        "Started_at": _iso(row["started_at"]),
        "Finished_at": _iso(row["finished_at"]),
        "Cron": row["cron"],
        "Next_run": _iso(row["next_run_at"]),
        "Last_run": _iso(row["last_run_at"]),
        "Schedule_id": row["schedule_id"],
    }


async def list_tasks(pool, which: str, *, page: int = 1, per_page: int = 100, kind: str | None = None) -> Page:
    where, order = LISTINGS[which]
    args: list = []
    if kind:
        args.append(kind)
        where += f" AND kind = ${len(args)}"
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # Counting a long history exactly would cost a scan per page: past COUNT_CAP the total is a floor.
            total = await conn.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM tasks WHERE {where} LIMIT {COUNT_CAP + 1}) t", *args)
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM tasks WHERE {where} ORDER BY {order}"
                f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
                *args,
                per_page,
                (page - 1) * per_page,
            )
    now = datetime.now(timezone.utc)
    return Page([wire(r, now) for r in rows], min(total, COUNT_CAP), page, per_page, total > COUNT_CAP)


async def get_task(pool, task_id: int) -> dict:
    row = await pool.fetchrow(f"SELECT {COLUMNS} FROM tasks WHERE id = $1", task_id)
    if row is None:
        raise TaskError(404, f"Task #{task_id} does not exist.")
    return wire(row)


async def _locked(conn, task_id: int):
    row = await conn.fetchrow("SELECT id, kind, type, status, enqueue_count, job_id FROM tasks WHERE id = $1 FOR UPDATE", task_id)
    if row is None:
        raise TaskError(404, f"Task #{task_id} does not exist.")
    return row


async def stop_task(pool, redis, queue_name: str, task_id: int) -> str:
    """Queued: stopped at once and its arq job removed. Running: asked to stop at its next check.

    Returns 'stopped' or 'stopping'.
    """
    async with pool.acquire() as conn:
        async with conn.transaction():
            row = await _locked(conn, task_id)
            if row["status"] == "queued":
                # The worker's claim is `WHERE status = 'queued'`, so a job delivered anyway is skipped.
                await conn.execute(
                    "UPDATE tasks SET status = 'stopped', stop_requested = true, finished_at = now() WHERE id = $1",
                    task_id,
                )
                outcome = "stopped"
            elif row["status"] == "running":
                await conn.execute("UPDATE tasks SET stop_requested = true WHERE id = $1", task_id)
                outcome = "stopping"
            else:
                raise TaskError(409, f"Task #{task_id} is not running")
    if outcome == "stopped" and row["job_id"] is None:
        # (A batch job carries other tasks too: it stays, and skips this one.)
        await _drop_job(redis, queue_name, queue.job_id(task_id, row["enqueue_count"]))
    return outcome


async def _drop_job(redis, queue_name: str, job_id: str) -> None:
    """Take a queued job out of arq's queue (best effort: the row's status already makes it a no-op)."""
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zrem(queue_name, job_id)
            pipe.delete(f"arq:job:{job_id}")
            await pipe.execute()
    except Exception as exc:
        log.warning("could not remove job %s from the queue: %s", job_id, type(exc).__name__)


async def set_enabled(pool, task_id: int, enabled: bool) -> None:
    verb = "enabled" if enabled else "disabled"
    async with pool.acquire() as conn:
        async with conn.transaction():
            row = await _locked(conn, task_id)
            if row["type"] != "scheduled":
                raise TaskError(409, f"Task #{task_id} is not a scheduled task and cannot be {verb[:-1]}")
            if enabled:
                # Re-enabling computes the next run from now: missed runs are not replayed.
                cron = await conn.fetchval("SELECT cron FROM tasks WHERE id = $1", task_id)
                await conn.execute(
                    "UPDATE tasks SET status = 'scheduled', next_run_at = $2 WHERE id = $1",
                    task_id,
                    schedules.next_run(cron),
                )
            else:
                await conn.execute("UPDATE tasks SET status = 'disabled' WHERE id = $1", task_id)


async def delete_task(pool, task_id: int) -> None:
    """Schedules (as in §7) and finished tasks may be deleted; a queued or running task must be stopped first."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            row = await _locked(conn, task_id)
            if row["status"] in ("queued", "running"):
                raise TaskError(409, f"Task #{task_id} is {row['status']}: stop it before deleting it")
            await conn.execute("DELETE FROM tasks WHERE id = $1", task_id)


async def prune_history(pool, days: int, batch: int = 5000) -> int:
    """Delete immediate tasks finished more than `days` ago (a batch per call; the cron calls it often).

    Schedules and queued/running tasks are never touched. Returns how many rows went.
    """
    if days <= 0:
        return 0
    return await pool.fetchval(
        "WITH gone AS (DELETE FROM tasks WHERE id IN ("
        "  SELECT id FROM tasks WHERE finished_at < now() - make_interval(days => $1) AND type = 'immediate'"
        "  ORDER BY finished_at LIMIT $2) RETURNING 1)"
        " SELECT count(*) FROM gone",
        days,
        batch,
    )
