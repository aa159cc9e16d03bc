"""Installed/available reports: both wire forms, the diff on a real worker, history, version order."""
from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace

import pytest

from app import resources
from app.hosts import bodies, inventory as inventory_store, reports
from app.hosts.intake import Intake
from app.main import create_app
from tests.helpers import bearer, check_postings, host_auth, inventory, package_count
from tests.hosts.helpers import installed, put, registered_host, trim_the_cache_to_nothing


async def _inventory(pool, host_id):
    return {
        (r["name"], r["arch"]): (r["version"], r["state"])
        for r in await inventory(pool, host_id)
    }


async def _history(pool, host_id):
    return sorted(
        tuple(r) for r in await pool.fetch(
            "SELECT change, name, arch, old_version, new_version FROM host_history WHERE host_id = $1", host_id
        )
    )


async def test_the_full_list_is_the_truth(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "curl": "7.88-1", "vim": "9.0-1"}))
    await run_worker()
    assert await _history(pool, creds[2]) == []  # the first inventory is the baseline
    assert (await _inventory(pool, creds[2]))[("bash", "")] == ("5.1-1", "inventored")

    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", "curl": "7.88-1~old", "git": "2.39-1"}))
    await run_worker()
    assert await _history(pool, creds[2]) == [
        ("added", "git", "", None, "2.39-1"),
        ("downgraded", "curl", "", "7.88-1", "7.88-1~old"),
        ("removed", "vim", "", "9.0-1", None),
        ("upgraded", "bash", "", "5.1-1", "5.2-1"),
    ]
    assert await _inventory(pool, creds[2]) == {
        ("bash", ""): ("5.2-1", "upgraded"), ("curl", ""): ("7.88-1~old", "downgraded"), ("git", ""): ("2.39-1", "installed"),
    }


@pytest.mark.parametrize(
    "family, old, new, change",
    [
        ("Debian", "1.0-1", "1.0-1~bpo1", "downgraded"),  # ~ sorts before anything in dpkg
        ("Debian", "1:1.0-1", "2.0-1", "downgraded"),  # the epoch wins
        ("Debian", "1.9-1", "1.10-1", "upgraded"),
        ("Debian", "2.36-9+deb12u9", "2.36-9+deb12u10", "upgraded"),
        ("Redhat", "1.0-1.el9", "1.0-1.el9_2", "upgraded"),
        ("Redhat", "1.0~rc1-1", "1.0-1", "upgraded"),
        ("Redhat", "2:1.0-1", "1:9.9-1", "downgraded"),
        ("Redhat", "1.10-1", "1.9-1", "downgraded"),
    ],
)
async def test_version_order_follows_the_host_family(client, pool, make_key, run_worker, family, old, new, change):
    creds = await registered_host(client, make_key, os_family=family)
    await put(client, creds, "packages/installed", installed({"pkg": old}))
    await run_worker()
    await put(client, creds, "packages/installed", installed({"pkg": new}))
    await run_worker()
    assert await _history(pool, creds[2]) == [(change, "pkg", "", old, new)]


async def test_string_form_and_arch_suffix(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed",
              {"installed_packages": "bash|5.1-1,libc6:i386|2.36-9|C library,libc6|2.36-9,,php8.2-fpm|8.2.28-1"})
    await put(client, creds, "packages/available", {"available_packages": "bash|5.2-1"})
    await run_worker()
    assert await _inventory(pool, creds[2]) == {
        ("bash", ""): ("5.1-1", "inventored"), ("libc6", "i386"): ("2.36-9", "inventored"),
        ("libc6", ""): ("2.36-9", "inventored"), ("php8.2-fpm", ""): ("8.2.28-1", "inventored"),
    }
    resp = await client.get(f"/api/v2/host/{creds[2]}/updates", headers=host_auth(*creds[:2]))
    assert [(r["Name"], r["Current_version"], r["Version"]) for r in (await resp.json())["results"]] == [
        ("bash", "5.1-1", "5.2-1")
    ]
    await put(client, creds, "packages/available", {"available_packages": "none"})
    await run_worker()
    assert await pool.fetchval("SELECT available_count FROM hosts") == 0
    assert await pool.fetchval("SELECT count(*) FROM host_available") == 0


