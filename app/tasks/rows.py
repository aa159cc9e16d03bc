"""Every change of a `tasks` row: the task's state machine, stated once.

An immediate task (type 'immediate'):

    queued ──claim──▶ running ──finish──▶ done | error | stopped
      │                 │
      │                 └──hand_back──▶ queued   (its worker stopped or was lost; if a task of the same
      │                                           target is already queued, → error: that one carries on)
      └──stop──▶ stopped                          (an operator, or the host it served was unregistered)

A schedule (type 'scheduled') is `scheduled` or `disabled`; each due run creates an immediate task.

Two partial unique indexes make the rules: one queued task per (kind, target), so requests made while
one waits join it (coalescing), and one running task per (kind, target), a lock per resource: a task
whose target is busy stays queued and the running one re-sends it when it finishes. Claims are
conditional updates (`WHERE status = 'queued'`), so a job delivered twice runs its task once.
Only finished immediate tasks are ever deleted (history pruning), and schedules on an operator's word.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.domain_errors import Conflict, NotFound


class TaskStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    error = "error"
    stopped = "stopped"
    scheduled = "scheduled"
    disabled = "disabled"


FINISHED = (TaskStatus.done.value, TaskStatus.error.value, TaskStatus.stopped.value)

# The order in which any statement locks several task rows: by target as the intake sorts the queued
# host_diff tasks its reports join ('host:9' before 'host:10'). In any other order, two such statements
# could deadlock.
TASK_LOCK_ORDER = "kind, length(target), target"


class TargetBusy(Exception):
    """claim(): a task of the same (kind, target) is running."""


@dataclass(frozen=True)
class TaskRef:
    id: int
    enqueue_count: int
    created: bool  # False when the request joined a task already queued


# --- queued: created, or joined --------------------------------------------------------------------

_CREATE_SQL = """
INSERT INTO tasks (kind, target, params, requested_by, enqueue_count)
VALUES ($1, $2, $3, $4, 1)
ON CONFLICT (kind, target) WHERE status = 'queued'
DO UPDATE SET params = tasks.params || EXCLUDED.params
RETURNING id, enqueue_count, (xmax = 0) AS created
"""


async def create(conn, kind: str, target: str, params: dict | None, requested_by: str | None) -> TaskRef:
    """Insert a queued task, or join the one already queued for (kind, target) (its params merged)."""
    row = await conn.fetchrow(_CREATE_SQL, kind, target, params or {}, requested_by)
    return TaskRef(row["id"], row["enqueue_count"], row["created"])


def create_host_diffs_cte(reports: str, input_: str) -> str:
    """The CTE of the intake's one statement that creates (or joins) the queued host_diff task of each
    host whose report was stored: `reports` names a CTE of (id, host_id), `input_` one of (host_id, job_id).
    Its rows are (id, target, created). Joined tasks are locked in TASK_LOCK_ORDER (host ids ascending)."""
    return f"""
    INSERT INTO tasks (kind, target, params, requested_by, enqueue_count, job_id)
    SELECT 'host_diff', 'host:' || {reports}.host_id, '{{}}'::jsonb, 'host:' || {reports}.host_id, 1, {input_}.job_id
    FROM {reports} JOIN {input_} ON {input_}.host_id = {reports}.host_id
    ORDER BY {reports}.host_id
    ON CONFLICT (kind, target) WHERE status = 'queued' DO UPDATE SET params = tasks.params
    RETURNING id, target, (xmax = 0) AS created"""


async def renew_job(conn, task_id: int) -> int | None:
    """A queued task gets a new job number (its job was lost, or its target became free); None if it
    is no longer queued."""
    return await conn.fetchval(
        "UPDATE tasks SET enqueue_count = enqueue_count + 1, job_id = NULL WHERE id = $1 AND status = 'queued'"
        " RETURNING enqueue_count",
        task_id,
    )


async def renew_jobs(conn, task_ids: list[int], job_id: str) -> list[int]:
    """renew_job() for several tasks, all carried by one batch job; returns those still queued."""
    queued = await conn.fetchval(
        "WITH c AS (SELECT id FROM tasks WHERE id = ANY($1::bigint[]) AND status = 'queued'"
        f"           ORDER BY {TASK_LOCK_ORDER} FOR UPDATE),"
        " r AS (UPDATE tasks t SET enqueue_count = t.enqueue_count + 1, job_id = $2 FROM c WHERE t.id = c.id"
        "       RETURNING t.id)"
        " SELECT array_agg(id ORDER BY id) FROM r",
        task_ids, job_id,
    )
    return queued or []


# --- queued → running ----------------------------------------------------------------------------

_CLAIM_SET = ("status = 'running', started_at = now(), heartbeat_at = now(), worker_id = $2,"
              " attempts = attempts + 1, progress = 0, error = NULL")


async def claim(pool, task_id: int, worker_id: str) -> asyncpg.Record | None:
    """The task's row once it runs here; None if it is no longer queued (run, stopped, a duplicate
    delivery). Raises TargetBusy while a task of the same (kind, target) runs."""
    try:
        return await pool.fetchrow(
            f"UPDATE tasks SET {_CLAIM_SET} WHERE id = $1 AND status = 'queued' AND NOT stop_requested RETURNING *",
            task_id, worker_id,
        )
    except asyncpg.UniqueViolationError:
        raise TargetBusy() from None


# Tasks of a busy target are skipped: the running one re-sends them when it ends.
_CLAIM_MANY_SQL = f"""
WITH c AS (
    SELECT id FROM tasks WHERE id = ANY($1::bigint[]) AND status = 'queued' AND NOT stop_requested
    ORDER BY {TASK_LOCK_ORDER} FOR UPDATE
)
UPDATE tasks t SET {_CLAIM_SET}
FROM c WHERE t.id = c.id
AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.kind = t.kind AND r.target = t.target AND r.status = 'running')
RETURNING t.*
"""


async def claim_many(pool, task_ids: list[int], worker_id: str) -> list[asyncpg.Record]:
    """claim() for the tasks of a batch job, in one statement; raises TargetBusy on a race with
    another claim of one of their targets (the caller then claims them one at a time)."""
    try:
        return await pool.fetch(_CLAIM_MANY_SQL, task_ids, worker_id)
    except asyncpg.UniqueViolationError:
        raise TargetBusy() from None


# The queued tasks of a kind, oldest targets first in lock order, that no other claim holds
# (SKIP LOCKED): what a batch job adds to its own when a backlog has built up.
# With a group ($4 > 0; targets `<prefix>:<number>`, as `host:9`): a claim that took its whole limit and spans
# several groups of $4 consecutive numbers leaves its last group's tasks queued (their row locks end with
# the statement).
_CLAIM_QUEUED_SQL = f"""
WITH c AS (
    SELECT id, CASE WHEN $4 > 0 THEN split_part(target, ':', 2)::bigint / $4 END AS grp
    FROM tasks WHERE kind = $1 AND status = 'queued' AND NOT stop_requested
    ORDER BY {TASK_LOCK_ORDER} LIMIT $3 FOR UPDATE SKIP LOCKED
), keep AS (
    SELECT id FROM c
    WHERE $4 <= 0 OR grp < (SELECT max(grp) FROM c) OR (SELECT count(*) < $3 OR min(grp) = max(grp) FROM c)
)
UPDATE tasks t SET {_CLAIM_SET}
FROM keep c WHERE t.id = c.id
AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.kind = t.kind AND r.target = t.target AND r.status = 'running')
RETURNING t.*
"""


async def claim_queued(pool, kind: str, worker_id: str, limit: int, group: int = 0) -> list[asyncpg.Record]:
    """Claim up to `limit` queued tasks of `kind`, whatever job they were sent with (their own jobs then
    find them claimed and return). A race with another claim of one of their targets claims nothing.

    `group` > 0 (targets `<prefix>:<number>`): a backlog is claimed a group of `group` consecutive target
    numbers at a time. A claim that fills its limit and reaches into a next group leaves that group's tasks
    for the next claim, with the rest of their group (a claim within one group keeps them all)."""
    if limit <= 0:
        return []
    try:
        return await pool.fetch(_CLAIM_QUEUED_SQL, str(kind), worker_id, limit, group)
    except asyncpg.UniqueViolationError:
        return []


async def any_queued(pool, kind: str) -> bool:
    return await pool.fetchval("SELECT EXISTS (SELECT 1 FROM tasks WHERE kind = $1 AND status = 'queued')", str(kind))


# --- running: progress, heartbeats, an operator's stop ---------------------------------------------

async def progress(pool, task_id: int, percent: int, text: str | None) -> None:
    await pool.execute(
        "UPDATE tasks SET progress = $2, progress_text = coalesce($3, progress_text), heartbeat_at = now()"
        " WHERE id = $1",
        task_id, max(0, min(100, int(percent))), text,
    )


async def beat(pool, task_id: int) -> bool:
    """The running task is alive; returns whether an operator asked it to stop."""
    return bool(await pool.fetchval(
        "UPDATE tasks SET heartbeat_at = now() WHERE id = $1 RETURNING stop_requested", task_id))


async def beat_many(pool, task_ids: list[int]) -> None:
    await pool.execute("UPDATE tasks SET heartbeat_at = now() WHERE id = ANY($1::bigint[])", task_ids)


async def stop_requested(pool, task_id: int) -> bool:
    return bool(await pool.fetchval("SELECT stop_requested FROM tasks WHERE id = $1", task_id))


# --- running → done | error | stopped ------------------------------------------------------------

# Finishing also finds, in the same round trip, a task of the same target queued meanwhile: its job
# found this one running and waits to be sent again.
_FINISH_SQL = """
WITH fin AS (
    UPDATE tasks SET status = $2, error = $3, result = $4, finished_at = now(),
    progress = CASE WHEN $2 = 'done' THEN 100 ELSE progress END WHERE id = $1 RETURNING kind, target
)
SELECT q.id FROM tasks q JOIN fin ON q.kind = fin.kind AND q.target = fin.target WHERE q.status = 'queued'
"""

_FINISH_MANY_SQL = """
WITH fin AS (
    UPDATE tasks t SET status = f.status, error = f.error, result = f.result, finished_at = now(),
        progress = CASE WHEN f.status = 'done' THEN 100 ELSE t.progress END
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[]) AS f(id, status, error, result)
    WHERE t.id = f.id RETURNING t.kind, t.target
)
SELECT coalesce(array_agg(q.id), '{}') FROM tasks q JOIN fin ON q.kind = fin.kind AND q.target = fin.target
WHERE q.status = 'queued'
"""


async def finish(pool, task_id: int, status: TaskStatus, error: str | None, result) -> int | None:
    """Record the outcome; returns the id of a task of the same target waiting to be re-sent."""
    return await pool.fetchval(_FINISH_SQL, task_id, status.value, error, result)


async def finish_many(pool, outcomes: list[tuple[int, TaskStatus, str | None, object]]) -> list[int]:
    """finish() for (id, status, error, result) of a batch in one statement."""
    ids, statuses, errors, results = (list(c) for c in zip(*outcomes))
    return await pool.fetchval(_FINISH_MANY_SQL, ids, [s.value for s in statuses], errors, results)


# --- running → queued: the worker went away --------------------------------------------------------

_STALE_SQL = """
SELECT id FROM tasks WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
ORDER BY id LIMIT $2
"""


async def stale_running(db, stale_seconds: float, limit: int) -> list[int]:
    """Running tasks whose worker stopped beating (killed outright, or cut off from PostgreSQL)."""
    return [r["id"] for r in await db.fetch(_STALE_SQL, float(stale_seconds), limit)]


async def queued_before(pool, older_than_seconds: float, limit: int) -> list[asyncpg.Record]:
    """Queued tasks waiting longer than a delivery takes (their job may be lost): id, kind and job."""
    return await pool.fetch(
        "SELECT id, kind, enqueue_count, job_id FROM tasks WHERE status = 'queued' AND NOT stop_requested"
        " AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
        float(older_than_seconds), limit,
    )


async def hand_back(conn, task_id: int, why: str) -> bool:
    """Running → queued, for another worker to run (dispatch.hand_back then sends its job).

    If a task of the same target is already queued, this one ends in error instead: the queued task
    redoes the same resource from the database's state, so it carries on this one's work.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT t.kind, t.target, (SELECT q.id FROM tasks q WHERE q.kind = t.kind AND q.target = t.target"
            "                          AND q.status = 'queued') AS waiting"
            " FROM tasks t WHERE t.id = $1 AND t.status = 'running' FOR UPDATE",
            task_id,
        )
        if row is None:
            return False
        waiting = row["waiting"]
        if waiting is None:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE tasks SET status = 'queued', worker_id = NULL, progress = 0 WHERE id = $1", task_id)
                return True
            except asyncpg.UniqueViolationError:  # a request queued one meanwhile
                waiting = await conn.fetchval(
                    "SELECT id FROM tasks WHERE kind = $1 AND target = $2 AND status = 'queued'",
                    row["kind"], row["target"])
        await conn.execute(
            "UPDATE tasks SET status = 'error', finished_at = now(), error = $2 WHERE id = $1",
            task_id, f"worker {why}; task #{waiting} carries on its work",
        )
        return False


