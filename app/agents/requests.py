"""Every change of an `agent_requests` row: a request's state machine, stated once.

    new ──send──▶ sent ──running──▶ running ──result──▶ completed | failed
     │             │ └──result (no running first: general infos)──▶ completed | failed
     │             ├──unsend──▶ new            (its socket was gone before the frame left)
     │             └──time limit──▶ failed     (timed_out: no running within DEPOT_AGENT_SENT_SECONDS)
     │                running ──time limit──▶ failed (timed_out: no result within DEPOT_AGENT_RUNNING_SECONDS)
     │             sent | running ──lost──▶ failed (timed_out: after `unknown`, see below)
     ├──cancel──▶ canceled                     (an operator, before it is sent: there is no cancel on the wire)
     └──expire──▶ failed                       (its host not connected within DEPOT_AGENT_REQUEST_TTL)

A partial unique index allows one request in flight (sent or running) per host: the agent runs one at
a time, so the next is sent when the previous one is over. The agent's responses change only its own
host's requests, only from sent or running (so a duplicate, or a late `running` or `unknown`, changes
nothing once the request is over), except that its result replaces a failure Depot decided (timed_out).

`unknown` is the agent's resend of a request whose result it lost (it crashed, or the request ran past
its own five-minute limit): it keeps the partial log, and deletes what it had of the request, so no
result will follow. The request stays in flight while the agent may still be busy with it, and is lost
when the host's agent authenticates again (a new agent process is running nothing) or
DEPOT_AGENT_SENT_SECONDS after the report, whichever comes first.

Each change that makes a request sendable notifies the server processes (app/agents/sessions.py), in
its own transaction; the process holding the host's socket sends it.
"""
from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.agents import protocol, sessions
from app.domain_errors import Conflict, NotFound
from app.hosts import queries
from app.tasks.listing import iso

NEW, SENT, RUNNING, COMPLETED, FAILED, CANCELED = "new", "sent", "running", "completed", "failed", "canceled"
STATUSES = (NEW, SENT, RUNNING, COMPLETED, FAILED, CANCELED)
FINISHED = (COMPLETED, FAILED, CANCELED)

SENT_INFO = "Request sent to the host"
UNKNOWN_INFO = "The agent lost this request's result (it reported status unknown); the log is partial"
LOST_INFO = "Lost: the agent reported its result unknown; the log is partial"
# More hosts than this in one change: one notice for every process to look at all of its hosts.
NOTIFY_EACH_MAX = 50


@dataclass(frozen=True)
class Outgoing:
    id: int
    host_id: int
    request: str
    params: dict

    def frame(self) -> dict:
        return protocol.request_frame(self.id, self.request, self.params)


async def _notify_hosts(conn, host_ids) -> None:
    host_ids = sorted(set(host_ids))
    if len(host_ids) > NOTIFY_EACH_MAX:
        await sessions.notify(conn, "r:*")
        return
    for host_id in host_ids:
        await sessions.notify(conn, f"r:{host_id}")


# --- created: new ---------------------------------------------------------------------------------


_INSERT = """
INSERT INTO agent_requests (host_id, request, params, requested_by)
SELECT h.id, $2, $3, $4 FROM hosts h WHERE h.id = ANY($1::bigint[])
ORDER BY h.id
RETURNING id, host_id
"""


async def _create(pool, host_ids: list[int], request: str, params: dict, requested_by: str | None) -> list:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_INSERT, host_ids, request, params, requested_by)
        await _notify_hosts(conn, [r["host_id"] for r in rows])
    return rows


async def create(pool, host_ids: list[int], request: str, params: dict, requested_by: str | None) -> list[int]:
    """One new request per existing host of `host_ids`; returns their ids (hosts that do not exist get none)."""
    return [r["id"] for r in await _create(pool, host_ids, request, params, requested_by)]


async def create_one(pool, host_id: int, request: str, params: dict, requested_by: str | None) -> dict:
    """A request to one host, as the API shows it."""
    ids = await create(pool, [host_id], request, params, requested_by)
    if not ids:
        raise NotFound(f"Host #{host_id} does not exist.")
    return await get(pool, ids[0])


async def create_many(pool, request: str, params: dict, requested_by: str | None, *, host_ids: list[int] | None,
                      filters: dict | None, limit: int) -> list[tuple[int, int]]:
    """The same request to each host of `host_ids` that exists, or to every host matching `filters`
    (the fleet filters, app/hosts/queries.py selection_where). Returns (request id, host id) of each made."""
    if host_ids is None:
        host_ids = await queries.matching_host_ids(pool, filters or {}, limit)
    return [(r["id"], r["host_id"]) for r in await _create(pool, host_ids, request, params, requested_by)]


