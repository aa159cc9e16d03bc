"""The dashboard's sources page without a browser: the list (keys, mirrors, each mirror's last run) for
everyone, the API's actions for operators (add, import, key, delete, new mirror), the API's refusal text for
anyone else who posts, a clear 4xx page for bad input with nothing written, and no secret ever shown."""
from __future__ import annotations

import html
import re
from pathlib import Path

import aiohttp
import pytest

from tests.test_dashboard import csrf_of, login

pytestmark = pytest.mark.usefixtures("repo_db")
TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "source-templates"
DENIED = "You are not allowed to edit source repositories"


async def _as(client, make_key, role: str) -> str:
    client.session.cookie_jar.clear()
    await login(client, api_key=await make_key(role))
    return await csrf_of(client, "/sources")


def _alerts(text: str) -> str:
    return " | ".join(html.unescape(m) for m in re.findall(r'<p class="alert"[^>]*>(.*?)</p>', text, re.S))


def _deb(name: str, url: str, **extra) -> dict:
    return {"type": "deb", "name": name, "url": url, "dists": "stable", "components": "main", **extra}


async def _count(pool, table: str) -> int:
    return await pool.fetchval(f"SELECT count(*) FROM {table}")


async def test_operator_adds_a_source_with_its_key_and_sees_it(client, pool, make_key, upstream_key):
    token = await _as(client, make_key, "operator")
    form = _deb("debian", "https://mirror:hunter2-secret@deb.example.org/debian", description="Debian main",
                armored=upstream_key.armored())
    resp = await client.post("/sources", data={"csrf": token, **form}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"].startswith("/sources?done=created")
    row = await pool.fetchrow("SELECT id, definition, secrets FROM sources WHERE name = 'debian'")
    assert row["definition"]["url"] == "https://mirror@deb.example.org/debian"
    assert row["secrets"] == {"url_password": "hunter2-secret"}
    assert await pool.fetchval("SELECT fingerprint FROM source_keys WHERE source_id = $1", row["id"]) == \
        upstream_key.fingerprint
    page = await (await client.get(resp.headers["Location"])).text()
    assert "Source repository debian (deb) added." in html.unescape(page)
    assert upstream_key.fingerprint in page and "Debian main" in page and "https://mirror@deb.example.org/debian" in page
    assert "hunter2" not in page and "no mirror" in page


async def test_import_a_template_and_no_secret_is_shown(client, pool, make_key):
    token = await _as(client, make_key, "operator")
    template = (
        "description: test\ntype: deb\nrepositories:\n"
        "  - name: vendor\n    type: deb\n    url: https://u:pa55word-xyz@vendor.example.com/apt\n"
        "    distributions:\n      - name: stable\n        components:\n          - name: main\n"
        "        gpgkeys:\n          - link: https://vendor.example.com/key.asc\n"
        "    ssl-authentication:\n      certificate: CERT-TEXT\n      private-key: PRIVATE-KEY-TEXT-42\n")
    data = aiohttp.FormData()
    data.add_field("csrf", token)
    data.add_field("template", template.encode(), filename="vendor.yml", content_type="text/yaml")
    resp = await client.post("/sources/import", data=data, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    page = html.unescape(await (await client.get(resp.headers["Location"])).text())
    assert "Template imported: vendor (deb)." in page and "https://vendor.example.com/key.asc" in page
    assert "TLS client certificate" in page
    assert "pa55word" not in page and "PRIVATE-KEY-TEXT" not in page
    # The reference's own template files import (their keys are named by link, recorded, not fetched).
    for kind in ("deb", "rpm"):
        data = aiohttp.FormData()
        data.add_field("csrf", token)
        data.add_field("template", (TEMPLATES / kind / "nginx.yml").read_bytes(), filename="nginx.yml")
        assert (await client.post("/sources/import", data=data, allow_redirects=False)).status == 303
    assert {(r["type"], r["name"]) for r in await pool.fetch("SELECT type, name FROM sources")} >= \
        {("deb", "vendor"), ("deb", "nginx"), ("rpm", "nginx")}


async def _import(client, token, **files) -> aiohttp.ClientResponse:
    data = aiohttp.FormData()
    data.add_field("csrf", token)
    for field, content in files.items():
        data.add_field(field, content, filename=f"{field}.yml")
    return await client.post("/sources/import", data=data)


async def test_bad_input_is_a_clear_4xx_and_writes_nothing(client, pool, make_key, settings, upstream_key):
    token = await _as(client, make_key, "operator")
    cases = [
        (_deb("bad name", "https://x.example/d"), 400, "letters, digits, '-' and '_' only"),
        (_deb("s1", "ftp://x.example/d"), 400, "url must start with http:// or https://"),
        (_deb("s1", "https://x.example/d", dists=""), 400, "distributions is required"),
        (_deb("s1", "https://x.example/d", components=""), 400, "components is required"),
        (_deb("s1", "https://x.example/d", armored="not a key"), 400, "ASCII-armored OpenPGP public key block"),
        ({"type": "rpm", "name": "r1", "url": "https://x.example/el"}, 400, "releasever is required"),
        ({"type": "zip", "name": "z", "url": "https://x.example"}, 400, "type"),
        (_deb("s1", "https://x.example/d", description="a\x00b"), 400, "NUL"),
    ]
    for form, status, message in cases:
        resp = await client.post("/sources", data={"csrf": token, **form})
        text = await resp.text()
        assert resp.status == status and message in _alerts(text), (form, resp.status, _alerts(text))
    # A refused form is shown again with what was typed, but never a URL's password.
    resp = await client.post("/sources", data={"csrf": token, **_deb("s1", "https://u:pw-visible@x.example/d",
                                                                     dists="")})
    assert resp.status == 400 and "pw-visible" not in await resp.text()
    assert await _count(pool, "sources") == 0

    for files, status, message in [
        ({}, 400, "You must provide a template file"),
        ({"other": b"x"}, 400, 'The file must be prefixed with "template"'),
        ({"template": b"a: [unclosed"}, 400, "Could not import source repositories: invalid YAML"),
        ({"template": b"x: &a [1]\ny: *a\n"}, 400, "YAML aliases are not accepted"),
        ({"template": b"repositories:\n  - name: q\n    type: deb\n    url: https://q.example\n"}, 400,
         "distributions is required"),
        ({"template": b"#" * (settings.source_template_max_bytes + 1)}, 413, "The template is larger than"),
    ]:
        resp = await _import(client, token, **files)
        text = await resp.text()
        assert resp.status == status and message in _alerts(text), (files.keys(), resp.status, _alerts(text))
    assert await _count(pool, "sources") == 0

    # Keys: not a key, a secret key, an unknown source.
    resp = await client.post("/sources", data={"csrf": token, **_deb("s1", "https://x.example/d")},
                             allow_redirects=False)
    assert resp.status == 303
    for armored, message in (("junk", "ASCII-armored"), ("", "armored"),
                             ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n-----BEGIN PGP PUBLIC KEY BLOCK-----",
                              "public key only")):
        resp = await client.post("/sources/deb/s1/keys", data={"csrf": token, "armored": armored})
        assert resp.status == 400 and message in _alerts(await resp.text()), armored
    assert await _count(pool, "source_keys") == 0
    resp = await client.post("/sources/deb/nope/keys", data={"csrf": token, "armored": upstream_key.armored()})
    assert resp.status == 404 and "Source repository nope (deb) does not exist" in await resp.text()
    resp = await client.post("/sources/zip/s1/delete", data={"csrf": token})
    assert resp.status == 400 and "Invalid source repository type (deb or rpm)" in await resp.text()
    # No CSRF token: refused, nothing written.
    resp = await client.post("/sources/deb/s1/delete", data={})
    assert resp.status == 403 and await _count(pool, "sources") == 1


async def test_below_operator_reads_and_is_refused_with_the_reference_text(client, pool, make_key, upstream_key):
    token = await _as(client, make_key, "operator")
    await client.post("/sources", data={"csrf": token, **_deb("s1", "https://x.example/d")})
    for role in ("viewer", "uploader"):
        token = await _as(client, make_key, role)
        page = await (await client.get("/sources")).text()
        assert 'data-source="deb/s1"' in page and 'id="nav-sources"' in page
        assert "source-create" not in page and "Add key" not in page and "/delete" not in page
        for path, form in (("/sources", _deb("s2", "https://y.example/d")),
                           ("/sources/deb/s1/keys", {"armored": upstream_key.armored()}),
                           ("/sources/deb/s1/delete", {}),
                           ("/sources/deb/s1/mirrors", {"name": "m", "dist": "stable", "section": "main",
                                                        "arch": "amd64"})):
            resp = await client.post(path, data={"csrf": token, **form})
            assert resp.status == 403 and DENIED in await resp.text(), (role, path)
        resp = await _import(client, token, template=b"repositories: []")
        assert resp.status == 403 and DENIED in await resp.text()
    assert await _count(pool, "sources") == 1 and await _count(pool, "source_keys") == 0
    assert await _count(pool, "repos") == 0


async def test_mirror_made_run_and_listed_then_delete_refused_while_used(site, client, pool, make_key, upstream_key,
                                                                         run_mirror):
    token = await _as(client, make_key, "operator")
    resp = await client.post("/sources", data={"csrf": token, **_deb("local", site.url,
                                                                     armored=upstream_key.armored())},
                             allow_redirects=False)
    assert resp.status == 303
    # A mirror repository of it, from its row's form (the API's RepoCreate and create_mirror_repo).
    resp = await client.post("/sources/deb/local/mirrors", data={"csrf": token, "name": "local-main", "dist": "stable",
                                                                 "section": "main", "arch": "amd64 all",
                                                                 "keepLatest": "x"})
    assert resp.status == 400 and "keepLatest must be a number" in _alerts(await resp.text())
    resp = await client.post("/sources/deb/local/mirrors", data={"csrf": token, "name": "local-main", "dist": "oldstable",
                                                                 "section": "main", "arch": "amd64"})
    assert resp.status == 400 and "has no distribution oldstable" in _alerts(await resp.text())
    assert await _count(pool, "repos") == 0
    resp = await client.post("/sources/deb/local/mirrors", data={"csrf": token, "name": "local-main", "dist": "stable",
                                                                 "section": "main", "arch": "amd64 all",
                                                                 "gpgCheck": "true"}, allow_redirects=False)
    assert resp.status == 303
    repo_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    row = await pool.fetchrow("SELECT arches, gpg_check FROM mirrors WHERE repo_id = $1", repo_id)
    assert list(row["arches"]) == ["amd64", "all"] and row["gpg_check"] is True
    page = await (await client.get("/sources")).text()
    assert "local-main" in page and "never run" in page

    task = await run_mirror(repo_id)
    assert task["Status"] == "done", task["Error"]
    snap = task["Result"]["snapshot"]
    page = await (await client.get("/sources")).text()
    mirror = re.search(rf'<div class="mirror" data-repo="{repo_id}">(.*?)</div>\s*</div>', page, re.S).group(1)
    assert f'href="/repos/{repo_id}"' in mirror and f'href="/tasks/{task["Id"]}"' in mirror
    assert "st-done" in mirror and "4 files downloaded" in mirror
    assert f'href="/repos/{repo_id}?snapshot={snap}"' in mirror

    # A failed run shows its reason.
    delta = site.archive.add("delta")
    site.archive.build()
    delta.write_bytes(delta.read_bytes()[:-4] + b"XXXX")      # the index gives the good file's SHA-256
    failed = await run_mirror(repo_id)
    assert failed["Status"] == "error"
    page = html.unescape(await (await client.get("/sources")).text())
    assert "st-error" in page and "no snapshot made" in page

    # Deleting the source is refused while the mirror uses it (the API's 409 and words), then allowed.
    resp = await client.post("/sources/deb/local/delete", data={"csrf": token})
    assert resp.status == 409 and f"mirrored by repositories #{repo_id}" in _alerts(await resp.text())
    assert await _count(pool, "sources") == 1
    resp = await client.post(f"/repos/{repo_id}/delete", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303
    resp = await client.post("/sources/deb/local/delete", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303 and await _count(pool, "sources") == 0 and await _count(pool, "source_keys") == 0


async def test_the_api_gives_mirrors_and_last_runs_when_asked(site, make_mirror, run_mirror, client, admin_key):
    from tests.helpers import bearer

    repo_id = await make_mirror(site)
    h = bearer(admin_key)
    # The reference's shape unless asked.
    row = (await (await client.get("/api/v2/source/", headers=h)).json())["results"][0]
    assert set(row) == {"Id", "Definition", "Method"}
    row = (await (await client.get("/api/v2/source/deb/?mirrors=true", headers=h)).json())["results"][0]
    assert row["Mirrors"] == [{"Repo_id": repo_id, "Name": "mirror1", "Dist": "stable", "Section": "main",
                               "Releasever": None, "Arch": ["amd64", "all"], "Last_run": None}]
    task = await run_mirror(repo_id)
    row = (await (await client.get("/api/v2/source/?mirrors=1", headers=h)).json())["results"][0]
    run = row["Mirrors"][0]["Last_run"]
    assert run["Task_id"] == task["Id"] and run["Status"] == "done" and run["Downloaded"] == 4
    assert run["Snapshot_id"] == task["Result"]["snapshot"] and run["Unchanged"] is False and run["Error"] is None
    r = await client.get("/api/v2/source/?mirrors=perhaps", headers=h)
    assert r.status == 400
