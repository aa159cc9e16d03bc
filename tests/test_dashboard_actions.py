"""The fleet and repository actions of the dashboard without a browser: bad input to each POST handler
is a clear 4xx page (never a 500, nothing written), roles are the API's, and the fleet search finds
exactly the hosts the API's package search finds."""
from __future__ import annotations

import html
import re

import aiohttp

import pytest

from app.hosts.inventory import seed_inventories
from tests.helpers import bearer
from tests.pkgfactory import deb_bytes
from tests.test_dashboard import csrf_of, login


async def _as(client, make_key, role: str) -> str:
    """Log in (afresh) with a new user of `role`; returns the session's CSRF token."""
    client.session.cookie_jar.clear()
    await login(client, api_key=await make_key(role))
    return await csrf_of(client, "/hosts")


async def _hosts(pool, n: int = 3) -> list[int]:
    ids = []
    for i in range(n):
        ids.append(await pool.fetchval(
            "INSERT INTO hosts (hostname, ip, auth_id, token_digest, os, profile) VALUES ($1, $2, $3, '\\x00', 'Debian', $4)"
            " RETURNING id", f"h{i}.example.net", f"10.1.0.{i}", f"a{i}", "web" if i else "db"))
    return ids


def _alert(text: str) -> str:
    return html.unescape(re.search(r'<p class="alert"[^>]*>(.*?)</p>', text, re.S).group(1))


@pytest.mark.parametrize("form, status, message", [
    ({"request": "reboot", "host": "1"}, 400, "Unknown request."),
    ({"request": "general-infos"}, 400, "No host selected"),
    ({"request": "general-infos", "host": "abc"}, 400, "Invalid host selection."),
    ({"request": "general-infos", "host": "9" * 40}, 400, "Invalid host selection."),
    ({"request": "update", "packages": "ok bad/name", "host": "1"}, 400, "Invalid package name"),
    ({"request": "general-infos", "scope": "matched", "package": "bad name"}, 400, "Only letters"),
    ({"request": "general-infos", "scope": "matched", "outdated": "maybe"}, 400, "yes, no or empty"),
    ({"request": "general-infos", "scope": "matched", "os": "x" * 300}, 400, "os:"),
])
async def test_fleet_request_bad_input_is_a_clear_400(client, pool, make_key, form, status, message):
    await _hosts(pool)
    token = await _as(client, make_key, "operator")
    resp = await client.post("/hosts/requests", data={"csrf": token, **form})
    text = await resp.text()
    assert resp.status == status and message in _alert(text), text
    assert await pool.fetchval("SELECT count(*) FROM agent_requests") == 0


async def test_fleet_requests_to_ids_and_filters_as_the_api(client, pool, make_key):
    ids = await _hosts(pool)
    token = await _as(client, make_key, "operator")
    # Ticked ids: the unknown one gets no request (as POST /api/v2/hosts/requests with "hosts").
    resp = await client.post("/hosts/requests", data=[("csrf", token), ("request", "profile"), ("host", str(ids[0])),
                                                      ("host", str(ids[2])), ("host", "987654")])
    assert resp.status == 200 and ">2</b> requests created" in await resp.text()
    # The search's filters: profile web is hosts 1 and 2.
    resp = await client.post("/hosts/requests", data={"csrf": token, "request": "general-infos", "scope": "matched",
                                                      "profile": "web", "os": "Debian"})
    assert resp.status == 200
    rows = await pool.fetch("SELECT host_id, request FROM agent_requests ORDER BY id")
    assert [(r["host_id"], r["request"]) for r in rows] == [
        (ids[0], "update-profile"), (ids[2], "update-profile"), (ids[1], "request-general-infos"),
        (ids[2], "request-general-infos")]


async def test_fleet_search_bad_input_is_a_400_page(client, make_key):
    await _as(client, make_key, "viewer")
    for query, message in (("package=bad%20name", "Only letters"), ("reboot=perhaps", "yes, no or empty"),
                           ("version=%3Cscript%3E", "Only letters")):
        resp = await client.get(f"/hosts?{query}")
        text = await resp.text()
        assert resp.status == 400 and message in _alert(text) and "<script>" not in text
    resp = await client.get("/hosts?filter=bogus&page=-3&unknown=1")
    assert resp.status == 200


