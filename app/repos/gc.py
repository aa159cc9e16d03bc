"""Garbage collection of the package pool (task kind `pool_gc`).

A file is stored once in pool/ by SHA-256 and never removed by the operations that stop using it
(snapshot deletion, DELETE /snapshot/<id>/packages, overwrite, retention, repository deletion).
This removes the package_files rows no snapshot references any more, with their pool files and
signed copies, and pool files that have no row at all.

Why it is safe while uploads, snapshot copies and rebuilds run:
- A row is referenced when a snapshot_packages row points at it, or when it is the signed copy
  (signed_id) of a referenced row. Rows are deleted in batches, each batch locked FOR UPDATE
  SKIP LOCKED and the "unreferenced" test repeated by the DELETE (a new statement, so it sees
  everything committed before the lock). Whatever would make a row referenced conflicts with that
  lock: an upload's INSERT ... ON CONFLICT DO UPDATE of the row, the FOREIGN KEY checks of
  snapshot_packages.package_id and package_files.signed_id (KEY SHARE). So a new reference either
  committed before the DELETE looked, or waits for the batch to commit and then finds no row (an
  upload then inserts a new row and stores its own file; a snapshot copy from a snapshot deleted
  at that instant fails whole).
- A batch's files are renamed into pool/.gc/ before its commit and unlinked after it. An upload
  puts its file in the pool after writing its row (upload.add_file), and storage.adopt only keeps
  an existing pool file, refreshing its mtime, if the file is really there; so nothing committed
  after us ever relies on a file we are removing. If the commit fails the files are moved back; if
  the worker dies in between, the next run moves back those whose row still exists.
- Pool files with no row (an upload or a signing that stopped between storing its file and
  committing its row) are removed only if older than the grace period, by mtime, which adopt()
  sets when a file enters (or is reused from) the pool: a row is committed milliseconds after.
  The file is renamed aside first and its mtime read again, so a reuse racing with us wins.
- A file a mirror run wanted (app/mirrors/pins.py) is not collected until that mirror's next
  successful run, or until its pin is older than DEPOT_MIRROR_KEEP_FAILED_DAYS (then the pin goes
  too): a failed run's downloads wait for the retry. A pin is written before its file's row exists.
- A rebuild reads rows, then links their pool files: it holds POOL_LOCK shared from its first
  read to its end (rebuild.py); each deleting batch takes it exclusively, so a file a running
  rebuild has chosen is never removed under it (the rebuild's own tree keeps hard links anyway).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from app.db import session_unlock

from app.settings import Settings

from .storage import Storage

log = logging.getLogger(__name__)

POOL_GC_TARGET = "pool"


def pool_gc_target(dry_run: bool) -> str:
    """One collection at a time; a dry run (read-only) has its own target, so it never joins, and
    turns into a count only, a real collection queued before it."""
    return f"{POOL_GC_TARGET}:dry-run" if dry_run else POOL_GC_TARGET

POOL_LOCK = (7_405_004, 0)      # advisory lock: rebuilds shared, pool GC batches exclusive
BATCH = 500

_CANDIDATES = """
SELECT p.id FROM package_files p
WHERE NOT EXISTS (SELECT 1 FROM snapshot_packages sp WHERE sp.package_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM package_files o JOIN snapshot_packages sp ON sp.package_id = o.id
                  WHERE o.signed_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM mirror_pins mp WHERE mp.sha256 = p.sha256
                  AND mp.pinned_at > now() - make_interval(secs => $2))
ORDER BY p.id LIMIT $1
FOR UPDATE OF p SKIP LOCKED
"""

# The same test again, now that the rows are locked; a signed copy still named by a row that is not
# deleted with it (locked by someone else, or referenced) stays, so the signed_id key never breaks.
_DELETE = """
WITH doomed AS (
    SELECT p.id FROM package_files p
    WHERE p.id = ANY($1::bigint[])
      AND NOT EXISTS (SELECT 1 FROM snapshot_packages sp WHERE sp.package_id = p.id)
      AND NOT EXISTS (SELECT 1 FROM package_files o JOIN snapshot_packages sp ON sp.package_id = o.id
                      WHERE o.signed_id = p.id)
      AND NOT EXISTS (SELECT 1 FROM mirror_pins mp WHERE mp.sha256 = p.sha256
                      AND mp.pinned_at > now() - make_interval(secs => $2))
)
DELETE FROM package_files p USING doomed d
WHERE p.id = d.id
  AND NOT EXISTS (SELECT 1 FROM package_files o WHERE o.signed_id = p.id AND o.id <> ALL($1::bigint[]))
