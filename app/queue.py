"""Enqueue helpers: the task row first (PostgreSQL is the truth), then the arq job that carries its id.

A request made while a task of the same (kind, target) is queued joins that task (coalescing);
one made while it runs creates exactly one more queued task, run after it (see workers/jobs.py).
A task's job carries its id alone (`run_task`), or with others in a batch (`run_tasks`, JobBatcher).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import math
import secrets
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

JOB_FUNCTION = "run_task"
BATCH_FUNCTION = "run_tasks"  # one job, several task ids (see JobBatcher)
# The order in which any statement locks several task rows: by target as hosts/intake.py sorts the
# queued host_diff tasks its reports join ('host:9' before 'host:10'). In any other order, two such
# statements could deadlock.
TASK_LOCK_ORDER = "kind, length(target), target"


class TaskStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    error = "error"
    stopped = "stopped"
    scheduled = "scheduled"
    disabled = "disabled"


FINISHED = (TaskStatus.done.value, TaskStatus.error.value, TaskStatus.stopped.value)


@dataclass(frozen=True)
class TaskRef:
    id: int
    enqueue_count: int
    created: bool  # False when the request joined a task already queued


def job_id(task_id: int, enqueue_count: int) -> str:
    # A new id for each (re-)enqueue: arq refuses a job id it still holds, and a task re-queued
    # after its worker died must not wait for the old job's in-progress key to expire.
    return f"task-{task_id}-{enqueue_count}"


async def create_task(conn, kind: str, target: str, params: dict | None = None, *, requested_by: str | None = None) -> TaskRef:
    """Insert the queued task row, or join the one already queued for (kind, target).

    Call inside the caller's transaction; call dispatch() after it commits.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO tasks (kind, target, params, requested_by, enqueue_count)
        VALUES ($1, $2, $3, $4, 1)
        ON CONFLICT (kind, target) WHERE status = 'queued'
        DO UPDATE SET params = tasks.params || EXCLUDED.params
        RETURNING id, enqueue_count, (xmax = 0) AS created
        """,
        kind,
        target,
        params or {},
        requested_by,
    )
    return TaskRef(row["id"], row["enqueue_count"], row["created"])


async def dispatch(redis, ref: TaskRef) -> None:
    """Send the arq job for a new task. If Redis is away the row stays queued for the reconciler."""
    if not ref.created:
        return
    try:
        await redis.enqueue_job(JOB_FUNCTION, ref.id, _job_id=job_id(ref.id, ref.enqueue_count))
    except Exception as exc:  # the task row is the truth; the reconciler re-sends it
        log.warning("could not enqueue task %s (%s); the reconciler will retry", ref.id, type(exc).__name__)


async def send_batch(redis, task_ids: list[int], job: str) -> None:
    """Send one `run_tasks` job for these tasks. If Redis is away the rows stay queued for the reconciler."""
    try:
        await redis.enqueue_job(BATCH_FUNCTION, task_ids, _job_id=job)
    except Exception as exc:  # the task rows are the truth; the reconciler re-sends them
        log.warning("could not enqueue %d task(s) (%s); the reconciler will retry", len(task_ids), type(exc).__name__)


@dataclass
class Batch:
    """The tasks created by requests in one window of a JobBatcher; sent as one job."""

    job_id: str
    task_ids: list[int] = field(default_factory=list)
    users: int = 0  # requests between join() and leave(): the job waits for them
    closed: bool = False
    closed_at: float = 0.0
    held: bool = False  # in JobBatcher._held, waiting for a report storm to pass
    forced: bool = False  # flush(): sent without being held
    sent: bool = False
    timer: asyncio.TimerHandle | None = None

    def add(self, task_id: int) -> None:
        self.task_ids.append(task_id)


class ArrivalRate:
    """Events per second, averaged with an exponential decay over about `tau` seconds (no timers)."""

    def __init__(self, tau: float = 0.25):
        self.tau = tau
        self._rate = 0.0
        self._at = 0.0

    def add(self, now: float) -> None:
        self._rate = self.rate(now) + 1 / self.tau
        self._at = now

    def rate(self, now: float) -> float:
        return self._rate * math.exp(-(now - self._at) / self.tau)


class JobBatcher:
    """Sends the tasks that a server's requests create within `window` seconds as one arq job.

    The report endpoints create a host_diff task per host; one job per window (its ids in one
    list, claimed by the worker in one statement and applied in one transaction) instead of one
    job per host is most of what makes a fleet's hourly reports cheap to apply. A request joins
    the open batch *before* its transaction, so the task row can record the batch's job id
    (tasks.job_id, read by the reconciler), and adds its task after the commit; a batch is sent
    when its window has passed and no request is still inside. Sends are not awaited by requests
    (a 200 does not depend on Redis: the task row is committed, and the reconciler re-sends a job
    that never arrived). The window also lets a host's available and installed reports, sent a
    moment apart, join one task.

    A report storm (the fleet's agents at the top of the hour): while reports arrive at
    `hold_rate` per second or more, closed batches are held, up to `hold_seconds` each, and sent
    when the rate drops. The CPU and PostgreSQL then serve the agents' requests first and the diffs
    right after (measured in bench/fleet.py); a host reporting again meanwhile joins its queued task.
    Keep `hold_seconds` below the reconciler's age for re-sending a queued task (reconcile_seconds).
    """

    def __init__(self, redis, window: float, max_tasks: int = 500, hold_seconds: float = 0.0,
                 hold_rate: float = 200.0):
        self.redis = redis
        self.window = window
        self.max_tasks = max_tasks
        self.hold_seconds = hold_seconds
        self.hold_rate = hold_rate
        self.arrivals = ArrivalRate()
        self._prefix = f"batch-{secrets.token_hex(4)}"
        self._seq = 0
        self._open: Batch | None = None
        self._held: list[Batch] = []
        self._recheck: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()

    def join(self) -> Batch:
        loop = asyncio.get_running_loop()
        self.arrivals.add(loop.time())
        batch = self._open
        if batch is None or len(batch.task_ids) + batch.users >= self.max_tasks:
            self._seq += 1
            batch = self._open = Batch(f"{self._prefix}-{self._seq}")
            batch.timer = loop.call_later(self.window, self._close, batch)
        batch.users += 1
        return batch

    def leave(self, batch: Batch) -> None:
        batch.users -= 1
        if batch.closed and not batch.users:
            self._send(batch)

    def _close(self, batch: Batch) -> None:
        batch.closed = True
        batch.closed_at = asyncio.get_running_loop().time()
        if self._open is batch:
            self._open = None
        if not batch.users:
            self._send(batch)

    def _holds(self, batch: Batch, now: float) -> bool:
        return (not batch.forced and now - batch.closed_at < self.hold_seconds
                and self.arrivals.rate(now) >= self.hold_rate)

    def _send(self, batch: Batch) -> None:
        if batch.sent or not batch.task_ids:
            return
        loop = asyncio.get_running_loop()
        if self.hold_seconds > 0 and self._holds(batch, loop.time()):
            if not batch.held:
                batch.held = True
                self._held.append(batch)
            if self._recheck is None:
                self._recheck = loop.call_later(0.05, self._release)
            return
        batch.sent = True
        task = asyncio.create_task(send_batch(self.redis, batch.task_ids, batch.job_id))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _release(self) -> None:
        """Send the held batches that the storm (or their time limit) no longer holds."""
        self._recheck = None
        held, self._held = self._held, []
        for batch in held:
            batch.held = False
            self._send(batch)

    async def flush(self) -> None:
        """Send the open and the held batches now, and wait for every send (shutdown; tests before a burst worker)."""
        held, self._held = self._held, []
        if self._open is not None:
            self._open.forced = True
            self._open.timer.cancel()
            self._close(self._open)
        for batch in held:  # closed, no request inside (that is when a batch is held)
            batch.forced = True
            self._send(batch)
        while self._sending:
            await asyncio.wait(set(self._sending))


async def enqueue(pool, redis, kind: str, target: str, params: dict | None = None, *, requested_by: str | None = None) -> TaskRef:
    async with pool.acquire() as conn:
        ref = await create_task(conn, kind, target, params, requested_by=requested_by)
    await dispatch(redis, ref)
    return ref


async def redispatch(conn, redis, task_id: int) -> None:
    """Give a queued task a fresh arq job (after its worker died or its target became free)."""
    count = await conn.fetchval(
        "UPDATE tasks SET enqueue_count = enqueue_count + 1, job_id = NULL WHERE id = $1 AND status = 'queued'"
        " RETURNING enqueue_count",
        task_id,
    )
    if count is not None:
        await dispatch(redis, TaskRef(task_id, count, True))


async def redispatch_many(conn, redis, task_ids: list[int]) -> None:
    """redispatch() for several tasks at once: one batch job for those still queued."""
    if len(task_ids) == 1:
        return await redispatch(conn, redis, task_ids[0])
    job = f"tasks-{min(task_ids)}-{secrets.token_hex(4)}"
    queued = await conn.fetchval(
        "WITH c AS (SELECT id FROM tasks WHERE id = ANY($1::bigint[]) AND status = 'queued'"
        f"           ORDER BY {TASK_LOCK_ORDER} FOR UPDATE),"
        " r AS (UPDATE tasks t SET enqueue_count = t.enqueue_count + 1, job_id = $2 FROM c WHERE t.id = c.id"
        "       RETURNING t.id)"
        " SELECT array_agg(id ORDER BY id) FROM r",
        task_ids, job,
    )
    if queued:
        await send_batch(redis, queued, job)
