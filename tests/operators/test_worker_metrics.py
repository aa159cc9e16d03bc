"""Worker-process metrics: two real `depot worker` processes, each on its own private /metrics port, running
real jobs (a host's inventory diff from a real report, a failing task, a task stopped by an operator)."""
from __future__ import annotations

import pytest

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from app.tasks import dispatch
from tests.helpers import bearer, wait_for
from tests.faults import procs

pytestmark = pytest.mark.slow

KEY = "worker-metrics-key"


async def _scrape(port: int, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as r:
        text = await r.text()
    if r.status != 200:
        return r.status, {}
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return r.status, samples


def _total(scrapes: list[dict], name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for s in scrapes for (n, lab), v in s.items() if n == name and want <= set(lab))


async def _task_status(pool, task_id: int) -> str:
    return await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id)


async def test_each_worker_process_exports_its_jobs(client, settings, pool, redis, admin_key, tmp_path):
    ports = [procs.free_port(), procs.free_port()]
    workers = []
    try:
        for port in ports:
            env = procs.depot_env(database_url=settings.database_url, redis_url=settings.redis_url,
                                  var_dir=settings.var_dir, storage_dir=settings.storage_dir,
                                  queue_name=settings.queue_name,
                                  extra={"DEPOT_WORKER_METRICS_PORT": str(port), "DEPOT_METRICS_KEY": KEY,
                                         "DEPOT_TEST_HANDLERS": "tests.operators.worker_handlers"})
            workers.append(await asyncio.to_thread(procs.start_worker, env, tmp_path, f"w{port}"))

        status, _ = await _scrape(ports[0], key=None)
        assert status == 401  # the metrics key guards the workers' endpoints too
        status, _ = await _scrape(ports[0], key="wrong")
        assert status == 401

        # A real job: a host's first inventory, diffed by whichever worker takes it.
        resp = await client.post("/api/v2/host/registering", json={"hostname": "m1.example.net", "ip": "192.0.2.4"},
                                 headers=bearer(admin_key))
        creds = (await resp.json())["results"]
        resp = await client.put("/api/v2/host/packages/installed",
                                json={"installed_packages": [{"name": "bash", "version": "5.2.15-2"}]},
                                headers={"Authorization": f"Host {creds['id']}:{creds['token']}"})
        diff_id = (await resp.json())["task-id"]
        failing = await dispatch.enqueue(pool, redis, "op_fail", "m:fail")
        waiting = await dispatch.enqueue(pool, redis, "op_wait", "m:wait", {"seconds": 30})
        await wait_for(lambda: _task_status_is(pool, diff_id, "done"), timeout=30)
        await wait_for(lambda: _task_status_is(pool, failing.id, "error"), timeout=30)
        await wait_for(lambda: _task_status_is(pool, waiting.id, "running"), timeout=30)

        # While it runs, exactly one of the two processes has it in progress.
        scrapes = [(await _scrape(p))[1] for p in ports]
        in_progress = [_total([s], "depot_worker_jobs_in_progress", kind="op_wait") for s in scrapes]
        assert sorted(in_progress) == [0.0, 1.0]
        resp = await client.post(f"/api/v2/task/{waiting.id}/stop", headers=bearer(admin_key))
        assert resp.status == 202
        await wait_for(lambda: _task_status_is(pool, waiting.id, "stopped"), timeout=30)

        scrapes = [(await _scrape(p))[1] for p in ports]
        for kind, outcome in (("host_diff", "done"), ("op_fail", "error"), ("op_wait", "stopped")):
            assert _total(scrapes, "depot_worker_jobs_started_total", kind=kind) == 1, kind
            assert _total(scrapes, "depot_worker_jobs_finished_total", kind=kind, outcome=outcome) == 1, kind
            assert _total(scrapes, "depot_worker_job_duration_seconds_count", kind=kind, outcome=outcome) == 1
        assert _total(scrapes, "depot_worker_jobs_finished_total") == 3
        assert _total(scrapes, "depot_worker_job_duration_seconds_sum", kind="op_wait") > 0.05
        assert _total(scrapes, "depot_worker_jobs_in_progress") == 0
        registered = {r["worker_id"] for r in await pool.fetch("SELECT worker_id FROM workers WHERE stopped_at IS NULL")}
        for s in scrapes:
            assert s[("process_resident_memory_bytes", ())] > 0
            ids = {dict(lab)["worker_id"] for (n, lab) in s if n == "depot_worker_info"}
            assert len(ids) == 1 and ids <= registered  # each endpoint is one worker process
    finally:
        for w in workers:
            await asyncio.to_thread(w.close)


