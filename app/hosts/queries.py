"""Fleet questions: each one a single SQL query over indexed tables, paginated."""
from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from app.domain_errors import Invalid
from app.hosts import versions
from app.hosts.inventory import POSTING_BUCKET, int_array_text

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
        conds.append(f"h.id IN ({_hosts_having(cond)})")
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
        # The page host's matching entries: its set intersected with the matching entries' ids.
        lateral = (f"LEFT JOIN LATERAL (SELECT {_PACKAGES_JSON} FROM (SELECT p.name, p.arch, p.version"
                   f" FROM host_sets s, package_versions p WHERE s.host_id = h.id AND p.id = ANY(s.ids & (SELECT"
                   f" array_agg(p.id) FROM package_versions p WHERE {cond})) ORDER BY p.name, p.arch"
                   f" LIMIT ${len(args)}) p) pk ON true")
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


# A host's installed packages: its set's entries, each with its state and since: its latest history row
# for (name, arch) if any (added: installed), else inventored at the host's baseline time.
INVENTORY_SQL = """
    SELECT v.name, v.arch, v.version,
           coalesce(CASE WHEN c.change IN ('added', 'removed') THEN 'installed' ELSE c.change END, 'inventored') AS state,
           coalesce(c.at, s.since) AS since
    FROM host_sets s CROSS JOIN LATERAL unnest(s.ids) AS i(id) JOIN package_versions v ON v.id = i.id
    LEFT JOIN (
        SELECT DISTINCT ON (name, arch) name COLLATE "C" AS name, arch COLLATE "C" AS arch, change, at
        FROM host_history WHERE host_id = $1 ORDER BY name, arch, at DESC, id DESC
    ) c ON c.name = v.name AND c.arch = v.arch
    WHERE s.host_id = $1
"""


async def installed(pool, host_id: int, page: Page) -> tuple[list[dict], int]:
    sql = f"""
        SELECT name AS "Name", arch AS "Arch", version AS "Version", state AS "State", 'package' AS "Type",
               to_char(since, 'YYYY-MM-DD') AS "Date", to_char(since, 'HH24:MI:SS') AS "Time",
               count(*) OVER () AS _total
        FROM ({INVENTORY_SQL}) p ORDER BY name, arch
    """
    return await fetch_page(pool, sql, [host_id], page)


