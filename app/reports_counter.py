"""Host reports received per minute and per hour, fleet-wide (every server replica adds to the same keys).

The hot path pays one dict increment: record(app, kind) counts in memory (and in the process's
Prometheus counter); a background flusher (flush_ctx, every FLUSH_SECONDS) sends the counts gathered
since the last flush in one pipeline of HINCRBY + EXPIRE on `<queue>:reports:m:<YYYYmmddHHMM>` and
`<queue>:reports:h:<YYYYmmddHH>` (a hash per bucket, one field per kind). With Redis away the counts stay
buffered (bounded by MAX_AGE) and go out with the next flush that succeeds; a crash loses at most the
last FLUSH_SECONDS. series() reads those keys for the dashboard chart.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime, timedelta, timezone

from aiohttp import web

from app.keys import REDIS
from app.metrics import REPORTS_RECEIVED

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
MINUTE_TTL = 25 * 3600
HOUR_TTL = 26 * 3600
MAX_AGE = timedelta(hours=24)  # counts buffered longer than this (Redis away a whole day) are dropped
KINDS = ("status", "installed", "available", "event")


class ReportsCounter:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.pending: Counter = Counter()  # (minute start, kind) -> n

    def record(self, kind: str, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        self.pending[(now.replace(second=0, microsecond=0), kind)] += 1

    def minute_key(self, t: datetime) -> str:
        return f"{self.prefix}:reports:m:{t.astimezone(timezone.utc):%Y%m%d%H%M}"

    def hour_key(self, t: datetime) -> str:
        return f"{self.prefix}:reports:h:{t.astimezone(timezone.utc):%Y%m%d%H}"

    async def flush(self, redis) -> int:
        """Send the buffered counts in one pipeline; on failure they are put back. Returns reports sent."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, Counter()
        oldest = datetime.now(timezone.utc) - MAX_AGE
        batch = Counter({k: n for k, n in batch.items() if k[0] >= oldest})
        try:
            pipe = redis.pipeline(transaction=True)  # MULTI/EXEC: all of the batch or none of it
            for (minute, kind), n in batch.items():
                for key, ttl in ((self.minute_key(minute), MINUTE_TTL), (self.hour_key(minute), HOUR_TTL)):
                    pipe.hincrby(key, kind, n)
                    pipe.expire(key, ttl)
            await pipe.execute()
        except Exception:
            self.pending.update(batch)  # nothing was applied: the whole batch goes out with the next flush
            raise
        return sum(batch.values())

    async def series(self, redis, bucket: str, times: list[datetime]) -> dict[datetime, int]:
        """Reports received in each bucket ("minute" or "hour") starting at the given times, kinds summed."""
        key = self.minute_key if bucket == "minute" else self.hour_key
        pipe = redis.pipeline(transaction=False)
        for t in times:
            pipe.hgetall(key(t))
        rows = await pipe.execute()
        return {t: sum(int(v) for v in (row or {}).values()) for t, row in zip(times, rows)}


COUNTER = web.AppKey("reports_counter", ReportsCounter)


def record(app: web.Application, kind: str) -> None:
    """One accepted host report of this kind (status, installed, available, event): no I/O, no await."""
    REPORTS_RECEIVED.labels(kind).inc()
    counter = app.get(COUNTER)
    if counter is not None:
        counter.record(kind)


def setup(app: web.Application, prefix: str) -> None:
    app[COUNTER] = ReportsCounter(prefix)
    app.cleanup_ctx.append(flush_ctx)


async def flush_ctx(app: web.Application):
    counter = app[COUNTER]

    async def loop():
        failing = False
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await counter.flush(app[REDIS])
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("reports counter: Redis unavailable (%s); counts kept for the next flush",
                                type(exc).__name__)
                failing = True

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    try:
        await asyncio.wait_for(counter.flush(app[REDIS]), 2)
    except Exception as exc:
        log.warning("reports counter: last flush failed (%s)", type(exc).__name__)
