"""Source repositories over HTTP: the reference's CI steps with its template format, Depot's own
create/replace/delete, per-source keys, secrets never shown, refusals."""
from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import bearer

TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "source-templates"
DENIED = "You are not allowed to edit source repositories"


def _form(path: Path, field: str = "template") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(field, path.read_bytes(), filename=path.name, content_type="application/octet-stream")
    return form


async def test_reference_ci_admin_steps(client, admin_key):
    """The reference's admin source-repository steps, in order: each a 2xx JSON answer."""
    h = bearer(admin_key)
    for path in ("/api/v2/source/", "/api/v2/source/deb/", "/api/v2/source/rpm/", "/api/v2/source/deb/nginx"):
        r = await client.get(path, headers=h)
        assert r.status == 200, path
        body = await r.json()
        assert body["results"] == [], path
    for kind in ("deb", "rpm"):
        r = await client.post(f"/api/v2/source/{kind}/import", data=_form(TEMPLATES / kind / "nginx.yml"), headers=h)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert body["results"] == "Source repositories imported successfully"
        assert body["imported"] == ["nginx"]
        assert "not fetched" in body["warnings"][0]

    r = await client.get("/api/v2/source/", headers=h)
    rows = (await r.json())["results"]
    assert [(json.loads(x["Definition"])["type"], x["Method"]) for x in rows] == [("deb", "import-api"),
                                                                                 ("rpm", "import-api")]
    deb = json.loads((await (await client.get("/api/v2/source/deb/nginx", headers=h)).json())["results"]["Definition"])
    assert deb["url"] == "http://nginx.org/packages/debian"
    assert [d["name"] for d in deb["distributions"]] == ["bookworm", "bullseye"]
    assert deb["distributions"][0]["gpgkeys"] == [{"link": "https://nginx.org/keys/nginx_signing.key"}]
    rpm = (await (await client.get("/api/v2/source/rpm/", headers=h)).json())["results"]
    assert [v["name"] for v in json.loads(rpm[0]["Definition"])["releasever"]] == ["9", "8"]   # YAML numbers as text


@pytest.mark.parametrize("role", ["viewer", "uploader"])
async def test_reference_ci_user_without_permission(client, make_key, role):
    """The reference's test-user1 steps: each answer holds the refusal text."""
    h = bearer(await make_key(role))
    for path in ("/api/v2/source/", "/api/v2/source/deb/", "/api/v2/source/deb/nginx"):
        r = await client.get(path, headers=h)
        assert r.status == 403
        assert (await r.json())["message_error"] == [DENIED]
    for kind in ("deb", "rpm"):
        r = await client.post(f"/api/v2/source/{kind}/import", data=_form(TEMPLATES / kind / "nginx.yml"), headers=h)
        assert r.status == 403 and DENIED in await r.text()
    r = await client.post("/api/v2/source/deb/", json={"name": "x", "type": "deb", "url": "http://a.test"}, headers=h)
    assert r.status == 403


async def test_import_refusals_with_reference_texts(client, admin_key, tmp_path):
    h = bearer(admin_key)
    r = await client.get("/api/v2/source/srpm/", headers=h)
    assert r.status == 400 and (await r.json())["message_error"] == ["Invalid source repository type (deb or rpm)"]

    form = aiohttp.FormData()
    form.add_field("name", "value")
    r = await client.post("/api/v2/source/deb/import", data=form, headers=h)
    assert (await r.json())["message_error"] == ["You must provide a template file"]

    r = await client.post("/api/v2/source/deb/import", data=_form(TEMPLATES / "deb" / "nginx.yml", "file"), headers=h)
    assert r.status == 400 and (await r.json())["message_error"] == ['The file must be prefixed with "template"']

    form = aiohttp.FormData()
    for i in range(2):
        form.add_field("template", b"x", filename=f"t{i}.yml")
    r = await client.post("/api/v2/source/deb/import", data=form, headers=h)
    assert (await r.json())["message_error"] == ["Please, only provide one file at a time"]

    bad = {
        "a: [": "Could not import source repositories: invalid YAML (line 1)",
        "repositories: []": "Could not import source repositories: the template holds no repositories list",
        "x: &a [1]\ny: *a\n": "Could not import source repositories: YAML aliases are not accepted",
        "repositories:\n  - {name: 'bad name', type: deb, url: 'http://a.test', distributions: []}":
            "Could not import source repositories: name 'bad name': letters, digits, '-' and '_' only (1-64 characters)",
        "repositories:\n  - {name: n, type: deb, url: 'ftp://a.test', distributions: []}":
            "Could not import source repositories: url must start with http:// or https:// and hold no spaces",
        "repositories:\n  - {name: n, type: deb, url: 'http://a.test'}":
            "Could not import source repositories: n: distributions is required (each with its components)",
        "repositories:\n  - {name: n, type: rpm, url: 'http://a.test'}":
            "Could not import source repositories: n: releasever is required",
        "repositories:\n  - !!python/object/apply:os.system ['true']":
            "Could not import source repositories: invalid YAML (line 2)",
    }
    for text, message in bad.items():
        f = tmp_path / "t.yml"
        f.write_text(text)
        r = await client.post("/api/v2/source/deb/import", data=_form(f), headers=h)
        assert r.status == 400, text
        assert (await r.json())["message_error"] == [message], text
    # Nothing of a refused template was stored.
    assert (await (await client.get("/api/v2/source/", headers=h)).json())["results"] == []


