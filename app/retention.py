"""Snapshot retention: keep the newest N active snapshots of a repository, delete older unused ones.

Never deletes a snapshot an environment points at (checked again under the row lock by
app.repos.model.delete_snapshot), whatever its age. Run as the `retention` task kind, usually from
a schedule: `depot task schedule retention --cron '0 4 * * *' -p repo=3 -p keep=5`.
"""
from __future__ import annotations

import logging

from app.repos import RepoError, model

log = logging.getLogger(__name__)

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
