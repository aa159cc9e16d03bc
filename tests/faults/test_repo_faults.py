"""Repositories under faults: a worker SIGKILLed mid-rebuild, concurrent uploads, uploads during a rebuild,
a full disk. Real `depot serve` and `depot worker` processes, each test with its own storage folder."""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import aiohttp
import pytest

from tests.faults.repo_client import DIST, SECTION, Repos, debs, packages_in, release_lists, wait_task

PACKAGES = f"dists/{DIST}/{SECTION}/binary-amd64/Packages"
RELEASE = f"dists/{DIST}/Release"


async def _reader(repos: Repos, url: str, seen: list, stop: asyncio.Event):
    """A client reading the published tree over and over: Release, then the Packages it lists."""
    while not stop.is_set():
        rs, release = await repos.fetch(f"{url}/{RELEASE}")
        ps, index = await repos.fetch(f"{url}/{PACKAGES}")
        seen.append((rs, release, ps, index))
        await asyncio.sleep(0.01)


def _storage_env(tmp_path, name="storage") -> tuple[dict, str]:
    path = tmp_path / name
    path.mkdir()
    return {"DEPOT_STORAGE_DIR": str(path)}, str(path)


async def test_worker_killed_mid_rebuild_task_reruns_and_clients_see_old_or_new(processes, fpool, fault_admin_key,
                                                                                 tmp_path):
    env, storage = _storage_env(tmp_path)
    server, base = processes.server(**env)
    worker = processes.worker(**env)
    v1 = [f"pkg{n:04d}" for n in range(300)]
    v2 = [f"pkg{n:04d}" for n in range(300, 1500)]
    async with aiohttp.ClientSession() as session:
        repos = Repos(session, base, fault_admin_key)
        _, snap = await repos.deb_snapshot()
        status, body = await repos.upload(snap, debs(v1))
        assert status == 200, body
        await wait_task(fpool, await repos.rebuild(snap, sign=True))
        url = repos.tree_url("app", snap)
        _, old_release = await repos.fetch(f"{url}/{RELEASE}")
        _, old_index = await repos.fetch(f"{url}/{PACKAGES}")
        assert packages_in(old_index) == {(n, "1.0-1") for n in v1}

        for start in range(0, len(v2), 500):  # at most 1000 files per request
            status, body = await repos.upload(snap, debs(v2[start:start + 500]))
            assert status == 200, body
        seen: list = []
        stop = asyncio.Event()
        reader = asyncio.create_task(_reader(repos, url, seen, stop))
        task_id = await repos.rebuild(snap, sign=True)
        # Kill once the rebuild is rendering (progress 30: metadata being written into a new tree).
        deadline = time.monotonic() + 30
        while (progress := await fpool.fetchval("SELECT progress FROM tasks WHERE id = $1", task_id)) < 30:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.002)
        worker.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(worker.wait, 10)
        status_after_kill = await fpool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id)
        processes.worker(**env)  # the next worker's reconciler finds the stale task and runs it again
        await wait_task(fpool, task_id, ("done", "error"), timeout=60)
        rerun_seconds = time.monotonic() - killed_at
        await asyncio.sleep(0.3)
        stop.set()
        await reader
        _, new_release = await repos.fetch(f"{url}/{RELEASE}")
        _, new_index = await repos.fetch(f"{url}/{PACKAGES}")

    row = await fpool.fetchrow("SELECT status, attempts, error FROM tasks WHERE id = $1", task_id)
    assert row["status"] == "done", row["error"]
    assert row["attempts"] >= 2
    assert packages_in(new_index) == {(n, "1.0-1") for n in v1 + v2}
    assert release_lists(new_release, new_index, f"{SECTION}/binary-amd64/Packages")
    # Every read during the kill and the re-run saw a whole old tree or a whole new one.
    assert seen and all(rs == 200 and ps == 200 for rs, _, ps, _ in seen)
    assert {index for _, _, _, index in seen} <= {old_index, new_index}
    assert {release for _, release, _, _ in seen} <= {old_release, new_release}
    leftovers = [p for p in os.listdir(os.path.join(storage, "trees")) if p.startswith(".build-")]
    assert leftovers == [], "the killed run's build folder was not cleaned up by the re-run"
    print(f"\nworker SIGKILL at {progress}% of a 1500-package rebuild (task {status_after_kill} after the kill): "
          f"re-run done {rerun_seconds:.1f}s later, attempts {row['attempts']}; {len(seen)} reads, all old-or-new; "
          "the killed run's build folder removed")


