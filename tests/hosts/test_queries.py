"""Fleet reads: /hosts/ family, /host/<id>/..., pagination, package search, who may read what."""
from __future__ import annotations

import orjson
import pytest

from app.hosts.inventory import seed_inventories
from tests.helpers import bearer, host_auth
from tests.hosts.helpers import register

PACKAGES = {
    "web01": {"openssl": "3.0.2-0ubuntu1.15", "php8.1-fpm": "8.1.2-1ubuntu2", "libstdc++6": "12.3.0-1", "lib_x": "1"},
    "web02": {"openssl": "3.0.2-0ubuntu1.14", "openssl-dev": "3.0.2-0ubuntu1.14", "libaxb": "1"},
    "db01": {"openssl": "1.1.1f-1ubuntu2", "postgresql": "16.1-1", "lib%x": "2"},
}
STATUS = {
    "web01": ("Ubuntu", "22.04", "5.15.0-89-generic", "x86_64", "web", "prod", 0),
    "web02": ("Ubuntu", "22.04", "5.15.0-91-generic", "x86_64", "web", "preprod", 1),
    "db01": ("linux mint", "21", "5.15.0-89-generic", "aarch64", None, "prod", 3),
}


@pytest.fixture
async def fleet(client, pool, make_key):
    """Three hosts with status, inventories and available counts (written directly, as a worker would)."""
    operator = await make_key("operator")
    hosts = {}
    for name in PACKAGES:
        creds = await register(client, operator, name)
        hosts[name] = creds
        os_, ver, kernel, arch, profile, env, available = STATUS[name]
        await pool.execute(
            "UPDATE hosts SET os = $2, os_version = $3, kernel = $4, arch = $5, profile = $6, env = $7,"
            " available_count = $8 WHERE id = $1",
            creds[2], os_, ver, kernel, arch, profile, env, available,
        )
        await seed_inventories(pool, [(creds[2], n, "", v) for n, v in PACKAGES[name].items()])
        for i in range(available):
            await pool.execute(
                "INSERT INTO host_available (host_id, name, version) VALUES ($1, $2, '9')", creds[2], f"upd{i}"
            )
    return hosts


@pytest.fixture
async def viewer(make_key):
    return bearer(await make_key("viewer"))


async def _get(client, path, headers, status=200):
    resp = await client.get(path, headers=headers)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_hosts_list_never_returns_credentials(client, fleet, viewer):
    body = await _get(client, "/api/v2/hosts", viewer)
    assert [h["Hostname"] for h in body["results"]] == ["web01", "web02", "db01"] and "pagination" not in body
    text = str(body)
    for auth_id, token, _ in fleet.values():
        assert auth_id not in text and token not in text


async def test_pagination(client, fleet, viewer, settings):
    body = await _get(client, "/api/v2/hosts/?page=2&per_page=2", viewer)
    assert [h["Hostname"] for h in body["results"]] == ["db01"]
    assert body["pagination"] == {"page": 2, "per_page": 2, "total": 3}
    body = await _get(client, "/api/v2/hosts/?page=5&per_page=2", viewer)
    assert body["results"] == [] and body["pagination"]["total"] == 3
    for bad in ("page=0", "per_page=0", "page=x", f"per_page={settings.max_per_page + 1}", "per_page=-1"):
        await _get(client, f"/api/v2/hosts/?{bad}", viewer, 400)


@pytest.mark.parametrize(
    "path, hostnames",
    [
        ("/api/v2/hosts/os/Ubuntu", ["web01", "web02"]),
        ("/api/v2/hosts/os/linux%20mint/21", ["db01"]),
        ("/api/v2/hosts/os/Ubuntu/20.04/", []),
        ("/api/v2/hosts/kernel/5.15.0-89-generic", ["db01", "web01"]),
        ("/api/v2/hosts/arch/aarch64", ["db01"]),
        ("/api/v2/hosts/profile/web", ["web01", "web02"]),
        ("/api/v2/hosts/environment/prod/", ["db01", "web01"]),
    ],
)
async def test_filters(client, fleet, viewer, path, hostnames):
    assert [h["Hostname"] for h in (await _get(client, path, viewer))["results"]] == hostnames


