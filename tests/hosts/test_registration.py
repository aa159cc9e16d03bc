"""Registration, re-registration, unregistration and who may do them."""
from __future__ import annotations

import pytest

from tests.helpers import bearer, host_auth
from tests.hosts.helpers import installed, put, register


@pytest.mark.parametrize("role", ["viewer", "uploader"])
async def test_only_operators_and_admins_register(client, pool, make_key, role):
    key = await make_key(role)
    resp = await client.post("/api/v2/host/registering", json={"ip": "10.0.0.1", "hostname": "web01"}, headers=bearer(key))
    assert resp.status == 403 and "operator" in (await resp.json())["message_error"][0]
    assert await pool.fetchval("SELECT count(*) FROM hosts") == 0


async def test_a_host_token_cannot_register_hosts(client, pool, make_key):
    creds = await register(client, await make_key("operator"), "web01")
    resp = await client.post("/api/v2/host/registering", json={"ip": "10.0.0.2", "hostname": "evil"}, headers=host_auth(*creds[:2]))
    assert resp.status == 403
    assert await pool.fetchval("SELECT count(*) FROM hosts") == 1


async def test_credentials_are_strings_and_stored_hashed(client, pool, make_key):
    auth_id, token, host_id = await register(client, await make_key("operator"), "web01")
    assert auth_id.startswith("id_") and len(token) == 64
    row = await pool.fetchrow("SELECT auth_id, token_digest FROM hosts WHERE id = $1", host_id)
    assert row["auth_id"] == auth_id and token.encode() not in bytes(row["token_digest"])


async def test_reregistering_is_for_admins_and_keeps_history(client, pool, make_key, run_worker):
    operator, admin = await make_key("operator"), await make_key("admin")
    old = await register(client, operator, "web01")
    await put(client, old, "packages/installed", installed({"bash": "5.1-1"}))
    await run_worker()

    resp = await client.post("/api/v2/host/registering", json={"ip": "10.0.0.9", "hostname": "web01"}, headers=bearer(operator))
    assert resp.status == 409 and (await resp.json())["message_error"] == ["Host web01 is already registered"]
    resp = await client.post("/api/v2/host/registering", json={"ip": "10.0.0.9", "hostname": "web01"}, headers=bearer(admin))
    assert resp.status == 201
    body = await resp.json()
    assert body["host_id"] == old[2] and body["results"]["token"] != old[1] and len(body["message"]) == 2
    # The old credentials stop working; the new ones reach the same host and its inventory.
    resp = await client.put("/api/v2/host/status", data=b'{"agent_status": "running"}', headers=host_auth(*old[:2]))
    assert resp.status == 401
    new = (body["results"]["id"], body["results"]["token"])
    resp = await client.get(f"/api/v2/host/{old[2]}/installed", headers=host_auth(*new))
    assert [r["Name"] for r in (await resp.json())["results"]] == ["bash"]
    assert await pool.fetchval("SELECT ip FROM hosts") == "10.0.0.9"


async def test_unregister_with_a_key_and_a_hostname(client, pool, make_key):
    operator, viewer = await make_key("operator"), await make_key("viewer")
    await register(client, operator, "web01")
    await register(client, operator, "web02")
    resp = await client.delete("/api/v2/host/registering", json={"hostname": "web01"}, headers=bearer(viewer))
    assert resp.status == 403
    resp = await client.delete("/api/v2/host/registering", headers=bearer(operator))
    assert resp.status == 400 and "must use either host authId+token" in (await resp.json())["message_error"][0]
    resp = await client.delete("/api/v2/host/registering", json={"hostname": "nope"}, headers=bearer(operator))
    assert resp.status == 404 and (await resp.json())["message_error"] == ["No Id has been found from this hostname"]
    assert await pool.fetchval("SELECT count(*) FROM hosts") == 2
    resp = await client.delete("/api/v2/host/registering/", json={"hostname": "web01"}, headers=bearer(operator))
    assert resp.status == 200
    assert [r["hostname"] for r in await pool.fetch("SELECT hostname FROM hosts")] == ["web02"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"ip": "", "hostname": "web01"}', 400, "You must provide IP address and hostname"),
        (b'{"ip": "10.0.0.1"}', 400, "You must provide IP address and hostname"),
        (b'{"hostname": "web01"}', 400, "You must provide IP address and hostname"),
        (b'{"ip": "not-an-ip", "hostname": "web01"}', 400, "ip: Invalid IP address"),
        (b'{"ip": "10.0.0.1", "hostname": "bad host name"}', 400, "hostname: Invalid hostname"),
        (b'{"ip": 10, "hostname": ["x"]}', 400, None),
        (b'{"ip": "10.0.0.1", "hostname": "web01"', 400, None),
        (b"{}", 400, "You must provide IP address and hostname"),
        (b"[]", 400, None),
        (b'"web01"', 400, None),
        (b"", 400, None),
        (b'{"ip": "10.0.0.1", "hostname": "web\\u0000"}', 400, None),
    ],
)
async def test_bad_registration_bodies(client, pool, make_key, body, status, message):
    resp = await client.post("/api/v2/host/registering", data=body, headers=bearer(await make_key("operator")))
    assert resp.status == status and resp.content_type == "application/json"
    if message:
        assert (await resp.json())["message_error"] == [message]
    assert await pool.fetchval("SELECT count(*) FROM hosts") == 0


async def test_oversized_body_is_413_json(client, pool, make_key, settings):
    resp = await client.post(
        "/api/v2/host/registering", data=b" " * (settings.max_body_bytes + 10), headers=bearer(await make_key("operator"))
    )
    assert resp.status == 413 and (await resp.json())["return"] == 413


async def test_unregister_with_a_nul_in_the_hostname_is_400(client, pool, make_key):
    operator = await make_key("operator")
    await register(client, operator, "web01")
    resp = await client.delete("/api/v2/host/registering", data=b'{"hostname": "web\\u0000"}', headers=bearer(operator))
    assert resp.status == 400
    assert await pool.fetchval("SELECT count(*) FROM hosts") == 1


@pytest.mark.parametrize("path", ["packages/installed", "packages/available", "packages/event"])
async def test_oversized_report_is_413_json(client, pool, make_key, settings, path):
    creds = await register(client, await make_key("operator"), "web01")
    resp = await client.put(f"/api/v2/host/{path}", data=b" " * (settings.max_body_bytes + 10),
                            headers=host_auth(creds[0], creds[1]))
    assert resp.status == 413 and (await resp.json())["return"] == 413
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