async def test_unchanged_report_costs_no_job(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    report = installed({"bash": "5.1-1"})
    first = await put(client, creds, "packages/installed", report)
    await run_worker()
    again = await put(client, creds, "packages/installed", report)
    assert first["changed"] and not again["changed"] and again["task-id"] is None
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0


async def test_a_body_seen_last_time_skips_the_checks(client, pool, make_key, run_worker, monkeypatch):
    creds = await registered_host(client, make_key)
    report = installed({"bash": "5.1-1", "curl": "7.88-1"})
    events = {"events": [{"date_start": "2026-01-02", "time_start": "10:00:00", "date_end": "2026-01-02",
                          "time_end": "10:00:30", "command": "apt-get upgrade", "upgraded": []}]}
    assert (await put(client, creds, "packages/installed", report))["changed"]
    assert (await put(client, creds, "packages/event", events))["added"] == 1
    await run_worker()
    last_seen = await pool.fetchval("SELECT last_seen_at FROM hosts WHERE id = $1", creds[2])

    def checked(*args):
        raise AssertionError("an unchanged body was checked again")

    for module, name in ((reports, "fast_count"), (reports, "check_items"), (reports, "check_events"),
                         (bodies, "encode_body"), (bodies, "encode_ids"), (Intake, "check")):
        monkeypatch.setattr(module, name, checked)
    again = await put(client, creds, "packages/installed", report)
    assert (again["changed"], again["packages"], again["task-id"]) == (False, 2, None)
    assert (await put(client, creds, "packages/event", events))["added"] == 0
    # It still counts as the host being seen, and stores nothing.
    assert await pool.fetchval("SELECT last_seen_at FROM hosts WHERE id = $1", creds[2]) > last_seen
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_a_body_seen_last_time_is_stored_again_when_the_host_has_another(
    aiohttp_client, client, settings, pool, make_key, run_worker
):
    """Two server processes: the host's reports alternate between them, so each one's memory of the
    last body goes stale; and a failed diff forgets the stored digests."""
    other = await aiohttp_client(create_app(settings))
    creds = await registered_host(client, make_key)
    first, second = installed({"bash": "5.1-1"}), installed({"bash": "5.2-1"})
    await put(client, creds, "packages/installed", first)
    await run_worker()
    await put(other, creds, "packages/installed", second)
    await other.app[resources.BATCHER].flush()
    await run_worker()
    # `client` saw `first` last, but the host's last report is `second`: stored and applied again.
    back = await put(client, creds, "packages/installed", first)
    assert back["changed"] and back["task-id"] is not None
    await run_worker()
    assert await _inventory(pool, creds[2]) == {("bash", ""): ("5.1-1", "downgraded")}

    history = [{"date_start": "2026-01-02", "time_start": "10:00:00", "date_end": "2026-01-02", "time_end": "10:00:30",
                "command": "apt-get upgrade", "upgraded": []}]
    older, newer = {"events": history}, {"events": history + [{**history[0], "time_start": "11:00:00"}]}
    assert (await put(client, creds, "packages/event", older))["added"] == 1
    assert (await put(other, creds, "packages/event", newer))["added"] == 1
    await put(client, creds, "packages/event", older)  # stale in `client`: checked and compared again
    assert bytes(await pool.fetchval("SELECT events_digest FROM hosts")) == reports.body_digest(json.dumps(older).encode())

    await pool.execute("UPDATE hosts SET installed_digest = NULL")  # as inventory.forget_digests does
    assert (await put(client, creds, "packages/installed", first))["changed"]
    await run_worker()
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'error'") == 0


async def test_an_unchanged_body_taken_by_another_process_skips_the_checks(
    aiohttp_client, client, settings, pool, make_key, run_worker, monkeypatch
):
    """The host's last report went to `client`; `other` remembers nothing of it, and PostgreSQL's digest
    (with the stored count) answers for the same body. A changed body, or one stored before the counts
    were, takes the full path."""
    other = await aiohttp_client(create_app(settings))
    creds = await registered_host(client, make_key)
    report, changed = installed({"bash": "5.1-1", "curl": "7.88-1"}), installed({"bash": "5.2-1"})
    assert (await put(client, creds, "packages/installed", report))["changed"]
    await run_worker()
    full_path = []
    real = Intake.check
    monkeypatch.setattr(Intake, "check", lambda *a: full_path.append(a) or real(*a))

    again = await put(other, creds, "packages/installed", report)
    assert (again["changed"], again["packages"], again["task-id"]) == (False, 2, None) and full_path == []
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0

    await pool.execute("UPDATE hosts SET installed_items = NULL")  # stored by an earlier version
    again = await put(other, creds, "packages/installed", report)
    assert (again["changed"], again["packages"]) == (False, 2) and len(full_path) == 1
    assert await pool.fetchval("SELECT installed_items FROM hosts") == 2

    new = await put(other, creds, "packages/installed", changed)
    assert (new["changed"], new["packages"]) == (True, 1) and len(full_path) == 2
    await other.app[resources.BATCHER].flush()
    await run_worker()
    assert await _inventory(pool, creds[2]) == {("bash", ""): ("5.2-1", "upgraded")}


async def test_reports_sent_while_queued_are_applied_in_order(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "1.0-1"}))
    await run_worker()
    ids = {(await put(client, creds, "packages/installed", installed({"bash": v})))["task-id"] for v in ("2.0-1", "3.0-1", "2.5-1")}
    assert len(ids) == 1  # coalesced into one queued task
    await run_worker()
    rows = await pool.fetch("SELECT change, old_version, new_version FROM host_history ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("upgraded", "1.0-1", "2.0-1"), ("upgraded", "2.0-1", "3.0-1"), ("downgraded", "3.0-1", "2.5-1")
    ]
    resp = await client.get(f"/api/v2/host/{creds[2]}/history", headers=bearer(await make_key("viewer")))
    assert [r["Version"] for r in (await resp.json())["results"]] == ["2.5-1", "3.0-1", "2.0-1"]


