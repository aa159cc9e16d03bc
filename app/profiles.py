"""Profiles: the package and service configuration a host pulls (Repomanager's profile tables).

Values are kept as the comma-joined strings linupdate reads. Which repositories a profile gives its
hosts belongs to the repositories side: `profile_repos()` is the one place it plugs in.
"""
from __future__ import annotations

import asyncpg

from app.agents import requests as agent_requests
from app.domain_errors import DomainError

# wire key -> column
FIELDS = {
    "Package_exclude": "package_exclude",
    "Package_exclude_major": "package_exclude_major",
    "Service_reload": "service_reload",
    "Service_restart": "service_restart",
    "Notes": "notes",
}
AGENT_KEYS = ("Package_exclude", "Package_exclude_major", "Service_reload", "Service_restart")
RESERVED_NAMES = {"server-settings"}

_SELECT = (
    'SELECT id AS "Id", name AS "Name", package_exclude AS "Package_exclude",'
    ' package_exclude_major AS "Package_exclude_major", service_reload AS "Service_reload",'
    ' service_restart AS "Service_restart", notes AS "Notes" FROM profiles'
)


class ProfileError(DomainError):
    """A refusal about profiles (404 unknown, 409 name taken)."""


def _missing(name: str) -> ProfileError:
    return ProfileError(f"{name} profile does not exist", status=404)


async def list_profiles(pool) -> list[dict]:
    return [dict(r) for r in await pool.fetch('SELECT name AS "Name" FROM profiles ORDER BY name')]


async def get_profile(pool, name: str) -> dict:
    row = await pool.fetchrow(f"{_SELECT} WHERE name = $1", name)
    if row is None:
        raise _missing(name)
    return dict(row)


async def create_profile(pool, name: str, values: dict) -> dict:
    cols = ["name"] + [FIELDS[k] for k in values]
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    try:
        await pool.execute(
            f"INSERT INTO profiles ({', '.join(cols)}) VALUES ({placeholders})", name, *values.values()
        )
    except asyncpg.UniqueViolationError:
        raise ProfileError(f"Profile {name} already exists", status=409)
    return await get_profile(pool, name)


async def update_profile(pool, name: str, values: dict, new_name: str | None = None) -> dict:
    sets, args = ["updated_at = now()"], [name]
    if new_name is not None and new_name != name:
        args.append(new_name)
        sets.append(f"name = ${len(args)}")
    for key, value in values.items():
        args.append(value)
        sets.append(f"{FIELDS[key]} = ${len(args)}")
    try:
        async with pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(f"UPDATE profiles SET {', '.join(sets)} WHERE name = $1 RETURNING id", *args)
            if found is None:
                raise _missing(name)
            if new_name is not None and new_name != name:
                # Hosts name their profile; keep them attached to the renamed one.
                await conn.execute("UPDATE hosts SET profile = $2 WHERE profile = $1", name, new_name)
            # Its connected hosts' agents reload it now (the others read it when they start).
            await agent_requests.create_for_profile(conn, new_name or name, f"profile:{new_name or name}")
    except asyncpg.UniqueViolationError:
        raise ProfileError(f"Profile {new_name} already exists", status=409)
    return await get_profile(pool, new_name or name)


async def set_profile(pool, name: str, values: dict) -> tuple[dict, bool]:
    """Create or update (the CLI's `profile set`). Returns (profile, created)."""
    try:
        return await create_profile(pool, name, values), True
    except ProfileError as exc:
        if exc.status != 409:
            raise
    return await update_profile(pool, name, values), False


async def delete_profile(pool, name: str) -> None:
    if await pool.fetchval("DELETE FROM profiles WHERE name = $1 RETURNING id", name) is None:
        raise _missing(name)


async def set_repos(pool, name: str, repo_ids: list[int]) -> list:
    """Replace the repositories the profile gives its hosts (in this order); its connected hosts'
    agents reload the profile, as after any other change to it."""
    from app.repos.model import set_profile_repos

    async with pool.acquire() as conn, conn.transaction():
        repos = await set_profile_repos(conn, name, repo_ids)
        await agent_requests.create_for_profile(conn, name, f"profile:{name}")
    return repos


async def profile_repos(pool, profile: dict, base_url: str) -> list[dict]:
    """Repositories a profile gives its hosts, as dicts with the keys
    {name, package_type ('deb'|'rpm'), url (with the literal __ENV__), distribution, component,
     releasever, description, filename_prefix}. The membership lives with the repositories
    (sql/004_profile_repos.sql, app/repos/model.py)."""
    from app.repos.model import profile_repositories

    async with pool.acquire() as conn:
        return await profile_repositories(conn, profile["Id"], base_url)


def new_format(repos: list[dict], settings) -> dict:
    """`/profile/<p>/repos?new-format` (linupdate >= 3.17)."""
    return {
        "repos": [
            {
                "filename_prefix": r.get("filename_prefix", "repomanager-"),
                "name": r["name"],
                "url": r["url"],
                "distribution": r.get("distribution"),
                "component": r.get("component"),
                "releasever": r.get("releasever"),
                "package_type": r.get("package_type"),
                "description": r.get("description") or f"{r['name']} repo on {settings.server_name}",
            }
            for r in repos
        ],
        "reposerver": reposerver(settings),
    }


def reposerver(settings) -> dict:
    return {
        "hostname": settings.server_name,
        "gpgkey_url": f"{settings.base_url}/repo/gpgkeys/{settings.server_name}.pub",
    }


def legacy_format(repos: list[dict], settings) -> list[dict]:
    """The flat list older agents read (`/profile/<p>/repos` without new-format)."""
    server = reposerver(settings)
    out = []
    for r in repos:
        prefix = r.get("filename_prefix", "repomanager-")
        description = r.get("description") or f"{r['name']} repo on {settings.base_url}"
        item = {"description": description, "repo_server": server["hostname"], "repo_name": r["name"]}
        if r.get("package_type") == "rpm":
            item.update(
                filename=f"{prefix}{r['name']}.repo",
                content=(
                    f"[{prefix}{r['name']}___ENV__]\nname={r['name']} repo on {server['hostname']}\n"
                    f"baseurl={r['url']}\nenabled=1\ngpgkey={server['gpgkey_url']}\ngpgcheck=1"
                ),
                repo_releasever=r.get("releasever"),
            )
        else:
            item.update(
                filename=f"{prefix}{r['name']}.list",
                content=f"deb {r['url']} {r.get('distribution')} {r.get('component')}",
                repo_distribution=r.get("distribution"),
                repo_component=r.get("component"),
            )
        item.update(repo_url=r["url"], gpgkey_url=server["gpgkey_url"], filename_prefix=prefix)
        out.append(item)
    return out
