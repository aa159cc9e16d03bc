"""The requests API, its roles and its checks; hosts showing their agent's connection; the OpenAPI document."""
from __future__ import annotations

import time

from app import profiles
from tests.agents.agent import Agent
from tests.helpers import bearer, host_auth

DRY = {"dry-run": True, "ignore-exclusions": False, "keep-config-files": True, "full-upgrade": False}


async def connected(client, host) -> Agent:
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    assert await agent.hello() == {"info": "Authentication successful"}
    return agent


async def test_operator_sends_an_update_the_agent_gets_strings(server, host, make_key):
    client = await server()
    agent = await connected(client, host)
    key = await make_key("operator")
    started = time.monotonic()
    resp = await client.post(f"/api/v2/host/{host[2]}/requests", headers=bearer(key), json={
        "request": "request-packages-update", "packages": ["nginx", "openssl", "nginx"], "update-params": DRY})
    body = await resp.json()
    assert resp.status == 201, body
    row = body["results"]
    assert row["Request"] == "request-packages-update" and row["Host_id"] == host[2]
    assert row["Params"] == {"update-params": DRY, "packages": ["nginx", "openssl"]}
    assert row["Requested_by"] == "operator1" and row["Created"].endswith("Z")
    frame = await agent.next_request(timeout=2)
    assert time.monotonic() - started < 2
    assert frame == {"request-id": row["Id"], "request": "request-packages-update", "data": {
        "update-params": {"dry-run": "true", "ignore-exclusions": "false", "full-upgrade": "false",
                          "keep-config-files": "true"},
        "packages": [{"name": "nginx"}, {"name": "openssl"}]}}
    await agent.run_one(frame)
    await agent.ack()
    await agent.ack()
    resp = await client.get(f"/api/v2/host/requests/{row['Id']}", headers=bearer(await make_key("viewer")))
    one = (await resp.json())["results"]
    assert one["Status"] == "completed" and one["Summary"]["update"]["status"] == "done"
    assert one["Log"].startswith("(dry run)")


async def test_update_params_default_as_the_agents(server, host, make_key):
    client = await server()
    resp = await client.post(f"/api/v2/host/{host[2]}/requests", headers=bearer(await make_key("admin")),
                             json={"request": "request-all-packages-update"})
    assert (await resp.json())["results"]["Params"] == {"update-params": {
        "dry-run": False, "ignore-exclusions": False, "full-upgrade": False, "keep-config-files": True}}


async def test_roles_and_checks(server, host, make_key):
    client = await server()
    viewer, operator = bearer(await make_key("viewer")), bearer(await make_key("operator"))
    url = f"/api/v2/host/{host[2]}/requests"
    good = {"request": "request-general-infos"}
    assert (await client.post(url, headers=viewer, json=good)).status == 403
    assert (await client.post(url, headers=host_auth(host[0], host[1]), json=good)).status == 403
    assert (await client.post(url, json=good)).status == 401
    assert (await client.post("/api/v2/host/999/requests", headers=operator, json=good)).status == 404
    for bad in ({}, {"request": "request-foo"}, {"request": "request-packages-update"},
                {"request": "request-packages-update", "packages": []},
                {"request": "request-packages-update", "packages": ["bad name"]},
                {"request": "request-general-infos", "packages": ["nginx"]},
                {"request": "request-packages-infos", "update-params": {"dry-run": True}},
                {"request": "request-all-packages-update", "update-params": {"dry-run": "maybe"}},
                {"request": "request-all-packages-update", "update-params": {"reboot": True}},
                {"request": "request-general-infos", "extra": 1}, [], "x"):
        resp = await client.post(url, headers=operator, json=bad)
        assert resp.status == 400, (bad, await resp.text())
    assert (await client.get(url, headers=host_auth(host[0], host[1]))).status == 403
    assert (await client.get("/api/v2/host/999/requests", headers=viewer)).status == 404
    assert (await client.get("/api/v2/host/requests/999", headers=viewer)).status == 404
    assert (await client.delete("/api/v2/host/requests/999", headers=operator)).status == 404


async def test_listing_newest_first_paginated_without_logs(server, host, make_key):
    client = await server()
    key = bearer(await make_key("admin"))
    ids = []
    for name in ("request-general-infos", "request-packages-infos", "update-profile"):
        resp = await client.post(f"/api/v2/host/{host[2]}/requests", headers=key, json={"request": name})
        ids.append((await resp.json())["results"]["Id"])
    resp = await client.get(f"/api/v2/host/{host[2]}/requests?per_page=2", headers=key)
    body = await resp.json()
    assert [r["Id"] for r in body["results"]] == ids[::-1][:2]
    assert body["pagination"] == {"page": 1, "per_page": 2, "total": 3}
    assert "Log" not in body["results"][0] and body["results"][0]["Has_log"] is False
    assert all(r["Status"] == "new" for r in body["results"])
    body = await (await client.get(f"/api/v2/host/{host[2]}/requests?page=2&per_page=2", headers=key)).json()
    assert [r["Id"] for r in body["results"]] == [ids[0]]


