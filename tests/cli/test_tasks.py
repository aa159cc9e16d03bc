"""`depot tasks|queues` against a live server: tables, --json, --watch, stop, schedule, config, errors."""
from __future__ import annotations

import asyncio
import json

import pytest

from app.cli import tasks
from app.tasks import dispatch
from app.tasks.listing import LISTINGS
from tests.helpers import wait_for
from workers import runner


@pytest.fixture(autouse=True)
def handlers():
    async def slow(ctx):
        for i in range(0, 101, 10):
            await ctx.progress(i, f"step {i}")
            await asyncio.sleep(0.1)
            await ctx.check_stop()

    async def until_stopped(ctx):
        # Long enough that a loaded machine's CLI start-up cannot outlast it (then stop would find it done).
        for i in range(600):
            await ctx.progress(i // 6, f"step {i}")
            await asyncio.sleep(0.1)
            await ctx.check_stop()

    async def quick(ctx):
        return {"n": 1}

    runner.HANDLERS.update(cli_slow=slow, cli_long=until_stopped, cli_quick=quick)
    yield
    for name in ("cli_slow", "cli_long", "cli_quick"):
        runner.HANDLERS.pop(name, None)


async def test_tasks_list_show_json_and_errors(depot, pool, redis, admin_key, run_worker, monkeypatch, tmp_path):
    ref = await dispatch.enqueue(pool, redis, "cli_quick", "thing:1")
    await run_worker()
    code, out, err = await depot("tasks", "--key", admin_key)
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["ID", "KIND", "TARGET", "STATUS"]
    assert out.splitlines()[1].split()[:4] == [str(ref.id), "cli_quick", "thing:1", "done"]
    assert "done" in out and "1 of 1 task(s)" in out
    code, out, _ = await depot("tasks", "--key", admin_key, "show", str(ref.id), "--json")
    assert code == 0 and json.loads(out)["results"]["Status"] == "done"

    code, out, err = await depot("tasks", "show", "999", "--key", admin_key)
    assert code == 1 and out == "" and "404: Task #999 does not exist." in err
    code, _, err = await depot("tasks", "list")
    assert code == 1 and "an API key is needed" in err
    code, _, err = await depot("queues", "--key", "ak_bad")
    assert code == 1 and "401: Authentication error" in err
    code, _, err = await depot("queues", "--key", admin_key, "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err

    # The key from the config file.
    (tmp_path / "config" / "depot").mkdir(parents=True)
    (tmp_path / "config" / "depot" / "cli.toml").write_text(f'key = "{admin_key}"\n')
    code, out, err = await depot("tasks", "list", "--status", "done")
    assert code == 0 and "cli_quick" in out, err


@pytest.mark.slow
async def test_watch_follows_progress_and_stop(depot, pool, redis, make_key, live_worker):
    key = await make_key("operator")
    ref = await dispatch.enqueue(pool, redis, "cli_slow", "thing:1")
    code, out, err = await depot("tasks", "show", str(ref.id), "--watch", "--interval", "0.1", "--key", key)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) >= 3 and "done" in lines[-1] and "100%" in lines[-1]
    assert any("running" in line and "step" in line for line in lines)

    ref = await dispatch.enqueue(pool, redis, "cli_long", "thing:2")
    await wait_for(lambda: pool.fetchval("SELECT status = 'running' FROM tasks WHERE id = $1", ref.id))
    code, out, err = await depot("tasks", "stop", str(ref.id), "--watch", "--key", key)
    assert code == 1 and "stops at its next step" in out and "stopped" in out.splitlines()[-1]
    code, _, err = await depot("tasks", "stop", str(ref.id), "--key", key)
    assert code == 1 and f"409: Task #{ref.id} is not running" in err


async def test_schedule_and_queues(depot, pool, make_key, snapshot_id):
    key = await make_key("operator")
    code, out, err = await depot("task", "schedule", "rebuild", "--cron", "0 3 * * *", "-p", f"snapshot={snapshot_id}",
                                 "--key", key)
    assert code == 0, err
    assert out.startswith("task ") and "scheduled (0 3 * * *), next run " in out and "T03:00:00Z" in out
    row = await pool.fetchrow("SELECT target, params, status FROM tasks WHERE type = 'scheduled'")
    assert (row["target"], row["params"], row["status"]) == (
        f"snapshot:{snapshot_id}", {"snapshot": snapshot_id}, "scheduled")
    code, out, _ = await depot("tasks", "--status", "scheduled", "--key", key)
    assert code == 0 and "0 3 * * *" in out and "NEXT RUN" in out
    code, _, err = await depot("task", "schedule", "rebuild", "--cron", "nope", "-p", f"snapshot={snapshot_id}",
                                 "--key", key)
    assert code == 1 and "400:" in err and "cron" in err

    code, out, err = await depot("queues", "--key", key)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["QUEUE", "DEPTH", "RUNNING"] and "depot:test-queue" in out
    code, out, _ = await depot("queues", "--json", "--key", key)
    assert json.loads(out)["results"]["queues"][0]["depth"] == 0


def test_status_choices_are_the_listings():
    assert tasks.STATUSES == list(LISTINGS)
