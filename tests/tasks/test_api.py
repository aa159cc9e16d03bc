"""Tasks API: listings with Repomanager's row shape, one task, stop (queued and running), enable/disable/delete,
roles, and schedules run by the workers' cron exactly once."""
from __future__ import annotations

import asyncio
import json

import pytest

from app.tasks import dispatch, rows, schedules
from tests.helpers import bearer, wait_for
from workers import runner

RUNS: list[int] = []


@pytest.fixture(autouse=True)
def handlers():
    RUNS.clear()

    async def slow(ctx):
        RUNS.append(ctx.id)
        for i in range(100):
            await ctx.progress(i, f"step {i}")
            await asyncio.sleep(0.05)
            await ctx.check_stop()

    async def quick(ctx):
        RUNS.append(ctx.id)
        return {"ok": True}

    real_rebuild = runner.HANDLERS.get("rebuild")  # schedules here start rebuilds of snapshots that do not exist
    runner.HANDLERS.update(op_slow=slow, op_quick=quick, rebuild=quick)
    yield
    for k in ("op_slow", "op_quick"):
        runner.HANDLERS.pop(k, None)
    if real_rebuild:
        runner.HANDLERS["rebuild"] = real_rebuild
    else:
        runner.HANDLERS.pop("rebuild", None)


async def test_listings_rows_and_pagination(client, pool, redis, admin_key, run_worker):
    ids = [(await dispatch.enqueue(pool, redis, "op_quick", f"thing:{n}", {"n": n}, requested_by="admin")).id for n in range(5)]
    await run_worker()
    await dispatch.enqueue(pool, redis, "op_quick", "thing:queued")
    h = bearer(admin_key)

    resp = await client.get("/api/v2/tasks/", headers=h)
    body = await resp.json()
    assert resp.status == 200 and body["pagination"] == {"page": 1, "per_page": 100, "total": 6} and body["rc"] == 200
    row = body["results"][-1]
    assert row["Id"] == ids[0] and row["Type"] == "immediate" and row["Status"] == "done"
    assert row["Pid"] is None and row["Logfile"] is None and row["Duration"].endswith("s")
    assert len(row["Date"]) == 10 and len(row["Time"]) == 8
    assert json.loads(row["Raw_params"]) == {"action": "op_quick", "n": 0}
    assert row["Kind"] == "op_quick" and row["Target"] == "thing:0" and row["Progress"] == 100

    seen = []
    for page in (1, 2, 3):
        body = await (await client.get(f"/api/v2/tasks/done?page={page}&per_page=2", headers=h)).json()
        assert body["pagination"] == {"page": page, "per_page": 2, "total": 5}
        assert len(body["results"]) == (2 if page < 3 else 1)
        seen += [r["Id"] for r in body["results"]]
    assert sorted(seen) == ids  # pages neither overlap nor skip
    resp = await client.get("/api/v2/tasks/queued", headers=h)
    assert [r["Target"] for r in (await resp.json())["results"]] == ["thing:queued"]
    resp = await client.get("/api/v2/tasks/running", headers=h)
    assert (await resp.json())["results"] == []

    for bad in ("page=0", "per_page=x", "per_page=999999"):
        resp = await client.get(f"/api/v2/tasks?{bad}", headers=h)
        assert resp.status == 400, bad

    resp = await client.get(f"/api/v2/task/{ids[3]}", headers=h)
    assert resp.status == 200 and (await resp.json())["results"]["Id"] == ids[3]
    resp = await client.get("/api/v2/task/abc/", headers=h)
    assert resp.status == 400 and (await resp.json())["message_error"] == ["Invalid task ID."]
    resp = await client.get("/api/v2/task/99999/", headers=h)
    assert resp.status == 404 and (await resp.json())["message_error"] == ["Task #99999 does not exist."]
    resp = await client.get("/api/v2/task/99999999999999999999999", headers=h)
    assert resp.status == 404


async def test_roles(client, pool, redis, make_key):
    viewer = bearer(await make_key("viewer"))
    ref = await dispatch.enqueue(pool, redis, "op_quick", "thing:1")
    assert (await client.get("/api/v2/tasks", headers=viewer)).status == 200
    assert (await client.get("/api/v2/tasks")).status == 401
    resp = await client.post(f"/api/v2/task/{ref.id}/stop", headers=viewer)
    assert resp.status == 403 and "You are not allowed to stop a task" in (await resp.json())["message_error"][0]
    resp = await client.delete(f"/api/v2/task/{ref.id}/delete", headers=viewer)
    assert resp.status == 403 and "You are not allowed to delete a task" in (await resp.json())["message_error"][0]
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "queued"