async def test_import_is_all_or_nothing_and_replaces_by_name(client, admin_key, tmp_path):
    h = bearer(admin_key)
    good = "  - {name: a, type: deb, url: 'http://a.test/debian/', distributions: [{name: s, components: [main]}]}\n"
    f = tmp_path / "t.yml"
    f.write_text("repositories:\n" + good + "  - {name: b, type: rpm, url: 'http://b.test'}\n")
    r = await client.post("/api/v2/source/deb/import", data=_form(f), headers=h)
    assert r.status == 400
    assert (await (await client.get("/api/v2/source/", headers=h)).json())["results"] == []
    f.write_text("repositories:\n" + good)
    assert (await client.post("/api/v2/source/deb/import", data=_form(f), headers=h)).status == 200
    first = (await (await client.get("/api/v2/source/deb/a", headers=h)).json())["results"]
    assert json.loads(first["Definition"])["url"] == "http://a.test/debian"      # trailing / removed
    f.write_text("repositories:\n" + good.replace("http://a.test/debian/", "http://c.test/x"))
    assert (await client.post("/api/v2/source/rpm/import", data=_form(f), headers=h)).status == 200
    again = (await (await client.get("/api/v2/source/deb/a", headers=h)).json())["results"]
    assert again["Id"] == first["Id"] and json.loads(again["Definition"])["url"] == "http://c.test/x"


async def test_secrets_are_never_returned(client, admin_key, pool):
    h = bearer(admin_key)
    body = {"name": "corp", "type": "deb", "url": "https://mirror:s3cret-pw@repo.corp.test/debian",
            "distributions": [{"name": "bookworm", "components": [{"name": "main"}]}],
            "ssl-authentication": {"certificate": "-----BEGIN CERTIFICATE-----\nC\n",
                                   "private-key": "-----BEGIN PRIVATE KEY-----\nTOPSECRET\n"}}
    r = await client.post("/api/v2/source/deb/", json=body, headers=h)
    assert r.status == 201, await r.text()
    for path in ("/api/v2/source/", "/api/v2/source/deb", "/api/v2/source/deb/corp"):
        text = await (await client.get(path, headers=h)).text()
        assert "s3cret-pw" not in text and "TOPSECRET" not in text
    definition = json.loads((await (await client.get("/api/v2/source/deb/corp", headers=h)).json())["results"]["Definition"])
    assert definition["url"] == "https://mirror@repo.corp.test/debian"
    assert definition["ssl-authentication"]["private-key"] == "<set>"
    stored = await pool.fetchval("SELECT secrets FROM sources WHERE name = 'corp'")
    assert stored == {"url_password": "s3cret-pw", "private-key": "-----BEGIN PRIVATE KEY-----\nTOPSECRET\n"}
    r = await client.post("/api/v2/source/deb/", json=body, headers=h)
    assert r.status == 409


