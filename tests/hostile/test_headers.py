"""Security headers on every response; no wildcard CORS, only configured origins."""
from __future__ import annotations

from dataclasses import replace

import aiohttp

from app.main import create_app
from tests.helpers import bearer

EVIL = "https://evil.example"
GOOD = "https://ops.example.com"


def _assert_hardened(resp, api: bool):
    h = resp.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    if api:
        assert h["Cache-Control"] == "no-store"
        assert "default-src 'none'" in h["Content-Security-Policy"]


async def test_every_kind_of_response_carries_security_headers(client, admin_key):
    cases = [
        ("GET", "/api/v2/status", bearer(admin_key), 200, True),
        ("GET", "/api/v2/status", {}, 401, True),
        ("GET", "/api/v2/no-such-thing", bearer(admin_key), 404, True),
        ("GET", "/no-such-page", {}, 404, False),
        ("GET", "/healthz", {}, 200, False),
    ]
    for method, path, headers, status, api in cases:
        resp = await client.request(method, path, headers={**headers, "Origin": EVIL})
        assert resp.status == status, (path, resp.status)
        _assert_hardened(resp, api)
        assert "Access-Control-Allow-Origin" not in resp.headers, path


async def test_no_cors_at_all_by_default_even_for_preflights(client, admin_key):
    resp = await client.options(
        "/api/v2/status", headers={"Origin": EVIL, "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert resp.status in (401, 405)


async def test_configured_origins_only(aiohttp_client, settings, admin_key):
    client = await aiohttp_client(create_app(replace(settings, cors_origins=(GOOD,))))
    resp = await client.get("/api/v2/status", headers={**bearer(admin_key), "Origin": GOOD})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == GOOD  # echoed, never "*"
    assert "Origin" in resp.headers.getall("Vary")
    resp = await client.get("/api/v2/status", headers={**bearer(admin_key), "Origin": EVIL})
    assert "Access-Control-Allow-Origin" not in resp.headers
    pre = await client.options("/api/v2/status", headers={"Origin": GOOD, "Access-Control-Request-Method": "PUT"})
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == GOOD
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    pre = await client.options("/api/v2/status", headers={"Origin": EVIL, "Access-Control-Request-Method": "PUT"})
    assert "Access-Control-Allow-Origin" not in pre.headers


async def test_an_undecodable_body_is_a_json_400_not_a_500(client, admin_key):
    resp = await client.post("/api/v2/profile", json={"name": "web"}, headers=bearer(admin_key))
    assert resp.status == 201, await resp.text()
    answers = []
    for encoding in ("gzip", "deflate"):
        for size in (10, 95, 3000, 70_000):
            try:
                resp = await client.put("/api/v2/profile/web", data=b"x" * size, headers={
                    **bearer(admin_key), "Content-Encoding": encoding, "Content-Type": "text/plain"})
                answers.append((resp.status, resp.content_type, await resp.read()))
            except aiohttp.ServerDisconnectedError:
                answers.append((0, "", b""))  # aiohttp's parser may drop it before the application sees it
    assert all(a[0] in (0, 400) for a in answers), answers
    json_400 = [a for a in answers if a[1] == "application/json"]
    assert json_400 and all(b"could not be read" in a[2] for a in json_400), answers


async def test_an_id_past_64_bits_is_a_400_not_a_500(client, admin_key):
    for path in ("/api/v2/host/99999999999999999999999", "/api/v2/host/99999999999999999999999/installed",
                 "/api/v2/task/99999999999999999999999", "/api/v2/snapshot/99999999999999999999999"):
        resp = await client.get(path, headers=bearer(admin_key))
        assert resp.status in (400, 404), (path, resp.status)
        assert resp.content_type == "application/json"
