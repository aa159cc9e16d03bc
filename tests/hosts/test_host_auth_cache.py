"""Report endpoints skip the credential lookup for recently verified hosts, but never write with
credentials that have changed since (re-registration or unregistration, in any app replica)."""
from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from app import auth, resources
from app.hosts import reports
from tests.helpers import bearer, host_auth
from tests.hosts.helpers import installed, put, register

EVENTS = {"events": [{"date_start": "2026-01-01", "time_start": "10:00:00", "command": "apt-get -y upgrade"}]}


async def _reports(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM host_reports")


async def test_old_credentials_cannot_report_after_reregistration(client, pool, make_key):
    old = await register(client, await make_key("operator"), "cached01")
    await put(client, old, "packages/installed", installed({"a": "1"}))  # verified once: now cached
    assert client.app[auth.HOST_CACHE].get(old[0]) is not None
    stored = await _reports(pool)

    new = await register(client, await make_key("admin"), "cached01")  # new credentials, same host
    assert new[2] == old[2]
    for path, body in (("packages/installed", installed({"a": "2"})), ("packages/available", {"available_packages": []}),
                       ("packages/event", EVENTS)):
        resp = await put(client, old, path, body, status=401)
        assert resp["message_error"] == ["Authentication error: invalid host Id and token"]  # as for any bad token
    assert await _reports(pool) == stored
    assert await pool.fetchval("SELECT count(*) FROM host_events") == 0
    assert client.app[auth.HOST_CACHE].get(old[0]) is None  # the stale entry is gone

    await put(client, new, "packages/installed", installed({"a": "2"}))
    assert await _reports(pool) == stored + 1


async def test_a_wrong_token_is_refused_even_with_a_cached_entry(client, pool, make_key):
    creds = await register(client, await make_key("operator"), "cached02")
    await put(client, creds, "packages/installed", installed({"a": "1"}))
    resp = await client.put("/api/v2/host/packages/installed", data=json.dumps(installed({"a": "2"})),
                            headers=host_auth(creds[0], "0" * 64))
    assert resp.status == 401


async def test_unregistered_host_with_cached_credentials_gets_401(client, pool, make_key):
    creds = await register(client, await make_key("operator"), "cached03")
    await put(client, creds, "packages/event", EVENTS)
    resp = await client.delete("/api/v2/host/registering", json={"hostname": "cached03"},
                               headers=bearer(await make_key("operator")))
    assert resp.status == 200
    await put(client, creds, "packages/event", EVENTS, status=401)
    await put(client, creds, "packages/installed", installed({"a": "1"}), status=401)
    assert await _reports(pool) == 0


def test_the_cache_expires_and_stays_bounded():
    cache = auth.HostCredentialCache(seconds=60, max_entries=2)
    cache.put("a", 1, b"x")
    cache.put("b", 2, b"y")
    cache.put("c", 3, b"z")
    assert cache.get("a") is None and cache.get("c") == (3, b"z")
    expired = auth.HostCredentialCache(seconds=-1)
    expired.put("a", 1, b"x")
    assert expired.get("a") is None


async def test_a_changed_report_read_with_its_credentials_skips_the_digest_alone(client, pool, make_key):
    """A request whose credentials were looked up (not cached) has read the host's last digests: a
    changed report then goes to the intake with its body in one statement, the same report again
    goes as its digest alone, and with cached credentials a changed report still sends its digest first."""
    intake = client.app[resources.INTAKE]
    sent = []
    write = intake.reports.write

    async def counted(pool_, items):
        sent.extend((item.host_id, item.body is not None) for item in items)
        return await write(pool_, items)

    intake.reports.write = counted
    creds = await register(client, await make_key("operator"), "digest01")
    cache = client.app[auth.HOST_CACHE]

    async def report(pairs: dict, cached: bool) -> list:
        if not cached:
            cache.drop(creds[0])
        sent.clear()
        await put(client, creds, "packages/installed", installed(pairs))
        return list(sent)

    assert await report({"a": "1"}, cached=False) == [(creds[2], True)]             # first report: body at once
    assert await report({"a": "1"}, cached=False) == [(creds[2], False)]            # the same: digest alone
    assert await report({"a": "2"}, cached=True) == [(creds[2], False), (creds[2], True)]  # cached: digest first
    assert await report({"a": "3"}, cached=False) == [(creds[2], True)]
    assert await report({"a": "3"}, cached=True) == [(creds[2], False)]
    stored = await pool.fetch("SELECT digest FROM host_reports WHERE host_id = $1 ORDER BY id", creds[2])
    assert [r["digest"] for r in stored] == [reports.body_digest(json.dumps(installed({"a": v})).encode())
                                             for v in "123"]  # each changed report stored once, none twice


async def test_concurrent_credential_lookups_share_a_statement(client, pool, make_key):
    """Lookups of concurrent requests go together (each request still checks its own token), an unknown
    id gets None, and a statement that fails fails the requests it served, not the next ones."""
    hosts = [await register(client, await make_key("operator"), f"lookup{i:02d}") for i in range(5)]

    class Counted:  # the real pool, its statements counted
        def __init__(self):
            self.statements = []

        async def fetch(self, sql, ids):
            self.statements.append(list(ids))
            return await pool.fetch(sql, ids)

    counted, lookups = Counted(), auth.HostLookups(max_group=3, max_inflight=1)
    asked = [h[0] for h in hosts] + [hosts[0][0], "id_" + "0" * 32]
    rows = await asyncio.gather(*(lookups.row(counted, a) for a in asked))
    assert [r and r["id"] for r in rows] == [h[2] for h in hosts] + [hosts[0][2], None]
    assert sorted(a for s in counted.statements for a in s) == sorted(set(asked))  # each id looked up once
    assert [len(s) for s in counted.statements] == [3, 3]  # 6 ids, at most 3 a statement, one at a time

    class Failing(Counted):
        async def fetch(self, sql, ids):
            raise asyncpg.exceptions.ConnectionDoesNotExistError("gone")

    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
        await lookups.row(Failing(), hosts[1][0])
    assert (await lookups.row(counted, hosts[1][0]))["id"] == hosts[1][2]

    # Through the API: concurrent status reports, each with its own credentials, one with a wrong token.
    resps = await asyncio.gather(*(client.put("/api/v2/host/status", data=json.dumps({"agent_status": "running"}),
                                              headers=host_auth(h[0], h[1] if i else "0" * 64))
                                   for i, h in enumerate(hosts)))
    assert [r.status for r in resps] == [401, 200, 200, 200, 200]
