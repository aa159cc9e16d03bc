"""Mirroring a Debian upstream served on 127.0.0.1: verified, incremental, nothing half-done."""
from __future__ import annotations

import pytest

import shutil
import subprocess

import aiohttp
from aiohttp import web

from app.sources.keys import read_public_keys, verify
from tests import pkgfactory
from tests.helpers import bearer, wait_for
from tests.upstream import DebArchive, Pki, Upstream

pytestmark = pytest.mark.usefixtures("repo_db")


async def _names(pool, snap_id: int) -> list[str]:
    rows = await pool.fetch("SELECT filename FROM snapshot_packages WHERE snapshot_id = $1 ORDER BY filename", snap_id)
    return [r["filename"] for r in rows]


async def test_first_mirror_then_unchanged(site, make_mirror, run_mirror, pool, client, settings):
    repo_id = await make_mirror(site)
    task = await run_mirror(repo_id, env="prod")
    assert task["Status"] == "done", task["Error"]
    result = task["Result"]
    assert result["unchanged"] is False and result["downloaded"] == 4 and result["reused"] == 0
    snap = result["snapshot"]
    assert await _names(pool, snap) == ["alpha_1.0-1_amd64.deb", "beta_1.0-1_amd64.deb", "common_1.0-1_all.deb",
                                        "gamma_1.0-1_amd64.deb"]
    assert site.upstream.package_requests() == 4
    assert result["bytes"] == sum(f.stat().st_size for f in site.archive.pool.iterdir())
    assert result["signed_by"] == site.archive.key.fingerprint
    assert task["Progress_text"] == "making the snapshot of 4 packages"
    # Republished with Depot's signature, and prod points at it.
    r = await client.get("/repo/deb/mirror1/stable/main/prod/dists/stable/InRelease")
    assert r.status == 200
    depot_key = read_public_keys(await (await client.get("/repo/gpgkeys/depot.test.pub")).text())
    verified = verify([k.public_key for k in depot_key], await r.read())
    assert b"alpha" not in verified.text and b"main/binary-amd64/Packages" in verified.text
    assert verified.fingerprint == depot_key[0].fingerprint != site.archive.key.fingerprint
    r = await client.get("/repo/deb/mirror1/stable/main/prod/pool/main/alpha_1.0-1_amd64.deb")
    assert r.status == 200

    before = dict(site.upstream.counts)
    again = await run_mirror(repo_id)
    assert again["Status"] == "done", again["Error"]
    assert again["Result"]["unchanged"] is True and again["Result"]["snapshot"] == snap
    new = {p: n - before.get(p, 0) for p, n in site.upstream.counts.items() if n != before.get(p, 0)}
    assert new == {"debian/dists/stable/InRelease": 1}               # one small request, no index, no package
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE repo_id = $1", repo_id) == 1


@pytest.mark.parametrize("ext", ["", ".gz", ".xz", ".bz2", ".zst"])
async def test_each_index_compression(site, make_mirror, run_mirror, pool, ext):
    site.archive.build(compressions=(ext,), by_hash=False)
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "done", task["Error"]
    assert len(await _names(pool, task["Result"]["snapshot"])) == 4
    assert site.upstream.counts[f"debian/dists/stable/main/binary-amd64/Packages{ext}"] == 1


async def test_by_hash_is_used_when_offered(site, make_mirror, run_mirror):
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "done", task["Error"]
    assert any("/by-hash/SHA256/" in p for p in site.upstream.counts)
    assert not any(p.endswith("/Packages.xz") for p in site.upstream.counts)


async def test_two_files_of_one_package_file_name(site, make_mirror, run_mirror, pool):
    """Two different files the index lists for the same package, version and architecture: the snapshot holds the
    one with the lowest SHA-256 under Depot's file name, and the run counts the other as a duplicate."""
    import hashlib

    other = pkgfactory.make_deb(site.archive.pool / "rebuilt", "alpha", payload=b"rebuilt upstream\n")
    first = site.archive.pool / "alpha_1.0-1_amd64.deb"
    assert other.read_bytes() != first.read_bytes()
    site.archive.build()
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["duplicates"] == 1 and task["Result"]["packages"] == 4
    kept = await pool.fetchval(
        "SELECT p.sha256 FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
        " WHERE sp.snapshot_id = $1 AND sp.filename = 'alpha_1.0-1_amd64.deb'", task["Result"]["snapshot"])
    assert kept == min(hashlib.sha256(f.read_bytes()).hexdigest() for f in (first, other))


