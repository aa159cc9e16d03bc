"""Secrets never leave: not in any response (listings included), not in logs, not in error messages."""
from __future__ import annotations

import hashlib
import logging
import re

from app import users
from tests.helpers import bearer, host_auth

_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def _variants(secret: str) -> set[str]:
    digest = hashlib.sha256(secret.encode()).digest()
    return {secret, digest.hex(), digest.hex().upper(), f"\\\\x{digest.hex()}"}


async def test_no_secret_in_any_response_or_log_line(client, pool, make_key, caplog):
    caplog.set_level(logging.DEBUG)
    admin = await make_key("admin", "root")
    viewer = await make_key("viewer", "watcher")
    await users.create_user(pool, "dash", "operator", "correct horse battery staple")
    password_hash = await pool.fetchval("SELECT password FROM users WHERE username = 'dash'")
    resp = await client.post("/api/v2/host/registering", json={"hostname": "web1", "ip": "192.0.2.1"},
                             headers=bearer(admin))
    assert resp.status == 201
    reg = await resp.json()
    auth_id, token = reg["results"]["id"], reg["results"]["token"]
    host = host_auth(auth_id, token)
    near_miss = admin[:-1] + ("a" if admin[-1] != "a" else "b")  # a typo of the real key is a secret too

    secrets = {"admin key": admin, "viewer key": viewer, "host token": token, "near-miss key": near_miss,
               "password": "correct horse battery staple", "password hash": password_hash}
    forms = {name: _variants(value) for name, value in secrets.items()}
    forms["password hash"] = {password_hash, password_hash.split("$")[-1]}

    # Traffic with those secrets: the host reports, wrong keys, profile reads, status.
    bodies: list[tuple[str, bytes]] = []

    async def call(method, path, headers, **kw):
        r = await client.request(method, path, headers=headers, **kw)
        bodies.append((f"{method} {path} -> {r.status}", await r.read() + str(dict(r.headers)).encode()))
        return r

    await call("PUT", "/api/v2/host/status", host, json={"hostname": "web1", "os": "Debian", "os_version": "12"})
    await call("PUT", "/api/v2/host/packages/installed", host,
               json={"installed_packages": [{"name": "openssl", "version": "3.0.11"}]})
    await call("GET", "/api/v2/status", bearer(near_miss))
    await call("GET", "/api/v2/status", host_auth(auth_id, token[:-1]))
    await call("GET", "/api/v2/status", {"Authorization": f"Host {auth_id}:{token}:{token}"})
    await call("GET", f"/api/v2/hosts?token={token}", bearer(admin))
    await call("POST", "/api/v2/host/registering", bearer(admin), json={"hostname": "web1", "ip": "192.0.2.1"})
    # Every GET route of the API, with real ids, as admin, viewer and the host.
    host_id = reg["host_id"]
    values = {"host_id": str(host_id), "id": "1", "value": "Debian", "version": "12", "name": "web1",
              "filter": "os"}
    app = client.server.app
    for route in app.router.routes():
        if route.method not in ("GET", "*") or route.resource is None:
            continue
        template = route.resource.canonical
        if not (template.startswith("/api/") or template in ("/metrics", "/healthz")):
            continue
        path = _PARAM.sub(lambda m: values.get(m.group(1), "1"), template)
        for who in (bearer(admin), bearer(viewer), host):
            await call("GET", path, who)
    assert len(bodies) > 50

    for what, body in bodies:
        text = body.decode("utf-8", "replace")
        for name, variants in forms.items():
            for v in variants:
                assert v not in text, f"{name} in the answer to {what}"
    # The registration answer is the one place a token is given, once: it is not in the logs either.
    # aiohttp's access log (full path and query) is the test server's; `depot serve` runs without it.
    records = [r for r in caplog.records if r.name != "aiohttp.access"]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    log_text = "\n".join(handler.format(r) + repr(r.args) + repr(getattr(r, "__dict__", {})) for r in records)
    for name, variants in forms.items():
        for v in variants:
            assert v not in log_text, f"{name} in the logs"
    assert re.search(r"invalid API key|invalid host Id and token", "".join(b.decode("utf-8", "replace") for _, b in bodies))
