"""Pool garbage collection (task kind pool_gc) with a real arq worker: unreferenced package files and their
signed copies go, referenced ones stay, uploads and rebuilds running meanwhile are safe, nothing half-done."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace

import pytest

from app.repos import gc, model
from app.repos.rebuild import rebuild_snapshot
from app.repos.storage import Storage
from app.repos.upload import Outcome
from tests import pkgfactory
from tests.helpers import bearer
from tests.repos.test_domain import _upload


@pytest.fixture
def gc_settings(settings, tmp_path):
    # A storage folder of the test's own (the session's is shared); pool rows count, not file age.
    return replace(settings, storage_dir=tmp_path / "storage", pool_gc_grace_seconds=600)


@pytest.fixture
def gc_storage(gc_settings):
    return Storage(gc_settings.storage_dir)


async def _run_gc(run_worker, gc_settings, pool, task_id=None):
    await run_worker(ctx={"settings": gc_settings})
    row = await pool.fetchrow("SELECT status, result, error FROM tasks WHERE kind = 'pool_gc'"
                              + (" AND id = $1" if task_id else " ORDER BY id DESC LIMIT 1"),
                              *([task_id] if task_id else []))
    assert row["status"] == "done", row["error"]
    return row["result"]


def _shas(storage):
    return {p.name for p in storage.pool.glob("??/*")}


async def _sha_of(pool, snap_id, filename):
    return await pool.fetchval("SELECT p.sha256 FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
                               " WHERE sp.snapshot_id = $1 AND sp.filename = $2", snap_id, filename)


async def test_gc_removes_only_what_no_snapshot_references(client, repo_db, gc_settings, gc_storage, signer, tmp_path,
                                                           make_key, run_worker):
    pool, storage = repo_db, gc_storage
    async with pool.acquire() as conn:
        deb = await model.create_repo(conn, name="gcdeb", type="deb", dist="bookworm", section="main")
        s1 = await model.create_snapshot(conn, deb.id)
    for spec in (("keep-a", "1.0", "amd64"), ("over-b", "1.0", "amd64"), ("gone-d", "1.0", "all")):
        assert (await _upload(pool, storage, s1.id, "deb", pkgfactory.make_deb(tmp_path / "v1", *spec))).outcome \
            == Outcome.uploaded
    async with pool.acquire() as conn:
        s2 = await model.create_snapshot(conn, deb.id, s1.id)
    await _upload(pool, storage, s2.id, "deb", pkgfactory.make_deb(tmp_path / "v2", "new-c", "1.0", "amd64"))
    old_b = await _sha_of(pool, s1.id, "over-b_1.0_amd64.deb")
    # Overwrite in s2: same file name, other content (s1 still holds the old one).
    other_b = tmp_path / "v3" / "over-b_1.0_amd64.deb"
    other_b.parent.mkdir()
    other_b.write_bytes(pkgfactory.deb_bytes("over-b", "1.0", "amd64", payload=b"other content\n"))
    assert (await _upload(pool, storage, s2.id, "deb", other_b, overwrite=True)).outcome == Outcome.uploaded
    new_b = await _sha_of(pool, s2.id, "over-b_1.0_amd64.deb")
    gone_d = await _sha_of(pool, s1.id, "gone-d_1.0_all.deb")
    keep_a = await _sha_of(pool, s1.id, "keep-a_1.0_amd64.deb")
    async with pool.acquire() as conn, conn.transaction():
        assert await model.delete_packages(conn, s2.id, ["gone-d_1.0_all.deb"]) == ["gone-d_1.0_all.deb"]
    await rebuild_snapshot(pool, storage, signer, s2.id, sign=True)        # published before the GC

    # rpm: original + signed copy per package; one package leaves the snapshot.
    async with pool.acquire() as conn:
        rpm = await model.create_repo(conn, name="gcrpm", type="rpm", releasever="9")
        r1 = await model.create_snapshot(conn, rpm.id)
    rpms = pkgfactory.make_rpms(tmp_path / "rpms", [("gc-keep", "1.0", "1", "noarch"), ("gc-gone", "1.0", "1", "noarch")])
    for f in rpms:
        assert (await _upload(pool, storage, r1.id, "rpm", f, signer=signer)).outcome == Outcome.uploaded
    signed = {r["name"]: (r["sha256"], r["signed"]) for r in await pool.fetch(
        "SELECT p.name, p.sha256, s.sha256 AS signed FROM package_files p JOIN package_files s ON s.id = p.signed_id")}
    assert set(signed) == {"gc-keep", "gc-gone"}
    async with pool.acquire() as conn, conn.transaction():
        await model.delete_packages(conn, r1.id, ["gc-gone-1.0-1.noarch.rpm"])

    # Snapshot deletion: s1's files still in s2 stay, its own (old b, d) go.
    async with pool.acquire() as conn, conn.transaction():
        snap, repo = await model.delete_snapshot(conn, s1.id)
    storage.unpublish(snap.public_rel(repo))

    # Orphan files (no row): an old one goes, a recent one stays (an upload may be about to commit it).
    old_orphan, new_orphan = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()
    for sha, age in ((old_orphan, 7200), (new_orphan, 5)):
        path = storage.pool_path(sha)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 10)
        os.utime(path, (time.time() - age, time.time() - age))
    doomed = {old_b, gone_d, *signed["gc-gone"], old_orphan}
    new_c = await _sha_of(pool, s2.id, "new-c_1.0_amd64.deb")
    kept = {keep_a, new_b, new_c, *signed["gc-keep"], new_orphan}
    assert doomed | kept <= _shas(storage)

    h = bearer(await make_key("operator"))
    resp = await client.post("/api/v2/pool/gc", headers=h, json={"dry_run": True})
    assert resp.status == 202, await resp.text()
    dry = await _run_gc(run_worker, gc_settings, pool, (await resp.json())["task-id"])
    assert dry["dry_run"] and dry["would_delete_rows"] == 4 and dry["would_remove_orphans"] == 1
    assert doomed | kept <= _shas(storage)                                  # a dry run changes nothing
    assert (await client.post("/api/v2/pool/gc", headers=bearer(await make_key("uploader")), json={})).status == 403
    assert (await client.post("/api/v2/pool/gc", headers=h, json={"dry_run": "maybe"})).status == 400

    resp = await client.post("/api/v2/pool/gc", headers=h)
    assert resp.status == 202
    result = await _run_gc(run_worker, gc_settings, pool, (await resp.json())["task-id"])
    assert result["rows_deleted"] == 4 and result["orphans_removed"] == 1 and result["files_removed"] == 5
    left = _shas(storage)
    assert not (doomed & left) and kept <= left
    rows = {r["sha256"] for r in await pool.fetch("SELECT sha256 FROM package_files")}
    assert not (doomed & rows) and kept - {new_orphan} <= rows
    assert not list((storage.pool / ".gc").iterdir())

    # s2 still builds and its published files are all there (hard links, and the pool kept them).
    await rebuild_snapshot(pool, storage, signer, s2.id, sign=True)
    published = storage.public / (await model.get_snapshot(pool, s2.id)).public_rel(deb) / "pool/main"
    assert sorted(p.name for p in published.iterdir()) == ["keep-a_1.0_amd64.deb", "new-c_1.0_amd64.deb",
                                                           "over-b_1.0_amd64.deb"]
    # The same file uploaded again after its row went: stored again, in full.
    async with pool.acquire() as conn:
        s3 = await model.create_snapshot(conn, deb.id)
    assert (await _upload(pool, storage, s3.id, "deb", tmp_path / "v1" / "gone-d_1.0_all.deb")).outcome \
        == Outcome.uploaded
    assert storage.pool_path(gone_d).is_file()
    again = await _run_gc(run_worker, gc_settings, pool,
                          (await (await client.post("/api/v2/pool/gc", headers=h)).json())["task-id"])
    assert again["rows_deleted"] == 0 and again["orphans_removed"] == 0


async def test_gc_is_whole_or_nothing_and_recovers_after_a_crash(repo_db, redis, gc_settings, gc_storage, tmp_path,
                                                                 run_worker):
    from app.tasks import dispatch

    pool, storage = repo_db, gc_storage
    async with pool.acquire() as conn:
        deb = await model.create_repo(conn, name="gcfail", type="deb", dist="bookworm", section="main")
        s1 = await model.create_snapshot(conn, deb.id)
    for i in range(3):
        await _upload(pool, storage, s1.id, "deb", pkgfactory.make_deb(tmp_path, f"p{i}", "1.0", "amd64"))
    shas = {r["sha256"] for r in await pool.fetch("SELECT sha256 FROM package_files")}
    async with pool.acquire() as conn, conn.transaction():
        await model.delete_snapshot(conn, s1.id)

    # The commit fails (a deferred trigger): rows and files are all back, nothing left aside.
    await pool.execute("""
        CREATE FUNCTION test_gc_fail() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$;
        CREATE CONSTRAINT TRIGGER test_gc_fail AFTER DELETE ON package_files
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_gc_fail();""")
    try:
        ref = await dispatch.enqueue(pool, redis, "pool_gc", "pool", {})
        await run_worker(ctx={"settings": gc_settings})
        row = await pool.fetchrow("SELECT status, error FROM tasks WHERE id = $1", ref.id)
        assert row["status"] == "error" and "injected failure" in row["error"]
    finally:
        await pool.execute("DROP TRIGGER test_gc_fail ON package_files; DROP FUNCTION test_gc_fail();")
    assert {r["sha256"] for r in await pool.fetch("SELECT sha256 FROM package_files")} == shas
    assert shas <= _shas(storage) and not list((storage.pool / ".gc").iterdir())

    # A worker that died after moving files aside, before its commit: the next run puts them back
    # (their rows exist), then collects as usual; an aside file whose row is gone is just removed.
    one = min(shas)
    os.replace(storage.pool_path(one), storage.pool / ".gc" / one)
    stray = hashlib.sha256(b"stray").hexdigest()
    (storage.pool / ".gc" / stray).write_bytes(b"s")
    result = await gc.collect(pool, storage, grace_seconds=600)
    assert result["restored"] == 1 and result["rows_deleted"] == 3 and result["files_removed"] == 3
    assert not (shas & _shas(storage)) and not list((storage.pool / ".gc").iterdir())


@pytest.mark.slow
async def test_gc_never_takes_a_file_an_upload_or_a_rebuild_is_using(repo_db, gc_storage, tmp_path):
    pool, storage = repo_db, gc_storage
    async with pool.acquire() as conn:
        deb = await model.create_repo(conn, name="gcrace", type="deb", dist="bookworm", section="main")
        s1 = await model.create_snapshot(conn, deb.id)
        s2 = await model.create_snapshot(conn, deb.id)
    await _upload(pool, storage, s1.id, "deb", pkgfactory.make_deb(tmp_path, "race", "1.0", "amd64"))
    row = await pool.fetchrow("SELECT id, sha256 FROM package_files")
    async with pool.acquire() as conn, conn.transaction():
        await model.delete_snapshot(conn, s1.id)                     # now unreferenced

    # An upload of the same file into s2 is between its row write and its commit (the foreign key
    # check locks the row): the GC skips the row, the upload commits, the file stays.
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        await conn.execute("INSERT INTO snapshot_packages (snapshot_id, filename, package_id) VALUES ($1, $2, $3)",
                           s2.id, "race_1.0_amd64.deb", row["id"])
        result = await gc.collect(pool, storage, grace_seconds=600)
        assert result["rows_deleted"] == 0
        await tr.commit()
    assert storage.pool_path(row["sha256"]).is_file()
    assert (await gc.collect(pool, storage, grace_seconds=600))["rows_deleted"] == 0   # referenced now

    # A rebuild holds the pool lock (shared) between reading rows and linking files: the GC waits,
    # and gives up for this run rather than queue in front of later rebuilds.
    async with pool.acquire() as conn, conn.transaction():
        await model.delete_packages(conn, s2.id, ["race_1.0_amd64.deb"])
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", *gc.POOL_LOCK)
        try:
            busy = await gc.collect(pool, storage, grace_seconds=600, lock_wait_seconds=0.6)
        finally:
            await conn.execute("SELECT pg_advisory_unlock_shared($1, $2)", *gc.POOL_LOCK)
    assert busy["busy"] and busy["rows_deleted"] == 0 and storage.pool_path(row["sha256"]).is_file()
    done = await gc.collect(pool, storage, grace_seconds=600)
    assert done["rows_deleted"] == 1 and not storage.pool_path(row["sha256"]).exists()


async def test_retention_queues_a_collection_and_pool_gc_can_be_scheduled(client, repo_db, redis, gc_settings,
                                                                          make_key, run_worker):
    from app.tasks import dispatch, schedules

    pool = repo_db
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="gcret", type="deb", dist="bookworm", section="main")
        for _ in range(3):
            await model.create_snapshot(conn, repo.id)
    await dispatch.enqueue(pool, redis, "retention", f"repo:{repo.id}", {"repo": repo.id, "keep": 1})
    await run_worker(ctx={"settings": gc_settings})
    ret = await pool.fetchval("SELECT result FROM tasks WHERE kind = 'retention'")
    assert len(ret["deleted"]) == 2
    row = await pool.fetchrow("SELECT status, target FROM tasks WHERE id = $1", ret["pool_gc_task"])
    assert row["status"] == "done" and row["target"] == "pool"

    h = bearer(await make_key("operator"))
    resp = await client.post("/api/v2/task/schedule", headers=h,
                             json={"kind": "pool_gc", "params": {}, "cron": "30 3 * * *", "target": "elsewhere"})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["results"]["Target"] == "pool"
    await pool.execute("UPDATE tasks SET next_run_at = now() WHERE type = 'scheduled'")
    [task_id] = await schedules.run_due(pool, redis)
    assert (await _run_gc(run_worker, gc_settings, pool, task_id))["rows_deleted"] == 0