async def test_all_packages_come_with_any_architecture(site, make_mirror, run_mirror, pool):
    task = await run_mirror(await make_mirror(site, arch=["amd64"]))
    assert task["Status"] == "done", task["Error"]
    assert "common_1.0-1_all.deb" in await _names(pool, task["Result"]["snapshot"])
    task = await run_mirror(await make_mirror(site, arch=["arm64"]))
    assert task["Status"] == "error" and "no Packages index for main/binary-arm64" in task["Error"]


async def test_upstream_changes_fetch_exactly_the_new_files(site, make_mirror, run_mirror, pool):
    repo_id = await make_mirror(site)
    first = await run_mirror(repo_id)
    site.archive.remove("beta")
    site.archive.remove("gamma")
    site.archive.add("gamma", "2.0-1")
    site.archive.add("delta")
    site.archive.build()
    before = site.upstream.package_requests()
    second = await run_mirror(repo_id)
    assert second["Status"] == "done", second["Error"]
    assert site.upstream.package_requests() - before == 2
    assert second["Result"]["downloaded"] == 2 and second["Result"]["reused"] == 2
    assert await _names(pool, second["Result"]["snapshot"]) == [
        "alpha_1.0-1_amd64.deb", "common_1.0-1_all.deb", "delta_1.0-1_amd64.deb", "gamma_2.0-1_amd64.deb"]
    # The first snapshot is untouched.
    assert len(await _names(pool, first["Result"]["snapshot"])) == 4


async def test_corrupted_package_fails_whole_and_retry_fetches_only_it(site, make_mirror, run_mirror, pool):
    repo_id = await make_mirror(site)
    bad = site.archive.pool / "beta_1.0-1_amd64.deb"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[:-4] + b"XXXX")          # same size, other content; the index is unchanged
    task = await run_mirror(repo_id, env="prod")
    assert task["Status"] == "error"
    assert "pool/main/beta_1.0-1_amd64.deb: SHA-256" in task["Error"] and "no snapshot made" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE repo_id = $1", repo_id) == 0
    assert await pool.fetchval("SELECT count(*) FROM environment_snapshots") == 0
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 3          # the good ones are kept
    bad.write_bytes(good_bytes)
    site.upstream.counts.clear()
    retry = await run_mirror(repo_id)
    assert retry["Status"] == "done", retry["Error"]
    assert site.upstream.package_requests() == 1 and site.upstream.counts["debian/pool/main/beta_1.0-1_amd64.deb"] == 1
    assert len(await _names(pool, retry["Result"]["snapshot"])) == 4


async def test_a_pool_file_without_a_row_is_read_not_downloaded(site, make_mirror, run_mirror, pool, settings):
    """What a worker killed between placing files and writing their rows leaves: the resumed run reads them."""
    from app.repos.packages import file_digests
    from app.repos.storage import Storage

    placed = site.archive.pool / "alpha_1.0-1_amd64.deb"
    target = Storage(settings.storage_dir).pool_path(file_digests(placed).sha256)
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(placed, target)
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["downloaded"] == 3 and task["Result"]["reused"] == 1
    assert site.upstream.package_requests() == 3 and site.upstream.counts["debian/pool/main/alpha_1.0-1_amd64.deb"] == 0
    assert len(await _names(pool, task["Result"]["snapshot"])) == 4
    assert await pool.fetchval("SELECT md5 FROM package_files WHERE name = 'alpha'") == file_digests(placed).md5


async def test_files_above_the_memory_size_are_streamed_and_checked_alike(site, make_mirror, run_mirror, pool,
                                                                           settings):
    bad = site.archive.pool / "beta_1.0-1_amd64.deb"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[:-4] + b"XXXX")
    repo_id = await make_mirror(site)
    streamed = {"mirror_memory_file_bytes": 0}
    temp_files = set((settings.storage_dir / "tmp").iterdir())
    task = await run_mirror(repo_id, settings=streamed)
    assert task["Status"] == "error" and "pool/main/beta_1.0-1_amd64.deb: SHA-256" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 3
    bad.write_bytes(good_bytes)
    task = await run_mirror(repo_id, settings=streamed)
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["downloaded"] == 1
    assert len(await _names(pool, task["Result"]["snapshot"])) == 4
    assert set((settings.storage_dir / "tmp").iterdir()) == temp_files        # no temp file left behind


