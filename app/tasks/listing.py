"""Tasks as operators see them: the wire rows (Repomanager's task shape plus Depot's extras), listings, one task."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from app.domain_errors import NotFound

# The listings of /api/v2/tasks/<name>: (WHERE clause, ORDER BY).
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


def iso(value: datetime | None) -> str | None:
    """A timestamp on the wire: ISO 8601 in UTC with a Z."""
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
    """One task in Repomanager's shape (Id, Type, Date, Time, Raw_params as a JSON string, Pid, Logfile, Duration,
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
        "Created_at": iso(row["created_at"]),
        "Started_at": iso(row["started_at"]),
        "Finished_at": iso(row["finished_at"]),
        "Cron": row["cron"],
        "Next_run": iso(row["next_run_at"]),
        "Last_run": iso(row["last_run_at"]),
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
        raise NotFound(f"Task #{task_id} does not exist.")
    return wire(row)
