"""The inventory store's candidates, side by side on one fleet: bytes per installed package, load time,
and the fleet questions (any version of a package, an exact version, a prefix, "older than V").

Candidates: (a) text rows (name, arch, version, state, since per installed package: today's
`host_packages`), (b) a fleet-wide dictionary of (name, arch, version) -> int id and narrow (host, package id)
rows, (c) the dictionary and one int4[] per host with a GIN index from `intarray` (gin__int_ops),
(d) the same with PostgreSQL's built-in GIN array_ops (no extension).

The fleet shares its versions as real fleets do: each package has a handful of versions (most hosts
on the newest ones), 1,900 packages every host has and 100 drawn from 5,000 rarer ones.
Runs on its own database (`depot_store_candidates`) of the PostgreSQL given by BENCH_PG_URL (default:
the embedded one); BENCH_HOSTS (5,000) x BENCH_PACKAGES (2,000).
`python -m bench store_candidates` (part of `make bench`).
"""
from __future__ import annotations

import asyncio
import os
import random
import statistics
import time

from app.hosts import versions

HOSTS = int(os.environ.get("BENCH_STORE_HOSTS", os.environ.get("BENCH_HOSTS", "5000")))
PACKAGES = int(os.environ.get("BENCH_PACKAGES", "2000"))
DB = os.environ.get("BENCH_STORE_DB", "depot_store_candidates")


def fleet(hosts: int, packages: int, seed: int = 11):
    """(names, {name: [versions, oldest first]}, a function host -> [(name, version)])."""
    rng = random.Random(seed)
    common = [f"lib{chr(97 + i % 26)}{i}-common" for i in range(packages - 100)]
    rare = [f"rare{i}-tool" for i in range(5000)]
    vers = {n: [f"{1 + i % 4}.{j}.{k}-1+deb12u{k}" for j in range(rng.randint(1, 3)) for k in range(1, rng.randint(2, 4))]
            for i, n in enumerate(common + rare)}

    def host(h: int):
        r = random.Random(seed * 1_000_003 + h)
        names = common + r.sample(rare, 100)
        # Most hosts on the newest version, the rest on older ones.
        return [(n, vers[n][-1] if r.random() < 0.7 else r.choice(vers[n])) for n in names]

    return vers, host


async def _database(url: str):
    import asyncpg

    from app.embedded import replace_database

    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        await admin.execute(f"CREATE DATABASE {DB}")
    finally:
        await admin.close()
    # The embedded server's URL names its socket folder in the query string: only the path is the database.
    return await asyncpg.connect(replace_database(url, DB))


async def _size(conn, tables: list[str]) -> int:
    return sum([await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t) for t in tables])


async def _timed(conn, query: tuple, repeat: int = 7) -> tuple[float, int]:
    """Median ms of the question, and its row count. A question on a dictionary store is two queries,
    as the application asks it: the dictionary's ids first, then the hosts with any of them."""
    lookup, sql, *args = query
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        if lookup:
            found = await conn.fetchval(f"SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM dict WHERE {lookup}", *args)
            rows = await conn.fetch(sql, found)
        else:
            rows = await conn.fetch(sql, *args)
        times.append((time.perf_counter() - t0) * 1000)
        n = len(rows)
    return statistics.median(times[1:]), n


UPDATED = 1000  # hosts changed in the write measure, 100 per statement (as the diff worker batches them)


def _changed(vers, host, h: int):
    """Host h's list with 3 versions changed, 1 package added, 1 removed: (removed, added) pairs."""
    r = random.Random(h)
    now = host(h)
    names = {n for n, _ in now}
    gone = r.sample(now, 4)
    came = [(n, next(x for x in vers[n] if x != v) if len(vers[n]) > 1 else v) for n, v in gone[:3]]
    came = [c for c, g in zip(came, gone) if c != g]
    extra = next(n for n in vers if n.startswith("rare") and n not in names)
    return gone[:len(came)] + [gone[3]], came + [(extra, vers[extra][0])]


