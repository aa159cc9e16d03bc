"""The host_diff task: a host's pending reports applied to its inventory, history and available updates.

Each installed report is compared with the inventory before it, in Python (orjson, set operations
in C: far cheaper than letting PostgreSQL parse the JSON and join it with the host's rows), by
split_diff when both bodies are in the splittable form, else as dicts; a batch of hosts is then
written in one statement (host_diff_batch).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

from app.hosts import versions
from app.hosts.bodies import decode_body, encode_body, is_split_form, load_body
from app.hosts.reports import AVAILABLE, BODY_KEYS, INSTALLED

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


def installed_map(body: dict) -> dict[str, str]:
    """{raw name: version}; a (name, arch) given twice: the last one wins."""
    return {item["name"]: item["version"] for item in body[BODY_KEYS[INSTALLED]]}


# --- the diff of two splittable bodies -----------------------------------------------------------

_HEAD = b'{"installed_packages": [{'
_TAIL = b'}]}'
_VERSION_SEP = b'", "version": "'
# A report changing more items than this goes the dict path (as fast then, and simpler).
_SPLIT_MAX_CHANGES = 256


def split_diff(stored_old: bytes, stored_new: bytes) -> tuple[dict, dict] | None:
    """The items that differ between two splittable inventories, as ({name: old version},
    {name: new version}), found by set operations on raw bytes (no JSON parse, no dict of the whole
    list). The old list must name each package once (host_inventories.unique_names); when this
    returns a pair, so does the new one. None when the dict path must be used: a name listed twice
    in the new list (order then matters: the last one wins), or a large change.

    Two levels: the lists are cut into chunks after every item whose version ends in "7" (content
    defined, so an unchanged run of items gives the same chunk in both lists), chunks matched with an
    equal one of the other list are skipped, and only the items of the others are compared one by one.
    """
    old_raw, new_raw = decode_body(stored_old), decode_body(stored_new)
    old_chunks, new_chunks = old_raw.split(_CHUNK_SEP), new_raw.split(_CHUNK_SEP)
    unmatched = _unmatched_chunks(old_chunks, new_chunks)
    if unmatched is None:  # the same run of items twice
        return None
    old_items = _chunk_items(old_chunks, unmatched[0])
    new_items = _chunk_items(new_chunks, unmatched[1])
    gone_items, came_items = set(old_items), set(new_items)
    if len(came_items) != len(new_items):  # an item twice
        return None
    gone_items, came_items = gone_items - came_items, came_items - gone_items
    if len(gone_items) + len(came_items) > _SPLIT_MAX_CHANGES:
        return None
    gone, came = _item_versions(gone_items), _item_versions(came_items)
    if gone is None or came is None:  # a name twice among the changed items (old: unique_names was wrong)
        return None
    # Names listed twice in the new list: one of them is among the came items, and the other is
    # either among them too (caught above) or was in the old list already, unchanged; unless it was
    # replaced (its name is in gone), the old list holds that name. The old list's names are unique,
    # so a name that only went needs no check.
    for name in came.keys() - gone.keys():
        if b'{"name": "' + name.encode() + b'", ' in old_raw:
            return None
    return gone, came


# A chunk ends after each item whose version ends in "7": 1 item in ~10 for usual Debian and RPM
# versions. Any other choice is as correct; with none or all items ending so, this is an item diff.
# The separator is long on purpose: bytes.split() skips ahead faster.
_CHUNK_SEP = b'7"}, {"name": "'
_CHUNK_END, _CHUNK_START = b'7"', b'"name": "'


# How far apart (in chunks, both lists together) the walk looks for the next pair of equal chunks.
_RESYNC = 8


def _unmatched_chunks(old: list[bytes], new: list[bytes]) -> tuple[list[int], list[int]] | None:
    """Indexes of the old and of the new chunks left unmatched when each chunk is matched with at
    most one equal chunk of the other list. None if the new list holds a chunk twice (see below).

    Both lists are walked in step (equal bytes compare at memcmp speed, no hashing): after a
    mismatch, the walk goes on from the nearest pair of equal chunks. Past a larger change, the rest
    is matched by set membership. Matching less than possible is harmless (the items of an unmatched
    chunk cancel out in split_diff's item sets), so the walk may be greedy.
    """
    i = j = 0
    old_only: list[int] = []
    new_only: list[int] = []
    while i < len(old) and j < len(new):
        if old[i] == new[j]:
            i += 1
            j += 1
            continue
        step = _resync(old, new, i, j)
        if step is None:
            old_rest, new_rest = set(old[i:]), set(new[j:])
            if len(new_rest) != len(new) - j:  # a chunk twice: the set match would hide it
                return None
            old_only += [k for k in range(i, len(old)) if old[k] not in new_rest]
            new_only += [k for k in range(j, len(new)) if new[k] not in old_rest]
            return old_only, new_only
        a, b = step
        old_only.extend(range(i, i + a))
        new_only.extend(range(j, j + b))
        i, j = i + a, j + b
    old_only.extend(range(i, len(old)))
    new_only.extend(range(j, len(new)))
    return old_only, new_only


def _resync(old: list[bytes], new: list[bytes], i: int, j: int) -> tuple[int, int] | None:
    """The nearest (a, b) with old[i + a] == new[j + b], a + b <= _RESYNC; None if there is none."""
    for d in range(1, _RESYNC + 1):
        for a in range(d + 1):
            b = d - a
            if i + a < len(old) and j + b < len(new) and old[i + a] == new[j + b]:
                return a, b
    return None


def _chunk_items(chunks: list[bytes], indexes: list[int]) -> list[bytes]:
    """The raw items of the chunks at these indexes, each made whole again and without the body's
    head or tail, so that an item compares equal wherever it is in the list."""
    last = len(chunks) - 1
    items: list[bytes] = []
    for i in indexes:
        chunk = chunks[i] + _CHUNK_END if i < last else chunks[i][:-len(_TAIL)]
        items += (chunk[len(_HEAD):] if i == 0 else _CHUNK_START + chunk).split(b"}, {")
    return items


def _item_versions(items) -> dict[str, str] | None:
    """{name: version} of raw items b'"name": "N", "version": "V"' (no '"' inside N or V); None if
    a name is given twice."""
    versions = {}
    for item in items:
        sep = item.index(_VERSION_SEP)
        name = item[9:sep].decode()
        if name in versions:
            return None
        versions[name] = item[sep + len(_VERSION_SEP):-1].decode()
    return versions


# --- applying a host's pending reports -----------------------------------------------------------


async def current_inventory(conn, host_id: int, kept: bytes | None) -> dict[str, str]:
    """The host's applied inventory as {raw name: version}, from the kept body or host_packages."""
    if kept is not None:
        body = load_body(kept)
        return installed_map(body) if is_split_form(kept) else body
    rows = await conn.fetch("SELECT name, arch, version FROM host_packages WHERE host_id = $1", host_id)
    return {join_arch(r["name"], r["arch"]): r["version"] for r in rows}


@dataclass
class HostPlan:
    """What applying one host's pending reports writes: rows for the batch statement."""

    host_id: int
    summary: dict
    report_ids: list[int] = field(default_factory=list)  # the applied reports, in order
    kept_report_id: int | None = None                     # the report row that held the kept inventory
    removed: list[tuple] = field(default_factory=list)    # (name, arch)
    upserts: list[tuple] = field(default_factory=list)    # (name, arch, version, state)
    history: list[tuple] = field(default_factory=list)    # (at, change, name, arch, old, new)
    kept: tuple | None = None                             # the new one: (report id, None, unique) or (None, body, False)
    inventory_at: object = None
    available_gone: list[tuple] = field(default_factory=list)  # (name, arch)
    available_up: list[tuple] = field(default_factory=list)    # (name, arch, version, repository, security)
    available_count: int | None = None                         # None: no available report
    available_at: object = None


def _empty_summary() -> dict:
    return {"reports": 0, "added": 0, "removed": 0, "upgraded": 0, "downgraded": 0, "available": None}


async def plan_host(conn, host_id: int, reports: list) -> HostPlan:
    """Compare each pending report with the state before it, in order, in Python.

    Installed: the new list against the last applied one (two splittable bodies: split_diff, only
    the items that differ; otherwise whole dicts). Every report's changes go to the history; the
    package rows get the net change of all of them (a package added then removed writes nothing).
    The host's first inventory is its baseline (no history). Available: the last report replaces the
    set; only the rows that differ from the current ones are written.
    """
    first = reports[0]
    plan = HostPlan(host_id, _empty_summary(), kept_report_id=first["kept_report_id"])
    baseline, kept, cmp = first["baseline"], first["kept"], versions.comparator(first["os_family"])
    kept_unique = first["kept_unique"]
    new_av: dict[tuple[str, str], tuple] | None = None
    net: dict[str, list] = {}  # raw name -> [version before these reports, version now, state]
    for report in reports:
        plan.report_ids.append(report["id"])
        plan.summary["reports"] += 1
        if report["kind"] == AVAILABLE:
            new_av = {}
            for item in load_body(report["body"])[BODY_KEYS[AVAILABLE]]:
                sec = item.get("security")
                new_av[split_arch(item["name"])] = (item["version"], item.get("repository"), sec is True or sec == "true")
            plan.available_at = report["received_at"]
            continue
        stored = report["body"]
        pair = None
        if kept is not None and kept_unique and is_split_form(kept) and is_split_form(stored):
            pair = split_diff(kept, stored)
        if pair is not None:
            (old, new), unique = pair, True
        else:
            body = load_body(stored)
            new = installed_map(body)
            unique = len(new) == len(body[BODY_KEYS[INSTALLED]])
            old = {} if baseline else await current_inventory(conn, host_id, kept)
        at = report["received_at"]
        changes = [(raw, old[raw], None, "removed") for raw in old.keys() - new.keys()]
        for raw, version in new.items() - old.items():  # added or changed: a few in a usual report
            was = old.get(raw)
            if was is None:
                changes.append((raw, None, version, "added"))
            else:
                changes.append((raw, was, version, "upgraded" if cmp(version, was) > 0 else "downgraded"))
        for raw, was, now, change in changes:
            plan.summary[change] += 1
            name, arch = split_arch(raw)
            if not baseline:
                plan.history.append((at, change, name, arch, was, now))
            state = "inventored" if baseline else ("installed" if change == "added" else change)
            entry = net.get(raw)
            if entry is None:
                net[raw] = [was, now, state]
            else:
                entry[1], entry[2] = now, state
        # What the next diff compares against: the report itself when splittable (its row is kept).
        if is_split_form(stored):
            kept, kept_unique, plan.kept = stored, unique, (report["id"], None, unique)
        else:
            kept, kept_unique = encode_body(orjson.dumps(new), False), False
            plan.kept = (None, kept, False)
        plan.inventory_at = at
        baseline = False
    for raw, (before, now, state) in net.items():
        name, arch = split_arch(raw)
        if now is not None:
            plan.upserts.append((name, arch, now, state))
        elif before is not None:
            plan.removed.append((name, arch))
    if new_av is not None:
        current = {(n, a): (v, r, s) for n, a, v, r, s in orjson.loads(first["available"] or "[]")}
        plan.available_gone = list(current.keys() - new_av.keys())
        plan.available_up = [(*key, *row) for key, row in new_av.items() if current.get(key) != row]
        plan.available_count = plan.summary["available"] = len(new_av)
    return plan


# Every write of a batch of hosts in one statement: removed, added and changed package rows,
# history, kept inventories, available rows, and the deletion of the applied reports (except a
# report that is now the kept inventory) and of the report rows no longer kept; then the
# hosts' columns (_HOSTS_SQL), in the same transaction. Each part gets arrays of only what changed.
# No WAL flush wait: if a crash loses this commit, the report rows come back with it and are
# applied again (the tasks are marked done by a later, flushed commit).
_WRITE_SQL = """
WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
rm AS (
    DELETE FROM host_packages p USING unnest($1::bigint[], $2::text[], $3::text[]) AS r(host_id, name, arch)
    WHERE p.host_id = r.host_id AND p.name = r.name COLLATE "C" AND p.arch = r.arch COLLATE "C"
), up AS (
    INSERT INTO host_packages (host_id, name, arch, version, state)
    SELECT * FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])
    ON CONFLICT (host_id, name, arch) DO UPDATE
    SET version = EXCLUDED.version, state = EXCLUDED.state, since = now()
), hist AS (
    INSERT INTO host_history (host_id, at, change, name, arch, old_version, new_version)
    SELECT * FROM unnest($9::bigint[], $10::timestamptz[], $11::text[], $12::text[], $13::text[],
                         $14::text[], $15::text[])
), kept AS (
    INSERT INTO host_inventories (host_id, report_id, body, unique_names)
    SELECT * FROM unnest($16::bigint[], $17::bigint[], $18::bytea[], $19::bool[])
    ON CONFLICT (host_id) DO UPDATE
    SET report_id = EXCLUDED.report_id, body = EXCLUDED.body, unique_names = EXCLUDED.unique_names
), av_gone AS (
    DELETE FROM host_available a USING unnest($20::bigint[], $21::text[], $22::text[]) AS g(host_id, name, arch)
    WHERE a.host_id = g.host_id AND a.name = g.name COLLATE "C" AND a.arch = g.arch COLLATE "C"
), av_up AS (
    INSERT INTO host_available (host_id, name, arch, version, repository, security)
    SELECT * FROM unnest($23::bigint[], $24::text[], $25::text[], $26::text[], $27::text[], $28::bool[])
    ON CONFLICT (host_id, name, arch) DO UPDATE
    SET version = EXCLUDED.version, repository = EXCLUDED.repository, security = EXCLUDED.security
)
DELETE FROM host_reports USING async WHERE id = ANY($29::bigint[])
"""

# The hosts' rows last, in a statement of their own just before the commit: the report endpoints
# lock these rows too (FOR NO KEY UPDATE), and a group of their requests would otherwise wait for
# the whole write above (PostgreSQL runs a statement's main query first, its other CTEs after).
# Locked in id order, as hosts/intake.py does: in another order, the two deadlocked (and PostgreSQL
# took a second, deadlock_timeout, to tell).
_HOSTS_SQL = """
WITH locked AS (SELECT id FROM hosts WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE)
UPDATE hosts h SET inventory_at = coalesce(u.inventory_at, h.inventory_at),
    available_count = coalesce(u.available_count, h.available_count),
    available_at = coalesce(u.available_at, h.available_at)
FROM locked JOIN unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::timestamptz[])
     AS u(host_id, inventory_at, available_count, available_at) ON u.host_id = locked.id
WHERE h.id = locked.id
"""


async def write_plans(conn, plans: list[HostPlan]) -> None:
    removed, upserts, history, kept, av_gone, av_up, deleted, hosts = [], [], [], [], [], [], [], []
    for p in sorted(plans, key=lambda p: p.host_id):  # one lock order for every writer
        h = p.host_id
        removed += [(h, *r) for r in p.removed]
        upserts += [(h, *r) for r in p.upserts]
        history += [(h, *r) for r in p.history]
        if p.kept is not None:
            kept.append((h, *p.kept))
            deleted += [i for i in (*p.report_ids, p.kept_report_id) if i is not None and i != p.kept[0]]
        else:  # only available reports: the kept inventory stays
            deleted += p.report_ids
        av_gone += [(h, *r) for r in p.available_gone]
        av_up += [(h, *r) for r in p.available_up]
        hosts.append((h, p.inventory_at, p.available_count, p.available_at))
    async with conn.transaction():
        await conn.execute(
            _WRITE_SQL, *_columns(removed, 3), *_columns(upserts, 5), *_columns(history, 7), *_columns(kept, 4),
            *_columns(av_gone, 3), *_columns(av_up, 6), deleted,
        )
        await conn.execute(_HOSTS_SQL, *_columns(hosts, 4))


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Rows -> one list per column (for unnest), empty lists when there are no rows."""
    return [list(col) for col in zip(*rows)] if rows else [[] for _ in range(width)]


# A host's pending reports are those after its kept one (host_inventories.report_id).
_PENDING_SQL = """
SELECT r.id, r.host_id, r.kind, r.received_at, r.body, h.os_family, h.inventory_at IS NULL AS baseline,
       CASE WHEN r.id = min(r.id) OVER (PARTITION BY r.host_id) THEN coalesce(k.body, kr.body) END AS kept,
       k.report_id AS kept_report_id, coalesce(k.unique_names, false) AS kept_unique,
       -- the host's current available rows (compared in Python: only the differences are written)
       CASE WHEN r.id = min(r.id) OVER (PARTITION BY r.host_id) THEN (
           SELECT json_agg(json_build_array(a.name, a.arch, a.version, a.repository, a.security))
           FROM host_available a WHERE a.host_id = r.host_id)::text END AS available
FROM host_reports r JOIN hosts h ON h.id = r.host_id LEFT JOIN host_inventories k ON k.host_id = r.host_id
LEFT JOIN host_reports kr ON kr.id = k.report_id
WHERE r.host_id = ANY($1::bigint[]) AND r.id > coalesce(k.report_id, 0) ORDER BY r.host_id, r.id
"""


async def apply_pending(pool, host_ids: list[int]) -> dict[int, dict | Exception]:
    """Apply the pending reports of these hosts: one read, Python, one write, one transaction.

    Only one host_diff task of a host runs at a time (the per-target lock), and a report accepted
    meanwhile queues another task, so what is read here is all this run has to do. Returns each
    host's summary, or the exception that kept its reports from being applied: a host that fails
    does not stop the others (after a failed batch write, each host is written on its own).
    """
    out: dict[int, dict | Exception] = {h: _empty_summary() for h in host_ids}
    async with pool.acquire() as conn:
        by_host: dict[int, list] = {}
        for row in await conn.fetch(_PENDING_SQL, host_ids):
            by_host.setdefault(row["host_id"], []).append(row)
        plans = []
        for host_id, reports in by_host.items():
            try:
                plans.append(await plan_host(conn, host_id, reports))
            except Exception as exc:
                out[host_id] = exc
        if plans:
            await _write_isolated(conn, plans, out)
    return out


async def _write_isolated(conn, plans: list[HostPlan], out: dict) -> None:
    """Write the plans in one transaction; if that fails, each on its own, so a host fails alone."""
    try:
        await write_plans(conn, plans)
    except Exception as exc:
        if len(plans) == 1:
            out[plans[0].host_id] = exc
            return
        for plan in plans:
            await _write_isolated(conn, [plan], out)
        return
    for plan in plans:
        out[plan.host_id] = plan.summary


async def forget_digests(pool, host_ids: list[int]) -> None:
    """After a failed diff: the hosts' next reports are stored (and applied) even if unchanged."""
    await pool.execute(
        "UPDATE hosts SET installed_digest = NULL, available_digest = NULL WHERE id = ANY($1::bigint[])", host_ids
    )


def _host_id(target: str) -> int:
    return int(target.split(":", 1)[1])


async def host_diff_batch(pool, targets: list[str]) -> dict[str, dict | Exception]:
    """Batch task handler for kind `host_diff` (targets `host:<id>`): see workers/runner.py run_tasks.

    The digests of hosts whose reports were not applied are forgotten, so that their next report,
    even unchanged, is stored and queues a task that applies everything pending."""
    host_ids = [_host_id(t) for t in targets]
    try:
        results = await apply_pending(pool, host_ids)
    except Exception:
        await forget_digests(pool, host_ids)
        raise
    failed = [h for h, r in results.items() if isinstance(r, Exception)]
    if failed:
        await forget_digests(pool, failed)
    return {t: results[_host_id(t)] for t in targets}


async def host_diff(ctx) -> dict:
    """Task handler for kind `host_diff`, target `host:<id>` (a task sent on its own)."""
    result = (await host_diff_batch(ctx.pool, [ctx.task["target"]]))[ctx.task["target"]]
    if isinstance(result, Exception):
        raise result
    return result
