"""NUL characters (which PostgreSQL text cannot hold) anywhere in input are a 4xx, never a 500."""
from __future__ import annotations

import pytest

from tests.helpers import bearer


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/v2/hosts/os/a%00b", None),
        ("GET", "/api/v2/hosts/os/a/b%00", None),
        ("GET", "/api/v2/hosts/kernel/%00", None),
        ("GET", "/api/v2/hosts/profile/%00", None),
        ("GET", "/api/v2/profile/a%00", None),
        ("GET", "/api/v2/profile/a%00/repos", None),
        ("PUT", "/api/v2/profile/a%00", b'{"Notes": "x"}'),
        ("DELETE", "/api/v2/profile/a%00", None),
        ("POST", "/api/v2/profile", b'{"name": "ok", "Notes": "a\\u0000"}'),
        ("PUT", "/api/v2/profile/ok", b'{"Notes": "a\\u0000"}'),
    ],
)
async def test_nul_is_refused(client, pool, make_key, method, path, body):
    await pool.execute("INSERT INTO profiles (name) VALUES ('ok')")
    resp = await client.request(method, path, data=body, headers=bearer(await make_key("admin")))
    assert 400 <= resp.status < 500, await resp.text()
    assert await pool.fetchval("SELECT notes FROM profiles") == ""
