"""Rebuild a snapshot's published tree from database rows, point environments, unpublish on deletion.

Rebuilds and points run in a worker (task kinds `rebuild` and `env_point`); request_rebuild and
request_point queue them. One rebuild per snapshot at a time: the task table allows one running task
per (kind, target), and a PostgreSQL advisory lock on the snapshot id also covers callers outside
the queue (CLI, bench).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timezone

import orjson

from app.db import session_lock
from app.domain_errors import NotFound
from app.gc_pause import gc_paused
from app.tasks.dispatch import create_task, dispatch
from app.tasks.kinds import Kind
from app.tasks.rows import TaskRef

from .gc import POOL_LOCK
from .metadata.deb import DEFAULT_ARCH
from .metadata.rpm import CarriedFile, RpmEntry
from .model import (
    Repo,
    Snapshot,
    delete_repo,
    delete_snapshot,
    get_environment,
    get_snapshot,
    point_environment,
    snapshot_with_repo,
)
from .packages import ParsedPackage
from .publish import publish_deb, publish_rpm, sign_rpms_into_pool
from .signing import Signer
from .storage import Storage
from .upload import store_signed

log = logging.getLogger(__name__)
LOCK_NAMESPACE = 7_405_003


def public_key_rel(server_name: str) -> str:
    return f"gpgkeys/{server_name}.pub"


def publish_public_key(storage: Storage, signer: Signer, server_name: str) -> None:
    path = storage.public / public_key_rel(server_name)
    key = signer.public_key().encode()
    if not path.exists() or path.read_bytes() != key:
        storage.write_public(public_key_rel(server_name), key)


async def _progress(progress, pct: int, text: str) -> None:
    if progress is not None:
        await progress(pct, text)


async def rebuild_snapshot(pool, storage: Storage, signer: Signer | None, snap_id: int, *, sign: bool,
                           progress=None) -> dict:
    """Render, sign and publish snapshot `snap_id`. Returns a small summary for the task result."""
    if sign and signer is None:
        raise ValueError("signing asked but no signer configured")
    with gc_paused():
        return await _rebuild_snapshot(pool, storage, signer, snap_id, sign=sign, progress=progress)


async def _rebuild_snapshot(pool, storage: Storage, signer: Signer | None, snap_id: int, *, sign: bool,
                            progress=None) -> dict:
    t0 = time.perf_counter()
    async with pool.acquire() as conn:
        # POOL_LOCK is shared with other rebuilds; the pool GC's batches take it exclusively (see
        # gc.py): no pool file this rebuild has read a row for disappears before it is linked.
        async with session_lock(conn, LOCK_NAMESPACE, snap_id), session_lock(conn, *POOL_LOCK, shared=True):
            snap, repo = await snapshot_with_repo(conn, snap_id)
            await conn.execute("UPDATE snapshots SET reconstruct = 'running' WHERE id = $1", snap.id)
            # The row and the rpm identities kept beside the build get the same time, from the database's clock.
            built_at = await conn.fetchval("SELECT clock_timestamp()")
            try:
                if repo.type == "deb":
                    count = await _rebuild_deb(conn, storage, signer if sign else None, snap, repo, progress)
                else:
                    count = await _rebuild_rpm(conn, storage, signer if sign else None, snap, repo, progress,
                                               built_at)
            except BaseException:
                await conn.execute("UPDATE snapshots SET reconstruct = 'failed' WHERE id = $1", snap.id)
                raise
            # An upload during the rebuild set 'needed' again: keep it so the next run happens.
            await conn.execute(
                "UPDATE snapshots SET reconstruct = CASE WHEN reconstruct = 'running' THEN NULL ELSE reconstruct END,"
                " signed = $2, built_at = $3 WHERE id = $1", snap.id, sign, built_at)
    return {"snapshot": snap_id, "packages": count, "signed": sign,
            "seconds": round(time.perf_counter() - t0, 3), "timings": _TIMINGS.pop(snap_id, {})}


_TIMINGS: dict[int, dict] = {}


class _phase:
    """Record how long a rebuild phase took (reported in the task result; the bench prints it)."""

    def __init__(self, snap_id: int, name: str):
        self.key, self.name = snap_id, name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        _TIMINGS.setdefault(self.key, {})[self.name] = round(time.perf_counter() - self.t, 4)


# Each architecture's Packages text, rendered by PostgreSQL from the stanzas stored at upload:
# one string per index instead of 5,000 rows through Python. Field order and sort order are those
# of metadata/deb.py (render_deb), which tests compare byte for byte; "C" collation = code points.
# A mirror's udebs (file names *.udeb) get indexes of their own, for the architectures they have.
_DEB_INDEXES = """
WITH e AS (
    SELECT p.arch, p.name, p.version, p.sha256, sp.filename LIKE '%.udeb' AS udeb,
           p.stanza || 'Filename: ' || $2::text || sp.filename || E'\\nSize: ' || p.size || E'\\nMD5sum: ' || p.md5
           || E'\\nSHA1: ' || p.sha1 || E'\\nSHA256: ' || p.sha256 || E'\\n\\n' AS text
    FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id WHERE sp.snapshot_id = $1
), a AS (
    SELECT DISTINCT arch, udeb FROM e WHERE arch <> 'all'
    UNION ALL SELECT $3::text, false WHERE NOT EXISTS (SELECT 1 FROM e WHERE arch <> 'all' AND NOT udeb)
    UNION ALL SELECT $3::text, true WHERE NOT EXISTS (SELECT 1 FROM e WHERE arch <> 'all' AND udeb)
                                      AND EXISTS (SELECT 1 FROM e WHERE udeb)
)
SELECT a.arch, a.udeb, coalesce(string_agg(e.text, '' ORDER BY e.name COLLATE "C", e.version COLLATE "C",
                                           e.arch COLLATE "C", e.sha256 COLLATE "C"), '') AS text
