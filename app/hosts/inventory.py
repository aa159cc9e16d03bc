"""Installed/available reports: parsing (both wire forms), fast acceptance, the set diff, history; events.

The API side (accept_report) only validates cheaply, compares a digest and stores the raw body;
the worker side (host_diff) applies every pending report of a host, in order, as set operations.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

import orjson

from app.hosts import versions

INSTALLED = "installed"
AVAILABLE = "available"
BODY_KEYS = {INSTALLED: "installed_packages", AVAILABLE: "available_packages"}
MAX_FIELD = 255
DIFF_DELAY_SECONDS = 0.25


class ReportError(ValueError):
    """Bad report content; the message is shown to the client (400)."""


# The exact bytes linupdate's json.dumps() produces for a valid report, checked by one regex in C
# (no JSON parse, no Python loop over the items): ASCII strings without escapes, 1-255 characters
# (anything else, e.g. UTF-8 or another layout, takes the full path, which validates it).
_STR = rb'"[^"\\\x00-\x1f\x80-\xff]{1,255}+"'
_ITEMS = {
    INSTALLED: rb'\{"name": ' + _STR + rb', "version": ' + _STR + rb'\}',
    AVAILABLE: rb'\{"name": ' + _STR + rb', "version": ' + _STR
    + rb', "repository": "[^"\\\x00-\x1f\x80-\xff]{0,1024}+", "security": (?:true|false)\}',
}
_FAST = {
    kind: re.compile(rb'\{"' + BODY_KEYS[kind].encode() + rb'": \[(?:' + item + rb'(?:, ' + item + rb')*+)?\]\}')
    for kind, item in _ITEMS.items()
}


def fast_count(kind: str, raw: bytes, max_items: int) -> int | None:
    """Item count of a report in the agent's exact form, all items valid; None: use the full check."""
    if not _FAST[kind].fullmatch(raw):
        return None
    count = raw.count(b'{"name": ')  # `"` cannot occur inside the strings, so this counts items
    if count > max_items:
        raise ReportError(f"Too many packages: {count} (at most {max_items})")
    if kind == INSTALLED and count == 0:
        raise ReportError("Installed packages update has failed: the package list is empty")
    return count


# --- parsing -------------------------------------------------------------------------------------


def check_items(kind: str, value, max_items: int) -> int:
    """Validation of a report's list on the API side (the hot path). Returns the item count.

    One plain loop with type() checks (measured faster than map/itemgetter variants on 2,000 items).
    """
    if isinstance(value, str):
        count = len(_parse_string_form(kind, value))
    elif isinstance(value, list):
        count = len(value)
        if count > max_items:
            raise ReportError(f"Too many packages: {count} (at most {max_items})")
        _check_list(kind, value)
    else:
        raise ReportError(f"{BODY_KEYS[kind]} must be a list of packages or a \"name|version,...\" string")
    if count > max_items:
        raise ReportError(f"Too many packages: {count} (at most {max_items})")
    if kind == INSTALLED and count == 0:
        # The full list is the truth: an empty one would mark every package removed.
        raise ReportError("Installed packages update has failed: the package list is empty")
    return count


def _check_list(kind: str, value: list) -> None:
    """Raise a ReportError naming the first bad item."""
    for i, item in enumerate(value):
        if type(item) is not dict:
            raise ReportError(f"Package #{i} must be an object with name and version")
        name = item.get("name")
        version = item.get("version")
        if type(name) is not str or not name or len(name) > MAX_FIELD:
            raise ReportError(f"Package #{i}: name must be a non-empty string of at most {MAX_FIELD} characters")
        if type(version) is not str or not version or len(version) > MAX_FIELD:
            raise ReportError(f"Package version is empty or invalid for package: {name}")
        if kind == AVAILABLE:
            repo = item.get("repository")
            if repo is not None and (type(repo) is not str or len(repo) > 1024):
                raise ReportError(f"Package #{i}: repository must be a string of at most 1024 characters")
            sec = item.get("security")
            if sec is not None and type(sec) is not bool and sec not in ("true", "false"):
                raise ReportError(f"Package #{i}: security must be a boolean")


def _parse_string_form(kind: str, value: str) -> list[tuple[str, str]]:
    """The late-2023 form: "name|version,name|version" (fields after the 2nd ignored); "none" = empty."""
    if value.strip() in ("", "none"):
        return []
    items = []
    for raw in value.split(","):
        if not raw.strip():
            continue
        parts = raw.split("|")
        name = parts[0].strip()
        version = parts[1].strip() if len(parts) > 1 else ""
        if not name:
            continue
        if len(name) > MAX_FIELD:
            raise ReportError(f"Package name too long: {name[:40]}...")
        if not version or len(version) > MAX_FIELD:
            raise ReportError(f"Package version is empty or invalid for package: {name}")
        items.append((name, version))
    return items