async def test_available_updates_are_replaced(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    pkgs = [{"name": "a", "version": "2", "repository": "r1", "security": True}, {"name": "b", "version": "3"}]
    await put(client, creds, "packages/available", {"available_packages": pkgs})
    await run_worker()
    await put(client, creds, "packages/available", {"available_packages": [{"name": "b", "version": "4", "security": "true"}]})
    await run_worker()
    rows = await pool.fetch("SELECT name, version, repository, security FROM host_available")
    assert [tuple(r) for r in rows] == [("b", "4", None, True)]
    assert await pool.fetchval("SELECT available_count FROM hosts") == 1


async def test_each_update_shows_the_version_installed_now(client, pool, make_key, run_worker):
    """An available row keeps the version its host runs (kept by the worker on both sides' changes)."""
    creds = await registered_host(client, make_key)
    viewer = bearer(await make_key("viewer"))

    async def updates():
        resp = await client.get(f"/api/v2/host/{creds[2]}/updates", headers=viewer)
        return {(r["Name"], r["Arch"]): r["Current_version"] for r in (await resp.json())["results"]}

    await put(client, creds, "packages/available",
              {"available_packages": "bash|5.2-1,curl|7.89-1,libc6:i386|2.37-1,vim|9.1-1"})
    await run_worker()
    assert await updates() == {("bash", ""): None, ("curl", ""): None, ("libc6", "i386"): None,
                               ("vim", ""): None}  # no inventory yet
    await put(client, creds, "packages/installed",
              installed({"bash": "5.1-1", "curl": "7.88-1", "libc6:i386": "2.36-9", "libc6": "2.36-9"}))
    await run_worker()
    assert await updates() == {("bash", ""): "5.1-1", ("curl", ""): "7.88-1", ("libc6", "i386"): "2.36-9",
                               ("vim", ""): None}
    # A few changes: the rows of the names they touch change, the others (curl) keep theirs.
    await put(client, creds, "packages/installed",
              installed({"bash": "5.1-2", "curl": "7.88-1", "libc6": "2.36-9", "vim": "9.0-1"}))
    await run_worker()
    assert await updates() == {("bash", ""): "5.1-2", ("curl", ""): "7.88-1", ("libc6", "i386"): None,
                               ("vim", ""): "9.0-1"}
    # Both kinds in one batch: the rows of the new list, with the versions of the new inventory.
    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", "libc6": "2.36-9", "vim": "9.0-2"}))
    await put(client, creds, "packages/available", {"available_packages": "vim|9.1-1,libc6|2.37-1"})
    await run_worker()
    assert await updates() == {("libc6", ""): "2.36-9", ("vim", ""): "9.0-2"}
    # A worker that knows none of the host's entries (restarted) reads their names before it answers.
    inventory_store._dictionaries.clear()
    await put(client, creds, "packages/available", {"available_packages": "bash|5.3-1,vim|9.1-1"})
    await run_worker()
    assert await updates() == {("bash", ""): "5.2-1", ("vim", ""): "9.0-2"}
    out = (await (await client.get("/api/v2/hosts/outdated?per_page=5", headers=viewer)).json())["results"]
    assert [(p["Name"], p["Current_version"], p["Version"]) for p in out[0]["Available_updates"]["Packages"]] == [
        ("bash", "5.2-1", "5.3-1"), ("vim", "9.0-2", "9.1-1")]


BAD_REPORTS = [
    ({}, "Invalid request"),
    ({"installed_packages": 5}, None),
    ({"installed_packages": {"name": "a"}}, None),
    ({"installed_packages": []}, "Installed packages update has failed: the package list is empty"),
    ({"installed_packages": "none"}, "Installed packages update has failed: the package list is empty"),
    ({"installed_packages": [{"name": "a"}]}, "Package version is empty or invalid for package: a"),
    ({"installed_packages": [{"name": "a", "version": ""}]}, "Package version is empty or invalid for package: a"),
    ({"installed_packages": [{"name": "a", "version": 1}]}, None),
    ({"installed_packages": [{"name": "", "version": "1"}]}, None),
    ({"installed_packages": [{"name": None, "version": "1"}]}, None),
    ({"installed_packages": [{"name": "a", "version": "1"}, "b|2"]}, "Package #1 must be an object with name and version"),
    ({"installed_packages": [["a", "1"]]}, None),
    ({"installed_packages": "a|"}, "Package version is empty or invalid for package: a"),
    ({"installed_packages": [{"name": "a" * 300, "version": "1"}]}, None),
]


@pytest.mark.parametrize("body, message", BAD_REPORTS)
async def test_bad_installed_reports_change_nothing(client, pool, make_key, body, message):
    creds = await registered_host(client, make_key)
    resp = await put(client, creds, "packages/installed", body, status=400)
    if message:
        assert resp["message_error"] == [message]
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    assert await pool.fetchval("SELECT installed_digest FROM hosts") is None


@pytest.mark.parametrize(
    "item",
    [{"name": "a", "version": "1", "security": "yes"}, {"name": "a", "version": "1", "security": 1},
     {"name": "a", "version": "1", "repository": 7}, {"name": "a"}],
)
async def test_bad_available_reports_change_nothing(client, pool, make_key, item):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/available", {"available_packages": [item]}, status=400)
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0


async def test_list_length_limit(aiohttp_client, settings, pool, make_key):
    client = await aiohttp_client(create_app(replace(settings, max_list_items=5)))
    creds = await registered_host(client, make_key)
    body = await put(client, creds, "packages/installed", installed({f"p{i}": "1" for i in range(6)}), status=400)
    assert body["message_error"] == ["Too many packages: 6 (at most 5)"]
    await put(client, creds, "packages/installed", installed({f"p{i}": "1" for i in range(5)}))


@pytest.mark.slow
async def test_several_megabyte_reports_are_fine(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    big = installed({f"package-with-a-rather-long-name-{i}": f"{i}.0.0-1+really.long.version.string" for i in range(40_000)})
    await put(client, creds, "packages/installed", big)
    await run_worker()
    assert await package_count(pool) == 40_000


async def test_reports_need_host_credentials(client, make_key):
    resp = await client.put("/api/v2/host/packages/installed", json=installed({"a": "1"}), headers=bearer(await make_key("admin")))
    assert resp.status == 403


async def test_utf8_takes_the_full_path_and_bad_bytes_are_refused(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    headers = host_auth(*creds[:2])
    bad = b'{"installed_packages": [{"name": "pkg-\xff", "version": "1"}]}'
    resp = await client.put("/api/v2/host/packages/installed", data=bad, headers=headers)
    assert resp.status == 400
    good = '{"installed_packages": [{"name": "pkg-é", "version": "1"}, {"name": "b", "version": "2"}]}'.encode()
    resp = await client.put("/api/v2/host/packages/installed", data=good, headers=headers)
    assert resp.status == 200 and (await resp.json())["packages"] == 2
    await run_worker()
    assert [r["name"] for r in await inventory(pool, creds[2])] == ["b", "pkg-é"]
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'done'") == 1


def test_fast_count_counts_items_and_leaves_braces_to_the_full_path():
    def body(kind, items):
        return json.dumps({reports.BODY_KEYS[kind]: items}).encode()

    pkgs = [{"name": f"p{i}", "version": "1"} for i in range(3)]
    assert reports.fast_count("installed", body("installed", pkgs), 10) == 3
    avail = [{**p, "repository": "http://deb.debian.org/debian", "security": False} for p in pkgs]
    assert reports.fast_count("available", body("available", avail), 10) == 3
    # A brace in any string would be counted as an item: such a body takes the full check.
    avail[0]["repository"] = "http://mirror/{branch}"
    assert reports.fast_count("available", body("available", avail), 10) is None
    assert reports.check_items("available", avail, 10) == 3
    assert reports.fast_count("installed", body("installed", [{"name": "a{b}", "version": "1"}]), 10) is None


async def test_posting_buckets_and_bits_agree(pool):
    from app.hosts.inventory import POSTING_BUCKET, _hosts_text, posting_bit
    from functools import reduce
    from operator import or_

    assert await pool.fetchval("SELECT posting_bucket($1)", 10 * POSTING_BUCKET + 3) == 10
    hosts = [10 * POSTING_BUCKET, 10 * POSTING_BUCKET + 3, 11 * POSTING_BUCKET - 1]
    for h in hosts:
        assert await pool.fetchval("SELECT posting_bit($1)::text", h) == format(posting_bit(h), f"0{POSTING_BUCKET}b")
    # The worker's bitmaps as the writes read them, and back to host ids.
    lists = [hosts, hosts[1:], hosts[2:], []]
    bitmaps = {(n, 10): reduce(or_, map(posting_bit, hs), 0) for n, hs in enumerate(lists)}
    ids, bits = _hosts_text([(n, 10) for n in range(len(lists))], bitmaps)
    got = await pool.fetch("SELECT posting_ids(10, coalesce(posting_bit(h), b::bit(400), B'0'::bit(400))) AS ids"
                           " FROM unnest($1::text::int8[], $2::text::text[]) WITH ORDINALITY AS u(h, b, i) ORDER BY i",
                           ids, bits)
    assert [r["ids"] for r in got] == [hosts, hosts[1:], hosts[2:], []]


def test_a_ranges_bitmaps_are_each_entrys_hosts():
    """_RangeBits against the plain answer: hosts of a few images (each near one template, with its own
    extra and missing entries), more images than templates, hosts of their own, and small sets."""
    import random

    from app.hosts.inventory import POSTING_BUCKET, _RangeBits, posting_bit

    rng = random.Random(7)
    images = [set(rng.sample(range(1, 5000), 1000)) for _ in range(_RangeBits.TEMPLATES + 3)]
    for n_images in (1, 3, len(images)):
        ranges, want = _RangeBits(), {}
        for h in range(3 * POSTING_BUCKET, 4 * POSTING_BUCKET):
            kind = rng.random()
            if kind < 0.1:
                ids = set(rng.sample(range(1, 5000), rng.choice([1, 5, 300, 1000])))  # its own
            else:
                ids = set(images[h % n_images])
                ids -= set(rng.sample(sorted(ids), rng.randint(0, 60)))
                ids |= set(rng.sample(range(5000, 6000), rng.randint(0, 60)))
            ranges.add(ids, posting_bit(h))
            for i in ids:
                want[i] = want.get(i, 0) | posting_bit(h)
        assert ranges.done() == want


def test_hosts_whose_new_versions_were_made_together_are_each_near_their_images_template():
    """The first inventories of one image's hosts, each with a few dozen versions of its own whose entries were
    made together (consecutive ids, as the first report that brings them makes them): every host after the
    first is served by the image's template in its range's bitmaps, and found near the set checked for names
    given twice. (A set of ints iterates by value modulo its table's size: probing its first few ids picked
    the host's own versions, and most hosts were then handled id by id.)"""
    from app.hosts.inventory import POSTING_BUCKET, _RangeBits, posting_bit

    d = inventory_store.Dictionary(100_000)
    image = list(range(1, 2001))
    for i in image:
        d._add(f"p{i}", "", "1", i)
    ranges, next_id = _RangeBits(), 2001
    for n, h in enumerate(range(POSTING_BUCKET, 2 * POSTING_BUCKET)):
        own = image[(n * 37) % 1900:(n * 37) % 1900 + 40]  # 40 packages at a version of its own
        ids = (set(image) - set(own)) | set(range(next_id, next_id + 40))
        for i, replaced in zip(range(next_id, next_id + 40), own):
            d._add(f"p{replaced}", "", "2", i)
        next_id += 40
        near = ranges.add(ids, posting_bit(h))
        assert n == 0 or (near is not None and near[0] is ranges.templates[0][0]), n
        assert n == 0 or d._near_checked(ids) is not None, n
        assert not d.names_twice(ids, ids)
    assert len(ranges.templates) == 1 and len(d.checked) == 1


async def test_new_sets_are_written_as_a_template_and_their_differences(pool):
    """A batch's new sets go to PostgreSQL as templates (one per image its hosts' bitmaps matched) less and plus
    each host's differences: every stored set is exactly the host's, sorted, whatever its template; hosts of
    their own, small and empty sets too; and the posting rows agree."""
    import random
    from datetime import datetime, timezone

    from app.hosts.inventory import POSTING_BUCKET, HostPlan, _RangeBits, write_plans

    rng = random.Random(11)
    images = [set(rng.sample(range(1, 4000), 600)) for _ in range(_RangeBits.TEMPLATES + 2)]
    want, plans, now = {}, [], datetime.now(timezone.utc)
    for n in range(2 * POSTING_BUCKET - 150, 2 * POSTING_BUCKET + 150):  # two ranges
        kind = rng.random()
        if kind < 0.1:
            ids = set(rng.sample(range(1, 6000), rng.choice([0, 3, 300, 600])))  # its own, small or empty
        else:
            ids = set(images[n % (3 if n % 7 else len(images))])
            ids -= set(rng.sample(sorted(ids), rng.randint(0, 40)))
            ids |= set(rng.sample(range(4000, 6000), rng.randint(0, 40)))
        want[n] = sorted(ids)
        plans.append(HostPlan(n, {}, ids=ids, since=now, added_ids=set(ids), inventory_at=now))
    await pool.execute("INSERT INTO hosts (id, hostname, ip, auth_id, token_digest) SELECT h, 'h' || h, '10.0.0.1',"
                       " 'id' || h, '' FROM unnest($1::bigint[]) h", list(want))
    async with pool.acquire() as conn:
        await write_plans(conn, plans)
    got = {r["host_id"]: r["ids"] for r in await pool.fetch("SELECT host_id, ids FROM host_sets")}
    assert got == want
    await check_postings(pool)


async def test_a_batch_inserting_a_buckets_new_rows_waits_for_another_writer_of_that_bucket(pool):
    """Another worker's transaction inserted a row of the same (entry, bucket) under the bucket's advisory
    lock: this batch's write waits for its commit, then adds its host to that row instead of inserting it."""
    import asyncio
    from datetime import datetime, timezone

    from app.hosts.inventory import POSTING_LOCK, HostPlan, write_plans

    now = datetime.now(timezone.utc)
    await pool.execute("INSERT INTO hosts (id, hostname, ip, auth_id, token_digest) SELECT h, 'h' || h, '10.0.0.1',"
                       " 'id' || h, '' FROM unnest($1::bigint[]) h", [801, 802])
    async with pool.acquire() as other, pool.acquire() as conn:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock($1, 2)", POSTING_LOCK)
        await other.execute("INSERT INTO package_hosts (version_id, bucket, hosts) VALUES (5, 2, posting_bit(801))")
        write = asyncio.create_task(write_plans(conn, [HostPlan(802, {}, ids={5, 6}, since=now, added_ids={5, 6},
                                                                inventory_at=now)]))
        for _ in range(100):  # until it waits for the lock
            if await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                break
            await asyncio.sleep(0.02)
        assert not write.done()
        await tx.commit()
        await write
    rows = {r["version_id"]: r["hosts"] for r in await pool.fetch(
        "SELECT version_id, posting_ids(bucket, hosts) AS hosts FROM package_hosts WHERE bucket = 2 AND version_id > 0")}
    assert rows == {5: [801, 802], 6: [802]}


async def test_state_and_since_come_from_the_history(client, pool, make_key, run_worker):
    """A package removed then added back is `installed` since it came back; an unchanged one keeps the
    baseline's time; the wire's Date/Time are those of the report that changed it."""
    creds = await registered_host(client, make_key)
    other = await registered_host(client, make_key, "web02")
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "vim": "9.0-1"}))
    await put(client, other, "packages/installed", installed({"bash": "5.1-1", "vim": "9.0-1"}))
    await run_worker()
    await pool.execute("UPDATE host_sets SET since = '2026-01-02 03:04:05+00'")
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1"}))
    await run_worker()
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "vim": "9.0-1"}))
    await run_worker()
    added_at = await pool.fetchval("SELECT max(at) FROM host_history WHERE host_id = $1", creds[2])
    resp = await client.get(f"/api/v2/host/{creds[2]}/installed", headers=bearer(await make_key("viewer")))
    body = await resp.json()
    assert resp.status == 200, body
    rows = {r["Name"]: (r["State"], r["Date"], r["Time"]) for r in body["results"]}
    assert rows == {"bash": ("inventored", "2026-01-02", "03:04:05"),
                    "vim": ("installed", added_at.strftime("%Y-%m-%d"), added_at.strftime("%H:%M:%S"))}
    assert await package_count(pool) == 4

    # Unregistering a host takes it out of the posting lists it shared with the other.
    resp = await client.delete("/api/v2/host/registering", headers=host_auth(*creds[:2]))
    assert resp.status == 200
    assert await package_count(pool) == 2
    # (entry 0: every host with a set, sql/025)
    having = ("SELECT array_agg(version_id = 0 ORDER BY version_id) FROM package_hosts"
              " WHERE bucket = posting_bucket($1) AND posting_has(hosts, $1)")
    assert await pool.fetchval(having, creds[2]) is None
    assert await pool.fetchval(having, other[2]) == [True, False, False]


