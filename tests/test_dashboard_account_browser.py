"""The user space, the users page and the profiles pages in a real headless Chromium against a real
Depot server on a real port (tests/browser_harness.py), each change checked through the HTTP API as a
script or the command line would see it. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import aiohttp
import pytest

from app import users
from tests.browser_harness import ARTIFACTS, BROWSER, PASSWORD, sign_in
from tests.helpers import bearer

pytestmark = BROWSER

LAST_ADMIN = "User root is the last admin: make another admin first"


@pytest.fixture
async def api(site):
    """A plain HTTP client of the server's API."""
    async with aiohttp.ClientSession(base_url=site) as session:
        yield session


async def refused_login(pg, name: str, password: str) -> None:
    await pg.goto("/login")
    await pg.fill("#login-password input[name=username]", name)
    await pg.fill("#login-password input[name=password]", password)
    await pg.click("#login-password button")
    assert "Invalid credentials." in await pg.inner_text(".alert")


def refusals(pg) -> list[str]:
    """The 4xx/5xx answers the page met ("403 /path"), asserting it met no script error; then forgets them."""
    answers = [e for e in pg.errors if e[:3].isdigit()]
    others = [e for e in pg.errors if not e[:3].isdigit() and not e.startswith("Failed to load resource")]
    assert others == [], others
    pg.errors.clear()
    return [f"{a.split()[0]} /{a.split('/', 3)[3]}" for a in answers]


def accept_dialogs(pg) -> list[str]:
    """Accept every confirm() the page asks, keeping the questions."""
    asked: list[str] = []

    async def accept(dialog):
        asked.append(dialog.message)
        await dialog.accept()

    pg.on("dialog", accept)
    return asked


async def test_user_space_api_key_and_password(new_page, api, pool):
    pg = await new_page()
    await pg.context.grant_permissions(["clipboard-read", "clipboard-write"])
    asked = accept_dialogs(pg)
    await sign_in(pg, "olivia")
    await pg.click("#whoami")  # the user's name in the navigation leads to their account
    await pg.wait_for_url("**/account")
    assert await pg.inner_text("#key-created") == "no key yet"
    await pg.screenshot(path=str(ARTIFACTS / "account.png"), full_page=True)

    await pg.click("#generate-key")
    await pg.wait_for_selector("#new-key")
    first = (await pg.inner_text("#new-key")).strip()
    assert first.startswith("ak_") and len(first) == 55
    await pg.click("#copy-key")
    await pg.locator("#copy-key", has_text="Copied").wait_for(timeout=5_000)
    assert await pg.evaluate("navigator.clipboard.readText()") == first
    await pg.screenshot(path=str(ARTIFACTS / "account-new-key.png"), full_page=True)
    async with api.get("/api/v2/profile", headers=bearer(first)) as resp:
        assert resp.status == 200

    # Shown once: back on the page, only its dates (used just now, by the call above).
    await pg.goto("/account")
    assert await pg.locator("#new-key").count() == 0 and first not in await pg.content()
    assert "UTC" in await pg.inner_text("#key-created") and "UTC" in await pg.inner_text("#key-used")

    await pg.click("#generate-key")  # asks first: the current key will stop working
    await pg.wait_for_selector("#new-key")
    second = (await pg.inner_text("#new-key")).strip()
    assert asked == ["Make a new API key? Your current key stops working at once."]
    async with api.get("/api/v2/profile", headers=bearer(first)) as resp:
        assert resp.status == 401
    async with api.get("/api/v2/profile", headers=bearer(second)) as resp:
        assert resp.status == 200

    # The password: the wrong current one changes nothing; the right one does.
    await pg.goto("/account")
    await pg.fill("#password-form input[name=current]", "not-my-password")
    await pg.fill("#password-form input[name=password]", "n3w-password")
    await pg.fill("#password-form input[name=confirm]", "n3w-password")
    await pg.click("#change-password")
    assert "Your current password is wrong: nothing was changed." in await pg.inner_text("#form-error")
    await pg.fill("#password-form input[name=current]", PASSWORD)
    await pg.fill("#password-form input[name=password]", "n3w-password")
    await pg.fill("#password-form input[name=confirm]", "n3w-password")
    await pg.click("#change-password")
    await pg.wait_for_url("**/account?done=password")
    assert "Your password was changed" in await pg.inner_text("#notice")
    await pg.click("#logout")
    await pg.wait_for_url("**/login")
    await refused_login(pg, "olivia", PASSWORD)
    await sign_in(pg, "olivia", "n3w-password")
    assert refusals(pg) == ["403 /account/password", "401 /login"]  # the wrong passwords


