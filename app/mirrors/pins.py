"""Pins: the files a mirror run sets out to download, kept from the pool GC (app/repos/gc.py) until that
mirror's next successful run. A failed, stopped or killed run leaves its finished downloads in the pool
with no snapshot referencing them; without a pin the GC could remove them before the retry, which would
then fetch them again. Pins are written before the downloads start (one statement), so a killed worker
leaves them too; the successful run's snapshot transaction deletes them; DEPOT_MIRROR_KEEP_FAILED_DAYS
bounds how long a mirror that keeps failing holds its files."""
from __future__ import annotations


async def pin(db, repo_id: int, sha256s: list[str]) -> None:
    """Pin these digests for the mirror `repo_id` (an earlier pin keeps its age: the limit counts from the
    first run that wanted the file)."""
    if sha256s:
        await db.execute("INSERT INTO mirror_pins (repo_id, sha256) SELECT $1, unnest($2::text[])"
                         " ON CONFLICT DO NOTHING", repo_id, sha256s)


async def unpin(conn, repo_id: int) -> None:
    """A successful run's snapshot references every file it wanted: the mirror's pins go (in its transaction)."""
    await conn.execute("DELETE FROM mirror_pins WHERE repo_id = $1", repo_id)