def stored_body(kind: str, value, body: bytes) -> bytes:
    """What the worker reads: the raw body for the list form; the string form turned into the list form."""
    if not isinstance(value, str):
        return body
    return orjson.dumps({BODY_KEYS[kind]: [{"name": n, "version": v} for n, v in _parse_string_form(kind, value)]})


def body_digest(body: bytes) -> bytes:
    # Digest of the raw body: cheap (C), and equal for an agent's unchanged report.
    return hashlib.sha256(body).digest()  # sha256 is hardware-accelerated: the fastest here


# --- accepting a report (API side) ---------------------------------------------------------------

# One round trip: compare the digest, touch last_seen, and if the report changed store it and
# create (or join) the host's queued host_diff task. The commit waits for the WAL flush: a 200 means
# the report survives a PostgreSQL crash (tests/faults/test_host_reports.py crashes it mid-burst;
# with synchronous_commit off, acknowledged reports were lost). Nothing is written unless the host
# still has the token digest the request was authenticated with ($5; see auth.HostCredentialCache):
# `host` is then NULL. FOR NO KEY UPDATE, not FOR UPDATE:
# it still orders two reports of one host, but does not block the worker's foreign-key checks.
_ACCEPT_SQL = """
WITH old AS (
    SELECT CASE WHEN $2 = 'installed' THEN installed_digest ELSE available_digest END AS digest
    FROM hosts WHERE id = $1 AND token_digest = $5 FOR NO KEY UPDATE
), upd AS (
    UPDATE hosts SET last_seen_at = now(),
        installed_digest = CASE WHEN $2 = 'installed' THEN $3 ELSE installed_digest END,
        available_digest = CASE WHEN $2 = 'available' THEN $3 ELSE available_digest END
    WHERE id = $1 AND token_digest = $5 RETURNING id
), rep AS (
    INSERT INTO host_reports (host_id, kind, digest, body)
    SELECT $1, $2, $3, $4 FROM old WHERE old.digest IS DISTINCT FROM $3
    RETURNING id
), task AS (
    INSERT INTO tasks (kind, target, params, requested_by, enqueue_count)
    SELECT 'host_diff', 'host:' || $1, '{}'::jsonb, 'host:' || $1, 1 FROM rep
    ON CONFLICT (kind, target) WHERE status = 'queued' DO UPDATE SET params = tasks.params
    RETURNING id, enqueue_count, (xmax = 0) AS created
)
SELECT (SELECT id FROM upd) AS host, (SELECT id FROM rep) AS report, task.id, task.enqueue_count, task.created
FROM (SELECT 1) one LEFT JOIN task ON true
"""


@dataclass(frozen=True)
class Accepted:
    authorized: bool  # False: the host's credentials changed since the request was authenticated
    changed: bool
    task_id: int | None
    enqueue_count: int | None
    created: bool


async def accept_report(pool, host_id: int, token_digest: bytes, kind: str, digest: bytes, stored: bytes) -> Accepted:
    """Store a report (`stored` from encode_body) unless its digest equals the last one's."""
    row = await pool.fetchrow(_ACCEPT_SQL, host_id, kind, digest, stored, token_digest)
    return Accepted(row["host"] is not None, row["report"] is not None, row["id"], row["enqueue_count"],
                    bool(row["created"]))


# --- the diff (worker side) ----------------------------------------------------------------------

# Reports are parsed and compared in Python (orjson, dict set operations in C): measured several
# times cheaper than letting PostgreSQL parse 118 KB of JSON and FULL JOIN it with 2,000 rows.
_ARCH_RE = re.compile(r"^(.+):([A-Za-z0-9_.+-]{1,32})$")


def split_arch(raw: str) -> tuple[str, str]:
    """`name:arch` -> (name, arch); a name without an arch suffix -> (name, "")."""
    if ":" in raw:
        m = _ARCH_RE.match(raw)
        if m:
            return m.group(1), m.group(2)
    return raw, ""


def join_arch(name: str, arch: str) -> str:
    # The inverse of split_arch (it is one-to-one), so inventories can be keyed by the raw name.
    return f"{name}:{arch}" if arch else name