# --- operators: stop, enable, disable, delete ------------------------------------------------------

async def _locked(conn, task_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT id, kind, type, status, cron, enqueue_count, job_id FROM tasks WHERE id = $1 FOR UPDATE", task_id)
    if row is None:
        raise NotFound(f"Task #{task_id} does not exist.")
    return row


async def stop(pool, task_id: int) -> tuple[str, asyncpg.Record]:
    """Queued → stopped at once; running → asked to stop at its next check. Returns ('stopped' or
    'stopping', the row as it was)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, task_id)
        if row["status"] == "queued":
            # Claims are `WHERE status = 'queued'`: a job delivered anyway skips the task.
            await conn.execute(
                "UPDATE tasks SET status = 'stopped', stop_requested = true, finished_at = now() WHERE id = $1",
                task_id)
            return "stopped", row
        if row["status"] == "running":
            await conn.execute("UPDATE tasks SET stop_requested = true WHERE id = $1", task_id)
            return "stopping", row
        raise Conflict(f"Task #{task_id} is not running")


async def stop_queued(conn, kind: str, target: str, reason: str) -> None:
    """The queued task of (kind, target) has nothing left to do (e.g. its host was unregistered)."""
    await conn.execute(
        "UPDATE tasks SET status = 'stopped', finished_at = now(), error = $3"
        " WHERE kind = $1 AND target = $2 AND status = 'queued'",
        kind, target, reason,
    )


async def set_enabled(pool, task_id: int, enabled: bool, next_run) -> None:
    """A schedule is enabled (next run computed from now by next_run(cron): missed runs are not
    replayed) or disabled."""
    verb = "enabled" if enabled else "disabled"
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, task_id)
        if row["type"] != "scheduled":
            raise Conflict(f"Task #{task_id} is not a scheduled task and cannot be {verb[:-1]}")
        if enabled:
            await conn.execute("UPDATE tasks SET status = 'scheduled', next_run_at = $2 WHERE id = $1",
                               task_id, next_run(row["cron"]))
        else:
            await conn.execute("UPDATE tasks SET status = 'disabled' WHERE id = $1", task_id)


async def delete(pool, task_id: int) -> None:
    """Schedules and finished tasks may be deleted; a queued or running task must be stopped first."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, task_id)
        if row["status"] in ("queued", "running"):
            raise Conflict(f"Task #{task_id} is {row['status']}: stop it before deleting it")
        await conn.execute("DELETE FROM tasks WHERE id = $1", task_id)


async def prune_history(pool, days: int, batch: int = 5000) -> int:
    """Delete immediate tasks finished more than `days` ago, a batch per call (the scheduler step calls
    it often); schedules and queued or running tasks are never touched. Returns how many went."""
    if days <= 0:
        return 0
    return await pool.fetchval(
        "WITH gone AS (DELETE FROM tasks WHERE id IN ("
        "  SELECT id FROM tasks WHERE finished_at < now() - make_interval(days => $1) AND type = 'immediate'"
        "  ORDER BY finished_at LIMIT $2) RETURNING 1)"
        " SELECT count(*) FROM gone",
        days, batch,
    )


# --- schedules -------------------------------------------------------------------------------------

async def create_schedule(conn, kind: str, target: str, params: dict, cron: str, next_run_at: datetime,
                          requested_by: str | None, enabled: bool) -> int:
    return await conn.fetchval(
        "INSERT INTO tasks (kind, target, type, status, params, cron, next_run_at, requested_by)"
        " VALUES ($1, $2, 'scheduled', $3, $4, $5, $6, $7) RETURNING id",
        kind, target, "scheduled" if enabled else "disabled", params, cron, next_run_at, requested_by,
    )


async def due_schedules(pool, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, kind, target, params, cron, next_run_at FROM tasks"
        " WHERE type = 'scheduled' AND status = 'scheduled' AND next_run_at <= now()"
        " ORDER BY next_run_at LIMIT $1",
        limit,
    )


async def claim_run(conn, schedule_id: int, was: datetime, following: datetime) -> bool:
    """Advance a due schedule; exactly once across workers: only the step that still sees its old
    next_run_at wins."""
    return await conn.fetchval(
        "UPDATE tasks SET next_run_at = $2, last_run_at = now() WHERE id = $1 AND next_run_at = $3"
        " AND status = 'scheduled' RETURNING id",
        schedule_id, following, was,
    ) is not None


async def mark_run_of(conn, task_id: int, schedule_id: int) -> None:
    """The immediate task a schedule created (a task it joined keeps its first schedule)."""
    await conn.execute("UPDATE tasks SET schedule_id = $2 WHERE id = $1 AND schedule_id IS NULL",
                       task_id, schedule_id)
