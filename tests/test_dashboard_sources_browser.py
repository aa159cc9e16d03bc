"""The sources page in a real Chromium (tests/browser_harness.py) with a real arq worker and an upstream
served on 127.0.0.1 (tests/upstream.py): an operator adds a source with its key, sees it listed, makes a
mirror repository of it, mirrors it from the repository page (the task followed live) and finds that run
on the sources page; deleting the source is refused while the mirror uses it; a viewer reads only."""
from __future__ import annotations

import shutil

import pytest

from tests.browser_harness import ARTIFACTS, BROWSER, sign_in
from tests.upstream import DebArchive, Upstream

pytestmark = BROWSER


@pytest.fixture
async def upstream(tmp_path, aiohttp_server, upstream_key, settings):
    # Snapshot ids repeat across tests (each starts from empty tables): no tree of an earlier test's may stay;
    # nor a pool file without a row, which a mirror reads instead of downloading it.
    for name in ("trees", "public", "pool"):
        shutil.rmtree(settings.storage_dir / name, ignore_errors=True)
        (settings.storage_dir / name).mkdir(parents=True, exist_ok=True)
    archive = DebArchive(tmp_path / "www" / "debian", upstream_key)
    for name in ("alpha", "beta"):
        archive.add(name)
    archive.add("common", arch="all")
    archive.build()
    served = Upstream(tmp_path / "www")
    server = await aiohttp_server(served.app, host="127.0.0.1")
    served.url = f"http://127.0.0.1:{server.port}/debian"
    return served


async def _submit(pg, selector: str) -> None:
    async with pg.expect_navigation():
        await pg.click(selector)


async def test_add_a_source_mirror_it_and_see_its_last_run(page, new_page, pool, live_worker, upstream, upstream_key):
    pg = page
    pg.on("dialog", lambda d: d.accept())
    await sign_in(pg, "olivia")
    async with pg.expect_navigation():
        await pg.click("#nav-sources")
    assert await pg.inner_text("#sources tbody") == "No source repository yet."

    # A source with its key, from the form.
    await pg.select_option("#source-create select[name=type]", "deb")
    await pg.fill("#source-create input[name=name]", "local")
    await pg.fill("#source-create input[name=url]", upstream.url)
    await pg.fill("#source-create input[name=description]", "The test upstream")
    await pg.fill("#source-create input[name=dists]", "stable")
    await pg.fill("#source-create input[name=components]", "main")
    await pg.fill("#source-create textarea[name=armored]", upstream_key.armored())
    await _submit(pg, "#source-create button")
    assert "Source repository local (deb) added." in await pg.inner_text("#notice")
    row = pg.locator('#sources tr[data-source="deb/local"]')
    assert upstream_key.fingerprint in await row.locator("td.keys").inner_text()
    assert upstream.url in await row.inner_text() and "no mirror" in await row.inner_text()

    # A mirror repository of it, from its row; then "Mirror now" on the repository page, followed live.
    await row.locator("details:has(form.mirror-add) summary").click()
    await row.locator("form.mirror-add input[name=name]").fill("local-main")
    await row.locator("form.mirror-add input[name=arch]").fill("amd64 all")
    async with pg.expect_navigation():
        await row.locator("form.mirror-add button").click()
    repo_id = await pool.fetchval("SELECT repo_id FROM mirrors")
    assert pg.url.endswith(f"/repos/{repo_id}") and "Mirror of local" in await pg.inner_text("#mirror h2")
    await _submit(pg, "#mirror form button")
    assert "task=" in pg.url
    await pg.wait_for_selector("#task-live h1 .st-done", timeout=60_000)
    assert upstream.package_requests() == 3

    # The sources page shows that run: its task, done, the files it fetched and the snapshot it made.
    await pg.goto("/sources")
    run = row.locator(f'.mirror[data-repo="{repo_id}"] .run')
    text = await run.inner_text()
    snap = await pool.fetchval("SELECT last_snapshot_id FROM mirrors WHERE repo_id = $1", repo_id)
    assert "done" in text and "3 files downloaded" in text and f"#{snap}" in text, text
    await pg.screenshot(path=str(ARTIFACTS / "sources.png"), full_page=True)
    async with pg.expect_navigation():
        await run.locator("a.snap").click()
    assert pg.url.endswith(f"/repos/{repo_id}?snapshot={snap}")
    assert await pg.locator("#packages tbody tr").count() == 3

    # Deleting the source while the mirror uses it: refused, saying which repository.
    await pg.goto("/sources")
    assert not pg.errors
    await _submit(pg, '#sources tr[data-source="deb/local"] form.source-delete button')
    assert f"is mirrored by repositories #{repo_id}" in await pg.inner_text("#form-error")
    assert await pool.fetchval("SELECT count(*) FROM sources") == 1
    # That refusal (the response, and the console's line about it), and nothing else went wrong.
    assert pg.errors and all("409" in e for e in pg.errors), pg.errors

    # A viewer reads the same list and has no form.
    viewer = await new_page()
    await sign_in(viewer, "victor", then="/sources")
    assert upstream_key.fingerprint in await viewer.inner_text('#sources tr[data-source="deb/local"]')
    assert await viewer.locator("#sources form, #source-create, #source-import").count() == 0
    assert not viewer.errors