# How report bodies are stored (host_reports.body, and host_inventories.body for the kept
# inventory), told apart by the first byte:
#   b"S" + zlib(JSON)  an installed report in the agent's exact json.dumps() form (checked by _FAST)
#                      with no "}, {" inside its strings: it splits into items without a JSON parse;
#   zlib(JSON)         anything else (zlib streams start with 0x78); a kept inventory in this form
#                      is a {"name[:arch]": "version"} object;
#   b"{"               plain JSON, as stored before compression.
SPLITTABLE = b"S"
_LIST_START = len(b'{"installed_packages": [{')
_LIST_END = len(b'}]}')
_VERSION_SEP = b'", "version": "'
# A report changing more items than this goes the dict path (as fast then, and simpler).
_SPLIT_MAX_CHANGES = 256


def encode_body(body: bytes, splittable: bool) -> bytes:
    # zlib level 1: ~8x smaller for ~0.2 ms, far less WAL and TOAST work for PostgreSQL than raw JSON.
    return (SPLITTABLE if splittable else b"") + zlib.compress(body, 1)


def is_splittable(kind: str, raw: bytes, fast_count: int | None) -> bool:
    # fast_count proved the layout; each "}, {" must then be a boundary between two items.
    return kind == INSTALLED and fast_count is not None and raw.count(b"}, {") == fast_count - 1


def _decompress(stored: bytes) -> bytes:
    if stored[:1] == b"{":
        return stored
    return zlib.decompress(stored[1:] if stored[:1] == SPLITTABLE else stored)


def load_body(stored: bytes) -> dict:
    return orjson.loads(_decompress(stored))


def installed_map(body: dict) -> dict[str, str]:
    """{raw name: version}; a (name, arch) given twice: the last one wins."""
    return {item["name"]: item["version"] for item in body[BODY_KEYS[INSTALLED]]}


def split_diff(stored_old: bytes, stored_new: bytes) -> tuple[dict, dict] | None:
    """The items that differ between two splittable inventories, as ({name: old version},
    {name: new version}), found by set operations on the raw items (no JSON parse, no dict of
    2,000 entries). None when the dict path must be used: a changed name listed twice (order then
    matters: the last one wins), or a large change.
    """
    old_raw, new_raw = _decompress(stored_old), _decompress(stored_new)
    old_items = set(old_raw[_LIST_START:-_LIST_END].split(b"}, {"))
    new_items = set(new_raw[_LIST_START:-_LIST_END].split(b"}, {"))
    gone, came = old_items - new_items, new_items - old_items
    if len(gone) + len(came) > _SPLIT_MAX_CHANGES:
        return None
    out = []
    for items, raw in ((gone, old_raw), (came, new_raw)):
        versions = {}
        for item in items:  # b'"name": "N", "version": "V"' (no '"' inside N or V)
            sep = item.index(_VERSION_SEP)
            name = item[9:sep]
            if raw.count(b'{"name": "' + name + b'", ') != 1:
                return None
            versions[name.decode()] = item[sep + len(_VERSION_SEP):-1].decode()
        out.append(versions)
    return out[0], out[1]


async def current_inventory(conn, host_id: int, kept: bytes | None) -> dict[str, str]:
    """The host's applied inventory as {raw name: version}, from the kept body or host_packages."""
    if kept is not None:
        body = load_body(kept)
        return installed_map(body) if kept[:1] == SPLITTABLE else body
    rows = await conn.fetch("SELECT name, arch, version FROM host_packages WHERE host_id = $1", host_id)
    return {join_arch(r["name"], r["arch"]): r["version"] for r in rows}


# All the writes of one installed report in one statement (so one transaction): removed rows,
# added/changed rows, history, the kept inventory, the report itself. Each part gets small arrays
# (only what changed). No WAL flush wait: if a crash loses this commit, the report row comes back
# with it and is applied again (the task is marked done by a later, flushed commit).
_WRITE_INSTALLED_SQL = """
WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
rm AS (
    DELETE FROM host_packages p USING unnest($3::text[], $4::text[]) AS r(name, arch)
    WHERE p.host_id = $1 AND p.name = r.name COLLATE "C" AND p.arch = r.arch COLLATE "C"
), up AS (
    INSERT INTO host_packages (host_id, name, arch, version, state)
    SELECT $1, * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[])
    ON CONFLICT (host_id, name, arch) DO UPDATE
    SET version = EXCLUDED.version, state = EXCLUDED.state, since = now()
), hist AS (
    INSERT INTO host_history (host_id, at, change, name, arch, old_version, new_version)
    SELECT $1, $9, * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
), kept AS (
    INSERT INTO host_inventories (host_id, body)
    VALUES ($1, coalesce($15, (SELECT body FROM host_reports WHERE id = $2)))
    ON CONFLICT (host_id) DO UPDATE SET body = EXCLUDED.body
), done AS (
    DELETE FROM host_reports WHERE id = $2
)
UPDATE hosts SET inventory_at = $9 FROM async WHERE id = $1
"""

