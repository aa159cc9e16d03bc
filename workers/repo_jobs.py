"""Task kinds of the repository domain (thin: app/repos/ does the work)."""
from __future__ import annotations

import asyncio

from app.repos.gc import collect, pool_gc_target
from app.repos.maintenance import copy_current_snapshot, prune_snapshots
from app.repos.rebuild import point_env, publish_public_key, rebuild_snapshot
from app.repos.signing import signer_from_settings
from app.repos.storage import Storage
from app.tasks.dispatch import enqueue
from app.tasks.kinds import Kind
from workers.runner import TaskContext, handler


async def storage_and_signer(settings):
    storage = Storage(settings.storage_dir)
    signer = signer_from_settings(settings)
    # First use may generate the key (seconds for RSA 3072): off the event loop.
    await asyncio.get_running_loop().run_in_executor(None, publish_public_key, storage, signer, settings.server_name)
    return storage, signer


def _repo_id(ctx: TaskContext) -> int:
    return int(ctx.params.get("repo") or ctx.task["target"].split(":", 1)[1])


@handler(Kind.rebuild)
async def rebuild(ctx: TaskContext) -> dict:
    storage, signer = await storage_and_signer(ctx.settings)
    await ctx.check_stop()
    return await rebuild_snapshot(ctx.pool, storage, signer, int(ctx.params["snapshot"]),
                                  sign=bool(ctx.params.get("gpg_sign", True)), progress=ctx.progress)


@handler(Kind.env_point)
async def env_point(ctx: TaskContext) -> dict:
    storage, signer = await storage_and_signer(ctx.settings)
    return await point_env(ctx.pool, storage, signer, ctx.params["env"], int(ctx.params["snapshot"]),
                           progress=ctx.progress)


@handler(Kind.pool_gc)
async def pool_gc(ctx: TaskContext) -> dict:
    return await collect(ctx.pool, Storage(ctx.settings.storage_dir), grace_seconds=ctx.settings.pool_gc_grace_seconds,
                         keep_pinned_days=ctx.settings.mirror_keep_failed_days, dry_run=bool(ctx.params.get("dry_run", False)), progress=ctx.progress,
                         check_stop=ctx.check_stop)


@handler(Kind.snapshot_create)
async def snapshot_create(ctx: TaskContext) -> dict:
    return await copy_current_snapshot(ctx.pool, ctx.redis, _repo_id(ctx), requested_by=f"task:{ctx.id}")


@handler(Kind.retention)
async def retention(ctx: TaskContext) -> dict:
    result = await prune_snapshots(ctx.pool, Storage(ctx.settings.storage_dir), _repo_id(ctx),
                                   int(ctx.params["keep"]), progress=ctx.progress, check_stop=ctx.check_stop)
    if result["deleted"]:
        # The deleted snapshots' package files may now be unused: collect them (joins a queued collection).
        ref = await enqueue(ctx.pool, ctx.redis, Kind.pool_gc.value, pool_gc_target(False), {"dry_run": False},
                            requested_by=f"task:{ctx.id}")
        result["pool_gc_task"] = ref.id
    return result
