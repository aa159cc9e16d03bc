"""Profiles pages: each profile with how many hosts use it and how many repositories it hands out, and
the repositories a profile's form offers (tables of sql/002_hosts.sql and sql/004_profile_repos.sql)."""
from __future__ import annotations

# A form offers at most this many repositories (a profile's own always come first).
REPO_CHOICES = 1000


async def list_profiles(pool) -> list:
    return await pool.fetch(
        """
        SELECT p.id, p.name, p.package_exclude, p.package_exclude_major, p.service_reload, p.service_restart,
               p.notes, p.updated_at,
               (SELECT count(*) FROM hosts h WHERE h.profile = p.name) AS hosts,
               (SELECT count(*) FROM profile_repos pr WHERE pr.profile_id = p.id) AS repos
        FROM profiles p ORDER BY p.name
        """
    )


async def hosts_count(pool, name: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM hosts WHERE profile = $1", name)


async def repo_choices(pool, profile_id: int) -> list:
    """Every repository, those the profile hands out first and in its order (`chosen` set), then the
    others by name; `active` says whether it has a snapshot to hand out yet."""
    return await pool.fetch(
        """
        SELECT r.id, r.name, r.type, r.dist, r.section, r.releasever, pr.position IS NOT NULL AS chosen,
               EXISTS (SELECT 1 FROM snapshots s WHERE s.repo_id = r.id AND s.status = 'active') AS active
        FROM repos r LEFT JOIN profile_repos pr ON pr.repo_id = r.id AND pr.profile_id = $1
        ORDER BY pr.position NULLS LAST, r.name, r.id LIMIT $2
        """,
        profile_id,
        REPO_CHOICES,
    )


async def name_of(pool, profile_id: int) -> str | None:
    return await pool.fetchval("SELECT name FROM profiles WHERE id = $1", profile_id)
