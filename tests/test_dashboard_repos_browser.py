"""The repository pages in a real Chromium (tests/browser_harness.py) with a real arq worker: create a
repository, an environment and snapshots, upload real .deb files from the browser (with its progress
bar), rebuild and point with the task followed live to its end, compare two snapshots, delete; a viewer
and an uploader see only what their role may do, and forms without the CSRF token change nothing."""
from __future__ import annotations

from tests.browser_harness import ARTIFACTS, BROWSER, sign_in
from tests.pkgfactory import make_deb

pytestmark = BROWSER


async def _submit(pg, selector: str) -> None:
    async with pg.expect_navigation():
        await pg.click(selector)


async def _upload(pg, files) -> str:
    await pg.set_input_files("#upload input[type=file]", [str(f) for f in files])
    await pg.click("#upload button")
    await pg.wait_for_selector("#upload[data-status]", timeout=20_000)
    return await pg.inner_text("#upload .upload-status")


async def _packages(pg) -> set[str]:
    return {t.strip() for t in await pg.locator("#packages tbody td:nth-child(4)").all_inner_texts()}


async def test_repository_snapshots_upload_rebuild_point_compare_delete(page, new_page, pool, live_worker, tmp_path):
    pg = page
    pg.on("dialog", lambda d: d.accept())  # the confirmations of the delete buttons
    await sign_in(pg, "olivia")

    await pg.goto("/repos")
    await pg.fill("#environment-create input[name=name]", "staging")
    await _submit(pg, "#environment-create button")
    assert "staging" in await pg.inner_text("#environments-table")
    await pg.fill("#repo-create input[name=name]", "webapps")
    await pg.select_option("#repo-create select[name=type]", "deb")
    await pg.fill("#repo-create input[name=dist]", "bookworm")
    await pg.fill("#repo-create input[name=section]", "main")
    await _submit(pg, "#repo-create button")
    repo = await pool.fetchrow("SELECT id, type, dist, section FROM repos WHERE name = 'webapps'")
    assert pg.url.endswith(f"/repos/{repo['id']}") and (repo["type"], repo["dist"], repo["section"]) == ("deb", "bookworm", "main")

    # An empty snapshot, then two real packages uploaded into it from the browser.
    await _submit(pg, "#snapshot-create button")
    first = await pool.fetchval("SELECT max(id) FROM snapshots WHERE repo_id = $1", repo["id"])
    assert pg.url.endswith(f"?snapshot={first}")
    debs = [make_deb(tmp_path / "a", "hello", "1.0-1"), make_deb(tmp_path / "a", "openssl", "3.0.11-1")]
    status = await _upload(pg, debs)
    assert "uploaded successfully" in status and "hello_1.0-1_amd64.deb" in status, status
    assert await pg.get_attribute("#upload", "data-status") == "200"
    assert await pg.get_attribute("#upload progress", "value") == "100"
    await pg.screenshot(path=str(ARTIFACTS / "repo-upload.png"), full_page=True)
    async with pg.expect_navigation():
        await pg.click("#upload .upload-status a")  # "show the packages"
    assert await _packages(pg) == {"hello_1.0-1_amd64.deb", "openssl_3.0.11-1_amd64.deb"}
    # Not a package: the API's refusal, shown on the page; nothing stored.
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"not an ar archive")
    status = await _upload(pg, [junk])
    assert await pg.get_attribute("#upload", "data-status") == "400" and "not considered valid packages" in status
    assert await pg.locator("#upload .upload-status a").count() == 0
    pg.errors.clear()  # that 400 was expected
    assert await pool.fetchval("SELECT count(*) FROM snapshot_packages WHERE snapshot_id = $1", first) == 2

    # Rebuild: the task is followed live on the page until it is done.
    await _submit(pg, "#rebuild button")
    assert "task=" in pg.url
    # Followed live; once done, the page is read again and shows the snapshot rebuilt.
    await pg.wait_for_selector(f'#snapshots tr[data-snapshot="{first}"] >> text=up to date', timeout=60_000)
    await pg.wait_for_selector("#task-live h1 .st-done")
    assert "rebuild" in await pg.inner_text("#task-live .facts")
    await pg.screenshot(path=str(ARTIFACTS / "repo-rebuilt.png"), full_page=True)
    assert await pool.fetchval("SELECT reconstruct FROM snapshots WHERE id = $1", first) is None

    # Point the new environment at it: a task too; then the environment serves its metadata.
    await pg.select_option("#point select[name=env]", "staging")
    await _submit(pg, "#point button")
    await pg.wait_for_selector(f'#snapshots tr[data-snapshot="{first}"] >> text=staging', timeout=60_000)
    await pg.wait_for_selector("#task-live h1 .st-done")
    assert await pool.fetchval(
        "SELECT es.snapshot_id FROM environment_snapshots es JOIN environments e ON e.id = es.environment_id"
        " WHERE e.name = 'staging' AND es.repo_id = $1", repo["id"]) == first
    release = await pg.request.get("/repo/deb/webapps/bookworm/main/staging/dists/bookworm/Release")
    assert release.status == 200 and "bookworm" in await release.text()

    # A second snapshot with a newer openssl and a new package, compared with the first.
    await _submit(pg, "#snapshot-create button")
    second = await pool.fetchval("SELECT max(id) FROM snapshots WHERE repo_id = $1", repo["id"])
    assert second != first
    await _upload(pg, [make_deb(tmp_path / "b", "openssl", "3.0.15-1"), make_deb(tmp_path / "b", "curl", "7.88.1-10")])
    await pg.goto(f"/repos/{repo['id']}")
    await pg.select_option("#snapshot-compare select[name=a]", str(first))
    await pg.select_option("#snapshot-compare select[name=b]", str(second))
    await _submit(pg, "#snapshot-compare button")
    counts = await pg.inner_text("#compare-counts")
    assert "1 added" in counts and "1 removed" in counts and "1 changed" in counts, counts
    rows = {tuple(r) for r in await pg.eval_on_selector_all(
        "#compare tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")}
    assert rows == {("added", "curl", "amd64", "", "7.88.1-10"), ("removed", "hello", "amd64", "1.0-1", ""),
                    ("changed", "openssl", "amd64", "3.0.11-1", "3.0.15-1")}, rows
    await pg.screenshot(path=str(ARTIFACTS / "repo-compare.png"), full_page=True)

    # Delete: the pointed snapshot is refused (as the API refuses it), the other goes.
    await pg.goto(f"/repos/{repo['id']}?snapshot={first}")
    await pg.click("#snapshot-delete button")
    await pg.wait_for_selector("text=is used by an environment")
    pg.errors.clear()  # the 409 page
    await pg.goto(f"/repos/{repo['id']}?snapshot={second}")
    await _submit(pg, "#snapshot-delete button")
    assert await pool.fetchval("SELECT status FROM snapshots WHERE id = $1", second) == "deleted"
    assert await pg.locator(f'#snapshots tr[data-snapshot="{second}"]').count() == 0
    assert pg.errors == [], pg.errors

    # Forms without the CSRF token (another site posting with the session's cookie) change nothing.
    resp = await pg.request.post("/repos", form={"name": "forged", "type": "deb", "dist": "x", "section": "main"})
    assert resp.status == 403
    resp = await pg.request.post(f"/repos/{repo['id']}/delete", form={})
    assert resp.status == 403
    resp = await pg.request.post(f"/repos/snapshots/{first}/upload",
                                 multipart={"file": {"name": "x_1_amd64.deb", "mimeType": "application/octet-stream",
                                                     "buffer": debs[0].read_bytes()}})
    assert resp.status == 403
    assert await pool.fetchval("SELECT count(*) FROM repos") == 1
    assert await pool.fetchval("SELECT count(*) FROM snapshot_packages WHERE snapshot_id = $1", first) == 2

    # A viewer sees the repository but no action; an uploader uploads and rebuilds but cannot point or delete.
    viewer = await new_page()
    await sign_in(viewer, "victor")
    await viewer.goto("/repos")
    assert await viewer.locator("#repo-create, #environment-create").count() == 0
    await viewer.goto(f"/repos/{repo['id']}")
    assert await viewer.locator("form.panel[method=post]").count() == 0
    assert await viewer.locator("#snapshot-compare").count() == 0  # one snapshot left: nothing to compare
    await viewer.screenshot(path=str(ARTIFACTS / "repo-viewer.png"), full_page=True)
    token = await viewer.get_attribute("header form input[name=csrf]", "value")
    resp = await viewer.request.post(f"/repos/{repo['id']}/snapshots", form={"csrf": token})
    assert resp.status == 403
    assert viewer.errors == [], viewer.errors

    uploader = await new_page()
    await sign_in(uploader, "uma")
    await uploader.goto(f"/repos/{repo['id']}")
    forms = {await f.get_attribute("id") for f in await uploader.locator("form.panel[method=post]").all()}
    assert forms == {"snapshot-create", "upload", "rebuild"}
    token = await uploader.get_attribute("header form input[name=csrf]", "value")
    resp = await uploader.request.post("/repos/environments/point", form={"csrf": token, "env": "staging",
                                                                          "snapshot": str(first)})
    assert resp.status == 403
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE repo_id = $1 AND status = 'active'", repo["id"]) == 1
