"""The `depot` HTTP commands against a live server: tables, --json, --watch, stop, schedule, config, errors."""
from __future__ import annotations

import asyncio
import json

import pytest

from app import cli
from app.tasks import dispatch
from tests.conftest import wait_for
from workers import runner


@pytest.fixture(autouse=True)
def handlers():
    async def slow(ctx):
        for i in range(0, 101, 10):
            await ctx.progress(i, f"step {i}")
            await asyncio.sleep(0.1)
            await ctx.check_stop()

    async def quick(ctx):
        return {"n": 1}

    runner.HANDLERS.update(cli_slow=slow, cli_quick=quick)
    yield
    runner.HANDLERS.pop("cli_slow", None)
    runner.HANDLERS.pop("cli_quick", None)


@pytest.fixture
def depot(client, capsys, monkeypatch, tmp_path):
    """await depot("tasks", "list") -> (exit code, stdout, stderr), run in a thread like a real terminal."""
    monkeypatch.setenv("DEPOT_URL", str(client.make_url("")).rstrip("/"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DEPOT_API_KEY", raising=False)

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()

        def go() -> int:
            try:
                cli.main(list(argv))
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else 1
            return 0

        code = await asyncio.to_thread(go)
        out, err = capsys.readouterr()
        return code, out, err

    return run


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


async def test_watch_follows_progress_and_stop(depot, pool, redis, make_key, live_worker):
    key = await make_key("operator")
    ref = await dispatch.enqueue(pool, redis, "cli_slow", "thing:1")
    code, out, err = await depot("tasks", "show", str(ref.id), "--watch", "--interval", "0.1", "--key", key)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) >= 3 and "done" in lines[-1] and "100%" in lines[-1]
    assert any("running" in line and "step" in line for line in lines)

    ref = await dispatch.enqueue(pool, redis, "cli_slow", "thing:2")
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


async def test_hosts_list_filter_and_show_with_updates(depot, client, pool, make_key, run_worker):
    from tests.hosts import captured
    from tests.hosts.helpers import put, register

    admin = await make_key("admin")
    resp = await client.post("/api/v2/profile/", json=captured.PROFILE, headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 201
    creds = await register(client, admin, hostname="web01")
    host_id = creds[2]
    await put(client, creds, "status", captured.STATUS)
    await put(client, creds, "packages/installed", captured.INSTALLED)
    await put(client, creds, "packages/available", captured.AVAILABLE)
    await run_worker()
    other = await register(client, admin, hostname="db01", ip="10.0.0.2")

    code, out, err = await depot("hosts", "--key", admin)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "HOSTNAME", "IP"] and lines[-1] == "2 host(s)"
    assert {line.split()[1] for line in lines[1:-1]} == {"localhost", "db01"}  # STATUS renamed web01

    code, out, err = await depot("hosts", "--per-page", "1", "--page", "2", "--key", admin)
    assert code == 0 and out.splitlines()[-1] == "page 2, 1 of 2 host(s)", out + err
    code, out, err = await depot("hosts", "list", "--os", "Debian GNU/Linux", "--key", admin)
    assert code == 0 and out.splitlines()[-1] == "1 host(s)" and str(other[2]) not in out.split()[0:12], err
    code, out, _ = await depot("hosts", "--outdated", "--key", admin)
    assert code == 0 and "UPDATES" in out and out.splitlines()[-1] == "1 host(s)"

    code, out, err = await depot("hosts", "show", str(host_id), "--key", admin)
    assert code == 0, err
    assert "3 available update(s)" in out and "ca-certificates" in out and "20250419~deb12u2" in out
    code, out, _ = await depot("hosts", "show", str(host_id), "--json", "--key", admin)
    data = json.loads(out)
    assert len(data["updates"]) == 3 and data["host"]
    code, _, err = await depot("hosts", "show", "99999", "--key", admin)
    assert code == 1 and "404: Host #99999 does not exist." in err


async def test_repository_commands_are_wired_into_depot(depot, make_key):
    key = await make_key("admin")
    code, out, err = await depot("repo", "create", "tools", "--type", "deb", "--dist", "bookworm", "--section", "main",
                                 "--key", key)
    assert code == 0 and "created" in out, err
    code, out, err = await depot("repo", "list", "--key", key)
    assert code == 0 and "tools" in out and "bookworm/main" in out, err
