"""Requests to hosts over the channel, with a synthetic agent answering canned responses: B1-B4, B6-B8,
C1-C3, C5, C6, C8 of the acceptance list, and the state machine's guards."""
from __future__ import annotations

import asyncio
import time

import pytest

from app import profiles
from app.agents import requests
from app.agents.hub import HUB
from app.domain_errors import NotFound
from app.repos import model
from tests.agents.agent import UPDATE_SUMMARY, Agent
from tests.helpers import wait_for
from workers.settings import worker_settings

DRY_RUN = {"dry-run": True, "ignore-exclusions": False, "keep-config-files": True, "full-upgrade": False}


async def connected(client, host) -> Agent:
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    assert await agent.hello() == {"info": "Authentication successful"}
    return agent


async def make(pool, host, name, params=None) -> int:
    (rid,) = await requests.create(pool, [host[2]], name, params or {}, "tester")
    return rid


async def status_of(pool, rid):
    return await pool.fetchrow("SELECT * FROM agent_requests WHERE id = $1", rid)


async def until_status(pool, rid, status):
    async def check():
        row = await status_of(pool, rid)
        return row if row["status"] == status else None

    return await wait_for(check)


async def test_general_infos_sent_at_once_completed_and_logged(server, host, pool):
    """B1: sent within 2 s as the bare envelope; final `completed` with summary "" acked [status, log]."""
    client = await server()
    agent = await connected(client, host)
    started = time.monotonic()
    rid = await make(pool, host, "request-general-infos")
    frame = await agent.next_request(timeout=2)
    assert time.monotonic() - started < 2
    assert frame == {"request-id": rid, "request": "request-general-infos"}
    row = await status_of(pool, rid)
    assert row["status"] == "sent" and row["info"] == "Request sent to the host"
    await agent.respond(rid, "completed", summary="", log="Sending general info\n")
    assert await agent.ack() == {"info": "Request response received", "request-id": str(rid), "data": ["status", "log"]}
    row = await status_of(pool, rid)
    assert (row["status"], row["log"], row["summary"], row["info"]) == ("completed", "Sending general info\n", None, None)
    assert row["finished_at"] is not None


async def test_packages_infos_running_then_completed(server, host, pool):
    """B2: `running` acked [status]; then completed."""
    client = await server()
    agent = await connected(client, host)
    rid = await make(pool, host, "request-packages-infos")
    assert (await agent.next_request())["request"] == "request-packages-infos"
    await agent.respond(rid, "running")
    assert (await agent.ack())["data"] == ["status"]
    assert (await status_of(pool, rid))["status"] == "running"
    await agent.respond(rid, "completed", log="Sending packages\n")
    await agent.ack()
    assert (await status_of(pool, rid))["status"] == "completed"


async def test_update_requests_carry_string_params_and_store_the_summary(server, host, pool):
    """B3, B4: update parameters as strings on the wire, package names only; the summary is kept."""
    client = await server()
    agent = await connected(client, host)
    rid = await make(pool, host, "request-all-packages-update", {"update-params": DRY_RUN})
    frame = await agent.next_request()
    assert frame["data"] == {"update-params": {"dry-run": "true", "ignore-exclusions": "false",
                                               "full-upgrade": "false", "keep-config-files": "true"}}
    await agent.run_one(frame)
    assert (await agent.ack())["data"] == ["status"]
    assert (await agent.ack())["data"] == ["status", "summary", "log"]
    row = await status_of(pool, rid)
    assert row["status"] == "completed" and row["summary"] == UPDATE_SUMMARY
    assert row["summary"]["update"]["options"]["dry_run"] is True

    rid = await make(pool, host, "request-packages-update",
                     {"packages": ["nginx", "not-installed-xyz"], "update-params": DRY_RUN})
    frame = await agent.next_request()
    assert frame["data"]["packages"] == [{"name": "nginx"}, {"name": "not-installed-xyz"}]
    assert frame["data"]["update-params"]["dry-run"] == "true"
    await agent.run_one(frame)
    await agent.ack()
    await agent.ack()
    assert (await status_of(pool, rid))["summary"]["update"]["success"]["count"] == 1


