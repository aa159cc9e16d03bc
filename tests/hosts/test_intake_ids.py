"""Installed reports a server process stores as dictionary ids (bodies.IDS, with its copy of the dictionary,
hosts/known.py): the same inventories, histories and refusals as reports stored as JSON."""
from __future__ import annotations

import asyncio
import json

from app import resources
from app.hosts import bodies, inventory
from app.hosts.known import KnownVersions
from tests.helpers import check_postings
from tests.hosts.helpers import installed, put, put_raw, registered_host, state_and_history, trim_the_cache_to_nothing


# Items every report below also holds: a report whose items the copy mostly lacks is stored as JSON.
FILLER = {f"lib{i:02d}": "1.0-1" for i in range(12)}


async def _follow(client, pool) -> KnownVersions:
    known = client.app[resources.INTAKE].known
    await known.refresh(pool)
    return known


async def _forms(pool) -> list[bytes]:
    return [bytes(r["body"][:1]) for r in await pool.fetch("SELECT body FROM host_reports ORDER BY id")]


async def test_a_report_of_known_versions_is_stored_as_ids_and_applied_alike(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed",
              installed({"bash": "5.1-1", "curl": "7.88-1", "libc6:amd64": "2.36-9", "vim": "9.0-1", **FILLER}))
    await run_worker()
    await state_and_history(pool, creds[2])
    assert len((await _follow(client, pool)).ids) == 16

    # Two versions the copy lacks (new to the fleet): stored as their keys, in order, beside the ids.
    answer = await put(client, creds, "packages/installed",
                       installed({"bash": "5.2-1", "curl": "7.88-1", "libc6:amd64": "2.36-9", "zsh": "5.9-4", **FILLER}))
    assert (answer["packages"], answer["changed"]) == (16, True)
    assert await _forms(pool) == [bodies.IDS]
    found, keys = bodies.decode_ids(bytes(await pool.fetchval("SELECT body FROM host_reports")))
    assert list(found).count(0) == 2 and keys == [inventory.item_key("bash", "5.2-1"), inventory.item_key("zsh", "5.9-4")]

    inventory._dictionaries.clear()  # a worker that never saw these ids (just started) looks their names up
    await run_worker()
    packages, history = await state_and_history(pool, creds[2])
    assert history == [("added", "zsh", "", None, "5.9-4"), ("removed", "vim", "", "9.0-1", None),
                       ("upgraded", "bash", "", "5.1-1", "5.2-1")]
    assert packages == {("bash", ""): "5.2-1", ("curl", ""): "7.88-1", ("libc6", "amd64"): "2.36-9",
                        ("zsh", ""): "5.9-4", **{(n, ""): v for n, v in FILLER.items()}}
    await check_postings(pool)

    # Every item known: ids alone; a downgrade in dpkg order.
    await _follow(client, pool)
    await put(client, creds, "packages/installed",
              installed({"bash": "5.1-1", "curl": "7.88-1", "libc6:amd64": "2.36-9", "zsh": "5.9-4", **FILLER}))
    body = bytes(await pool.fetchval("SELECT body FROM host_reports"))
    assert body[:1] == bodies.IDS and bodies.decode_ids(body)[1] == [] and 0 not in bodies.decode_ids(body)[0]
    await run_worker()
    assert (await state_and_history(pool, creds[2]))[1] == [("downgraded", "bash", "", "5.2-1", "5.1-1")]
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0


