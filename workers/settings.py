"""arq worker settings: the job functions, the reconciler and scheduler crons, start-up and shutdown; the Worker class."""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import socket

from arq import cron
from arq import worker as arq_worker

from app import db
from app.agents import requests as agent_requests
from app.resources import redis_settings
from app.settings import Settings
from app.tasks import rows, schedules
from app.tasks.kinds import KINDS
from workers import metrics, reconciler, runner
# Importing a *_jobs module registers its task kinds in runner.HANDLERS.
from workers import host_jobs, mirror_jobs, repo_jobs  # noqa: F401

log = logging.getLogger(__name__)


class Worker(arq_worker.Worker):
    """arq's Worker, whose close() finishes the shutdown whatever the jobs it cancels were doing.

    arq's close() cancels the running jobs (after SIGTERM, or itself without signal handling) and then
    awaits them without return_exceptions. A job cancelled while arq records its end in Redis (a cron
    run of the reconciler, every few seconds) re-raised that CancelledError out of close(): on_shutdown
    never ran and the workers row was left unstopped, shown as lost (and the worker's pool
    stayed open).
    """

    async def close(self) -> None:
        for task in self.tasks.values():
            # Not twice: after SIGTERM a task job is already cancelled and hands its task back (runner.py).
            if not task.done() and not task.cancelling():
                task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        await super().close()


async def startup(ctx: dict) -> None:
    settings: Settings = ctx.get("settings") or Settings.from_env()
    ctx["settings"] = settings
    # A connection for each running job, plus heartbeats and the reconciler.
    ctx["pool"] = await db.create_pool(settings, max_size=max(settings.db_pool_max, settings.worker_max_jobs + 4))
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    await ctx["pool"].execute(
        "INSERT INTO workers (worker_id, hostname, pid) VALUES ($1, $2, $3)",
        ctx["worker_id"],
        socket.gethostname(),
        os.getpid(),
    )
    ctx["beat"] = asyncio.create_task(_worker_heartbeat(ctx))
    ctx["batch_gate"] = runner.BatchGate()
    await metrics.start(ctx)
    await reconciler.reconcile(ctx["pool"], ctx["redis"], settings)
    log.info("worker %s started", ctx["worker_id"])


async def shutdown(ctx: dict) -> None:
    # Also after a startup that stopped part way (cancelled, or PostgreSQL away): undo what was done.
    if "beat" in ctx:
        ctx["beat"].cancel()
    await metrics.stop(ctx)
    if "pool" not in ctx:
        return
    try:
        if "worker_id" in ctx:
            await ctx["pool"].execute("UPDATE workers SET stopped_at = now() WHERE worker_id = $1", ctx["worker_id"])
    finally:
        await ctx["pool"].close()


async def _worker_heartbeat(ctx: dict) -> None:
    while True:
        await asyncio.sleep(ctx["settings"].task_heartbeat_seconds)
        try:
            await ctx["pool"].execute("UPDATE workers SET heartbeat_at = now() WHERE worker_id = $1", ctx["worker_id"])
        except Exception as exc:
            log.warning("worker heartbeat failed: %s", type(exc).__name__)


async def reconcile(ctx: dict) -> dict:
    return await reconciler.reconcile(ctx["pool"], ctx["redis"], ctx["settings"])


async def run_schedules(ctx: dict) -> list[int]:
    """Start the due scheduled tasks (exactly once each, whichever worker gets there first), then drop a
    batch of finished tasks older than task_history_days."""
    started = await schedules.run_due(ctx["pool"], ctx["redis"])
    await rows.prune_history(ctx["pool"], ctx["settings"].task_history_days)
    return started


async def expire_agent_requests(ctx: dict) -> dict:
    """Fail the requests to hosts whose time is up (app/agents/requests.py); any worker may, each once."""
    s = ctx["settings"]
    return await agent_requests.expire(ctx["pool"], s.agent_request_ttl, s.agent_sent_seconds, s.agent_running_seconds)


def load_test_handlers() -> None:
    """DEPOT_TEST_HANDLERS=pkg.mod[,...]: import modules that register extra task kinds.

    Only the fault tests set it (tests/faults/handlers.py), to run slow tasks inside a real worker process.
    """
    for name in filter(None, os.environ.get("DEPOT_TEST_HANDLERS", "").split(",")):
        importlib.import_module(name.strip())


def worker_settings(settings: Settings) -> dict:
    """Keyword arguments for arq.Worker, built from Depot's settings."""
    load_test_handlers()
    missing = set(KINDS) - set(runner.HANDLERS)
    assert not missing, f"task kinds without a handler: {sorted(missing)}"
    return dict(
        functions=[runner.run_task, runner.run_tasks],
        cron_jobs=[
            cron(reconcile, second=set(range(0, 60, max(1, settings.reconcile_seconds))), run_at_startup=False),
            # Cron expressions have minute resolution; checking every reconcile tick keeps runs on time.
            cron(run_schedules, second=set(range(0, 60, max(1, settings.reconcile_seconds))), run_at_startup=True),
            cron(expire_agent_requests, second=set(range(0, 60, max(1, settings.reconcile_seconds))),
                 run_at_startup=False),
        ],
        on_startup=startup,
        on_shutdown=shutdown,
        redis_settings=redis_settings(settings, ride_out_outages=True),
        queue_name=settings.queue_name,
        max_jobs=settings.worker_max_jobs,
        # arq sleeps poll_delay between reads of the queue (0.5 s by default), which caps a worker at
        # max_jobs jobs per poll: short jobs like host diffs need a short poll.
        poll_delay=0.05,
        job_timeout=3600,
        keep_result=0,
        max_tries=3,
        ctx={"settings": settings},
        handle_signals=True,
    )
