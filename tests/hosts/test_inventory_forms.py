"""The diff gives the same changes whichever form a report was sent or stored in, and as sets of
dictionary ids it agrees with a plain dict diff."""
from __future__ import annotations

import json
import random
import zlib

import orjson

from app.hosts import bodies, inventory
from tests.helpers import check_postings
from tests.hosts.helpers import installed, put, put_raw, registered_host, state_and_history


async def test_agent_form_and_other_forms_alternate(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    host = creds[2]
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "curl": "7.88-1", "libc6:amd64": "2.36-9"}))
    await run_worker()

    # Compact JSON (no spaces): stored and compared as dicts, against the splittable kept inventory.
    await put_raw(client, creds, orjson.dumps(installed({"bash": "5.2-1", "curl": "7.88-1", "libc6:amd64": "2.36-9", "vim": "9.0-1"})))
    await run_worker()
    assert (await state_and_history(pool, host))[1] == [("added", "vim", "", None, "9.0-1"), ("upgraded", "bash", "", "5.1-1", "5.2-1")]

    # Back to the agent's form.
    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", "libc6:amd64": "2.36-10", "vim": "9.0-1"}))
    await run_worker()
    packages, history = await state_and_history(pool, host)
    assert history == [("removed", "curl", "", "7.88-1", None), ("upgraded", "libc6", "amd64", "2.36-9", "2.36-10")]
    assert packages == {("bash", ""): "5.2-1", ("libc6", "amd64"): "2.36-10", ("vim", ""): "9.0-1"}

    # Agent form twice in a row.
    await put(client, creds, "packages/installed", installed({"bash": "5.1-9", "libc6:amd64": "2.36-10", "zsh": "5.9-4"}))
    await run_worker()
    packages, history = await state_and_history(pool, host)
    assert history == [("added", "zsh", "", None, "5.9-4"), ("downgraded", "bash", "", "5.2-1", "5.1-9"),
                       ("removed", "vim", "", "9.0-1", None)]
    assert packages == {("bash", ""): "5.1-9", ("libc6", "amd64"): "2.36-10", ("zsh", ""): "5.9-4"}