async def test_an_item_the_host_has_that_the_copy_lacks_changes_nothing(client, pool, make_key, run_worker):
    """The copy may lack an entry that the host's set already holds (it was trimmed, or is older than the
    entry): that item is stored as its key, a 0 among the ids, and once the worker resolves it, it is the
    same id as before, neither added nor removed."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "curl": "7.88-1", **FILLER}))
    await run_worker()
    await state_and_history(pool, creds[2])
    known = await _follow(client, pool)
    del known.ids[inventory.item_key("curl", "7.88-1")]
    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", "curl": "7.88-1", **FILLER}))
    found, keys = bodies.decode_ids(bytes(await pool.fetchval("SELECT body FROM host_reports")))
    assert keys == [inventory.item_key("bash", "5.2-1"), inventory.item_key("curl", "7.88-1")]
    await run_worker()
    packages, history = await state_and_history(pool, creds[2])
    assert history == [("upgraded", "bash", "", "5.1-1", "5.2-1")]
    assert packages == {("bash", ""): "5.2-1", ("curl", ""): "7.88-1", **{(n, ""): v for n, v in FILLER.items()}}
    await check_postings(pool)


async def test_an_item_the_copy_lacks_is_checked_as_before(client, pool, make_key, run_worker):
    """Only the items the server's copy lacks are checked; one that is not in the agent's form sends the body
    the full way: the same refusal text, or, valid JSON in another form, stored as JSON."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "curl": "7.88-1", **FILLER}))
    await run_worker()
    await _follow(client, pool)
    too_long = {"bash": "5.1-1", "x" * 256: "1", **FILLER}
    refused = await put_raw(client, creds, json.dumps(installed(too_long)).encode(), 400)
    empty_copy = KnownVersions(0)
    client.app[resources.INTAKE].known, known = empty_copy, client.app[resources.INTAKE].known
    assert await put_raw(client, creds, json.dumps(installed(too_long)).encode(), 400) == refused
    client.app[resources.INTAKE].known = known

    # An escape in an item the copy lacks: valid JSON, not the agent's exact form.
    escaped = json.dumps(installed({"bash": "5.1-1", "caf\u00e9": "1", **FILLER})).encode()
    assert b"\\u00e9" in escaped
    await put_raw(client, creds, escaped)
    assert await _forms(pool) == [b"M"]
    await run_worker()
    assert (await state_and_history(pool, creds[2]))[1] == [("added", "caf\u00e9", "", None, "1"),
                                                ("removed", "curl", "", "7.88-1", None)]


async def test_a_name_given_twice_in_an_ids_report_keeps_the_last_version(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key, os_family="Redhat")
    await put(client, creds, "packages/installed", installed({"kernel": "5.14.0-1", "b": "1", **FILLER}))
    await run_worker()
    await state_and_history(pool, creds[2])
    await _follow(client, pool)
    # kernel 5.14.0-2 is new (its key stored), 5.14.0-1 known: the last one wins, nothing changed.
    twice = [{"name": "kernel", "version": "5.14.0-2"}, {"name": "kernel", "version": "5.14.0-1"},
             {"name": "b", "version": "1"}] + [{"name": n, "version": v} for n, v in FILLER.items()]
    await put_raw(client, creds, json.dumps({"installed_packages": twice}).encode())
    assert await _forms(pool) == [bodies.IDS]
    await run_worker()
    filler = {(n, ""): v for n, v in FILLER.items()}
    assert await state_and_history(pool, creds[2]) == ({("kernel", ""): "5.14.0-1", ("b", ""): "1", **filler}, [])
    # Now the new one last (known by now).
    await _follow(client, pool)
    await put_raw(client, creds, json.dumps({"installed_packages": twice[1::-1] + twice[2:]}).encode())
    assert await _forms(pool) == [bodies.IDS]
    await run_worker()
    assert await state_and_history(pool, creds[2]) == ({("kernel", ""): "5.14.0-2", ("b", ""): "1", **filler},
                                            [("upgraded", "kernel", "", "5.14.0-1", "5.14.0-2")])
    await check_postings(pool)


async def test_an_ids_report_naming_ids_no_entry_has_fails_that_host_alone(client, pool, make_key, run_worker):
    good, bad = await registered_host(client, make_key, "good"), await registered_host(client, make_key, "bad")
    raw = json.dumps(installed({"bash": "5.1-1"})).encode()
    known = bodies.Ids()
    known.put(inventory.item_key("bash", "5.1-1"), 999_999)
    stored, count = bodies.encode_ids(raw, known)
    await pool.execute("INSERT INTO host_reports (host_id, kind, digest, body) VALUES ($1, 'installed', '\\x00', $2)",
                       bad[2], stored)
    await put_raw(client, good, raw)
    out = await inventory.apply_pending(pool, [good[2], bad[2]])
    assert isinstance(out[bad[2]], ValueError) and "999999" in str(out[bad[2]])
    assert out[good[2]]["added"] == 1
    assert await pool.fetchval("SELECT count(*) FROM host_reports WHERE host_id = $1", bad[2]) == 1
    assert await pool.fetchval("SELECT count(*) FROM host_sets WHERE host_id = $1", bad[2]) == 0