async def test_another_valid_package_in_place_of_the_indexed_one_is_refused(site, make_mirror, run_mirror, pool):
    """The stored stanza is the index's: what proves it describes the file is the file's digest."""
    swapped = site.archive.pool / "beta_1.0-1_amd64.deb"
    indexed = swapped.read_bytes()
    other = pkgfactory.deb_bytes("beta", "1.0-1", "amd64", payload=b"not the package the index describes\n")
    assert other != indexed
    swapped.write_bytes(other)
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error", task["Result"]
    assert "pool/main/beta_1.0-1_amd64.deb: " in task["Error"] and "no snapshot made" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM package_files WHERE name = 'beta'") == 0


def _stanza(name: str, deb: bytes, fields: str) -> bytes:
    import hashlib

    return (f"Package: {name}\n{fields}Filename: extra/{name}_1.0-1_amd64.deb\nSize: {len(deb)}\n"
            f"SHA256: {hashlib.sha256(deb).hexdigest()}\n\n").encode()


async def test_stored_stanza_is_the_index_stanza_checked_like_a_control_file(site, make_mirror, run_mirror, pool,
                                                                              client):
    extra = site.archive.root / "extra"
    extra.mkdir()
    deb = pkgfactory.deb_bytes("delta", "1.0-1", "amd64")
    (extra / "delta_1.0-1_amd64.deb").write_bytes(deb)
    # A stanza that would not pass as an upload's control file (a version that is no version) is refused.
    site.archive.build(extra_packages=_stanza("delta", deb, "Version: not a version\nArchitecture: amd64\n"
                                                              "Description: d\n"))
    repo_id = await make_mirror(site)
    task = await run_mirror(repo_id)
    assert task["Status"] == "error"
    assert "extra/delta_1.0-1_amd64.deb: not a valid package (invalid or missing version 'not a version')" \
        in task["Error"]
    # A valid one is stored as the index gives it, a field the .deb lacks included; its own Filename, Size and
    # digests are Depot's.
    site.archive.build(extra_packages=_stanza("delta", deb, "Version: 1.0-1\nArchitecture: amd64\n"
                                                              "Task: upstream-only\nDescription: d\n more\n"))
    task = await run_mirror(repo_id, env="prod")
    assert task["Status"] == "done", task["Error"]
    stanza = await pool.fetchval("SELECT stanza FROM package_files WHERE name = 'delta'")
    assert stanza == "Package: delta\nVersion: 1.0-1\nArchitecture: amd64\nTask: upstream-only\nDescription: d\n more\n"
    r = await client.get("/repo/deb/mirror1/stable/main/prod/dists/stable/main/binary-amd64/Packages")
    published = (await r.read()).decode()
    assert "Task: upstream-only\nDescription: d\n more\nFilename: pool/main/delta_1.0-1_amd64.deb\n" in published


async def test_bad_signature_is_refused_before_any_index(site, make_mirror, run_mirror, pool):
    dist = site.archive.root / "dists" / "stable"
    for name in ("InRelease", "Release"):
        (dist / name).write_bytes((dist / name).read_bytes().replace(b"Suite: stable", b"Suite: evil!"))
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error"
    assert "BAD signature" in task["Error"]
    assert site.upstream.index_requests() == 0 and site.upstream.package_requests() == 0
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == 0


async def test_key_of_another_source_does_not_validate(site, make_mirror, run_mirror, client, admin_key, other_key,
                                                        upstream_key):
    # The upstream's key belongs to another source; this one holds an unrelated key.
    h = bearer(admin_key)
    r = await client.post("/api/v2/source/deb/", json={"name": "holder", "type": "deb", "url": "http://holder.test",
                                                       "distributions": [{"name": "s", "components": ["main"]}],
                                                       }, headers=h)
    assert r.status == 201
    r = await client.post("/api/v2/source/deb/holder/keys", json={"armored": upstream_key.armored()}, headers=h)
    assert r.status == 201
    task = await run_mirror(await make_mirror(site, key=other_key))
    assert task["Status"] == "error"
    assert "not one of this source's keys" in task["Error"]
    assert site.upstream.index_requests() == 0


async def test_source_without_keys_is_refused(site, make_mirror, run_mirror):
    task = await run_mirror(await make_mirror(site, key=None))
    assert task["Status"] == "error" and "has no key" in task["Error"]


