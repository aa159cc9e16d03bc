"""Scheduled repository maintenance: snapshot copies and retention (task kinds snapshot_create, retention).

- copy_current_snapshot: a new snapshot holding the packages of the repository's newest active one,
  then a rebuild of it queued (`depot task schedule snapshot_create --cron '0 2 * * 1' -p repo=3`).
- prune_snapshots: keep the newest N active snapshots of a repository, delete older unused ones; never
  one an environment points at (checked again under the row lock by model.delete_snapshot),
  whatever its age (`depot task schedule retention --cron '0 4 * * *' -p repo=3 -p keep=5`).
"""
from __future__ import annotations

import logging

from app.repos import RepoError, model
from app.tasks.dispatch import create_task, dispatch

log = logging.getLogger(__name__)

async def copy_current_snapshot(pool, redis, repo_id: int, *, requested_by: str | None = None) -> dict:
    """Copy the newest active snapshot (an empty one if there is none) and queue its rebuild."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await model.get_repo(conn, repo_id)
            current = await conn.fetchval(
                "SELECT id FROM snapshots WHERE repo_id = $1 AND status = 'active' ORDER BY created_at DESC, id DESC"
                " LIMIT 1", repo_id)
            snap = await model.create_snapshot(conn, repo_id, current)
            ref = await create_task(conn, "rebuild", f"snapshot:{snap.id}", {"snapshot": snap.id},
                                          requested_by=requested_by)
    await dispatch(redis, ref)
    log.info("repository %s: snapshot #%s copied from #%s", repo_id, snap.id, current)
    return {"repo": repo_id, "snapshot": snap.id, "copied_from": current, "rebuild_task": ref.id}


# Active snapshots beyond the newest `keep`, oldest first, that no environment points at.
CANDIDATES = """
SELECT id FROM (
    SELECT s.id, s.created_at, row_number() OVER (ORDER BY s.created_at DESC, s.id DESC) AS rank
    FROM snapshots s WHERE s.repo_id = $1 AND s.status = 'active'
) ranked
WHERE rank > $2 AND NOT EXISTS (SELECT 1 FROM environment_snapshots e WHERE e.snapshot_id = ranked.id)
ORDER BY created_at, id
"""


async def prune_snapshots(pool, storage, repo_id: int, keep: int, *, progress=None, check_stop=None) -> dict:
    if keep < 1:
        raise ValueError("keep must be at least 1")
    async with pool.acquire() as conn:
        await model.get_repo(conn, repo_id)  # NotFound for an unknown repository
        candidates = [r["id"] for r in await conn.fetch(CANDIDATES, repo_id, keep)]
    deleted, kept = [], []
    for n, snap_id in enumerate(candidates, 1):
        if check_stop:
            await check_stop()  # between snapshots: each deletion is whole
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    snap, repo = await model.delete_snapshot(conn, snap_id)
            except RepoError as exc:  # pointed at meanwhile, or already gone
                kept.append({"id": snap_id, "reason": exc.message})
                continue
        storage.unpublish(snap.public_rel(repo))
        deleted.append(snap_id)
        if progress:
            await progress(100 * n // len(candidates), f"deleted snapshot #{snap_id}")
    if deleted:
        log.info("retention of repository %s: deleted snapshots %s", repo_id, deleted)
    return {"repo": repo_id, "keep": keep, "deleted": deleted, "skipped": kept}