async def test_the_copy_follows_the_dictionary_stays_bounded_and_forgets_a_reset(pool):
    names = [f"p{i:03d}" for i in range(30)]
    await pool.execute("INSERT INTO package_versions (name, arch, version) SELECT unnest($1::text[]), '', '1'", names[:10])
    known = KnownVersions(limit=16, read_rows=4)
    assert await known.refresh(pool) == 10 and len(known.ids) == 10
    assert known.ids.id_of(inventory.item_key("p003", "1")) == await pool.fetchval(
        "SELECT id FROM package_versions WHERE name = 'p003'")
    await pool.execute("INSERT INTO package_versions (name, arch, version) SELECT unnest($1::text[]), '', '1'", names[10:])
    assert await known.refresh(pool) == 20
    assert len(known.ids) <= 16 and inventory.item_key("p029", "1") in known.ids  # the oldest went
    assert inventory.item_key("p000", "1") not in known.ids
    assert await known.refresh(pool) == 0
    await pool.execute("DELETE FROM package_versions; ALTER TABLE package_versions ALTER COLUMN id RESTART")
    await pool.execute("INSERT INTO package_versions (name, arch, version) VALUES ('other', '', '2')")
    assert await known.refresh(pool) == 1 and list(known.ids) == [inventory.item_key("other", "2")]


async def test_a_report_the_copy_mostly_lacks_has_it_read_again_soon(client, pool, make_key, monkeypatch):
    """A fleet's first reports come while the workers make the entries they share: a report in the agent's form
    that the copy mostly lacks asks for the dictionary to be read again at once, not at the next interval."""
    async def copied(key: bytes) -> bool:
        for _ in range(100):
            if key in known.ids:
                return True
            await asyncio.sleep(0.05)
        return False

    await pool.execute("INSERT INTO package_versions (name, arch, version) VALUES ('early', '', '1')")
    known = KnownVersions(limit=1000)
    following = asyncio.create_task(known.follow(pool, 3600, soon=0.05))
    try:
        assert await copied(inventory.item_key("early", "1"))  # its first read is done: then an hour's wait
        await pool.execute("INSERT INTO package_versions (name, arch, version) VALUES ('late', '', '1')")
        await asyncio.sleep(0.3)
        assert inventory.item_key("late", "1") not in known.ids
        known.want()
        assert await copied(inventory.item_key("late", "1"))
    finally:
        following.cancel()

    # The intake asks for it when such a report comes while the process is making another report's entries (it
    # makes one report's at a time), and not when the copy knows the report's items.
    intake_known = client.app[resources.INTAKE].known
    wanted = []
    monkeypatch.setattr(intake_known, "want", lambda: wanted.append(1))
    creds = await registered_host(client, make_key)
    intake_known._learning = True
    await put(client, creds, "packages/installed", installed({"late": "1", **FILLER}))
    intake_known._learning = False
    assert wanted == [1]
    await pool.execute("INSERT INTO package_versions (name, arch, version) SELECT unnest($1::text[]), '', '1.0-1'",
                       list(FILLER))
    await _follow(client, pool)
    await put(client, creds, "packages/installed", installed({"late": "1", "new": "1", **FILLER}))
    assert wanted == [1] and await _forms(pool) == [bodies.SPLITTABLE, bodies.IDS]


