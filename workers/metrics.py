"""Prometheus metrics of one worker process, served on its own private port.

Off unless DEPOT_WORKER_METRICS_PORT is set; then each worker process listens on DEPOT_METRICS_HOST
(127.0.0.1 by default) at that port (`depot run --workers N` gives its workers PORT, PORT+1, …), with the
same Bearer key as the server's /metrics when DEPOT_METRICS_KEY is set. Every process counts only its own
jobs, so Prometheus scrapes each worker as its own target and sums across them (`sum by (kind)`).
The fleet-wide view from the tasks table stays on the server's /metrics (depot_tasks_finished, …).
"""
from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from app.metrics import authorised
from app.tasks.kinds import KINDS

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # CPU, RSS, open files of this worker process

JOBS_STARTED = Counter(
    "depot_worker_jobs_started", "Tasks this worker claimed and started, by kind", ["kind"],
    registry=REGISTRY)
JOBS_FINISHED = Counter(
    "depot_worker_jobs_finished",
    "Tasks this worker finished, by kind and outcome: done, error (failed), stopped (by an operator),"
    " cancelled (handed back when the worker was stopped)",
    ["kind", "outcome"], registry=REGISTRY)
JOB_SECONDS = Histogram(
    "depot_worker_job_duration_seconds", "Run time of this worker's tasks, by kind and outcome",
    ["kind", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600), registry=REGISTRY)
IN_PROGRESS = Gauge(
    "depot_worker_jobs_in_progress", "Tasks running in this worker now, by kind", ["kind"], registry=REGISTRY)
DELIVERIES_SKIPPED = Counter(
    "depot_worker_deliveries_skipped",
    "Job deliveries that ran nothing: busy (another task of the same target runs; it re-sends this one),"
    " skipped (already run, stopped, or a duplicate), drained (left to the batch this process is running)", ["reason"], registry=REGISTRY)
# Every kind's series exist from the start at 0, so rates and alerts see a kind before its first task.
for _kind in KINDS:
    JOBS_STARTED.labels(_kind)
    IN_PROGRESS.labels(_kind)
INFO = Gauge("depot_worker_info", "This worker process (value 1)", ["worker_id", "queue"], registry=REGISTRY)


def metrics_app(settings) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        if not authorised(request, settings.metrics_key):
            body = {"rc": 401, "message_error": ["Authentication error: a valid metrics key is required"]}
            return web.json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler, name="worker_metrics")
    return app


async def start(ctx: dict) -> None:
    """From the worker's on_startup: serve /metrics when DEPOT_WORKER_METRICS_PORT is set."""
    settings = ctx["settings"]
    INFO.labels(ctx["worker_id"], settings.queue_name).set(1)
    if not settings.worker_metrics_port:
        return
    runner = web.AppRunner(metrics_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.worker_metrics_port)
    try:
        await site.start()
    except OSError as exc:  # port taken: the worker still works, the operator sees why there is no endpoint
        log.error("worker metrics: cannot listen on %s:%s (%s)", settings.metrics_host,
                  settings.worker_metrics_port, exc)
        await runner.cleanup()
        return
    ctx["metrics_runner"] = runner
    log.info("worker metrics served on http://%s:%s/metrics", settings.metrics_host,
             settings.worker_metrics_port)


async def stop(ctx: dict) -> None:
    runner = ctx.pop("metrics_runner", None)
    if runner is not None:
        await runner.cleanup()
