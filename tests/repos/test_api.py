"""Issue 3 through the HTTP API, a real arq worker, real apt-get and dnf."""
import asyncio
import os
from dataclasses import replace

import aiohttp
import pytest

from app.main import create_app
from tests import pkgfactory
from tests.clients import AptRoot, dnf_install, rpm_installed
from tests.helpers import bearer

pytestmark = pytest.mark.usefixtures("repo_db")


async def _json(resp):
    return await resp.json(content_type=None)


async def _create_repo(client, key, **body):
    r = await client.post("/api/v2/repo/", json=body, headers=bearer(key))
    assert r.status == 201, await r.text()
    return (await _json(r))["results"]["Id"]


async def _create_snapshot(client, key, repo_id, **body):
    r = await client.post(f"/api/v2/repo/{repo_id}/snapshot", json=body, headers=bearer(key))
    assert r.status == 201, await r.text()
    return (await _json(r))["results"]["Id"]


def _form(files, **options):
    form = aiohttp.FormData()
    for opt, value in options.items():
        form.add_field(opt.replace("_", "-"), value)
    for i, (name, data) in enumerate(files):
        form.add_field(f"f{i}" if i % 2 else "file", data, filename=name, content_type="application/octet-stream")
    return form


async def _upload(client, key, snap_id, files, **options):
    r = await client.post(f"/api/v2/snapshot/{snap_id}/upload", data=_form(files, **options), headers=bearer(key))
    return r.status, await _json(r)


async def _rebuild(client, key, snap_id, sign="true"):
    r = await client.put(f"/api/v2/snapshot/{snap_id}/rebuild", json={"gpgSign": sign}, headers=bearer(key))
    assert r.status == 202, await r.text()
    return (await _json(r))["task-id"]


async def _task(pool, task_id):
    return await pool.fetchrow("SELECT status, error, result FROM tasks WHERE id = $1", task_id)


async def test_repository_management_and_roles(client, make_key):
    admin, viewer, uploader = await make_key("admin"), await make_key("viewer"), await make_key("uploader")
    r = await client.get("/api/v2/repo/", headers=bearer(viewer))
    assert r.status == 200 and (await _json(r))["results"] == []            # empty list is a 200
    r = await client.post("/api/v2/repo/", json={"name": "x", "type": "deb", "dist": "d", "section": "s"},
                          headers=bearer(uploader))
    assert r.status == 403
    deb = await _create_repo(client, admin, name="nginx", type="deb", dist="bookworm", section="nginx")
    rpm = await _create_repo(client, admin, name="nginx", type="rpm", releasever=9)
    r = await client.post("/api/v2/repo/", json={"name": "nginx", "type": "deb", "dist": "bookworm",
                                                 "section": "nginx"}, headers=bearer(admin))
    assert r.status == 409
    for bad in ({"name": "../x", "type": "deb", "dist": "d", "section": "s"}, {"name": "x", "type": "zip"},
                {"name": "x", "type": "rpm"}, {"name": 5, "type": "deb", "dist": "d", "section": "s"}):
        r = await client.post("/api/v2/repo/", json=bad, headers=bearer(admin))
        assert r.status == 400, bad
        assert (await _json(r))["message_error"]
    listing = (await _json(await client.get("/api/v2/repo/", headers=bearer(viewer))))["results"]
    assert {(x["Id"], x["Package_type"]) for x in listing} == {(deb, "deb"), (rpm, "rpm")}
    s1 = await _create_snapshot(client, uploader, deb)
    s2 = await _create_snapshot(client, uploader, deb, **{"from": s1})
    snaps = (await _json(await client.get(f"/api/v2/repo/{deb}/", headers=bearer(viewer))))["results"]
    assert [s["Id"] for s in snaps] == [s2, s1] and snaps[0]["Environments"] == ""
    assert (await client.get("/api/v2/repo/999/", headers=bearer(viewer))).status == 404
    assert (await client.get("/api/v2/repo/abc/", headers=bearer(viewer))).status == 400
    assert (await client.get("/api/v2/snapshot/999/", headers=bearer(viewer))).status == 404
    r = await client.delete(f"/api/v2/repo/{rpm}/", headers=bearer(admin))
    assert r.status == 200
    assert (await client.delete(f"/api/v2/repo/{rpm}/", headers=bearer(admin))).status == 404
    r = await client.post("/api/v2/environment/", json={"name": "staging"}, headers=bearer(admin))
    assert r.status == 201
    assert (await client.post("/api/v2/environment/", json={"name": "staging"}, headers=bearer(admin))).status == 409
    assert (await client.post("/api/v2/environment/", json={"name": "Bad Name"}, headers=bearer(admin))).status == 400


