"""Two real `depot serve` processes on the test database: a request made on one reaches an agent connected
to the other at once; a newer socket on one process replaces the older on the other; unregistering a
host through one closes its socket on the other."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.agents.agent import Agent
from tests.helpers import bearer, wait_for
from tests.faults import procs

pytestmark = pytest.mark.slow  # starts two `depot serve` processes


async def test_requests_and_sockets_across_two_server_processes(settings, pool, make_key, make_host, tmp_path):
    key = bearer(await make_key("operator"))
    host = await make_host("web1")
    env = procs.depot_env(database_url=settings.database_url, redis_url=settings.redis_url,
                          var_dir=settings.var_dir, storage_dir=settings.storage_dir, queue_name=settings.queue_name)
    servers = []
    try:
        for _ in range(2):
            servers.append(procs.start_server(env, tmp_path))
        (_, a), (_, b) = servers
        async with aiohttp.ClientSession() as http:
            agent = await Agent.connect(http, f"{a}/ws", host[0], host[1])
            assert await agent.hello() == {"info": "Authentication successful"}
            served_by_a = await pool.fetchval("SELECT server_id FROM agent_sessions WHERE host_id = $1", host[2])

            # Made on B, sent by A (which holds the socket) at once.
            started = time.monotonic()
            resp = await http.post(f"{b}/api/v2/host/{host[2]}/requests", headers=key,
                                   json={"request": "request-general-infos"})
            assert resp.status == 201, await resp.text()
            rid = (await resp.json())["results"]["Id"]
            frame = await agent.next_request(timeout=5)
            assert frame == {"request-id": rid, "request": "request-general-infos"}
            assert time.monotonic() - started < 1.0
            await agent.run_one(frame)
            await agent.ack()
            row = (await (await http.get(f"{b}/api/v2/host/requests/{rid}", headers=key)).json())["results"]
            assert row["Status"] == "completed"
            hosts = (await (await http.get(f"{b}/api/v2/hosts/", headers=key)).json())["results"]
            assert hosts[0]["Agent_connected"] is True

            # The same host on B: A closes its socket; requests made on A now go through B.
            newer = await Agent.connect(http, f"{b}/ws", host[0], host[1])
            assert await newer.hello() == {"info": "Authentication successful"}
            assert await agent.receive(timeout=5) is None

            async def moved():
                sid = await pool.fetchval("SELECT server_id FROM agent_sessions WHERE host_id = $1", host[2])
                return sid is not None and sid != served_by_a

            await wait_for(moved)
            resp = await http.post(f"{a}/api/v2/host/{host[2]}/requests", headers=key,
                                   json={"request": "request-all-packages-update", "update-params": {"dry-run": True}})
            frame = await newer.next_request(timeout=5)
            assert frame["data"]["update-params"]["dry-run"] == "true"

            # Unregistered through A: B tells the agent and closes.
            resp = await http.delete(f"{a}/api/v2/host/registering", headers=key, json={"hostname": "web1"})
            assert resp.status == 200, await resp.text()
            assert await newer.receive(timeout=5) == {"info": "You will now be disconnected from the server"}
            assert await newer.receive(timeout=5) is None
    finally:
        for proc, _ in servers:
            await asyncio.to_thread(proc.close, 10)
    # A server that stops forgets its sockets and itself.
    assert await pool.fetchval("SELECT count(*) FROM agent_servers") == 0
