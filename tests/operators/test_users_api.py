"""Users and API keys over HTTP: admin only, keys shown once, older key stops working, never a digest."""
from __future__ import annotations

from tests.helpers import bearer


async def _json(resp, status: int) -> dict:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_admin_creates_lists_changes_rotates_and_deletes(client, pool, admin_key, make_key):
    admin = bearer(admin_key)
    body = await _json(await client.post("/api/v2/users/", json={"name": "carol", "role": "operator"},
                                         headers=admin), 201)
    user = body["results"]
    assert user["Name"] == "carol" and user["Role"] == "operator" and user["Has_password"] is False
    first_key = user["Api_key"]
    assert first_key.startswith("ak_") and user["Key_created"] and user["Key_last_used"] is None
    assert (await client.get("/api/v2/tasks/", headers=bearer(first_key))).status == 200
    await _json(await client.post("/api/v2/users", json={"name": "carol", "role": "viewer"}, headers=admin), 409)
    # Without a key, with a password.
    body = await _json(await client.post("/api/v2/users", json={"name": "dave", "role": "viewer", "api_key": False,
                                                                "password": "long enough pw"}, headers=admin), 201)
    assert "Api_key" not in body["results"] and body["results"]["Has_password"] is True

    listing = await _json(await client.get("/api/v2/users", headers=admin), 200)
    assert [u["Name"] for u in listing["results"]] == ["admin", "carol", "dave"]
    assert all("Api_key" not in u for u in listing["results"])
    one = await _json(await client.get("/api/v2/users/carol/", headers=admin), 200)
    assert one["results"]["Role"] == "operator"

    # A role change applies at once: as a viewer, the same key may no longer schedule a task.
    await _json(await client.patch("/api/v2/users/carol", json={"role": "viewer"}, headers=admin), 200)
    resp = await client.post("/api/v2/task/schedule", json={"kind": "retention", "cron": "0 3 * * *", "params": {}},
                             headers=bearer(first_key))
    assert resp.status == 403
    await _json(await client.put("/api/v2/users/carol", json={"role": "uploader"}, headers=admin), 200)
    await _json(await client.patch("/api/v2/users/carol", json={"role": "root"}, headers=admin), 400)

    # A new key: returned once, the older one stops working.
    body = await _json(await client.post("/api/v2/users/carol/apikey", headers=admin), 201)
    new_key = body["results"]["Api_key"]
    assert body["results"]["Name"] == "carol" and new_key != first_key
    assert (await client.get("/api/v2/tasks", headers=bearer(first_key))).status == 401
    assert (await client.get("/api/v2/tasks", headers=bearer(new_key))).status == 200
    await _json(await client.post("/api/v2/users/nobody/apikey", headers=admin), 404)

    await _json(await client.delete("/api/v2/users/carol", headers=admin), 200)
    assert (await client.get("/api/v2/tasks", headers=bearer(new_key))).status == 401
    await _json(await client.delete("/api/v2/users/carol", headers=admin), 404)
    await _json(await client.get("/api/v2/users/carol", headers=admin), 404)

    # No digest, hash or other key anywhere in what the API said.
    stored = await pool.fetch("SELECT digest FROM api_keys")
    text = str(listing) + str(one)
    assert all(r["digest"].hex() not in text for r in stored) and "scrypt$" not in text


async def test_only_admins_and_never_the_last_admin(client, admin_key, make_key):
    operator = bearer(await make_key("operator", "op"))
    for method, path in (("GET", "/api/v2/users"), ("POST", "/api/v2/users"), ("GET", "/api/v2/users/op"),
                         ("PATCH", "/api/v2/users/op"), ("DELETE", "/api/v2/users/op"),
                         ("POST", "/api/v2/users/op/apikey")):
        resp = await client.request(method, path, json={"name": "x", "role": "admin"}, headers=operator)
        assert resp.status == 403, (method, path)
    assert (await client.get("/api/v2/users")).status == 401
    admin = bearer(admin_key)
    await _json(await client.patch("/api/v2/users/admin", json={"role": "viewer"}, headers=admin), 409)
    await _json(await client.delete("/api/v2/users/admin", headers=admin), 409)
    # With a second admin, the first may step down.
    second = (await _json(await client.post("/api/v2/users", json={"name": "root2", "role": "admin"},
                                            headers=admin), 201))["results"]["Api_key"]
    await _json(await client.delete("/api/v2/users/admin", headers=bearer(second)), 200)
    await _json(await client.delete("/api/v2/users/root2", headers=bearer(second)), 409)


async def test_key_last_use_is_recorded_to_the_minute(client, pool, admin_key):
    await pool.execute("UPDATE api_keys SET last_used_at = NULL")
    assert (await client.get("/api/v2/users", headers=bearer(admin_key))).status == 200
    first = await pool.fetchval("SELECT last_used_at FROM api_keys")
    assert first is not None
    assert (await client.get("/api/v2/users", headers=bearer(admin_key))).status == 200
    assert await pool.fetchval("SELECT last_used_at FROM api_keys") == first  # not rewritten within the minute
    users = (await (await client.get("/api/v2/users", headers=bearer(admin_key))).json())["results"]
    assert users[0]["Key_last_used"] == first.isoformat()
