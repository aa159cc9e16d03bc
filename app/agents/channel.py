"""`GET /ws`: the agent channel, one coroutine per socket.

Before authentication the socket may say `{"connection-type": "host"}` (answered with the request to
authenticate) and send its credentials, checked as the HTTP `Host` scheme checks them; anything else is
ignored, and a socket that has not authenticated within DEPOT_AGENT_AUTH_SECONDS is closed. A failed
authentication counts against the client address like an HTTP one. After it, every response to a
request that has a request id is acknowledged, whatever it names; only the host's own requests are
changed by it (app/agents/requests.py). A frame that is not what the protocol says changes nothing and
is ignored; nothing a client sends ends anything but its own socket.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from app import auth, security
from app.agents import protocol
from app.agents.hub import DB_DOWN, HUB, Connection, frames
from app.errors import ApiError, bad_request
from app.keys import POOL, SETTINGS

log = logging.getLogger(__name__)

_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


async def websocket(request: web.Request) -> web.StreamResponse:
    """The agent channel (linupdate's reposerver agent): no credentials in the handshake, any Origin."""
    settings = request.app[SETTINGS]
    address = security.client_address(request)
    wait = request.app[security.THROTTLE].retry_after(address)
    if wait:
        raise ApiError(429, security.THROTTLE_MESSAGE, headers={"Retry-After": str(wait)}, retry_after=wait)
    # No heartbeat: an agent running a request reads nothing, so it would miss the pongs and be cut off.
    # No compression: a deflate context per socket costs more memory than the rest of the socket.
    ws = web.WebSocketResponse(heartbeat=None, compress=False, decode_text=False,
                               max_msg_size=settings.agent_max_message_bytes)
    if not ws.can_prepare(request).ok:
        raise bad_request("This is the agents' websocket endpoint: it needs a websocket upgrade")
    await ws.prepare(request)
    hub = request.app[HUB]
    hub.sockets.add(ws)
    conn = None
    try:
        conn = await _authenticate(request, ws, address)
        if conn is not None:
            await _serve(request, conn)
    except ConnectionError:
        pass  # the peer went away while a frame was being sent
    except DB_DOWN as exc:  # while authenticating: the agent comes back later
        log.warning("agent socket closed, database unavailable: %s", type(exc).__name__)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)
    finally:
        hub.sockets.discard(ws)
        if conn is not None:
            # Shielded: a server may cancel the handler when the peer goes, and the session must still end.
            await asyncio.shield(hub.detach(conn))
        if not ws.closed:
            await ws.close()
    return ws


async def _receive(request: web.Request, ws: web.WebSocketResponse, host_id: int | None,
                   timeout: float | None = None) -> dict | None | bool:
    """The next frame as a JSON object; None for a frame to ignore; False once the socket has ended."""
    msg = await ws.receive(timeout=timeout)
    if msg.type in _ENDED:
        return False
    if msg.type is not WSMsgType.TEXT:
        return None
    if request.app[SETTINGS].agent_frame_log:
        frames.info("host %s > %s", host_id, protocol.masked(msg.data[:2000].decode(errors="replace")))
    return protocol.decode(msg.data)


async def _authenticate(request: web.Request, ws: web.WebSocketResponse, address: str) -> Connection | None:
    settings = request.app[SETTINGS]
    hub = request.app[HUB]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.agent_auth_seconds
    while True:
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            message = await _receive(request, ws, None, remaining)
        except TimeoutError:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"authentication timeout")
            return None
        if message is False:
            return None
        if not message:
            continue
        kind = protocol.connection_type(message)
        if kind is not None:
            if kind != "host":  # no browser channel here: the dashboard polls
                await ws.close()
                return None
            await hub.send(ws, protocol.AUTHENTICATE)
            continue
        credentials = protocol.credentials(message)
        if credentials is None:
            continue  # a response before authentication is not applied, nor acknowledged
        auth_id, token = credentials
        principal = conn = None
        async with hub.db_slots:
            if auth_id and token:
                principal = await auth.authenticate_host(request.app[POOL], request.app[auth.HOST_LOOKUPS],
                                                         auth_id, token)
            if principal is not None:
                conn = await hub.attach(ws, principal.host_id)
        if conn is None:
            request.app[security.THROTTLE].failed(address)
            await hub.close(ws, protocol.AUTH_ERROR)
            return None
        await hub.send(ws, protocol.AUTH_OK, conn.host_id)
        hub.kick(conn.host_id)  # its waiting request, if any, goes now (never before the success above)
        return conn


async def _serve(request: web.Request, conn: Connection) -> None:
    hub = request.app[HUB]
    while True:
        message = await _receive(request, conn.ws, conn.host_id)
        if message is False:
            return
        if not message:
            continue
        response = protocol.response(message)
        if response is None:
            continue  # another authentication, a connection type again, a response without an id: ignored
        try:
            await hub.response(conn, response)
        except ConnectionError:
            return  # the socket went while the ack was being sent
        except DB_DOWN as exc:
            # Not acknowledged: the agent keeps the response and sends it again later.
            log.warning("agent response of host %s not stored: %s", conn.host_id, type(exc).__name__)