@pytest.mark.clients
async def test_deb_upload_rebuild_point_with_apt(client, make_key, pool, run_worker, tmp_path, settings):
    admin, uploader = await make_key("admin"), await make_key("uploader")
    repo = await _create_repo(client, admin, name="app", type="deb", dist="bookworm", section="main")
    s1 = await _create_snapshot(client, uploader, repo)
    debs = [pkgfactory.make_deb(tmp_path / "v1", *spec) for spec in
            (("app-core", "1.0-1", "amd64"), ("app-core", "1.0-1", "arm64"), ("app-data", "1:0.5", "all"))]
    status, body = await _upload(client, uploader, s1, [("../../etc/" + d.name, d.read_bytes()) for d in debs])
    assert status == 200, body
    assert len(body["results"]["Following packages have been uploaded successfully"]) == 3
    assert {f["filename"] for f in body["files"]} == {"app-core_1.0-1_amd64.deb", "app-core_1.0-1_arm64.deb",
                                                     "app-data_0.5_all.deb"}
    task_id = await _rebuild(client, uploader, s1)
    await run_worker()
    task = await _task(pool, task_id)
    assert task["status"] == "done", task["error"]
    assert task["result"]["packages"] == 3

    # Point prod (honours the URL env), then a real apt-get reads the signed repository.
    r = await client.patch("/api/v2/environment/prod/point", json={"snapshot": s1}, headers=bearer(admin))
    assert r.status == 202
    await run_worker()
    key_resp = await client.get("/repo/gpgkeys/depot.test.pub")
    assert key_resp.status == 200
    key = tmp_path / "depot.asc"
    key.write_text(await key_resp.text())
    apt = AptRoot(tmp_path / "apt")
    apt.set_source(str(client.make_url("/repo/deb/app/bookworm/main/prod")), "bookworm", "main", key)
    up = await asyncio.to_thread(apt.update)
    assert up.returncode == 0, up.stdout + up.stderr
    dl = await asyncio.to_thread(apt.download, "app-core", "app-data")
    assert dl.returncode == 0, dl.stdout + dl.stderr
    assert sorted(p.name for p in (apt.root / "dl").iterdir()) == ["app-core_1.0-1_amd64.deb",
                                                                  "app-data_1%3a0.5_all.deb"]
    assert not (settings.storage_dir / "public/deb/app/bookworm/main/preprod").exists()

    # New snapshot with a newer version; prod follows after the point, on the next update.
    s2 = await _create_snapshot(client, uploader, repo, **{"from": s1})
    newer = pkgfactory.make_deb(tmp_path / "v2", "app-core", "2.0-1", "amd64")
    status, body = await _upload(client, uploader, s2, [(newer.name, newer.read_bytes())])
    assert status == 200
    await _rebuild(client, uploader, s2)
    await run_worker()
    await client.patch("/api/v2/environment/prod/point", json={"snapshot": s2}, headers=bearer(admin))
    await run_worker()
    up = await asyncio.to_thread(apt.update)
    assert up.returncode == 0, up.stderr
    assert "Candidate: 2.0-1" in await asyncio.to_thread(apt.policy, "app-core")
    envs = (await _json(await client.get(f"/api/v2/repo/{repo}/", headers=bearer(admin))))["results"]
    assert {s["Id"]: s["Environments"] for s in envs} == {s2: "prod", s1: ""}

    # Tampered Packages on the served tree: apt-get update fails.
    tree = settings.storage_dir / "public/deb/app/bookworm/main/prod/dists/bookworm/main/binary-amd64"
    for name in ("Packages", "Packages.gz"):
        data = (tree / name).read_bytes()
        with open(tree / name, "r+b") as f:
            f.write(data[:-1] + bytes([data[-1] ^ 1]))
    apt2 = AptRoot(tmp_path / "apt2")
    apt2.set_source(str(client.make_url("/repo/deb/app/bookworm/main/prod")), "bookworm", "main", key)
    bad = await asyncio.to_thread(apt2.update)
    assert bad.returncode != 0 and "Failed to fetch" in bad.stderr

    # Listing and diff: relative paths and URLs only; diff by content.
    pk = (await _json(await client.get(f"/api/v2/snapshot/{s2}/packages", headers=bearer(admin))))["results"]
    assert all("absolute-path" not in p and not p["relative-path"].startswith("/") for p in pk)
    d = (await _json(await client.get(f"/api/v2/snapshot/{s1}/diff/{s2}", headers=bearer(admin))))["results"]
    assert [p["filename"] for p in d["added"]] == ["app-core_2.0-1_amd64.deb"] and d["removed"] == []


