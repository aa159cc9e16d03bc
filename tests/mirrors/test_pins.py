"""A failed mirror run's downloads are kept from the pool GC until that mirror's next successful run (or
DEPOT_MIRROR_KEEP_FAILED_DAYS): the retry fetches only the file that failed, even with a GC in between."""
from __future__ import annotations

from dataclasses import replace

import pytest

from app.repos.storage import Storage
from app.tasks import dispatch

pytestmark = pytest.mark.usefixtures("repo_db")


async def _gc(pool, redis, run_worker, settings, **changes) -> dict:
    """A real pool_gc task on a real worker (grace 0: any file without a row would go at once)."""
    ref = await dispatch.enqueue(pool, redis, "pool_gc", "pool", {})
    await run_worker(ctx={"settings": replace(settings, pool_gc_grace_seconds=0, **changes)})
    row = await pool.fetchrow("SELECT status, error, result FROM tasks WHERE id = $1", ref.id)
    assert row["status"] == "done", row["error"]
    return row["result"]


async def _corrupt_then_fail(site, make_mirror, run_mirror, pool) -> tuple[int, bytes]:
    repo_id = await make_mirror(site)
    bad = site.archive.pool / "beta_1.0-1_amd64.deb"
    good = bad.read_bytes()
    bad.write_bytes(good[:-4] + b"XXXX")           # same size, other content; the index is unchanged
    task = await run_mirror(repo_id)
    assert task["Status"] == "error" and "beta_1.0-1_amd64.deb: SHA-256" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 3
    assert await pool.fetchval("SELECT count(*) FROM snapshot_packages") == 0     # nothing references them
    bad.write_bytes(good)
    return repo_id, good


async def test_gc_between_a_failed_run_and_its_retry_keeps_the_downloads(site, make_mirror, run_mirror, pool, redis,
                                                                          run_worker, settings):
    repo_id, _ = await _corrupt_then_fail(site, make_mirror, run_mirror, pool)
    # The run pinned the four files it set out to fetch (the bad one too: it is fetched by the retry).
    assert await pool.fetchval("SELECT count(*) FROM mirror_pins WHERE repo_id = $1", repo_id) == 4
    result = await _gc(pool, redis, run_worker, settings)
    assert result["rows_deleted"] == 0
    kept = [r["sha256"] for r in await pool.fetch("SELECT sha256 FROM package_files")]
    assert len(kept) == 3 and all(Storage(settings.storage_dir).pool_path(sha).is_file() for sha in kept)

    site.upstream.counts.clear()
    retry = await run_mirror(repo_id)
    assert retry["Status"] == "done", retry["Error"]
    assert site.upstream.package_requests() == 1
    assert site.upstream.counts["debian/pool/main/beta_1.0-1_amd64.deb"] == 1
    assert retry["Result"]["downloaded"] == 1 and retry["Result"]["reused"] == 3
    # The successful run's snapshot references them all now: its pins are gone.
    assert await pool.fetchval("SELECT count(*) FROM mirror_pins") == 0
    assert await pool.fetchval("SELECT count(*) FROM snapshot_packages WHERE snapshot_id = $1",
                               retry["Result"]["snapshot"]) == 4


async def test_pins_older_than_the_limit_are_given_up(site, make_mirror, run_mirror, pool, redis, run_worker,
                                                      settings):
    repo_id, _ = await _corrupt_then_fail(site, make_mirror, run_mirror, pool)
    await pool.execute("UPDATE mirror_pins SET pinned_at = now() - interval '3 days'")
    # Within the limit: kept.
    assert (await _gc(pool, redis, run_worker, settings, mirror_keep_failed_days=4))["rows_deleted"] == 0
    # Past it: the pins expire and the files go, as any unreferenced file.
    result = await _gc(pool, redis, run_worker, settings, mirror_keep_failed_days=2)
    assert result["pins_expired"] == 4 and result["rows_deleted"] == 3
    assert await pool.fetchval("SELECT count(*) FROM mirror_pins") == 0
    site.upstream.counts.clear()
    retry = await run_mirror(repo_id)
    assert retry["Status"] == "done", retry["Error"]
    assert site.upstream.package_requests() == 4


async def test_a_deleted_mirror_takes_its_pins(site, make_mirror, run_mirror, pool, client, admin_key):
    from tests.helpers import bearer

    repo_id, _ = await _corrupt_then_fail(site, make_mirror, run_mirror, pool)
    r = await client.delete(f"/api/v2/repo/{repo_id}", headers=bearer(admin_key))
    assert r.status == 200, await r.text()
    assert await pool.fetchval("SELECT count(*) FROM mirror_pins") == 0