async def create_for_profile(conn, profile: str, requested_by: str | None) -> int:
    """update-profile to every connected host of the profile that has none waiting (in the caller's
    transaction: the profile's change and these requests commit together). Returns how many."""
    rows = await conn.fetch(
        "INSERT INTO agent_requests (host_id, request, requested_by)"
        " SELECT h.id, $2, $3 FROM hosts h JOIN agent_sessions s ON s.host_id = h.id"
        " WHERE h.profile = $1 AND NOT EXISTS (SELECT 1 FROM agent_requests w WHERE w.host_id = h.id"
        "  AND w.request = $2 AND w.status = 'new')"
        " ORDER BY h.id RETURNING host_id",
        profile, protocol.UPDATE_PROFILE, requested_by,
    )
    await _notify_hosts(conn, [r["host_id"] for r in rows])
    return len(rows)


# --- new → sent, and back -------------------------------------------------------------------------

# The next request of each host: its oldest new one, of the hosts whose socket this process holds. Three
# statements, each with one plan whatever the statistics: joined with the hosts in flight in one statement,
# the planner (with a generic plan, or a table it believes empty) could nest the whole selection inside the
# update, a cost quadratic in the number of hosts.
_OLDEST_NEW = """
SELECT DISTINCT ON (r.host_id) r.id, r.host_id
FROM agent_requests r JOIN agent_sessions s ON s.host_id = r.host_id
WHERE r.status = 'new' AND s.server_id = $1{hosts}
ORDER BY r.host_id, r.id
"""
_OLDEST_NEW_OF_ALL = _OLDEST_NEW.format(hosts="")
_OLDEST_NEW_OF = _OLDEST_NEW.format(hosts=" AND r.host_id = ANY($2::bigint[])")
_IN_FLIGHT = "SELECT host_id FROM agent_requests WHERE status IN ('sent', 'running') AND host_id = ANY($1::bigint[])"
_SEND = f"""
UPDATE agent_requests SET status = 'sent', sent_at = now(), updated_at = now(), info = '{SENT_INFO}'
WHERE id = ANY($1::bigint[]) AND status = 'new'
RETURNING id, host_id, request, params
"""


async def send_next(pool, server_id: str, host_ids: list[int] | None) -> list[Outgoing]:
    """Mark sent the next request of each given host (None: every host) whose socket `server_id` holds,
    unless it has one in flight.

    Returns nothing rather than fail when another process sent one of them at the same moment (a host
    that just moved to another process): the caller looks again later."""
    async with pool.acquire() as conn:
        if host_ids is None:
            oldest = await conn.fetch(_OLDEST_NEW_OF_ALL, server_id)
        else:
            oldest = await conn.fetch(_OLDEST_NEW_OF, server_id, host_ids)
        if not oldest:
            return []
        busy = {r["host_id"] for r in await conn.fetch(_IN_FLIGHT, [r["host_id"] for r in oldest])}
        ids = [r["id"] for r in oldest if r["host_id"] not in busy]
        if not ids:
            return []
        try:
            rows = await conn.fetch(_SEND, ids)
        except asyncpg.UniqueViolationError:
            return []
    return [Outgoing(r["id"], r["host_id"], r["request"], r["params"]) for r in rows]


async def unsend(pool, request_id: int) -> None:
    """The frame never left (the socket had gone): the request waits again."""
    await pool.execute(
        "UPDATE agent_requests SET status = 'new', sent_at = NULL, info = NULL, updated_at = now()"
        " WHERE id = $1 AND status = 'sent'", request_id)


# --- the agent's responses ------------------------------------------------------------------------


async def apply(pool, host_id: int, response: protocol.Response) -> bool:
    """Apply a response of `host_id`'s agent to its own request. True when the request is over and its
    host free for the next one."""
    if response.request_id is None or response.status is None:
        return False
    if response.status == RUNNING:
        await pool.execute(
            "UPDATE agent_requests SET status = 'running', started_at = now(), info = NULL, updated_at = now()"
            " WHERE id = $1 AND host_id = $2 AND status = 'sent'", response.request_id, host_id)
        return False
    if response.status == "unknown":
        await pool.execute(
            "UPDATE agent_requests SET log = coalesce($3, log), info = $4, updated_at = now()"
            " WHERE id = $1 AND host_id = $2 AND status IN ('sent', 'running')",
            response.request_id, host_id, response.log, UNKNOWN_INFO)
        return False
    done = await pool.fetchval(
        "UPDATE agent_requests SET status = $3, summary = $4, log = coalesce($5, log), error = $6, info = NULL,"
        " timed_out = false, finished_at = now(), updated_at = now()"
        " WHERE id = $1 AND host_id = $2 AND (status IN ('sent', 'running') OR timed_out)"
        " RETURNING 1",
        response.request_id, host_id, response.status, response.summary, response.log, response.error)
    return bool(done)


# --- new → canceled ---------------------------------------------------------------------------------