async def test_detached_signature_only(site, make_mirror, run_mirror):
    site.archive.build(sign="detached")
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "done", task["Error"]
    assert site.upstream.counts["debian/dists/stable/Release.gpg"] == 1


async def test_unsigned_upstream_needs_gpgcheck_false(site, make_mirror, run_mirror):
    site.archive.build(sign="none")
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error" and "not signed" in task["Error"]
    task = await run_mirror(await make_mirror(site, gpgCheck=False))
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["signed_by"] is None


async def test_expired_valid_until(site, make_mirror, run_mirror):
    site.archive.build(valid_until="Sat, 01 Jan 2000 00:00:00 UTC")
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error"
    assert "Release expired on Sat, 01 Jan 2000 00:00:00 UTC (Valid-Until)" in task["Error"]
    assert site.upstream.index_requests() == 0


async def test_filename_escaping_the_archive(site, make_mirror, run_mirror):
    evil = (b"Package: evil\nVersion: 1\nArchitecture: amd64\nFilename: ../../etc/passwd\nSize: 10\n"
            b"SHA256: " + b"a" * 64 + b"\n\n")
    site.archive.build(extra_packages=evil)
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error"
    assert "package evil has an unsafe Filename '../../etc/passwd'" in task["Error"]
    assert site.upstream.package_requests() == 0


async def test_huge_index_is_capped(site, make_mirror, run_mirror):
    filler = b"Package: filler\nVersion: 1\nArchitecture: amd64\nDescription: x\n " + b"0" * 3_000_000 + b"\n\n"
    site.archive.build(compressions=(".xz",), extra_packages=filler)
    task = await run_mirror(await make_mirror(site), settings={"mirror_index_max_bytes": 1_000_000})
    assert task["Status"] == "error"
    assert "Packages.xz: larger than the 1000000 byte limit once decompressed" in task["Error"]
    assert site.upstream.package_requests() == 0


async def test_loopback_refused_unless_allowed(site, make_mirror, run_mirror):
    repo_id = await make_mirror(site)
    task = await run_mirror(repo_id, settings={"mirror_allow_hosts": ()})
    assert task["Status"] == "error" and "127.0.0.1 is a loopback, link-local or private address" in task["Error"]
    site.url = site.url.replace("127.0.0.1", "localhost")       # a name: refused when it resolves
    task = await run_mirror(await make_mirror(site), settings={"mirror_allow_hosts": ()})
    assert task["Status"] == "error" and "localhost resolves to loopback" in task["Error"]
    assert sum(site.upstream.counts.values()) == 0


async def test_redirect_to_a_private_address_is_refused(site, make_mirror, run_mirror):
    site.upstream.redirects["debian/dists/stable/InRelease"] = "http://10.11.12.13/debian/dists/stable/InRelease"
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error"
    assert "10.11.12.13 is a loopback, link-local or private address" in task["Error"]


async def test_mirror_requests_refused(client, make_mirror, site, make_key, admin_key):
    repo_id = await make_mirror(site)
    viewer = bearer(await make_key("uploader"))
    r = await client.post(f"/api/v2/repo/{repo_id}/mirror", json={}, headers=viewer)
    assert r.status == 403
    h = bearer(admin_key)
    r = await client.post(f"/api/v2/repo/{repo_id}/mirror", json={"env": "nope"}, headers=h)
    assert r.status == 404
    r = await client.post("/api/v2/repo/", json={"name": "plain", "type": "deb", "dist": "s", "section": "main"},
                          headers=h)
    plain = (await r.json())["results"]["Id"]
    r = await client.post(f"/api/v2/repo/{plain}/mirror", json={}, headers=h)
    assert r.status == 400 and "is not a mirror" in await r.text()
    # Creating a mirror: the source must exist and hold the distribution and component.
    for body, status in (({"source": "nope", "arch": ["amd64"]}, 404), ({"source": "up1", "arch": []}, 400),
                         ({"source": "up1", "arch": ["amd64"], "dist": "oldstable"}, 400),
                         ({"source": "up1", "arch": ["amd64"], "section": "contrib"}, 400),
                         ({"source": "up1", "arch": ["AMD 64"]}, 400)):
        r = await client.post("/api/v2/repo/", json={"name": "m", "type": "deb", "dist": "stable", "section": "main",
                                                     **body}, headers=h)
        assert r.status == status, (body, await r.text())
    r = await client.get("/api/v2/repo/", headers=h)
    assert {x["Name"]: x["Source"] for x in (await r.json())["results"]} == {"mirror1": "up1", "plain": "plain"}
    # Requests coalesce: a second one while the first is queued joins it.
    r1 = await client.post(f"/api/v2/repo/{repo_id}/mirror", json={}, headers=h)
    r2 = await client.post(f"/api/v2/repo/{repo_id}/mirror", json={}, headers=h)
    assert (await r1.json())["task-id"] == (await r2.json())["task-id"]


