"""Queues and workers, the reconciler with a lost worker, /metrics (open, keyed, private port), request ids and logs."""
from __future__ import annotations

import asyncio
import logging
import re
import socket
from dataclasses import replace

import aiohttp
import orjson
import pytest

from app import metrics
from app.tasks import dispatch
from app.logs import JsonFormatter
from app.main import create_app
from tests.helpers import bearer
from workers import runner, reconciler


@pytest.fixture(autouse=True)
def handlers():
    async def quick(ctx):
        return None

    async def boom(ctx):
        raise RuntimeError("nope")

    runner.HANDLERS.update(qm_quick=quick, qm_boom=boom)
    yield
    runner.HANDLERS.pop("qm_quick", None)
    runner.HANDLERS.pop("qm_boom", None)


async def test_queues_depth_outcomes_and_workers(client, pool, redis, admin_key, run_worker):
    for n in range(3):
        await dispatch.enqueue(pool, redis, "qm_quick", f"t:{n}")
    await dispatch.enqueue(pool, redis, "qm_boom", "t:9")
    await run_worker()
    for n in range(2):
        await dispatch.enqueue(pool, redis, "qm_quick", f"w:{n}")
    await pool.execute("UPDATE tasks SET created_at = now() - interval '90 seconds' WHERE target = 'w:0'")
    body = await (await client.get("/api/v2/queues", headers=bearer(admin_key))).json()
    q = body["results"]["queues"][0]
    assert q["depth"] == 2 and q["queued_tasks"] == 2 and q["in_progress"] == 0
    assert q["done_last_hour"] == 3 and q["failed_last_hour"] == 1
    assert q["oldest_waiting_seconds"] >= 89
    kinds = {k["kind"]: k for k in q["kinds"]}
    assert kinds["qm_quick"]["done_last_hour"] == 3 and kinds["qm_boom"]["failed_last_hour"] == 1
    workers = body["results"]["workers"]
    assert len(workers) == 1 and workers[0]["state"] == "stopped"  # the burst worker shut down cleanly


async def test_depth_counts_only_jobs_waiting_now(client, pool, redis, settings, admin_key):
    """arq keeps a running job in its queue zset, and the workers' next cron runs wait there deferred:
    neither is a waiting job."""
    from arq.constants import in_progress_key_prefix

    from app.tasks import status

    waiting = await dispatch.enqueue(pool, redis, "qm_quick", "d:1")
    running = await dispatch.enqueue(pool, redis, "qm_quick", "d:2")
    await redis.enqueue_job("reconcile", _job_id="cron:reconcile:later", _defer_by=30,
                            _queue_name=settings.queue_name)  # as arq's cron does
    assert await redis.zcard(settings.queue_name) == 3
    ids = [m.decode() for m in await redis.zrange(settings.queue_name, 0, -1)]
    running_job = next(i for i in ids if i.startswith(f"task-{running.id}-"))
    await redis.set(in_progress_key_prefix + running_job, b"1", px=60_000)
    await redis.zadd(settings.queue_name, {running_job: 1000})  # picked long ago: the oldest score of all
    depth, age = await status.redis_depth(redis, settings.queue_name)
    assert depth == 1 and age is not None and age < 60
    assert any(i.startswith(f"task-{waiting.id}-") for i in ids)


