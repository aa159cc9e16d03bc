"""An operator's week, through the API and real task handlers: a scheduled copy of the current snapshot (rebuilt
and signed), a scheduled environment point, then retention — each started by the scheduler, run by a worker."""
from __future__ import annotations

import aiohttp

from app.tasks import schedules
from tests import pkgfactory
from tests.helpers import bearer


async def _due(pool, schedule_id):
    await pool.execute("UPDATE tasks SET next_run_at = now() WHERE id = $1", schedule_id)


async def test_scheduled_copy_point_and_retention_with_real_handlers(client, pool, redis, settings, make_key,
                                                                    run_worker, tmp_path):
    await pool.execute("INSERT INTO environments (name) VALUES ('preprod'), ('prod') ON CONFLICT DO NOTHING")
    h = bearer(await make_key("admin"))
    r = await client.post("/api/v2/repo/", json={"name": "app", "type": "deb", "dist": "bookworm", "section": "main"},
                          headers=h)
    repo = (await r.json())["results"]["Id"]
    r = await client.post(f"/api/v2/repo/{repo}/snapshot", json={}, headers=h)
    s1 = (await r.json())["results"]["Id"]
    deb = pkgfactory.make_deb(tmp_path, "app-core", "1.0-1")
    form = aiohttp.FormData()
    form.add_field("file", deb.read_bytes(), filename=deb.name, content_type="application/octet-stream")
    r = await client.post(f"/api/v2/snapshot/{s1}/upload", data=form, headers=h)
    assert r.status in (200, 201), await r.text()

    async def schedule(kind, params):
        resp = await client.post("/api/v2/task/schedule", headers=h, json={"kind": kind, "params": params,
                                                                            "cron": "0 2 * * 1"})
        assert resp.status == 201, await resp.text()
        return (await resp.json())["results"]["Id"]

    copy = await schedule("snapshot_create", {"repo": repo})
    await _due(pool, copy)
    assert len(await schedules.run_due(pool, redis)) == 1
    await run_worker()  # the copy, then the rebuild it queued (real signing)
    result = await pool.fetchval("SELECT result FROM tasks WHERE schedule_id = $1", copy)
    s2 = result["snapshot"]
    assert result["copied_from"] == s1
    rebuild = await pool.fetchrow("SELECT status, error FROM tasks WHERE id = $1", result["rebuild_task"])
    assert rebuild["status"] == "done", rebuild["error"]
    r = await client.get(f"/repo/deb/app/bookworm/main/{s2}/dists/bookworm/InRelease")
    assert r.status == 200 and "BEGIN PGP SIGNED MESSAGE" in await r.text()
    r = await client.get(f"/repo/deb/app/bookworm/main/{s2}/dists/bookworm/main/binary-amd64/Packages")
    assert r.status == 200 and "Package: app-core\n" in await r.text()  # the copy holds s1's package

    point = await schedule("env_point", {"env": "prod", "snapshot": s2})
    await _due(pool, point)
    assert len(await schedules.run_due(pool, redis)) == 1
    await run_worker()
    assert await pool.fetchval("SELECT snapshot_id FROM environment_snapshots es JOIN environments e"
                               " ON e.id = es.environment_id WHERE e.name = 'prod'") == s2

    # A third snapshot, newer than prod's: keep=1 keeps it, keeps prod's s2 (in use), deletes s1.
    r = await client.post(f"/api/v2/repo/{repo}/snapshot", json={"from": s2}, headers=h)
    s3 = (await r.json())["results"]["Id"]
    retention = await schedule("retention", {"repo": repo, "keep": 1})
    await _due(pool, retention)
    await schedules.run_due(pool, redis)
    await run_worker()
    done = await pool.fetchval("SELECT result FROM tasks WHERE schedule_id = $1", retention)
    assert done["deleted"] == [s1]
    active = [r["id"] for r in await pool.fetch("SELECT id FROM snapshots WHERE status = 'active' ORDER BY id")]
    assert active == [s2, s3]

    # Every run is visible in the task listings, linked to its schedule.
    body = await (await client.get("/api/v2/tasks/done?per_page=50", headers=h)).json()
    kinds = sorted(row["Kind"] for row in body["results"] if row["Schedule_id"])
    assert kinds == ["env_point", "retention", "snapshot_create"]
