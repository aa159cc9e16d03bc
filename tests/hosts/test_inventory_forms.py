"""The diff gives the same changes whichever way a report was stored and compared.

Reports in the agent's exact form are compared item by item without a JSON parse (split_diff);
anything else goes through dicts. These tests mix the two and check the edge cases of the fast one.
"""
from __future__ import annotations

import json
import random
import zlib

import orjson
import pytest

from app.hosts import bodies, inventory
from tests.helpers import host_auth
from tests.hosts.helpers import installed, put, register


async def _host(client, make_key, name="forms01"):
    creds = await register(client, await make_key("operator"), name)
    await put(client, creds, "status", {"os_family": "Debian"})
    return creds


async def _put_raw(client, creds, raw: bytes):
    resp = await client.put("/api/v2/host/packages/installed", data=raw, headers=host_auth(*creds[:2]))
    assert resp.status == 200, await resp.text()


async def _state(pool, host_id):
    packages = {(r["name"], r["arch"]): r["version"] for r in await pool.fetch(
        "SELECT name, arch, version FROM host_packages WHERE host_id = $1", host_id)}
    history = [tuple(r) for r in await pool.fetch(
        "SELECT change, name, arch, old_version, new_version FROM host_history WHERE host_id = $1 ORDER BY change, name",
        host_id)]
    await pool.execute("DELETE FROM host_history WHERE host_id = $1", host_id)
    return packages, history


async def _kept_form(pool, host_id) -> bytes:
    """The first byte of the kept inventory; also checks where it is kept: the agent's form in the
    report's own row (the host's only remaining report), any other form in host_inventories."""
    row = await pool.fetchrow(
        "SELECT k.body, k.report_id, (SELECT array_agg(id) FROM host_reports WHERE host_id = $1) AS reports,"
        " (SELECT body FROM host_reports WHERE id = k.report_id) AS report_body"
        " FROM host_inventories k WHERE k.host_id = $1", host_id)
    if row["report_id"] is None:
        assert row["reports"] is None and row["body"] is not None
        return row["body"][:1]
    assert row["reports"] == [row["report_id"]] and row["body"] is None
    return row["report_body"][:1]


async def test_agent_form_and_other_forms_alternate(client, pool, make_key, run_worker):
    creds = await _host(client, make_key)
    host = creds[2]
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "curl": "7.88-1", "libc6:amd64": "2.36-9"}))
    await run_worker()
    assert await _kept_form(pool, host) == bodies.SPLITTABLE

    # Compact JSON (no spaces): stored and compared as dicts, against the splittable kept inventory.
    await _put_raw(client, creds, orjson.dumps(installed({"bash": "5.2-1", "curl": "7.88-1", "libc6:amd64": "2.36-9", "vim": "9.0-1"})))
    await run_worker()
    assert await _kept_form(pool, host) != bodies.SPLITTABLE
    assert (await _state(pool, host))[1] == [("added", "vim", "", None, "9.0-1"), ("upgraded", "bash", "", "5.1-1", "5.2-1")]

    # Back to the agent's form: compared against the dict kept by the previous report.
    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", "libc6:amd64": "2.36-10", "vim": "9.0-1"}))
    await run_worker()
    packages, history = await _state(pool, host)
    assert history == [("removed", "curl", "", "7.88-1", None), ("upgraded", "libc6", "amd64", "2.36-9", "2.36-10")]
    assert packages == {("bash", ""): "5.2-1", ("libc6", "amd64"): "2.36-10", ("vim", ""): "9.0-1"}

    # Agent form twice in a row: the item-by-item comparison.
    await put(client, creds, "packages/installed", installed({"bash": "5.1-9", "libc6:amd64": "2.36-10", "zsh": "5.9-4"}))
    await run_worker()
    packages, history = await _state(pool, host)
    assert history == [("added", "zsh", "", None, "5.9-4"), ("downgraded", "bash", "", "5.2-1", "5.1-9"),
                       ("removed", "vim", "", "9.0-1", None)]
    assert packages == {("bash", ""): "5.1-9", ("libc6", "amd64"): "2.36-10", ("zsh", ""): "5.9-4"}


async def test_a_name_given_twice_keeps_the_last_version(client, pool, make_key, run_worker):
    creds = await _host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1", "b": "1"}))
    await run_worker()
    # [a=2, a=1]: as a set of items "a=2" is new, but the last one wins, so nothing changed.
    twice = json.dumps({"installed_packages": [{"name": "a", "version": "2"}, {"name": "a", "version": "1"},
                                               {"name": "b", "version": "1"}]}).encode()
    await _put_raw(client, creds, twice)
    await run_worker()
    packages, history = await _state(pool, creds[2])
    assert history == [] and packages == {("a", ""): "1", ("b", ""): "1"}


