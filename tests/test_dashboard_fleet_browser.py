"""The fleet page in a real Chromium (tests/browser_harness.py): hosts found by package name and version
(prefix and wildcard, as /api/v2/hosts/package/ matches them), by OS and profile; requests sent to the
hosts ticked and to every host matched, checked in the database; a viewer sees no action, and a form
without the CSRF token changes nothing."""
from __future__ import annotations

from app.hosts.inventory import seed_inventories
from tests.browser_harness import ARTIFACTS, BROWSER, sign_in

pytestmark = BROWSER

HOSTS = [
    # hostname, os, version, profile, env, packages
    ("web1.example.net", "Debian GNU/Linux", "12", "web", "prod", {"nginx": "1.22.1-9", "openssl": "3.0.11-1"}),
    ("web2.example.net", "Debian GNU/Linux", "12", "web", "preprod", {"nginx": "1.24.0-1", "libssl3": "3.0.15-1"}),
    ("db1.example.net", "AlmaLinux", "9.4", "db", "prod", {"postgresql-15": "15.5-1", "openssl": "3.0.7-27"}),
    ("mail1.example.net", "Debian GNU/Linux", "11", "mail", "prod", {"postfix": "3.5.25-0", "nginx-common": "1.18.0-6"}),
]


async def _fleet(pool) -> dict[str, int]:
    ids = {}
    for n, (name, os, version, profile, env, packages) in enumerate(HOSTS):
        ids[name] = await pool.fetchval(
            "INSERT INTO hosts (hostname, ip, auth_id, token_digest, os, os_version, profile, env, kernel, arch,"
            " available_count, reboot_required, last_seen_at)"
            " VALUES ($1, $2, $3, '\\x00', $4, $5, $6, $7, '6.1.0-28-amd64', 'x86_64', $8, $9, now()) RETURNING id",
            name, f"10.0.0.{n + 1}", f"id_{n}", os, version, profile, env, n % 2, n == 2)
        await seed_inventories(pool, [(ids[name], p, "amd64", v) for p, v in packages.items()])
    return ids


async def _shown(pg) -> set[str]:
    return {t.strip() for t in await pg.locator("#hosts tbody tr[data-host] a").all_inner_texts()}


async def _search(pg, **fields) -> set[str]:
    await pg.goto("/hosts")
    for name, value in fields.items():
        if name in ("exact-name", "exact-version"):
            await pg.check(f"#fleet-search input[name={name}]")
        elif name in ("outdated", "reboot", "connected", "stale"):
            await pg.select_option(f"#fleet-search select[name={name}]", value)
        else:
            await pg.fill(f"#fleet-search input[name={name}]", value)
    async with pg.expect_navigation():
        await pg.click("#fleet-search button")
    return await _shown(pg)


