"""The agent channel's socket: opening sequence, authentication, one socket per host, hostile frames,
large messages, silence (acceptance cases A1-A5, C7, C8's ack typing, D1, D2 with a synthetic agent)."""
from __future__ import annotations

import asyncio
import json

import aiohttp

from app.agents import requests
from app.agents.hub import HUB
from app.hosts import registry
from tests.agents.agent import Agent
from tests.helpers import wait_for

AUTH_ERROR = {"error": 'error while processing response to request "authenticate"'}


async def session_of(pool, host_id: int):
    return await pool.fetchrow("SELECT * FROM agent_sessions WHERE host_id = $1", host_id)


async def connected(client, host, pool) -> Agent:
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    assert await agent.hello() == {"info": "Authentication successful"}
    return agent


async def test_opening_sequence_exact_frames_and_session(server, host, pool):
    """A1: connection-type → authenticate → credentials → success, the frames exactly; the host is connected."""
    client = await server()
    ws = await client.ws_connect("/ws", autoping=False, headers={"Origin": "http://elsewhere.example"})
    await ws.send_str(json.dumps({"connection-type": "host"}))
    assert (await ws.receive(timeout=5)).data == '{"request":"authenticate"}'
    await ws.send_str(json.dumps({"response-to-request": {"request": "authenticate", "auth-id": host[0],
                                                          "token": host[1]}}))
    assert (await ws.receive(timeout=5)).data == '{"info":"Authentication successful"}'
    row = await session_of(pool, host[2])
    assert row is not None and row["server_id"] == client.app[HUB].server_id
    assert client.app[HUB].connections[host[2]].ws is not None
    await ws.close()
    await wait_for(lambda: _no_session(pool, host[2]))


async def _no_session(pool, host_id):
    return await session_of(pool, host_id) is None


async def test_a_newer_socket_replaces_the_older(server, host, pool):
    """A1: one socket per host; the older is closed when the same host authenticates again."""
    client = await server()
    first = await connected(client, host, pool)
    first_session = (await session_of(pool, host[2]))["session_id"]
    second = await connected(client, host, pool)
    assert await first.receive() is None  # closed by the server
    row = await session_of(pool, host[2])
    assert row["session_id"] != first_session
    assert len(client.app[HUB].connections) == 1
    await asyncio.sleep(0.2)  # the older socket's end must not remove the newer one's session
    assert (await session_of(pool, host[2]))["session_id"] == row["session_id"]
    await second.close()


async def test_a_late_notice_of_an_older_socket_leaves_the_newer_one(server, host, pool):
    """The notice of a socket's session can arrive after a newer socket of the host opened (PostgreSQL delivers it
    later under load): the newer socket stays. A notice of a session that did replace it closes it."""
    client = await server()
    hub = client.app[HUB]
    await connected(client, host, pool)
    first_session = (await session_of(pool, host[2]))["session_id"]
    second = await connected(client, host, pool)
    second_session = (await session_of(pool, host[2]))["session_id"]
    hub.on_notice(f"c:{host[2]}:{first_session}")  # as if the first socket's notice came only now
    await asyncio.wait(set(hub._background), timeout=5)  # its check of the host's session ran
    assert hub.connections[host[2]].session_id == second_session
    await pool.execute("UPDATE agent_sessions SET session_id = 'elsewhere/1' WHERE host_id = $1", host[2])
    hub.on_notice(f"c:{host[2]}:elsewhere/1")  # another process's newer socket
    assert await second.receive() is None  # closed by the server
    assert host[2] not in hub.connections