async def test_a_lost_worker_is_shown_lost_and_its_task_requeued(client, pool, redis, settings, admin_key, run_worker):
    ran = []

    async def once(ctx):
        ran.append(ctx.id)

    runner.HANDLERS["qm_once"] = once
    try:
        # A worker that died mid-task (SIGKILL): its heartbeat and its task's heartbeat stopped long ago.
        await pool.execute("INSERT INTO workers (worker_id, hostname, pid, heartbeat_at) VALUES"
                           " ('dead:1', 'gone', 1, now() - interval '1 minute')")
        ref = await dispatch.enqueue(pool, redis, "qm_once", "t:1")
        await redis.flushdb()  # its job went with it
        await pool.execute("UPDATE tasks SET status = 'running', worker_id = 'dead:1', started_at = now(),"
                           " heartbeat_at = now() - interval '1 minute' WHERE id = $1", ref.id)
        h = bearer(admin_key)
        body = await (await client.get("/api/v2/queues", headers=h)).json()
        dead = body["results"]["workers"][0]
        assert dead["worker_id"] == "dead:1" and dead["state"] == "lost" and dead["running_tasks"] == 1
        assert dead["heartbeat_age_seconds"] >= 59
        result = await reconciler.reconcile(pool, redis, settings)
        assert result["requeued"] == 1
        assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "queued"
        await run_worker()
        assert ran == [ref.id]
        assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", ref.id) == "done"
        body = await (await client.get("/api/v2/queues", headers=h)).json()
        dead = next(w for w in body["results"]["workers"] if w["worker_id"] == "dead:1")
        assert dead["state"] == "lost"  # still lost after the reconciler stamped it stopped
    finally:
        runner.HANDLERS.pop("qm_once", None)


async def test_metrics_http_tasks_and_queue(client, pool, redis, admin_key, run_worker):
    await dispatch.enqueue(pool, redis, "qm_quick", "t:1")
    await dispatch.enqueue(pool, redis, "qm_boom", "t:2")
    await run_worker()
    # Finished tasks are read up to 2 s back (rows stamped but not committed yet are read next time).
    await pool.execute("UPDATE tasks SET finished_at = finished_at - interval '5 seconds',"
                       " started_at = started_at - interval '5 seconds'")
    await dispatch.enqueue(pool, redis, "qm_quick", "t:3")
    await client.get("/api/v2/task/12345", headers=bearer(admin_key))
    await client.get("/api/v2/task/67890/", headers=bearer(admin_key))
    metrics.DB_COLLECTOR.reset()  # cached a few seconds, totals since the process's first scrape: start afresh
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    # Route names, not raw paths: both ids land on one series.
    assert 'depot_http_requests_total{method="GET",route="task",status="404"}' in text
    assert not re.search(r'route="[^"]*\d', text)  # no label holds an id
    assert 'depot_http_request_duration_seconds_bucket{le="0.005",method="GET",route="task"}' in text
    assert 'depot_queue_depth{queue="depot:test-queue"} 1.0' in text
    assert 'depot_tasks{kind="qm_quick",status="queued"} 1.0' in text
    assert 'depot_tasks_finished_total{kind="qm_quick",outcome="done"} 1.0' in text
    assert 'depot_task_duration_seconds_count{kind="qm_boom",outcome="error"} 1.0' in text
    assert 'depot_task_duration_seconds_bucket{kind="qm_boom",le="0.1",outcome="error"} 1.0' in text
    assert "depot_hosts{state=\"total\"} 0.0" in text

    # A later scrape adds only what finished since the last one.
    await run_worker()
    await pool.execute("UPDATE tasks SET finished_at = $1::timestamptz + interval '1 millisecond',"
                       " started_at = $1::timestamptz - interval '2 seconds' WHERE target = 't:3'",
                       metrics.DB_COLLECTOR.watermark)
    metrics.DB_COLLECTOR.read_at = 0
    text = await (await client.get("/metrics")).text()
    assert 'depot_tasks_finished_total{kind="qm_quick",outcome="done"} 2.0' in text
    assert 'depot_task_duration_seconds_bucket{kind="qm_quick",le="1.0",outcome="done"} 1.0' in text
    assert 'depot_task_duration_seconds_bucket{kind="qm_quick",le="5.0",outcome="done"} 2.0' in text
    assert 'depot_task_duration_seconds_count{kind="qm_boom",outcome="error"} 1.0' in text