async def test_fleet_search_finds_what_the_api_finds(client, pool, make_key):
    """The page and GET /api/v2/hosts/package/<name>[/<version>] share one matching (hosts/queries.py)."""
    ids = await _hosts(pool, 6)
    rows = [(ids[0], "openssl", "3.0.11-1"), (ids[1], "openssl", "3.0.15-1"), (ids[2], "libssl3", "3.0.15-1"),
            (ids[3], "open_vm_tools", "12.2"), (ids[4], "openvpn", "2.6.3"), (ids[5], "nginx", "1.24.0-1")]
    await seed_inventories(pool, [(h, n, "amd64", v) for h, n, v in rows])
    key = await make_key("viewer")
    await login(client, api_key=key)
    for name, version, flags in (("open", None, ""), ("open*", "3.0.1", ""), ("*ssl*", None, ""), ("openssl", "3.0.1*", ""),
                                 ("open_", None, ""), ("openssl", "3.0.11-1", "strict"), ("ope", None, "strict-name"),
                                 ("*", None, ""), ("open%", None, "")):
        path = f"/api/v2/hosts/package/{name}" + (f"/{version}" if version else "") + (f"?{flags}" if flags else "")
        api = await (await client.get(path, headers=bearer(key))).json()
        expected = {h["id"] for h in api["results"]} if "results" in api else set()
        query = {"package": name, **({"version": version} if version else {})}
        if flags in ("strict", "strict-name"):
            query["exact-name"] = "1"
        if flags == "strict":
            query["exact-version"] = "1"
        resp = await client.get("/hosts", params=query)
        found = {int(i) for i in re.findall(r'<tr data-host="(\d+)">', await resp.text())}
        assert found == expected, (path, found, expected)
        assert resp.status == (200 if api.get("rc") == 200 else 400), path


