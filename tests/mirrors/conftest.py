"""A Debian upstream on 127.0.0.1, built in the test, and a mirror of it made through the API."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from tests.helpers import bearer
from tests.upstream import DebArchive, Upstream


@pytest.fixture(autouse=True)
def fresh_trees(settings):
    """No published tree, rebuild cache or pool file left by an earlier test: the database starts empty for each
    test, so its snapshot ids come again, and the rebuild's per-snapshot cache (keyed by id) would describe another
    test's packages; and a pool file without a row is what a killed run leaves, which a mirror reads instead of
    downloading it."""
    for name in ("trees", "public", "pool"):
        folder = settings.storage_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)


class Site:
    def __init__(self, archive: DebArchive, upstream: Upstream, url: str):
        self.archive, self.upstream, self.url = archive, upstream, url


@pytest.fixture
async def site(tmp_path, aiohttp_server, upstream_key):
    archive = DebArchive(tmp_path / "www" / "debian", upstream_key)
    for name in ("alpha", "beta", "gamma"):
        archive.add(name)
    archive.add("common", arch="all")
    archive.build()
    upstream = Upstream(tmp_path / "www")
    server = await aiohttp_server(upstream.app, host="127.0.0.1")
    return Site(archive, upstream, f"http://127.0.0.1:{server.port}/debian")


@pytest.fixture
def make_mirror(client, repo_db, admin_key, upstream_key):
    """make_mirror(site, **repo fields) -> repository id; the source gets upstream_key unless told otherwise."""
    count = {"n": 0}

    async def make(site: Site, *, key=upstream_key, source_name: str | None = None, **fields) -> int:
        count["n"] += 1
        h = bearer(admin_key)
        name = source_name or f"up{count['n']}"
        body = {"name": name, "type": "deb", "url": site.url,
                "distributions": [{"name": "stable", "components": [{"name": "main"}]}]}
        r = await client.post("/api/v2/source/deb/", json=body, headers=h)
        assert r.status in (201, 409), await r.text()
        if key is not None and r.status == 201:
            r = await client.post(f"/api/v2/source/deb/{name}/keys", json={"armored": key.armored()}, headers=h)
            assert r.status == 201
        repo = {"name": f"mirror{count['n']}", "type": "deb", "dist": "stable", "section": "main", "source": name,
                "arch": ["amd64", "all"], **fields}
        r = await client.post("/api/v2/repo/", json=repo, headers=h)
        assert r.status == 201, await r.text()
        return (await r.json())["results"]["Id"]

    return make


@pytest.fixture
def run_mirror(client, admin_key, run_worker, settings):
    base_settings = settings
    """run_mirror(repo_id, env=None, settings={...}) -> the finished task's wire row; `settings` changes the
    worker's settings for this run."""

    async def run(repo_id: int, settings: dict | None = None, **body) -> dict:
        h = bearer(admin_key)
        r = await client.post(f"/api/v2/repo/{repo_id}/mirror", json=body, headers=h)
        assert r.status == 202, await r.text()
        task_id = (await r.json())["task-id"]
        await run_worker(**({"ctx": {"settings": replace(base_settings, **settings)}} if settings else {}))
        return (await (await client.get(f"/api/v2/task/{task_id}", headers=h)).json())["results"]

    return run