async def test_saving_a_profile_queues_update_profile_to_its_connected_hosts(server, make_host, pool):
    """B6: one update-profile per connected host of the profile; not to others, nor twice while one waits."""
    client = await server()
    await profiles.create_profile(pool, "web", {})
    await profiles.create_profile(pool, "db", {})
    web1, web2, off, db1 = [await make_host(n) for n in ("web1", "web2", "web3", "db1")]
    for h, profile in ((web1, "web"), (web2, "web"), (off, "web"), (db1, "db")):
        await pool.execute("UPDATE hosts SET profile = $2 WHERE id = $1", h[2], profile)
    agents = [await connected(client, h) for h in (web1, web2, db1)]
    await profiles.update_profile(pool, "web", {"Package_exclude": "linux-image*"})
    for agent in agents[:2]:
        frame = await agent.next_request()
        assert frame == {"request-id": frame["request-id"], "request": "update-profile"}
        await agent.run_one(frame)
    rows = await pool.fetch("SELECT host_id, request FROM agent_requests ORDER BY host_id")
    assert [(r["host_id"], r["request"]) for r in rows] == [(web1[2], "update-profile"), (web2[2], "update-profile")]
    for rid in [r["id"] for r in await pool.fetch("SELECT id FROM agent_requests")]:
        await until_status(pool, rid, "completed")


async def test_changing_a_profiles_repositories_queues_update_profile_too(server, make_host, pool):
    """B6 for the repositories a profile hands out: its connected hosts reload it."""
    client = await server()
    await profiles.create_profile(pool, "web", {})
    web1 = await make_host("web1")
    await pool.execute("UPDATE hosts SET profile = 'web' WHERE id = $1", web1[2])
    agent = await connected(client, web1)
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="main", type="deb", dist="bookworm", section="main")
    await profiles.set_repos(pool, "web", [repo.id])
    frame = await agent.next_request()
    assert frame == {"request-id": frame["request-id"], "request": "update-profile"}
    await agent.run_one(frame)
    await until_status(pool, frame["request-id"], "completed")
    with pytest.raises(NotFound):  # an unknown repository: nothing changes, nothing is queued
        await profiles.set_repos(pool, "web", [repo.id + 1000])
    assert await pool.fetchval("SELECT count(*) FROM agent_requests") == 1


async def test_unknown_request_failure_is_stored_with_its_error(server, host, pool):
    """B7's answer: `failed` with the agent's error, acked [status, error]."""
    client = await server()
    agent = await connected(client, host)
    rid = await make(pool, host, "update-profile")
    await agent.next_request()
    await agent.respond(rid, "failed", summary="", log="", error="unknown request sent by reposerver: request-foo")
    assert (await agent.ack())["data"] == ["status", "error"]
    row = await status_of(pool, rid)
    assert (row["status"], row["error"]) == ("failed", "unknown request sent by reposerver: request-foo")


async def test_one_request_in_flight_the_next_when_it_is_over(server, host, pool):
    """B8: oldest first, one at a time; the second waits as new (no timer runs on it) until the first ends."""
    client = await server()
    agent = await connected(client, host)
    first = await make(pool, host, "request-packages-infos")
    second = await make(pool, host, "request-general-infos")
    frame = await agent.next_request()
    assert frame["request-id"] == first
    await agent.respond(first, "running")
    await agent.ack()
    await asyncio.sleep(0.5)
    assert (await status_of(pool, second))["status"] == "new"
    assert await requests.expire(pool, ttl=0, sent_seconds=3600, running_seconds=3600) == {
        "offline": 0, "unanswered": 0, "lost": 0}  # its host is connected: it waits
    await agent.respond(first, "completed", log="done")
    frame = await agent.next_request(timeout=2)
    assert frame["request-id"] == second
    await agent.run_one(frame)
    await until_status(pool, second, "completed")
    assert (await status_of(pool, first))["status"] == "completed"


async def test_offline_host_gets_its_request_on_authentication(server, host, pool):
    """C1: created while the host is away; sent within 2 s of its successful authentication."""
    client = await server()
    rid = await make(pool, host, "request-general-infos")
    await asyncio.sleep(0.5)
    assert (await status_of(pool, rid))["status"] == "new"
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    assert await agent.hello() == {"info": "Authentication successful"}
    started = time.monotonic()
    assert (await agent.next_request(timeout=2))["request-id"] == rid
    assert time.monotonic() - started < 2