async def test_cancel_before_sent_only(server, host, make_key):
    client = await server()
    key = bearer(await make_key("operator"))
    resp = await client.post(f"/api/v2/host/{host[2]}/requests", headers=key, json={"request": "request-general-infos"})
    rid = (await resp.json())["results"]["Id"]
    assert (await client.delete(f"/api/v2/host/requests/{rid}", headers=bearer(await make_key("viewer")))).status == 403
    resp = await client.delete(f"/api/v2/host/requests/{rid}", headers=key)
    assert resp.status == 200 and (await resp.json())["results"]["Status"] == "canceled"
    resp = await client.post(f"/api/v2/host/{host[2]}/requests", headers=key, json={"request": "request-general-infos"})
    rid = (await resp.json())["results"]["Id"]
    agent = await connected(client, host)
    await agent.next_request()
    resp = await client.delete(f"/api/v2/host/requests/{rid}", headers=key)
    assert resp.status == 409
    assert (await resp.json())["message_error"] == [
        f"Request #{rid} is sent: only a request not sent yet can be canceled"]


async def test_many_hosts_by_ids_or_fleet_filter(server, make_host, make_key, pool):
    client = await server()
    key = bearer(await make_key("operator"))
    await profiles.create_profile(pool, "web", {})
    hosts = [await make_host(f"h{i}") for i in range(4)]
    await pool.execute("UPDATE hosts SET profile = 'web', env = 'prod' WHERE id = ANY($1::bigint[])",
                       [hosts[0][2], hosts[1][2]])
    await pool.execute("UPDATE hosts SET available_count = 3 WHERE id = $1", hosts[1][2])
    agent = await connected(client, hosts[2])

    async def created(body, status=202):
        resp = await client.post("/api/v2/hosts/requests", headers=key, json=body)
        data = await resp.json()
        assert resp.status == status, data
        return data.get("results", {}).get("Created")

    assert await created({"request": "request-general-infos", "hosts": [hosts[0][2], hosts[3][2], 999]}) == 2
    assert await created({"request": "request-packages-infos", "filter": {"profile": "web"}}) == 2
    assert await created({"request": "request-packages-infos", "filter": {"profile": "web", "outdated": True}}) == 1
    assert await created({"request": "request-general-infos", "filter": {"connected": True}}) == 1
    assert (await agent.next_request(timeout=2))["request"] == "request-general-infos"
    assert await created({"request": "request-general-infos", "filter": {"env": "nowhere"}}) == 0
    await created({"request": "request-general-infos"}, 400)
    await created({"request": "request-general-infos", "hosts": [1], "filter": {}}, 400)
    await created({"request": "request-general-infos", "filter": {"colour": "red"}}, 400)
    await created({"request": "request-general-infos", "hosts": ["1"]}, 400)
    assert await pool.fetchval("SELECT count(*) FROM agent_requests") == 6
    assert await created({"request": "update-profile", "filter": {}}) == 4  # {}: every host
    resp = await client.post("/api/v2/hosts/requests", headers=bearer(await make_key("viewer")),
                             json={"request": "request-general-infos", "filter": {}})
    assert resp.status == 403


async def test_hosts_show_their_agent_connection_and_filter_on_it(server, make_host, make_key):
    client = await server()
    key = bearer(await make_key("viewer"))
    on = await make_host("on")
    await make_host("off")
    agent = await connected(client, on)
    rows = {r["Hostname"]: r for r in (await (await client.get("/api/v2/hosts/", headers=key)).json())["results"]}
    assert rows["on"]["Agent_connected"] is True and len(rows["on"]["Agent_connected_since"]) == 19
    assert rows["off"]["Agent_connected"] is False and rows["off"]["Agent_connected_since"] is None
    assert rows["on"]["Online_status"] == "unknown"  # the agent's own status keys are unchanged
    one = (await (await client.get(f"/api/v2/host/{on[2]}", headers=key)).json())["results"]
    assert one["Agent_connected"] is True
    for state, names in (("connected", ["on"]), ("disconnected", ["off"])):
        body = await (await client.get(f"/api/v2/hosts/agent/{state}", headers=key)).json()
        assert [r["Hostname"] for r in body["results"]] == names
    resp = await client.get("/api/v2/hosts/agent/sometimes", headers=key)
    assert resp.status == 400
    assert (await resp.json())["message_error"] == ["You must specify connected or disconnected"]
    assert (await client.get("/api/v2/hosts/agent", headers=key)).status == 400
    await agent.close()


async def test_profile_saved_over_the_api_reaches_its_connected_hosts(server, host, make_key, pool):
    client = await server()
    key = bearer(await make_key("operator"))
    await profiles.create_profile(pool, "web", {})
    await pool.execute("UPDATE hosts SET profile = 'web' WHERE id = $1", host[2])
    agent = await connected(client, host)
    resp = await client.put("/api/v2/profile/web", headers=key, json={"Package_exclude": "nginx"})
    assert resp.status == 200, await resp.text()
    assert (await agent.next_request(timeout=2))["request"] == "update-profile"


async def test_requests_are_in_the_openapi_document(server):
    client = await server()
    spec = await (await client.get("/api/v2/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/v2/host/{host_id}/requests"]) == {"get", "post"}
    assert set(paths["/api/v2/host/requests/{request_id}"]) == {"get", "delete"}
    assert "post" in paths["/api/v2/hosts/requests"] and "get" in paths["/api/v2/hosts/agent/{value}"]
    schemas = spec["components"]["schemas"]
    assert schemas["UpdateParams"]["properties"]["dry-run"]["type"] == "boolean"
    assert {"Agent_connected", "Agent_connected_since"} <= set(schemas["HostRow"]["properties"])
