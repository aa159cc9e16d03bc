"""Scheduled maintenance: retention keeps the newest N snapshots of a repository and never one an environment
serves; snapshot_create copies the current snapshot and queues its rebuild."""
from __future__ import annotations

from app.tasks import dispatch, schedules
from app.repos import model
from app.repos.storage import Storage
from tests.helpers import bearer
from workers import runner


async def test_retention_keeps_newest_and_env_snapshots(client, pool, redis, settings, make_key, run_worker):
    await pool.execute("INSERT INTO environments (name) VALUES ('preprod'), ('prod') ON CONFLICT DO NOTHING")
    storage = Storage(settings.storage_dir)
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="ret", type="deb", dist="bookworm", section="main")
        other = await model.create_repo(conn, name="other", type="deb", dist="bookworm", section="main")
        snaps = []
        for n in range(6):
            snaps.append((await model.create_snapshot(conn, repo.id)).id)
            await conn.execute("UPDATE snapshots SET created_at = now() - make_interval(days => $2) WHERE id = $1",
                               snaps[-1], 10 - n)
        others = [(await model.create_snapshot(conn, other.id)).id for _ in range(3)]
        await model.point_environment(conn, "prod", snaps[0])  # the oldest, but prod serves it
    # A published tree for one of the doomed snapshots: it must go too.
    doomed = await model.get_snapshot(pool, snaps[1])
    published = storage.public / doomed.public_rel(repo)
    published.parent.mkdir(parents=True, exist_ok=True)
    tree = storage.trees / f"{doomed.key}-1"
    (tree / "dists").mkdir(parents=True)
    published.symlink_to(tree)

    h = bearer(await make_key("operator"))
    resp = await client.post("/api/v2/task/schedule", headers=h,
                             json={"kind": "retention", "params": {"repo": repo.id, "keep": 2}, "cron": "0 4 * * *"})
    assert resp.status == 201, await resp.text()
    sid = (await resp.json())["results"]["Id"]
    assert (await resp.json())["results"]["Target"] == f"repo:{repo.id}"
    for bad in ({"repo": repo.id, "keep": 0}, {"repo": repo.id}, {"repo": "x", "keep": 2}):
        resp = await client.post("/api/v2/task/schedule", headers=h, json={"kind": "retention", "params": bad,
                                                                           "cron": "0 4 * * *"})
        assert resp.status == 400, bad

    await pool.execute("UPDATE tasks SET next_run_at = now() WHERE id = $1", sid)
    [task_id] = await schedules.run_due(pool, redis)
    await run_worker()
    row = await pool.fetchrow("SELECT status, result, error FROM tasks WHERE id = $1", task_id)
    assert row["status"] == "done", row["error"]
    assert row["result"]["deleted"] == snaps[1:4]
    active = [r["id"] for r in await pool.fetch(
        "SELECT id FROM snapshots WHERE repo_id = $1 AND status = 'active' ORDER BY id", repo.id)]
    assert active == [snaps[0], snaps[4], snaps[5]]  # prod's snapshot and the two newest
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE repo_id = $1 AND status = 'active'",
                               other.id) == len(others)  # other repositories untouched
    assert not published.is_symlink() and not tree.exists()

    # Run again: nothing more to delete.
    await dispatch.enqueue(pool, redis, "retention", f"repo:{repo.id}", {"repo": repo.id, "keep": 2})
    await run_worker()
    again = await pool.fetchval("SELECT result FROM tasks WHERE kind = 'retention' ORDER BY id DESC LIMIT 1")
    assert again["deleted"] == []


async def test_scheduled_snapshot_create_copies_the_current_snapshot_and_queues_its_rebuild(
        client, pool, redis, make_key, run_worker):
    rebuilt = []

    async def record_rebuild(ctx):  # the real rebuild is the repositories' own (tested there)
        rebuilt.append(ctx.params["snapshot"])

    real = runner.HANDLERS.get("rebuild")
    runner.HANDLERS["rebuild"] = record_rebuild
    try:
        async with pool.acquire() as conn:
            repo = await model.create_repo(conn, name="copy", type="deb", dist="bookworm", section="main")
            old = await model.create_snapshot(conn, repo.id)
            current = await model.create_snapshot(conn, repo.id)
            pkg = await conn.fetchval(
                "INSERT INTO package_files (sha256, sha1, md5, size, type, name, version, arch, filename)"
                " VALUES ($1, 'x', 'y', 10, 'deb', 'hello', '1.0', 'amd64', 'hello_1.0_amd64.deb') RETURNING id",
                "a" * 64)
            await conn.execute("INSERT INTO snapshot_packages (snapshot_id, filename, package_id)"
                               " VALUES ($1, 'hello_1.0_amd64.deb', $2)", current.id, pkg)
        h = bearer(await make_key("operator"))
        resp = await client.post("/api/v2/tasks/scheduled", headers=h, json={
            "kind": "snapshot_create", "params": {"repo": repo.id}, "cron": "0 2 * * 1"})
        assert resp.status == 201, await resp.text()
        resp = await client.post("/api/v2/tasks/scheduled", headers=h, json={
            "kind": "snapshot_create", "params": {"repo": repo.id + 99}, "cron": "0 2 * * 1"})
        assert resp.status == 400 and "does not exist" in (await resp.json())["message_error"][0]
        await pool.execute("UPDATE tasks SET next_run_at = now() WHERE type = 'scheduled'")
        [task_id] = await schedules.run_due(pool, redis)
        await run_worker()
        result = await pool.fetchval("SELECT result FROM tasks WHERE id = $1", task_id)
        assert result["copied_from"] == current.id and result["snapshot"] not in (old.id, current.id)
        new = result["snapshot"]
        assert await pool.fetchval("SELECT array_agg(filename) FROM snapshot_packages WHERE snapshot_id = $1",
                                   new) == ["hello_1.0_amd64.deb"]
        assert rebuilt == [new]
        assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", result["rebuild_task"]) == "done"
    finally:
        if real:
            runner.HANDLERS["rebuild"] = real


async def test_env_point_schedules_lock_the_environment_of_the_repository(client, pool, make_key, snapshot_id):
    h = bearer(await make_key("operator"))
    repo_id = await pool.fetchval("SELECT repo_id FROM snapshots WHERE id = $1", snapshot_id)
    resp = await client.post("/api/v2/task/schedule", headers=h, json={
        "kind": "env_point", "params": {"env": "prod", "snapshot": snapshot_id}, "cron": "30 6 * * 1-5"})
    body = await resp.json()
    assert resp.status == 201 and body["results"]["Target"] == f"env:prod:repo:{repo_id}"  # as the env API locks it
    assert body["results"]["Next_run"].endswith("T06:30:00Z")
    for params in ({"env": "prod", "snapshot": snapshot_id + 50}, {"env": "prod"}, {"snapshot": snapshot_id}):
        resp = await client.post("/api/v2/task/schedule", headers=h, json={
            "kind": "env_point", "params": params, "cron": "30 6 * * 1-5"})
        assert resp.status == 400, params