async def test_upload_refusals_store_nothing(client, make_key, pool, tmp_path, settings, aiohttp_client, rpm_dir):
    admin = await make_key("admin")
    repo = await _create_repo(client, admin, name="r", type="deb", dist="stable", section="main")
    snap = await _create_snapshot(client, admin, repo)
    good = pkgfactory.make_deb(tmp_path, "hello", "1.0-1", "amd64")
    dup = pkgfactory.deb_bytes("hello", control=pkgfactory.control_text("hello", "1.0", "amd64", extra="Version: 2\n"))
    bomb = pkgfactory.deb_bytes("hello", control_files={"./postinst": b"\0" * (4 << 20)})
    files = [("notes.txt", b"just text"), ("trunc.deb", good.read_bytes()[:500]),
             ("hello.rpm", (rpm_dir / "depot-hello-1.0-1.noarch.rpm").read_bytes()), ("empty.deb", b""),
             ("dup.deb", dup), ("bomb.deb", bomb), ("evil.deb", pkgfactory.deb_bytes("x", control_files={"../../evil": b"1"}))]
    pool_dir = settings.storage_dir / "pool"
    before = sorted(p for p in pool_dir.rglob("*") if p.is_file())     # storage is shared by the session
    status, body = await _upload(client, admin, snap, files)
    assert status == 400
    assert body["message_error"][0]["Following files are not considered valid packages and have not been uploaded"] \
        == ["notes.txt", "trunc.deb", "hello.rpm", "dup.deb", "bomb.deb", "evil.deb"]
    assert body["message_error"][0]["Following packages are empty and have not been uploaded"] == ["empty.deb"]
    reasons = {f["file"]: f["reason"] for f in body["files"]}
    assert "duplicate" in reasons["dup.deb"] and "too large" in reasons["bomb.deb"] and "unsafe" in reasons["evil.deb"]
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 0
    assert sorted(p for p in pool_dir.rglob("*") if p.is_file()) == before
    assert not any((settings.storage_dir / "tmp").iterdir())

    # One good file among bad ones is stored and reported; the failure is reported too (not hidden).
    status, body = await _upload(client, admin, snap, [("x.txt", b"nope"), (good.name, good.read_bytes())])
    assert status == 400
    assert body["results"]["Following packages have been uploaded successfully"] == [good.name]
    status, body = await _upload(client, admin, snap, [(good.name, good.read_bytes())])
    assert status == 400
    assert body["message_error"] == [{"Following packages already exist and have not been uploaded": [good.name]}]
    status, body = await _upload(client, admin, snap, [(good.name, good.read_bytes())], ignore_if_exists="yes")
    assert status == 200 and body["results"] == {"Following packages already exist and have been ignored": [good.name]}
    status, body = await _upload(client, admin, snap, [(good.name, good.read_bytes())], overwrite="1",
                                 ignore_if_exists="on")
    assert status == 400 and body["message_error"] == ["Options overwrite and ignore-if-exists are mutually exclusive"]
    status, body = await _upload(client, admin, snap, [(good.name, good.read_bytes())], overwrite="maybe")
    assert status == 400 and body["message_error"] == ["Invalid overwrite value"]
    # No file at all.
    r = await client.post(f"/api/v2/snapshot/{snap}/upload", data=_form([], overwrite="true"), headers=bearer(admin))
    assert r.status == 400

    # Oversize: 413 JSON with the reason; nothing stored, temp file removed.
    small = await aiohttp_client(create_app(replace(settings, max_upload_bytes=4096)))
    big = pkgfactory.deb_bytes("big", payload=os.urandom(20000))
    status, body = await _upload(small, admin, snap, [("big.deb", big), ("hello2.deb", good.read_bytes())])
    assert status == 413
    assert body["message_error"][0]["Following packages are too large and have not been uploaded"] == ["big.deb"]
    assert not any((settings.storage_dir / "tmp").iterdir())
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 1


