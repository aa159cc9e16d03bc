"""Scheduled tasks: cron expressions, creating schedules, and the scheduler step the workers run.

A schedule is a `tasks` row of type 'scheduled' (status scheduled or disabled) holding kind, target,
params and a cron expression (UTC). When due, one immediate task of the same kind/target/params is
created (and coalesced like any other). Several workers may run the step at once: advancing
next_run_at is a conditional UPDATE, so each due run is claimed by exactly one of them.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

import orjson
from croniter import CroniterBadCronError, croniter

from app import queue
from app.db import MAX_ID

log = logging.getLogger(__name__)

# Kinds a schedule may start, and how their lock target is derived from the params when not given.
# (Their handlers live with the domain that owns them: workers/repo_jobs.py for the repository kinds.)
SCHEDULABLE = {
    "rebuild": "snapshot",        # params {"snapshot": id}
    "snapshot_create": "repo",    # params {"repo": id}: copy of the repository's current snapshot
    "env_point": None,            # params {"env": name, "snapshot": id}: target env:<env>:repo:<repo id>
    "retention": "repo",          # params {"repo": id, "keep": n}
    "pool_gc": None,              # params {} (or {"dry_run": true}): target "pool", one at a time
}
POOL_GC_TARGET = "pool"


def pool_gc_target(dry_run: bool) -> str:
    """One collection at a time; a dry run (read-only) has its own target, so it never joins, and
    turns into a count only, a real collection queued before it."""
    return f"{POOL_GC_TARGET}:dry-run" if dry_run else POOL_GC_TARGET


TARGET_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")


class ScheduleError(ValueError):
    pass


def parse_cron(expr: str) -> str:
    """Validate a 5-field cron expression (minute hour day month weekday); returns it normalised."""
    if not isinstance(expr, str):
        raise ScheduleError("cron: a cron expression string is required")
    expr = " ".join(expr.split())
    if len(expr.split(" ")) != 5:
        raise ScheduleError("cron: expected 5 fields (minute hour day-of-month month day-of-week)")
    try:
        croniter(expr, datetime.now(timezone.utc))
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ScheduleError(f"cron: invalid expression ({exc})") from None
    return expr


def next_run(expr: str, after: datetime | None = None) -> datetime:
    after = after or datetime.now(timezone.utc)
    return croniter(expr, after).get_next(datetime)


async def derive_target(conn, kind: str, params: dict, target: str | None) -> str:
    if kind == "pool_gc":
        return pool_gc_target(params.get("dry_run") is True)   # one pool: never a target of the caller's
    if target:
        if not isinstance(target, str) or not TARGET_RE.match(target):
            raise ScheduleError("target: expected something like 'snapshot:12'")
        return target
    if kind == "env_point":
        env, snap = params.get("env"), params.get("snapshot")
        if not isinstance(env, str) or not _is_id(snap):
            raise ScheduleError("params: env_point needs {\"env\": name, \"snapshot\": id}")
        repo_id = await conn.fetchval("SELECT repo_id FROM snapshots WHERE id = $1 AND status = 'active'", snap) \
            if await _has(conn, "snapshots") else None
        if repo_id is None:
            raise ScheduleError(f"params: snapshot {snap} does not exist")
        return f"env:{env}:repo:{repo_id}"
    key = SCHEDULABLE.get(kind)
    value = params.get(key) if key else None
    if not _is_id(value):
        raise ScheduleError(f"params: {kind} needs {{\"{key}\": id}} (or give a target)")
    # A schedule of something that does not exist would fail at every run: refuse it now.
    if key == "snapshot" and await _has(conn, "snapshots") and not await conn.fetchval(
            "SELECT 1 FROM snapshots WHERE id = $1 AND status = 'active'", value):
        raise ScheduleError(f"params: snapshot {value} does not exist")
    if key == "repo" and await _has(conn, "repos") and not await conn.fetchval(
            "SELECT 1 FROM repos WHERE id = $1", value):
        raise ScheduleError(f"params: repository {value} does not exist")
    return f"{key}:{value}"


def _is_id(value) -> bool:
    """A database id: a JSON integer in bigint's positive range (beyond it PostgreSQL would refuse the query)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


async def _has(conn, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def create_schedule(pool, kind: str, cron: str, params: dict, target: str | None, *, requested_by: str | None,
                          enabled: bool = True) -> int:
    if kind not in SCHEDULABLE:
        raise ScheduleError(f"kind: must be one of {', '.join(sorted(SCHEDULABLE))}")
    if not isinstance(params, dict):
        raise ScheduleError("params: expected a JSON object")
    if "\\u0000" in orjson.dumps(params).decode():
        raise ScheduleError("params: NUL characters are not allowed")
    if kind == "retention":
        keep = params.get("keep")
        if not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= 10_000:
            raise ScheduleError("params: retention needs {\"repo\": id, \"keep\": n} with n >= 1")
    cron = parse_cron(cron)
    async with pool.acquire() as conn:
        async with conn.transaction():
            target = await derive_target(conn, kind, params, target)
            return await conn.fetchval(
                "INSERT INTO tasks (kind, target, type, status, params, cron, next_run_at, requested_by)"
                " VALUES ($1, $2, 'scheduled', $3, $4, $5, $6, $7) RETURNING id",
                kind,
                target,
                "scheduled" if enabled else "disabled",
                params,
                cron,
                next_run(cron),
                requested_by,
            )


async def run_due(pool, redis, *, limit: int = 100) -> list[int]:
    """Start every due schedule once; returns the ids of the immediate tasks created (or joined)."""
    started: list[int] = []
    due = await pool.fetch(
        "SELECT id, kind, target, params, cron, next_run_at FROM tasks"
        " WHERE type = 'scheduled' AND status = 'scheduled' AND next_run_at <= now()"
        " ORDER BY next_run_at LIMIT $1",
        limit,
    )
    for row in due:
        following = next_run(row["cron"], datetime.now(timezone.utc))
        async with pool.acquire() as conn:
            async with conn.transaction():
                # Exactly once across workers: only the step that still sees the old next_run_at wins.
                claimed = await conn.fetchval(
                    "UPDATE tasks SET next_run_at = $2, last_run_at = now() WHERE id = $1 AND next_run_at = $3"
                    " AND status = 'scheduled' RETURNING id",
                    row["id"],
                    following,
                    row["next_run_at"],
                )
                if claimed is None:
                    continue
                ref = await queue.create_task(conn, row["kind"], row["target"], dict(row["params"]),
                                              requested_by=f"schedule:{row['id']}")
                await conn.execute("UPDATE tasks SET schedule_id = $2 WHERE id = $1 AND schedule_id IS NULL",
                                   ref.id, row["id"])
        await queue.dispatch(redis, ref)
        started.append(ref.id)
        log.info("schedule %s started task %s (%s %s)", row["id"], ref.id, row["kind"], row["target"])
    return started
