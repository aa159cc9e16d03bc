"""Batches: the tasks a server's requests create within a short window, sent as one arq job."""
from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import dataclass, field

from app.tasks.dispatch import send_batch


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

    def quiet_for(self, now: float) -> float:
        """Seconds since the last event."""
        return now - self._at


STORM_QUIET = 20  # JobBatcher: a storm is over when no report came for as long as this many take at hold_rate


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
    when the rate drops, or as soon as no report has come for as long as STORM_QUIET reports at
    `hold_rate` would take (the rate's average would take several times as long to fall after a storm
    that stops at once, leaving the worker idle meanwhile). The CPU and PostgreSQL then serve the
    agents' requests first and the diffs right after; a host reporting again meanwhile joins its
    queued task.
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
                and self.arrivals.rate(now) >= self.hold_rate
                and self.arrivals.quiet_for(now) < STORM_QUIET / self.hold_rate)

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
