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


async def update_status(pool, host_id: int, values: dict) -> list[str]:
    """Apply validated status fields in one statement (so one transaction). Returns the messages."""
    sets, args, messages = ["last_seen_at = now()"], [host_id], []
    columns_done = set()
    for key, column, message in STATUS_FIELDS:
        if key not in values:
            continue
        messages.append(message)
        if column in columns_done:  # agent_version wins over linupdate_version
            continue
        columns_done.add(column)
        args.append(values[key])
        sets.append(f"{column} = ${len(args)}")
        if column == "agent_status":
            sets.append("agent_status_at = now()")
    profile_check = "true"
    if "profile" in values:
        profile_check = f"EXISTS (SELECT 1 FROM profiles WHERE name = ${len(args) + 1})"
        args.append(values["profile"])
    sql = (
        f"UPDATE hosts SET {', '.join(sets)} WHERE id = $1 AND {profile_check}"
        " RETURNING id"
    )
    try:
        updated = await pool.fetchval(sql, *args)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"Hostname update has failed: {values.get('hostname')} is already registered")
    if updated is None:
        if "profile" in values and await pool.fetchval("SELECT id FROM hosts WHERE id = $1", host_id):
            raise Invalid(f"Profile update has failed: profile {values['profile']} does not exist")
        raise NotFound(f"Host #{host_id} does not exist.")
    return messages