async def test_filters_and_keep_latest(site, make_mirror, run_mirror, pool):
    # Versions written in an order where file order and version order disagree.
    for version in ("1.10-1", "1.9-1", "1.2-1"):
        site.archive.add("multi", version)
    site.archive.build()
    task = await run_mirror(await make_mirror(site, include=["multi", "a*", "common"], exclude=["common"],
                                              keepLatest=2))
    assert task["Status"] == "done", task["Error"]
    assert await _names(pool, task["Result"]["snapshot"]) == [
        "alpha_1.0-1_amd64.deb", "multi_1.10-1_amd64.deb", "multi_1.9-1_amd64.deb"]
    assert site.upstream.package_requests() == 3


async def test_stop_mid_download_then_resume(site, make_mirror, client, admin_key, live_worker, pool):
    for i in range(30):
        site.archive.add(f"pkg{i:02d}")
    site.archive.build()
    site.upstream.package_delay = 0.2
    repo_id = await make_mirror(site)
    h = bearer(admin_key)
    task_id = (await (await client.post(f"/api/v2/repo/{repo_id}/mirror", json={}, headers=h)).json())["task-id"]
    await wait_for(lambda: _fetched_some(pool), timeout=30)
    r = await client.post(f"/api/v2/task/{task_id}/stop", headers=h)
    assert r.status == 202, await r.text()

    async def status():
        row = (await (await client.get(f"/api/v2/task/{task_id}", headers=h)).json())["results"]
        return row if row["Status"] not in ("queued", "running") else None

    done = await wait_for(status, timeout=30)
    assert done["Status"] == "stopped"
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == 0
    kept = await pool.fetchval("SELECT count(*) FROM package_files")
    assert 0 < kept < 34
    fetched_before = site.upstream.package_requests()
    site.upstream.package_delay = 0
    task_id = (await (await client.post(f"/api/v2/repo/{repo_id}/mirror", json={}, headers=h)).json())["task-id"]

    async def finished():
        row = (await (await client.get(f"/api/v2/task/{task_id}", headers=h)).json())["results"]
        return row if row["Status"] not in ("queued", "running") else None

    done = await wait_for(finished, timeout=60)
    assert done["Status"] == "done", done["Error"]
    assert done["Result"]["reused"] == kept and done["Result"]["downloaded"] == 34 - kept
    # Only the files in flight when the stop came were fetched twice.
    assert site.upstream.package_requests() - fetched_before == 34 - kept
    assert fetched_before - kept <= 8


async def _fetched_some(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM package_files") >= 3


async def test_a_drip_feeding_upstream_fails_the_run(site, make_mirror, run_mirror, pool):
    site.upstream.stalled.add("debian/pool/main/beta_1.0-1_amd64.deb")
    task = await run_mirror(await make_mirror(site), settings={"mirror_read_timeout": 0.5})
    assert task["Status"] == "error"
    assert "beta_1.0-1_amd64.deb: the answer stalled" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 3
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == 0


async def test_flat_repository_non_compliant(tmp_path, aiohttp_server, upstream_key, client, admin_key, run_mirror,
                                             pool):
    # A flat repository (the reference's "non-compliant" source): InRelease and a bare Packages index in the
    # folder the URL names, Filename entries relative to it ("./x.deb").
    root = tmp_path / "www" / "flat"
    pkgfactory.make_deb(root, "flatpkg")
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=root, capture_output=True, check=True).stdout
    assert b"Filename: ./flatpkg_1.0-1_amd64.deb" in packages
    (root / "Packages").write_bytes(packages)
    release = subprocess.run(["apt-ftparchive", "release", "."], cwd=root, capture_output=True, check=True).stdout
    (root / "InRelease").write_bytes(upstream_key.clearsign(release))
    upstream = Upstream(tmp_path / "www")
    server = await aiohttp_server(upstream.app, host="127.0.0.1")
    h = bearer(admin_key)
    body = {"name": "flat", "type": "deb", "url": f"http://127.0.0.1:{server.port}/flat", "non-compliant": "true",
            "distributions": [{"name": "stable", "components": [{"name": "main"}]}]}
    assert (await client.post("/api/v2/source/deb/", json=body, headers=h)).status == 201
    assert (await client.post("/api/v2/source/deb/flat/keys", json={"armored": upstream_key.armored()},
                              headers=h)).status == 201
    r = await client.post("/api/v2/repo/", json={"name": "flat", "type": "deb", "dist": "stable", "section": "main",
                                                 "source": "flat", "arch": ["amd64"]}, headers=h)
    task = await run_mirror((await r.json())["results"]["Id"])
    assert task["Status"] == "done", task["Error"]
    assert await _names(pool, task["Result"]["snapshot"]) == ["flatpkg_1.0-1_amd64.deb"]
    assert upstream.counts["flat/flatpkg_1.0-1_amd64.deb"] == 1 and upstream.counts["flat/Packages"] == 1


