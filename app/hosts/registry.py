"""Host registration, unregistration and status (the agent's general information)."""
from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app import auth
from app.agents import sessions
from app.domain_errors import Conflict, Invalid, NotFound
from app.tasks import rows
from app.tasks.kinds import Kind


@dataclass(frozen=True)
class Registered:
    host_id: int
    auth_id: str
    token: str
    reregistered: bool


async def register(pool, hostname: str, ip: str, *, may_reregister: bool) -> Registered:
    """Create a host with new credentials. An existing hostname gets new credentials (history kept)
    only when the caller may re-register (an admin); its old credentials stop working at once."""
    auth_id, token = auth.new_host_credentials()
    async with pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchval("SELECT id FROM hosts WHERE hostname = $1 FOR UPDATE", hostname)
        if existing is not None:
            if not may_reregister:
                raise Conflict(f"Host {hostname} is already registered")
            await conn.execute(
                "UPDATE hosts SET ip = $2, auth_id = $3, token_digest = $4, registered_at = now(),"
                " agent_status = 'unknown', agent_status_at = now() WHERE id = $1",
                existing, ip, auth_id, auth.digest(token),
            )
            await sessions.host_removed(conn, existing)  # its socket was opened with the old credentials
            return Registered(existing, auth_id, token, True)
        try:
            host_id = await conn.fetchval(
                "INSERT INTO hosts (hostname, ip, auth_id, token_digest) VALUES ($1, $2, $3, $4) RETURNING id",
                hostname, ip, auth_id, auth.digest(token),
            )
        except asyncpg.UniqueViolationError:  # registered concurrently
            raise Conflict(f"Host {hostname} is already registered")
    return Registered(host_id, auth_id, token, False)


async def unregister(pool, host_id: int) -> bool:
    """Delete the host and everything about it (inventory, history, events, pending reports, requests)."""
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval("DELETE FROM hosts WHERE id = $1 RETURNING id", host_id)
        if deleted is not None:
            await sessions.host_removed(conn, host_id)  # its agent's socket is told and closed
        # Its queued diff has nothing left to do.
        await rows.stop_queued(conn, Kind.host_diff.value, f"host:{host_id}", "host unregistered")
    return deleted is not None


async def host_id_by_name(pool, hostname: str) -> int | None:
    return await pool.fetchval("SELECT id FROM hosts WHERE hostname = $1", hostname)


# field -> (column, message); the order is the reference's order of messages.
STATUS_FIELDS = [
    ("hostname", "hostname", "Hostname updated successfully."),
    ("os", "os", "OS updated successfully."),
    ("os_version", "os_version", "OS version updated successfully."),
    ("os_family", "os_family", "OS family updated successfully."),
    ("type", "type", "Virtualization type updated successfully."),
    ("cpu", "cpu", "CPU updated successfully."),
    ("ram", "ram", "RAM updated successfully."),
    ("network", "network", "Network updated successfully."),
    ("kernel", "kernel", "Kernel updated successfully."),
    ("arch", "arch", "Arch updated successfully."),
    ("profile", "profile", "Profile updated successfully."),
    ("env", "env", "Environment updated successfully."),
    ("agent_status", "agent_status", "Agent status updated successfully."),
    ("agent_version", "agent_version", "Agent version updated successfully."),
    ("linupdate_version", "agent_version", "Linupdate version updated successfully."),
    ("reboot_required", "reboot_required", "Reboot status updated successfully."),
    ("uptime", "boot_time", "Uptime updated successfully."),
]


# Each status column's SQL type (the others are text), and its bit in a StatusUpdate's `given` mask.
_STATUS_TYPES = {"network": "jsonb", "reboot_required": "boolean", "boot_time": "float8"}
_STATUS_COLUMNS = list(dict.fromkeys(column for _, column, _ in STATUS_FIELDS))
_PROFILE_BIT = 1 << _STATUS_COLUMNS.index("profile")


@dataclass(frozen=True)
class StatusUpdate:
    """One host's validated status fields, as its columns' values (`given`: a bit per column set)."""

    host_id: int
    given: int
    values: tuple  # one per _STATUS_COLUMNS (None where not given)


@dataclass(frozen=True)
class StatusWritten:
    updated: bool  # False: no such host, or the profile named does not exist


def _status_sql() -> str:
    types = [_STATUS_TYPES.get(c, "text") for c in _STATUS_COLUMNS]
    params = ", ".join(f"${n + 3}::{t}[]" for n, t in enumerate(types))
    names = ", ".join(f'"{c}"' for c in _STATUS_COLUMNS)
    sets = "".join(f',\n    "{c}" = CASE WHEN i.given & {1 << n} <> 0 THEN i."{c}" ELSE h."{c}" END'
                   for n, c in enumerate(_STATUS_COLUMNS))
    status_bit = 1 << _STATUS_COLUMNS.index("agent_status")
    return f"""
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], {params}) AS i(host_id, given, {names})
), locked AS (
    SELECT h.id FROM input i JOIN hosts h ON h.id = i.host_id
    WHERE i.given & {_PROFILE_BIT} = 0 OR EXISTS (SELECT 1 FROM profiles p WHERE p.name = i.profile)
    ORDER BY h.id FOR NO KEY UPDATE OF h
)
UPDATE hosts h SET last_seen_at = now(),
    agent_status_at = CASE WHEN i.given & {status_bit} <> 0 THEN now() ELSE h.agent_status_at END{sets}
FROM input i JOIN locked l ON l.id = i.host_id
WHERE h.id = i.host_id
RETURNING h.id
"""


# In one statement, the status of each host of a group (hosts/intake.py's GroupCommit: at most one per
# host): rows locked in id order, as the report endpoints lock them.
_STATUS_SQL = _status_sql()


async def write_statuses(pool, updates: list[StatusUpdate]) -> dict[int, StatusWritten]:
    updates = sorted(updates, key=lambda u: u.host_id)
    columns = [list(c) for c in zip(*(u.values for u in updates))]
    done = {row["id"] for row in await pool.fetch(_STATUS_SQL, [u.host_id for u in updates],
                                                   [u.given for u in updates], *columns)}
    return {u.host_id: StatusWritten(u.host_id in done) for u in updates}


def status_update(host_id: int, values: dict) -> tuple[StatusUpdate, list[str]]:
    """Validated status fields -> the update of the host's columns, and the messages (the reference's order)."""
    row: list = [None] * len(_STATUS_COLUMNS)
    given, messages = 0, []
    for key, column, message in STATUS_FIELDS:
        if key not in values:
            continue
        messages.append(message)
        n = _STATUS_COLUMNS.index(column)
        if given & (1 << n):  # agent_version wins over linupdate_version
            continue
        given |= 1 << n
        row[n] = values[key]
    return StatusUpdate(host_id, given, tuple(row)), messages


async def update_status(statuses, host_id: int, values: dict) -> list[str]:
    """Apply validated status fields through the process's group commit of statuses (one transaction,
    shared with other hosts' statuses). Returns the messages."""
    update, messages = status_update(host_id, values)
    try:
        written = await statuses.accept(update)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"Hostname update has failed: {values.get('hostname')} is already registered")
    if not written.updated:
        if "profile" in values and await statuses.pool.fetchval("SELECT id FROM hosts WHERE id = $1", host_id):
            raise Invalid(f"Profile update has failed: profile {values['profile']} does not exist")
        raise NotFound(f"Host #{host_id} does not exist.")
    return messages
