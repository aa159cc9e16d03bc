"""Fleet and host pages: fleet figures, the host list, one host's status, inventory and history.

Only `hosts (id, hostname, ip, registered_at)` is certain (sql/002_hosts.sql core); the reporting
columns and the inventory tables are named in the constants below, so they are easy to adjust. A
host's own columns are read as `to_jsonb(h)`, so a new column shows up without a code change.
"""
from __future__ import annotations

import logging

from app.dashboard.queries import MISSING_SCHEMA, Page, fetch_page, like_pattern

log = logging.getLogger(__name__)

# Names in the fleet schema (sql/002_hosts.sql); adjust here when it changes.
OS, OS_VERSION, REBOOT, LAST_SEEN = "os", "os_version", "reboot_required", "last_seen_at"
INSTALLED = "host_packages"        # (host_id, name, version, state, ...)
AVAILABLE = "host_updates"         # (host_id, name, version, repository, ...)
HISTORY = "host_package_history"   # (host_id, name, version, state/action, at, ...)
EVENTS = "host_events"             # (host_id, command, date/time, ...)
REPORTS = "host_reports"           # (host_id, received_at, ...) for the chart

# Filters of the host list (name -> SQL condition on `h`).
FILTERS = {
    "outdated": f"EXISTS (SELECT 1 FROM {AVAILABLE} a WHERE a.host_id = h.id)",
    "reboot": f"h.{REBOOT} IS TRUE",
    "stale": f"(h.{LAST_SEEN} IS NULL OR h.{LAST_SEEN} < now() - interval '1 day')",
}
_HIDDEN = "ARRAY['token_digest', 'token', 'auth_id']::text[]"  # credentials: never rendered, even hashed


async def summary(pool) -> dict:
    """Fleet figures: total, by OS and version, outdated, reboot required, not seen for a day."""
    out: dict = {"total": await pool.fetchval("SELECT count(*) FROM hosts"), "available": True}
    try:
        out["by_os"] = [
            dict(r)
            for r in await pool.fetch(
                f"SELECT coalesce({OS}, '?') AS os, coalesce({OS_VERSION}, '?') AS version, count(*) AS hosts"
                " FROM hosts GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 50"
            )
        ]
        out["reboot"] = await pool.fetchval(f"SELECT count(*) FROM hosts h WHERE {FILTERS['reboot']}")
        out["stale"] = await pool.fetchval(f"SELECT count(*) FROM hosts h WHERE {FILTERS['stale']}")
        out["outdated"] = await pool.fetchval(f"SELECT count(DISTINCT host_id) FROM {AVAILABLE}")
    except MISSING_SCHEMA as exc:
        log.info("fleet figures not available yet: %s", exc)
        out["available"] = False
    return out


async def list_hosts(pool, q: str = "", flt: str = "", page: int = 1, per_page: int = 50) -> tuple[Page, str | None]:
    """(page of hosts, error) — error names a filter the schema cannot answer yet."""
    where, args = [], []
    if q:
        args.append(like_pattern(q))
        where.append(f"(h.hostname ILIKE ${len(args)} OR h.ip ILIKE ${len(args)})")
    if flt in FILTERS:
        where.append(FILTERS[flt])
    sql = f"SELECT h.id, h.hostname, h.ip, to_jsonb(h) - {_HIDDEN} AS doc FROM hosts h"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY h.hostname"
    try:
        return await fetch_page(pool, sql, *args, page=page, per_page=per_page), None
    except MISSING_SCHEMA as exc:
        return Page([], page, per_page, False), f"This filter is not available yet ({exc})"


async def get_host(pool, host_id: int):
    return await pool.fetchrow(f"SELECT h.id, h.hostname, h.ip, to_jsonb(h) - {_HIDDEN} AS doc FROM hosts h WHERE h.id = $1", host_id)


async def _host_rows(pool, table: str, host_id: int, order: str, q: str, page: int, per_page: int, search_col: str = "name"):
    sql = f"SELECT to_jsonb(t) - 'host_id' AS doc FROM {table} t WHERE t.host_id = $1"
    args: list = [host_id]
    if q:
        sql += f" AND t.{search_col} ILIKE $2"
        args.append(like_pattern(q))
    sql += f" ORDER BY {order}"
    try:
        return await fetch_page(pool, sql, *args, page=page, per_page=per_page)
    except MISSING_SCHEMA as exc:
        log.info("host table %s not available yet: %s", table, exc)
        return None


async def inventory(pool, host_id: int, q: str = "", page: int = 1, per_page: int = 50):
    return await _host_rows(pool, INSTALLED, host_id, "t.name", q, page, per_page)


async def updates(pool, host_id: int, page: int = 1, per_page: int = 100):
    return await _host_rows(pool, AVAILABLE, host_id, "t.name", "", page, per_page)


async def history(pool, host_id: int, page: int = 1, per_page: int = 50):
    return await _host_rows(pool, HISTORY, host_id, "1 DESC", "", page, per_page)


async def events(pool, host_id: int, page: int = 1, per_page: int = 50):
    return await _host_rows(pool, EVENTS, host_id, "1 DESC", "", page, per_page)


async def reports_per_bucket(pool, bucket: str, buckets: int) -> dict | None:
    """Host reports received per minute or hour; None until the fleet schema records them."""
    try:
        rows = await pool.fetch(
            f"""
            SELECT date_trunc($1, received_at) AS t, count(*) AS n FROM {REPORTS}
            WHERE received_at >= date_trunc($1, now()) - ($2 - 1) * ('1 ' || $1)::interval
            GROUP BY 1
            """,
            bucket,
            buckets,
        )
    except MISSING_SCHEMA:
        return None
    return {r["t"]: r["n"] for r in rows}