async def test_bad_token_gets_the_reference_error_and_close(server, host, pool):
    """A2: the reference's error text, then close 1000; nothing recorded."""
    client = await server()
    agent = await Agent.connect(client, auth_id=host[0], token="0" * 64)
    assert await agent.hello() == AUTH_ERROR
    assert await agent.receive() is None
    assert agent.ws.close_code == 1000
    assert await session_of(pool, host[2]) is None
    for auth_id, token in (("", ""), (host[0], ""), (None, 5), ("id_unknown", host[1])):
        agent = await Agent.connect(client)
        await agent.send({"response-to-request": {"request": "authenticate", "auth-id": auth_id, "token": token}})
        assert await agent.receive() == AUTH_ERROR
        assert await agent.receive() is None


async def test_failed_authentications_are_throttled_per_address(server, host):
    client = await server(auth_fail_limit=2, auth_fail_window=600)
    for _ in range(2):
        agent = await Agent.connect(client, auth_id=host[0], token="bad")
        assert await agent.hello() == AUTH_ERROR
    try:
        await Agent.connect(client, auth_id=host[0], token=host[1])
        raise AssertionError("the upgrade should have been refused")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 429


async def test_unauthenticated_socket_closed_after_the_deadline(server, host, pool):
    """A3: silent sockets, and sockets that only say their type, are closed; nothing is ever sent to them."""
    client = await server(agent_auth_seconds=0.5)
    silent = await Agent.connect(client)
    talker = await Agent.connect(client)
    await talker.send({"connection-type": "host"})
    assert await talker.receive() == {"request": "authenticate"}
    assert await silent.receive(timeout=5) is None
    assert await talker.receive(timeout=5) is None
    assert silent.ws.close_code == 1008

    async def none_open():
        return client.app[HUB].sockets == set()

    await wait_for(none_open)


async def test_unauthenticated_response_changes_nothing_and_is_not_acked(server, host, pool):
    """A4: a response before authentication is dropped (no ack); the socket may still authenticate."""
    client = await server()
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    await agent.send({"response-to-request": {"request-id": "1", "status": "completed", "log": "x"}})
    assert await agent.hello() == {"info": "Authentication successful"}  # the next frame is not an ack
    await agent.close()


async def test_bad_frames_crash_nothing(server, host, make_host, pool):
    """A5: non-JSON, non-objects, odd ids and types: ignored or acknowledged; other agents unaffected."""
    client = await server()
    other = await connected(client, await make_host("web2"), pool)
    agent = await Agent.connect(client, auth_id=host[0], token=host[1])
    for junk in ("not json", "[]", "42", '"text"', "null", "{", '{"other": 1}'):
        await agent.ws.send_str(junk)
    await agent.ws.send_bytes(b"\x00\x01binary")
    assert await agent.hello() == {"info": "Authentication successful"}
    for junk in ("not json", "[]", '{"response-to-request": []}', '{"response-to-request": {"status": "x"}}',
                 '{"response-to-request": {"request-id": null}}', '{"response-to-request": {"request-id": true}}',
                 '{"response-to-request": {"request-id": {"a": 1}}}',
                 '{"response-to-request": {"request": "authenticate", "auth-id": "x", "token": "y"}}',
                 '{"connection-type": "host"}'):
        await agent.ws.send_str(junk)
    await agent.send({"response-to-request": {"request-id": "abc"}})
    assert await agent.ack() == {"info": "Request response received", "request-id": "abc", "data": ["status"]}
    await agent.send({"response-to-request": {"request-id": "99999999999999999999999", "status": "completed",
                                              "log": "x"}})
    ack = await agent.ack()
    assert ack["request-id"] == "99999999999999999999999" and ack["data"] == ["status", "log"]
    # An integer id (the agent sends strings) is echoed as a string: an integer would kill the agent.
    await agent.send({"response-to-request": {"request-id": 7, "status": "running"}})
    assert (await agent.ack())["request-id"] == "7"
    # Still the host's socket, and the other agent's too.
    await agent.send({"response-to-request": {"request-id": "8", "status": "running"}})
    assert (await agent.ack())["request-id"] == "8"
    await other.send({"response-to-request": {"request-id": "9", "status": "running"}})
    assert (await other.ack())["request-id"] == "9"
    assert set(client.app[HUB].connections) == {host[2], other_id(client, host)}