@pytest.mark.parametrize("what, message", [("os", "You must specify an OS"), ("kernel", "You must specify a kernel"),
                                           ("package/", "You must specify a package")])
async def test_filters_need_a_value(client, fleet, viewer, what, message):
    assert (await _get(client, f"/api/v2/hosts/{what}", viewer, 400))["message_error"] == [message]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("openssl", {"web01": ["openssl"], "web02": ["openssl", "openssl-dev"], "db01": ["openssl"]}),
        ("openssl?strict-name", {"web01": ["openssl"], "web02": ["openssl"], "db01": ["openssl"]}),
        ("openssl/3.0.2", {"web01": ["openssl"], "web02": ["openssl", "openssl-dev"]}),
        ("openssl/3.0.2-0ubuntu1.14?strict", {"web02": ["openssl"]}),
        ("openssl/3.0.2-0ubuntu1.14?strict-version", {"web02": ["openssl", "openssl-dev"]}),
        ("php8.1-fpm", {"web01": ["php8.1-fpm"]}),
        ("libstdc%2B%2B6", {"web01": ["libstdc++6"]}),
        ("libstdc++6?strict", {"web01": ["libstdc++6"]}),
        ("lib_", {"web01": ["lib_x"]}),  # `_` is not a wildcard
        ("lib*b", {"web02": ["libaxb"]}),  # `*` is
        ("*ssl-dev", {"web02": ["openssl-dev"]}),
        ("nothing", {}),
    ],
)
async def test_package_search(client, fleet, viewer, path, expected):
    body = await _get(client, f"/api/v2/hosts/package/{path}", viewer)
    assert {r["hostname"]: sorted(r["packages"]) for r in body["results"]} == expected
    for r in body["results"]:
        for name, version in r["packages"].items():
            assert PACKAGES[r["hostname"]][name] == version


async def test_package_search_pages_follow_hostnames_with_the_same_packages(client, fleet, viewer):
    whole = await _get(client, "/api/v2/hosts/package/openssl", viewer)
    assert [r["hostname"] for r in whole["results"]] == ["db01", "web01", "web02"]
    pages = []
    for page in (1, 2, 3):
        body = await _get(client, f"/api/v2/hosts/package/openssl?per_page=2&page={page}", viewer)
        assert body["pagination"] == {"page": page, "per_page": 2, "total": 3}
        pages.append(body["results"])
    assert [len(p) for p in pages] == [2, 1, 0]
    assert pages[0] + pages[1] == whole["results"]  # same hosts, order and packages (openssl-dev too)
    body = await _get(client, "/api/v2/hosts/package/openssl/3.0.2?per_page=1&page=2", viewer)
    assert [(r["hostname"], sorted(r["packages"])) for r in body["results"]] == [("web02", ["openssl", "openssl-dev"])]
    assert body["pagination"]["total"] == 2
    body = await _get(client, "/api/v2/hosts/package/nothing?per_page=2", viewer)  # no entry matches
    assert (body["results"], body["pagination"]["total"]) == ([], 0)