async def test_permissions_and_wire_messages(client, make_key):
    admin, viewer, uploader = await make_key("admin"), await make_key("viewer"), await make_key("uploader")
    repo = await _create_repo(client, admin, name="r", type="deb", dist="stable", section="main")
    snap = await _create_snapshot(client, admin, repo)
    status, body = await _upload(client, viewer, snap, [("a.deb", b"x")])
    assert status == 403 and body["message_error"] == ["You are not allowed to upload packages"]
    r = await client.put(f"/api/v2/snapshot/{snap}/rebuild", json={"gpgSign": "true"}, headers=bearer(viewer))
    assert r.status == 403 and (await _json(r))["message_error"] == ["You are not allowed to rebuild a repository snapshot"]
    r = await client.put(f"/api/v2/snapshot/{snap}/rebuild", json={"gpgSign": "maybe"}, headers=bearer(uploader))
    assert r.status == 400 and (await _json(r))["message_error"] == ["Invalid GPG sign value"]
    r = await client.put(f"/api/v2/snapshot/{snap}/rebuild", json={}, headers=bearer(uploader))
    assert r.status == 400 and (await _json(r))["message_error"] == ["Invalid request"]
    r = await client.put("/api/v2/snapshot/999/rebuild", json={"gpgSign": "no"}, headers=bearer(uploader))
    assert r.status == 404
    r = await client.patch("/api/v2/environment/prod/point", json={"snapshot": snap}, headers=bearer(uploader))
    assert r.status == 403
    assert (await _json(r))["message_error"] == ["You are not allowed to point an environment to a snapshot"]
    r = await client.patch("/api/v2/environment/nowhere/point", json={"snapshot": snap}, headers=bearer(admin))
    assert r.status == 404 and (await _json(r))["message_error"] == ["Environment nowhere does not exist"]
    r = await client.patch("/api/v2/environment/prod/point", json={"snapshot": 999}, headers=bearer(admin))
    assert r.status == 404 and (await _json(r))["message_error"] == ["Snapshot #999 does not exist"]
    r = await client.patch("/api/v2/environment/prod/point", json={}, headers=bearer(admin))
    assert r.status == 400 and (await _json(r))["message_error"] == ["Snapshot Id is required"]
    r = await client.delete(f"/api/v2/snapshot/{snap}/packages", json={"packages": ["Release"]}, headers=bearer(viewer))
    assert r.status == 403 and (await _json(r))["message_error"] == ["You are not allowed to delete packages."]
    r = await client.delete(f"/api/v2/snapshot/{snap}/packages", json={"packages": ["Release", "InRelease"]},
                            headers=bearer(uploader))
    assert r.status == 404                                                   # metadata is never deletable
    assert (await client.get("/repo/../../etc/passwd")).status == 404
    assert (await client.get("/repo/")).status == 404


async def test_rebuild_requests_coalesce(client, make_key, pool, run_worker):
    admin = await make_key("admin")
    repo = await _create_repo(client, admin, name="r", type="rpm", releasever="9")
    snap = await _create_snapshot(client, admin, repo)
    ids = {await _rebuild(client, admin, snap, sign=s) for s in ("true", "yes", True, "false")}
    assert len(ids) == 1                                # queued requests join one task
    (task_id,) = ids
    assert (await pool.fetchrow("SELECT params FROM tasks WHERE id = $1", task_id))["params"]["gpg_sign"] is False
    await run_worker()
    assert (await _task(pool, task_id))["status"] == "done"
    r = await client.get(f"/api/v2/task/{task_id}", headers=bearer(admin))    # state, progress, result
    task = (await _json(r))["results"]
    assert (task["Status"], task["Kind"], task["Progress"]) == ("done", "rebuild", 100)
    assert task["Result"]["packages"] == 0 and task["Result"]["signed"] is False
    assert await _rebuild(client, admin, snap) != task_id   # after it ran, a new one


