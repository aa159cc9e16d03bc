"""The dashboard's user space (/account), users page (/users) and profiles pages (/profiles), through the
aiohttp test client against real PostgreSQL: refusals, roles, CSRF, the last admin, audit lines."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import replace

import pytest

from app import profiles, users
from app.dashboard import sessions
from app.dashboard.account import WRONG_PASSWORD
from app.logs import JsonFormatter
from app.main import create_app
from tests.helpers import bearer
from tests.test_dashboard import csrf_of, login

LAST_ADMIN = "User root is the last admin: make another admin first"


async def as_user(client, pool, name: str, role: str, password: str = "pass-word-1") -> str:
    """Create the user, log this client in with the password, return the page's CSRF token."""
    await users.create_user(pool, name, role, password=password)
    resp = await login(client, username=name, password=password)
    assert resp.status == 303, await resp.text()
    return await csrf_of(client, "/account")


def new_key_of(html: str) -> str:
    return re.search(r'<code id="new-key">(ak_[A-Za-z0-9]+)</code>', html).group(1)


async def post(client, path: str, **form):
    return await client.post(path, data=form, allow_redirects=False)


# --- the user space ------------------------------------------------------------------------------

async def test_new_key_replaces_the_old_one_and_this_browser_stays_logged_in(client, pool):
    csrf = await as_user(client, pool, "vera", "viewer")
    page = await (await client.get("/account")).text()
    assert "no key yet" in page and "ak_" not in page
    old_sid = client.session.cookie_jar.filter_cookies(client.make_url("/"))[sessions.COOKIE].value

    resp = await post(client, "/account/apikey", csrf=csrf)
    html = await resp.text()
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    first = new_key_of(html)
    assert (await client.get("/api/v2/profile", headers=bearer(first))).status == 200
    # The older session is gone (a new key ends them all); this browser got a fresh one and its token.
    assert await sessions.load(pool, old_sid) is None
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)
    page = await (await client.get("/account")).text()
    assert first not in page and "ak_" not in page  # shown once
    assert re.search(r'id="key-created">\d{4}-\d\d-\d\d', page) and "to the minute" in page  # used just now

    resp = await post(client, "/account/apikey", csrf=csrf)
    second = new_key_of(await resp.text())
    assert second != first
    assert (await client.get("/api/v2/profile", headers=bearer(first))).status == 401
    assert (await client.get("/api/v2/profile", headers=bearer(second))).status == 200
    assert await pool.fetchval("SELECT count(*) FROM api_keys k JOIN users u ON u.id = k.user_id"
                               " WHERE u.username = 'vera'") == 1


async def test_forged_forms_change_nothing(client, pool, make_key, caplog):
    admin_key = await make_key("admin", "root")
    csrf = await as_user(client, pool, "ada", "admin")
    await users.create_api_key(pool, "ada")
    # Making the key ended ada's sessions: log in again.
    assert (await login(client, username="ada", password="pass-word-1")).status == 303
    csrf = await csrf_of(client, "/account")
    digest = await pool.fetchval("SELECT digest FROM api_keys k JOIN users u ON u.id = k.user_id WHERE username = 'ada'")
    await profiles.create_profile(pool, "web", {"Notes": "kept"})
    for token in (None, "0" * 64, csrf[:-1] + ("0" if csrf[-1] != "0" else "1")):
        form = {"csrf": token} if token else {}
        attempts = [
            ("/account/apikey", {}),
            ("/account/password", {"current": "pass-word-1", "password": "changed-pw", "confirm": "changed-pw"}),
            ("/users", {"name": "mallory", "role": "admin", "password": "mallory-pw"}),
            ("/users/root/role", {"role": "viewer"}),
            ("/users/root/delete", {}),
            ("/profiles", {"name": "evil"}),
        ]
        for path, fields in attempts:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="depot.audit"):
                resp = await post(client, path, **form, **fields)
            assert resp.status == 403 and "CSRF check failed" in await resp.text(), path
            [line] = [r for r in caplog.records if r.name == "depot.audit"]  # refusals are logged too
            assert (line.user, line.status, line.request_id) == ("ada", 403, resp.headers["X-Request-Id"])
    assert await pool.fetchval(
        "SELECT digest FROM api_keys k JOIN users u ON u.id = k.user_id WHERE username = 'ada'") == digest
    assert await users.check_password(pool, "ada", "pass-word-1")
    assert await pool.fetchval("SELECT count(*) FROM users WHERE username = 'mallory'") == 0
    assert (await users.get_user(pool, "root"))["role"] == "admin"
    assert [p["Name"] for p in await profiles.list_profiles(pool)] == ["web"]
    assert (await client.get("/api/v2/users", headers=bearer(admin_key))).status == 200


