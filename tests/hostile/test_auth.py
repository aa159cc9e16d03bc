"""Hostile credentials: wrong, truncated, replayed, oversized; the failed-auth throttle; timing."""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import pytest

from app import auth, users
from app.main import create_app
from app.security import AuthThrottle
from tests.helpers import bearer, host_auth

STATUS = "/api/v2/status"


async def _insert_host(pool, name: str) -> tuple[int, str, str]:
    auth_id, token = auth.new_host_credentials()
    host_id = await pool.fetchval(
        "INSERT INTO hosts (hostname, ip, auth_id, token_digest) VALUES ($1, '192.0.2.1', $2, $3) RETURNING id",
        name, auth_id, auth.digest(token),
    )
    return host_id, auth_id, token


def _flip(ch: str) -> str:
    return "a" if ch != "a" else "b"


async def _assert_401(client, headers, reason: str | None = None):
    resp = await client.get(STATUS, headers=headers)
    assert resp.status == 401, await resp.text()
    body = await resp.json()
    assert body["rc"] == 401 and body["message_error"][0].startswith("Authentication error")
    if reason:
        assert reason in body["message_error"][0]
    return body


async def test_wrong_truncated_and_replayed_api_keys_are_refused(client, pool, make_key):
    key = await make_key("admin", "alice")
    assert (await client.get(STATUS, headers=bearer(key))).status == 200
    await _assert_401(client, bearer(key[:-1]), "invalid API key")  # truncated
    await _assert_401(client, bearer(key + "x"), "invalid API key")  # extended
    await _assert_401(client, bearer(key[:-1] + _flip(key[-1])))  # right key id, last char wrong
    await _assert_401(client, bearer(key[:15] + _flip(key[15]) + key[16:]))  # first secret char wrong
    await _assert_401(client, bearer(""))
    await _assert_401(client, {"Authorization": "Bearer"}, "invalid Authorization header format")
    await _assert_401(client, {"Authorization": f"bearer {key}"})  # scheme is case-sensitive, as in the reference
    await _assert_401(client, {"Authorization": f"Bearer  {key}"})
    await _assert_401(client, bearer("ak_" + "é" * 52))
    # Replayed: a key that was replaced no longer works, the new one does.
    new = await users.create_api_key(pool, "alice")
    await _assert_401(client, bearer(key), "invalid API key")
    assert (await client.get(STATUS, headers=bearer(new))).status == 200


async def test_wrong_truncated_and_swapped_host_credentials_are_refused(client, pool):
    _, id1, token1 = await _insert_host(pool, "web1")
    _, id2, token2 = await _insert_host(pool, "web2")
    assert (await client.get(STATUS, headers=host_auth(id1, token1))).status == 200
    await _assert_401(client, host_auth(id1, token1[:-1]), "invalid host Id and token")
    await _assert_401(client, host_auth(id1, token2))  # another host's token
    await _assert_401(client, host_auth(id2, token1))
    await _assert_401(client, host_auth(id1, ""))
    await _assert_401(client, host_auth("", token1))
    await _assert_401(client, {"Authorization": f"Host {id1}:{token1}:extra"}, "invalid host Id and token format")
    await _assert_401(client, {"Authorization": f"Host {id1}"}, "invalid host Id and token format")
    await _assert_401(client, host_auth("id_" + "0" * 5000, token1))
    # Re-registration replaces the token: the old one is a replay.
    _, fresh = auth.new_host_credentials()
    await pool.execute("UPDATE hosts SET token_digest = $2 WHERE auth_id = $1", id1, auth.digest(fresh))
    await _assert_401(client, host_auth(id1, token1))
    assert (await client.get(STATUS, headers=host_auth(id1, fresh))).status == 200


async def test_oversized_and_binary_authorization_headers_never_give_a_500(client):
    for value in ["Bearer " + "A" * 7000, "Host " + ":" * 3000, "Basic dXNlcjpwYXNz", "Bearer \u00e9\u00e9", "Host \u00e9:\u00e9"]:
        resp = await client.get(STATUS, headers={"Authorization": value})
        assert resp.status in (400, 401), (value[:20], resp.status)
    resp = await client.get(STATUS, headers={"Authorization": "Bearer " + "A" * 20000})
    assert resp.status in (400, 401, 431)