FROM a LEFT JOIN e ON (e.arch = a.arch OR e.arch = 'all') AND e.udeb = a.udeb GROUP BY a.arch, a.udeb
"""


async def _rebuild_deb(conn, storage, signer, snap: Snapshot, repo: Repo, progress) -> int:
    # Both reads (files, then the indexes) see one snapshot of the database: an upload committed
    # between them must not give a Packages entry whose file was not linked.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _rebuild_deb_read(conn, storage, signer, snap, repo, progress)


async def _rebuild_deb_read(conn, storage, signer, snap: Snapshot, repo: Repo, progress) -> int:
    # Only file names and digests first: linking the package files (the longest part of a first
    # build) starts at once, while PostgreSQL renders the indexes.
    with _phase(snap.id, "fetch"):
        rows = await conn.fetch(
            "SELECT sp.filename, p.sha256 FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
            " WHERE sp.snapshot_id = $1", snap.id)
    prefix = f"pool/{repo.section}/"
    files = {prefix + r["filename"]: r["sha256"] for r in rows}
    await _progress(progress, 30, f"rendering {len(files)} packages")
    loop = asyncio.get_running_loop()

    def load_indexes() -> tuple[dict[str, bytes], dict[str, bytes]]:
        # Called from the publishing thread: the query runs on the event loop.
        t = time.perf_counter()
        got = asyncio.run_coroutine_threadsafe(conn.fetch(_DEB_INDEXES, snap.id, prefix, DEFAULT_ARCH), loop).result()
        _TIMINGS.setdefault(snap.id, {})["render_sql"] = round(time.perf_counter() - t, 4)
        return ({r["arch"]: r["text"].encode("utf-8") for r in got if not r["udeb"]},
                {r["arch"]: r["text"].encode("utf-8") for r in got if r["udeb"]})

    with _phase(snap.id, "publish"):
        await loop.run_in_executor(None, lambda: publish_deb(
            storage, snap.public_rel(repo), snap.key, dist=repo.dist, component=repo.section, files=files,
            load_indexes=load_indexes, signer=signer, origin=f"{repo.name} {repo.dist} {repo.section} repository",
            timings=_TIMINGS.setdefault(snap.id, {})))
    return len(files)


async def _sign_missing(conn, storage, signer: Signer, snap: Snapshot, progress) -> None:
    """Sign, once, every package of the snapshot that has no copy signed with the current key."""
    todo = await conn.fetch(
        "SELECT p.id, p.sha256, p.sha1, p.md5, p.size, p.name, p.version, p.release, p.epoch, p.arch, p.filename,"
        " p.primary_xml, p.filelists_xml, p.other_xml FROM package_files p"
        " WHERE p.id IN (SELECT package_id FROM snapshot_packages WHERE snapshot_id = $1)"
        " AND (p.signed_id IS NULL OR p.signed_by IS DISTINCT FROM $2)",
        snap.id, signer.fingerprint)
    loop = asyncio.get_running_loop()
    batch = 500   # per round trip to the database
    for start in range(0, len(todo), batch):
        originals = [ParsedPackage(
            type="rpm", name=r["name"], version=r["version"], release=r["release"], epoch=r["epoch"], arch=r["arch"],
            filename=r["filename"], size=r["size"], md5=r["md5"], sha1=r["sha1"], sha256=r["sha256"],
            chunks={"primary": r["primary_xml"], "filelists": r["filelists_xml"], "other": r["other_xml"]})
            for r in todo[start:start + batch]]
        signed = await loop.run_in_executor(None, sign_rpms_into_pool, storage, signer, originals)
        async with conn.transaction():
            await store_signed(conn, list(zip(originals, signed)), signer.fingerprint)
        done = start + len(originals)
        await _progress(progress, 10 + int(20 * done / len(todo)), f"signed {done}/{len(todo)} packages")


_RPM_ROWS = (
    "SELECT sp.filename, p.id, p.name, p.arch, p.sha256 AS original,"
    " CASE WHEN p.signed_by = $2 THEN s.sha256 END AS signed"
    " FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
    " LEFT JOIN package_files s ON s.id = p.signed_id WHERE sp.snapshot_id = $1")
_RPM_IDENTITIES = (
    "SELECT p.id, p.name, p.arch, p.sha256 AS original, CASE WHEN p.signed_by = $2 THEN s.sha256 END AS signed"
    " FROM package_files p LEFT JOIN package_files s ON s.id = p.signed_id WHERE p.id = ANY($1::bigint[])")


async def _rpm_rows(conn, storage: Storage, snap: Snapshot, fpr: str) -> list[tuple]:
    """(filename, id, name, arch, original sha256, signed sha256 or None) of every package.

    A package_files row never changes once its signed copy is known (a new key gives new copies),
    so the previous build's identities, kept in the snapshot's cache folder, are reused: a rebuild
    after an upload reads the snapshot's (filename, id) pairs and only the rows it has not seen.
    They are the snapshot's last build's only if the row says that build ended (its `built_at`): a
    database recreated or restored under the same storage gives the same ids to other rows.
    """
    try:
        cached = orjson.loads((storage.cache_dir(snap.key) / "rows.json").read_bytes())
        valid = cached.get("fpr") == fpr and snap.built_at is not None and cached.get("built") == _stamp(snap.built_at)
        known = {r[0]: r for r in cached["rows"]} if valid else {}
    except (FileNotFoundError, ValueError, KeyError, TypeError, IndexError):
        known = {}
    if not known:
        return [tuple(r) for r in await conn.fetch(_RPM_ROWS, snap.id, fpr)]
    members = await conn.fetch("SELECT filename, package_id FROM snapshot_packages WHERE snapshot_id = $1", snap.id)
    todo = [pid for _, pid in members if (row := known.get(pid)) is None or (fpr and row[4] is None)]
    _TIMINGS.setdefault(snap.id, {})["rows_fetched"] = len(todo)
    if todo:
        for r in await conn.fetch(_RPM_IDENTITIES, todo, fpr):
            known[r["id"]] = tuple(r)
    return [(filename, *known[pid]) for filename, pid in members]


def _stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat()


def _save_rpm_rows(storage: Storage, snap: Snapshot, fpr: str, rows: list[tuple], built_at: datetime) -> None:
    folder = storage.cache_dir(snap.key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "rows.json.tmp"
    tmp.write_bytes(orjson.dumps({"fpr": fpr, "built": _stamp(built_at), "rows": [r[1:] for r in rows]}))
    os.replace(tmp, folder / "rows.json")


async def _rebuild_rpm(conn, storage, signer, snap: Snapshot, repo: Repo, progress, built_at: datetime) -> int:
    # Identities first (chunks come later, only for the blocks the render cache misses).
    # Packages are normally signed at upload; anything still unsigned is signed here, once.
    fpr = signer.fingerprint if signer is not None else ""
    with _phase(snap.id, "fetch"):
        rows = await _rpm_rows(conn, storage, snap, fpr)
    if signer is not None and any(r[5] is None for r in rows):
        with _phase(snap.id, "sign_packages"):
            await _sign_missing(conn, storage, signer, snap, progress)
            rows = [tuple(r) for r in await conn.fetch(_RPM_ROWS, snap.id, fpr)]
    key = 5 if signer is not None else 4
    entries = [(RpmEntry(r[key], r[2], r[3]), r[0]) for r in rows]
    pool_loop = asyncio.get_running_loop()
    await _progress(progress, 40, f"rendering {len(entries)} packages")

    async def fetch_chunks(keys):
        # As UTF-8 bytes: they are joined and gzipped as bytes, no decoding and re-encoding 7 MB.
        got = await conn.fetch("SELECT sha256, convert_to(primary_xml, 'UTF8') AS primary_xml,"
                               " convert_to(filelists_xml, 'UTF8') AS filelists_xml,"
                               " convert_to(other_xml, 'UTF8') AS other_xml FROM package_files"
                               " WHERE sha256 = ANY($1::text[])", keys)
        return {r["sha256"]: (r["primary_xml"], r["filelists_xml"], r["other_xml"]) for r in got}

    def load_chunks(keys):
        # Called from the render thread: run the query on the event loop and wait for it.
        return asyncio.run_coroutine_threadsafe(fetch_chunks(keys), pool_loop).result()

    carried = [CarriedFile(r["type"], r["name"], r["data"], r["open_sha256"], r["open_size"]) for r in await conn.fetch(
        "SELECT type, name, data, open_sha256, open_size FROM snapshot_metadata WHERE snapshot_id = $1 ORDER BY type",
        snap.id)]
    with _phase(snap.id, "publish"):
        await pool_loop.run_in_executor(None, lambda: publish_rpm(
            storage, snap.public_rel(repo), snap.key, entries=entries, signer=signer, load_chunks=load_chunks,
            timings=_TIMINGS.setdefault(snap.id, {}), carried=carried))
    _save_rpm_rows(storage, snap, fpr, rows, built_at)
    return len(entries)


async def request_rebuild(pool, redis, snap_id: int, sign: bool, *,
                          requested_by: str | None = None) -> TaskRef:
    """Queue a rebuild of the snapshot, marked as needing one meanwhile; a rebuild already queued is
    joined. Returns the task's reference."""
    async with pool.acquire() as conn, conn.transaction():
        await get_snapshot(conn, snap_id, for_update=True)
        await conn.execute(
            "UPDATE snapshots SET reconstruct = coalesce(reconstruct, 'needed') WHERE id = $1", snap_id)
        ref = await create_task(conn, Kind.rebuild.value, f"snapshot:{snap_id}",
                                {"snapshot": snap_id, "gpg_sign": sign}, requested_by=requested_by)
    await dispatch(redis, ref)
    return ref