async def _time_writes(conn, label: str, vers, host, ids) -> float:
    """Seconds to apply UPDATED hosts' changes in statements of 100 hosts, in this candidate's form."""
    batches = [[(h, *_changed(vers, host, h)) for h in range(start, start + 100)] for start in range(1, UPDATED + 1, 100)]
    arrays = {h: "{" + ",".join(map(str, sorted({ids[p] for p in host(h)} - {ids[p] for p in g} | {ids[p] for p in c})))
              + "}" for b in batches for h, g, c in b} if label[1] in "cd" else {}
    t0 = time.perf_counter()
    for batch in batches:
        if label.startswith("(a)"):
            await conn.execute(
                "WITH rm AS (DELETE FROM a_rows p USING unnest($1::bigint[], $2::text[]) r(h, n)"
                " WHERE p.host_id = r.h AND p.name = r.n AND p.arch = '')"
                " INSERT INTO a_rows (host_id, name, version) SELECT * FROM unnest($3::bigint[], $4::text[], $5::text[])"
                " ON CONFLICT (host_id, name, arch) DO UPDATE SET version = EXCLUDED.version, since = now()",
                [h for h, g, _ in batch for _ in g], [n for _, g, _ in batch for n, _ in g],
                [h for h, _, c in batch for _ in c], [n for _, _, c in batch for n, _ in c],
                [v for _, _, c in batch for _, v in c])
        elif label.startswith("(b)"):
            await conn.execute(
                "WITH rm AS (DELETE FROM b_rows p USING unnest($1::int[], $2::int[]) r(h, i)"
                " WHERE p.host_id = r.h AND p.pkg_id = r.i)"
                " INSERT INTO b_rows SELECT * FROM unnest($3::int[], $4::int[])",
                [h for h, g, _ in batch for _ in g], [ids[p] for _, g, _ in batch for p in g],
                [h for h, _, c in batch for _ in c], [ids[p] for _, _, c in batch for p in c])
        else:
            table = "c_arrays" if label.startswith("(c)") else "d_arrays"
            await conn.execute(f"UPDATE {table} t SET pkgs = u.p::int4[] FROM unnest($1::int[], $2::text[]) AS u(h, p)"
                               " WHERE t.host_id = u.h",
                               [h for h, _, _ in batch], [arrays[h] for h, _, _ in batch])
    return time.perf_counter() - t0


def _older(vers: list[str], than: str) -> list[str]:
    return [v for v in vers if versions.dpkg_compare(v, than) < 0]


async def _load_text(conn, host) -> None:
    await conn.execute("""
        CREATE TABLE a_rows (host_id bigint NOT NULL, name text COLLATE "C" NOT NULL, arch text COLLATE "C" NOT NULL DEFAULT '',
                             version text NOT NULL, state text NOT NULL DEFAULT 'inventored', since timestamptz NOT NULL DEFAULT now())""")

    async def rows():
        for h in range(1, HOSTS + 1):
            yield "".join(f"{h}\t{n}\t\t{v}\n" for n, v in host(h)).encode()

    await conn.copy_to_table("a_rows", source=rows(), columns=["host_id", "name", "arch", "version"])
    await conn.execute("ALTER TABLE a_rows ADD PRIMARY KEY (host_id, name, arch)")
    await conn.execute("CREATE INDEX a_by_name ON a_rows (name, host_id) INCLUDE (arch, version)")


async def _load_dict(conn, vers) -> dict:
    await conn.execute("""CREATE TABLE dict (id int4 PRIMARY KEY, name text COLLATE "C" NOT NULL, arch text COLLATE "C" NOT NULL,
                          version text NOT NULL, UNIQUE (name, arch, version))""")
    ids, rows = {}, []
    for n, vs in vers.items():
        for v in vs:
            ids[n, v] = len(ids) + 1
            rows.append((ids[n, v], n, "", v))
    await conn.copy_records_to_table("dict", records=rows)
    return ids


async def _load_narrow(conn, host, ids) -> None:
    await conn.execute("CREATE TABLE b_rows (host_id int4 NOT NULL, pkg_id int4 NOT NULL)")

    async def rows():
        for h in range(1, HOSTS + 1):
            yield "".join(f"{h}\t{ids[p]}\n" for p in host(h)).encode()

    await conn.copy_to_table("b_rows", source=rows())
    await conn.execute("ALTER TABLE b_rows ADD PRIMARY KEY (host_id, pkg_id)")
    await conn.execute("CREATE INDEX b_by_pkg ON b_rows (pkg_id, host_id)")


async def _load_arrays(conn, table: str, host, ids, opclass: str) -> None:
    await conn.execute(f"CREATE TABLE {table} (host_id int4 PRIMARY KEY, pkgs int4[] NOT NULL)")

    async def rows():
        for h in range(1, HOSTS + 1):
            yield f"{h}\t{{{','.join(map(str, sorted(ids[p] for p in host(h))))}}}\n".encode()

    await conn.copy_to_table(table, source=rows())
    await conn.execute(f"CREATE INDEX {table}_gin ON {table} USING gin (pkgs {opclass})")