AVAILABLE_SQL = """
    SELECT a.name AS "Name", a.arch AS "Arch", a.installed AS "Current_version", a.version AS "Version",
           a.repository AS "Repository", a.security AS "Security", count(*) OVER () AS _total
    FROM host_available a WHERE a.host_id = $1 ORDER BY a.name, a.arch
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
# A host's matching packages (p: package_versions) as {"name[:arch]": version}.
_PACKAGES_JSON = ("json_object_agg(CASE WHEN p.arch = '' THEN p.name ELSE p.name || ':' || p.arch END, p.version)"
                  " AS packages")


def package_match(name: str, version: str | None, args: list, *, strict_name: bool, strict_version: bool) -> str:
    """The condition on `p` (package_versions) for a package name and version, as /hosts/package/ matches them."""
    where = [_match("p.name", name, strict_name, args)]
    if version:
        where.append(_version_match(version, strict_version, args))
    return " AND ".join(where)


def _hosts_having(cond: str) -> str:
    """A subquery: the ids of the hosts that have an entry matching `cond` installed. The dictionary
    first (small, a name range of its unique index), then the union of those entries' posting rows per
    range of hosts (posting_union, sql/025) before their hosts are listed."""
    return ("SELECT unnest(posting_ids(u.bucket, u.hosts)) FROM posting_union"
            f"(ARRAY(SELECT p.id FROM package_versions p WHERE {cond} ORDER BY p.id)) u")


async def _fetch_custom(pool, sql: str, args: list):
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await _custom_plan(conn)
        return await conn.fetch(sql, *args)


async def _custom_plan(conn) -> None:
    """In a fleet question's transaction.

    A plan for these values, not the prepared statement's generic one: a name or prefix matches
    anything from no row to most of the table (`lib`), and one plan cannot serve both.
    And work_mem: a broad prefix aggregates and sorts megabytes, in memory rather than in
    temporary files as with the default 4 MB.
    And no JIT: a broad prefix's estimated cost passes jit_above_cost, and compiling the plan took
    longer than running it.
    And no merge join: a page's sets intersected with the entries are estimated at 10 rows a host
    (unnest of an expression), and the two sorts of a merge join cost more than a hash of the entries."""
    await conn.execute(f"SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL work_mem = '{SEARCH_WORK_MEM}';"
                       " SET LOCAL jit = off; SET LOCAL enable_mergejoin = off")


WHOLE_CHUNK = 4000  # rows of a whole answer read at a time


def _too_large(max_bytes: int) -> Invalid:
    return Invalid(f"The answer is larger than {max_bytes} bytes: ask for it in pages (per_page)",
                   max_answer_bytes=max_bytes)


async def _whole_answer(pool, sql: str, args: list, max_bytes: int | None) -> tuple[orjson.Fragment, int]:
    """The JSON array of the `item` texts `sql` selects (one per host), and their count. Read with a cursor,
    WHOLE_CHUNK rows at a time (each chunk in one list comprehension: iterating the cursor row by row cost
    more than its rows' decoding), and refused (Invalid) once past `max_bytes`, before the whole answer is held."""
    items: list[bytes] = []
    size = 1  # "[" and "]", less the comma counted for the first item
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await _custom_plan(conn)
        cursor = await conn.cursor(sql, *args)
        while rows := await cursor.fetch(WHOLE_CHUNK):
            chunk = [row["item"].encode() for row in rows]
            size += sum(map(len, chunk)) + len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise _too_large(max_bytes)
            items += chunk
    return orjson.Fragment(b"[" + b",".join(items) + b"]"), len(items)


# A whole answer of at most this many entries (a package's versions and architectures, a narrow prefix) is
# put together here from its entries' posting rows (_whole_from_postings); more (a broad prefix: thousands of
# entries, millions of (host, entry) pairs) by PostgreSQL, a cursor's chunk at a time (_whole_answer).
WHOLE_FEW_ENTRIES = 256
# Of a fleet of n hosts, a whole answer of at least n / WHOLE_DENSE of them reads every host in hostname
# order (the index, no sort); fewer are looked up by id and sorted.
WHOLE_DENSE = 3
# A byte of a posting bitmap -> the offsets of its set bits (the first bit is the highest).
_BYTE_BITS = [tuple(k for k in range(8) if v & (0x80 >> k)) for v in range(256)]


async def _whole_from_postings(pool, entries: str, args: list,
                               max_bytes: int | None) -> tuple[orjson.Fragment, int] | None:
    """A whole answer of a few matching entries (`entries`, _ENTRY's columns), as hosts_with_package's
    SQL path gives it, byte for byte; None if more than WHOLE_FEW_ENTRIES match.

    Each host's members come from the entries' posting rows (bitmaps read here: for the fleet's most common
    package, PostgreSQL's unnest of every row's bits, a group per host, a join to hosts and a sort of their
    hostnames took most of the answer's time); then the hosts' names, in PostgreSQL's hostname order (one
    snapshot for both reads), and each host's item made here."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await _custom_plan(conn)
        matching = await conn.fetch(f"SELECT id, member FROM ({entries}) e ORDER BY rank LIMIT {WHOLE_FEW_ENTRIES + 1}",
                                    *args)
        if len(matching) > WHOLE_FEW_ENTRIES:
            return None
        member = {r["id"]: r["member"].encode() for r in matching}
        order = {entry: n for n, entry in enumerate(member)}
        postings = await conn.fetch("SELECT version_id, bucket, hosts FROM package_hosts WHERE version_id = ANY($1::int4[])",
                                    list(member))
        postings.sort(key=lambda r: order[r["version_id"]])
        if max_bytes is not None:  # the members alone past the limit: refused before they are listed
            members_size = sum(int.from_bytes(hosts.bytes).bit_count() * (len(member[entry]) + 1)
                               for entry, _, hosts in postings)
            if members_size > max_bytes:
                raise _too_large(max_bytes)
        # host id -> its members (in rank order: the rows are read in that order)
        found: dict[int, bytes] = {}
        get = found.get
        for entry, bucket, hosts in postings:
            m = member[entry]
            start = bucket * POSTING_BUCKET
            for offset, byte in enumerate(hosts.bytes):
                if byte:
                    first = start + 8 * offset
                    for bit in _BYTE_BITS[byte]:
                        host = first + bit
                        had = get(host)
                        found[host] = m if had is None else had + b"," + m
        if not found:
            return orjson.Fragment(b"[]"), 0
        fleet = await conn.fetchval("SELECT coalesce(max(id), 0) FROM hosts")
        if len(found) * WHOLE_DENSE >= fleet:
            await conn.execute("SET LOCAL enable_sort = off")   # the hostname index's order, not a sort
            hosts = await conn.fetch("SELECT id, hostname FROM hosts ORDER BY hostname")
        else:
            hosts = await conn.fetch("SELECT h.id, h.hostname FROM unnest($1::text::int8[]) AS u(id)"
                                     " JOIN hosts h ON h.id = u.id ORDER BY h.hostname", int_array_text(list(found)))
    items: list[bytes] = []
    size = 1
    dumps = orjson.dumps  # (the same text as PostgreSQL's to_json, escapes and all)
    for host, hostname in hosts:
        packages = get(host)
        if packages is not None:
            item = b'{"id":%d,"hostname":%b,"packages":{%b}}' % (host, dumps(hostname), packages)
            size += len(item) + 1
            if max_bytes is not None and size > max_bytes:
                raise _too_large(max_bytes)
            items.append(item)
    return orjson.Fragment(b"[" + b",".join(items) + b"]"), len(items)


async def hosts_with_package(
    pool, name: str, version: str | None, *, strict_name: bool, strict_version: bool, page: Page,
    older_than: str | None = None, max_bytes: int | None = None,
) -> tuple[orjson.Fragment, int]:
    """Hosts with matching packages, as [{id, hostname, packages: {name: version}}] ordered by hostname.
    With `older_than` (the name then exact): hosts whose installed version of it is older than that, in
    dpkg or rpm order as the host's os_family says (app/hosts/versions.py).

    The matching dictionary entries first (a name range of its unique index: a few rows), then their
    posting rows (package_hosts, a bitmap per range of hosts), joined per range and listed as the set of
    matching hosts, joined with hosts. PostgreSQL builds the JSON text of a whole answer (10,000 hosts in
    one round trip, no per-row decoding in Python); it is embedded as is in the envelope. A page's
    packages are its hosts' sets intersected with the entries (intarray's &, in C), put in order and
    joined here (_page_answer).

    A page reads the page, not every matching host (_PAGE_SQL), unless `older_than` picks different
    entries in dpkg and in rpm order.
    """
    args: list = []
    deb_ids = rpm_ids = None
    if older_than is None:
        cond = package_match(name, version, args, strict_name=strict_name, strict_version=strict_version)
    else:
        deb_ids, rpm_ids = await _older_entries(pool, name, older_than)
        # The same entries older in both orders (the usual case): a host that has one matches, whatever its order.
        cond, args = "p.id = ANY($1::int4[])", [deb_ids]
    if deb_ids == rpm_ids:
        # deb/rpm: whether the entry counts for a host of that order (here: always).
        entries = f"SELECT {_ENTRY}, true AS deb, true AS rpm FROM package_versions p WHERE {cond}"
    else:
        args = [deb_ids + rpm_ids, deb_ids, rpm_ids, sorted(versions.RPM_FAMILIES)]
        entries = (f"SELECT {_ENTRY}, p.id = ANY($2::int4[]) AS deb, p.id = ANY($3::int4[]) AS rpm"
                   " FROM package_versions p WHERE p.id = ANY($1::int4[])")
    tail, extra = page.sql(len(args))
    packages = "'{' || string_agg(e.member, ',' ORDER BY e.rank) || '}' AS packages"
    # A whole answer's JSON text put together here, by host (cheaper than json_build_object + json_agg over
    # many hosts), and joined in Python (all of `lib` at 100,000 hosts would pass PostgreSQL's 1 GB limit on
    # a value).
    item = ("'{\"id\":' || id || ',\"hostname\":' || to_json(hostname)::text || ',\"packages\":' || packages"
            " || '}'")
    if page.paginated and deb_ids == rpm_ids:
        sql = _PAGE_SQL.format(entries=entries, limit=f"${len(args) + 1}", offset=f"${len(args) + 2}",
                               page_answer=_PAGE_ANSWER.format(entry_ids=_ENTRY_IDS.format(where=""),
                                                               total="(SELECT total FROM n)"))
    elif deb_ids == rpm_ids:
        # Every matching entry counts for every host: each host's members grouped by its id alone, then
        # the hosts' rows joined once.
        sql = f"""
            WITH e AS MATERIALIZED ({entries}),
            pk AS (
                SELECT u.host_id AS id, {packages}
                FROM ({_POSTINGS}) ph JOIN e ON e.id = ph.version_id
                CROSS JOIN LATERAL unnest(posting_ids(ph.bucket, ph.hosts)) AS u(host_id)
                GROUP BY u.host_id
            )
            SELECT {item} AS item FROM (SELECT pk.id, h.hostname, pk.packages FROM pk JOIN hosts h ON h.id = pk.id) pk
            ORDER BY hostname
        """
    else:
        # Each host is in the list of its own order (versions.comparator), or not at all.
        head = f"""
            WITH e AS MATERIALIZED ({entries}),
            ph AS MATERIALIZED ({_POSTINGS}),
            found AS MATERIALIZED (
                SELECT h.id, h.hostname, u.rpm FROM (SELECT unnest(posting_ids(ph.bucket, ph.hosts)), false FROM ph
                JOIN e ON e.id = ph.version_id WHERE e.deb UNION
                SELECT unnest(posting_ids(ph.bucket, ph.hosts)), true FROM ph JOIN e ON e.id = ph.version_id
                WHERE e.rpm) AS u(id, rpm) JOIN hosts h ON h.id = u.id
                WHERE ((lower(btrim(h.os_family, E' \\t\\n\\r\\f\\x0b')) = ANY($4::text[])) IS TRUE) = u.rpm
            )"""
        if page.paginated:
            # Only the page's hosts get their packages, each the entries of its own order.
            entry_ids = (f"CASE WHEN page.rpm THEN {_ENTRY_IDS.format(where=' WHERE e.rpm')}"
                         f" ELSE {_ENTRY_IDS.format(where=' WHERE e.deb')} END")
            page_answer = _PAGE_ANSWER.format(entry_ids=entry_ids, total="(SELECT count(*) FROM found)")
            sql = f"""{head},
                page AS (SELECT id, hostname, rpm FROM found ORDER BY hostname{tail}),
                {page_answer}
            """
        else:
            sql = f"""{head},
                pk AS (
                    SELECT found.id, found.hostname, {packages}
                    FROM ph JOIN e ON e.id = ph.version_id
                    CROSS JOIN LATERAL unnest(posting_ids(ph.bucket, ph.hosts)) AS u(host_id)
                    JOIN found ON found.id = u.host_id
                    WHERE CASE WHEN found.rpm THEN e.rpm ELSE e.deb END
                    GROUP BY found.id, found.hostname
                )
                SELECT {item} AS item FROM pk ORDER BY hostname
            """
    if not page.paginated:
        if deb_ids == rpm_ids and (answer := await _whole_from_postings(pool, entries, args, max_bytes)) is not None:
            return answer
        return await _whole_answer(pool, sql, [*args, *extra], max_bytes)
    return _page_answer(await _fetch_custom(pool, sql, [*args, *extra]))


# A matching entry (e): its id, its member of a host's "packages" object ("name[:arch]": "version", as
# JSON text, escaped once for all the hosts that have it), its rank in name, arch order (members are
# listed in that order: a sort of integers); deb and rpm follow.
_ENTRY = ("p.id, to_json(CASE WHEN p.arch = '' THEN p.name ELSE p.name || ':' || p.arch END)::text || ':'"
          " || to_json(p.version)::text AS member, row_number() OVER (ORDER BY p.name, p.arch) AS rank")

# The posting rows of the matching entries (e), by the primary key: a broad prefix's thousands of
# entries then read only their own rows.
_POSTINGS = "SELECT ph.version_id, ph.bucket, ph.hosts FROM package_hosts ph WHERE ph.version_id = ANY (ARRAY(SELECT id FROM e))"

# A page of hosts with matching packages, without reading every matching host. Per range of host ids
# (bucket), the union of the entries' bitmaps (u, posting_union in sql/025: a broad prefix reads a few of
# its entries' rows, not all of them): their bit counts add up to the total, their bits
# are the matching hosts (a deleted host leaves the rows in its own transaction: sql/024's trigger).
# Then one of two ways to the page, whichever reads less, the other never run (its condition is a
# one-time filter): when the matches are dense, hosts in hostname order, each tested against its
# range's bitmap (IS TRUE keeps the test a filter of that walk, not a join that reads every host; at
# density d, a page of n after offset o reads about (o + n) / d hosts); when sparse,
# the matching hosts looked up by id and sorted (about total rows). The fleet's size is its highest
# host id: one index probe, a close enough estimate for this choice. The page's packages are its
# hosts' sets intersected with the matching entries (host_sets is the inverse of package_hosts).
_PAGE_SQL = """
    WITH e AS MATERIALIZED ({entries}),
    u AS MATERIALIZED (SELECT bucket, hosts FROM posting_union(ARRAY(SELECT id FROM e ORDER BY id))),
    n AS MATERIALIZED (
        SELECT total, total * total >= ({limit}::int8 + {offset}::int8) * (SELECT coalesce(max(id), 0) FROM hosts) AS dense
        FROM (SELECT coalesce(sum(bit_count(hosts)), 0)::int8 AS total FROM u) t
    ),
    page AS MATERIALIZED (
        SELECT * FROM (
            SELECT h.id, h.hostname FROM hosts h
            WHERE (EXISTS (SELECT FROM u WHERE u.bucket = posting_bucket(h.id) AND posting_has(u.hosts, h.id))) IS TRUE
            ORDER BY h.hostname LIMIT {limit} OFFSET {offset}
        ) walked WHERE (SELECT dense FROM n)
        UNION ALL
        SELECT * FROM (
            SELECT h.id, h.hostname FROM hosts h WHERE h.id IN (SELECT unnest(posting_ids(bucket, hosts)) FROM u)
            ORDER BY h.hostname LIMIT {limit} OFFSET {offset}
        ) looked_up WHERE NOT (SELECT dense FROM n)
    ),
    {page_answer}