async def test_find_hosts_by_package_version_os_and_profile_then_send_requests(page, new_page, pool):
    ids = await _fleet(pool)
    pg = page
    await sign_in(pg, "olivia")

    # A package name is a prefix, as the API's: nginx also finds nginx-common.
    assert await _search(pg, package="nginx") == {"web1.example.net", "web2.example.net", "mail1.example.net"}
    assert "nginx-common:amd64 1.18.0-6" in await pg.inner_text('#hosts tr[data-host="%d"] td.packages' % ids["mail1.example.net"])
    assert pg.url.endswith("/hosts?package=nginx")  # empty fields are not sent
    assert await _search(pg, package="nginx", **{"exact-name": "1"}) == {"web1.example.net", "web2.example.net"}
    assert await _search(pg, package="nginx", version="1.24") == {"web2.example.net"}
    await pg.screenshot(path=str(ARTIFACTS / "fleet-package-version.png"), full_page=True)
    # `*` is a wildcard: any package with "ssl" in its name.
    assert await _search(pg, package="*ssl") == {"web1.example.net", "web2.example.net", "db1.example.net"}
    assert await _search(pg, package="openssl", version="3.0.1*") == {"web1.example.net"}
    assert await _search(pg, os="AlmaLinux") == {"db1.example.net"}
    assert await _search(pg, os="Debian GNU/Linux", **{"os-version": "12"}) == {"web1.example.net", "web2.example.net"}
    assert await _search(pg, profile="web", env="prod") == {"web1.example.net"}
    assert await _search(pg, reboot="yes") == {"db1.example.net"}
    assert await _search(pg, package="nginx", outdated="yes") == {"web2.example.net", "mail1.example.net"}
    assert await _search(pg, package="zzz") == set() and "0 hosts match" in await pg.inner_text("#fleet-count")
    # Each result links to its host.
    await _search(pg, profile="db")
    await pg.click("#hosts tbody a")
    await pg.wait_for_url(f"**/hosts/{ids['db1.example.net']}")

    # The hosts ticked: one request each, to exactly those hosts.
    assert await _search(pg, profile="web") == {"web1.example.net", "web2.example.net"}
    await pg.check(f'#hosts input[name=host][value="{ids["web2.example.net"]}"]')
    async with pg.expect_navigation():
        await pg.click('#fleet-request-form button[value="packages-infos"]')
    assert "1 request created" in await pg.inner_text("#requests-created")
    await pg.screenshot(path=str(ARTIFACTS / "fleet-requests-created.png"), full_page=True)
    rows = await pool.fetch("SELECT id, host_id, request, requested_by FROM agent_requests ORDER BY id")
    assert [(r["host_id"], r["request"], r["requested_by"]) for r in rows] == [
        (ids["web2.example.net"], "request-packages-infos", "olivia")]
    # ... each linked to its own page.
    async with pg.expect_navigation():
        await pg.click(f'#created-requests a[href="/hosts/{ids["web2.example.net"]}/requests/{rows[0]["id"]}"]')
    assert "request-packages-infos" in await pg.inner_text(".facts")

    # Every host matched by the search (all pages of it), with the update's parameters.
    await _search(pg, package="nginx", version="1.2*")
    await pg.check("#scope-matched")
    await pg.fill("#fleet-request-form input[name=packages]", "nginx")
    await pg.check("#fleet-request-form input[name=full-upgrade]")
    async with pg.expect_navigation():
        await pg.click('#fleet-request-form button[value="update"]')
    assert "2 requests created" in await pg.inner_text("#requests-created")
    rows = await pool.fetch("SELECT host_id, request, params FROM agent_requests WHERE request = 'request-packages-update'")
    assert {r["host_id"] for r in rows} == {ids["web1.example.net"], ids["web2.example.net"]}
    assert all(r["params"] == {"packages": ["nginx"], "update-params": {
        "dry-run": True, "ignore-exclusions": False, "full-upgrade": True, "keep-config-files": True}} for r in rows)

    # Select-all ticks every host shown.
    await _search(pg, os="Debian GNU/Linux")
    await pg.check("#hosts input[data-check-all]")
    async with pg.expect_navigation():
        await pg.click('#fleet-request-form button[value="general-infos"]')
    assert "3 requests created" in await pg.inner_text("#requests-created")
    assert pg.errors == [], pg.errors

    before = await pool.fetchval("SELECT count(*) FROM agent_requests")
    # A form without the CSRF token (as another site would post it, with the session's cookie): refused.
    resp = await pg.request.post("/hosts/requests", form={"request": "general-infos", "scope": "matched"})
    assert resp.status == 403 and "CSRF" in await resp.text()

    # A viewer finds hosts but sees no request action; a request with a valid token is still refused.
    viewer = await new_page()
    await sign_in(viewer, "victor")
    assert await _search(viewer, package="postfix") == {"mail1.example.net"}
    assert await viewer.locator("#fleet-request-form").count() == 0
    assert await viewer.locator("#hosts input[type=checkbox]").count() == 0
    await viewer.screenshot(path=str(ARTIFACTS / "fleet-viewer.png"), full_page=True)
    token = await viewer.get_attribute("header form input[name=csrf]", "value")
    resp = await viewer.request.post("/hosts/requests", form={"csrf": token, "request": "general-infos", "scope": "matched"})
    assert resp.status == 403 and "operator" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM agent_requests") == before
    assert viewer.errors == [], viewer.errors
