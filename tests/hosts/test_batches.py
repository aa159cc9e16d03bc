"""Reports of many hosts: stored in groups (intake), diffed in batches (one job, one transaction)."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from app.hosts import bodies, intake
from app.hosts import inventory as inventory_store
from app.resources import BATCHER
from app.tasks import rows
from tests.helpers import inventory, package_count, wait_for
from tests.hosts.helpers import installed, put, register
from workers import reconciler, runner


async def _hosts(client, make_key, n: int, prefix: str = "batch") -> list[tuple]:
    key = await make_key("operator")
    out = []
    for i in range(n):
        creds = await register(client, key, f"{prefix}{i:02d}")
        await put(client, creds, "status", {"os_family": "Debian"})
        out.append(creds)
    return out


async def _packages(pool, host_id) -> dict:
    return {r["name"]: r["version"] for r in await inventory(pool, host_id)}


async def test_many_hosts_reports_go_in_one_job_and_are_applied_together(client, pool, redis, settings, make_key,
                                                                           run_worker):
    hosts = await _hosts(client, make_key, 6)
    # A window no loaded machine outlasts, so that the six concurrent requests meet in one batch
    # whatever their timing; flush() sends it.
    batcher = client.app[BATCHER]
    window, batcher.window = batcher.window, 60.0
    await asyncio.gather(*(put(client, c, "packages/installed", installed({"bash": "5.1-1", f"only{i}": "1.0"}))
                           for i, c in enumerate(hosts)))
    await batcher.flush()
    batcher.window = window
    tasks = await pool.fetch("SELECT id, job_id FROM tasks WHERE kind = 'host_diff' AND status = 'queued'")
    assert len(tasks) == 6 and len({t["job_id"] for t in tasks}) == 1
    assert await redis.zcard(settings.queue_name) == 1  # one arq job carries the six tasks
    await run_worker()
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'done'") == 6
    for i, creds in enumerate(hosts):
        assert await _packages(pool, creds[2]) == {"bash": "5.1-1", f"only{i}": "1.0"}

    # The next round: each host's change lands in its own history, nothing crosses hosts.
    await asyncio.gather(*(put(client, c, "packages/installed", installed({"bash": f"5.{i + 2}-1", f"only{i}": "1.0"}))
                           for i, c in enumerate(hosts)))
    await run_worker()
    rows = await pool.fetch("SELECT host_id, change, name, old_version, new_version FROM host_history ORDER BY host_id")
    assert [tuple(r) for r in rows] == [(c[2], "upgraded", "bash", "5.1-1", f"5.{i + 2}-1") for i, c in enumerate(hosts)]


async def test_several_reports_of_a_host_in_one_run_keep_every_change_and_the_net_rows(client, pool, make_key,
                                                                                        run_worker):
    (creds,) = await _hosts(client, make_key, 1)
    await put(client, creds, "packages/installed", installed({"a": "1.0", "b": "1.0"}))
    await run_worker()
    # Three reports wait for one task: x comes and goes, a goes up then down, b goes.
    await put(client, creds, "packages/installed", installed({"a": "2.0", "b": "1.0", "x": "1.0"}))
    await put(client, creds, "packages/installed", installed({"a": "1.5", "x": "1.0"}))
    await put(client, creds, "packages/installed", installed({"a": "1.5"}))
    assert await pool.fetchval("SELECT count(*) FROM host_reports WHERE host_id = $1", creds[2]) == 3
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'queued'") == 1
    await run_worker()
    history = [tuple(r) for r in await pool.fetch(
        "SELECT change, name, old_version, new_version FROM host_history WHERE host_id = $1 ORDER BY id", creds[2])]
    assert sorted(history[:2]) == [("added", "x", None, "1.0"), ("upgraded", "a", "1.0", "2.0")]
    assert sorted(history[2:4]) == [("downgraded", "a", "2.0", "1.5"), ("removed", "b", "1.0", None)]
    assert history[4:] == [("removed", "x", "1.0", None)]
    assert await _packages(pool, creds[2]) == {"a": "1.5"}
    assert [r["state"] for r in await inventory(pool, creds[2])] == ["downgraded"]
    # The set is the last report's: the next diff starts from it.
    await put(client, creds, "packages/installed", installed({"a": "1.5", "c": "1"}))
    await run_worker()
    assert await _packages(pool, creds[2]) == {"a": "1.5", "c": "1"}


async def test_a_host_that_fails_does_not_fail_the_others_in_its_batch(client, pool, make_key, run_worker):
    good, bad = await _hosts(client, make_key, 2)
    await put(client, good, "packages/installed", installed({"a": "1"}))
    await put(client, bad, "packages/installed", installed({"a": "1"}))
    await pool.execute("UPDATE host_reports SET body = 'not a report' WHERE host_id = $1", bad[2])
    await run_worker()
    status = dict(await pool.fetch("SELECT target, status FROM tasks WHERE kind = 'host_diff'"))
    assert status == {f"host:{good[2]}": "done", f"host:{bad[2]}": "error"}
    assert await _packages(pool, good[2]) == {"a": "1"}
    # The failed host's digest is forgotten: the same report sent again is stored and applied.
    assert await pool.fetchval("SELECT installed_digest FROM hosts WHERE id = $1", bad[2]) is None
    await pool.execute("DELETE FROM host_reports")
    body = await put(client, bad, "packages/installed", installed({"a": "1"}))
    assert body["changed"]
    await run_worker()
    assert await _packages(pool, bad[2]) == {"a": "1"}


async def test_a_batch_job_that_redis_lost_is_sent_again(client, pool, redis, settings, make_key, run_worker):
    hosts = await _hosts(client, make_key, 3)
    await asyncio.gather(*(put(client, c, "packages/installed", installed({"a": "1"})) for c in hosts))
    await client.app[BATCHER].flush()
    await redis.flushdb()  # Redis restarted empty
    await pool.execute("UPDATE tasks SET created_at = now() - interval '1 minute'")
    assert (await reconciler.reconcile(pool, redis, settings))["resent"] == 3
    assert await redis.zcard(settings.queue_name) == 1  # sent again as one batch job
    await run_worker()
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'done'") == 3
    assert await package_count(pool) == 3


async def test_intake_groups_concurrent_reports_and_isolates_a_bad_one(client, pool, make_key):
    hosts = await _hosts(client, make_key, 5)
    digests = dict(await pool.fetch("SELECT id, token_digest FROM hosts"))
    statements = []

    async def counting(pool_, reports):  # the real statement, counted
        statements.append(len(reports))
        return await intake.accept_reports(pool_, reports)

    writer = intake.GroupCommit(pool, counting, max_inflight=1)

    def report(creds, kind="installed", token=None):
        body = bodies.encode_body(b'{"installed_packages": [{"name": "a", "version": "1"}]}', True)
        return intake.Report(creds[2], kind, b"digest", body, token or digests[creds[2]], "job-x")

    # Five requests at once: fewer statements than reports.
    results = await asyncio.gather(*(writer.accept(report(c)) for c in hosts))
    assert sum(statements) == 5 and len(statements) < 5
    assert all(r.authorized and r.changed and r.created for r in results)
    assert await pool.fetchval("SELECT count(DISTINCT host_id) FROM host_reports") == 5

    # A report PostgreSQL refuses fails alone; stale credentials write nothing; the others are stored.
    statements.clear()
    await pool.execute("DELETE FROM host_reports; UPDATE hosts SET installed_digest = NULL")
    outcomes = await asyncio.gather(
        writer.accept(report(hosts[0])), writer.accept(report(hosts[1], kind="bogus")),
        writer.accept(report(hosts[2], token=b"\0" * 32)), writer.accept(report(hosts[3])),
        return_exceptions=True,
    )
    assert statements == [4, 1, 1, 1, 1]  # the group failed, then each went alone
    assert outcomes[0].changed and outcomes[3].changed
    assert "check constraint" in str(outcomes[1])
    assert not outcomes[2].authorized and not outcomes[2].changed
    assert sorted(await pool.fetchval("SELECT array_agg(host_id) FROM host_reports")) == [hosts[0][2], hosts[3][2]]


async def test_events_of_many_hosts_are_stored_together_each_once(client, pool, make_key):
    hosts = await _hosts(client, make_key, 4, prefix="events")
    history = [{"date_start": "2026-01-02", "time_start": "10:00:00", "command": "apt-get upgrade",
                "upgraded": [{"name": "bash", "version": "5.2-1"}]}]
    first = await asyncio.gather(*(put(client, c, "packages/event", {"events": history}) for c in hosts))
    assert [b["added"] for b in first] == [1, 1, 1, 1]
    history.append({"date_start": "2026-01-03", "time_start": "09:00:00", "command": "apt-get install vim",
                    "installed": [{"name": "vim", "version": "9.0"}]})
    again = await asyncio.gather(*(put(client, c, "packages/event", {"events": history}) for c in hosts))
    assert [b["added"] for b in again] == [1, 1, 1, 1]
    rows = await pool.fetch("SELECT host_id, count(*) FROM host_events GROUP BY host_id ORDER BY host_id")
    assert [tuple(r) for r in rows] == [(c[2], 2) for c in hosts]


async def test_a_batch_job_takes_the_queued_diffs_of_other_jobs_beside_its_own(client, pool, make_key, run_worker,
                                                                              caplog):
    hosts = await _hosts(client, make_key, 5, prefix="backlog")
    batcher = client.app[BATCHER]
    for i, c in enumerate(hosts):  # five jobs of one task each, as five windows would send them
        await put(client, c, "packages/installed", installed({"bash": "5.1-1", f"own{i}": "1.0"}))
        await batcher.flush()
    jobs = await pool.fetch("SELECT DISTINCT job_id FROM tasks WHERE kind = 'host_diff' AND status = 'queued'")
    assert len(jobs) == 5
    with caplog.at_level(logging.INFO, logger="workers.runner"):
        await run_worker()
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'done'") == 5
    # One job ran all five in one batch; the others found them taken (or being taken) and ran nothing.
    batches = [r.getMessage() for r in caplog.records if "in one batch" in r.getMessage()]
    assert len(batches) == 1 and batches[0].startswith("5 host_diff task(s) in one batch: 5 done"), batches
    for i, creds in enumerate(hosts):
        assert await _packages(pool, creds[2]) == {"bash": "5.1-1", f"own{i}": "1.0"}


async def _two_batches_waiting_to_write(client, pool, redis, settings, make_key) -> tuple:
    """Four hosts' diffs, batches of two, no turn to write given: the job's first batch reads its reports
    and waits; the job then claims and starts the second, which reads too and waits behind it."""
    hosts = await _hosts(client, make_key, 4, prefix="turns")
    await asyncio.gather(*(put(client, c, "packages/installed", installed({"bash": "5.1-1", f"turn{i}": "1"}))
                           for i, c in enumerate(hosts)))
    await client.app[BATCHER].flush()
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM tasks WHERE kind = 'host_diff' ORDER BY id")]
    gate = runner.BatchGate()
    await gate.writes.acquire()
    ctx = {"pool": pool, "redis": redis, "settings": replace(settings, diff_batch_max_tasks=2),
           "worker_id": "turns:1", "batch_gate": gate}
    job = asyncio.create_task(runner.run_tasks(ctx, ids[:1]))
    await wait_for(lambda: _count(pool, "SELECT count(*) FROM tasks WHERE status = 'running'", 4))
    # Both batches have read their hosts' reports; neither has written.
    assert await pool.fetchval("SELECT count(*) FROM host_sets") == 0
    assert await pool.fetchval("SELECT count(*) FROM host_reports") == 4
    return hosts, gate, job


async def _count(pool, sql: str, n: int) -> bool:
    return await pool.fetchval(sql) == n


async def test_the_next_batch_is_read_while_the_one_before_waits_to_write(client, pool, redis, settings, make_key):
    hosts, gate, job = await _two_batches_waiting_to_write(client, pool, redis, settings, make_key)
    # Nothing queued, but both batches' reports pending: no vacuum of host_reports yet (inventory.reclaim_reports).
    assert not await rows.any_queued(pool, "host_diff")
    assert not await inventory_store.reclaim_reports(pool, 1)
    gate.writes.release()  # the first writes, then the second
    assert await asyncio.wait_for(job, 30) == "4 task(s) for a job of 1"
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'done'") == 4
    for i, creds in enumerate(hosts):
        assert await _packages(pool, creds[2]) == {"bash": "5.1-1", f"turn{i}": "1"}


async def test_a_job_cancelled_between_two_batches_hands_both_back(client, pool, redis, settings, make_key,
                                                                   run_worker):
    hosts, gate, job = await _two_batches_waiting_to_write(client, pool, redis, settings, make_key)
    job.cancel()  # the worker shutting down
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'queued'") == 4
    assert await pool.fetchval("SELECT count(*) FROM host_sets") == 0
    await run_worker()  # sent again: applied once, whole
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE kind = 'host_diff' AND status = 'done'") == 4
    for i, creds in enumerate(hosts):
        assert await _packages(pool, creds[2]) == {"bash": "5.1-1", f"turn{i}": "1"}