async def test_admin_manages_users_and_the_last_admin_stays(new_page, api, pool):
    await users.create_user(pool, "root", "admin", password="r00t-password")
    pg = await new_page()
    asked = accept_dialogs(pg)
    await sign_in(pg, "root", "r00t-password")
    await pg.click("#nav-users")
    await pg.wait_for_url("**/users")

    await pg.fill("#user-create input[name=name]", "bea")
    await pg.select_option("#user-create select[name=role]", "viewer")
    await pg.fill("#user-create input[name=password]", "bea-password-1")
    await pg.click("#create-user")
    await pg.wait_for_url("**/users?done=created&name=bea")
    assert "User bea created." in await pg.inner_text("#notice")
    row = 'tr[data-user="bea"]'
    await pg.select_option(f"{row} select[name=role]", "operator")
    await pg.click(f"{row} button.set-role")
    await pg.wait_for_url("**done=role**")
    assert await pg.locator(f"{row} select[name=role]").input_value() == "operator"
    assert (await users.get_user(pool, "bea"))["role"] == "operator"
    await pg.fill(f"{row} input[name=password]", "bea-password-2")
    await pg.click(f"{row} button.reset-password")
    await pg.wait_for_url("**done=password**")
    await pg.screenshot(path=str(ARTIFACTS / "users.png"), full_page=True)

    bea = await new_page()
    await refused_login(bea, "bea", "bea-password-1")
    await sign_in(bea, "bea", "bea-password-2")
    assert "(operator)" in await bea.inner_text("#whoami")
    await bea.goto("/account")  # a page that does not poll (a poll's 401 would navigate by itself)

    # The last admin can be neither demoted nor deleted.
    me = 'tr[data-user="root"]'
    await pg.select_option(f"{me} select[name=role]", "viewer")
    await pg.click(f"{me} button.set-role")
    assert LAST_ADMIN in await pg.inner_text("#form-error")
    await pg.click(f"{me} button.delete-user")
    assert LAST_ADMIN in await pg.inner_text("#form-error")
    assert asked == ["Delete user root, their API key and sessions?"]
    assert refusals(pg) == ["409 /users/root/role", "409 /users/root/delete"]
    async with api.get("/api/v2/users/root", headers=bearer(await users.create_api_key(pool, "root"))) as resp:
        assert (await resp.json())["results"]["Role"] == "admin"

    # Deleting ends the user's sessions at once.
    await sign_in(pg, "root", "r00t-password")  # the key made just above ended root's sessions
    await pg.goto("/users")
    await pg.click('tr[data-user="bea"] button.delete-user')
    await pg.wait_for_url("**done=deleted**")
    assert await pg.locator('tr[data-user="bea"]').count() == 0
    await bea.reload()
    assert bea.url.endswith("/login?next=%2Faccount")
    assert refusals(pg) == []

    # A viewer has no Users link, and the page and its forms are refused.
    viewer = await new_page()
    await sign_in(viewer, "victor")
    assert await viewer.locator("#nav-users").count() == 0
    resp = await viewer.goto("/users")
    assert resp.status == 403 and "This needs the admin role." in await viewer.inner_text(".alert")
    csrf = await viewer.get_attribute("header input[name=csrf]", "value")
    resp = await viewer.request.post("/users", form={"csrf": csrf, "name": "intruder", "role": "admin",
                                                       "password": "intruder-pw"})
    assert resp.status == 403 and await users.get_user(pool, "intruder") is None


