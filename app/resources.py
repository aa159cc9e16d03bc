"""The domain's application keys (INTAKE, BATCHER) and the resources opened in `app.cleanup_ctx` (pool, Redis)."""
from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from arq import create_pool
from arq.connections import RedisSettings
from redis import exceptions as redis_exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from app import db
from app.auth import HOST_CACHE
from app.hosts.intake import Intake
from app.hosts.known import KnownVersions
from app.tasks.batcher import JobBatcher
from app.keys import POOL, REDIS, SETTINGS
from app.settings import Settings

# The report endpoints' one domain object: checks reports and stores those of concurrent requests in one
# statement (group commit). Built once both the pool and Redis (for its batcher) are open.
INTAKE = web.AppKey("intake", Intake)
# Tasks created by the report endpoints, sent to the workers in batches (flushed before Redis closes).
BATCHER = web.AppKey("batcher", JobBatcher)


def redis_settings(settings: Settings, *, ride_out_outages: bool = False) -> RedisSettings:
    rs = RedisSettings.from_dsn(settings.redis_url)
    # Fail fast instead of hanging a request when Redis is away; the task row is kept anyway.
    rs.conn_timeout = 2
    rs.conn_retries = 1
    if ride_out_outages:
        # Workers: without this, arq's poll loop dies on the first ConnectionError of a Redis restart.
        # Reconnect with backoff for about a minute; the reconciler then re-sends what Redis lost.
        # OSError too: a refused connect reaches Retry as ConnectionRefusedError, not as a redis error.
        rs.retry = Retry(ExponentialBackoff(cap=2, base=0.1), retries=30, supported_errors=(
            redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError))
        rs.retry_on_error = [redis_exceptions.ConnectionError, redis_exceptions.TimeoutError]
    return rs


async def database_ctx(app: web.Application):
    app[POOL] = await db.create_pool(app[SETTINGS])
    yield
    await app[POOL].close()


async def redis_ctx(app: web.Application):
    app[REDIS] = await create_pool(redis_settings(app[SETTINGS]), default_queue_name=app[SETTINGS].queue_name)
    settings = app[SETTINGS]
    # A hold shorter than the reconciler's age for re-sending a queued task, or it would send them itself.
    hold = min(settings.diff_hold_seconds, max(settings.reconcile_seconds - 1, 0))
    app[BATCHER] = JobBatcher(app[REDIS], settings.diff_batch_seconds, hold_seconds=hold,
                              hold_rate=settings.diff_hold_rate)
    # After database_ctx (the pool is open): the intake's tasks go out through the batcher.
    known = KnownVersions(settings.intake_dictionary_entries)
    app[INTAKE] = Intake(app[POOL], app[BATCHER], app[HOST_CACHE], max_items=settings.max_list_items,
                         max_group=settings.intake_max_group, max_inflight=settings.intake_max_inflight,
                         seen_entries=settings.intake_seen_digests, known=known)
    following = (asyncio.get_running_loop().create_task(known.follow(app[POOL], settings.intake_dictionary_seconds))
                 if settings.intake_dictionary_entries > 0 else None)
    yield
    if following is not None:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    try:
        await asyncio.wait_for(app[BATCHER].flush(), timeout=5)
    except asyncio.TimeoutError:
        pass  # the task rows are committed: the reconciler sends their jobs
    await app[REDIS].aclose()