async def test_a_scheduled_mirror_runs(site, make_mirror, client, admin_key, pool, redis, run_worker):
    from app.tasks import schedules

    repo_id = await make_mirror(site)
    h = bearer(admin_key)
    r = await client.post("/api/v2/tasks/scheduled", headers=h,
                          json={"kind": "mirror", "params": {"repo": repo_id}, "cron": "0 2 * * *"})
    assert r.status == 201, await r.text()
    assert (await r.json())["results"]["Target"] == f"repo:{repo_id}"
    r = await client.post("/api/v2/tasks/scheduled", headers=h,
                          json={"kind": "mirror", "params": {"repo": 999}, "cron": "0 2 * * *"})
    assert r.status == 400
    await pool.execute("UPDATE tasks SET next_run_at = now() - interval '1 minute' WHERE type = 'scheduled'")
    assert len(await schedules.run_due(pool, redis)) == 1
    await run_worker()
    row = await pool.fetchrow("SELECT status, result FROM tasks WHERE kind = 'mirror' AND type = 'immediate'")
    assert row["status"] == "done" and row["result"]["downloaded"] == 4


async def test_dashboard_shows_the_mirror_and_runs_it(site, make_mirror, run_mirror, client, make_key, pool, redis):
    from tests.test_dashboard import csrf_of, login

    repo_id = await make_mirror(site, include=["a*", "common"])
    await run_mirror(repo_id)
    viewer = await make_key("viewer", "vic")
    await login(client, api_key=viewer)
    page = await (await client.get(f"/repos/{repo_id}")).text()
    assert "Mirror of up1" in page and site.url in page and "include a* common" in page
    assert "task #1</a> done" in page and "Mirror now" not in page
    token = await csrf_of(client, f"/repos/{repo_id}")
    assert (await client.post(f"/repos/{repo_id}/mirror", data={"csrf": token}, allow_redirects=False)).status == 403
    client.session.cookie_jar.clear()
    await login(client, api_key=await make_key("operator", "olga"))
    page = await (await client.get(f"/repos/{repo_id}")).text()
    assert "Mirror now" in page
    token = await csrf_of(client, f"/repos/{repo_id}")
    resp = await client.post(f"/repos/{repo_id}/mirror", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/repos/{repo_id}?task=2"
    assert await pool.fetchval("SELECT kind || ' ' || target || ' ' || requested_by FROM tasks WHERE id = 2") == \
        f"mirror repo:{repo_id} olga"


async def test_transient_upstream_errors_are_retried(site, make_mirror, run_mirror, pool):
    site.upstream.failing["debian/dists/stable/InRelease"] = 2
    site.upstream.failing["debian/pool/main/beta_1.0-1_amd64.deb"] = 3
    site.upstream.failing["debian/pool/main/gamma_1.0-1_amd64.deb"] = 4      # one more than the retries
    task = await run_mirror(await make_mirror(site), settings={"mirror_retry_seconds": 0.01})
    assert task["Status"] == "error"
    assert task["Error"].endswith("gamma_1.0-1_amd64.deb: HTTP 503")
    assert site.upstream.counts["debian/dists/stable/InRelease"] == 3
    assert site.upstream.counts["debian/pool/main/beta_1.0-1_amd64.deb"] == 4
    assert site.upstream.counts["debian/pool/main/gamma_1.0-1_amd64.deb"] == 4
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 3


async def test_through_a_proxy(site, make_mirror, run_mirror, aiohttp_server, pool):
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        async with aiohttp.ClientSession() as s, s.get(str(request.url)) as r:
            return web.Response(body=await r.read(), status=r.status)

    app = web.Application()
    app.router.add_get("/{path:.*}", forward)
    proxy = await aiohttp_server(app, host="127.0.0.1")
    repo_id = await make_mirror(site)
    task = await run_mirror(repo_id, settings={"mirror_proxy": f"http://127.0.0.1:{proxy.port}"})
    assert task["Status"] == "done", task["Error"]
    assert len([u for u in seen if u.endswith(".deb")]) == 4 and seen[0].endswith("/dists/stable/InRelease")
    # The upstream's own name is still checked: a private one is refused before the proxy sees it.
    seen.clear()
    site.url = site.url.replace("127.0.0.1", "localhost")
    task = await run_mirror(await make_mirror(site), settings={"mirror_proxy": f"http://127.0.0.1:{proxy.port}",
                                                               "mirror_allow_hosts": ()})
    assert task["Status"] == "error" and "localhost resolves to loopback" in task["Error"] and seen == []


async def test_tls_client_certificate(tmp_path, aiohttp_server, upstream_key, client, admin_key, run_mirror, pool):
    pki = Pki()
    archive = DebArchive(tmp_path / "www" / "debian", upstream_key)
    archive.add("secret")
    archive.build()
    upstream = Upstream(tmp_path / "www")
    server = await aiohttp_server(upstream.app, host="127.0.0.1", ssl=pki.server_context(tmp_path))
    h = bearer(admin_key)

    async def mirror_with(name: str, tls: dict) -> dict:
        body = {"name": name, "type": "deb", "url": f"https://127.0.0.1:{server.port}/debian",
                "distributions": [{"name": "stable", "components": [{"name": "main"}],
                                   "gpgkeys": [{"armored": upstream_key.armored()}]}], "ssl-authentication": tls}
        assert (await client.post("/api/v2/source/deb/", json=body, headers=h)).status == 201
        r = await client.post("/api/v2/repo/", json={"name": name, "type": "deb", "dist": "stable", "section": "main",
                                                     "source": name, "arch": ["amd64"]}, headers=h)
        return await run_mirror((await r.json())["results"]["Id"], settings={"mirror_retry_seconds": 0.01})

    task = await mirror_with("tls", {"certificate": pki.client_cert, "private-key": pki.client_key,
                                     "ca-certificate": pki.ca})
    assert task["Status"] == "done", task["Error"]
    assert await _names(pool, task["Result"]["snapshot"]) == ["secret_1.0-1_amd64.deb"]
    task = await mirror_with("nocert", {"ca-certificate": pki.ca})
    assert task["Status"] == "error" and "InRelease" in task["Error"]
    assert upstream.counts["debian/dists/stable/InRelease"] == 1         # the first run's: refused at the handshake
    task = await mirror_with("noca", {"certificate": pki.client_cert, "private-key": pki.client_key})
    assert task["Status"] == "error" and "certificate verify failed" in task["Error"]


@pytest.mark.slow
async def test_rate_limit_is_one_budget_for_the_run(site, make_mirror, run_mirror):
    # A budget of a quarter of the packages' bytes per second makes the run wait about three seconds in all,
    # whatever the number of connections (the limiter's own account is checked, not a clock).
    total = sum(f.stat().st_size for f in site.archive.pool.iterdir())
    rate = total // 4
    task = await run_mirror(await make_mirror(site), settings={"mirror_rate_limit": rate})
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["bytes"] == total
    # Everything beyond the first second's budget was waited for (the index files count too).
    assert task["Result"]["throttled_seconds"] >= (total - rate) / rate - 0.01


async def test_a_file_longer_than_its_index_gives_is_refused(site, make_mirror, run_mirror, pool):
    path = site.archive.pool / "beta_1.0-1_amd64.deb"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"\0" * 100)         # served with a Content-Length the index does not give
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "error"
    assert f"beta_1.0-1_amd64.deb: larger than the {size} bytes its index gives" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == 0