async def run(url: str) -> None:
    vers, host = fleet(HOSTS, PACKAGES)
    conn = await _database(url)
    installed = sum(len(host(h)) for h in range(1, 4)) / 3 * HOSTS
    await conn.execute("CREATE EXTENSION intarray")
    name, rare = "libq16-common", "rare42-tool"
    exact = vers[name][-1]
    older_than = vers[name][-1]
    older = _older(vers[name], older_than)
    print(f"store candidates: {HOSTS} hosts x {PACKAGES} packages ({installed:,.0f} installed), dictionary of"
          f" {sum(map(len, vers.values())):,} (name, arch, version); queries: any version of {name} / of {rare},"
          f" {name}={exact}, prefix rare4*, {name} older than {older_than} ({len(older)} older versions)")
    results = []

    t0 = time.perf_counter()
    await _load_text(conn, host)
    load = time.perf_counter() - t0
    await conn.execute("VACUUM ANALYZE a_rows")
    q = {
        "any": (None, "SELECT DISTINCT host_id FROM a_rows WHERE name = $1", name),
        "any (rare)": (None, "SELECT DISTINCT host_id FROM a_rows WHERE name = $1", rare),
        "exact": (None, "SELECT host_id FROM a_rows WHERE name = $1 AND version = $2", name, exact),
        "prefix": (None, "SELECT DISTINCT host_id FROM a_rows WHERE name >= $1 AND name < $2", "rare4", "rare5"),
        # The older versions are found in Python first (versions.dpkg_compare), as for the others.
        "older": (None, "SELECT host_id FROM a_rows WHERE name = $1 AND version = ANY($2::text[])", name, older),
    }
    results.append(("(a) text rows", await _size(conn, ["a_rows"]), load, q))

    ids = await _load_dict(conn, vers)
    t0 = time.perf_counter()
    await _load_narrow(conn, host, ids)
    load = time.perf_counter() - t0
    await conn.execute("VACUUM ANALYZE b_rows")
    await conn.execute("ANALYZE dict")
    lookups = {
        "any": ("name = $1", name), "any (rare)": ("name = $1", rare), "exact": ("name = $1 AND version = $2", name, exact),
        "prefix": ("name >= $1 AND name < $2", "rare4", "rare5"), "older": ("name = $1 AND version = ANY($2::text[])", name, older),
    }
    q = {k: (where, "SELECT DISTINCT host_id FROM b_rows WHERE pkg_id = ANY($1::int4[])", *args)
         for k, (where, *args) in lookups.items()}
    results.append(("(b) dictionary + (host, id) rows", await _size(conn, ["b_rows", "dict"]), load, q))

    for label, table, opclass in (("(c) dictionary + int4[] + GIN gin__int_ops", "c_arrays", "gin__int_ops"),
                                  ("(d) dictionary + int4[] + GIN array_ops", "d_arrays", "array_ops")):
        t0 = time.perf_counter()
        await _load_arrays(conn, table, host, ids, opclass)
        load = time.perf_counter() - t0
        await conn.execute(f"VACUUM ANALYZE {table}")
        q = {k: (where, f"SELECT host_id FROM {table} WHERE pkgs && $1::int4[]", *args)
             for k, (where, *args) in lookups.items()}
        results.append((label, await _size(conn, [table, "dict"]), load, q))

    dict_size = await _size(conn, ["dict"])
    print(f"dictionary alone: {dict_size / 1e6:.1f} MB")
    print(f"{'candidate':<45} {'B/pkg':>6} {'load s':>7} {'write ms/host':>13}  "
          + "  ".join(f"{k:>16}" for k in results[0][3]))
    for label, size, load, queries in results:
        cells = []
        for query in queries.values():
            ms, n = await _timed(conn, query)
            cells.append(f"{ms:7.1f} ms {n:5d}h")
        writes = await _time_writes(conn, label, vers, host, ids) * 1000 / UPDATED
        print(f"{label:<45} {size / installed:6.1f} {load:7.1f} {writes:13.2f}  " + "  ".join(f"{c:>16}" for c in cells),
              flush=True)
    await conn.close()


def main() -> None:
    url = os.environ.get("BENCH_PG_URL")
    if not url:
        from app import embedded
        from app.settings import Settings

        url = embedded.own_database(Settings.from_env(), "postgres")
    asyncio.run(run(url))


if __name__ == "__main__":
    main()