async def test_profiles_create_edit_hand_out_repositories_delete(new_page, api, pool, repo_db):
    await users.create_user(pool, "root", "admin", password="r00t-password")
    admin_key = await users.create_api_key(pool, "root")
    async with api.post("/api/v2/repo", json={"name": "tools", "type": "deb", "dist": "bookworm", "section": "main"},
                        headers=bearer(admin_key)) as resp:
        assert resp.status == 201, await resp.text()
        tools = (await resp.json())["results"]["Id"]
    async with api.post("/api/v2/repo", json={"name": "alma", "type": "rpm", "releasever": "9"},
                        headers=bearer(admin_key)) as resp:
        alma = (await resp.json())["results"]["Id"]
    async with api.post(f"/api/v2/repo/{tools}/snapshot", json={}, headers=bearer(admin_key)) as resp:
        assert resp.status == 201, await resp.text()

    async def profile_via_api(name: str):
        async with api.get(f"/api/v2/profile/{name}", headers=bearer(admin_key)) as resp:
            return resp.status, (await resp.json()).get("results")

    pg = await new_page()
    await sign_in(pg, "olivia")  # an operator
    await pg.click("header nav >> text=Profiles")
    await pg.wait_for_url("**/profiles")
    await pg.fill("#profile-create input[name=name]", "web")
    await pg.fill("#profile-create input[name=Package_exclude]", "linux-image-*, nginx")
    await pg.fill("#profile-create input[name=Service_restart]", "php8.2-fpm")
    await pg.click("#create-profile")
    await pg.wait_for_url("**/profiles/*?done=created")
    profile_url = pg.url.split("?")[0]
    status, [web] = await profile_via_api("web")
    assert (web["Package_exclude"], web["Service_restart"]) == ("linux-image-*,nginx", "php8.2-fpm")
    assert await pg.locator("#delete-profile").count() == 0  # deleting needs an admin

    await pg.fill("#profile-form input[name=Package_exclude_major]", "postgresql*")
    await pg.fill("#profile-form input[name=Service_reload]", "nginx")
    await pg.fill("#profile-form textarea[name=Notes]", "front end")
    await pg.click("#save-profile")
    await pg.wait_for_url("**done=saved")
    status, [web] = await profile_via_api("web")
    assert (web["Package_exclude"], web["Package_exclude_major"], web["Service_reload"], web["Notes"]) == (
        "linux-image-*,nginx", "postgresql*", "nginx", "front end")

    await pg.check(f'#profile-repos tr[data-repo="{tools}"] input[name=repo]')
    await pg.check(f'#profile-repos tr[data-repo="{alma}"] input[name=repo]')
    await pg.click("#save-repos")
    await pg.wait_for_url("**done=repos")
    async with api.get("/api/v2/profile/web/repos?new-format", headers=bearer(admin_key)) as resp:
        handed = (await resp.json())["results"]["repos"]
    assert [r["name"] for r in handed] == ["tools"]  # alma has no snapshot yet: not handed out
    assert "/repo/deb/tools/bookworm/main/__ENV__" in handed[0]["url"]
    assert {r["repo_id"] for r in await pool.fetch("SELECT repo_id FROM profile_repos")} == {tools, alma}
    await pg.screenshot(path=str(ARTIFACTS / "profile.png"), full_page=True)

    # A forged form (no token, a wrong token) changes nothing.
    for token in (None, "f" * 64):
        await pg.goto(profile_url)
        await pg.evaluate("""token => {
            const f = document.createElement('form');
            f.method = 'post'; f.action = location.pathname;
            const add = (k, v) => { const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); };
            add('name', 'web'); add('Notes', 'forged');
            if (token) { add('csrf', token); }
            document.body.appendChild(f); f.submit();
        }""", token)
        await pg.wait_for_selector("text=CSRF check failed")
    assert (await profile_via_api("web"))[1][0]["Notes"] == "front end"
    assert refusals(pg) == [f"403 /profiles/{profile_url.rsplit('/', 1)[1]}"] * 2

    # A viewer sees the profile but no action, and its POSTs are refused.
    viewer = await new_page()
    await sign_in(viewer, "victor")
    await viewer.goto("/profiles")
    assert await viewer.locator("#profile-create").count() == 0
    await viewer.screenshot(path=str(ARTIFACTS / "profiles.png"), full_page=True)
    await viewer.click("#profiles >> text=web")
    assert "front end" in await viewer.input_value("#profile-form textarea[name=Notes]")
    assert await viewer.locator("#profile-form textarea[name=Notes]").is_disabled()
    for button in ("#save-profile", "#save-repos", "#delete-profile"):
        assert await viewer.locator(button).count() == 0, button
    await viewer.screenshot(path=str(ARTIFACTS / "profile-viewer.png"), full_page=True)
    csrf = await viewer.get_attribute("header input[name=csrf]", "value")
    for path, form in [(profile_url, {"name": "web", "Notes": "viewer was here"}), (profile_url + "/delete", {})]:
        resp = await viewer.request.post(path, form={"csrf": csrf, **form})
        assert resp.status == 403 and "This needs the" in await resp.text()
    assert (await profile_via_api("web"))[1][0]["Notes"] == "front end"

    # An admin deletes it.
    admin = await new_page()
    asked = accept_dialogs(admin)
    await sign_in(admin, "root", "r00t-password")
    await admin.goto(profile_url)
    await admin.click("#delete-profile")
    await admin.wait_for_url("**/profiles?done=deleted&name=web")
    assert asked and "Delete profile web?" in asked[0]
    assert "No profile yet." in await admin.inner_text("#profiles")
    assert (await profile_via_api("web"))[0] == 404
    assert refusals(admin) == [] and refusals(viewer) == []
