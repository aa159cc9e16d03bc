"""The fleet questions as they were answered on schema 016 (host_packages): the reference answers of
the migration test (test_store_migration.py). A copy of app/hosts/queries.py before sql/017."""
from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

# A host row as /hosts/ returns it: Repomanager's keys, never the credentials.
HOST_COLUMNS = """
    h.id AS "Id", h.ip AS "Ip", h.hostname AS "Hostname", h.os AS "Os", h.os_version AS "Os_version",
    h.os_family AS "Os_family", h.cpu AS "Cpu", h.ram AS "Ram", h.network::text AS "Network",
    h.kernel AS "Kernel", h.arch AS "Arch", h.type AS "Type", h.profile AS "Profile", h.env AS "Env",
    h.agent_status AS "Online_status", to_char(h.agent_status_at, 'YYYY-MM-DD') AS "Online_status_date",
    to_char(h.agent_status_at, 'HH24:MI:SS') AS "Online_status_time",
    CASE h.reboot_required WHEN true THEN 'true' WHEN false THEN 'false' END AS "Reboot_required",
    h.boot_time::text AS "Uptime", h.agent_version AS "Linupdate_version", h.agent_version AS "Agent_version",
    to_char(h.last_seen_at, 'YYYY-MM-DD HH24:MI:SS') AS "Last_seen", h.available_count AS "Available_updates",
    EXISTS (SELECT 1 FROM agent_sessions s WHERE s.host_id = h.id) AS "Agent_connected",
    (SELECT to_char(s.connected_at, 'YYYY-MM-DD HH24:MI:SS') FROM agent_sessions s WHERE s.host_id = h.id)
        AS "Agent_connected_since"
"""
# The host's agent holds a socket open on /ws (app/agents/): a session row, gone when the socket closes
# or its server process stops beating.
AGENT_CONNECTED = "EXISTS (SELECT 1 FROM agent_sessions s WHERE s.host_id = h.id)"

# A host with this many available updates or more is outdated; fewer is up to date (no overlap).
OUTDATED_THRESHOLD = 1

NAME_RE = re.compile(r"^[A-Za-z0-9.+_~:*-]{1,255}$")


@dataclass(frozen=True)
class Page:
    """page from 1; None = everything (the reference's behaviour, kept for old clients)."""

    page: int | None = None
    per_page: int | None = None

    @property
    def paginated(self) -> bool:
        return self.per_page is not None

    def sql(self, nargs: int) -> tuple[str, list]:
        if not self.paginated:
            return "", []
        return f" LIMIT ${nargs + 1} OFFSET ${nargs + 2}", [self.per_page, (self.page - 1) * self.per_page]


async def fetch_page(pool, sql: str, args: list, page: Page) -> tuple[list[dict], int | None]:
    """Run `sql` (which selects count(*) OVER () AS _total) with the page's LIMIT/OFFSET."""
    tail, extra = page.sql(len(args))
    rows = await pool.fetch(sql + tail, *args, *extra)
    total = rows[0]["_total"] if rows else None
    if total is None and page.paginated and page.page > 1:
        total = await pool.fetchval(f"SELECT count(*) FROM ({sql}) q", *args)
    items = [{k: v for k, v in r.items() if k != "_total"} for r in rows]
    return items, (total if total is not None else len(items))


# --- hosts ---------------------------------------------------------------------------------------

HOST_FILTERS = {
    "os": "h.os = $1",
    "os_version": "h.os = $1 AND h.os_version = $2",
    "kernel": "h.kernel = $1",
    "arch": "h.arch = $1",
    "profile": "h.profile = $1",
    "environment": "h.env = $1",
    "connected": AGENT_CONNECTED,
    "disconnected": f"NOT {AGENT_CONNECTED}",
}


async def list_hosts(pool, page: Page, filter_name: str | None = None, args: tuple = ()) -> tuple[list[dict], int]:
    where = f"WHERE {HOST_FILTERS[filter_name]}" if filter_name else ""
    order = "h.hostname" if filter_name else "h.id"
    sql = f"SELECT {HOST_COLUMNS}, count(*) OVER () AS _total FROM hosts h {where} ORDER BY {order}"
    return await fetch_page(pool, sql, list(args), page)


# Filters of a selection of hosts (a request to many hosts, the dashboard's fleet search): key -> column
# compared with the value.
SELECTION_COLUMNS = {"profile": "h.profile", "env": "h.env", "os": "h.os", "os_version": "h.os_version",
                     "kernel": "h.kernel", "arch": "h.arch"}
# Yes/no filters: key -> the condition for yes (no is its negation).
SELECTION_FLAGS = {
    "reboot": "h.reboot_required IS TRUE",
    "connected": AGENT_CONNECTED,
    # A host registered today that has not reported yet is not "unseen for a day".
    "stale": "coalesce(h.last_seen_at, h.registered_at) < now() - interval '1 day'",
}


