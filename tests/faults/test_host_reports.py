"""Host reports under faults: PostgreSQL restarted mid-burst, one host on two connections, 200 registrations.

Agents retry a report until it is acknowledged (2xx), as linupdate does on its next run. What is
checked: during an outage answers are JSON 503 + Retry-After (never a 500, never a hang), and once
everything settles every host's inventory is exactly its last acknowledged report.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.faults import reporting
from tests.helpers import bearer, host_auth
from tests.faults.test_shutdown import procs_wait

MAX_LATENCY = 6.0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_during_a_burst_of_reports_loses_no_acknowledged_report(
    processes, fpool, private_pg, fault_admin_key, mode
):
    server, base = processes.server()
    processes.worker()
    answers: list = []
    async with aiohttp.ClientSession() as session:
        hosts = [await reporting.register(session, base, fault_admin_key, f"web{n:03d}") for n in range(reporting.HOSTS)]
        agents = [reporting.Agent(session, base, headers, answers) for _, headers in hosts]

        async def run(agent, pause=0.05):
            for step in range(reporting.REPORTS):
                await agent.send(step, reporting.report(step))
                await asyncio.sleep(pause)

        # Group A sends all its reports and finishes; the crash comes the moment its last one is
        # acknowledged, so those acknowledgements are the freshest writes PostgreSQL holds.
        group_a, group_b = agents[: reporting.HOSTS // 2], agents[reporting.HOSTS // 2 :]
        burst_b = [asyncio.create_task(run(a, pause=0.4)) for a in group_b]  # still reporting through the outage
        await asyncio.gather(*(run(a, pause=0.0) for a in group_a))
        down_at = time.monotonic()
        await asyncio.to_thread(private_pg.stop, mode)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(private_pg.start)
        up_at = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*burst_b), 90)
    finished_at = time.monotonic()

    bad = [a for a in answers if a[2] not in (200, 503)]
    assert not bad, bad[:5]
    outage = [a for a in answers if a[2] == 503]
    assert outage, "the outage produced no 503 at all"
    assert all(a[3] and a[4] == "application/json" for a in outage)
    slowest = max(a[1] for a in answers)
    assert slowest < MAX_LATENCY
    assert all(a.acked == list(range(reporting.REPORTS)) for a in agents)
    await procs_wait(lambda: reporting.settled(fpool), timeout=60)
    for (host_id, _), agent in zip(hosts, agents):
        assert await reporting.inventory(fpool, host_id) == reporting.expected(reporting.report(reporting.REPORTS - 1)), f"host {host_id}"
    errors = await fpool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'error'")
    print(f"\nPG {mode} restart during reports: {len(answers)} answers, {len(answers) - len(outage)} x 200, "
          f"{len(outage)} x 503, slowest {slowest:.2f}s, outage {up_at - down_at:.1f}s, burst done "
          f"{finished_at - up_at:.1f}s after restart; {reporting.HOSTS * reporting.REPORTS} acked reports all applied; "
          f"{errors} diff task(s) ended in error and were carried on")


async def test_one_host_on_two_connections_and_200_registrations_at_once(processes, fpool, fault_admin_key):
    server, base = processes.server()
    processes.worker()
    # 200 registrations at once, some names sent twice: no duplicate host, every answer JSON.
    names = [f"node{n:03d}" for n in range(200)]
    conn = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def reg(name):
            async with session.post(base + "/api/v2/host/registering", json={"hostname": name, "ip": "192.0.2.9"},
                                    headers=bearer(fault_admin_key)) as resp:
                return name, resp.status, await resp.json()

        t0 = time.monotonic()
        results = await asyncio.gather(*(reg(n) for n in names + names[:20]))
        reg_seconds = time.monotonic() - t0
    statuses = [s for _, s, _ in results]
    assert all(s in (201, 409) for s in statuses), sorted(set(statuses))
    assert await fpool.fetchval("SELECT count(*) FROM hosts") == 200
    assert await fpool.fetchval("SELECT count(DISTINCT hostname) FROM hosts") == 200
    created = [(n, b) for n, s, b in results if s == 201]
    # Admins may re-register: a name registered twice keeps one row, and only the last credentials work.
    assert len({b["host_id"] for _, b in created}) == 200

    # One host, two connections, reports interleaved: the final inventory is the last acknowledged one.
    name, body = next((n, b) for n, b in created if n == "node199")  # registered once: its credentials hold
    headers = host_auth(body["results"]["id"], body["results"]["token"])
    if (await fpool.fetchval("SELECT count(*) FROM hosts WHERE hostname = $1", name)) != 1:
        pytest.fail("duplicate host")
    acked: list[tuple[float, int]] = []
    async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
        async def send(session, step):
            async with session.put(base + "/api/v2/host/packages/installed", json=reporting.report(step, salt=f".{step}"),
                                   headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                acked.append((time.monotonic(), step))

        for step in range(0, 30, 2):
            await asyncio.gather(send(s1, step), send(s2, step + 1))
        await send(s1, 99)  # a last report, alone: it must win
    await procs_wait(lambda: reporting.settled(fpool), timeout=60)
    host_id = body["host_id"]
    assert await reporting.inventory(fpool, host_id) == reporting.expected(reporting.report(99, salt=".99"))
    # Applied in acceptance order: the history's last change set moves to step 99.
    last = await fpool.fetchval(
        "SELECT new_version FROM host_history WHERE host_id = $1 AND name = 'step' ORDER BY at DESC, id DESC LIMIT 1",
        host_id)
    assert last == "99"
    print(f"\n220 registrations (200 names) in {reg_seconds:.2f}s: {statuses.count(201)} x 201, "
          f"{statuses.count(409)} x 409, 200 hosts; 31 interleaved reports of one host applied in order")
