"""The host page's agent requests: buttons (operators), the live list, a request's page with its summary and log."""
from __future__ import annotations

import html

from tests.agents.agent import Agent
from tests.test_dashboard import csrf_of, login


async def test_operator_sends_requests_from_the_host_page(server, host, make_key, pool):
    client = await server()
    assert (await login(client, api_key=await make_key("operator", "alice"))).status == 303
    page = await (await client.get(f"/hosts/{host[2]}")).text()
    assert 'id="request-form"' in page and "agent not connected" in page
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    assert await agent.hello() == {"info": "Authentication successful"}
    token = await csrf_of(client, f"/hosts/{host[2]}")
    resp = await client.post(f"/hosts/{host[2]}/requests", allow_redirects=False, data={
        "csrf": token, "request": "update", "packages": "nginx, openssl", "dry-run": "on", "keep-config-files": "on"})
    assert resp.status == 303 and resp.headers["Location"] == f"/hosts/{host[2]}#requests"
    frame = await agent.next_request()
    assert frame["request"] == "request-packages-update"
    assert frame["data"]["packages"] == [{"name": "nginx"}, {"name": "openssl"}]
    assert frame["data"]["update-params"] == {"dry-run": "true", "ignore-exclusions": "false",
                                              "full-upgrade": "false", "keep-config-files": "true"}
    await agent.run_one(frame)
    await agent.ack()
    await agent.ack()
    fragment = (await (await client.get(f"/ui/hosts/{host[2]}/requests")).json())["html"]
    assert "agent connected" in fragment and "request-packages-update" in fragment and "completed" in fragment
    detail = await (await client.get(f"/hosts/{host[2]}/requests/{frame['request-id']}")).text()
    assert "Update: done (dry run)" in detail and "1 succeeded, 0 failed" in detail
    assert html.escape("(dry run) 1 packages would be updated") in detail and "nginx" in detail
    assert 'data-live="' not in detail  # over: no polling

    # A request waiting for the agent can be canceled from the list.
    await agent.close()
    resp = await client.post(f"/hosts/{host[2]}/requests", allow_redirects=False,
                             data={"csrf": token, "request": "general-infos"})
    rid = await pool.fetchval("SELECT max(id) FROM agent_requests")
    fragment = (await (await client.get(f"/ui/hosts/{host[2]}/requests")).json())["html"]
    assert f'/hosts/{host[2]}/requests/{rid}/cancel' in fragment
    resp = await client.post(f"/hosts/{host[2]}/requests/{rid}/cancel", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303
    assert await pool.fetchval("SELECT status FROM agent_requests WHERE id = $1", rid) == "canceled"
    resp = await client.post(f"/hosts/{host[2]}/requests", data={"csrf": token, "request": "reboot"})
    assert resp.status == 400


async def test_viewers_see_requests_but_send_none(server, host, make_key, pool):
    client = await server()
    assert (await login(client, api_key=await make_key("viewer", "bob"))).status == 303
    page = await (await client.get(f"/hosts/{host[2]}")).text()
    assert 'id="request-form"' not in page and 'id="requests-table"' in page
    token = await csrf_of(client, f"/hosts/{host[2]}")
    resp = await client.post(f"/hosts/{host[2]}/requests", data={"csrf": token, "request": "general-infos"})
    assert resp.status == 403
    resp = await client.post(f"/hosts/{host[2]}/requests", data={"request": "general-infos"})
    assert resp.status == 403  # no CSRF token
    assert await pool.fetchval("SELECT count(*) FROM agent_requests") == 0
    assert (await client.get(f"/hosts/{host[2]}/requests/12345")).status == 404