# The available set replaces the old one: delete what left, upsert what changed, keep the count.
_AVAILABLE_SQL = """
WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
new AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bool[])
           AS n(name, arch, version, repository, security)
), gone AS (
    DELETE FROM host_available a WHERE a.host_id = $1
    AND NOT EXISTS (SELECT 1 FROM new WHERE new.name = a.name COLLATE "C" AND new.arch = a.arch COLLATE "C")
), up AS (
    INSERT INTO host_available (host_id, name, arch, version, repository, security)
    SELECT $1, name, arch, version, repository, security FROM new
    ON CONFLICT (host_id, name, arch) DO UPDATE
    SET version = EXCLUDED.version, repository = EXCLUDED.repository, security = EXCLUDED.security
    WHERE (host_available.version, host_available.repository, host_available.security)
          IS DISTINCT FROM (EXCLUDED.version, EXCLUDED.repository, EXCLUDED.security)
), done AS (
    DELETE FROM host_reports WHERE id = $2
)
UPDATE hosts SET available_count = $8, available_at = $9 FROM async WHERE id = $1
RETURNING available_count
"""


async def apply_installed(conn, report, host_id: int, os_family: str | None, baseline: bool,
                          kept: bytes | None) -> tuple[dict, bytes]:
    """Apply a full inventory; record added/removed/upgraded/downgraded (not for the baseline).

    `kept` is the host_inventories body (the last applied inventory). Returns the counts and the
    body now kept. `old` and `new` hold either whole inventories or, from split_diff, just the items
    that differ: the loops below give the same changes for both.
    """
    stored = report["body"]
    pair = None
    if kept is not None and kept[:1] == SPLITTABLE and stored[:1] == SPLITTABLE:
        pair = split_diff(kept, stored)
    if pair is not None:
        old, new = pair
    else:
        new = installed_map(load_body(stored))
        old = await current_inventory(conn, host_id, kept)
    cmp = versions.comparator(os_family)
    removed, upserts, history = [], [], []
    counts = {"added": 0, "removed": 0, "upgraded": 0, "downgraded": 0}
    for raw in old.keys() - new.keys():
        name, arch = split_arch(raw)
        removed.append((name, arch))
        counts["removed"] += 1
        if not baseline:
            history.append(("removed", name, arch, old[raw], None))
    for raw, version in new.items() - old.items():  # added or changed: a few in a usual report
        name, arch = split_arch(raw)
        was = old.get(raw)
        if was is None:
            change, state = "added", "inventored" if baseline else "installed"
        else:
            change = "upgraded" if cmp(version, was) > 0 else "downgraded"
            state = change
        upserts.append((name, arch, version, state))
        counts[change] += 1
        if not baseline:
            history.append((change, name, arch, was, version))
    # What the next diff compares against: the report itself when splittable (copied in SQL).
    new_kept = None if stored[:1] == SPLITTABLE else zlib.compress(orjson.dumps(new), 1)
    await conn.execute(
        _WRITE_INSTALLED_SQL, host_id, report["id"],
        *_columns(removed, 2), *_columns(upserts, 4), report["received_at"], *_columns(history, 5), new_kept,
    )
    return counts, stored if new_kept is None else new_kept


