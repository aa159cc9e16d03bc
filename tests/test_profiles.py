"""Profiles: reads for hosts and users, writes for operators, delete for admins, and the CLI."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import bearer, host_auth
from tests.hosts.helpers import register

FULL = {"name": "web", "Package_exclude": "linux-image.*,kernel.*", "Package_exclude_major": ["nginx", "mysql.*"],
        "Service_reload": "", "Service_restart": "php-fpm,nginx:mysqld", "Notes": "front ends <b>"}


async def _json(resp, status):
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_create_read_edit_delete(client, pool, make_key):
    operator, admin = bearer(await make_key("operator")), bearer(await make_key("admin"))
    body = await _json(await client.post("/api/v2/profile", json=FULL, headers=operator), 201)
    assert body["results"][0]["Package_exclude_major"] == "nginx,mysql.*"
    await _json(await client.post("/api/v2/profile/", json=FULL, headers=operator), 409)

    item = (await _json(await client.get("/api/v2/profile/web", headers=operator), 200))["results"][0]
    assert item == {"Id": item["Id"], "Name": "web", "Package_exclude": "linux-image.*,kernel.*",
                    "Package_exclude_major": "nginx,mysql.*", "Service_reload": "",
                    "Service_restart": "php-fpm,nginx:mysqld", "Notes": "front ends <b>"}
    excludes = (await _json(await client.get("/api/v2/profile/web/excludes/", headers=operator), 200))["results"]
    assert excludes == {"Package_exclude": "linux-image.*,kernel.*", "Package_exclude_major": "nginx,mysql.*"}

    body = await _json(await client.put("/api/v2/profile/web", json={"Service_reload": "nginx"}, headers=operator), 200)
    assert body["results"][0]["Service_reload"] == "nginx" and body["results"][0]["Service_restart"] == "php-fpm,nginx:mysqld"
    await pool.execute("INSERT INTO hosts (hostname, ip, auth_id, token_digest, profile) VALUES ('h', '1', 'id_h', '\\x00', 'web')")
    await _json(await client.put("/api/v2/profile/web/", json={"name": "front"}, headers=operator), 200)
    assert await pool.fetchval("SELECT profile FROM hosts") == "front"

    names = (await _json(await client.get("/api/v2/profile/", headers=operator), 200))["results"]
    assert names == [{"Name": "front"}]
    await _json(await client.delete("/api/v2/profile/front", headers=operator), 403)
    await _json(await client.delete("/api/v2/profile/front", headers=admin), 200)
    body = await _json(await client.get("/api/v2/profile/front", headers=admin), 404)
    assert body["message_error"] == ["front profile does not exist"]


async def test_hosts_read_profiles_but_cannot_write(client, pool, make_key):
    operator = await make_key("operator")
    await client.post("/api/v2/profile", json=FULL, headers=bearer(operator))
    creds = await register(client, operator, "web01")
    host = host_auth(*creds[:2])
    assert (await _json(await client.get("/api/v2/profile/web/", headers=host), 200))["results"][0]["Name"] == "web"
    await _json(await client.post("/api/v2/profile", json=dict(FULL, name="x"), headers=host), 403)
    await _json(await client.put("/api/v2/profile/web", json={"Notes": "x"}, headers=host), 403)
    viewer = bearer(await make_key("viewer"))
    await _json(await client.put("/api/v2/profile/web", json={"Notes": "x"}, headers=viewer), 403)
    assert await pool.fetchval("SELECT notes FROM profiles") == "front ends <b>"


async def test_repos_in_both_formats_and_server_settings(client, make_key, settings):
    key = bearer(await make_key("viewer"))
    await client.post("/api/v2/profile", json=FULL, headers=bearer(await make_key("operator")))
    assert (await _json(await client.get("/api/v2/profile/web/repos", headers=key), 200))["results"] == []
    new = (await _json(await client.get("/api/v2/profile/web/repos?new-format", headers=key), 200))["results"]
    assert new == {"repos": [], "reposerver": {"hostname": "depot.test",
                                               "gpgkey_url": "http://depot.test:8080/repo/gpgkeys/depot.test.pub"}}
    # The Host header never leaks into URLs handed to hosts.
    resp = await client.get("/api/v2/profile/server-settings", headers={**key, "Host": "evil.example"})
    assert (await _json(resp, 200))["results"] == [{"Ip": settings.host, "Url": "http://depot.test:8080", "Package_type": "deb,rpm"}]
    await _json(await client.get("/api/v2/profile/nope/repos", headers=key), 404)


def test_legacy_repo_items_are_built_from_repo_rows(settings):
    from app import profiles

    repos = [{"name": "nginx", "package_type": "deb", "url": "http://depot.test:8080/repo/deb/nginx/bookworm/nginx/__ENV__",
              "distribution": "bookworm", "component": "nginx"},
             {"name": "epel", "package_type": "rpm", "url": "http://depot.test:8080/repo/rpm/epel/9/__ENV__", "releasever": "9"}]
    deb, rpm = profiles.legacy_format(repos, settings)
    assert deb["filename"] == "repomanager-nginx.list"
    assert deb["content"] == "deb http://depot.test:8080/repo/deb/nginx/bookworm/nginx/__ENV__ bookworm nginx"
    assert rpm["content"].startswith("[repomanager-epel___ENV__]\nname=epel repo on depot.test\n")
    assert "repo_releasever" in rpm and "repo_releasever " not in rpm
    new = profiles.new_format(repos, settings)["repos"][0]
    assert {k: new[k] for k in ("filename_prefix", "name", "distribution", "component")} == {
        "filename_prefix": "repomanager-", "name": "nginx", "distribution": "bookworm", "component": "nginx"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "server-settings"},
        {"name": "a b"},
        {"name": 5},
        {"name": "ok", "Package_exclude": "bad name!"},
        {"name": "ok", "Package_exclude": 5},
        {"name": "ok", "Service_restart": ["nginx", 3]},
        {"name": "ok", "Notes": "x" * 5000},
    ],
)
async def test_bad_profiles_are_refused(client, pool, make_key, body):
    resp = await client.post("/api/v2/profile", json=body, headers=bearer(await make_key("operator")))
    assert resp.status == 400 and "message_error" in await resp.json()
    assert await pool.fetchval("SELECT count(*) FROM profiles") == 0


async def test_bad_json_and_unknown_profile_on_edit(client, pool, make_key):
    key = bearer(await make_key("operator"))
    await client.post("/api/v2/profile", json=FULL, headers=key)
    for raw in (b"[]", b"{", b"", b'"x"'):
        assert (await client.put("/api/v2/profile/web", data=raw, headers=key)).status == 400
    await _json(await client.put("/api/v2/profile/nope", json={"Notes": "x"}, headers=key), 404)
    await _json(await client.put("/api/v2/profile/web", json={"Package_exclude": "ok,bad one"}, headers=key), 400)
    assert await pool.fetchval("SELECT package_exclude FROM profiles") == "linux-image.*,kernel.*"


@pytest.mark.slow
def test_cli_profile_set_and_list(settings):
    env = dict(os.environ, DEPOT_DATABASE_URL=settings.database_url)
    depot = [sys.executable, "-m", "app.cli", "profile"]
    out = subprocess.run(depot + ["set", "cli-prof", "--exclude", "linux-image.*,kernel.*", "--service-restart", "cron"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert "profile cli-prof created" in out and "Package_exclude: linux-image.*,kernel.*" in out
    out = subprocess.run(depot + ["set", "cli-prof", "--exclude-major", "nginx", "--exclude-major", "mysql.*"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert "updated" in out and "Package_exclude_major: nginx,mysql.*" in out and "Service_restart: cron" in out
    out = subprocess.run(depot + ["list"], env=env, capture_output=True, text=True, check=True).stdout
    assert "cli-prof" in out
    bad = subprocess.run(depot + ["set", "cli-prof", "--exclude", "bad name"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "invalid profile" in bad.stderr