async def test_host_that_never_connects_fails_after_the_window(server, host, make_host, pool):
    """C2: failed with an explanatory info once the window is over; younger requests wait on."""
    rid = await make(pool, host, "request-general-infos")
    await pool.execute("UPDATE agent_requests SET created_at = now() - interval '20 minutes' WHERE id = $1", rid)
    young = await make(pool, host, "request-packages-infos")
    counts = await requests.expire(pool, ttl=900, sent_seconds=600, running_seconds=3600)
    assert counts == {"offline": 1, "unanswered": 0, "lost": 0}
    row = await status_of(pool, rid)
    assert row["status"] == "failed" and "did not connect within 900 s" in row["info"]
    assert (await status_of(pool, young))["status"] == "new"


async def test_agent_killed_while_running_fails_at_the_limit(server, host, pool):
    """C3: the socket count drops at once; the request stays running until the limit, then failed/lost."""
    client = await server()
    agent = await connected(client, host)
    rid = await make(pool, host, "request-all-packages-update", {"update-params": DRY_RUN})
    await agent.next_request()
    await agent.respond(rid, "running")
    await agent.ack()
    await agent.ws.close()

    async def gone():
        return host[2] not in client.app[HUB].connections and not await pool.fetchval(
            "SELECT 1 FROM agent_sessions WHERE host_id = $1", host[2])

    await wait_for(gone)
    assert (await status_of(pool, rid))["status"] == "running"
    assert (await requests.expire(pool, ttl=900, sent_seconds=600, running_seconds=3600))["lost"] == 0
    await pool.execute("UPDATE agent_requests SET started_at = now() - interval '2 hours' WHERE id = $1", rid)
    assert (await requests.expire(pool, ttl=900, sent_seconds=600, running_seconds=3600))["lost"] == 1
    row = await status_of(pool, rid)
    assert row["status"] == "failed" and row["timed_out"] and row["info"].startswith("Lost while running")


async def test_sent_but_never_started_fails_and_frees_the_host(server, host, pool):
    client = await server()
    agent = await connected(client, host)
    rid = await make(pool, host, "request-packages-infos")
    nxt = await make(pool, host, "request-general-infos")
    await agent.next_request()
    await pool.execute("UPDATE agent_requests SET sent_at = now() - interval '11 minutes' WHERE id = $1", rid)
    assert (await requests.expire(pool, ttl=900, sent_seconds=600, running_seconds=3600))["unanswered"] == 1
    assert (await status_of(pool, rid))["info"].startswith("No answer")
    assert (await agent.next_request(timeout=2))["request-id"] == nxt  # the notice freed the host at once
    # The agent's result, should it still come, replaces the failure Depot decided.
    await agent.respond(rid, "completed", log="late but done")
    await agent.ack()
    row = await status_of(pool, rid)
    assert (row["status"], row["log"], row["timed_out"], row["info"]) == ("completed", "late but done", False, None)


async def _unknown_while_running(client, host, pool):
    agent = await connected(client, host)
    rid = await make(pool, host, "request-packages-update", {"packages": ["nginx"], "update-params": DRY_RUN})
    await agent.next_request()
    await agent.respond(rid, "running")
    await agent.ack()
    await agent.send({"response-to-request": {"request-id": str(rid), "status": "unknown",
                                              "log": "partial log of a crashed request\n"}})
    assert (await agent.ack())["data"] == ["status", "log"]
    row = await status_of(pool, rid)
    assert (row["status"], row["log"]) == ("running", "partial log of a crashed request\n")
    assert "unknown" in row["info"]
    return agent, rid


async def test_unknown_keeps_the_partial_log_and_is_lost_when_the_agent_comes_back(server, host, pool):
    """C5: `unknown` is recorded as a partial log; the request ends failed/lost (not unknown for good) as soon
    as the host's agent authenticates again, and its next request goes to that agent."""
    client = await server()
    agent, rid = await _unknown_while_running(client, host, pool)
    nxt = await make(pool, host, "request-general-infos")
    await asyncio.sleep(0.3)
    assert (await status_of(pool, nxt))["status"] == "new"  # the agent may still be busy with the first
    await agent.close()
    again = await connected(client, host)
    row = await status_of(pool, rid)
    assert (row["status"], row["timed_out"]) == ("failed", True) and row["info"].startswith("Lost")
    assert row["log"] == "partial log of a crashed request\n"
    assert (await again.next_request(timeout=2))["request-id"] == nxt


async def test_unknown_is_lost_after_the_sent_limit(server, host, pool):
    client = await server()
    _, rid = await _unknown_while_running(client, host, pool)
    assert (await requests.expire(pool, ttl=900, sent_seconds=600, running_seconds=3600))["lost"] == 0
    await pool.execute("UPDATE agent_requests SET updated_at = now() - interval '11 minutes' WHERE id = $1", rid)
    assert (await requests.expire(pool, ttl=900, sent_seconds=600, running_seconds=3600))["lost"] == 1
    row = await status_of(pool, rid)
    assert row["status"] == "failed" and row["info"].startswith("Lost")