async def test_other_connection_types_are_closed(server):
    """Depot has no browser channel on /ws (the dashboard polls); an unknown type is closed as in the reference."""
    client = await server()
    for kind in ("browser-client", 5, "HOST"):
        agent = await Agent.connect(client)
        await agent.send({"connection-type": kind})
        assert await agent.receive() is None


def other_id(client, host):
    return next(h for h in client.app[HUB].connections if h != host[2])


async def test_ack_names_the_fields_set_by_php_empty_rules(server, host, pool):
    client = await server()
    agent = await connected(client, host, pool)
    cases = [
        ({"status": "completed", "summary": "", "log": "text"}, ["status", "log"]),
        ({"status": "completed", "summary": {"update": {}}, "log": "text"}, ["status", "summary", "log"]),
        ({"status": "failed", "summary": "", "log": "x", "error": "boom"}, ["status", "error", "log"]),
        ({"status": "failed", "summary": "", "log": "", "error": "boom"}, ["status", "error"]),
        ({"status": "completed", "summary": {}, "log": "0", "info": "hi"}, ["status", "info"]),
        ({"status": "running"}, ["status"]),
    ]
    for n, (body, fields) in enumerate(cases, start=1):
        await agent.send({"response-to-request": {"request-id": str(100 + n), **body}})
        assert await agent.ack() == {"info": "Request response received", "request-id": str(100 + n),
                                     "data": fields}


async def test_messages_far_above_4_mib_are_accepted(server, host, pool):
    """D1: a 6 MiB final response is read, stored and acknowledged, not closed with 1009."""
    client = await server()
    agent = await connected(client, host, pool)
    (rid,) = await requests.create(pool, [host[2]], "request-all-packages-update", {}, "tester")
    await agent.next_request()
    await agent.respond(rid, "completed", summary={"update": {"status": "done"}}, log="x" * (6 * 1024 * 1024))
    assert (await agent.ack(timeout=30))["data"] == ["status", "summary", "log"]
    assert await pool.fetchval("SELECT length(log) FROM agent_requests WHERE id = $1", rid) == 6 * 1024 * 1024


async def test_no_pings_and_no_idle_disconnect(server, host, pool):
    """D2: a silent agent is neither pinged nor cut off (it cannot answer while it runs a request)."""
    client = await server()
    agent = await connected(client, host, pool)
    assert client.app[HUB].connections[host[2]].ws._heartbeat is None
    try:
        frame = await agent.ws.receive(timeout=3)
        raise AssertionError(f"unexpected frame {frame}")
    except asyncio.TimeoutError:
        pass
    await agent.send({"response-to-request": {"request-id": "3", "status": "running"}})
    assert (await agent.ack())["request-id"] == "3"


async def test_unregistering_a_host_disconnects_its_agent(server, host, make_host, pool):
    """C7: the reference's text, then close; the host's later tries fail."""
    client = await server()
    agent = await connected(client, host, pool)
    assert await registry.unregister(pool, host[2])
    assert await agent.receive() == {"info": "You will now be disconnected from the server"}
    assert await agent.receive() is None
    again = await Agent.connect(client, auth_id=host[0], token=host[1])
    assert await again.hello() == AUTH_ERROR


async def test_new_credentials_disconnect_the_old_socket(server, host, pool):
    client = await server()
    agent = await connected(client, host, pool)
    await registry.register(pool, "web1", "192.0.2.10", may_reregister=True)
    assert await agent.receive() == {"info": "You will now be disconnected from the server"}
    await wait_for(lambda: _no_session(pool, host[2]))


async def test_plain_get_is_a_json_400(server):
    client = await server()
    resp = await client.get("/ws")
    assert resp.status == 400
    assert "websocket" in (await resp.json())["message_error"][0]
