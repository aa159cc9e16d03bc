"""Host reports counted per minute in Redis, fleet-wide: two server replicas add to the same series,
the dashboard chart draws it, a Redis outage keeps the counts for the next flush."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app import reports_counter
from app.dashboard import queries
from app.main import create_app
from tests.helpers import bearer, wait_for
from tests.faults import procs
from tests.test_dashboard import login


async def _host(client, admin_key, name: str) -> dict:
    resp = await client.post("/api/v2/host/registering", json={"hostname": name, "ip": "192.0.2.9"},
                             headers=bearer(admin_key))
    assert resp.status == 201, await resp.text()
    creds = (await resp.json())["results"]
    return {"Authorization": f"Host {creds['id']}:{creds['token']}"}


async def _report_all_kinds(client, agent) -> None:
    for path, body in (
        ("status", {"os": "Debian GNU/Linux", "os_version": "12"}),
        ("packages/installed", {"installed_packages": [{"name": "bash", "version": "5.2.15-2"}]}),
        ("packages/available", {"available_packages": []}),
        ("packages/event", {"events": []}),
    ):
        resp = await client.put(f"/api/v2/host/{path}", json=body, headers=agent)
        assert resp.status == 200, await resp.text()


async def _total(redis, counter, minute) -> dict:
    raw = await redis.hgetall(counter.minute_key(minute))
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.slow
async def test_two_replicas_count_into_one_series_and_the_chart_draws_it(aiohttp_client, settings, redis,
                                                                          admin_key, make_key):
    queries.clear_cache()
    replica_a = await aiohttp_client(create_app(settings))
    replica_b = await aiohttp_client(create_app(settings))
    counter_a = replica_a.server.app[reports_counter.COUNTER]
    await _report_all_kinds(replica_a, await _host(replica_a, admin_key, "a.example.net"))
    await _report_all_kinds(replica_b, await _host(replica_b, admin_key, "b.example.net"))
    # A refused report (bad body) is not counted.
    agent = await _host(replica_b, admin_key, "c.example.net")
    assert (await replica_b.put("/api/v2/host/packages/installed", json={"nope": 1}, headers=agent)).status == 400
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)

    async def flushed():
        # Reports sent just before a minute boundary land in that minute: look at both.
        totals = [await _total(redis, counter_a, m) for m in (minute - timedelta(minutes=1), minute)]
        summed = {k: sum(t.get(k, 0) for t in totals) for k in reports_counter.KINDS}
        return summed if sum(summed.values()) == 8 else None

    summed = await wait_for(flushed, timeout=15)  # the background flushers of both replicas, every second
    assert summed == {"status": 2, "installed": 2, "available": 2, "event": 2}
    ttl = await redis.ttl(counter_a.minute_key(minute))
    assert 24 * 3600 < ttl <= reports_counter.MINUTE_TTL
    assert await redis.ttl(counter_a.hour_key(minute)) > 25 * 3600

    # Either replica's dashboard shows the fleet-wide count (hour: per minute; day: per hour).
    await login(replica_b, api_key=await make_key("operator", "watch"))
    for span in ("hour", "day"):
        queries.clear_cache()
        text = await (await replica_b.get(f"/?span={span}")).text()
        bars = re.findall(r'<rect [^>]*class="s-reports"><title>[^<]*reports received: (\d+)</title>', text)
        assert sum(map(int, bars)) == 8, span
        assert "reports received (8)" in text


async def test_counts_survive_a_redis_failure_until_the_next_flush(settings, redis):
    counter = reports_counter.ReportsCounter("depot:test-rc")
    now = datetime.now(timezone.utc)
    for _ in range(3):
        counter.record("installed", now)

    # A real client of a Redis that is not there (nothing listens on the port).
    away = Redis(host="127.0.0.1", port=procs.free_port(), socket_connect_timeout=1)
    try:
        with pytest.raises(RedisConnectionError):
            await counter.flush(away)
    finally:
        await away.aclose()
    assert sum(counter.pending.values()) == 3  # kept
    counter.record("status", now)
    assert await counter.flush(redis) == 4 and not counter.pending
    minute = now.replace(second=0, microsecond=0)
    assert await _total(redis, counter, minute) == {"installed": 3, "status": 1}
    series = await counter.series(redis, "minute", [minute - timedelta(minutes=1), minute])
    assert list(series.values()) == [0, 4]
    assert await counter.series(redis, "hour", [minute.replace(minute=0)]) == {minute.replace(minute=0): 4}