async def test_same_file_uploaded_twice_at_once_and_upload_during_rebuild(processes, fpool, fault_admin_key, tmp_path):
    env, storage = _storage_env(tmp_path)
    server, base = processes.server(**env)
    processes.worker(**env)
    async with aiohttp.ClientSession() as session:
        repos = Repos(session, base, fault_admin_key)
        _, snap = await repos.deb_snapshot()
        same = debs(["twin"])
        answers = await asyncio.gather(*(repos.upload(snap, same) for _ in range(4)))
        statuses = sorted(a[0] for a in answers)
        assert statuses.count(200) >= 1 and all(s in (200, 400) for s in statuses), answers
        for s, body in answers:  # the others are told the file is already there
            if s == 400:
                assert "Following packages already exist and have not been uploaded" in body["message_error"][0]
        sha = await fpool.fetchval("SELECT sha256 FROM package_files WHERE name = 'twin'")
        assert await fpool.fetchval("SELECT count(*) FROM package_files WHERE name = 'twin'") == 1
        assert await fpool.fetchval(
            "SELECT count(*) FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
            " WHERE sp.snapshot_id = $1 AND p.name = 'twin'", snap) == 1
        pool_files = [f for d in os.listdir(os.path.join(storage, "pool")) for f in os.listdir(os.path.join(storage, "pool", d))]
        assert pool_files.count(sha) == 1 and len(pool_files) == 1
        assert os.listdir(os.path.join(storage, "tmp")) == []

        # Upload while the snapshot is being rebuilt, then ask again: the last rebuild has it all.
        status, _ = await repos.upload(snap, debs([f"bulk{n:03d}" for n in range(300)]))
        assert status == 200
        first = await repos.rebuild(snap)
        await wait_task(fpool, first, ("running", "done"), timeout=30)
        status, body = await repos.upload(snap, debs(["latecomer"]))
        assert status == 200, body
        second = await repos.rebuild(snap)
        await wait_task(fpool, first, timeout=60)
        await wait_task(fpool, second, timeout=60)
        url = repos.tree_url("app", snap)
        _, release = await repos.fetch(f"{url}/{RELEASE}")
        _, index = await repos.fetch(f"{url}/{PACKAGES}")
        in_db = {(r["name"], r["version"]) for r in await fpool.fetch(
            "SELECT p.name, p.version FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
            " WHERE sp.snapshot_id = $1", snap)}
        assert packages_in(index) == in_db and ("latecomer", "1.0-1") in in_db and len(in_db) == 302
        assert release_lists(release, index, f"{SECTION}/binary-amd64/Packages")
        # Every file the index names is served, with the size it claims.
        stanzas = [dict(re.findall(r"^([A-Za-z0-9-]+): (.*)$", st, re.M)) for st in index.decode().split("\n\n")]
        for fields in [f for f in stanzas if "Filename" in f][:20] + [f for f in stanzas if f.get("Package") == "latecomer"]:
            code, data = await repos.fetch(f"{url}/{fields['Filename']}")
            assert code == 200 and len(data) == int(fields["Size"]), fields["Filename"]
            assert hashlib.sha256(data).hexdigest() == fields["SHA256"]
    print(f"\n4 simultaneous uploads of one file: {statuses}, one pool copy, one snapshot row; "
          f"upload during a rebuild: {len(in_db)} packages after the last rebuild, index = database")


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs folder (root only): the storage of a server that will run out of space."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "small"
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(path)], check=True,
                       capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def _tree_files(root: str) -> dict[str, int]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


async def test_storage_full_refuses_the_upload_with_json_and_leaves_nothing(processes, fpool, fault_admin_key,
                                                                            small_disk):
    env = {"DEPOT_STORAGE_DIR": str(small_disk)}
    server, base = processes.server(**env)
    processes.worker(**env)
    async with aiohttp.ClientSession() as session:
        repos = Repos(session, base, fault_admin_key)
        _, snap = await repos.deb_snapshot()
        status, body = await repos.upload(snap, debs(["small-one", "small-two"]))
        assert status == 200, body
        await wait_task(fpool, await repos.rebuild(snap, sign=True))
        url = repos.tree_url("app", snap)
        before_tree = _tree_files(str(small_disk / "public")), _tree_files(str(small_disk / "pool"))
        _, release = await repos.fetch(f"{url}/{RELEASE}")
        rows = await fpool.fetchval("SELECT count(*) FROM package_files")
        free = shutil.disk_usage(small_disk).free
        big = [("huge_1.0-1_amd64.deb", _incompressible_deb("huge", free + (1 << 20)))]
        t0 = time.monotonic()
        status, body = await repos.upload(snap, big)
        took = time.monotonic() - t0
        assert status == 507, (status, body)
        assert body["rc"] == status and body["message_error"]
        assert os.listdir(small_disk / "tmp") == []  # nothing partial
        assert await fpool.fetchval("SELECT count(*) FROM package_files") == rows
        assert (_tree_files(str(small_disk / "public")), _tree_files(str(small_disk / "pool"))) == before_tree
        assert (await repos.fetch(f"{url}/{RELEASE}"))[1] == release
        assert shutil.disk_usage(small_disk).free >= free - 64 * 1024  # the space came back
        # The server is fine afterwards: a small upload still works.
        status, body = await repos.upload(snap, debs(["small-three"]))
        assert status == 200, body
    print(f"\nstorage full: a {len(big[0][1]) >> 10} KiB upload into {free >> 10} KiB free refused with 507 JSON "
          f"in {took:.2f}s; tmp/ empty, pool, published tree and database unchanged; the next small upload works")


def _incompressible_deb(name: str, size: int) -> bytes:
    from tests import pkgfactory

    return pkgfactory.deb_bytes(name, "1.0-1", "amd64", payload=os.urandom(size))
