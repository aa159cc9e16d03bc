"""The service core: health, the envelope, authentication, users and keys."""
from __future__ import annotations

from app import users
from tests.helpers import bearer


async def test_healthz_reports_both_services(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}


async def test_status_needs_credentials_and_says_why(client):
    cases = {
        None: "Authentication error: HTTP Authorization header is missing",
        "Bearer nope": "Authentication error: invalid API key",
        "Host a:b:c": "Authentication error: invalid host Id and token format",
        "Host id_123:tok": "Authentication error: invalid host Id and token",
        "Basic abc": "Authentication error: invalid Authorization header format",
    }
    for header, message in cases.items():
        resp = await client.get("/api/v2/status", headers={"Authorization": header} if header else {})
        assert resp.status == 401, header
        body = await resp.json()
        assert body["return"] == 401 and body["message_error"] == [message]


async def test_status_with_a_key_uses_the_envelope(client, admin_key):
    resp = await client.get("/api/v2/status", headers=bearer(admin_key))
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "OK" and body["rc"] == 200 and body["return"] == 200 and "note" in body


async def test_unknown_route_and_wrong_method_are_json(client, admin_key):
    resp = await client.get("/api/v2/nothing-here", headers=bearer(admin_key))
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["message_error"] == ["Invalid request"]
    resp = await client.post("/healthz")
    assert resp.status == 405 and (await resp.json())["message_error"] == ["Method not allowed"]


async def test_new_api_key_replaces_the_old_one(client, pool, admin_key):
    resp = await client.get("/api/v2/status", headers=bearer(admin_key))
    assert resp.status == 200
    newer = await users.create_api_key(pool, "admin")
    assert newer != admin_key and newer.startswith("ak_")
    assert (await client.get("/api/v2/status", headers=bearer(admin_key))).status == 401
    assert (await client.get("/api/v2/status", headers=bearer(newer))).status == 200
    stored = await pool.fetchval("SELECT digest FROM api_keys")
    assert newer.encode() not in bytes(stored) and len(stored) == 32


async def test_a_key_that_is_almost_right_is_refused(client, admin_key):
    almost = admin_key[:-1] + ("a" if admin_key[-1] != "a" else "b")
    assert (await client.get("/api/v2/status", headers=bearer(almost))).status == 401
    assert (await client.get("/api/v2/status", headers=bearer(admin_key[:-5]))).status == 401


async def test_first_start_creates_admin_once(pool):
    key = await users.ensure_admin(pool)
    assert key and key.startswith("ak_")
    assert await users.ensure_admin(pool) is None
    assert (await pool.fetchrow("SELECT username, role FROM users")) == ("admin", "admin")


async def test_passwords_are_hashed_and_checked(pool):
    await users.create_user(pool, "ops", "operator", "s3cret-pass")
    stored = await pool.fetchval("SELECT password FROM users WHERE username = 'ops'")
    assert stored.startswith("scrypt$") and "s3cret-pass" not in stored
    assert (await users.check_password(pool, "ops", "s3cret-pass"))["role"] == "operator"
    assert await users.check_password(pool, "ops", "wrong") is None
    assert await users.check_password(pool, "nobody", "s3cret-pass") is None