async def test_bodies_are_asked_for_as_they_are(site, make_mirror, run_mirror):
    """An upstream that compresses its answers for clients that accept it (a web server's gzip) is asked for the
    bytes as they are: the signed sizes and digests are of those."""
    site.upstream.gzip_when_asked = True
    site.archive.build(compressions=("",))
    task = await run_mirror(await make_mirror(site))
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["downloaded"] == 4 and site.upstream.gzipped == 0


async def test_udebs_are_mirrored_into_their_own_index_when_asked(site, make_mirror, run_mirror, pool, client,
                                                                 admin_key):
    """`udebs: true` also takes <component>/debian-installer/binary-<arch>, republished there (and only there);
    without it a mirror takes no udeb, and an index that lists the other kind is refused."""
    from debian import deb822

    site.archive.add_udeb("di-utils")
    site.archive.add_udeb("di-common", arch="all")
    site.archive.build()
    plain = await run_mirror(await make_mirror(site))
    assert plain["Status"] == "done", plain["Error"]
    assert not any(n.endswith(".udeb") for n in await _names(pool, plain["Result"]["snapshot"]))
    assert not any("debian-installer" in p for p in site.upstream.counts)

    repo_id = await make_mirror(site, udebs=True)
    task = await run_mirror(repo_id, env="prod")
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["downloaded"] == 2          # the debs came with the first mirror
    assert await _names(pool, task["Result"]["snapshot"]) == [
        "alpha_1.0-1_amd64.deb", "beta_1.0-1_amd64.deb", "common_1.0-1_all.deb", "di-common_1.0-1_all.udeb",
        "di-utils_1.0-1_amd64.udeb", "gamma_1.0-1_amd64.deb"]
    base = "/repo/deb/mirror2/stable/main/prod"

    async def index(folder: str) -> dict[str, dict]:
        r = await client.get(f"{base}/dists/stable/main/{folder}/Packages")
        assert r.status == 200, folder
        return {p["Package"]: p for p in deb822.Packages.iter_paragraphs(await r.text(), use_apt_pkg=False)}

    assert set(await index("binary-amd64")) == {"alpha", "beta", "gamma", "common"}
    installer = await index("debian-installer/binary-amd64")
    assert set(installer) == {"di-utils", "di-common"}
    release = await (await client.get(f"{base}/dists/stable/Release")).text()
    assert "main/debian-installer/binary-amd64/Packages" in release
    for name, stanza in installer.items():
        assert stanza["Filename"].endswith(".udeb")
        r = await client.get(f"{base}/{stanza['Filename']}")
        assert r.status == 200 and len(await r.read()) == int(stanza["Size"])

    h = bearer(admin_key)
    r = await client.post("/api/v2/repo/", headers=h, json={"name": "el", "type": "rpm", "releasever": "9",
                                                          "source": "none", "arch": ["x86_64"], "udebs": True})
    assert r.status == 400 and (await r.json())["message_error"] == ["udebs are for deb mirrors"], await r.text()

    # An installer index that lists a .deb is refused, naming it.
    folder = site.archive.root / "dists" / "stable" / "main" / "debian-installer" / "binary-amd64"
    text = (folder / "Packages").read_bytes().replace(b"di-utils_1.0-1_amd64.udeb", b"di-utils_1.0-1_amd64.deb")
    site.archive.write_release(_with_index(site.archive, "main/debian-installer/binary-amd64/Packages", text))
    task = await run_mirror(repo_id)
    assert task["Status"] == "error" and "di-utils" in task["Error"] and "not a .udeb" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE repo_id = $1", repo_id) == 1


def _with_index(archive, rel: str, text: bytes) -> bytes:
    """The archive's Release with `rel` (plain) replaced by `text` and its other compressions dropped."""
    import hashlib

    dist_dir = archive.root / "dists" / archive.dist
    (dist_dir / rel).write_bytes(text)
    lines = []
    for line in (dist_dir / "Release").read_text().splitlines(keepends=True):
        parts = line.split()
        if len(parts) == 3 and parts[2].startswith(rel):
            if parts[2] != rel:
                continue
            algorithm = {32: hashlib.md5, 40: hashlib.sha1, 64: hashlib.sha256, 128: hashlib.sha512}[len(parts[0])]
            digest = algorithm(text).hexdigest()
            line = f" {digest} {len(text)} {rel}\n"
        lines.append(line)
    return "".join(lines).replace("Acquire-By-Hash: yes", "Acquire-By-Hash: no").encode()