async def test_duplicates_and_late_statuses_change_nothing_once_over(server, host, pool):
    """C6: the same final response twice (the agent's resend race), and a late running/unknown: acked, unchanged."""
    client = await server()
    agent = await connected(client, host)
    rid = await make(pool, host, "request-packages-infos")
    await agent.next_request()
    await agent.respond(rid, "running")
    await agent.ack()
    await agent.respond(rid, "completed", log="the log")
    await agent.ack()
    before = await status_of(pool, rid)
    # The resend form: absent fields are left out.
    await agent.send({"response-to-request": {"request-id": str(rid), "status": "failed", "log": "other"}})
    assert (await agent.ack())["request-id"] == str(rid)
    for late in ("running", "unknown"):
        await agent.send({"response-to-request": {"request-id": str(rid), "status": late, "log": "late"}})
        await agent.ack()
    after = await status_of(pool, rid)
    assert dict(after) == dict(before)


async def test_responses_apply_only_to_the_authenticated_hosts_own_requests(server, host, make_host, pool):
    """A4/A5: another host's request id is acknowledged and changes nothing; so is an unknown id."""
    client = await server()
    other = await make_host("web2")
    rid = await make(pool, other, "request-general-infos")
    agent = await connected(client, host)
    for status in ("running", "completed"):
        await agent.respond(rid, status, log="forged")
        assert (await agent.ack())["request-id"] == str(rid)
    await agent.respond(rid + 1000, "completed", log="nobody's")
    await agent.ack()
    row = await status_of(pool, rid)
    assert (row["status"], row["log"]) == ("new", None)
    # Before authentication: dropped, unchanged (A4).
    raw = await Agent.connect(client)
    await raw.send({"response-to-request": {"request-id": str(rid), "status": "completed", "log": "x"}})
    await asyncio.sleep(0.3)
    assert (await status_of(pool, rid))["log"] is None


async def test_twenty_requests_on_one_socket_acks_are_strings(server, host, pool):
    """C8: every ack echoes the id as a string; the socket lives through 20 requests."""
    client = await server()
    agent = await connected(client, host)
    session = client.app[HUB].connections[host[2]].session_id
    ids = [await make(pool, host, name) for name in ["request-general-infos", "request-packages-infos"] * 10]
    runner = asyncio.create_task(agent.serve())
    for rid in ids:
        await until_status(pool, rid, "completed")
    runner.cancel()
    assert [f["request-id"] for f in agent.requests] == ids
    assert all(isinstance(a["request-id"], str) for a in agent.acks)
    assert client.app[HUB].connections[host[2]].session_id == session


async def test_cancel_only_before_sent(server, host, pool):
    client = await server()
    rid = await make(pool, host, "request-general-infos")
    row = await requests.cancel(pool, rid, "alice")
    assert (row["Status"], row["Info"]) == ("canceled", "Canceled by alice")
    sent = await make(pool, host, "request-packages-infos")
    agent = await connected(client, host)
    assert (await agent.next_request())["request-id"] == sent  # the canceled one is never sent
    try:
        await requests.cancel(pool, sent, "alice")
        raise AssertionError("a sent request cannot be canceled")
    except requests.Conflict as exc:
        assert exc.status == 409 and "sent" in exc.message


async def test_request_whose_socket_is_gone_waits_again(pool, host, settings):
    """A request marked sent whose frame could not leave goes back to new."""
    await pool.execute("INSERT INTO agent_servers (server_id) VALUES ('s1')")
    await pool.execute("INSERT INTO agent_sessions (host_id, server_id, session_id) VALUES ($1, 's1', 's1/1')", host[2])
    rid = await make(pool, host, "request-general-infos")
    (out,) = await requests.send_next(pool, "s1", None)
    assert out.id == rid and out.frame() == {"request-id": rid, "request": "request-general-infos"}
    assert await requests.send_next(pool, "s1", None) == []  # one in flight per host
    await requests.unsend(pool, rid)
    assert (await status_of(pool, rid))["status"] == "new"


def test_workers_expire_requests_on_their_cron(settings):
    names = [job.name for job in worker_settings(settings)["cron_jobs"]]
    assert any("expire_agent_requests" in n for n in names)