def selection_where(filters: dict, args: list) -> str:
    """The SQL condition on `h` (hosts) for every filter given, its values appended to `args`:
    - the columns of SELECTION_COLUMNS, exact;
    - `outdated` (true/false, as /hosts/outdated and /hosts/uptodate), the flags of SELECTION_FLAGS;
    - `name`: hostname (any case) or IP starting with it, `*` a wildcard;
    - `package` (and `version`): hosts with a matching package installed, matched as
      /hosts/package/<name>/<version> does (prefix, `*` wildcard; exact with `strict_name` / `strict_version`).
    No filter: every host."""
    conds = []
    for key, column in SELECTION_COLUMNS.items():
        if filters.get(key) is not None:
            args.append(filters[key])
            conds.append(f"{column} = ${len(args)}")
    if filters.get("outdated") is not None:
        args.append(OUTDATED_THRESHOLD)
        conds.append(f"h.available_count {'>=' if filters['outdated'] else '<'} ${len(args)}")
    for key, cond in SELECTION_FLAGS.items():
        if filters.get(key) is not None:
            conds.append(cond if filters[key] else f"NOT ({cond})")
    if filters.get("name"):
        # Served by the hosts_hostname_prefix / hosts_ip_prefix indexes (sql/006).
        pattern = _like_escape(filters["name"].lower()).replace("*", "%") + "%"
        args.append(pattern)
        conds.append(f"(lower(h.hostname) LIKE ${len(args)} OR h.ip LIKE ${len(args)})")
    if filters.get("package"):
        cond = package_match(filters["package"], filters.get("version"), args,
                             strict_name=bool(filters.get("strict_name")),
                             strict_version=bool(filters.get("strict_version")))
        conds.append(f"EXISTS (SELECT 1 FROM host_packages p WHERE p.host_id = h.id AND {cond})")
    return " AND ".join(conds) or "true"


async def matching_host_ids(pool, filters: dict, limit: int) -> list[int]:
    """Ids of the hosts that match every filter given (selection_where). At most `limit` ids, lowest first."""
    args: list = []
    where = selection_where(filters, args)
    args.append(limit)
    rows = await _fetch_custom(pool, f"SELECT h.id FROM hosts h WHERE {where} ORDER BY h.id LIMIT ${len(args)}", args)
    return [r["id"] for r in rows]


async def search_hosts(pool, filters: dict, page: Page, packages_shown: int = 20) -> tuple[list[dict], int]:
    """One page of the hosts matching every filter (selection_where), by hostname, as /hosts/ shows them,
    with `packages` ({name[:arch]: version}, the first `packages_shown` matching ones by name) when a
    package is searched; and the total.

    One statement. The page is walked in hostname order (its index), each host checked as it comes, so a
    page costs its own rows, not a sort of every match; the total is counted beside it, the way
    hosts_with_package counts (one probe per host)."""
    args: list = []
    where = selection_where(filters, args)
    packages, lateral = "NULL::json AS packages", ""
    if filters.get("package"):
        cond = package_match(filters["package"], filters.get("version"), args,
                             strict_name=bool(filters.get("strict_name")),
                             strict_version=bool(filters.get("strict_version")))
        args.append(packages_shown)
        packages = "pk.packages"
        lateral = (f"LEFT JOIN LATERAL (SELECT {_PACKAGES_JSON} FROM (SELECT p.name, p.arch, p.version FROM host_packages p"
                   f" WHERE p.host_id = h.id AND {cond} ORDER BY p.name, p.arch LIMIT ${len(args)}) p) pk ON true")
    tail, extra = page.sql(len(args))
    # The count's row always comes back (LEFT JOIN), so a page past the end still gives the total.
    sql = f"""
        WITH found AS (SELECT h.id, h.hostname FROM hosts h WHERE {where} ORDER BY h.hostname{tail}),
             total AS (SELECT count(*) AS n FROM hosts h WHERE {where})
        SELECT total.n AS _total, rows.* FROM total LEFT JOIN (
            SELECT {HOST_COLUMNS}, {packages}, found.hostname AS _order
            FROM found JOIN hosts h ON h.id = found.id {lateral}
        ) rows ON true
        ORDER BY rows._order
    """
    rows = await _fetch_custom(pool, sql, [*args, *extra])
    total = rows[0]["_total"] if rows else 0
    return [{k: v for k, v in r.items() if k not in ("_total", "_order")} for r in rows if r["Id"] is not None], total