async def _task_status_is(pool, task_id: int, status: str) -> bool:
    return await _task_status(pool, task_id) == status


def _free_pair() -> int:
    """A port p with p and p+1 both free (for `depot run --workers 2`)."""
    import socket

    for _ in range(50):
        p = procs.free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise AssertionError("no two consecutive free ports")


async def test_depot_run_gives_each_worker_its_own_port(settings, tmp_path):
    base = _free_pair()
    env = procs.depot_env(database_url=settings.database_url, redis_url=settings.redis_url, var_dir=settings.var_dir,
                          storage_dir=settings.storage_dir, queue_name=settings.queue_name,
                          port=procs.free_port(), extra={"DEPOT_WORKER_METRICS_PORT": str(base)})
    run = procs.DepotProcess(["run", "--workers", "2"], env, tmp_path / "run.log")
    try:
        async def both_up():
            try:
                return [(await _scrape(p, key=None))[1] for p in (base, base + 1)]
            except aiohttp.ClientError:
                assert run.alive(), run.output()[-3000:]
                return None

        scrapes = await wait_for(both_up, timeout=60, interval=0.2)
        ids = [{dict(lab)["worker_id"] for (n, lab) in s if n == "depot_worker_info"} for s in scrapes]
        assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1]
    finally:
        await asyncio.to_thread(run.close)
    assert run.proc.returncode == 0 and "depot: stopped" in run.output()


async def test_depot_run_servers_share_the_port_and_answer_metrics_as_one(settings, tmp_path):
    import psutil

    port, metrics_port = procs.free_port(), procs.free_port()
    env = procs.depot_env(database_url=settings.database_url, redis_url=settings.redis_url, var_dir=tmp_path / "var",
                          storage_dir=settings.storage_dir, queue_name=settings.queue_name, port=port,
                          extra={"DEPOT_METRICS_PORT": str(metrics_port)})
    run = procs.DepotProcess(["run", "--servers", "2", "--workers", "1"], env, tmp_path / "run.log")
    base = f"http://127.0.0.1:{port}"
    try:
        async def up():  # both servers print this once they listen
            assert run.alive(), run.output()[-3000:]
            return run.output().count("depot: serving on") == 2

        await wait_for(up, timeout=60, interval=0.2)
        servers = [p for p in psutil.Process(run.pid).children() if "serve" in p.cmdline()]
        assert len(servers) == 2 and all("--reuse-port" in p.cmdline() for p in servers)
        # A new connection each time: the kernel spreads them over both processes.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(40):
                async with s.get(f"{base}/healthz") as r:
                    assert r.status == 200
        # Both processes took requests: each wrote its own multiprocess metrics file.
        files = {f.name for f in (tmp_path / "var" / "run" / "metrics").iterdir()}
        assert {f"counter_{p.pid}.db" for p in servers} <= files
        # Whichever process answers a scrape (both listen on the private metrics port too), it counts
        # every process's requests.
        counts = set()
        for _ in range(8):
            _, samples = await _scrape(metrics_port, key=None)
            counts.add(_total([samples], "depot_http_requests_total", route="healthz"))
        assert counts == {40.0}
    finally:
        await asyncio.to_thread(run.close)
    assert run.proc.returncode == 0 and "depot: stopped" in run.output()
