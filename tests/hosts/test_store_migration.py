"""sql/017 moves a fleet from host_packages/host_inventories into the inventory store without changing
an answer: a database at migration 016 is filled (hosts with baselines, upgrades, downgrades, removals,
re-adds, events, available updates, a kept report and pending ones), every answer is recorded with the
016 queries (tests/hosts/queries_016.py), the database migrated, and every answer compared byte for
byte with today's queries; then the pending reports are applied."""
from __future__ import annotations

import datetime

import asyncpg
import orjson
import pytest

from app import db, embedded
from app.hosts import bodies, inventory
from app.hosts import queries as new_queries
from app.settings import Settings
from tests.conftest import TEST_DB
from tests.helpers import check_postings
from tests.hosts import queries_016 as old_queries

T0 = datetime.datetime(2026, 5, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)


def _at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


# host -> (os_family, baseline {(name, arch): version}, history [(minutes, change, name, arch, old, new)])
FLEET = {
    "deb1": ("Debian", {("bash", ""): "5.1-1", ("curl", ""): "7.88-1", ("vim", ""): "9.0-1",
                        ("libc6", "i386"): "2.36-9", ("libc6", ""): "2.36-9", ("openssl", ""): "3.0.11-1"},
             [(10, "upgraded", "bash", "", "5.1-1", "5.2-1"),
              (20, "downgraded", "curl", "", "7.88-1", "7.88-1~old"),
              (30, "removed", "vim", "", "9.0-1", None),
              (40, "added", "vim", "", None, "9.0-2"),          # removed, then back
              (50, "added", "git", "", None, "2.39-1"),
              (60, "removed", "git", "", "2.39-1", None),       # added, then gone
              (70, "upgraded", "libc6", "i386", "2.36-9", "2.36-10")]),
    "rpm1": ("Redhat", {("openssl", "x86_64"): "3.0.7-27.el9", ("bash", "x86_64"): "5.1.8-6.el9",
                        ("kernel", "x86_64"): "5.14.0-362.el9"},
             [(15, "upgraded", "openssl", "x86_64", "3.0.7-27.el9", "3.0.7-28.el9"),
              (25, "added", "openssl-libs", "x86_64", None, "3.0.7-28.el9")]),
    "deb2": ("Debian", {("bash", ""): "5.1-1", ("openssl", ""): "3.0.15-1", ("libssl3", ""): "3.0.15-1"}, []),
    "empty": ("Debian", {}, []),    # an inventory applied, with no package
    "new": ("Debian", None, []),    # no inventory yet: only a pending first report
}


def _current(baseline: dict, history: list) -> dict:
    """The inventory after the history, and each package's (state, since) as the 016 worker left them."""
    rows = {k: (v, "inventored", T0) for k, v in baseline.items()}
    for minutes, change, name, arch, _old, new in history:
        if change == "removed":
            rows.pop((name, arch))
        else:
            rows[(name, arch)] = (new, "installed" if change == "added" else change, _at(minutes))
    return rows


async def _fill(conn) -> dict[str, int]:
    ids = {}
    for n, (hostname, (family, baseline, history)) in enumerate(FLEET.items()):
        ids[hostname] = host = await conn.fetchval(
            "INSERT INTO hosts (hostname, ip, auth_id, token_digest, os_family, inventory_at, available_count)"
            " VALUES ($1, '10.0.0.1', $2, '\\x00', $3, $4, $5) RETURNING id",
            hostname, f"id_{n}", family, None if baseline is None else _at(90), 2 if family == "Redhat" else 1)
        if baseline is None:
            continue
        await conn.executemany(
            "INSERT INTO host_packages (host_id, name, arch, version, state, since) VALUES ($1, $2, $3, $4, $5, $6)",
            [(host, name, arch, *row) for (name, arch), row in _current(baseline, history).items()])
        await conn.executemany(
            "INSERT INTO host_history (host_id, at, change, name, arch, old_version, new_version)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)", [(host, _at(m), *h) for m, *h in history])
        # The last applied report, kept (016: a host_reports row named by host_inventories).
        current = {inventory.join_arch(*k): v[0] for k, v in _current(baseline, history).items()}
        kept = await conn.fetchval(
            "INSERT INTO host_reports (host_id, kind, digest, body, received_at) VALUES ($1, 'installed', '\\x00', $2, $3)"
            " RETURNING id", host, bodies.encode_body(orjson.dumps(
                {"installed_packages": [{"name": k, "version": v} for k, v in current.items()]}), False), _at(90))
        await conn.execute("INSERT INTO host_inventories (host_id, report_id, body, unique_names) VALUES ($1, $2, NULL, true)",
                           host, kept)
    deb1, rpm1 = ids["deb1"], ids["rpm1"]
    await conn.executemany(
        "INSERT INTO host_available (host_id, name, arch, version, repository, security) VALUES ($1, $2, $3, $4, $5, $6)",
        [(deb1, "openssl", "", "3.0.15-1", "bookworm-security", True), (deb1, "zsh", "", "5.9-4", None, False),
         (rpm1, "openssl", "x86_64", "3.0.7-29.el9", "baseos", True), (rpm1, "kernel", "x86_64", "5.14.0-427.el9", None, False)])
    await conn.execute(
        "INSERT INTO host_events (host_id, date_start, time_start, date_end, time_end, command, packages)"
        " VALUES ($1, '2026-05-01', '08:05:00', '2026-05-01', '08:06:00', 'apt-get upgrade',"
        " '{\"upgraded\": [{\"name\": \"bash\", \"version\": \"5.2-1\"}]}')", deb1)
    # Pending: deb1 changed again, and the first report of `new`.
    for host, items in ((deb1, {"bash": "5.2-1", "curl": "7.88-1", "vim": "9.0-2", "libc6:i386": "2.36-10",
                                "libc6": "2.36-9", "openssl": "3.0.15-1"}),
                        (ids["new"], {"bash": "5.1-1", "openssl": "3.0.15-1"})):
        await conn.execute(
            "INSERT INTO host_reports (host_id, kind, digest, body, received_at) VALUES ($1, 'installed', '\\x00', $2, $3)",
            host, bodies.encode_body(orjson.dumps(
                {"installed_packages": [{"name": k, "version": v} for k, v in items.items()]}), True), _at(100))
    return ids