async def test_a_string_holding_an_item_separator_is_not_split(client, pool, make_key, run_worker):
    creds = await _host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1", "odd}, {name": "1"}))
    await run_worker()
    assert await _kept_form(pool, creds[2]) != bodies.SPLITTABLE
    await put(client, creds, "packages/installed", installed({"a": "2", "odd}, {name": "1"}))
    await run_worker()
    packages, history = await _state(pool, creds[2])
    assert history == [("upgraded", "a", "", "1", "2")]
    assert packages == {("a", ""): "2", ("odd}, {name", ""): "1"}


async def test_without_a_kept_inventory_host_packages_is_the_reference(client, pool, make_key, run_worker):
    creds = await _host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1", "b:i386": "1"}))
    await run_worker()
    await pool.execute("DELETE FROM host_inventories")  # as for an inventory applied by an older version
    await put(client, creds, "packages/installed", installed({"a": "1", "b:i386": "2"}))
    await run_worker()
    assert (await _state(pool, creds[2]))[1] == [("upgraded", "b", "i386", "1", "2")]
    assert await _kept_form(pool, creds[2]) == bodies.SPLITTABLE


async def test_reports_stored_by_an_older_version_are_applied(client, pool, make_key, run_worker, redis):
    """A pending report stored as plain JSON before bodies were compressed."""
    creds = await _host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1"}))
    await run_worker()
    plain = json.dumps(installed({"a": "1", "new": "3"})).encode()
    await pool.execute(
        "INSERT INTO host_reports (host_id, kind, digest, body) VALUES ($1, 'installed', '\\x00', $2)", creds[2], plain)
    assert not plain.startswith(bodies.SPLITTABLE) and bodies.decode_body(bodies.encode_body(plain, False)) == plain
    summary = (await inventory.apply_pending(pool, [creds[2]]))[creds[2]]
    assert summary["added"] == 1
    assert (await _state(pool, creds[2]))[1] == [("added", "new", "", None, "3")]


async def test_kept_inventories_stored_zlib_compressed_by_an_older_version(client, pool, make_key, run_worker):
    """Before lz4, kept inventories were zlib streams: b"S" + zlib (the agent's form, in its report's
    row) and a bare zlib stream (a {name: version} object in host_inventories). Both stay readable, and
    the agent's form is still compared without a JSON parse against a new lz4 report."""
    old = b"S" + zlib.compress(json.dumps(installed({"a": "1", "b": "1"})).encode())
    agent, other = await _host(client, make_key, "forms-zlib1"), await _host(client, make_key, "forms-zlib2")
    await put(client, agent, "packages/installed", installed({"a": "1", "b": "1"}))
    await _put_raw(client, other, orjson.dumps(installed({"a": "1", "b": "1"})))  # not the agent's form
    await run_worker()
    await pool.execute(
        "UPDATE host_reports r SET body = $2 FROM host_inventories k WHERE k.host_id = $1 AND r.id = k.report_id",
        agent[2], old)
    await pool.execute("UPDATE host_inventories SET body = $2 WHERE host_id = $1",
                       other[2], zlib.compress(orjson.dumps({"a": "1", "b": "1"})))
    for creds in (agent, other):
        await put(client, creds, "packages/installed", installed({"a": "2", "c": "1"}))
    await run_worker()
    for creds in (agent, other):
        assert await _state(pool, creds[2]) == (
            {("a", ""): "2", ("c", ""): "1"},
            [("added", "c", "", None, "1"), ("removed", "b", "", "1", None), ("upgraded", "a", "", "1", "2")])
        assert await _kept_form(pool, creds[2]) == bodies.SPLITTABLE
    assert bodies.is_split_form(old)
    assert inventory.split_diff(old, _stored([("a", "2"), ("b", "1")])) == ({"a": "1"}, {"a": "2"})


def _stored(items: list[tuple[str, str]]) -> bytes:
    body = json.dumps({"installed_packages": [{"name": n, "version": v} for n, v in items]}).encode()
    return bodies.encode_body(body, True)


def test_split_diff_returns_only_what_differs_or_none():
    old = _stored([("a", "1"), ("b", "1"), ("c:i386", "1")])
    assert inventory.split_diff(old, _stored([("a", "1"), ("b", "2"), ("d", "1")])) == (
        {"b": "1", "c:i386": "1"}, {"b": "2", "d": "1"})
    assert inventory.split_diff(old, old) == ({}, {})
    assert inventory.split_diff(old, _stored([("b", "2"), ("b", "1")])) is None
    # An old list naming a package twice (its unique_names flag wrong): the dict path, not a crash.
    assert inventory.split_diff(_stored([("a", "1"), ("a", "2")]), _stored([("a", "3")])) is None


def test_split_diff_skips_unchanged_chunks_and_sees_names_twice():
    # Versions ending in 7 end a chunk: [a b7] [c d7] [e f7] [g].
    base = [("a", "1"), ("b", "7"), ("c", "1"), ("d", "17"), ("e", "2"), ("f", "27"), ("g", "3")]
    old = _stored(base)
    changed = base[:2] + [("c", "2")] + base[3:] + [("h", "1")]
    assert inventory.split_diff(old, _stored(changed)) == ({"c": "1"}, {"c": "2", "h": "1"})
    # A chunk boundary moves (d's version no longer ends in 7): two chunks become one, only d differs.
    assert inventory.split_diff(old, _stored(base[:3] + [("d", "18")] + base[4:])) == ({"d": "17"}, {"d": "18"})
    # The last item's version ends in 7: the list's tail follows it, not a chunk boundary.
    assert inventory.split_diff(old, _stored(base[:-1] + [("g", "7")])) == ({"g": "3"}, {"g": "7"})
    # Names given twice in the new list, in every arrangement: the dict path decides.
    assert inventory.split_diff(old, _stored(base + [("c", "9")])) is None          # unchanged + added
    assert inventory.split_diff(old, _stored(base + base[2:4])) is None             # a whole chunk twice
    assert inventory.split_diff(old, _stored(base + [("a", "1")])) is None          # an item twice
    assert inventory.split_diff(old, _stored(base[:2] + [("c", "5"), ("c", "6")] + base[3:])) is None


def test_the_chunk_walk_resyncs_after_a_change_and_falls_back_past_a_large_one():
    old = [b"a", b"b", b"c", b"d", b"e"]
    assert inventory._unmatched_chunks(old, [b"a", b"x", b"c", b"d", b"e"]) == ([1], [1])
    assert inventory._unmatched_chunks(old, [b"a", b"c", b"d", b"y", b"z", b"e"]) == ([1], [3, 4])
    many = [bytes([65 + i]) for i in range(20)]
    moved = many[10:] + many[:10]  # nothing equal within _RESYNC at the start: set membership
    assert inventory._unmatched_chunks(many, moved) == ([], [])
    assert inventory._unmatched_chunks(many, [b"new"] * 10 + many) is None  # a chunk twice, past the walk


@pytest.mark.parametrize("seed, most_ops", [(11, 4), (12, 12)])
def test_split_diff_agrees_with_the_dict_diff_on_random_lists(seed, most_ops):
    """Whatever the new list holds (names twice, reordered items or runs of items), a pair from
    split_diff is the dict diff (the last item of a name wins), and then the new list names each
    package once. Many changes also take the walk's set-membership fallback (past _RESYNC)."""
    rng = random.Random(seed)
    names = [f"p{i}" for i in range(60)]
    versions = ["1", "7", "17", "2.7", "3"]
    pairs = 0
    for _ in range(3000):
        old_items = [(n, rng.choice(versions)) for n in rng.sample(names, rng.randint(1, 40))]
        new_items = list(old_items)
        for _ in range(rng.randint(0, most_ops)):
            op = rng.random()
            if op < 0.1 and len(new_items) > 2:  # a run of items moves elsewhere
                i = rng.randrange(len(new_items))
                run = new_items[i:i + rng.randint(1, 10)]
                del new_items[i:i + len(run)]
                k = rng.randrange(len(new_items) + 1)
                new_items[k:k] = run
                continue
            if op < 0.3 and new_items:
                i = rng.randrange(len(new_items))
                new_items[i] = (new_items[i][0], rng.choice(versions))
            elif op < 0.5 and new_items:
                new_items.pop(rng.randrange(len(new_items)))
            elif op < 0.7:
                new_items.insert(rng.randrange(len(new_items) + 1), (rng.choice(names), rng.choice(versions)))
            elif op < 0.85 and new_items:
                new_items.insert(rng.randrange(len(new_items) + 1), rng.choice(new_items))
            elif len(new_items) > 1:
                i, j = rng.randrange(len(new_items)), rng.randrange(len(new_items))
                new_items[i], new_items[j] = new_items[j], new_items[i]
        if not new_items:
            continue
        old, new = dict(old_items), dict(new_items)
        result = inventory.split_diff(_stored(old_items), _stored(new_items))
        if result is None:
            continue
        pairs += 1
        assert result == ({n: v for n, v in old.items() if new.get(n) != v},
                          {n: v for n, v in new.items() if old.get(n) != v}), (old_items, new_items)
        assert len(new) == len(new_items), new_items
    assert pairs > 1000  # most changes take the fast path