async def test_password_change_needs_the_current_one(client, pool):
    csrf = await as_user(client, pool, "otto", "operator", "first-password")
    other = await sessions.create(pool, await pool.fetchval("SELECT id FROM users WHERE username = 'otto'"))

    resp = await post(client, "/account/password", csrf=csrf, current="not-it", password="second-pw", confirm="second-pw")
    assert resp.status == 403 and WRONG_PASSWORD in await resp.text()
    resp = await post(client, "/account/password", csrf=csrf, current="first-password", password="second-pw",
                      confirm="other-pw")
    assert resp.status == 400 and "confirmation differ" in await resp.text()
    resp = await post(client, "/account/password", csrf=csrf, current="first-password", password="short",
                      confirm="short")
    assert resp.status == 400 and "password: Length must be between 8 and 1024." in await resp.text()
    resp = await post(client, "/account/password", csrf=csrf, current="first-password", password="nul\x00-password",
                      confirm="nul\x00-password")
    assert resp.status == 400 and "NUL" in await resp.text()
    assert await users.check_password(pool, "otto", "first-password")  # nothing changed so far
    assert await sessions.load(pool, other) is not None

    resp = await post(client, "/account/password", csrf=csrf, current="first-password", password="second-pw",
                      confirm="second-pw")
    assert resp.status == 303 and resp.headers["Location"] == "/account?done=password"
    assert await sessions.load(pool, other) is None  # the user's other sessions end
    page = await client.get(resp.headers["Location"])  # ...but not this browser's
    assert page.status == 200 and "Your password was changed" in await page.text()
    assert await users.check_password(pool, "otto", "second-pw")
    assert not await users.check_password(pool, "otto", "first-password")


async def test_a_user_without_password_sets_a_first_one(client, pool, make_key):
    key = await make_key("viewer", "kim")
    assert (await login(client, api_key=key)).status == 303
    page = await (await client.get("/account")).text()
    assert 'name="current"' not in page and "Set password" in page
    csrf = await csrf_of(client, "/account")
    resp = await post(client, "/account/password", csrf=csrf, password="kims-password", confirm="kims-password")
    assert resp.status == 303
    assert await users.check_password(pool, "kim", "kims-password")
    assert 'name="current"' in await (await client.get("/account")).text()


async def test_wrong_current_passwords_meet_the_login_brake(aiohttp_client, settings, pool):
    client = await aiohttp_client(create_app(replace(settings, auth_fail_limit=2, auth_fail_window=600)))
    csrf = await as_user(client, pool, "gus", "viewer", "right-password")
    for _ in range(2):
        resp = await post(client, "/account/password", csrf=csrf, current="guess", password="new-password",
                          confirm="new-password")
        assert resp.status == 403
    resp = await post(client, "/account/password", csrf=csrf, current="right-password", password="new-password",
                      confirm="new-password")
    assert resp.status == 429 and "Too many failed attempts" in await resp.text()
    assert await users.check_password(pool, "gus", "right-password")


# --- the users page ------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["viewer", "uploader", "operator"])
async def test_users_page_is_for_admins_only(client, pool, role):
    csrf = await as_user(client, pool, "nina", role)
    assert 'href="/users"' not in await (await client.get("/")).text()
    assert 'href="/account"' in await (await client.get("/")).text()
    resp = await client.get("/users")
    assert resp.status == 403 and "This needs the admin role." in await resp.text()
    for path, form in [("/users", {"name": "x1", "role": "admin", "password": "password1"}),
                       ("/users/nina/role", {"role": "admin"}), ("/users/nina/password", {"password": "password2"}),
                       ("/users/nina/delete", {})]:
        assert (await post(client, path, csrf=csrf, **form)).status == 403, path
    row = await users.get_user(pool, "nina")
    assert row["role"] == role and await pool.fetchval("SELECT count(*) FROM users") == 1
    assert await users.check_password(pool, "nina", "pass-word-1")