"""

# A page's answer: first the matching entries' ids and members in rank order (and the total), then
# each page host, in hostname order, with its set intersected with the sorted entry ids (`entry_ids`;
# intarray's &, in C). _page_answer puts each host's members in rank order: a sort of thousands of
# (host, rank) rows and an aggregate per host cost PostgreSQL more than the whole page costs in Python.
_PAGE_ANSWER = """pk AS (
        SELECT page.id, page.hostname, (SELECT s.ids FROM host_sets s WHERE s.host_id = page.id) & {entry_ids} AS m
        FROM page
    )
    SELECT 0::int8 AS k, NULL::int8 AS id, NULL::text AS hostname, array_agg(id ORDER BY rank) AS m,
           array_agg(member ORDER BY rank) AS members, {total} AS total FROM e
    UNION ALL
    SELECT row_number() OVER (ORDER BY pk.hostname), pk.id, to_json(pk.hostname)::text, pk.m, NULL, NULL FROM pk
    ORDER BY k"""
_ENTRY_IDS = "(SELECT sort(array_agg(id)) FROM e{where})"


def _page_answer(rows) -> tuple[orjson.Fragment, int]:
    """_PAGE_ANSWER's rows -> the page as JSON text, each host's "packages" in name, arch order, and the total."""
    head = rows[0]
    rank = {entry: i for i, entry in enumerate(head["m"] or ())}
    members = head["members"]
    items = []
    for r in rows[1:]:
        if r["m"]:  # (a host listed has a matching entry; with none it is left out, as a join would)
            packages = ",".join(map(members.__getitem__, sorted(map(rank.__getitem__, r["m"]))))
            items.append(f'{{"id":{r["id"]},"hostname":{r["hostname"]},"packages":{{{packages}}}}}')
    return orjson.Fragment(("[" + ",".join(items) + "]").encode()), head["total"]


async def _older_entries(pool, name: str, older_than: str) -> tuple[list[int], list[int]]:
    """The ids of the dictionary entries of package `name` (any arch) older than `older_than`: in dpkg
    order, and in rpm order. A name has a few versions across a fleet: compared here, in Python."""
    rows = await pool.fetch("SELECT id, version FROM package_versions WHERE name = $1 ORDER BY id", name)
    deb = [r["id"] for r in rows if versions.dpkg_compare(r["version"], older_than) < 0]
    rpm = [r["id"] for r in rows if versions.rpm_compare(r["version"], older_than) < 0]
    return deb, rpm


# --- up to date / outdated -----------------------------------------------------------------------


def _updates_cond(outdated: bool) -> str:
    return "h.available_count >= $1" if outdated else "h.available_count < $1"


def _updates_sql(outdated: bool, page: Page) -> str:
    """The hosts below (uptodate) or from (outdated) the threshold $1, by hostname, each as the JSON text of
    its row with its available updates; a page's rows also carry its total (counted apart in its own scan:
    the same on every row). A page reads only its hosts in hostname order; their updates are rows of their
    own (installed: kept by the diff worker). A host with no update has no such row to read."""
    extra = (
        ", 'Os_version', h.os_version, 'Kernel', h.kernel, 'Arch', h.arch, 'Type', h.type,"
        " 'Profile', h.profile, 'Env', h.env"
        if outdated else ""
    )
    cond = _updates_cond(outdated)
    tail, _ = page.sql(1)
    total = f", (SELECT count(*) FROM hosts h WHERE {cond}) AS total" if page.paginated else ""
    return f"""
        SELECT json_build_object(
            'Id', h.id, 'Hostname', h.hostname, 'Ip', h.ip, 'Os', h.os, 'Os_family', h.os_family{extra},
            'Available_updates', json_build_object('Total', h.available_count, 'Packages', CASE
                WHEN h.available_count = 0 THEN '[]'::json
                ELSE coalesce((
                    SELECT json_agg(json_build_object(
                        'Name', a.name, 'Arch', a.arch, 'Current_version', a.installed, 'Version', a.version,
                        'Repository', a.repository, 'Security', a.security) ORDER BY a.name, a.arch)
                    FROM host_available a WHERE a.host_id = h.id), '[]'::json) END))::text AS item{total}
        FROM hosts h WHERE {cond} ORDER BY h.hostname{tail}
    """


async def hosts_by_updates(pool, outdated: bool, page: Page, threshold: int = OUTDATED_THRESHOLD,
                           max_bytes: int | None = None) -> tuple[orjson.Fragment, int]:
    """Hosts up to date or outdated (_updates_sql), each host's JSON text made by PostgreSQL (no per-column
    decoding in Python), joined here (a whole answer of tens of thousands of hosts runs to hundreds of
    MB: as one text in PostgreSQL it would near its 1 GB limit), embedded as is in the envelope."""
    _, extra = page.sql(1)
    if not page.paginated:
        return await _whole_answer(pool, _updates_sql(outdated, page), [threshold], max_bytes)
    rows = await _fetch_custom(pool, _updates_sql(outdated, page), [threshold, *extra])
    if rows:
        total = rows[0]["total"]
    else:  # a page past the end
        total = await pool.fetchval(f"SELECT count(*) FROM hosts h WHERE {_updates_cond(outdated)}", threshold)
    text = "[" + ",".join(r["item"] for r in rows) + "]"
    return orjson.Fragment(text.encode()), total