async def test_failed_authentication_bursts_are_slowed_down(aiohttp_client, settings, make_key):
    key = await make_key("viewer", "bob")
    app = create_app(replace(settings, auth_fail_limit=5, auth_fail_window=60))
    client = await aiohttp_client(app)
    # A missing header is not a guess: it never counts.
    for _ in range(10):
        assert (await client.get(STATUS)).status == 401
    for _ in range(5):
        assert (await client.get(STATUS, headers=bearer(key[:-1] + _flip(key[-1])))).status == 401
    resp = await client.get(STATUS, headers=bearer("ak_" + "x" * 52))
    assert resp.status == 429
    body = await resp.json()
    assert body["rc"] == 429 and "Too many failed authentication attempts" in body["message_error"][0]
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= 60 and body["retry_after"] == retry
    # While blocked, even the right key waits: the address is throttled, not the key.
    assert (await client.get(STATUS, headers=bearer(key))).status == 429
    # Unauthenticated paths are not affected.
    assert (await client.get("/healthz")).status == 200


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(aiohttp_client, settings, make_key):
    key = await make_key("viewer", "dora")
    app = create_app(replace(settings, auth_fail_limit=3, auth_fail_window=60, trusted_proxies=("127.0.0.0/8",)))
    client = await aiohttp_client(app)
    wrong = bearer("ak_" + "x" * 52)
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(3):
        assert (await client.get(STATUS, headers={**wrong, **attacker})).status == 401
    assert (await client.get(STATUS, headers={**wrong, **attacker})).status == 429
    # Another client behind the same proxy is not locked out by the attacker.
    assert (await client.get(STATUS, headers={**bearer(key), "X-Forwarded-For": "198.51.100.20"})).status == 200
    # Only the hop the proxy appended counts: a client-supplied first entry cannot dodge the bucket.
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.9"}
    assert (await client.get(STATUS, headers={**wrong, **spoofed})).status == 429


async def test_an_untrusted_peer_cannot_pick_its_bucket(aiohttp_client, settings):
    client = await aiohttp_client(create_app(replace(settings, auth_fail_limit=2, auth_fail_window=60)))
    wrong = bearer("ak_" + "x" * 52)
    for n in range(2):
        assert (await client.get(STATUS, headers={**wrong, "X-Forwarded-For": f"198.51.100.{n}"})).status == 401
    assert (await client.get(STATUS, headers={**wrong, "X-Forwarded-For": "198.51.100.99"})).status == 429


def test_throttle_refills_over_the_window_and_is_per_address():
    now = [1000.0]
    t = AuthThrottle(limit=3, window=30, clock=lambda: now[0])
    for _ in range(3):
        assert t.retry_after("198.51.100.7") == 0
        t.failed("198.51.100.7")
    assert t.retry_after("198.51.100.7") == 10  # one token per 10 s
    assert t.retry_after("198.51.100.8") == 0  # another address is unaffected
    now[0] += 10
    assert t.retry_after("198.51.100.7") == 0
    t.failed("198.51.100.7")
    assert t.retry_after("198.51.100.7") > 0
    now[0] += 60
    assert t.retry_after("198.51.100.7") == 0


def test_throttle_memory_is_bounded():
    t = AuthThrottle(limit=2, window=10)
    t.MAX_ADDRESSES = 100
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t._buckets) <= 100


async def _median_rejection(client, key: str, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = await client.get(STATUS, headers=bearer(key))
        await resp.read()
        times.append(time.perf_counter() - t0)
        assert resp.status == 401
    return statistics.median(times)


async def test_rejection_time_does_not_depend_on_how_much_of_the_key_was_right(client, make_key):
    """Medians of many interleaved tries; generous tolerance (a loaded 2-core box), re-measured up to 3 times."""
    key = await make_key("admin", "carol")
    candidates = {
        "nothing right": "ak_" + "Z" * 52,
        "key id right, first secret char wrong": key[:15] + _flip(key[15]) + key[16:],
        "all but the last char right": key[:-1] + _flip(key[-1]),
    }
    for _ in range(20):  # warm-up: prepared statements, pool connections
        for wrong in candidates.values():
            await _median_rejection(client, wrong, 1)
    for round_ in range(3):
        medians = {name: [] for name in candidates}
        items = list(candidates.items())
        for block in range(6):  # interleaved, rotating blocks: drift in machine load hits every candidate alike
            for name, wrong in items[block % 3:] + items[: block % 3]:
                medians[name].append(await _median_rejection(client, wrong, 25))
        result = {name: statistics.median(m) for name, m in medians.items()}
        low, high = min(result.values()), max(result.values())
        if high - low <= max(0.0005, 0.3 * low):
            break
    else:
        pytest.fail(f"rejection times differ: { {k: f'{v * 1000:.2f} ms' for k, v in result.items()} }")
    print(f"\nrejection medians: { {k: f'{v * 1000:.2f} ms' for k, v in result.items()} }")