async def test_a_name_given_twice_keeps_the_last_version(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1", "b": "1"}))
    await run_worker()
    # [a=2, a=1]: as a set of items "a=2" is new, but the last one wins, so nothing changed.
    twice = json.dumps({"installed_packages": [{"name": "a", "version": "2"}, {"name": "a", "version": "1"},
                                               {"name": "b", "version": "1"}]}).encode()
    await put_raw(client, creds, twice)
    await run_worker()
    packages, history = await state_and_history(pool, creds[2])
    assert history == [] and packages == {("a", ""): "1", ("b", ""): "1"}


async def test_a_string_holding_an_item_separator_is_not_split(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1", "odd}, {name": "1"}))
    await run_worker()
    await put(client, creds, "packages/installed", installed({"a": "2", "odd}, {name": "1"}))
    await run_worker()
    packages, history = await state_and_history(pool, creds[2])
    assert history == [("upgraded", "a", "", "1", "2")]
    assert packages == {("a", ""): "2", ("odd}, {name", ""): "1"}


async def test_reports_stored_by_an_older_version_are_applied(client, pool, make_key, run_worker, redis):
    """A pending report stored as plain JSON before bodies were compressed."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1"}))
    await run_worker()
    plain = json.dumps(installed({"a": "1", "new": "3"})).encode()
    await pool.execute(
        "INSERT INTO host_reports (host_id, kind, digest, body) VALUES ($1, 'installed', '\\x00', $2)", creds[2], plain)
    assert not plain.startswith(bodies.SPLITTABLE) and bodies.decode_body(bodies.encode_body(plain, False)) == plain
    summary = (await inventory.apply_pending(pool, [creds[2]]))[creds[2]]
    assert summary["added"] == 1
    assert (await state_and_history(pool, creds[2]))[1] == [("added", "new", "", None, "3")]


async def test_pending_reports_stored_zlib_compressed_by_an_older_version(client, pool, make_key, run_worker):
    """Before lz4, bodies were zlib streams: b"S" + zlib (the agent's form) and a bare zlib stream.
    A pending one stays readable."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"a": "1", "b": "1"}))
    await run_worker()
    for body in (b"S" + zlib.compress(json.dumps(installed({"a": "2", "c": "1"})).encode()),
                 zlib.compress(orjson.dumps(installed({"a": "1", "c": "1"})))):
        await pool.execute(
            "INSERT INTO host_reports (host_id, kind, digest, body) VALUES ($1, 'installed', '\\x00', $2)", creds[2], body)
    await inventory.apply_pending(pool, [creds[2]])
    assert await state_and_history(pool, creds[2]) == (
        {("a", ""): "1", ("c", ""): "1"},
        [("added", "c", "", None, "1"), ("downgraded", "a", "", "2", "1"), ("removed", "b", "", "1", None),
         ("upgraded", "a", "", "1", "2")])
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0


async def test_the_id_diff_agrees_with_the_dict_diff_on_random_lists(client, pool, make_key, run_worker):
    """Random lists (names twice: the last one wins; arches; reorders), several hosts and several
    reports per run: each host's set is its last list, its history the dict diffs, and package_hosts
    the inverse of the sets."""
    rng = random.Random(17)
    names = [f"p{i}" for i in range(40)] + ["q:i386", "q:amd64", "q"]
    versions = ["1", "1.1", "2~rc1", "2", "1:0.1"]
    hosts = [await registered_host(client, make_key, f"rand{i}") for i in range(4)]
    last: dict = {h[2]: None for h in hosts}  # None: the next list is the baseline
    expected = {h[2]: [] for h in hosts}
    for _ in range(6):
        for creds in hosts:
            for _ in range(rng.randint(1, 3)):
                items = [(n, rng.choice(versions)) for n in rng.sample(names, rng.randint(1, 30))]
                items += rng.sample(items, min(3, len(items)))  # some names twice
                rng.shuffle(items)
                raw = json.dumps({"installed_packages": [{"name": n, "version": v} for n, v in items]}).encode()
                await put_raw(client, creds, raw)
                old, new = last[creds[2]], dict(items)
                if old is not None:
                    expected[creds[2]] += [
                        inventory.split_arch(n) for n in (old.keys() | new.keys()) if old.get(n) != new.get(n)]
                last[creds[2]] = new
        await run_worker()
        for creds in hosts:
            packages, history = await state_and_history(pool, creds[2])
            assert packages == {inventory.split_arch(n): v for n, v in last[creds[2]].items()}
            assert sorted((h[1], h[2]) for h in history) == sorted(expected[creds[2]])
            expected[creds[2]] = []
        await check_postings(pool)
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0


async def test_a_name_given_twice_in_a_large_inventory_keeps_the_last_version(client, pool, make_key, run_worker):
    # Few changes against a large inventory: only the new ids' names are checked against the others.
    creds = await registered_host(client, make_key)
    base = {f"p{i:02d}": "1" for i in range(40)}
    await put(client, creds, "packages/installed", installed(base))
    await run_worker()
    await state_and_history(pool, creds[2])
    items = [{"name": "p00", "version": "2"}, {"name": "p00", "version": "1"},
             {"name": "p01", "version": "1"}, {"name": "p01", "version": "2"}]
    items += [{"name": n, "version": v} for n, v in base.items() if n not in ("p00", "p01")]
    await put_raw(client, creds, json.dumps({"installed_packages": items}).encode())
    await run_worker()
    packages, history = await state_and_history(pool, creds[2])
    assert history == [("upgraded", "p01", "", "1", "2")]
    assert packages == {**{(n, ""): v for n, v in base.items()}, ("p01", ""): "2"}
