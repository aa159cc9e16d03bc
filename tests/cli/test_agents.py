"""`depot request` and `depot requests` against a live server with a synthetic agent connected."""
from __future__ import annotations

import asyncio
import json

from app import profiles
from app.hosts import registry
from tests.agents.agent import Agent


async def _agent(client, hostname: str, pool):
    r = await registry.register(pool, hostname, "192.0.2.7", may_reregister=False)
    agent = await Agent.connect(client, auth_id=r.auth_id, token=r.token)
    assert await agent.hello() == {"info": "Authentication successful"}
    return agent, r.host_id


async def test_request_watch_list_show_cancel(depot, client, pool, make_key):
    key = await make_key("operator")
    agent, host_id = await _agent(client, "web01", pool)
    serving = asyncio.create_task(agent.serve(hold=0.3))
    try:
        code, out, err = await depot("request", str(host_id), "update", "--packages", "nginx,curl", "--dry-run",
                                     "--watch", "--interval", "0.1", "--key", key)
        assert code == 0, err
        lines = out.splitlines()
        # The agent is connected, so the first poll may already find the request sent.
        assert lines[0] in ("request 1 request-packages-update: new",
                            "request 1 request-packages-update: sent (Request sent to the host)"), lines
        assert any(line.endswith(": running") for line in lines) and "request 1 request-packages-update: completed" in lines
        assert "update done (dry run): 1 succeeded, 0 failed" in lines and "--- log ---" in lines
        assert agent.requests[0]["data"]["update-params"]["dry-run"] == "true"
        assert agent.requests[0]["data"]["packages"] == [{"name": "nginx"}, {"name": "curl"}]

        code, out, err = await depot("request", str(host_id), "general-infos", "--key", key)
        assert code == 0 and out.startswith("request 2 (request-general-infos) to host "), err
    finally:
        serving.cancel()

    code, out, err = await depot("request", str(host_id), "packages-infos", "--key", key)
    assert code == 0, err
    code, out, err = await depot("requests", str(host_id), "--key", key)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "REQUEST", "STATUS"] and lines[-1] == "page 1, 3 of 3 request(s)"
    assert lines[1].split()[:2] == ["3", "request-packages-infos"]

    code, out, err = await depot("request", "show", "1", "--key", key)
    assert code == 0 and "Status        completed" in out and "(dry run) 1 packages would be updated" in out, err
    code, out, _ = await depot("request", "show", "1", "--json", "--key", key)
    assert json.loads(out)["results"]["Summary"]["update"]["status"] == "done"

    await agent.close()
    code, out, err = await depot("request", str(host_id), "profile", "--key", key)
    assert code == 0 and out.endswith(": new\n"), out + err
    code, out, err = await depot("request", "cancel", "4", "--key", key)
    assert code == 0 and out == "request 4: canceled\n", err
    code, out, err = await depot("request", "cancel", "1", "--key", key)
    assert code == 1 and "409: Request #1 is completed" in err


async def test_request_to_a_profile_and_refusals(depot, client, pool, make_key):
    key = await make_key("operator")
    await profiles.create_profile(pool, "web", {})
    agent, host_id = await _agent(client, "web01", pool)
    await pool.execute("UPDATE hosts SET profile = 'web'")
    code, out, err = await depot("request", "--profile", "web", "update", "--dry-run", "--key", key)
    assert code == 0 and out == "1 request(s) created\n", err
    frame = await agent.next_request()
    assert frame["request"] == "request-all-packages-update" and frame["data"]["update-params"]["dry-run"] == "true"

    for argv, message in ((["web01", "general-infos"], "not a host id"),
                          ([str(host_id), "reboot"], "unknown request 'reboot'"),
                          ([str(host_id), "profile", "--dry-run"], "takes no packages and no update options"),
                          (["--profile", "web", "1", "update"], "give the request only"),
                          (["--profile", "web", "update", "--watch"], "--watch follows one request")):
        code, _, err = await depot("request", *argv, "--key", key)
        assert code == 1 and message in err, (argv, err)
    code, _, err = await depot("request", "--profile", "web", "update", "--key", await make_key("viewer"))
    assert code == 1 and "403" in err


async def test_hosts_show_the_agent_column_and_filter(depot, client, pool, make_key):
    key = await make_key("viewer")
    agent, host_id = await _agent(client, "web01", pool)
    await registry.register(pool, "db01", "192.0.2.8", may_reregister=False)
    code, out, err = await depot("hosts", "--key", key)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[-1] == "AGENT"
    agents = {line.split()[1]: line.split()[-1] for line in lines[1:-1]}
    assert agents == {"web01": "connected", "db01": "-"}
    code, out, err = await depot("hosts", "--connected", "--key", key)
    assert code == 0 and out.splitlines()[-1] == "1 host(s)" and "web01" in out, err
    code, out, err = await depot("hosts", "--disconnected", "--key", key)
    assert code == 0 and "db01" in out and "web01" not in out, err
    await agent.close()
