"""Task kinds of the repository domain: `rebuild`, `env_point`, `pool_gc` (thin: the domain does the work)."""
from __future__ import annotations

import asyncio

from app.repos.gc import collect
from app.repos.rebuild import point_env, publish_public_key, rebuild_snapshot
from app.repos.signing import signer_from_settings
from app.repos.storage import Storage
from workers.jobs import TaskContext, handler


async def _tools(settings):
    storage = Storage(settings.storage_dir)
    signer = signer_from_settings(settings)
    # First use may generate the key (seconds for RSA 3072): off the event loop.
    await asyncio.get_running_loop().run_in_executor(None, publish_public_key, storage, signer, settings.server_name)
    return storage, signer


@handler("rebuild")
async def rebuild(ctx: TaskContext) -> dict:
    storage, signer = await _tools(ctx.settings)
    await ctx.check_stop()
    return await rebuild_snapshot(ctx.pool, storage, signer, int(ctx.params["snapshot"]),
                                  sign=bool(ctx.params.get("gpg_sign", True)), progress=ctx.progress)


@handler("env_point")
async def env_point(ctx: TaskContext) -> dict:
    storage, signer = await _tools(ctx.settings)
    return await point_env(ctx.pool, storage, signer, ctx.params["env"], int(ctx.params["snapshot"]),
                           progress=ctx.progress)


@handler("pool_gc")
async def pool_gc(ctx: TaskContext) -> dict:
    return await collect(ctx.pool, Storage(ctx.settings.storage_dir), grace_seconds=ctx.settings.pool_gc_grace_seconds,
                         dry_run=bool(ctx.params.get("dry_run", False)), progress=ctx.progress,
                         check_stop=ctx.check_stop)