async def test_a_host_id_beyond_int4_is_refused_not_truncated(pool):
    await pool.execute("INSERT INTO hosts (id, hostname, ip, auth_id, token_digest) VALUES (2147483648, 'big', '1', 'x', '')")
    await pool.execute("INSERT INTO host_reports (host_id, kind, digest, body) VALUES (2147483648, 'installed', '', $1)",
                       bodies.encode_body(b'{"installed_packages": [{"name": "a", "version": "1"}]}', True))
    out = await inventory_store.apply_pending(pool, [2147483648])
    assert isinstance(out[2147483648], ValueError) and "int4" in str(out[2147483648])
    assert await pool.fetchval("SELECT count(*) FROM host_sets") == 0
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 1  # still pending


async def test_a_reset_dictionary_empties_the_workers_cache(client, pool, make_key, run_worker):
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "vim": "9.0-1"}))
    await run_worker()
    assert inventory_store.dictionary().ids
    await pool.execute("DELETE FROM hosts; DELETE FROM package_hosts; DELETE FROM package_versions;"
                       " ALTER TABLE package_versions ALTER COLUMN id RESTART")
    await client.app[resources.INTAKE].known.refresh(pool)  # a server's copy forgets the reset entries at its next read
    creds = await registered_host(client, make_key, "web03")
    await put(client, creds, "packages/installed", installed({"vim": "9.0-1", "curl": "7.88-1"}))
    await run_worker()
    assert {r["name"]: r["version"] for r in await inventory(pool, creds[2])} == {"vim": "9.0-1", "curl": "7.88-1"}
    await check_postings(pool)


