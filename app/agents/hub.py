"""The agent sockets of one server process: at most one per host, this process's heartbeat, and the
notices of the other processes (a host connected elsewhere, a host deleted).

Every process LISTENs on a connection of its own, reopened (with a pass over its own hosts) whenever
it is lost.
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

from app.agents import protocol, sessions
from app.keys import POOL, SETTINGS
from app.settings import Settings

log = logging.getLogger(__name__)


class Connection:
    """One authenticated agent socket."""

    __slots__ = ("ws", "host_id", "session_id")

    def __init__(self, ws: web.WebSocketResponse, host_id: int, session_id: str):
        self.ws = ws
        self.host_id = host_id
        self.session_id = session_id

    async def close(self, message: dict | None = None, code: int = WSCloseCode.OK) -> None:
        await _close(self.ws, message, code)


async def _close(ws: web.WebSocketResponse, message: dict | None = None, code: int = WSCloseCode.OK) -> None:
    try:
        if message is not None and not ws.closed:
            await ws.send_str(protocol.encode(message))
        await ws.close(code=code)
    except (ConnectionError, RuntimeError):
        pass  # already gone


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
        self._closing: set[asyncio.Task] = set()
        self._listening = asyncio.Event()

    # --- life of the process ------------------------------------------------------------------------

    async def start(self) -> None:
        await sessions.register_server(self.pool, self.server_id)
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._listen())]

    async def close_all(self) -> None:
        """Close every socket (the agents come back to another process, or to this one restarted)."""
        await asyncio.gather(*(_close(ws, code=WSCloseCode.GOING_AWAY) for ws in list(self.sockets)))

    async def stop(self) -> None:
        await self.close_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._closing, return_exceptions=True)
        try:
            await sessions.unregister_server(self.pool, self.server_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            pass  # the other processes forget this one once its heartbeat is stale

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.agent_heartbeat_seconds)
            try:
                await sessions.beat(self.pool, self.server_id, self.settings.agent_server_stale_seconds)
            except Exception as exc:
                log.warning("agent channel heartbeat failed: %s", type(exc).__name__)

    # --- sockets ------------------------------------------------------------------------------------

    def new_session_id(self) -> str:
        return f"{self.server_id}/{next(self._sessions)}"

    async def attach(self, ws: web.WebSocketResponse, host_id: int) -> Connection | None:
        """The host authenticated on `ws`: it becomes the host's one socket (an older one, here or in
        another process, is closed). None if the host does not exist (deleted meanwhile)."""
        conn = Connection(ws, host_id, self.new_session_id())
        try:
            opened = await sessions.open_session(self.pool, host_id, self.server_id, conn.session_id)
        except asyncpg.ForeignKeyViolationError:  # this process was taken for gone (a long outage)
            await sessions.register_server(self.pool, self.server_id)
            opened = await sessions.open_session(self.pool, host_id, self.server_id, conn.session_id)
        if not opened:
            return None
        older = self.connections.get(host_id)
        self.connections[host_id] = conn
        if older is not None:
            self._close_soon(older)
        return conn

    async def detach(self, conn: Connection) -> None:
        if self.connections.get(conn.host_id) is conn:
            del self.connections[conn.host_id]
        try:
            await sessions.close_session(self.pool, conn.host_id, conn.session_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            # Left behind, the row still names a socket of a live process: the next session replaces it.
            log.warning("agent session of host %s not closed: %s", conn.host_id, type(exc).__name__)

    def _close_soon(self, conn: Connection, message: dict | None = None) -> None:
        task = asyncio.create_task(conn.close(message))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- notices from every process -----------------------------------------------------------------

    def on_notice(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "c":
            host, _, session_id = rest.partition(":")
            conn = self.connections.get(int(host))
            if conn is not None and conn.session_id != session_id:
                del self.connections[conn.host_id]
                self._close_soon(conn)
        elif kind == "d":
            conn = self.connections.pop(int(rest), None)
            if conn is not None:
                self._close_soon(conn, protocol.DISCONNECT)

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
                self.on_listening()
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

    def on_listening(self) -> None:
        """(Re)listening: notices sent while this process was not listening are lost."""

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
