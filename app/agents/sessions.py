"""Which server process holds which host's socket, in PostgreSQL (so every process, the API and the
dashboard see it), and the notices the processes send each other about sockets and requests.

A notice is a NOTIFY on one channel, sent in the transaction that made the change (so it is delivered
only if that commits); each server process LISTENs on a connection of its own (app/agents/hub.py):
- `c:<host>:<session>`: that host authenticated on a new socket; any other socket of it is closed, once the
  host's row says it is no longer that socket's session (a notice can arrive after a newer socket's);
- `d:<host>`: that host was deleted or got new credentials; its socket is told and closed;
- `r:<host>`: that host has a request to send (or its request in flight ended); `r:*`: many hosts have.
"""
from __future__ import annotations

CHANNEL = "depot_agents"


async def notify(conn, payload: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)


async def host_removed(conn, host_id: int) -> None:
    """The host was deleted or its credentials changed: whichever process holds its socket closes it."""
    await notify(conn, f"d:{host_id}")


# --- server processes -----------------------------------------------------------------------------


async def register_server(pool, server_id: str) -> None:
    await pool.execute("INSERT INTO agent_servers (server_id) VALUES ($1)", server_id)


async def beat(pool, server_id: str, stale_seconds: float, holding: list[int]) -> None:
    """This process is alive, and holds the sockets of `holding`; processes silent for stale_seconds are
    not (their sessions go with them)."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "UPDATE agent_servers SET heartbeat_at = now() WHERE server_id = $1 RETURNING 1", server_id)
        if not found:  # deleted while this process could not beat (a long database outage): back again
            await conn.execute("INSERT INTO agent_servers (server_id) VALUES ($1)", server_id)
        await conn.execute(
            "DELETE FROM agent_servers WHERE heartbeat_at < now() - make_interval(secs => $1)", float(stale_seconds))
        # Sessions whose end could not be recorded (the database was away when the socket closed). Not the
        # newest: a socket that has just authenticated may not be in `holding` yet.
        await conn.execute(
            "DELETE FROM agent_sessions s WHERE s.server_id = $1 AND s.connected_at < now() - interval '10 seconds'"
            " AND NOT EXISTS (SELECT 1 FROM unnest($2::bigint[]) AS h(id) WHERE h.id = s.host_id)",
            server_id, holding)


async def unregister_server(pool, server_id: str) -> None:
    await pool.execute("DELETE FROM agent_servers WHERE server_id = $1", server_id)


# --- sockets --------------------------------------------------------------------------------------


async def open_session(pool, host_id: int, server_id: str, session_id: str) -> bool:
    """Record the host's socket here, replacing any other; False if the host no longer exists."""
    async with pool.acquire() as conn, conn.transaction():
        opened = await conn.fetchval(
            "INSERT INTO agent_sessions (host_id, server_id, session_id)"
            " SELECT id, $2, $3 FROM hosts WHERE id = $1"
            " ON CONFLICT (host_id) DO UPDATE SET server_id = EXCLUDED.server_id,"
            "  session_id = EXCLUDED.session_id, connected_at = now()"
            " RETURNING 1",
            host_id, server_id, session_id,
        )
        if opened:
            await notify(conn, f"c:{host_id}:{session_id}")
    return bool(opened)


async def current_session(pool, host_id: int) -> str | None:
    """The session of the host's socket now, None if it holds none."""
    return await pool.fetchval("SELECT session_id FROM agent_sessions WHERE host_id = $1", host_id)


async def connected_since(pool, host_id: int):
    """When the host's agent socket authenticated; None if it holds none."""
    return await pool.fetchval("SELECT connected_at FROM agent_sessions WHERE host_id = $1", host_id)


async def close_session(pool, host_id: int, session_id: str) -> None:
    """Forget the socket, unless a newer one of the host replaced it meanwhile."""
    await pool.execute("DELETE FROM agent_sessions WHERE host_id = $1 AND session_id = $2", host_id, session_id)