async def request_point(pool, redis, env: str, snap_id: int, *,
                        requested_by: str | None = None) -> TaskRef:
    """Queue pointing the environment at the snapshot (for the snapshot's repository). Returns the
    task's reference."""
    async with pool.acquire() as conn, conn.transaction():
        await get_environment(conn, env)
        repo_id = await conn.fetchval("SELECT repo_id FROM snapshots WHERE id = $1 AND status = 'active'", snap_id)
        if repo_id is None:
            raise NotFound(f"Snapshot #{snap_id} does not exist")
        # The environment asked for is the one pointed (Repomanager always points prod).
        ref = await create_task(conn, Kind.env_point.value, f"env:{env}:repo:{repo_id}",
                                {"env": env, "snapshot": snap_id}, requested_by=requested_by)
    await dispatch(redis, ref)
    return ref


async def point_env(pool, storage: Storage, signer: Signer | None, env: str, snap_id: int, *,
                    progress=None) -> dict:
    """Make /repo/<repo>/<env> serve snapshot `snap_id` (built first if it never was)."""
    async with pool.acquire() as conn:
        snap, repo = await snapshot_with_repo(conn, snap_id)
    if not (storage.public / snap.public_rel(repo)).is_symlink():
        await rebuild_snapshot(pool, storage, signer, snap_id, sign=signer is not None, progress=progress)
    async with pool.acquire() as conn, conn.transaction():
        snap, repo, old = await point_environment(conn, env, snap_id)
        # Swap the link inside the transaction: if it fails, the row change is rolled back.
        storage.point(f"{repo.public_base}/{env}", snap.public_rel(repo))
    return {"environment": env, "snapshot": snap_id, "previous": old}


async def remove_repo(pool, storage: Storage, repo_id: int) -> None:
    """Delete the repository's rows, then (committed) its published trees and environment links."""
    repo, snaps = await delete_repo(pool, repo_id)
    for snap in snaps:
        storage.unpublish(snap.public_rel(repo))
    storage.remove_tree(repo.public_base)


async def remove_snapshot(pool, storage: Storage, snap_id: int) -> None:
    """Delete the snapshot's rows (refused while an environment points at it), then its published tree."""
    snap, repo = await delete_snapshot(pool, snap_id)
    storage.unpublish(snap.public_rel(repo))