async def _answers(pool, q, ids: dict[str, int]) -> bytes:
    """Every answer of the fleet, through the given module's queries, as one JSON text."""
    out: dict = {}
    for hostname, host in ids.items():
        for page in (q.Page(), q.Page(1, 2), q.Page(2, 2)):
            key = f"{hostname} {page}"
            out[f"installed {key}"] = await q.installed(pool, host, page)
            out[f"available {key}"] = await q.available(pool, host, page)
            out[f"history {key}"] = await q.history(pool, host, page)
    searches = [("bash", None, {}), ("lib", None, {}), ("*ssl*", None, {}), ("openssl", None, {"strict_name": True}),
                ("openssl", "3.0", {}), ("openssl", "3.0.15-1", {"strict_name": True, "strict_version": True}),
                ("vim", None, {}), ("git", None, {}), ("o*l", None, {}), ("libc6", "2.36-1*", {})]
    for name, version, flags in searches:
        for page in (q.Page(), q.Page(1, 1), q.Page(2, 1), q.Page(9, 1)):
            results, total = await q.hosts_with_package(
                pool, name, version, strict_name=flags.get("strict_name", False),
                strict_version=flags.get("strict_version", False), page=page)
            out[f"package {name} {version} {flags} {page}"] = [orjson.loads(orjson.dumps(results)), total]
        out[f"search {name} {version}"] = await q.search_hosts(pool, {"package": name, "version": version},
                                                                q.Page(1, 10))
        out[f"selection {name}"] = await q.matching_host_ids(pool, {"package": name}, 100)
    for outdated in (True, False):
        for page in (q.Page(), q.Page(1, 1), q.Page(2, 1), q.Page(9, 1)):
            results, total = await q.hosts_by_updates(pool, outdated, page)
            out[f"updates {outdated} {page}"] = [orjson.loads(orjson.dumps(results)), total]
    return orjson.dumps(out, default=str, option=orjson.OPT_SORT_KEYS)


@pytest.fixture
async def old_database():
    url = embedded.own_database(Settings.from_env(), f"{TEST_DB}_migration")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    await db.migrate(url, upto="016")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=db._init_connection)
    yield url, pool
    await pool.close()


async def test_the_migration_keeps_every_answer(old_database):
    url, pool = old_database
    async with pool.acquire() as conn:
        ids = await _fill(conn)
    before = await _answers(pool, old_queries, ids)
    assert b"9.0-2" in before and b"inventored" in before and b"3.0.7-29.el9" in before  # a filled fleet
    assert (await db.migrate(url))[0] == "017_inventory_store.sql"  # and any later ones
    assert await _answers(pool, new_queries, ids) == before
    await check_postings(pool)
    # Every host_reports row is now a pending one: the kept reports are gone, the two pending ones stay.
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 2
    assert await pool.fetchval("SELECT to_regclass('host_packages') IS NULL AND to_regclass('host_inventories') IS NULL")

    # The pending reports are applied after the migration, against the migrated inventories.
    out = await inventory.apply_pending(pool, [ids["deb1"], ids["new"]])
    assert (out[ids["deb1"]]["upgraded"], out[ids["deb1"]]["added"], out[ids["deb1"]]["removed"]) == (2, 0, 0)
    assert out[ids["new"]]["added"] == 2 and out[ids["new"]]["reports"] == 1
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
    await check_postings(pool)
    rows = {(r["Name"], r["Arch"]): (r["Version"], r["State"]) for r in (await new_queries.installed(pool, ids["deb1"], new_queries.Page()))[0]}
    assert rows["curl", ""] == ("7.88-1", "upgraded") and rows["openssl", ""] == ("3.0.15-1", "upgraded")
    assert rows["vim", ""] == ("9.0-2", "installed") and rows["libc6", ""] == ("2.36-9", "inventored")
    assert rows["libc6", "i386"] == ("2.36-10", "upgraded")
    new = (await new_queries.installed(pool, ids["new"], new_queries.Page()))[0]
    assert {r["State"] for r in new} == {"inventored"}


async def test_the_migration_refuses_host_ids_beyond_int4(old_database):
    url, pool = old_database
    await pool.execute("INSERT INTO hosts (id, hostname, ip, auth_id, token_digest) VALUES (2147483648, 'big', '1', 'x', '\\x00')")
    with pytest.raises(asyncpg.RaiseError, match="int4 range"):
        await db.migrate(url)