RETURNING p.sha256
"""


async def _pool_lock(conn, wait_seconds: float) -> bool:
    """POOL_LOCK exclusively (session level), retrying: waiting in the lock queue would make
    every new rebuild queue behind us, behind the running ones."""
    deadline = time.monotonic() + wait_seconds
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *POOL_LOCK):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)
    return True


def _graveyard(storage: Storage):
    g = storage.pool / ".gc"
    g.mkdir(exist_ok=True)
    return g


def recover(storage: Storage, live: set[str]) -> int:
    """Files a previous run moved aside but could not finish with: back into the pool if their
    row exists (that run's transaction did not commit), else removed. Returns how many came back."""
    back = 0
    for entry in os.scandir(_graveyard(storage)):
        if entry.name in live:
            os.replace(entry.path, storage.pool_path(entry.name))
            back += 1
        else:
            os.unlink(entry.path)
    return back


async def collect(pool, storage: Storage, *, grace_seconds: float, dry_run: bool = False,
                  keep_pinned_days: float = Settings.mirror_keep_failed_days,
                  lock_wait_seconds: float = 600, progress=None, check_stop=None) -> dict:
    graveyard = _graveyard(storage)
    keep = keep_pinned_days * 86400.0
    pins_expired = 0
    if not dry_run:
        pins_expired = int((await pool.execute(
            "DELETE FROM mirror_pins WHERE pinned_at <= now() - make_interval(secs => $1)", keep)).split()[-1])
    stale = [e.name for e in os.scandir(graveyard)] if not dry_run else []   # a dry run changes nothing
    restored = 0
    if stale:
        live = {r["sha256"] for r in await pool.fetch(
            "SELECT sha256 FROM package_files WHERE sha256 = ANY($1::text[])", stale)}
        restored = recover(storage, live)

    rows_deleted, files_removed, bytes_freed, busy = 0, 0, 0, False
    would = await pool.fetch(_CANDIDATES.replace("FOR UPDATE OF p SKIP LOCKED", ""), 1_000_000, keep) if dry_run else []
    while not dry_run:
        if check_stop:
            await check_stop()      # between batches: each batch is whole
        async with pool.acquire() as conn:
            if not await _pool_lock(conn, lock_wait_seconds):
                busy = True         # rebuilds kept running all along: the next run does it
                break
            moved: list[tuple[str, str]] = []
            try:
                async with conn.transaction():
                    ids = [r["id"] for r in await conn.fetch(_CANDIDATES, BATCH, keep)]
                    digests = [r["sha256"] for r in await conn.fetch(_DELETE, ids, keep)] if ids else []
                    for sha in digests:
                        src, dst = storage.pool_path(sha), graveyard / sha
                        try:
                            os.replace(src, dst)
                            moved.append((str(src), str(dst)))
                        except FileNotFoundError:
                            pass            # a row without its file: the row goes anyway
            except BaseException:
                for src, dst in moved:      # not committed: the rows are back, so are their files
                    os.replace(dst, src)
                raise
            finally:
                await session_unlock(conn, *POOL_LOCK)
        for _, dst in moved:
            bytes_freed += os.stat(dst).st_size
            os.unlink(dst)
        rows_deleted += len(digests)
        files_removed += len(moved)
        if progress and digests:
            await progress(50, f"removed {rows_deleted} unreferenced package files")
        if len(ids) < BATCH or not digests:
            break

    orphans = await _orphan_files(pool, storage, grace_seconds, dry_run)
    result = {"rows_deleted": rows_deleted, "files_removed": files_removed + orphans["removed"],
              "bytes_freed": bytes_freed + orphans["bytes"], "orphans_removed": orphans["removed"],
              "orphans_too_recent": orphans["recent"], "restored": restored, "dry_run": dry_run,
              "busy": busy, "pins_expired": pins_expired}
    if dry_run:
        result["would_delete_rows"] = len(would)
        result["would_remove_orphans"] = orphans["candidates"]
    if result["files_removed"] or restored:
        log.info("pool gc: %s", result)
    return result


async def _orphan_files(pool, storage: Storage, grace_seconds: float, dry_run: bool) -> dict:
    """Pool files no row names, older than the grace period."""
    out = {"removed": 0, "bytes": 0, "recent": 0, "candidates": 0}
    graveyard = _graveyard(storage)
    limit = time.time() - grace_seconds
    for sub in os.scandir(storage.pool):
        if not sub.is_dir() or len(sub.name) != 2:
            continue
        names = [e.name for e in os.scandir(sub.path) if len(e.name) == 64]
        if not names:
            continue
        known = {r["sha256"] for r in await pool.fetch(
            "SELECT sha256 FROM package_files WHERE sha256 = ANY($1::text[])", names)}
        for name in names:
            if name in known:
                continue
            path = os.path.join(sub.path, name)
            try:
                if os.stat(path).st_mtime > limit:
                    out["recent"] += 1
                    continue
                out["candidates"] += 1
                if dry_run:
                    continue
                aside = graveyard / name
                os.replace(path, aside)
                st = os.stat(aside)
                if st.st_mtime > limit:       # reused by an upload just now: put it back
                    os.replace(aside, path)
                    out["recent"] += 1
                    continue
                os.unlink(aside)
            except FileNotFoundError:
                continue
            out["removed"] += 1
            out["bytes"] += st.st_size
    return out