async def test_a_dictionary_emptied_and_filled_past_the_caches_ids_empties_them(client, pool, make_key, run_worker):
    """A dictionary emptied (a database reset or restored), then filled past the highest id the worker's cache and a
    server's copy hold (by other processes) before either looks: the sequence alone does not tell, the entry now at
    that id does. Both forget their entries, and the next inventory is named and stored by the new ones."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "vim": "9.0-1"}))
    await run_worker()
    known = client.app[resources.INTAKE].known
    await known.refresh(pool)
    cache = inventory_store.dictionary()
    assert cache.max_id and known.max_id == cache.max_id
    await pool.execute("DELETE FROM hosts; DELETE FROM package_hosts; DELETE FROM package_versions;"
                       " ALTER TABLE package_versions ALTER COLUMN id RESTART")
    # Other entries take every id the caches knew, and more.
    await pool.execute("INSERT INTO package_versions (name, arch, version)"
                       " SELECT 'other-' || i, '', '1' FROM generate_series(1, $1) AS i", cache.max_id + 5)
    await known.refresh(pool)
    assert inventory_store.item_key("bash", "5.1-1") not in known.ids and known.max_id == cache.max_id + 5
    creds = await registered_host(client, make_key, "web03")
    await put(client, creds, "packages/installed", installed({"vim": "9.0-1", "curl": "7.88-1"}))
    await run_worker()
    assert inventory_store.item_key("bash", "5.1-1") not in inventory_store.dictionary().ids
    assert {r["name"]: r["version"] for r in await inventory(pool, creds[2])} == {"vim": "9.0-1", "curl": "7.88-1"}
    await check_postings(pool)


def test_the_dictionary_cache_is_kept_while_a_batch_plans_and_cleared_only_by_a_reset():
    d = inventory_store.Dictionary(1000)
    for i in range(1, 1501):
        d._add(f"p{i}", "", "1.0", i)
    d.planning = 1  # another batch is between its lookups and its use of them
    d.check(last_id=10, known_max=1500)
    assert len(d.keys) == 1500 and len(d.ids) == 1500
    d.planning = 0
    # Entries up to 1,500 cached by a batch that ran while this one read the last id (1,200): no reset.
    d.check(last_id=1200, known_max=1200)
    assert 1500 in d.keys and len(d.keys) == 750  # trimmed to 3/4 of the limit, oldest first
    assert 1 not in d.keys and len(d.ids) == 750
    d.check(last_id=5, known_max=1500)  # the dictionary was emptied (a database reset)
    assert not d.keys and not d.ids and d.max_id == 0 and d.max_key is None
    d._add("p1", "", "1.0", 1)
    d.check(last_id=9, known_max=1, replaced=True)  # emptied, then filled past id 1 by others
    assert not d.keys and d.max_id == 0


def test_the_dictionary_cache_stays_bounded_within_a_batch_and_forgets_names_it_no_longer_holds():
    """Trimmed before each chunk (not only each batch): a burst of hosts whose versions nobody shares adds a
    chunk's entries at a time. Names are numbered again from the entries kept, so names seen once do not pile up,
    and the kept entries still answer by name."""
    d = inventory_store.Dictionary(1000)
    for chunk in range(20):
        d.trim()
        for i in range(chunk * 400, chunk * 400 + 400):
            d._add(f"host{i}-only", "", f"1.{i}", i + 1)
        assert len(d.keys) <= 1400 and len(d.name_numbers) <= 1400
    d.trim()
    assert len(d.keys) == len(d.ids) == 750 and len(d.name_numbers) == 750
    assert d.version_in({8000}, "host7999-only") == "1.7999" and d.version_in({8000}, "host0-only") is None
    assert not d.names_twice({7998, 7999, 8000}, {7998, 7999, 8000})
    d.planning = 1      # while a batch plans, nothing goes
    for i in range(8000, 8500):
        d._add(f"late{i}", "", "1.0", i + 1)
    d.trim()
    assert len(d.keys) == 1250


def test_a_name_given_twice_is_found_in_a_set_near_one_checked_before():
    """A large set with one id per name is kept as checked; a set near it has only the ids it lacks checked,
    and a name twice among them, or between one of them and the rest, is still found."""
    d = inventory_store.Dictionary(10_000)
    for n in range(600):
        for v in range(3):
            d._add(f"p{n}", "", f"1.{v}", n * 3 + v + 1)  # ids 3n+1 .. 3n+3: three versions of p<n>
    first = {n * 3 + 1 for n in range(500)}
    assert not d.names_twice(first, first) and [c for c, _ in d.checked] == [first]
    near = (first - {301, 601}) | {302, 602, 1501}  # p100, p200 at another version, and a name the first lacks
    assert d._near_checked(near)[0] == {302, 602, 1501}
    assert not d.names_twice(near, near)
    assert d.names_twice(near | {902}, near | {902})          # p300 twice: its 1.0 (checked) and 1.1
    assert d.names_twice(near | {1502}, near | {1502})        # p500 twice, both beyond the checked set
    far = {n * 3 + 2 for n in range(500)}                     # near none: checked whole, and kept
    assert not d.names_twice(far, far) and [c for c, _ in d.checked] == [far, first]
    assert d.names_twice(far | {1}, far | {1}) and d.checked[0][0] == far
    d.limit = 1000
    d.trim()  # names numbered again: the checked sets (by name number) go
    assert d.checked == []


async def _no_learning(pool, raw: bytes) -> bool:
    """In place of KnownVersions.learn: a report the copy lacks is stored whole."""
    return False


@contextlib.contextmanager
def _inventory_settings(monkeypatch, cache_limit: int | None = None, **env: str):
    """The diff worker's settings from `env` (DEPOT_... variables) and, if given, its cache limited to `cache_limit`
    entries (the cache of the database of the batch that ran last); all restored after. Yields that cache."""
    d = inventory_store.dictionary()
    limit = d.limit
    if cache_limit is not None:
        d.limit = cache_limit
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inventory_store._settings.cache_clear()
    try:
        yield d
    finally:
        d.limit = limit
        monkeypatch.undo()
        inventory_store._settings.cache_clear()


async def test_two_batches_planning_by_turns_keep_the_cache_bounded(client, pool, make_key, monkeypatch):
    """A worker plans its next batch while the one before writes: the cache is still trimmed before every
    chunk, whichever batch plans it, and a batch of hosts that bring many new versions is read fewer hosts
    at a time (here 1,500 new entries a part: two hosts' 600). The reports are stored whole (the server makes
    no entry), so the batches make the entries, slowly, and plan side by side."""
    monkeypatch.setattr(client.app[resources.INTAKE].known, "learn", _no_learning)
    hosts = [await registered_host(client, make_key, f"web{i}") for i in range(12)]
    for i, creds in enumerate(hosts):
        await put(client, creds, "packages/installed", installed({f"h{i}-pkg-{j}": f"{i}.{j}-1" for j in range(600)}))
    ids = [await pool.fetchval("SELECT id FROM hosts WHERE hostname = $1", f"web{i}") for i in range(12)]
    async with pool.acquire() as conn:
        await inventory_store._check_dictionary(conn)   # the cache of this database, as a batch finds it
    chunks, cached, skipped = [], [], []
    plan, trim = inventory_store.plan_chunk, inventory_store.Dictionary.trim

    async def watched(conn, by_host, out, parsed=None):
        chunks.append(len(by_host))
        try:
            return await plan(conn, by_host, out, parsed)
        finally:
            cached.append(len(d.keys))

    def watched_trim(self):
        skipped.append(self.planning > 0)       # trim() does nothing while a chunk is planned
        return trim(self)

    resolve = inventory_store.Dictionary.resolve_ids

    async def slow_resolve(self, conn, keys):
        await asyncio.sleep(0.05)       # planning takes long: each batch's chunk starts while the other plans
        return await resolve(self, conn, keys)

    with _inventory_settings(monkeypatch, 1000, DEPOT_INVENTORY_CHUNK_HOSTS="3",
                             DEPOT_INVENTORY_WRITE_NEW_ENTRIES="1500") as d:
        monkeypatch.setattr(inventory_store, "plan_chunk", watched)
        monkeypatch.setattr(inventory_store.Dictionary, "trim", watched_trim)
        monkeypatch.setattr(inventory_store.Dictionary, "resolve_ids", slow_resolve)
        await asyncio.gather(inventory_store.apply_pending(pool, ids[:6]), inventory_store.apply_pending(pool, ids[6:]))
        # No chunk skips its trim, so the cache holds at most the limit and the entries of two chunks (the one
        # planned, and the one the other batch looked up before its turn).
        assert skipped and not any(skipped), skipped
        assert max(cached) <= 1000 + 2 * 3 * 600, cached
        # Each batch reads 3 hosts first, then 2 at a time (1,500 // 600): 3, 2 and the last one.
        assert sorted(chunks) == [1, 1, 2, 2, 3, 3], chunks
        assert await package_count(pool) == 12 * 600
        await check_postings(pool)
        # A later batch starts at the size the last chunk called for.
        more = [await registered_host(client, make_key, f"db{i}") for i in range(3)]
        for i, creds in enumerate(more):
            await put(client, creds, "packages/installed", installed({f"db{i}-pkg-{j}": "1" for j in range(600)}))
        chunks.clear()
        await inventory_store.apply_pending(pool, [await pool.fetchval(
            "SELECT id FROM hosts WHERE hostname = $1", f"db{i}") for i in range(3)])
        assert chunks == [2, 1], chunks


async def test_ids_looked_up_before_the_cache_lost_them_are_looked_up_again(client, pool, make_key, run_worker,
                                                                            monkeypatch):
    """plan_chunk takes the ids prefetch_entries found only while the cache has lost no entry since; here every
    entry goes in between (another batch's trim), and the changes are still named."""
    creds = await registered_host(client, make_key)
    await put(client, creds, "packages/installed", installed({"bash": "5.1-1", "curl": "7.88-1", "vim": "9.0-1"}))
    await run_worker()
    # Stored whole (the server makes no entry, as while it makes another report's): the worker looks its keys up.
    monkeypatch.setattr(client.app[resources.INTAKE].known, "learn", _no_learning)
    await put(client, creds, "packages/installed", installed({"bash": "5.2-1", "curl": "7.88-1", "git": "2.39-1"}))
    real, emptied = inventory_store.prefetch_entries, []

    async def then_emptied(conn, by_host):
        parsed = await real(conn, by_host)
        assert [len(p.found) - list(p.found).count(0) for p in parsed.values()] == [1]    # curl's id, known
        emptied.append(trim_the_cache_to_nothing())
        return parsed

    monkeypatch.setattr(inventory_store, "prefetch_entries", then_emptied)
    await run_worker()
    assert emptied == [True]
    assert await _history(pool, creds[2]) == [
        ("added", "git", "", None, "2.39-1"),
        ("removed", "vim", "", "9.0-1", None),
        ("upgraded", "bash", "", "5.1-1", "5.2-1"),
    ]
    await check_postings(pool)


async def test_a_batch_of_hosts_that_share_no_version_keeps_the_workers_cache_bounded(client, pool, make_key,
                                                                                   run_worker, monkeypatch):
    hosts = [await registered_host(client, make_key, f"web{i}") for i in range(6)]
    await put(client, hosts[0], "packages/installed", installed({"bash": "5.1-1"}))
    await run_worker()
    with _inventory_settings(monkeypatch, 1000, DEPOT_INVENTORY_CHUNK_HOSTS="1") as d:
        for i, creds in enumerate(hosts):
            await put(client, creds, "packages/installed", installed({f"pkg-{j}": f"{i}.{j}-1" for j in range(600)}))
        await run_worker()
        # At most the limit and one chunk's entries (6 x 600 without the trim before each chunk).
        assert len(d.keys) <= 1000 + 600
        assert await package_count(pool) == 6 * 600
        await check_postings(pool)


async def test_a_batch_that_brings_many_new_versions_is_written_in_parts(client, pool, make_key, run_worker,
                                                                         monkeypatch):
    """DEPOT_INVENTORY_WRITE_NEW_ENTRIES: the plans are written once they hold that many versions new to the fleet
    (each a new posting-list row), and the rest of the batch after; the outcome is the same as in one write."""
    hosts = [await registered_host(client, make_key, f"web{i}") for i in range(5)]
    writes: list[int] = []
    real = inventory_store.write_plans

    async def counted(conn, plans):
        writes.append(len(plans))
        return await real(conn, plans)

    with _inventory_settings(monkeypatch, DEPOT_INVENTORY_CHUNK_HOSTS="1", DEPOT_INVENTORY_WRITE_NEW_ENTRIES="1000"):
        monkeypatch.setattr(inventory_store, "write_plans", counted)
        for i, creds in enumerate(hosts):
            # Two hosts share their versions, three have their own: 600 new entries each.
            own = i if i >= 2 else 0
            await put(client, creds, "packages/installed", installed({f"pkg-{j}": f"{own}.{j}-1" for j in range(600)}))
        await run_worker()
        # 600 new versions with web0, none more with web1 (the same ones), 1,200 with web2: a part of three.
        assert writes == [3, 2]
        assert await package_count(pool) == 5 * 600
        assert await pool.fetchval("SELECT count(*) FROM package_versions") == 4 * 600
        await check_postings(pool)


@pytest.fixture
def reports_vacuum_bytes(monkeypatch):
    """Sets DEPOT_REPORTS_VACUUM_BYTES for the diff worker's code in this process."""
    def set_to(value: int) -> None:
        monkeypatch.setenv("DEPOT_REPORTS_VACUUM_BYTES", str(value))
        inventory_store._settings.cache_clear()

    yield set_to
    monkeypatch.undo()
    inventory_store._settings.cache_clear()


async def _reports_toast_bytes(pool) -> int:
    return await pool.fetchval(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'host_reports'::regclass")


async def test_a_drained_backlog_gives_its_report_space_back(client, pool, make_key, run_worker, reports_vacuum_bytes):
    hosts = [await registered_host(client, make_key, f"web{i}") for i in range(3)]
    body = installed({f"package-{i}": f"{i}.{i % 7}-1" for i in range(3000)})
    # The dead pages must stay until the worker's own vacuum: an autovacuum in between (a loaded machine) would
    # let the second round reuse them.
    await pool.execute("ALTER TABLE host_reports SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")
    # Nor may free space that earlier tests' reports left (the test database is emptied with DELETE) take them in.
    await pool.execute("VACUUM host_reports")
    try:
        await _drain_and_reclaim(client, pool, hosts, body, run_worker, reports_vacuum_bytes)
    finally:
        await pool.execute("ALTER TABLE host_reports RESET (autovacuum_enabled, toast.autovacuum_enabled)")


async def test_the_reclaiming_vacuum_waits_for_a_vacuum_that_holds_the_table(client, pool, make_key):
    """A vacuum (or autovacuum) holding host_reports delays the worker's, which then runs: skipping it would
    leave a drained backlog's pages to an autovacuum that may not truncate them."""
    import asyncio

    host = (await registered_host(client, make_key))[2]
    report = await pool.fetchval("INSERT INTO host_reports (host_id, kind, digest, body) VALUES ($1, 'installed',"
                                 " '\\x00', '\\x00') RETURNING id", host)
    await pool.execute("DELETE FROM host_reports WHERE id = $1", report)  # dead space for the vacuum
    count = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'host_reports'"
    before = await pool.fetchval(count)
    async with pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        await other.execute("LOCK TABLE host_reports IN SHARE UPDATE EXCLUSIVE MODE")  # what a vacuum holds
        reclaim = asyncio.create_task(inventory_store.reclaim_reports(pool, 1))
        await asyncio.sleep(0.5)
        assert not reclaim.done()
        await tx.commit()
        assert await reclaim
    for _ in range(50):  # (the statistics arrive a moment after the vacuum)
        if await pool.fetchval(count) == before + 1:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval(count) == before + 1


async def test_the_last_batch_to_write_vacuums_while_another_batchs_tasks_still_say_running(client, pool, make_key):
    """A batch that has written (its reports deleted) may not have marked its tasks done yet when the last one
    ends: the backlog is drained all the same, and that last batch vacuums, whichever process deleted the
    reports (the table's size counts them). A pending report, a queued diff, or a table below the threshold
    leaves it to a later batch."""
    host = (await registered_host(client, make_key))[2]
    await pool.execute("INSERT INTO tasks (kind, target, status) VALUES ('host_diff', 'host:999', 'running')")
    count = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'host_reports'"
    report = await pool.fetchval("INSERT INTO host_reports (host_id, kind, digest, body) VALUES ($1, 'installed',"
                                 " '\\x00', '\\x00') RETURNING id", host)
    assert not await inventory_store.reclaim_reports(pool, 1)   # a report pending
    await pool.execute("DELETE FROM host_reports WHERE id = $1", report)
    await pool.execute("INSERT INTO tasks (kind, target) VALUES ('host_diff', 'host:998')")
    assert not await inventory_store.reclaim_reports(pool, 1)   # a diff queued
    await pool.execute("DELETE FROM tasks WHERE status = 'queued'")
    size = await pool.fetchval("SELECT pg_table_size('host_reports')")
    assert not await inventory_store.reclaim_reports(pool, size + 1)   # not enough dead space
    before = await pool.fetchval(count)
    assert await inventory_store.reclaim_reports(pool, size)
    for _ in range(50):  # (the statistics arrive a moment after the vacuum)
        if await pool.fetchval(count) == before + 1:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval(count) == before + 1


async def _drain_and_reclaim(client, pool, hosts, body, run_worker, reports_vacuum_bytes) -> None:
    reports_vacuum_bytes(0)  # not vacuumed by the worker: the applied reports' pages stay
    for creds in hosts:
        await put(client, creds, "packages/installed", body)
    stored = await _reports_toast_bytes(pool)
    assert stored > 0
    await run_worker()
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 0
    assert await _reports_toast_bytes(pool) >= stored

    reports_vacuum_bytes(1)
    changed = installed({f"package-{i}": f"{i}.{i % 7}-2" for i in range(3000)})
    for creds in hosts:
        await put(client, creds, "packages/installed", changed)
    assert await _reports_toast_bytes(pool) > stored
    await run_worker()
    assert await _reports_toast_bytes(pool) == 0
    assert await package_count(pool) == 3 * 3000  # applied, then vacuumed