async def apply_available(conn, report, host_id: int) -> int:
    new: dict[tuple[str, str], tuple] = {}
    for item in load_body(report["body"])[BODY_KEYS[AVAILABLE]]:
        sec = item.get("security")
        new[split_arch(item["name"])] = (item["version"], item.get("repository"), sec is True or sec == "true")
    rows = [(name, arch, *rest) for (name, arch), rest in new.items()]
    return await conn.fetchval(
        _AVAILABLE_SQL, host_id, report["id"], *_columns(rows, 5), len(rows), report["received_at"]
    )


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Rows -> one list per column (for unnest), empty lists when there are no rows."""
    return [list(col) for col in zip(*rows)] if rows else [[] for _ in range(width)]


async def apply_pending(pool, host_id: int) -> dict:
    """Apply the host's pending reports, oldest first, each in one transaction.

    Only one host_diff task of a host runs at a time (the per-target lock), and a report accepted
    while this one runs queues another task, so the list read here is all this run has to do.
    """
    summary = {"reports": 0, "added": 0, "removed": 0, "upgraded": 0, "downgraded": 0, "available": None}
    async with pool.acquire() as conn:
        reports = await conn.fetch(
            "SELECT r.id, r.kind, r.received_at, r.body, h.os_family, h.inventory_at IS NULL AS baseline,"
            "       (SELECT body FROM host_inventories WHERE host_id = $1) AS kept"
            " FROM host_reports r JOIN hosts h ON h.id = r.host_id WHERE r.host_id = $1 ORDER BY r.id",
            host_id,
        )
        baseline = bool(reports) and reports[0]["baseline"]
        kept = reports[0]["kept"] if reports else None
        for report in reports:
            if report["kind"] == INSTALLED:
                counts, kept = await apply_installed(conn, report, host_id, report["os_family"], baseline, kept)
                baseline = False
                for k, v in counts.items():
                    summary[k] += v
            else:
                summary["available"] = await apply_available(conn, report, host_id)
            summary["reports"] += 1
    return summary


async def host_diff(ctx) -> dict:
    """Task handler for kind `host_diff`, target `host:<id>`."""
    host_id = int(ctx.task["target"].split(":", 1)[1])
    try:
        return await apply_pending(ctx.pool, host_id)
    except Exception:
        # Forget the digests so the host's next report is applied even if unchanged.
        await ctx.pool.execute(
            "UPDATE hosts SET installed_digest = NULL, available_digest = NULL WHERE id = $1", host_id
        )
        raise


# --- events --------------------------------------------------------------------------------------

EVENT_LISTS = ("installed", "dep_installed", "upgraded", "removed", "downgraded", "reinstalled", "purged")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIME_RE = re.compile(r"^\d{2}:\d{2}:\d{2}$")


def check_events(events, max_items: int) -> list[dict]:
    """Validate the events list; returns the normalised events (one JSON object each)."""
    import datetime as dt

    if not isinstance(events, list):
        raise ReportError("events must be a list")
    if len(events) > max_items:
        raise ReportError(f"Too many events: {len(events)} (at most {max_items})")
    out = []
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            raise ReportError(f"Event #{i} must be an object")
        norm = {}
        for key, pattern, required in (
            ("date_start", DATE_RE, True), ("time_start", TIME_RE, True),
            ("date_end", DATE_RE, False), ("time_end", TIME_RE, False),
        ):
            value = ev.get(key)
            if value is None or value == "":
                if required:
                    raise ReportError(f"Event #{i}: {key} is required")
                norm[key] = None
                continue
            if type(value) is not str or not pattern.match(value):
                raise ReportError(f"Event #{i}: invalid {key} {str(value)[:40]!r}")
            try:
                (dt.date if key.startswith("date") else dt.time).fromisoformat(value)
            except ValueError:
                raise ReportError(f"Event #{i}: invalid {key} {value!r}")
            norm[key] = value
        command = ev.get("command")
        if type(command) is not str or not command or len(command) > 8192:
            raise ReportError(f"Event #{i}: command must be a non-empty string")
        norm["command"] = command
        lists = {}
        for key in EVENT_LISTS:
            items = ev.get(key)
            if items is None:
                continue
            if type(items) is not list or len(items) > max_items:
                raise ReportError(f"Event #{i}: {key} must be a list of packages")
            for item in items:
                if (
                    type(item) is not dict or type(item.get("name")) is not str or not item["name"]
                    or type(item.get("version", "")) is not str
                ):
                    raise ReportError(f"Event #{i}: {key} items need a name and a version")
            lists[key] = [{"name": it["name"], "version": it.get("version", "")} for it in items]
        norm["packages"] = lists
        out.append(norm)
    return out


_EVENTS_SQL = """
WITH old AS (SELECT events_digest FROM hosts WHERE id = $1 AND token_digest = $4 FOR NO KEY UPDATE),
upd AS (UPDATE hosts SET last_seen_at = now(), events_digest = $2 WHERE id = $1 AND token_digest = $4 RETURNING id),
ins AS (
    INSERT INTO host_events (host_id, date_start, time_start, date_end, time_end, command, packages)
    SELECT $1, (e->>'date_start')::date, (e->>'time_start')::time, (e->>'date_end')::date,
           (e->>'time_end')::time, e->>'command', e->'packages'
    FROM old, jsonb_array_elements($3::jsonb) AS e
    WHERE old.events_digest IS DISTINCT FROM $2
    ON CONFLICT (host_id, date_start, time_start, command) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS added, (SELECT id FROM upd) AS host
"""


async def store_events(pool, host_id: int, token_digest: bytes, events: list[dict], digest: bytes) -> int | None:
    """Store each event once (one statement, so one transaction). Returns how many were new;
    None if the host's credentials changed since the request was authenticated (nothing stored)."""
    row = await pool.fetchrow(_EVENTS_SQL, host_id, digest, events, token_digest)
    return row["added"] if row["host"] is not None else None
