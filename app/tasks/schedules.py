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

from app.db import MAX_ID
from app.domain_errors import Invalid
from app.repos.gc import pool_gc_target
from app.tasks import rows
from app.tasks.dispatch import create_task, dispatch
from app.tasks.kinds import SCHEDULABLE

log = logging.getLogger(__name__)

TARGET_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")


class ScheduleError(Invalid):
    """A schedule refused: its kind, target, params or cron (400)."""


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
            return await rows.create_schedule(conn, kind, target, params, cron, next_run(cron), requested_by, enabled)


async def set_enabled(pool, task_id: int, enabled: bool) -> None:
    """Enable a schedule (its next run computed from now: missed runs are not replayed) or disable it."""
    await rows.set_enabled(pool, task_id, enabled, next_run)


async def run_due(pool, redis, *, limit: int = 100) -> list[int]:
    """Start every due schedule once; returns the ids of the immediate tasks created (or joined)."""
    started: list[int] = []
    due = await rows.due_schedules(pool, limit)
    for row in due:
        following = next_run(row["cron"], datetime.now(timezone.utc))
        async with pool.acquire() as conn:
            async with conn.transaction():
                if not await rows.claim_run(conn, row["id"], row["next_run_at"], following):
                    continue
                ref = await create_task(conn, row["kind"], row["target"], dict(row["params"]),
                                        requested_by=f"schedule:{row['id']}")
                await rows.mark_run_of(conn, ref.id, row["id"])
        await dispatch(redis, ref)
        started.append(ref.id)
        log.info("schedule %s started task %s (%s %s)", row["id"], ref.id, row["kind"], row["target"])
    return started