async def test_repository_actions_bad_input_and_roles(client, pool, make_key, repo_db):
    token = await _as(client, make_key, "operator")
    post = client.post

    async def refused(path, data, status, message):
        resp = await post(path, data={"csrf": token, **data}, allow_redirects=False)
        text = await resp.text()
        assert resp.status == status and message in _alert(text), (path, data, resp.status, text[:3000])

    await refused("/repos", {"name": "x"}, 400, 'type must be "deb" or "rpm"')
    await refused("/repos", {"name": "../etc", "type": "deb", "dist": "b", "section": "main"}, 400, "Invalid name")
    await refused("/repos", {"name": "r", "type": "rpm"}, 400, "Invalid releasever")
    resp = await post("/repos", data={"csrf": token, "name": "r", "type": "deb", "dist": "bookworm", "section": "main"},
                      allow_redirects=False)
    assert resp.status == 303
    repo = await pool.fetchval("SELECT id FROM repos WHERE name = 'r'")
    assert resp.headers["Location"] == f"/repos/{repo}"
    await refused("/repos", {"name": "r", "type": "deb", "dist": "bookworm", "section": "main"}, 409, "already exists")
    await refused(f"/repos/{repo}/snapshots", {"from": "abc"}, 400, "from must be a snapshot id")
    await refused(f"/repos/{repo}/snapshots", {"from": "99999999"}, 404, "Unknown snapshot ID")
    await refused("/repos/424242/snapshots", {}, 404, "Repository does not exist")
    resp = await post(f"/repos/{repo}/snapshots", data={"csrf": token}, allow_redirects=False)
    snap = await pool.fetchval("SELECT id FROM snapshots WHERE repo_id = $1", repo)
    assert resp.status == 303 and resp.headers["Location"] == f"/repos/{repo}?snapshot={snap}"
    await refused(f"/repos/snapshots/{snap}/rebuild", {"gpgSign": "maybe"}, 400, "Invalid GPG sign value")
    await refused("/repos/snapshots/777777/rebuild", {}, 404, "Unknown snapshot ID")
    await refused("/repos/environments/point", {"env": "prod"}, 400, "Snapshot Id is required")
    await refused("/repos/environments/point", {"env": "prod", "snapshot": "1" * 30}, 400, "Invalid snapshot Id")
    await refused("/repos/environments/point", {"env": "nowhere", "snapshot": str(snap)}, 404, "does not exist")
    await refused("/repos/environments", {"name": "Bad Name"}, 400, "Invalid environment name")
    await refused("/repos/environments", {"name": "prod"}, 409, "already exists")
    await refused("/repos/snapshots/777777/delete", {}, 404, "Unknown snapshot ID")
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    for query, status in (("", 400), ("?a=1", 400), (f"?a={snap}&b=999999", 404), (f"?a={snap}&b={snap}", 200)):
        assert (await client.get(f"/repos/{repo}/compare{query}")).status == status, query

    # The upload endpoint: the API's answers (JSON), CSRF in the header.
    url = f"/repos/snapshots/{snap}/upload"
    resp = await post(url, data=b"x", headers={"Content-Type": "text/plain", "X-CSRF-Token": token})
    assert resp.status == 400 and (await resp.json())["message_error"] == ["Invalid request"]
    resp = await post(url, data=b"--b\r\ntruncated", headers={"Content-Type": "multipart/form-data; boundary=b",
                                                               "X-CSRF-Token": token})
    assert resp.status == 400 and "multipart" in (await resp.json())["message_error"][0].lower()
    assert await pool.fetchval("SELECT count(*) FROM snapshot_packages") == 0

    form = aiohttp.FormData()
    form.add_field("file", deb_bytes("hello"), filename="hello_1.0-1_amd64.deb")
    resp = await post(url, data=form, headers={"X-CSRF-Token": token})
    assert resp.status == 200 and (await resp.json())["results"] == {
        "Following packages have been uploaded successfully": ["hello_1.0-1_amd64.deb"]}

    # Roles: an uploader makes snapshots and uploads, not repositories, points or deletions; a viewer nothing.
    uploader = await _as(client, make_key, "uploader")
    for path, data in (("/repos", {"name": "u", "type": "deb", "dist": "b", "section": "main"}),
                       (f"/repos/{repo}/delete", {}), (f"/repos/snapshots/{snap}/delete", {}),
                       ("/repos/environments/point", {"env": "prod", "snapshot": str(snap)}),
                       ("/repos/environments", {"name": "qa"})):
        resp = await post(path, data={"csrf": uploader, **data}, allow_redirects=False)
        assert resp.status == 403 and "needs the operator role" in await resp.text(), path
    assert (await post(f"/repos/{repo}/snapshots", data={"csrf": uploader}, allow_redirects=False)).status == 303
    viewer = await _as(client, make_key, "viewer")
    for path in (f"/repos/{repo}/snapshots", f"/repos/snapshots/{snap}/rebuild"):
        resp = await post(path, data={"csrf": viewer}, allow_redirects=False)
        assert resp.status == 403 and "needs the uploader role" in await resp.text(), path
    form = aiohttp.FormData()
    form.add_field("file", deb_bytes("other"), filename="other_1.0-1_amd64.deb")
    assert (await post(url, data=form, headers={"X-CSRF-Token": viewer})).status == 403
    assert await pool.fetchval("SELECT count(*) FROM repos") == 1
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == 2
    assert await pool.fetchval("SELECT count(*) FROM snapshot_packages") == 1


async def test_a_broad_package_search_lists_the_first_packages_of_each_host(client, pool, make_key):
    (host,) = await _hosts(pool, 1)
    await seed_inventories(pool, [(host, f"lib{i:02d}", "amd64", f"1.{i}") for i in range(1, 26)])
    await _as(client, make_key, "viewer")
    text = await (await client.get("/hosts?package=lib")).text()
    cell = text.split('class="mono packages">')[1].split("</td>")[0]
    assert cell.count("<div>") == 20 and "lib01:amd64 1.1" in cell and "lib21" not in cell
    assert f'href="/hosts/{host}?q=lib">more' in cell
    text = await (await client.get("/hosts?package=lib2")).text()
    cell = text.split('class="mono packages">')[1].split("</td>")[0]
    assert cell.count("<div>") == 6 and "more" not in cell  # lib20 to lib25
