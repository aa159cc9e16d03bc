"""Prometheus metrics (prometheus-client).

In-process: HTTP requests by route name and status with latency histograms, host reports accepted
(counted by reports_counter.record in the report handlers). Read from PostgreSQL/Redis at scrape
time (cached a few seconds, one query each): queue depth, tasks by kind and status, task durations,
hosts by state — fleet-wide, from the tasks table. Each worker process exports its own (workers/metrics.py).

Server processes under `depot run` (PROMETHEUS_MULTIPROC_DIR set; several share one port): a scrape
reaches any one of them, so each answers for all, with prometheus-client's multiprocess mode (every
process writes its counters to files there; the scrape sums them, those of `depot run` itself too: its
restarts, app/cli/supervisor.py) and the finished-task counts read from one start (DEPOT_METRICS_SINCE)
by each, so every process gives the same totals.
"""
from __future__ import annotations

import hmac
import logging
import os
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from app.tasks import status as task_status
from app.tasks.kinds import KINDS
from app.openapi import docs

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "depot_http_requests", "HTTP requests handled, by route name, method and status", ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "depot_http_request_duration_seconds", "HTTP request latency by route name", ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
REPORTS_RECEIVED = Counter(
    "depot_host_reports_received", "Host reports accepted, by kind (status, installed, available, event)", ["kind"],
    registry=REGISTRY,
)
TASK_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600)
CACHE_SECONDS = 5.0

# Current state only (the status index serves it): finished tasks are counted incrementally below.
TASKS_SQL = """
SELECT kind, status, count(*) AS n FROM tasks
WHERE status IN ('queued', 'running') AND type = 'immediate' GROUP BY kind, status
"""
# Tasks finished since the last scrape (tasks_finished index): count, sum and buckets per kind and outcome,
# added to in-memory totals, so a scrape never scans the whole history of a busy tasks table.
# The window ends 2 s in the past so rows stamped just now but not yet committed are read next time.
FINISHED_SQL = """
WITH d AS (
    SELECT kind, status, extract(epoch FROM finished_at - started_at)::float8 AS s
    FROM tasks WHERE type = 'immediate' AND finished_at > $1 AND finished_at <= $2 AND started_at IS NOT NULL
)
SELECT kind, status, count(*) AS n, coalesce(sum(s), 0) AS total,
       array[""" + ", ".join(f"count(*) FILTER (WHERE s <= {b})" for b in TASK_BUCKETS) + """] AS buckets
FROM d GROUP BY kind, status
"""
# First scrape of a process: start from the last hour, so a fresh server shows recent work; or from
# the start that the processes sharing a port were given.
FIRST_WINDOW_SQL = "SELECT coalesce(to_timestamp($1), now() - interval '1 hour'), now() - interval '2 seconds'"
_SINCE = float(os.environ["DEPOT_METRICS_SINCE"]) if os.environ.get("DEPOT_METRICS_SINCE") else None
NEXT_WINDOW_SQL = "SELECT now() - interval '2 seconds'"


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method).observe(seconds)