async def test_admin_manages_users_with_the_api_rules(client, pool, caplog):
    csrf = await as_user(client, pool, "root", "admin")
    page = await client.get("/users")
    assert page.status == 200 and 'data-user="root"' in await page.text()

    refusals = [
        ({"name": "bad name!", "role": "viewer", "password": "password1"}, 400, "name: 1-64 letters"),
        ({"name": "ok", "role": "king", "password": "password1"}, 400, "role: Must be one of"),
        ({"name": "ok", "role": "viewer"}, 400, "give the new user a password"),
        ({"name": "ok", "role": "viewer", "password": "short"}, 400, "Length must be between 8 and 1024"),
        ({"name": "root", "role": "viewer", "password": "password1"}, 409, "User root already exists"),
    ]
    for form, status, message in refusals:
        resp = await post(client, "/users", csrf=csrf, **form)
        assert resp.status == status and message in await resp.text(), form
    assert await pool.fetchval("SELECT count(*) FROM users") == 1

    with caplog.at_level(logging.INFO, logger="depot.audit"):
        resp = await post(client, "/users", csrf=csrf, name="bea", role="viewer", password="beas-password")
    assert resp.status == 303 and resp.headers["Location"] == "/users?done=created&name=bea"
    [line] = [r for r in caplog.records if r.name == "depot.audit"]
    assert (line.user, line.action, line.target, line.status) == ("root", "dash_user_create", "bea", 303)
    assert re.fullmatch(r"[0-9a-f]{24}", line.request_id) and "beas-password" not in caplog.text
    as_json = json.loads(JsonFormatter().format(line))  # DEPOT_LOG_FORMAT=json keeps every field
    assert {k: as_json[k] for k in ("user", "action", "target", "status", "request_id")} == {
        "user": "root", "action": "dash_user_create", "target": "bea", "status": 303, "request_id": line.request_id}
    assert "User bea created." in await (await client.get("/users?done=created&name=bea")).text()

    assert (await post(client, "/users/bea/role", csrf=csrf, role="operator")).status == 303
    assert (await users.get_user(pool, "bea"))["role"] == "operator"
    resp = await post(client, "/users/bea/role", csrf=csrf, role="root")
    assert resp.status == 400 and (await users.get_user(pool, "bea"))["role"] == "operator"
    assert (await post(client, "/users/bea/password", csrf=csrf, password="reset-password")).status == 303
    assert await users.check_password(pool, "bea", "reset-password")

    # The last admin stays, with the API's message.
    for path, form in [("/users/root/role", {"role": "viewer"}), ("/users/root/delete", {})]:
        resp = await post(client, path, csrf=csrf, **form)
        assert resp.status == 409 and LAST_ADMIN in await resp.text(), path
    assert (await users.get_user(pool, "root"))["role"] == "admin"

    for path in ("/users/ghost/delete", "/users/gh%00ost/delete", "/users/" + "g" * 65 + "/delete"):
        resp = await post(client, path, csrf=csrf)
        assert resp.status == 404 and "does not exist" in await resp.text(), path
    assert (await post(client, "/users/bea/delete", csrf=csrf)).status == 303
    assert await users.get_user(pool, "bea") is None


async def test_an_admin_resetting_their_own_password_stays_logged_in(client, pool):
    csrf = await as_user(client, pool, "root", "admin")
    await users.create_user(pool, "second", "admin")
    resp = await post(client, "/users/root/password", csrf=csrf, password="root-password-2")
    assert resp.status == 303 and sessions.COOKIE in resp.cookies
    assert (await client.get("/users")).status == 200
    # Giving up one's own admin role (another admin exists) leads to one's account page.
    csrf = await csrf_of(client, "/users")
    resp = await post(client, "/users/root/role", csrf=csrf, role="viewer")
    assert resp.status == 303 and resp.headers["Location"] == "/account"
    assert (await client.get("/users")).status == 403


# --- the profiles pages --------------------------------------------------------------------------

async def test_a_viewer_sees_profiles_but_no_action(client, pool):
    csrf = await as_user(client, pool, "vic", "viewer")
    web = await profiles.create_profile(pool, "web", {"Package_exclude": "nginx*"})
    listing = await (await client.get("/profiles")).text()
    assert 'data-profile="web"' in listing and "profile-create" not in listing
    page = await (await client.get(f"/profiles/{web['Id']}")).text()
    assert "nginx*" in page and "save-profile" not in page and "delete-profile" not in page
    assert "save-repos" not in page and 'name="Package_exclude" value="nginx*" placeholder="e.g. linux-image-*, postgresql*" disabled' in page
    for path, form in [("/profiles", {"name": "new"}), (f"/profiles/{web['Id']}", {"name": "web", "Notes": "x"}),
                       (f"/profiles/{web['Id']}/repos", {}), (f"/profiles/{web['Id']}/delete", {})]:
        resp = await post(client, path, csrf=csrf, **form)
        assert resp.status == 403 and "role" in await resp.text(), path
    assert await profiles.get_profile(pool, "web") == web


