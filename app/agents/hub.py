"""The agent sockets of one server process: at most one per host, the sending of requests to them, this
process's heartbeat, and the notices of the other processes.

Requests are sent by one task per process (`_dispatch`): woken with the hosts to look at (a notice that
a host has a request, a host that just authenticated, a request just over), it marks the next request of
each of them sent in one statement and sends the frames. It also looks at all of its hosts at every
heartbeat and whenever its LISTEN connection was reopened, so a notice lost meanwhile delays a request by
one heartbeat at most.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket

import asyncpg
from aiohttp import WSCloseCode, web

from app.agents import protocol, requests, sessions
from app.keys import POOL, SETTINGS
from app.settings import Settings

log = logging.getLogger(__name__)
frames = logging.getLogger("depot.agents.frames")

# A database that does not answer: what was to be done is tried again later.
DB_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class Connection:
    """One authenticated agent socket."""

    __slots__ = ("ws", "host_id", "session_id")

    def __init__(self, ws: web.WebSocketResponse, host_id: int, session_id: str):
        self.ws = ws
        self.host_id = host_id
        self.session_id = session_id


class Hub:
    """The process's agent sockets by host id."""

    def __init__(self, settings: Settings, pool):
        self.settings = settings
        self.pool = pool
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.connections: dict[int, Connection] = {}
        # Every open socket, authenticated or not (closed when the process stops).
        self.sockets: set[web.WebSocketResponse] = set()
        self._sessions = itertools.count(1)
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._listening = asyncio.Event()
        # Hosts whose next request may be sendable (or all of this process's hosts).
        self._due: set[int] = set()
        self._all_due = False
        self._wake = asyncio.Event()
        # The sockets' database work (authentications, responses) takes at most half the pool: thousands of
        # agents answering a request to every host at once must leave connections to the HTTP API.
        self.db_slots = asyncio.Semaphore(max(1, settings.db_pool_max // 2))

    # --- life of the process ------------------------------------------------------------------------

    async def start(self) -> None:
        await sessions.register_server(self.pool, self.server_id)
        self._tasks = [asyncio.create_task(t) for t in (self._beat(), self._listen(), self._dispatch())]

    async def close_all(self) -> None:
        """Close every socket (the agents come back to another process, or to this one restarted)."""
        await asyncio.gather(*(self.close(ws, code=WSCloseCode.GOING_AWAY) for ws in list(self.sockets)))

    async def stop(self) -> None:
        await self.close_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        try:
            await sessions.unregister_server(self.pool, self.server_id)
        except DB_DOWN:
            pass  # the other processes forget this one once its heartbeat is stale

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.agent_heartbeat_seconds)
            try:
                await sessions.beat(self.pool, self.server_id, self.settings.agent_server_stale_seconds,
                                     list(self.connections))
            except Exception as exc:
                log.warning("agent channel heartbeat failed: %s", type(exc).__name__)
            self.kick_all()

    def _in_background(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- frames ---------------------------------------------------------------------------------------

    async def send(self, ws: web.WebSocketResponse, message: dict, host_id: int | None = None) -> None:
        text = protocol.encode(message)
        if self.settings.agent_frame_log:
            frames.info("host %s < %s", host_id, text[:2000])
        await ws.send_str(text)

    async def close(self, ws: web.WebSocketResponse, message: dict | None = None,
                    code: int = WSCloseCode.OK, host_id: int | None = None) -> None:
        try:
            if message is not None and not ws.closed:
                await self.send(ws, message, host_id)
            await ws.close(code=code)
        except (ConnectionError, RuntimeError):
            pass  # already gone

    # --- sockets ------------------------------------------------------------------------------------

    async def attach(self, ws: web.WebSocketResponse, host_id: int) -> Connection | None:
        """The host authenticated on `ws`: it becomes the host's one socket (an older one, here or in
        another process, is closed). None if the host does not exist (deleted meanwhile)."""
        conn = Connection(ws, host_id, f"{self.server_id}/{next(self._sessions)}")
        try:
            opened = await sessions.open_session(self.pool, host_id, self.server_id, conn.session_id)
        except asyncpg.ForeignKeyViolationError:  # this process was taken for gone (a long outage)
            await sessions.register_server(self.pool, self.server_id)
            opened = await sessions.open_session(self.pool, host_id, self.server_id, conn.session_id)
        if not opened:
            return None
        await requests.lost_on_reconnect(self.pool, host_id)
        older = self.connections.get(host_id)
        self.connections[host_id] = conn
        if older is not None:
            self._in_background(self.close(older.ws))
        return conn

    async def detach(self, conn: Connection) -> None:
        if self.connections.get(conn.host_id) is conn:
            del self.connections[conn.host_id]
        try:
            await sessions.close_session(self.pool, conn.host_id, conn.session_id)
        except DB_DOWN as exc:
            # Left behind, the row still names a socket of a live process: the next session replaces it.
            log.warning("agent session of host %s not closed: %s", conn.host_id, type(exc).__name__)

    # --- requests -----------------------------------------------------------------------------------

    def kick(self, host_id: int) -> None:
        """The host may have a request to send now."""
        if host_id in self.connections:
            self._due.add(host_id)
            self._wake.set()

    def kick_all(self) -> None:
        self._all_due = True
        self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            hosts = None if self._all_due else list(self._due)
            self._due, self._all_due = set(), False
            try:
                outgoing = await requests.send_next(self.pool, self.server_id, hosts)
            except Exception as exc:  # this task must outlive anything: it is the only one sending requests
                if isinstance(exc, DB_DOWN):
                    log.warning("agent requests not sent, database unavailable: %s", type(exc).__name__)
                else:
                    log.exception("agent requests not sent")
                await asyncio.sleep(1.0)
                self.kick_all()
                continue
            for request in outgoing:
                conn = self.connections.get(request.host_id)
                self._in_background(self._send_request(conn, request))

    async def _send_request(self, conn: Connection | None, request: requests.Outgoing) -> None:
        try:
            if conn is None or conn.ws.closed:
                raise ConnectionResetError
            await self.send(conn.ws, request.frame(), conn.host_id)
        except ConnectionError:
            try:
                await requests.unsend(self.pool, request.id)
            except DB_DOWN:
                pass  # it stays sent, and fails at the time limit

    async def response(self, conn: Connection, response: protocol.Response) -> None:
        """Apply a response of the host's agent, then acknowledge it (not before: the agent deletes
        what an ack names, so a response not stored is better sent again than acknowledged)."""
        async with self.db_slots:
            freed = await requests.apply(self.pool, conn.host_id, response)
        if freed:
            self.kick(conn.host_id)
        await self.send(conn.ws, protocol.ack_frame(response.echo, response.ack_fields), conn.host_id)

    # --- notices from every process -----------------------------------------------------------------

    def on_notice(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "r":
            if rest == "*":
                self.kick_all()
            else:
                self.kick(int(rest))
        elif kind == "c":
            host, _, session_id = rest.partition(":")
            conn = self.connections.get(int(host))
            if conn is not None and conn.session_id != session_id:
                self._in_background(self._close_if_replaced(conn))
        elif kind == "d":
            conn = self.connections.pop(int(rest), None)
            if conn is not None:
                self._in_background(self.close(conn.ws, protocol.DISCONNECT, host_id=conn.host_id))

    async def _close_if_replaced(self, conn: Connection) -> None:
        """Another socket of the host was opened: close this one if it is no longer the host's session. The
        notice of an older socket (here or elsewhere) may arrive after this newer one was opened."""
        try:
            current = await sessions.current_session(self.pool, conn.host_id)
        except DB_DOWN as exc:  # kept: a socket the agent left ends by itself
            log.warning("agent session of host %s not checked: %s", conn.host_id, type(exc).__name__)
            return
        if current != conn.session_id and self.connections.get(conn.host_id) is conn:
            del self.connections[conn.host_id]
            await self.close(conn.ws)

    async def _listen(self) -> None:
        """LISTEN on a connection of this process's own, reopened whenever it is lost."""
        while True:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await asyncpg.connect(self.settings.database_url, timeout=self.settings.db_connect_timeout)
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(sessions.CHANNEL, lambda _c, _pid, _ch, payload: self._notice(payload))
                self._listening.set()
                self.kick_all()  # notices sent while this process was not listening are lost
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("agent channel: LISTEN connection failed: %s", type(exc).__name__)
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1.0)

    def _notice(self, payload: str) -> None:
        try:
            self.on_notice(payload)
        except ValueError:
            log.warning("agent channel: unreadable notice %r", payload[:100])

    async def listening(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._listening.wait(), timeout)


HUB = web.AppKey("agent_hub", Hub)


async def hub_ctx(app: web.Application):
    """cleanup_ctx (after the database): the process's agent sockets."""
    hub = Hub(app[SETTINGS], app[POOL])
    await hub.start()
    app[HUB] = hub
    yield
    await hub.stop()


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: the server waits for its handlers, and a socket's handler ends only when it closes."""
    if HUB in app:
        await app[HUB].close_all()