async def get_host(pool, host_id: int) -> dict | None:
    row = await pool.fetchrow(f"SELECT {HOST_COLUMNS} FROM hosts h WHERE h.id = $1", host_id)
    return dict(row) if row else None


async def host_exists(pool, host_id: int) -> bool:
    return bool(await pool.fetchval("SELECT 1 FROM hosts WHERE id = $1", host_id))


async def installed(pool, host_id: int, page: Page) -> tuple[list[dict], int]:
    sql = """
        SELECT name AS "Name", arch AS "Arch", version AS "Version", state AS "State", 'package' AS "Type",
               to_char(since, 'YYYY-MM-DD') AS "Date", to_char(since, 'HH24:MI:SS') AS "Time",
               count(*) OVER () AS _total
        FROM host_packages WHERE host_id = $1 ORDER BY name, arch
    """
    return await fetch_page(pool, sql, [host_id], page)


AVAILABLE_SQL = """
    SELECT a.name AS "Name", a.arch AS "Arch", p.version AS "Current_version", a.version AS "Version",
           a.repository AS "Repository", a.security AS "Security", count(*) OVER () AS _total
    FROM host_available a
    LEFT JOIN host_packages p ON p.host_id = a.host_id AND p.name = a.name AND p.arch = a.arch
    WHERE a.host_id = $1 ORDER BY a.name, a.arch
"""


async def available(pool, host_id: int, page: Page) -> tuple[list[dict], int]:
    return await fetch_page(pool, AVAILABLE_SQL, [host_id], page)


async def history(pool, host_id: int, page: Page) -> tuple[list[dict], int]:
    """Inventory changes and package events of a host, newest first."""
    sql = """
        SELECT item, count(*) OVER () AS _total FROM (
            SELECT at, 1 AS k, id, jsonb_build_object(
                'Type', change, 'Name', name, 'Arch', arch, 'Previous_version', old_version,
                'Version', new_version, 'Date', to_char(at, 'YYYY-MM-DD'), 'Time', to_char(at, 'HH24:MI:SS')
            ) AS item
            FROM host_history WHERE host_id = $1
            UNION ALL
            SELECT (date_start + time_start) AT TIME ZONE 'UTC', 0, id, jsonb_build_object(
                'Type', 'event', 'Id', id, 'Date', to_char(date_start, 'YYYY-MM-DD'), 'Time', time_start::text,
                'Date_end', to_char(date_end, 'YYYY-MM-DD'), 'Time_end', time_end::text, 'Command', command,
                'Packages', packages
            )
            FROM host_events WHERE host_id = $1
        ) x ORDER BY at DESC, k DESC, id DESC
    """
    items, total = await fetch_page(pool, sql, [host_id], page)
    return [i["item"] for i in items], total


