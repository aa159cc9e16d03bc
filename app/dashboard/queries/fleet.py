"""Fleet and host pages: fleet figures, one host's status, inventory and history (the host list is the
fleet search of app/hosts/queries.py).

Tables from sql/002_hosts.sql and 017: hosts (status columns, last_seen_at, available_count kept by
the diff worker), host_sets and package_versions (the inventory: app/hosts/queries.py INVENTORY_SQL),
host_available, host_history, host_events. A host's own columns are
read as `to_jsonb(h)` minus credentials, so a new status column shows up without a code change.
Fleet-wide figures are one aggregate scan of `hosts` each, cached for a few seconds per process
(the overview polls): no index is added on last_seen_at, which every report updates (it would cost
the report hot path its HOT updates).
"""
from __future__ import annotations

import logging

from app.dashboard.queries import MISSING_SCHEMA, cached, fetch_page, prefix_pattern
from app.hosts.queries import INVENTORY_SQL, OUTDATED_THRESHOLD, SELECTION_FLAGS

log = logging.getLogger(__name__)

# The fleet figures' conditions on `h`: the fleet search's own (app/hosts/queries.py), so a figure and
# the hosts its card links to always agree.
FILTERS = {
    "outdated": f"h.available_count >= {OUTDATED_THRESHOLD}",
    "reboot": SELECTION_FLAGS["reboot"],
    "stale": SELECTION_FLAGS["stale"],
}
# Credentials are never rendered, not even hashed; digests are noise.
_HIDDEN = ("ARRAY['token_digest', 'auth_id', 'installed_digest', 'available_digest', 'events_digest',"
           " 'installed_items', 'available_items']::text[]")
async def summary(pool) -> dict:
    """Fleet figures: total, by OS and version, outdated, reboot required, not seen for a day."""

    async def compute():
        try:
            # One scan: the grand total is the () grouping set, the rest are per (os, version).
            rows = await pool.fetch(
                f"""
                SELECT GROUPING(h.os, h.os_version) = 3 AS grand,
                       coalesce(h.os, '?') AS os, coalesce(h.os_version, '?') AS version, count(*) AS hosts,
                       count(*) FILTER (WHERE {FILTERS['outdated']}) AS outdated,
                       count(*) FILTER (WHERE {FILTERS['reboot']}) AS reboot,
                       count(*) FILTER (WHERE {FILTERS['stale']}) AS stale
                FROM hosts h GROUP BY GROUPING SETS ((h.os, h.os_version), ())
                """
            )
        except MISSING_SCHEMA as exc:
            log.info("fleet figures not available yet: %s", exc)
            return {"total": await pool.fetchval("SELECT count(*) FROM hosts"), "available": False}
        grand = next(r for r in rows if r["grand"])
        by_os = sorted((r for r in rows if not r["grand"]), key=lambda r: (-r["hosts"], r["os"], r["version"]))
        return {
            "total": grand["hosts"], "outdated": grand["outdated"], "reboot": grand["reboot"], "stale": grand["stale"],
            "by_os": [{k: r[k] for k in ("os", "version", "hosts", "outdated")} for r in by_os[:50]],
            "available": True,
        }

    return await cached(("summary", id(pool)), compute)


async def get_host(pool, host_id: int):
    return await pool.fetchrow(
        f"SELECT h.id, h.hostname, h.ip, to_jsonb(h) - {_HIDDEN} AS doc FROM hosts h WHERE h.id = $1", host_id
    )


async def _rows(pool, sql: str, *args, page: int, per_page: int):
    try:
        return await fetch_page(pool, sql, *args, page=page, per_page=per_page)
    except MISSING_SCHEMA as exc:
        log.info("host data not available yet: %s", exc)
        return None


async def inventory(pool, host_id: int, q: str = "", page: int = 1, per_page: int = 50):
    sql = f"SELECT name, arch, version, state, since FROM ({INVENTORY_SQL}) p"
    args: list = [host_id]
    if q:
        sql += " WHERE name LIKE $2"
        args.append(prefix_pattern(q))
    return await _rows(pool, sql + " ORDER BY name, arch", *args, page=page, per_page=per_page)


async def updates(pool, host_id: int, page: int = 1, per_page: int = 200):
    return await _rows(
        pool,
        "SELECT a.name, a.arch, a.installed AS current_version, a.version, a.repository, a.security"
        " FROM host_available a WHERE a.host_id = $1 ORDER BY a.security DESC, a.name, a.arch",
        host_id,
        page=page,
        per_page=per_page,
    )


async def history(pool, host_id: int, page: int = 1, per_page: int = 50):
    return await _rows(
        pool,
        "SELECT at, change, name, arch, old_version, new_version FROM host_history"
        " WHERE host_id = $1 ORDER BY at DESC, id DESC",
        host_id,
        page=page,
        per_page=per_page,
    )


async def events(pool, host_id: int, page: int = 1, per_page: int = 20):
    rows = await _rows(
        pool,
        "SELECT id, date_start, time_start, date_end, time_end, command, packages FROM host_events"
        " WHERE host_id = $1 ORDER BY date_start DESC, time_start DESC",
        host_id,
        page=page,
        per_page=per_page,
    )
    if rows is not None:
        rows.rows = [
            {**dict(r), "changes": {k: v for k, v in (r["packages"] or {}).items() if isinstance(v, list) and v}}
            for r in rows.rows
        ]
    return rows
