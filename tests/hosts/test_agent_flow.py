"""The whole linupdate flow, with the captured request bodies, against a real worker."""
from __future__ import annotations

from tests.helpers import bearer, host_auth, inventory, package_count
from tests.hosts import captured
from tests.hosts.helpers import put


async def test_the_agent_flow_end_to_end(client, pool, make_key, run_worker):
    admin = await make_key("admin")
    resp = await client.post("/api/v2/host/registering", json=captured.REGISTER, headers=bearer("ak_wrong"))
    assert resp.status == 401
    assert (await resp.json())["message_error"] == ["Authentication error: invalid API key"]

    # The acceptance profile exists before the agent reports it.
    resp = await client.post("/api/v2/profile/", json=captured.PROFILE, headers=bearer(admin))
    assert resp.status == 201, await resp.text()

    resp = await client.post("/api/v2/host/registering", json=captured.REGISTER, headers=bearer(admin))
    assert resp.status == 201
    body = await resp.json()
    assert body["message"] == ["Host successfully registered."]
    auth_id, token = body["results"]["id"], body["results"]["token"]
    assert isinstance(auth_id, str) and isinstance(token, str)
    creds = (auth_id, token)
    host_id = body["host_id"]

    status = await put(client, creds, "status", captured.STATUS)
    assert status["message"][0] == "Hostname updated successfully."
    assert "Agent version updated successfully." in status["message"] and len(status["message"]) == 16
    row = await pool.fetchrow("SELECT * FROM hosts WHERE id = $1", host_id)
    assert row["os"] == "Debian GNU/Linux" and row["type"] == "kvm docker " and row["agent_version"] == "3.17.1"
    assert row["reboot_required"] is False and row["boot_time"] == 1795683892.0
    assert row["network"]["eth0"]["ipv6"] == "fe80::fc:ff:fe00:1%eth0" and row["agent_status"] == "stopped"

    events = await put(client, creds, "packages/event", captured.EVENTS)
    assert events["added"] == 2
    available = await put(client, creds, "packages/available", captured.AVAILABLE)
    assert available["message"] == ["Available packages updated successfully."]
    inst = await put(client, creds, "packages/installed", captured.INSTALLED)
    assert inst["message"] == ["Installed packages updated successfully."] and inst["changed"]
    assert available["task-id"] == inst["task-id"]  # coalesced per host

    await run_worker()
    rows = await inventory(pool, host_id)
    assert len(rows) == 9
    assert ("libc6", "i386", "2.36-9+deb12u10", "inventored") in [tuple(r)[:4] for r in rows]
    assert await pool.fetchval("SELECT available_count FROM hosts WHERE id = $1", host_id) == 3
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0

    # The profile and repos as the agent reads them (trailing slash, ?new-format).
    resp = await client.get("/api/v2/profile/acceptance/", headers=host_auth(*creds))
    assert resp.status == 200
    item = (await resp.json())["results"][0]
    assert item["Package_exclude"] == "linux-image.*,kernel.*" and item["Service_restart"] == "cron"
    assert item["Service_reload"] == "" and item["Package_exclude_major"] == "nginx"
    resp = await client.get("/api/v2/profile/acceptance/repos?new-format", headers=host_auth(*creds))
    assert (await resp.json())["results"] == {
        "repos": [],
        "reposerver": {"hostname": "depot.test", "gpgkey_url": "http://depot.test:8080/repo/gpgkeys/depot.test.pub"},
    }

    # What an operator sees.
    viewer = await make_key("viewer")
    resp = await client.get(f"/api/v2/host/{host_id}/available", headers=bearer(viewer))
    results = (await resp.json())["results"]
    assert {r["Name"]: (r["Current_version"], r["Version"], r["Security"]) for r in results}["ca-certificates"] == (
        "20230311", "20250419~deb12u2", True
    )
    resp = await client.get("/api/v2/hosts/", headers=bearer(viewer))
    hosts = (await resp.json())["results"]
    assert len(hosts) == 1 and hosts[0]["Hostname"] == "localhost" and hosts[0]["Linupdate_version"] == "3.17.1"
    assert token not in await resp.text() and "token" not in str(hosts[0].keys()).lower()

    # Unregister, then the old credentials are refused.
    resp = await client.delete("/api/v2/host/registering", headers=host_auth(*creds))
    assert resp.status == 200 and (await resp.json())["message"] == ["Host has been deleted."]
    resp = await client.put("/api/v2/host/status", data=captured.agent_body(captured.STATUS), headers=host_auth(*creds))
    assert resp.status == 401
    assert (await resp.json())["message_error"] == ["Authentication error: invalid host Id and token"]
    assert await package_count(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM package_hosts WHERE bit_count(hosts) > 0") == 0