# --- packages across the fleet -------------------------------------------------------------------


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _next_prefix(prefix: str) -> str:
    """Smallest string greater than every string starting with prefix (C collation, byte order)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _match(column: str, value: str, strict: bool, args: list) -> str:
    """SQL condition for a name/version: exact, or prefix (default); `*` is a wildcard in both."""
    if "*" not in value:
        args.append(value)
        if strict:
            return f"{column} = ${len(args)}"
        # A range, not LIKE $n: the generic plan of a prepared LIKE cannot use the index.
        args.append(_next_prefix(value))
        return f"({column} >= ${len(args) - 1} AND {column} < ${len(args)})"
    literal = value.split("*", 1)[0]
    pattern = "%".join(_like_escape(part) for part in value.split("*")) + ("" if strict else "%")
    args.append(pattern)
    cond = f"{column} LIKE ${len(args)} ESCAPE '\\'"
    if literal:
        args += [literal, _next_prefix(literal)]
        cond += f" AND {column} >= ${len(args) - 1} AND {column} < ${len(args)}"
    return cond


def _version_match(value: str, strict: bool, args: list) -> str:
    # Versions are filtered among the rows found by name: LIKE is fine here.
    if strict and "*" not in value:
        args.append(value)
        return f"p.version = ${len(args)}"
    args.append("%".join(_like_escape(part) for part in value.split("*")) + ("" if strict else "%"))
    return f"p.version LIKE ${len(args)} ESCAPE '\\'"


SEARCH_WORK_MEM = "32MB"
# A host's matching packages as {"name[:arch]": version}.
_PACKAGES_JSON = ("json_object_agg(CASE WHEN p.arch = '' THEN p.name ELSE p.name || ':' || p.arch END, p.version)"
                  " AS packages")


def package_match(name: str, version: str | None, args: list, *, strict_name: bool, strict_version: bool) -> str:
    """The condition on `p` (host_packages) for a package name and version, as /hosts/package/ matches them."""
    where = [_match("p.name", name, strict_name, args)]
    if version:
        where.append(_version_match(version, strict_version, args))
    return " AND ".join(where)


async def _fetch_custom(pool, sql: str, args: list):
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        # A plan for these values, not the prepared statement's generic one: a name or prefix matches
        # anything from no row to most of the table (`lib`), and one plan cannot serve both.
        # And work_mem: a broad prefix aggregates and sorts megabytes, in memory rather than in
        # temporary files as with the default 4 MB. Both settings in one round trip.
        await conn.execute(f"SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL work_mem = '{SEARCH_WORK_MEM}'")
        return await conn.fetch(sql, *args)


async def hosts_with_package(
    pool, name: str, version: str | None, *, strict_name: bool, strict_version: bool, page: Page
) -> tuple[orjson.Fragment, int]:
    """Hosts with matching packages, as [{id, hostname, packages: {name: version}}] ordered by hostname.

    PostgreSQL builds the JSON text of the whole answer (10,000 hosts in one round trip, no
    per-row decoding in Python); it is embedded as is in the envelope.
    """
    args: list = []
    cond = package_match(name, version, args, strict_name=strict_name, strict_version=strict_version)
    tail, extra = page.sql(len(args))
    packages = _PACKAGES_JSON
    # JSON text put together here: cheaper than json_build_object + json_agg over many hosts.
    results = ("'[' || coalesce(string_agg('{\"id\":' || id || ',\"hostname\":' || to_json(hostname)::text"
               " || ',\"packages\":' || packages::text || '}', ',' ORDER BY hostname), '') || ']' AS results")
    if page.paginated:
        # The page's hosts walked in hostname order, each checked with one probe of the primary key
        # (host_id, name, ...), until the page is full; the total counts the hosts the same way. A
        # prefix matching 200,000 rows then costs at most one probe per host, not a DISTINCT over
        # every matching row (PostgreSQL turns the EXISTS into a join when few rows match).
        exists = f"EXISTS (SELECT 1 FROM host_packages p WHERE p.host_id = h.id AND {cond})"
        # The packages per page host (LATERAL): a join could be planned as a scan of every matching
        # row; and gathered in the same row as the host, not joined back to it (a join back would
        # read the page's packages again for every page host).
        sql = f"""
            WITH page AS (
                SELECT h.id, h.hostname FROM hosts h WHERE {exists} ORDER BY h.hostname{tail}
            )
            SELECT {results}, (SELECT count(*) FROM hosts h WHERE {exists}) AS total
            FROM page, LATERAL (SELECT {packages} FROM host_packages p WHERE p.host_id = page.id AND {cond}) pk
        """
    else:
        # Every matching row is returned, so count(*) is the total, and the rows are sorted once
        # (by the aggregate). Per host first (the name index yields rows grouped by host for one
        # name), then join hosts.
        sql = f"""
            WITH pk AS (
                SELECT p.host_id, {packages} FROM host_packages p WHERE {cond} GROUP BY p.host_id
            ), found AS (
                SELECT h.id, h.hostname, pk.packages FROM pk JOIN hosts h ON h.id = pk.host_id
            )
            SELECT {results}, count(*) AS total FROM found
        """
    row = (await _fetch_custom(pool, sql, [*args, *extra]))[0]
    return orjson.Fragment(row["results"].encode()), row["total"]


# --- up to date / outdated -----------------------------------------------------------------------


def _updates_sql(outdated: bool) -> str:
    extra = (
        ', h.os_version AS "Os_version", h.kernel AS "Kernel", h.arch AS "Arch", h.type AS "Type",'
        ' h.profile AS "Profile", h.env AS "Env"'
        if outdated else ""
    )
    cond = "h.available_count >= $1" if outdated else "h.available_count < $1"
    return f"""
        SELECT h.id AS "Id", h.hostname AS "Hostname", h.ip AS "Ip", h.os AS "Os", h.os_family AS "Os_family"{extra},
               jsonb_build_object('Total', h.available_count, 'Packages', coalesce((
                   SELECT jsonb_agg(jsonb_build_object(
                       'Name', a.name, 'Arch', a.arch, 'Current_version', p.version, 'Version', a.version,
                       'Repository', a.repository, 'Security', a.security) ORDER BY a.name, a.arch)
                   FROM host_available a
                   LEFT JOIN host_packages p ON p.host_id = a.host_id AND p.name = a.name AND p.arch = a.arch
                   WHERE a.host_id = h.id), '[]'::jsonb)) AS "Available_updates",
               count(*) OVER () AS _total
        FROM hosts h WHERE {cond} ORDER BY h.hostname
    """


async def hosts_by_updates(pool, outdated: bool, page: Page, threshold: int = OUTDATED_THRESHOLD):
    return await fetch_page(pool, _updates_sql(outdated), [threshold], page)