async def test_operator_creates_and_edits_profiles_admin_deletes(client, pool, repo_db):
    csrf = await as_user(client, pool, "op", "operator")
    resp = await post(client, "/profiles", csrf=csrf, name="bad name")
    assert resp.status == 400 and "name: Profile name may hold" in await resp.text()
    resp = await post(client, "/profiles", csrf=csrf, name="web", Package_exclude="ok, not ok!")
    text = await resp.text()
    assert resp.status == 400 and "invalid package name" in text and 'value="not ok!"' not in text
    assert 'value="ok, not ok!"' in text  # what was sent stays in the form
    resp = await post(client, "/profiles", csrf=csrf, name="web", Package_exclude="nginx*, openssl",
                      Service_restart="php-fpm", Notes="front")
    assert resp.status == 303
    web = await profiles.get_profile(pool, "web")
    assert resp.headers["Location"] == f"/profiles/{web['Id']}?done=created"
    assert (web["Package_exclude"], web["Service_restart"], web["Notes"]) == ("nginx*,openssl", "php-fpm", "front")
    resp = await post(client, "/profiles", csrf=csrf, name="web")
    assert resp.status == 409 and "Profile web already exists" in await resp.text()

    # Edit: a bad value refuses the whole form.
    fields = {"name": "web", "Package_exclude": "nginx*", "Package_exclude_major": "postgresql*",
              "Service_reload": "nginx", "Service_restart": "", "Notes": "front end"}
    resp = await post(client, f"/profiles/{web['Id']}", csrf=csrf, **{**fields, "Service_reload": "bad service!"})
    assert resp.status == 400 and "invalid service name" in await resp.text()
    assert await profiles.get_profile(pool, "web") == web
    resp = await post(client, f"/profiles/{web['Id']}", csrf=csrf, **fields)
    assert resp.status == 303
    edited = await profiles.get_profile(pool, "web")
    assert edited == {"Id": web["Id"], "Name": "web", "Package_exclude": "nginx*",
                      "Package_exclude_major": "postgresql*", "Service_reload": "nginx", "Service_restart": "",
                      "Notes": "front end"}

    # Repositories: unknown ids refuse the whole change.
    deb = await pool.fetchval("INSERT INTO repos (name, type, dist, section) VALUES ('deb1', 'deb', 'bookworm', 'main')"
                              " RETURNING id")
    rpm = await pool.fetchval("INSERT INTO repos (name, type, releasever) VALUES ('alma', 'rpm', '9') RETURNING id")
    resp = await client.post(f"/profiles/{web['Id']}/repos", data=[("csrf", csrf), ("repo", str(rpm)), ("repo", "999999")],
                             allow_redirects=False)
    assert resp.status == 404 and "Repository does not exist: 999999" in await resp.text()
    resp = await client.post(f"/profiles/{web['Id']}/repos", data=[("csrf", csrf), ("repo", "x")], allow_redirects=False)
    assert resp.status == 400 and "repos must be a list of repository ids" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM profile_repos") == 0
    resp = await client.post(f"/profiles/{web['Id']}/repos", data=[("csrf", csrf), ("repo", str(rpm)), ("repo", str(deb))],
                             allow_redirects=False)
    assert resp.status == 303
    assert [r["repo_id"] for r in await pool.fetch("SELECT repo_id FROM profile_repos ORDER BY position")] == [rpm, deb]
    page = await (await client.get(f"/profiles/{web['Id']}")).text()
    assert page.index(f'data-repo="{rpm}" class="sel"') < page.index(f'data-repo="{deb}" class="sel"')

    # Rename; then deleting needs an admin.
    resp = await post(client, f"/profiles/{web['Id']}", csrf=csrf, **{**fields, "name": "front"})
    assert resp.status == 303 and (await profiles.get_profile(pool, "front"))["Id"] == web["Id"]
    assert (await post(client, f"/profiles/{web['Id']}/delete", csrf=csrf)).status == 403
    assert (await client.get("/profiles/424242")).status == 404
    client.session.cookie_jar.clear()
    csrf = await as_user(client, pool, "root", "admin")
    assert 'id="delete-profile"' in await (await client.get(f"/profiles/{web['Id']}")).text()
    resp = await post(client, f"/profiles/{web['Id']}/delete", csrf=csrf)
    assert resp.status == 303 and resp.headers["Location"] == "/profiles?done=deleted&name=front"
    assert await profiles.list_profiles(pool) == []
    assert (await post(client, f"/profiles/{web['Id']}/delete", csrf=csrf)).status == 404


async def test_profile_edits_reach_connected_hosts(client, pool, repo_db):
    """As PUT /api/v2/profile/<p> and /repos do: one update-profile request per connected host of the profile."""
    csrf = await as_user(client, pool, "op", "operator")
    web = await profiles.create_profile(pool, "web", {})
    host = await pool.fetchval("INSERT INTO hosts (hostname, ip, auth_id, token_digest, profile)"
                               " VALUES ('h1', '10.0.0.1', 'id_h1', '\\x00', 'web') RETURNING id")
    await pool.execute("INSERT INTO agent_servers (server_id) VALUES ('s1')")
    await pool.execute("INSERT INTO agent_sessions (host_id, server_id, session_id) VALUES ($1, 's1', 's1/1')", host)
    fields = {"name": "web", "Package_exclude": "nginx"}
    assert (await post(client, f"/profiles/{web['Id']}", csrf=csrf, **fields)).status == 303
    requests = await pool.fetch("SELECT request, status FROM agent_requests WHERE host_id = $1", host)
    assert [(r["request"], r["status"]) for r in requests] == [("update-profile", "new")]
