"""Scheduled maintenance task kinds: `snapshot_create` and `retention` (thin: app.maintenance does the work)."""
from __future__ import annotations

from app import queue
from app.maintenance import copy_current_snapshot, prune_snapshots
from app.repos.storage import Storage
from app.schedules import pool_gc_target
from workers.jobs import TaskContext, handler


def _repo_id(ctx: TaskContext) -> int:
    return int(ctx.params.get("repo") or ctx.task["target"].split(":", 1)[1])


@handler("snapshot_create")
async def snapshot_create(ctx: TaskContext) -> dict:
    return await copy_current_snapshot(ctx.pool, ctx.redis, _repo_id(ctx), requested_by=f"task:{ctx.id}")


@handler("retention")
async def retention(ctx: TaskContext) -> dict:
    result = await prune_snapshots(ctx.pool, Storage(ctx.settings.storage_dir), _repo_id(ctx),
                                   int(ctx.params["keep"]), progress=ctx.progress, check_stop=ctx.check_stop)
    if result["deleted"]:
        # The deleted snapshots' package files may now be unused: collect them (joins a queued collection).
        ref = await queue.enqueue(ctx.pool, ctx.redis, "pool_gc", pool_gc_target(False), {"dry_run": False},
                                  requested_by=f"task:{ctx.id}")
        result["pool_gc_task"] = ref.id
    return result