class DatabaseCollector:
    """Serves the values last read by refresh() (the scrape handler awaits it; collect() cannot)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.values: dict = {}
        self.read_at = 0.0
        self.watermark = None
        # (kind, outcome) -> [count, sum, [cumulative bucket counts]]
        self.finished: dict[tuple[str, str], list] = {}

    async def _add_finished(self, pool) -> None:
        if self.watermark is None:
            start, end = await pool.fetchrow(FIRST_WINDOW_SQL, _SINCE)
        else:
            start, end = self.watermark, await pool.fetchval(NEXT_WINDOW_SQL)
        if end <= start:
            return
        for r in await pool.fetch(FINISHED_SQL, start, end):
            entry = self.finished.setdefault((r["kind"], r["status"]), [0, 0.0, [0] * len(TASK_BUCKETS)])
            entry[0] += r["n"]
            entry[1] += r["total"]
            entry[2] = [a + b for a, b in zip(entry[2], r["buckets"])]
        self.watermark = end

    async def refresh(self, pool, redis, settings) -> None:
        if time.monotonic() - self.read_at < CACHE_SECONDS and self.values:
            return
        values: dict = {"queue": settings.queue_name}
        try:
            values["depth"], values["oldest"] = await task_status.redis_depth(redis, settings.queue_name)
        except Exception as exc:
            log.warning("metrics: Redis unavailable (%s)", type(exc).__name__)
        values["tasks"] = await pool.fetch(TASKS_SQL)
        await self._add_finished(pool)
        values["hosts"] = await _hosts_by_state(pool, settings)
        values["workers"] = await task_status.list_workers(pool, settings.task_stale_seconds)
        self.values, self.read_at = values, time.monotonic()

    def describe(self):
        return []

    def collect(self):
        v = self.values
        if not v:
            return
        if "depth" in v:
            g = GaugeMetricFamily("depot_queue_depth", "Jobs waiting in the arq queue", labels=["queue"])
            g.add_metric([v["queue"]], v["depth"])
            yield g
            g = GaugeMetricFamily("depot_queue_oldest_job_age_seconds", "Age of the oldest waiting job", labels=["queue"])
            g.add_metric([v["queue"]], v["oldest"] or 0.0)
            yield g
        g = GaugeMetricFamily("depot_tasks", "Queued and running tasks by kind and status", labels=["kind", "status"])
        counts = {(kind, status): 0 for kind in KINDS for status in ("queued", "running")}  # every kind, 0 or more
        counts.update({(r["kind"], r["status"]): r["n"] for r in v["tasks"]})
        for (kind, status), n in counts.items():
            g.add_metric([kind, status], n)
        yield g
        c = CounterMetricFamily("depot_tasks_finished", "Tasks finished, by kind and outcome (done, error, stopped)",
                                labels=["kind", "outcome"])
        h = HistogramMetricFamily("depot_task_duration_seconds", "Run time of finished tasks by kind and outcome",
                                  labels=["kind", "outcome"])
        for (kind, outcome), (n, total, buckets) in sorted(self.finished.items()):
            c.add_metric([kind, outcome], n)
            h.add_metric([kind, outcome], [(floatToGoString(b), x) for b, x in zip(TASK_BUCKETS, buckets)] + [("+Inf", n)], total)
        yield c
        yield h
        g = GaugeMetricFamily("depot_hosts", "Hosts by state", labels=["state"])
        for state, n in v["hosts"].items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("depot_workers", "Workers by state", labels=["state"])
        states: dict[str, int] = {"alive": 0, "lost": 0}
        for w in v["workers"]:
            if w["state"] in states:
                states[w["state"]] += 1
        for state, n in states.items():
            g.add_metric([state], n)
        yield g


_HOST_COLUMNS: set[str] | None = None


async def _hosts_by_state(pool, settings) -> dict[str, int]:
    """One count query over hosts (grouped by agent status), using the columns the hosts schema has."""
    global _HOST_COLUMNS
    if not _HOST_COLUMNS:
        _HOST_COLUMNS = {r["column_name"] for r in await pool.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'hosts'")}
    cols = _HOST_COLUMNS
    if not cols:
        return {}
    filters = {
        "not_seen_1d": "last_seen_at IS NULL OR last_seen_at < now() - interval '1 day'" if "last_seen_at" in cols else None,
        "reboot_required": "reboot_required IS TRUE" if "reboot_required" in cols else None,
        "outdated": "available_count > 0" if "available_count" in cols else None,
    }
    parts = ["count(*) AS total"] + [f"count(*) FILTER (WHERE {cond}) AS {name}" for name, cond in filters.items() if cond]
    group = "agent_status" if "agent_status" in cols else "NULL::text"
    rows = await pool.fetch(f"SELECT {group} AS agent, {', '.join(parts)} FROM hosts GROUP BY 1")
    states: dict[str, int] = {"total": 0, **{name: 0 for name, cond in filters.items() if cond}}
    for row in rows:
        for key in states:
            states[key] += row[key]
        if row["agent"] is not None:
            states[f"agent_{row['agent']}"] = row["total"]
    return states


DB_COLLECTOR = DatabaseCollector()
REGISTRY.register(DB_COLLECTOR)
# What a scrape reads: this process's registry, or with several processes on the port, everyone's files.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
SCRAPED = REGISTRY
if MULTIPROCESS:
    SCRAPED = CollectorRegistry()
    MultiProcessCollector(SCRAPED)
    SCRAPED.register(DB_COLLECTOR)


def authorised(request: web.Request, key: str | None) -> bool:
    """A metrics scrape: open when no key is set, else `Authorization: Bearer <key>` (constant-time)."""
    if not key:
        return True
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), key.encode())


@docs(summary="Prometheus metrics (text format; a Bearer key when DEPOT_METRICS_KEY is set)", public=True,
      content_type="text/plain", responses={401: "Metrics key required"})
async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus metrics (text format). With DEPOT_METRICS_KEY set, needs `Authorization: Bearer <key>`."""
    from app.errors import ApiError
    from app.keys import POOL, REDIS, SETTINGS

    settings = request.app[SETTINGS]
    if not authorised(request, settings.metrics_key):
        return ApiError(401, "Authentication error: a valid metrics key is required",
                        headers={"WWW-Authenticate": "Bearer"}).response()
    pool = request.app.get(POOL) or request.app[METRICS_SOURCE][POOL]
    redis = request.app.get(REDIS) or request.app[METRICS_SOURCE][REDIS]
    await DB_COLLECTOR.refresh(pool, redis, settings)
    return web.Response(body=generate_latest(SCRAPED), headers={"Content-Type": CONTENT_TYPE_LATEST})


METRICS_SOURCE = web.AppKey("metrics_source", web.Application)


def private_metrics_ctx(app: web.Application):
    """With DEPOT_METRICS_PORT set: serve /metrics on that port (bound to the configured host) only."""
    from app.keys import SETTINGS

    async def ctx(app: web.Application):
        settings = app[SETTINGS]
        private = web.Application()
        private[SETTINGS] = settings
        private[METRICS_SOURCE] = app
        private.router.add_get("/metrics", metrics_handler, name="metrics")
        runner = web.AppRunner(private, access_log=None)
        await runner.setup()
        # Several server processes (each answers for all): they share this port as they share the API's.
        site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port, reuse_port=MULTIPROCESS or None)
        await site.start()
        log.info("metrics served on %s:%s", settings.metrics_host, settings.metrics_port)
        yield
        await runner.cleanup()

    return ctx