async def test_a_report_the_copy_mostly_lacks_has_its_entries_made_by_the_server(client, pool, make_key, run_worker):
    """A fleet's first report, its entries in no dictionary yet: the server makes them (KnownVersions.learn) and
    stores the report as ids. The next host's report, mostly known, is stored as ids with its two new items as
    their keys (the worker makes those, as for any report). Both are applied as from any report."""
    known = client.app[resources.INTAKE].known
    assert not known.ids
    first = await registered_host(client, make_key, "web01")
    await put(client, first, "packages/installed", installed({"bash": "5.1-1", "libc6:amd64": "2.36-9", **FILLER}))
    assert await _forms(pool) == [bodies.IDS]
    assert await pool.fetchval("SELECT count(*) FROM package_versions") == 2 + len(FILLER)
    assert known.ids.id_of(inventory.item_key("libc6:amd64", "2.36-9")) == await pool.fetchval(
        "SELECT id FROM package_versions WHERE name = 'libc6' AND arch = 'amd64'")
    second = await registered_host(client, make_key, "web02")
    await put(client, second, "packages/installed", installed({"bash": "5.2-1", "zsh": "5.9-4", **FILLER}))
    assert await _forms(pool) == [bodies.IDS, bodies.IDS]
    assert await pool.fetchval("SELECT count(*) FROM package_versions") == 2 + len(FILLER)
    await run_worker()
    assert await pool.fetchval("SELECT count(*) FROM package_versions") == 4 + len(FILLER)
    for creds, expected in ((first, {"bash": "5.1-1", "libc6:amd64": "2.36-9", **FILLER}),
                            (second, {"bash": "5.2-1", "zsh": "5.9-4", **FILLER})):
        packages, _ = await state_and_history(pool, creds[2])
        assert packages == {inventory.split_arch(raw): version for raw, version in expected.items()}


async def test_ids_named_before_the_cache_lost_them_are_named_again(client, pool, make_key, run_worker, monkeypatch):
    """prefetch_entries looks up the names of an IDS report's ids; if every entry leaves the cache before the chunk
    is planned (another batch's trim), they are looked up again, and the changes are still named."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "vim": "9.0-1", **FILLER}))
    await run_worker()
    await state_and_history(pool, creds[2])
    await _follow(client, pool)
    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", **FILLER}))
    assert await _forms(pool) == [bodies.IDS]
    inventory._dictionaries.clear()
    real, emptied = inventory.prefetch_entries, []

    async def then_emptied(conn, by_host):
        parsed = await real(conn, by_host)
        d = inventory.dictionary()
        assert [p.named for p in parsed.values()] == [d.generation]
        emptied.append(trim_the_cache_to_nothing())
        return parsed

    monkeypatch.setattr(inventory, "prefetch_entries", then_emptied)
    await run_worker()
    assert emptied == [True]
    assert (await state_and_history(pool, creds[2]))[1] == [("removed", "vim", "", "9.0-1", None),
                                                ("upgraded", "bash", "", "5.1-1", "5.2-1")]
    await check_postings(pool)


def test_a_servers_copy_looks_items_up_in_one_call_and_an_unknown_item_is_kept_as_its_key():
    """KnownVersions' Ids answers four zero bytes for a key it lacks, and notes it (encode_ids' one itemgetter
    call and one join); the IDS body is the item count, each item's id in report order (0 for the unknown
    one), and the unknown one's key."""
    plain = {inventory.item_key("bash", "5.1-1"): 7, inventory.item_key("curl", "8.0"): 9,
             **{inventory.item_key(f"k{i}", "1"): 20 + i for i in range(3)},
             **{inventory.item_key(f"z{i}", "1"): 300_000 + i for i in range(3)}}
    known = bodies.Ids()
    for key, id_ in plain.items():
        known.put(key, id_)
    assert known[b"nope"] == bytes(4) and known.missed == [b"nope"] and b"nope" not in known
    assert known.id_of(inventory.item_key("z2", "1")) == 300_002 and known.id_of(b"nope") is None
    raw = json.dumps(installed({"bash": "5.1-1", "curl": "8.0", "zsh": "5.9", **{f"k{i}": "1" for i in range(3)},
                                **{f"z{i}": "1" for i in range(3)}})).encode()
    encoded = bodies.encode_ids(raw, known)
    expected = b"".join(plain.get(k, 0).to_bytes(4, "little") for k in bodies.agent_items(raw))
    assert encoded == (bodies.IDS + (9).to_bytes(4, "little") + expected + inventory.item_key("zsh", "5.9"), 9)
    assert known.missed == [inventory.item_key("zsh", "5.9")]
    found, keys = bodies.decode_ids(encoded[0])
    assert list(found) == [plain.get(k, 0) for k in bodies.agent_items(raw)] and sorted(found)[:2] == [0, 7]
    assert keys == [inventory.item_key("zsh", "5.9")] and encoded[1] == 9