async def cancel(pool, request_id: int, by: str | None) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT status FROM agent_requests WHERE id = $1 FOR UPDATE", request_id)
        if row is None:
            raise NotFound(f"Request #{request_id} does not exist.")
        if row["status"] != NEW:
            raise Conflict(f"Request #{request_id} is {row['status']}: only a request not sent yet can be canceled",
                           status_now=row["status"])
        await conn.execute(
            "UPDATE agent_requests SET status = 'canceled', finished_at = now(), updated_at = now(), info = $2"
            " WHERE id = $1", request_id, f"Canceled by {by}" if by else "Canceled")
    return await get(pool, request_id)


# --- time limits (the workers' cron) ----------------------------------------------------------------

_LOST = f"status = 'failed', timed_out = true, finished_at = now(), updated_at = now(), info = '{LOST_INFO}'"


async def expire(pool, ttl: float, sent_seconds: float, running_seconds: float) -> dict:
    """Fail the requests whose time is up: new ones whose host stayed away for `ttl` seconds, sent ones
    never started, running ones never finished. Returns the counts."""
    async with pool.acquire() as conn, conn.transaction():
        offline = await conn.fetch(
            "UPDATE agent_requests r SET status = 'failed', finished_at = now(), updated_at = now(),"
            " info = 'Host not connected: its agent did not connect within ' || $1::int || ' s of the request'"
            " WHERE r.status = 'new' AND r.created_at < now() - make_interval(secs => $1)"
            " AND NOT EXISTS (SELECT 1 FROM agent_sessions s WHERE s.host_id = r.host_id)"
            " RETURNING r.host_id", float(ttl))
        unanswered = await conn.fetch(
            "UPDATE agent_requests SET status = 'failed', timed_out = true, finished_at = now(), updated_at = now(),"
            " info = 'No answer: the agent did not start the request within ' || $1::int || ' s'"
            " WHERE status = 'sent' AND sent_at < now() - make_interval(secs => $1)"
            " RETURNING host_id", float(sent_seconds))
        lost = await conn.fetch(
            "UPDATE agent_requests SET status = 'failed', timed_out = true, finished_at = now(), updated_at = now(),"
            " info = 'Lost while running: no result within ' || $1::int || ' s'"
            " WHERE status = 'running' AND started_at < now() - make_interval(secs => $1)"
            " RETURNING host_id", float(running_seconds))
        lost += await conn.fetch(
            f"UPDATE agent_requests SET {_LOST}"
            " WHERE status IN ('sent', 'running') AND info = $1 AND updated_at < now() - make_interval(secs => $2)"
            " RETURNING host_id", UNKNOWN_INFO, float(sent_seconds))
        # Their hosts are free for their next request.
        await _notify_hosts(conn, [r["host_id"] for r in unanswered + lost])
    return {"offline": len(offline), "unanswered": len(unanswered), "lost": len(lost)}


async def lost_on_reconnect(pool, host_id: int) -> int:
    """The host's agent authenticated again: a request it reported unknown is lost for certain now."""
    return len(await pool.fetch(
        f"UPDATE agent_requests SET {_LOST} WHERE host_id = $1 AND status IN ('sent', 'running') AND info = $2"
        " RETURNING id", host_id, UNKNOWN_INFO))


# --- reads ----------------------------------------------------------------------------------------

_COLUMNS = """id, host_id, request, params, status, info, error, requested_by, timed_out,
    created_at, sent_at, started_at, finished_at"""


def wire(row) -> dict:
    """A request as the API shows it (Summary and Log when read alone, Has_log in listings)."""
    out = {"Id": row["id"], "Host_id": row["host_id"], "Request": row["request"], "Params": row["params"],
           "Status": row["status"], "Info": row["info"], "Error": row["error"], "Requested_by": row["requested_by"],
           "Timed_out": row["timed_out"], "Created": iso(row["created_at"]), "Sent": iso(row["sent_at"]),
           "Started": iso(row["started_at"]), "Finished": iso(row["finished_at"])}
    if "log" in row:
        out.update(Summary=row["summary"], Log=row["log"])
    if "has_log" in row:
        out["Has_log"] = row["has_log"]
    return out


async def get(pool, request_id: int) -> dict:
    """One request as the API shows it, with its summary and log."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS}, summary, log FROM agent_requests WHERE id = $1", request_id)
    if row is None:
        raise NotFound(f"Request #{request_id} does not exist.")
    return wire(row)


async def for_host(pool, host_id: int, page: int, per_page: int) -> tuple[list[dict], int]:
    """A host's requests as the API shows them, newest first (without logs and summaries), and how many it has."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS}, log IS NOT NULL AS has_log, count(*) OVER () AS _total FROM agent_requests"
        " WHERE host_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3", host_id, per_page, (page - 1) * per_page)
    if rows:
        return [wire(r) for r in rows], rows[0]["_total"]
    if not await queries.host_exists(pool, host_id):
        raise NotFound(f"Host #{host_id} does not exist.")
    return [], await pool.fetchval("SELECT count(*) FROM agent_requests WHERE host_id = $1", host_id)