async def test_package_search_pages_read_dense_and_sparse_matches_alike(client, pool, make_key, viewer):
    """A page is read one of two ways (hosts in hostname order tested against the matching ids, or the
    matching hosts looked up and sorted) as the matches are dense or sparse: "common" (every host) is
    walked, "rare" (2 of 12) looked up, "half" walked for its first page only. Every page is the slice
    of the whole answer, whatever the way."""
    operator = await make_key("operator")
    names = [f"h{n:02d}" for n in (7, 3, 11, 0, 5, 9, 1, 10, 4, 8, 2, 6)]   # ids do not follow hostnames
    for i, hostname in enumerate(names):
        host_id = (await register(client, operator, hostname))[2]
        rows = [(host_id, "common", "", "1.0"), (host_id, "common", "i386", f"1.{i % 3}")]
        if i % 2:
            rows.append((host_id, "half", "", "2.0"))
        if i in (4, 9):
            rows.append((host_id, "rare", "", "3.0"))
        await seed_inventories(pool, rows)
    for package, total in (("common", 12), ("half", 6), ("rare", 2)):
        whole = (await _get(client, f"/api/v2/hosts/package/{package}?strict-name", viewer))["results"]
        assert len(whole) == total
        assert [r["hostname"] for r in whole] == sorted(r["hostname"] for r in whole)
        for per_page in (1, 2, 5):
            pages = []
            for number in range(1, total // per_page + 3):
                body = await _get(client, f"/api/v2/hosts/package/{package}?strict-name&per_page={per_page}"
                                          f"&page={number}", viewer)
                assert body["pagination"] == {"page": number, "per_page": per_page, "total": total}
                pages += body["results"]
            assert pages == whole, (package, per_page)
    common = (await _get(client, "/api/v2/hosts/package/common?strict-name&per_page=2&page=2", viewer))["results"]
    assert [r["hostname"] for r in common] == ["h02", "h03"]
    assert common[0]["packages"] == {"common": "1.0", "common:i386": f"1.{names.index('h02') % 3}"}


async def test_a_pages_packages_come_in_name_and_arch_order_as_in_the_whole_answer(client, pool, make_key, viewer):
    """A page's members are put in order apart from the whole answer's (queries._page_answer): both list
    a host's packages by name, then arch, whatever order their dictionary ids follow. In dpkg order and
    in rpm order (older-than, when the two pick different entries) alike."""
    operator = await make_key("operator")
    deb = (await register(client, operator, "deb01"))[2]
    rpm = (await register(client, operator, "rpm01"))[2]
    await pool.execute("UPDATE hosts SET os_family = 'Redhat' WHERE id = $1", rpm)
    # One row at a time, last name first: each entry's id is lower than those of the names before it.
    for name, arch in (("libz", ""), ("liby", "x86_64"), ("libb", "i386"), ("libb", ""), ("liba", "")):
        await seed_inventories(pool, [(deb, name, arch, "1.0+1"), (rpm, name, arch, "0.9")])
    # older-than takes an exact name: libb's two arches. 1.0+1 is older than 1.0.0 for dpkg only, so
    # the two orders pick different entries; 0.9 is older in both.
    for query, ordered in (("lib", ["liba", "libb", "libb:i386", "liby:x86_64", "libz"]),
                           ("lib*", ["liba", "libb", "libb:i386", "liby:x86_64", "libz"]),
                           ("libb?older-than=1.0.0", ["libb", "libb:i386"]),
                           ("libb?older-than=2", ["libb", "libb:i386"])):
        raw = await client.get(f"/api/v2/hosts/package/{query}", headers=viewer)
        whole = orjson.loads(await raw.read())["results"]
        assert [h["hostname"] for h in whole] == ["deb01", "rpm01"], query
        pages = []
        for number in (1, 2):
            sep = "&" if "?" in query else "?"
            raw = await client.get(f"/api/v2/hosts/package/{query}{sep}per_page=1&page={number}", headers=viewer)
            pages += orjson.loads(await raw.read())["results"]
        assert pages == whole, query
        for h in whole + pages:
            assert list(h["packages"]) == ordered, query  # (dict equality above does not see the order)


async def test_a_whole_answer_from_the_posting_rows_is_postgresqls_byte_for_byte(client, pool, make_key, viewer,
                                                                               monkeypatch):
    """A whole answer of a few entries is put together in Python from their posting rows
    (queries._whole_from_postings), its hosts read in hostname order or looked up by id as they are many
    or few; more entries than queries.WHOLE_FEW_ENTRIES are answered by PostgreSQL (the SQL path). Every way
    gives the same bytes: hosts in three posting ranges whose ids do not follow their names, several
    matching members per host, a hostname JSON must escape, a deleted host."""
    from app.hosts import queries

    operator = await make_key("operator")
    names = ["m05", "a01", "z09", "k03", "b02", "q07", "c04", "x08", "d06", "e10"]
    ids = []
    for n, hostname in enumerate(names):
        if n in (3, 7):  # the next host in the next range of 400 ids
            await pool.execute("SELECT setval('hosts_id_seq', (SELECT max(id) FROM hosts) + 400)")
        host_id = (await register(client, operator, hostname))[2]
        ids.append(host_id)
        rows = [(host_id, "openssl", "", f"3.0.{n % 3}")]
        if n % 2:
            rows += [(host_id, "openssl", "i386", "3.0.1"), (host_id, "openssl-dev", "", "3.0.1")]
        if n in (2, 6):
            rows.append((host_id, "rare", "", "1"))
        await seed_inventories(pool, rows)
    assert len({i // 400 for i in ids}) == 3
    await pool.execute("UPDATE hosts SET hostname = $2 WHERE id = $1", ids[4], 'b02 "q\\uoted" \x01 é')
    await pool.execute("DELETE FROM hosts WHERE id = $1", ids[8])
    questions = ["openssl", "openssl?strict-name", "openssl/3.0.1", "openssl/3.0.1?strict", "openssl*",
                 "openssl?strict-name&older-than=3.0.2", "rare?strict-name", "nothing"]

    async def answers() -> list[bytes]:
        got = []
        for question in questions:
            resp = await client.get(f"/api/v2/hosts/package/{question}", headers=viewer)
            assert resp.status == 200
            got.append(await resp.read())
        return got

    by_postgresql = await answers()
    assert len(orjson.loads(by_postgresql[0])["results"]) == 9
    first = orjson.loads(by_postgresql[0])["results"][0]
    assert (first["hostname"], list(first["packages"].items())) == (
        "a01", [("openssl", "3.0.1"), ("openssl:i386", "3.0.1"), ("openssl-dev", "3.0.1")])
    monkeypatch.setattr(queries, "WHOLE_FEW_ENTRIES", 0)
    assert await answers() == by_postgresql          # (0 entries allowed: the SQL path answers)
    monkeypatch.undo()
    for dense in (1, 10**9):                           # the hosts looked up by id, or read all in hostname order
        monkeypatch.setattr(queries, "WHOLE_DENSE", dense)
        calls = []
        original = queries._whole_from_postings

        async def counted(*args, **kwargs):
            answer = await original(*args, **kwargs)
            calls.append(answer is not None)
            return answer
        monkeypatch.setattr(queries, "_whole_from_postings", counted)
        assert await answers() == by_postgresql, dense
        assert calls == [True] * len(questions)
        monkeypatch.undo()


@pytest.mark.parametrize("bad", ["open ssl", "open'ssl", "a;b", "%3Cscript%3E", "lib%25"])
async def test_package_search_rejects_invalid_names(client, fleet, viewer, bad):
    body = await _get(client, f"/api/v2/hosts/package/{bad}", viewer, 400)
    assert body["message_error"] == ["Package name contains invalid characters"]


async def test_uptodate_and_outdated_do_not_overlap(client, fleet, viewer):
    up = (await _get(client, "/api/v2/hosts/uptodate", viewer))["results"]
    out = (await _get(client, "/api/v2/hosts/outdated", viewer))["results"]
    assert [h["Hostname"] for h in up] == ["web01"]
    assert [h["Hostname"] for h in out] == ["db01", "web02"]
    assert out[0]["Available_updates"]["Total"] == 3 and len(out[0]["Available_updates"]["Packages"]) == 3
    assert up[0]["Available_updates"] == {"Total": 0, "Packages": []}


async def test_who_may_read_what(client, fleet, make_key):
    web01, web02 = fleet["web01"], fleet["web02"]
    own = host_auth(*web01[:2])
    # A host reads its own endpoints and profiles, nothing else.
    assert len((await _get(client, f"/api/v2/host/{web01[2]}/installed", own))["results"]) == 4
    await _get(client, f"/api/v2/host/{web01[2]}/available", own)
    await _get(client, f"/api/v2/host/{web01[2]}/history/", own)
    for path in (f"/api/v2/host/{web02[2]}/installed", f"/api/v2/host/{web02[2]}/history", "/api/v2/hosts/",
                 "/api/v2/hosts/package/openssl", "/api/v2/hosts/outdated", f"/api/v2/host/{web02[2]}"):
        await _get(client, path, own, 403)
    await _get(client, "/api/v2/profile/", own)
    # A viewer reads everything; unknown hosts are 404.
    viewer = bearer(await make_key("viewer"))
    await _get(client, f"/api/v2/host/{web02[2]}/installed", viewer)
    assert (await _get(client, "/api/v2/host/999/installed", viewer, 404))["message_error"] == ["Host #999 does not exist."]
    await _get(client, "/api/v2/host/abc/installed", viewer, 404)
    await _get(client, "/api/v2/host/99999999999999999999999999/installed", viewer, 404)  # beyond bigint
    await _get(client, "/api/v2/host/99999999999999999999999", viewer, 404)  # past bigint: unknown, not a 500


async def test_installed_rows_and_pagination(client, fleet, viewer):
    web01 = fleet["web01"]
    body = await _get(client, f"/api/v2/host/{web01[2]}/installed?per_page=3", viewer)
    assert [r["Name"] for r in body["results"]] == ["lib_x", "libstdc++6", "openssl"]
    assert body["pagination"]["total"] == 4
    assert set(body["results"][0]) == {"Name", "Arch", "Version", "State", "Type", "Date", "Time"}


async def test_wrong_method_is_json_405(client, fleet, viewer):
    resp = await client.post("/api/v2/hosts/", headers=viewer)
    assert resp.status == 405 and (await resp.json())["message_error"] == ["Method not allowed"]


async def test_one_host_details(client, fleet, viewer):
    web01 = fleet["web01"]
    host = (await _get(client, f"/api/v2/host/{web01[2]}/", viewer))["results"]
    assert host["Hostname"] == "web01" and host["Kernel"] == "5.15.0-89-generic" and host["Available_updates"] == 0
    assert web01[0] not in str(host) and web01[1] not in str(host)
    own = (await _get(client, f"/api/v2/host/{web01[2]}", host_auth(*web01[:2])))["results"]
    assert own["Id"] == web01[2]


async def test_older_than_follows_each_hosts_order(client, pool, make_key, viewer):
    """1.0+1 is older than 1.0.0 for dpkg, newer for rpm: each host is judged in its own order."""
    operator = await make_key("operator")
    hosts = {}
    for name, family in (("deb01", "Debian"), ("rpm01", "Redhat"), ("rpm02", " CentOS "), ("none01", None)):
        hosts[name] = (await register(client, operator, name))[2]
        await pool.execute("UPDATE hosts SET os_family = $2 WHERE id = $1", hosts[name], family)
    await seed_inventories(pool, [
        (hosts["deb01"], "tool", "", "1.0+1"), (hosts["deb01"], "tool", "i386", "1.0+1"),
        (hosts["rpm01"], "tool", "x86_64", "1.0+1"), (hosts["rpm02"], "tool", "", "0.9"),
        (hosts["none01"], "tool", "", "1.0+1"), (hosts["none01"], "tools", "", "0.1"),
    ])
    body = await _get(client, "/api/v2/hosts/package/tool?older-than=1.0.0", viewer)
    assert body["results"] == [
        {"id": hosts["deb01"], "hostname": "deb01", "packages": {"tool": "1.0+1", "tool:i386": "1.0+1"}},
        {"id": hosts["none01"], "hostname": "none01", "packages": {"tool": "1.0+1"}},  # no family: dpkg
        {"id": hosts["rpm02"], "hostname": "rpm02", "packages": {"tool": "0.9"}},
    ]
    body = await _get(client, "/api/v2/hosts/package/tool?older-than=1.0.0&per_page=1&page=2", viewer)
    assert [h["hostname"] for h in body["results"]] == ["none01"] and body["pagination"]["total"] == 3
    body = await _get(client, "/api/v2/hosts/package/tool?older-than=0.1", viewer)
    assert body["results"] == []
    # Older in both orders: the same entries whatever the host's order, each page read as any other.
    whole = (await _get(client, "/api/v2/hosts/package/tool?older-than=2", viewer))["results"]
    assert [h["hostname"] for h in whole] == ["deb01", "none01", "rpm01", "rpm02"]
    assert whole[0]["packages"] == {"tool": "1.0+1", "tool:i386": "1.0+1"}
    pages = []
    for number in (1, 2, 3):
        body = await _get(client, f"/api/v2/hosts/package/tool?older-than=2&per_page=2&page={number}", viewer)
        assert body["pagination"]["total"] == 4
        pages += body["results"]
    assert pages == whole
    body = await _get(client, "/api/v2/hosts/package/tool?older-than=1.0%2B1&per_page=5", viewer)
    assert body["results"] == [{"id": hosts["rpm02"], "hostname": "rpm02", "packages": {"tool": "0.9"}}]
    for bad in ("x1", "1.0 2", "", "1" * 300):
        body = await _get(client, f"/api/v2/hosts/package/tool?older-than={bad}", viewer, status=400)
        assert body["message_error"]
    body = await _get(client, "/api/v2/hosts/package/tool/1.0?older-than=1.0", viewer, status=400)
    assert body["message_error"] == ["older-than takes an exact package name and no version"]
    spec = await (await client.get("/api/v2/openapi.json")).json()
    params = [p["name"] for op in spec["paths"].values() for m in op.values() if isinstance(m, dict)
              for p in m.get("parameters", [])]
    assert "older-than" in params


async def test_the_union_of_many_entries_is_exact_in_every_range(pool):
    """posting_union (sql/025) reads a few entries' rows, then checks the hosts they lack one by one, or
    reads every entry's rows: whichever way a range goes, its union is the one of all the entries' rows."""
    hosts = {5: "a", 6: "a2", 7: "b", 405: "a", 406: "b", 810: "a", 811: "none", 812: "b2", 1215: "a", 1216: "b"}
    await pool.execute("INSERT INTO hosts (id, hostname, ip, auth_id, token_digest)"
                       " SELECT h, 'u' || h, '10.0.0.1', 'u' || h, '' FROM unnest($1::bigint[]) h", list(hosts))
    rows = []
    for host_id, image in hosts.items():
        if image != "none":
            first = 0 if image.startswith("a") else 10
            version = "2" if image.endswith("2") else "1"   # another version of each: other entries
            rows += [(host_id, f"lib{first + i}", "", version) for i in range(10)]
        rows.append((host_id, f"site-{host_id}", "", "1"))
        rows.append((host_id, "zsh", "", "5.9"))
    await seed_inventories(pool, rows)
    await pool.execute("DELETE FROM hosts WHERE id = 1215")

    def ids(rows):
        return {r["bucket"]: r["hosts"] for r in rows}

    for prefix in ("lib", "site-", ""):
        entries = await pool.fetchval(
            "SELECT array_agg(id ORDER BY id) FROM package_versions WHERE starts_with(name, $1)", prefix)
        expected = ids(await pool.fetch(
            "SELECT bucket, posting_ids(bucket, bit_or(hosts)) AS hosts FROM package_hosts"
            " WHERE version_id = ANY($1::int4[]) GROUP BY bucket HAVING bit_count(bit_or(hosts)) > 0", entries))
        assert expected, prefix
        for probes, checks in ((64, 40), (1, 0), (2, 0), (2, 1), (4, 3), (8, 1)):
            got = ids(await pool.fetch("SELECT bucket, posting_ids(bucket, hosts) AS hosts"
                                       " FROM posting_union($1::int4[], $2, $3)", entries, probes, checks))
            assert got == expected, (prefix, probes, checks)
    # Entry 0: every host with a set (the deleted one gone from its range, the one without lib kept).
    everyone = ids(await pool.fetch("SELECT bucket, posting_ids(bucket, hosts) AS hosts FROM package_hosts"
                                    " WHERE version_id = 0"))
    assert everyone == {0: [5, 6, 7], 1: [405, 406], 2: [810, 811, 812], 3: [1216]}


@pytest.mark.parametrize("few_entries", [None, 0])
async def test_a_whole_answer_past_the_limit_is_refused_and_pages_still_work(aiohttp_client, pool, settings,
                                                                           fleet, viewer, monkeypatch, few_entries):
    """An answer asked for whole is held whole by the server: past DEPOT_MAX_ANSWER_BYTES it is a 400 that
    says to ask for pages, and the pages of the same question still answer. The same answers and refusals
    whether its rows are read all at once or a few at a time (queries.WHOLE_CHUNK), and whether a package's
    few entries are put together from their posting rows or (few_entries 0) by PostgreSQL."""
    from dataclasses import replace

    from app.domain_errors import Invalid
    from app.hosts import queries
    from app.main import create_app

    if few_entries is not None:
        monkeypatch.setattr(queries, "WHOLE_FEW_ENTRIES", few_entries)

    asks = [lambda **kw: queries.hosts_with_package(pool, "openssl", None, strict_name=False, strict_version=False,
                                                    page=queries.Page(), **kw),
            lambda **kw: queries.hosts_by_updates(pool, True, queries.Page(), **kw),
            lambda **kw: queries.hosts_by_updates(pool, False, queries.Page(), **kw)]
    answers = []
    for chunk in (queries.WHOLE_CHUNK, 1, 2):
        monkeypatch.setattr(queries, "WHOLE_CHUNK", chunk)
        for ask in asks:
            whole, total = await ask()
            text = orjson.dumps(whole)      # a Fragment: its text as is
            answers.append((chunk, text, total))
            at_limit, same_total = await ask(max_bytes=len(text))
            assert total >= 1 and (orjson.dumps(at_limit), same_total) == (text, total)
            with pytest.raises(Invalid):
                await ask(max_bytes=len(text) - 1)
    assert [a[1:] for a in answers[:3]] == [a[1:] for a in answers[3:6]] == [a[1:] for a in answers[6:]]
    assert len(orjson.loads(answers[0][1])) == 3  # (openssl: three hosts, so chunks of 1 and 2 read several)
    monkeypatch.undo()
    if few_entries is not None:
        monkeypatch.setattr(queries, "WHOLE_FEW_ENTRIES", few_entries)

    small = await aiohttp_client(create_app(replace(settings, max_answer_bytes=10)))
    for path, total in (("/api/v2/hosts/package/openssl", 3), ("/api/v2/hosts/outdated", 2),
                        ("/api/v2/hosts/uptodate", 1)):
        body = await _get(small, path, viewer, 400)
        assert body == {"return": 400, "rc": 400, "max_answer_bytes": 10,
                        "message_error": ["The answer is larger than 10 bytes: ask for it in pages (per_page)"]}
        paged = await _get(small, f"{path}?per_page=1", viewer)
        assert paged["pagination"]["total"] == total and len(paged["results"]) == 1