async def test_stop_a_queued_task_removes_its_job(client, pool, redis, settings, make_key, run_worker):
    h = bearer(await make_key("operator"))
    ref = await dispatch.enqueue(pool, redis, "op_quick", "thing:1")
    assert await redis.zcard(settings.queue_name) == 1
    resp = await client.post(f"/api/v2/task/{ref.id}/stop", headers=h)
    assert resp.status == 200 and (await resp.json())["results"] == "Task stopped successfully."
    assert await redis.zcard(settings.queue_name) == 0
    await dispatch.redispatch(pool, redis, ref.id)  # a stray delivery is skipped by the atomic claim
    await run_worker()
    assert RUNS == []
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "stopped"
    resp = await client.post(f"/api/v2/task/{ref.id}/stop", headers=h)
    assert resp.status == 409 and (await resp.json())["message_error"] == [f"Task #{ref.id} is not running"]
    # Finished tasks may be deleted; then they are gone.
    assert (await client.delete(f"/api/v2/task/{ref.id}/delete", headers=h)).status == 200
    assert (await client.get(f"/api/v2/task/{ref.id}", headers=h)).status == 404


async def test_stop_a_running_task_cooperatively(client, pool, redis, admin_key, live_worker):
    h = bearer(admin_key)
    ref = await dispatch.enqueue(pool, redis, "op_slow", "thing:1")
    await wait_for(lambda: pool.fetchval("SELECT progress > 2 FROM tasks WHERE id = $1", ref.id))
    row = (await (await client.get("/api/v2/tasks/running", headers=h)).json())["results"][0]
    assert row["Id"] == ref.id and row["Status"] == "running" and row["Progress_text"].startswith("step")
    resp = await client.delete(f"/api/v2/task/{ref.id}/delete", headers=h)
    assert resp.status == 409
    resp = await client.post(f"/api/v2/task/{ref.id}/stop", headers=h)
    assert resp.status == 202
    await wait_for(lambda: pool.fetchval("SELECT status = 'stopped' FROM tasks WHERE id = $1", ref.id), timeout=10)
    assert await pool.fetchval("SELECT progress < 100 FROM tasks WHERE id = $1", ref.id)


async def test_schedule_create_enable_disable_and_run_exactly_once(client, pool, redis, settings, make_key, run_worker,
                                                                  snapshot_id):
    snap = snapshot_id
    h = bearer(await make_key("operator"))
    resp = await client.post("/api/v2/task/schedule", headers=h,
                             json={"kind": "rebuild", "params": {"snapshot": snap}, "cron": "*/5 * * * *"})
    body = await resp.json()
    assert resp.status == 201, body
    sched = body["results"]
    assert sched["Type"] == "scheduled" and sched["Status"] == "scheduled" and sched["Target"] == f"snapshot:{snap}"
    assert sched["Cron"] == "*/5 * * * *" and sched["Next_run"]
    assert json.loads(sched["Raw_params"])["schedule"]["scheduled"] == "true"

    for bad in ({"kind": "rebuild", "params": {"snapshot": snap}, "cron": "61 * * * *"},
                {"kind": "rebuild", "params": {"snapshot": snap + 1000}, "cron": "* * * * *"},
                {"kind": "rebuild", "params": {"snapshot": 2**63}, "cron": "* * * * *"},
                {"kind": "env_point", "params": {"env": "prod", "snapshot": 10**30}, "cron": "* * * * *"},
                {"kind": "retention", "params": {"repo": -1, "keep": 2}, "cron": "* * * * *"},
                {"kind": "rm -rf", "params": {}, "cron": "* * * * *"},
                {"kind": "rebuild", "params": {}, "cron": "* * * * *"},
                {"kind": "rebuild", "params": {"snapshot": snap}}):
        resp = await client.post("/api/v2/tasks/scheduled", headers=h, json=bad)
        assert resp.status == 400, bad
    assert (await client.post("/api/v2/tasks/scheduled", headers=h, data=b"{")).status == 400

    listed = (await (await client.get("/api/v2/tasks/scheduled", headers=h)).json())["results"]
    assert [r["Id"] for r in listed] == [sched["Id"]]
    sid = sched["Id"]
    # Make it due, then run the scheduler step from several "workers" at once: one task, not three.
    await pool.execute("UPDATE tasks SET next_run_at = now() - interval '1 minute' WHERE id = $1", sid)
    started = await asyncio.gather(*(schedules.run_due(pool, redis) for _ in range(3)))
    assert sorted(len(s) for s in started) == [0, 0, 1]
    task_id = next(s for s in started if s)[0]
    row = await pool.fetchrow("SELECT kind, target, params, schedule_id, type FROM tasks WHERE id = $1", task_id)
    assert (row["kind"], row["target"], row["params"], row["schedule_id"], row["type"]) == (
        "rebuild", f"snapshot:{snap}", {"snapshot": snap}, sid, "immediate")
    assert await pool.fetchval("SELECT next_run_at > now() FROM tasks WHERE id = $1", sid)
    await run_worker()
    assert RUNS == [task_id]

    resp = await client.post(f"/api/v2/task/{sid}/disable", headers=h)
    assert resp.status == 200 and (await resp.json())["results"] == "Task disabled successfully."
    await pool.execute("UPDATE tasks SET next_run_at = now() - interval '1 minute' WHERE id = $1", sid)
    assert await schedules.run_due(pool, redis) == []
    resp = await client.post(f"/api/v2/task/{sid}/enable", headers=h)
    assert resp.status == 200
    assert await pool.fetchval("SELECT status = 'scheduled' AND next_run_at > now() FROM tasks WHERE id = $1", sid)
    resp = await client.post(f"/api/v2/task/{task_id}/enable", headers=h)
    assert resp.status == 409 and "is not a scheduled task and cannot be enable" in (await resp.json())["message_error"][0]
    assert (await client.delete(f"/api/v2/task/{sid}/delete", headers=h)).status == 200
    # The run it made stays, unlinked.
    assert await pool.fetchval("SELECT schedule_id FROM tasks WHERE id = $1", task_id) is None