async def test_create_replace_delete(client, admin_key):
    h = bearer(admin_key)
    body = {"name": "el", "type": "rpm", "url": "http://el.test/$releasever/$basearch", "releasever": [{"name": 9}]}
    assert (await client.post("/api/v2/source/deb/", json=body, headers=h)).status == 400    # type differs
    assert (await client.post("/api/v2/source/rpm/", json={"type": "rpm"}, headers=h)).status == 400
    r = await client.post("/api/v2/source/rpm/", json=body, headers=h)
    assert r.status == 201 and (await r.json())["results"]["Method"] == "manual"
    r = await client.put("/api/v2/source/rpm/el", json={**body, "description": "EL"}, headers=h)
    assert r.status == 200
    assert json.loads((await r.json())["results"]["Definition"])["description"] == "EL"
    assert (await client.put("/api/v2/source/rpm/other", json=body, headers=h)).status == 400    # no rename
    assert (await client.put("/api/v2/source/rpm/zz", json={**body, "name": "zz"}, headers=h)).status == 404
    assert (await client.delete("/api/v2/source/rpm/el", headers=h)).status == 200
    assert (await client.delete("/api/v2/source/rpm/el", headers=h)).status == 404
    assert (await (await client.get("/api/v2/source/rpm/el", headers=h)).json())["results"] == []


async def test_keys_per_source(client, admin_key, pool, upstream_key, other_key):
    h = bearer(admin_key)
    for name in ("one", "two"):
        body = {"name": name, "type": "deb", "url": f"http://{name}.test",
                "distributions": [{"name": "stable", "components": [{"name": "main"}]}]}
        assert (await client.post("/api/v2/source/deb", json=body, headers=h)).status == 201
    r = await client.post("/api/v2/source/deb/one/keys", json={"armored": upstream_key.armored()}, headers=h)
    assert r.status == 201, await r.text()
    assert (await r.json())["results"]["fingerprints"] == [upstream_key.fingerprint]
    rows = await pool.fetch("SELECT s.name, k.fingerprint FROM source_keys k JOIN sources s ON s.id = k.source_id")
    assert [(r["name"], r["fingerprint"]) for r in rows] == [("one", upstream_key.fingerprint)]
    # An armored key inside a definition is imported too, and recorded by fingerprint.
    body = {"name": "three", "type": "deb", "url": "http://three.test",
            "distributions": [{"name": "stable", "components": [{"name": "main"}],
                               "gpgkeys": [{"armored": other_key.armored()}]}]}
    r = await client.post("/api/v2/source/deb", json=body, headers=h)
    assert r.status == 201
    definition = json.loads((await r.json())["results"]["Definition"])
    assert definition["distributions"][0]["gpgkeys"] == [{"fingerprint": other_key.fingerprint}]
    for bad in ("not a key", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"):
        r = await client.post("/api/v2/source/deb/two/keys", json={"armored": bad}, headers=h)
        assert r.status == 400, bad
    assert (await client.post("/api/v2/source/deb/nope/keys", json={"armored": upstream_key.armored()},
                              headers=h)).status == 404


async def test_template_key_ids_and_fingerprints_are_recorded(client, admin_key, tmp_path):
    # Templates name keys by fingerprint, or by long or short key id under the same `fingerprint` key.
    f = tmp_path / "t.yml"
    f.write_text("---\ndescription: keys\ntype: deb\nrepositories:\n"
                 "  - name: keyed\n    type: deb\n    url: https://archive.test/debian\n    distributions:\n"
                 "      - name: old\n        components: [{name: main}]\n        gpgkeys:\n"
                 "          - fingerprint: 0123456789abcdef\n          - fingerprint: 89ABCDEF\n"
                 "          - fingerprint: '0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567'\n")
    h = bearer(admin_key)
    r = await client.post("/api/v2/source/deb/import", data=_form(f), headers=h)
    assert r.status == 200, await r.text()
    definition = json.loads((await (await client.get("/api/v2/source/deb/keyed", headers=h)).json())["results"]["Definition"])
    assert definition["distributions"][0]["gpgkeys"] == [
        {"fingerprint": "0123456789ABCDEF"}, {"fingerprint": "89ABCDEF"},
        {"fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567"}]
    f.write_text(f.read_text().replace("89ABCDEF\n", "89ABCDEFG\n"))
    r = await client.post("/api/v2/source/deb/import", data=_form(f), headers=h)
    assert r.status == 400 and "'89ABCDEFG' is not a key fingerprint or id" in await r.text()
