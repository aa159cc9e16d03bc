"""Shared helpers for the host tests: register a host, send reports as the agent does."""
from __future__ import annotations

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


def installed(pairs: dict) -> dict:
    return {"installed_packages": [{"name": n, "version": v} for n, v in pairs.items()]}
