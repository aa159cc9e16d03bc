"""Shared helpers for the host tests: register a host, send reports as the agent does."""
from __future__ import annotations

from app.hosts import inventory as inventory_store
from tests.helpers import bearer, host_auth
from tests.hosts.captured import agent_body


async def register(client, key: str, hostname: str = "localhost", ip: str = "127.0.0.1") -> tuple[str, str, int]:
    resp = await client.post("/api/v2/host/registering", json={"ip": ip, "hostname": hostname}, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["results"]["id"], body["results"]["token"], body["host_id"]


async def put(client, creds: tuple, path: str, obj, status: int = 200) -> dict:
    resp = await client.put(f"/api/v2/host/{path}", data=agent_body(obj), headers=host_auth(creds[0], creds[1]))
    body = await resp.json()
    assert resp.status == status, body
    return body


async def registered_host(client, make_key, name: str = "web01", os_family: str = "Debian") -> tuple[str, str, int]:
    """A host registered by a new operator's key, its status sent with `os_family`."""
    creds = await register(client, await make_key("operator"), name)
    await put(client, creds, "status", {"os_family": os_family})
    return creds


async def put_raw(client, creds: tuple, raw: bytes, status: int = 200) -> dict:
    """An installed report sent as these bytes."""
    resp = await client.put("/api/v2/host/packages/installed", data=raw, headers=host_auth(creds[0], creds[1]))
    body = await resp.json()
    assert resp.status == status, body
    return body


def installed(pairs: dict) -> dict:
    return {"installed_packages": [{"name": n, "version": v} for n, v in pairs.items()]}


async def state_and_history(pool, host_id):
    """A host's set as {(name, arch): version} and its history rows (change, name, arch, old, new), which are then
    deleted (each call sees the changes since the last)."""
    packages = {(r["name"], r["arch"]): r["version"] for r in await pool.fetch(
        "SELECT v.name, v.arch, v.version FROM host_sets s, unnest(s.ids) i JOIN package_versions v ON v.id = i"
        " WHERE s.host_id = $1", host_id)}
    history = [tuple(r) for r in await pool.fetch(
        "SELECT change, name, arch, old_version, new_version FROM host_history WHERE host_id = $1 ORDER BY change, name",
        host_id)]
    await pool.execute("DELETE FROM host_history WHERE host_id = $1", host_id)
    return packages, history


def trim_the_cache_to_nothing() -> bool:
    """What another batch's trim may do to the worker's dictionary cache between two steps of a batch: every
    entry leaves it. True if it is then empty."""
    d = inventory_store.dictionary()
    limit, d.limit = d.limit, 1
    try:
        d.trim()
    finally:
        d.limit = limit
    return not d.keys
