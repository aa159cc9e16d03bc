"""The agent channel through a PostgreSQL restart: the agent's socket stays open, and requests made after
the restart still reach it (each server process reopens its LISTEN connection and looks at its hosts)."""
from __future__ import annotations

import asyncio

import aiohttp

from app.hosts import registry
from tests.agents.agent import Agent
from tests.helpers import bearer


async def test_requests_reach_a_connected_agent_after_a_postgres_restart(processes, fpool, private_pg,
                                                                        fault_admin_key):
    host = await registry.register(fpool, "web1", "192.0.2.1", may_reregister=False)
    await fpool.close()
    _, base = processes.server()
    key = bearer(fault_admin_key)
    async with aiohttp.ClientSession() as http:
        agent = await Agent.connect(http, f"{base}/ws", host.auth_id, host.token)
        assert await agent.hello() == {"info": "Authentication successful"}

        await asyncio.to_thread(private_pg.stop, "fast")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(private_pg.start)

        rid = None
        for _ in range(100):  # until the server's pool is back
            resp = await http.post(f"{base}/api/v2/host/{host.host_id}/requests", headers=key,
                                   json={"request": "request-general-infos"})
            if resp.status == 201:
                rid = (await resp.json())["results"]["Id"]
                break
            await asyncio.sleep(0.2)
        assert rid is not None, "the API did not come back"
        # Sent at once if the LISTEN connection is back already, else at the process's next look (heartbeat).
        frame = await agent.next_request(timeout=15)
        assert frame == {"request-id": rid, "request": "request-general-infos"}
        await agent.run_one(frame)
        assert (await agent.ack())["data"] == ["status", "log"]
        row = (await (await http.get(f"{base}/api/v2/host/requests/{rid}", headers=key)).json())["results"]
        assert row["Status"] == "completed"
        await agent.close()