@pytest.mark.clients
async def test_rpm_through_api_with_dnf(client, make_key, pool, run_worker, tmp_path, rpm_dir):
    admin = await make_key("admin")
    repo = await _create_repo(client, admin, name="tools", type="rpm", releasever="9")
    snap = await _create_snapshot(client, admin, repo)
    files = [(f.name, f.read_bytes()) for f in sorted(rpm_dir.glob("*.rpm"))]
    files.append(("app.deb", pkgfactory.deb_bytes("app")))               # a deb into an rpm repository
    status, body = await _upload(client, admin, snap, files)
    assert status == 400
    assert body["message_error"][0] == {
        "Following files are not considered valid packages and have not been uploaded": ["app.deb"]}
    assert len(body["results"]["Following packages have been uploaded successfully"]) == 3
    task_id = await _rebuild(client, admin, snap)
    await run_worker()
    assert (await _task(pool, task_id))["status"] == "done"
    r = await client.patch("/api/v2/environment/preprod/point", json={"snapshot": snap}, headers=bearer(admin))
    assert r.status == 202
    await run_worker()
    url = str(client.make_url("/repo/rpm/tools/9/preprod"))
    out = await asyncio.to_thread(dnf_install, tmp_path / "root", url, str(client.make_url("/repo/gpgkeys/depot.test.pub")),
                                  "depot-tool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert rpm_installed(tmp_path / "root") == ["depot-tool-2.1-3"]


async def test_profile_repos_serve_real_urls_and_key(client, make_key, settings):
    admin, viewer = await make_key("admin"), await make_key("viewer")
    deb = await _create_repo(client, admin, name="nginx", type="deb", dist="bookworm", section="nginx")
    rpm = await _create_repo(client, admin, name="nginx", type="rpm", releasever="9")
    empty = await _create_repo(client, admin, name="nosnap", type="rpm", releasever="9")
    await _create_snapshot(client, admin, deb)
    await _create_snapshot(client, admin, rpm)
    r = await client.post("/api/v2/profile", json={"name": "web"}, headers=bearer(admin))
    assert r.status == 201, await r.text()
    r = await client.put("/api/v2/profile/web/repos", json={"repos": [deb, rpm, empty]}, headers=bearer(viewer))
    assert r.status == 403
    r = await client.put("/api/v2/profile/web/repos", json={"repos": [deb, 999]}, headers=bearer(admin))
    assert r.status == 404
    r = await client.put("/api/v2/profile/web/repos", json={"repos": "1,2"}, headers=bearer(admin))
    assert r.status == 400
    r = await client.put("/api/v2/profile/nope/repos", json={"repos": [deb]}, headers=bearer(admin))
    assert r.status == 404
    r = await client.put("/api/v2/profile/web/repos", json={"repos": [deb, rpm, empty]}, headers=bearer(admin))
    assert r.status == 200 and [x["Id"] for x in (await _json(r))["results"]] == [deb, rpm, empty]

    legacy = (await _json(await client.get("/api/v2/profile/web/repos", headers=bearer(viewer))))["results"]
    assert [x["filename"] for x in legacy] == ["repomanager-nginx.list", "repomanager-nginx.repo"]   # no snapshot: left out
    assert legacy[0]["content"] == ("deb http://depot.test:8080/repo/deb/nginx/bookworm/nginx/__ENV__ "
                                    "bookworm nginx")
    assert "baseurl=http://depot.test:8080/repo/rpm/nginx/9/__ENV__" in legacy[1]["content"]
    new = (await _json(await client.get("/api/v2/profile/web/repos?new-format", headers=bearer(viewer))))["results"]
    assert [x["url"] for x in new["repos"]] == ["http://depot.test:8080/repo/deb/nginx/bookworm/nginx/__ENV__",
                                                "http://depot.test:8080/repo/rpm/nginx/9/__ENV__"]
    key_url = new["reposerver"]["gpgkey_url"]
    assert key_url == "http://depot.test:8080/repo/gpgkeys/depot.test.pub"
    r = await client.get(key_url.removeprefix(settings.base_url))        # Depot really serves it
    assert r.status == 200 and (await r.text()).startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