async def test_workers_cron_runs_due_schedules(pool, redis, live_worker, snapshot_id):
    sid = await schedules.create_schedule(pool, "rebuild", "* * * * *", {"snapshot": snapshot_id}, None, requested_by="t")
    await pool.execute("UPDATE tasks SET next_run_at = now() WHERE id = $1", sid)
    await wait_for(lambda: pool.fetchval("SELECT status = 'done' FROM tasks WHERE schedule_id = $1", sid), timeout=15)
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE schedule_id = $1", sid) == 1


async def test_long_histories_report_a_capped_total(client, pool, redis, admin_key, monkeypatch):
    from app.tasks import listing

    for n in range(5):
        await dispatch.enqueue(pool, redis, "op_quick", f"cap:{n}")
    monkeypatch.setattr(listing, "COUNT_CAP", 3)
    body = await (await client.get("/api/v2/tasks/queued?per_page=2", headers=bearer(admin_key))).json()
    assert body["pagination"] == {"page": 1, "per_page": 2, "total": 3, "total_capped": True}
    assert len(body["results"]) == 2


async def test_old_finished_tasks_are_pruned_schedules_and_live_tasks_kept(pool, redis, snapshot_id):
    done = await dispatch.enqueue(pool, redis, "op_quick", "old:1")
    recent = await dispatch.enqueue(pool, redis, "op_quick", "old:2")
    waiting = await dispatch.enqueue(pool, redis, "op_quick", "old:3")
    sid = await schedules.create_schedule(pool, "rebuild", "0 3 * * *", {"snapshot": snapshot_id}, None, requested_by="t")
    await pool.execute("UPDATE tasks SET status = 'done', finished_at = now() - interval '40 days',"
                       " created_at = now() - interval '40 days' WHERE id = $1", done.id)
    await pool.execute("UPDATE tasks SET status = 'done', finished_at = now() - interval '2 days' WHERE id = $1", recent.id)
    await pool.execute("UPDATE tasks SET created_at = now() - interval '90 days' WHERE id IN ($1, $2)", waiting.id, sid)
    assert await rows.prune_history(pool, days=30) == 1
    left = {r["id"] for r in await pool.fetch("SELECT id FROM tasks")}
    assert left == {recent.id, waiting.id, sid}


async def test_check_stop_is_cheap_in_a_tight_loop_and_still_prompt(pool, redis, settings):
    ref = await dispatch.enqueue(pool, redis, "op_quick", "tight:1")
    task = await pool.fetchrow("UPDATE tasks SET status = 'running' WHERE id = $1 RETURNING *", ref.id)
    reads = []

    class CountingPool:  # the real pool; only counts the reads check_stop makes
        def __getattr__(self, name):
            return getattr(pool, name)

        async def fetchval(self, *args):
            reads.append(args[0])
            return await pool.fetchval(*args)

    ctx = runner.TaskContext(task, CountingPool(), redis, settings, "w")
    for _ in range(2000):
        await ctx.check_stop()
    assert len(reads) <= 3  # not one query per call
    await pool.execute("UPDATE tasks SET stop_requested = true WHERE id = $1", ref.id)
    started = asyncio.get_running_loop().time()
    with pytest.raises(runner.TaskStopped):
        while True:
            await ctx.check_stop()
            await asyncio.sleep(0.01)
    assert asyncio.get_running_loop().time() - started < 1.0  # seen within a poll interval
