"""Task kinds of the operators' domain: `retention` (thin: app.retention does the work)."""
from __future__ import annotations

from app.repos.storage import Storage
from app.retention import prune_snapshots
from workers.jobs import TaskContext, handler


@handler("retention")
async def retention(ctx: TaskContext) -> dict:
    params = ctx.params
    repo_id = int(params.get("repo") or ctx.task["target"].split(":", 1)[1])
    return await prune_snapshots(ctx.pool, Storage(ctx.settings.storage_dir), repo_id, int(params.get("keep", 5)),
                                 progress=ctx.progress, check_stop=ctx.check_stop)
