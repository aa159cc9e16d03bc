"""PUT /host/status: every agent field, validated, one transaction, unknown fields ignored."""
from __future__ import annotations

import pytest

from tests.helpers import bearer
from tests.hosts import captured
from tests.hosts.helpers import put, register


@pytest.fixture
async def host(client, pool, make_key):
    await pool.execute("INSERT INTO profiles (name) VALUES ('acceptance'), ('web')")
    return await register(client, await make_key("operator"), "localhost")


async def test_every_field_is_stored_raw(client, pool, host):
    status = dict(captured.STATUS, cpu="<b>Xeon</b> & co", os_version="0", extra_field={"x": 1})
    body = await put(client, host, "status", status)
    assert body["message"] == [
        "Hostname updated successfully.", "OS updated successfully.", "OS version updated successfully.",
        "OS family updated successfully.", "Virtualization type updated successfully.", "CPU updated successfully.",
        "RAM updated successfully.", "Network updated successfully.", "Kernel updated successfully.",
        "Arch updated successfully.", "Profile updated successfully.", "Environment updated successfully.",
        "Agent status updated successfully.", "Agent version updated successfully.",
        "Reboot status updated successfully.", "Uptime updated successfully.",
    ]
    row = await pool.fetchrow("SELECT * FROM hosts WHERE id = $1", host[2])
    assert row["cpu"] == "<b>Xeon</b> & co" and row["os_version"] == "0" and row["kernel"] == "6.18.44-fc-v657"
    assert row["profile"] == "acceptance" and row["env"] == "prod" and row["last_seen_at"] is not None


async def test_old_agents_send_linupdate_version_and_json_booleans(client, pool, host):
    body = await put(client, host, "status", {"linupdate_version": "2.2.11", "reboot_required": True, "uptime": "1718200000.5"})
    assert body["message"] == [
        "Linupdate version updated successfully.", "Reboot status updated successfully.", "Uptime updated successfully."
    ]
    row = await pool.fetchrow("SELECT agent_version, reboot_required, boot_time FROM hosts")
    assert tuple(row) == ("2.2.11", True, 1718200000.5)


async def test_only_unknown_fields_is_an_empty_message_list(client, host):
    # (Repomanager refuses `{}` as "Invalid JSON data"; every field is optional, so Depot accepts it.)
    assert (await put(client, host, "status", {"whatever": 1}))["message"] == []
    assert (await put(client, host, "status", {}))["message"] == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("agent_status", "sleeping"),
        ("reboot_required", "yes"),
        ("reboot_required", 1),
        ("uptime", "soon"),
        ("uptime", True),
        ("network", "eth0"),
        ("network", {"eth0": "10.0.0.1"}),
        ("network", {"eth0": {"ipv4": 5}}),
        ("os", ["Debian"]),
        ("kernel", 6),
        ("hostname", "two words"),
        ("os", "x" * 300),
    ],
)
async def test_a_bad_field_changes_nothing(client, pool, host, field, value):
    before = dict(await pool.fetchrow("SELECT * FROM hosts"))
    body = await put(client, host, "status", {"os": "Ubuntu", "kernel": "6.1", field: value}, status=400)
    assert body["message_error"][0].startswith(field)
    assert dict(await pool.fetchrow("SELECT * FROM hosts")) == before


async def test_unknown_profile_is_refused_and_nothing_changes(client, pool, host):
    body = await put(client, host, "status", {"os": "Ubuntu", "profile": "nope"}, status=400)
    assert body["message_error"] == ["Profile update has failed: profile nope does not exist"]
    assert await pool.fetchval("SELECT os FROM hosts") is None


async def test_hostname_taken_by_another_host_is_a_conflict(client, pool, make_key, host):
    await register(client, await make_key("operator"), "web02")
    body = await put(client, host, "status", {"hostname": "web02", "os": "Ubuntu"}, status=409)
    assert "already registered" in body["message_error"][0]
    assert await pool.fetchval("SELECT os FROM hosts WHERE id = $1", host[2]) is None


@pytest.mark.parametrize("raw", [b"[]", b"null", b"12", b'{"os": ', b"", b'{"os": "a\\u0000"}'])
async def test_bad_json_is_400(client, host, raw):
    resp = await client.put("/api/v2/host/status", data=raw, headers={"Authorization": f"Host {host[0]}:{host[1]}"})
    assert resp.status == 400 and "message_error" in await resp.json()


async def test_a_user_key_cannot_send_status(client, make_key, host):
    resp = await client.put("/api/v2/host/status", json={"os": "x"}, headers=bearer(await make_key("admin")))
    assert resp.status == 403


async def test_concurrent_statuses_share_a_statement_and_keep_their_own_outcome(client, pool, make_key, host):
    """Statuses of several hosts go in one statement (the process's group commit); a hostname taken or a
    profile unknown fails its own request only, and the group's other statuses are stored."""
    import asyncio

    from app.domain_errors import Conflict, Invalid
    from app.hosts import registry
    from app.hosts.intake import GroupCommit

    hosts = [host] + [await register(client, await make_key("operator"), f"web{i:02d}") for i in range(4)]
    groups = []

    async def write(p, updates):  # the real statement, its groups recorded
        groups.append(sorted(u.host_id for u in updates))
        return await registry.write_statuses(p, updates)

    await pool.execute("UPDATE hosts SET kernel = 'k0', agent_status = 'stopped'")
    statuses = GroupCommit(pool, write, max_group=3, max_inflight=1)
    values = [{"os": "Debian", "profile": "web"}, {"os": "Rocky", "hostname": "web02"}, {"os": "Ubuntu"},
              {"os": "Alma", "profile": "nope"}, {"kernel": "6.1", "agent_status": "running", "reboot_required": True}]
    outcomes = await asyncio.gather(*(registry.update_status(statuses, h[2], v) for h, v in zip(hosts, values)),
                                    return_exceptions=True)
    assert outcomes[0] == ["OS updated successfully.", "Profile updated successfully."]
    assert isinstance(outcomes[1], Conflict) and isinstance(outcomes[3], Invalid)
    assert outcomes[2] == ["OS updated successfully."] and len(outcomes[4]) == 3
    ids = [h[2] for h in hosts]
    # Groups of at most 3; the one with the hostname taken failed and was retried one by one.
    assert groups == [ids[:3], *([i] for i in ids[:3]), ids[3:]]
    rows = {r["id"]: r for r in await pool.fetch(
        "SELECT id, hostname, os, profile, kernel, agent_status, reboot_required FROM hosts WHERE id = ANY($1)", ids)}
    assert (rows[ids[0]]["os"], rows[ids[0]]["profile"]) == ("Debian", "web")
    assert (rows[ids[1]]["os"], rows[ids[1]]["hostname"]) == (None, "web00")  # nothing of the refused one
    assert rows[ids[2]]["os"] == "Ubuntu" and rows[ids[3]]["os"] is None
    assert {tuple(rows[i])[4:6] for i in ids[:4]} == {("k0", "stopped")}  # what a status does not name stays
    assert tuple(rows[ids[4]])[4:] == ("6.1", "running", True) and rows[ids[4]]["os"] is None
