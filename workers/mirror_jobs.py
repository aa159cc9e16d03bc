"""The mirror task kind (thin: app/mirrors/ does the work)."""
from __future__ import annotations

from app.mirrors.run import mirror_repo
from app.tasks.kinds import Kind
from workers.repo_jobs import storage_and_signer
from workers.runner import TaskContext, handler


@handler(Kind.mirror)
async def mirror(ctx: TaskContext) -> dict:
    storage, signer = await storage_and_signer(ctx.settings)
    repo_id = int(ctx.params.get("repo") or ctx.task["target"].split(":", 1)[1])
    return await mirror_repo(ctx.pool, ctx.settings, storage, signer, repo_id, env=ctx.params.get("env"),
                             progress=ctx.progress, check_stop=ctx.check_stop)
