"""PUT /host/packages/event: the whole history re-sent each time, each event stored once."""
from __future__ import annotations

import copy

import pytest

from tests.helpers import bearer
from tests.hosts import captured
from tests.hosts.helpers import put, register


@pytest.fixture
async def host(client, make_key):
    return await register(client, await make_key("operator"), "web01")


async def test_events_are_stored_once(client, pool, host, make_key):
    assert (await put(client, host, "packages/event", captured.EVENTS))["added"] == 2
    assert (await put(client, host, "packages/event", captured.EVENTS))["added"] == 0
    grown = copy.deepcopy(captured.EVENTS)
    grown["events"].append({"date_start": "2025-07-01", "time_start": "09:00:00", "date_end": "2025-07-01",
                            "time_end": "09:00:05", "command": "apt-get -y remove nano",
                            "removed": [{"name": "nano", "version": "7.2-1"}]})
    # Same start second, other command: a different event (Repomanager would lose it).
    grown["events"].append(dict(grown["events"][-1], command="apt-get -y install vim"))
    assert (await put(client, host, "packages/event", grown))["added"] == 2
    assert await pool.fetchval("SELECT count(*) FROM host_events") == 4
    resp = await client.get(f"/api/v2/host/{host[2]}/history", headers=bearer(await make_key("viewer")))
    results = (await resp.json())["results"]
    assert results[0]["Type"] == "event" and results[0]["Date"] == "2025-07-01"
    assert results[-1]["Packages"]["upgraded"][0] == {"name": "libsystemd0", "version": "252.38-1~deb12u1"}


async def test_empty_history_is_accepted(client, pool, host):
    body = await put(client, host, "packages/event", {"events": []})
    assert body["message"] == ["Package events history updated successfully."] and body["added"] == 0


@pytest.mark.parametrize(
    "event",
    [
        {"date_start": "2025-13-01", "time_start": "10:00:00", "command": "x"},
        {"date_start": "2025-01-01", "time_start": "25:00:00", "command": "x"},
        {"date_start": "yesterday", "time_start": "10:00:00", "command": "x"},
        {"time_start": "10:00:00", "command": "x"},
        {"date_start": "2025-01-01", "time_start": "10:00:00"},
        {"date_start": "2025-01-01", "time_start": "10:00:00", "command": 5},
        {"date_start": "2025-01-01", "time_start": "10:00:00", "command": "x", "installed": "vim"},
        {"date_start": "2025-01-01", "time_start": "10:00:00", "command": "x", "installed": [{"version": "1"}]},
        "an event",
    ],
)
async def test_a_bad_event_stores_nothing(client, pool, host, event):
    good = captured.EVENTS["events"][0]
    body = await put(client, host, "packages/event", {"events": [good, event]}, status=400)
    assert body["message_error"][0].startswith("Package events history update has failed: Event #1")
    assert await pool.fetchval("SELECT count(*) FROM host_events") == 0


@pytest.mark.parametrize("body", [{}, {"events": "none"}, {"events": {"a": 1}}, {"events": None}])
async def test_bad_event_bodies(client, pool, host, body):
    await put(client, host, "packages/event", body, status=400)
    assert await pool.fetchval("SELECT count(*) FROM host_events") == 0