async def test_metrics_key_and_private_port(aiohttp_client, settings):
    keyed = await aiohttp_client(create_app(replace(settings, metrics_key="s3cret-metrics-key")))
    assert (await keyed.get("/metrics")).status == 401
    assert (await keyed.get("/metrics", headers=bearer("wrong"))).status == 401
    assert (await keyed.get("/metrics", headers=bearer("s3cret-metrics-key"))).status == 200

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    private = await aiohttp_client(create_app(replace(settings, metrics_port=port)))
    assert (await private.get("/metrics")).status == 404  # not on the API port
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200 and "depot_http_requests_total" in await resp.text()


async def test_request_ids_and_json_logs_never_hold_a_key(client, admin_key, caplog):
    caplog.set_level(logging.INFO, logger="depot.access")
    resp = await client.get("/api/v2/tasks?per_page=5&token=" + admin_key, headers=bearer(admin_key))
    generated = resp.headers["X-Request-Id"]
    assert resp.status == 200 and len(generated) >= 16
    resp = await client.get("/api/v2/queues", headers={**bearer(admin_key), "X-Request-Id": "abcd-1234-efgh"})
    assert resp.headers["X-Request-Id"] == "abcd-1234-efgh"
    resp = await client.get("/api/v2/queues", headers={**bearer(admin_key), "X-Request-Id": "bad id; <script>"})
    assert resp.headers["X-Request-Id"] != "bad id; <script>"
    resp = await client.get("/api/v2/tasks", headers=bearer("ak_wrongwrongwrongwrong"))
    assert resp.status == 401 and resp.headers["X-Request-Id"]

    records = [r for r in caplog.records if r.name == "depot.access"]
    assert len(records) == 4
    lines = [JsonFormatter().format(r) for r in records]
    first = orjson.loads(lines[0])
    assert first["request_id"] == generated and first["route"] == "tasks" and first["status"] == 200
    assert first["method"] == "GET" and isinstance(first["duration_ms"], float)
    assert orjson.loads(lines[1])["request_id"] == "abcd-1234-efgh"
    everything = "\n".join(lines) + "\n".join(caplog.messages)
    assert admin_key not in everything and "ak_wrong" not in everything and "per_page" not in everything
    await asyncio.sleep(0)


async def test_agent_reports_show_in_metrics(client, make_key):
    from tests.hosts import captured
    from tests.hosts.helpers import put, register

    def value(kind):
        return metrics.REGISTRY.get_sample_value("depot_host_reports_received_total", {"kind": kind}) or 0.0

    admin = await make_key("admin")
    creds = await register(client, admin, hostname="m01")
    before = value("installed"), value("available")
    await put(client, creds, "packages/installed", captured.INSTALLED)
    await put(client, creds, "packages/available", captured.AVAILABLE)
    await put(client, ("id_" + "0" * 32, "f" * 64), "packages/installed", captured.INSTALLED, status=401)
    # Counted once each, by the handler that accepted it; the refused report does not count.
    assert (value("installed"), value("available")) == (before[0] + 1, before[1] + 1)
    text = await (await client.get("/metrics")).text()
    assert 'depot_host_reports_received_total{kind="installed"}' in text
    assert 'route="host_installed_put",status="401"' in text


async def test_every_log_line_of_a_request_carries_its_id(aiohttp_client, settings, admin_key, caplog):
    from aiohttp import web

    from app.logs import RequestIdFilter

    async def noisy(request):
        logging.getLogger("depot.test").warning("inside the handler")
        return web.json_response({})

    app = create_app(settings)
    app.router.add_get("/api/v2/noisy", noisy, name="noisy")
    client = await aiohttp_client(app)
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    resp = await client.get("/api/v2/noisy", headers={**bearer(admin_key), "X-Request-Id": "trace-0001-abcd"})
    assert resp.status == 200
    inside = next(r for r in caplog.records if r.getMessage() == "inside the handler")
    assert inside.request_id == "trace-0001-abcd"
    assert orjson.loads(JsonFormatter().format(inside))["request_id"] == "trace-0001-abcd"
    logging.getLogger("depot.test").warning("outside")
    assert not hasattr(caplog.records[-1], "request_id")
