"""`depot run` survives its parts: a worker and a server killed with SIGKILL (as the OOM killer does) come
back within seconds while the other server keeps answering; a part that cannot start makes it give up."""
from __future__ import annotations

import asyncio
import re
import signal
import time

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from app.tasks import dispatch
from tests.faults import procs, reporting
from tests.faults.repo_client import DIST, SECTION, Repos, debs, packages_in, wait_task
from tests.helpers import bearer, wait_for


def _children(run: procs.DepotProcess) -> dict[str, list[int]]:
    kids = psutil.Process(run.pid).children()
    return {kind: sorted(p.pid for p in kids if kind in p.cmdline()) for kind in ("serve", "worker")}


async def _up(run: procs.DepotProcess, servers: int, workers: int) -> bool:
    """Whether `run` has said this many server and worker starts so far (restarts count again)."""
    assert run.alive(), run.output()[-3000:]
    out = run.output()
    return out.count("depot: serving on") >= servers and len(re.findall(r"worker \S+ started", out)) >= workers


async def _restarts(base: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    return {sample.labels["part"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "depot_run_restarts_total"}


async def test_killed_worker_and_server_come_back_while_the_other_server_answers(
    processes, fpool, fredis, fault_admin_key
):
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    env = processes.env(DEPOT_PORT=str(port), DEPOT_BASE_URL=base)
    run = procs.DepotProcess(["run", "--servers", "2", "--workers", "1"], env, processes.log_dir / "run.log")
    processes.started.append(run)

    await wait_for(lambda: _up(run, 2, 1), timeout=60, interval=0.1)
    before = _children(run)
    assert len(before["serve"]) == 2 and len(before["worker"]) == 1, before
    assert await _restarts(base) == {"server": 0, "worker": 0}

    # Requests all along, one new connection each (the kernel spreads them over the servers' listeners).
    answers: list[tuple[float, int | str]] = []
    polling = True

    async def poll():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=5)) as s:
            while polling:
                t = time.monotonic()
                try:
                    async with s.get(base + "/api/v2/status", headers=bearer(fault_admin_key)) as r:
                        answers.append((t, r.status))
                except aiohttp.ClientError as exc:
                    answers.append((t, type(exc).__name__))
                await asyncio.sleep(0.02)

    poller = asyncio.create_task(poll())
    await asyncio.sleep(0.5)
    killed_server, killed_worker = before["serve"][0], before["worker"][0]
    killed_at = time.monotonic()
    psutil.Process(killed_worker).send_signal(signal.SIGKILL)
    psutil.Process(killed_server).send_signal(signal.SIGKILL)
    # Queued while no worker runs: the restarted one takes it.
    task = await dispatch.enqueue(fpool, fredis, "fault_slow", "run:restart", {"steps": 2, "step_seconds": 0.05})

    await wait_for(lambda: _up(run, 3, 2), timeout=30, interval=0.1)
    back_after = time.monotonic() - killed_at
    after = _children(run)
    assert len(after["serve"]) == 2 and killed_server not in after["serve"], after
    assert len(after["worker"]) == 1 and killed_worker not in after["worker"], after

    async def done() -> bool:
        return await fpool.fetchval("SELECT status FROM tasks WHERE id = $1", task.id) == "done"

    await wait_for(done, timeout=30, interval=0.1)
    assert await fpool.fetchval("SELECT runs FROM fault_effects WHERE task_id = $1", task.id) == 1
    # The restarted server takes requests too: it wrote its request counts to the multiprocess folder.
    restarted = (set(after["serve"]) - set(before["serve"])).pop()
    counts = processes.settings.var_dir / "run" / "metrics" / f"counter_{restarted}.db"

    async def serving() -> bool:
        return counts.exists()

    await wait_for(serving, timeout=10, interval=0.1)
    polling = False
    await poller

    # The service answered throughout: at most the request in flight to the killed server failed.
    during = [(t, a) for t, a in answers if t >= killed_at - 0.1 and t <= killed_at + back_after]
    failed = [(round(t - killed_at, 3), a) for t, a in answers if a != 200]
    assert len(failed) <= 1 and all(t < 1.0 for t, _ in failed), failed
    assert sum(a == 200 for _, a in during) >= 10, during
    out = run.output()
    for pid, new_pid in ((killed_worker, after["worker"][0]), (killed_server, restarted)):
        said = re.search(rf"depot: (\w+ \d) \(pid {pid}\) was killed by SIGKILL after [\d.]+ s; restarting it in", out)
        assert said, out
        assert f"depot: {said[1]} restarted (pid {new_pid})" in out
    assert await _restarts(base) == {"server": 1, "worker": 1}

    run.close()
    assert run.proc.returncode == 0, run.output()[-3000:]
    assert run.output().rstrip().endswith("depot: stopped")
    assert not any(psutil.pid_exists(pid) for kind in after.values() for pid in kind)
    print(f"\nkilled a server and the worker: both back {back_after:.1f} s later; {len(during)} requests meanwhile,"
          f" {len(failed)} failed; the task queued meanwhile done")


async def test_a_part_that_cannot_start_makes_depot_run_give_up(processes, fpool):
    port = procs.free_port()
    # Only the worker imports DEPOT_TEST_HANDLERS: the servers start, the worker cannot.
    env = processes.env(DEPOT_PORT=str(port), DEPOT_TEST_HANDLERS="tests.faults.no_such_module",
                        DEPOT_RUN_START_FAILURES="3", DEPOT_RUN_START_WINDOW="20")
    run = procs.DepotProcess(["run", "--servers", "1", "--workers", "1"], env, processes.log_dir / "run.log")
    processes.started.append(run)
    t0 = time.monotonic()
    pids: set[int] = set()

    async def ended() -> bool:
        if run.alive():
            pids.update(p.pid for p in psutil.Process(run.pid).children())
        return not run.alive()

    await wait_for(ended, timeout=90, interval=0.1)
    took = time.monotonic() - t0
    out = run.output()
    assert run.proc.returncode == 1, out[-3000:]
    assert "depot: serving on" in out
    assert len(re.findall(r"depot: worker 1 \(pid \d+\) exited with code 1 after", out)) == 3, out[-3000:]
    assert out.count("depot: worker 1 restarted") == 2
    assert "it failed to start 3 times in a row (each ended within 20 s); stopping everything" in out
    assert out.rstrip().endswith("depot: stopped")
    assert not procs.port_open(port)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    print(f"\na worker that cannot start: depot run gave up after 3 starts, {took:.1f} s, exit code 1")


async def test_worker_and_server_killed_during_a_rebuild_and_a_report_burst(processes, fpool, fault_admin_key,
                                                                            tmp_path):
    """Both kills land while a signed rebuild renders and 20 hosts send reports (retrying until they
    are acknowledged, as linupdate does): the other server answers meanwhile, both parts are back
    within seconds, the rebuild ends done with every package, and every host's inventory is its last report."""
    storage = tmp_path / "storage"
    storage.mkdir()
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    env = processes.env(DEPOT_PORT=str(port), DEPOT_BASE_URL=base, DEPOT_STORAGE_DIR=str(storage))
    run = procs.DepotProcess(["run", "--servers", "2", "--workers", "1"], env, processes.log_dir / "run.log")
    processes.started.append(run)
    await wait_for(lambda: _up(run, 2, 1), timeout=60, interval=0.1)
    before = _children(run)
    names = [f"pkg{n:04d}" for n in range(1200)]
    answers: list = []
    async with aiohttp.ClientSession() as session:
        repos = Repos(session, base, fault_admin_key)
        _, snap = await repos.deb_snapshot()
        for start in range(0, len(names), 400):
            status, body = await repos.upload(snap, debs(names[start:start + 400]))
            assert status == 200, body
        hosts = [await reporting.register(session, base, fault_admin_key, f"burst{n:02d}") for n in range(reporting.HOSTS)]
        agents = [reporting.Agent(session, base, headers, answers) for _, headers in hosts]

        async def send_all(agent):
            for step in range(reporting.REPORTS):
                await agent.send(step, reporting.report(step))
                await asyncio.sleep(0.3)

        task_id = await repos.rebuild(snap, sign=True)
        burst = [asyncio.create_task(send_all(a)) for a in agents]
        while await fpool.fetchval("SELECT progress FROM tasks WHERE id = $1", task_id) < 30:
            await asyncio.sleep(0.002)
        killed_server, killed_worker = before["serve"][0], before["worker"][0]
        psutil.Process(killed_worker).send_signal(signal.SIGKILL)
        psutil.Process(killed_server).send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await wait_for(lambda: _up(run, 3, 2), timeout=30, interval=0.1)
        back_after = time.monotonic() - killed_at
        await asyncio.wait_for(asyncio.gather(*burst), 120)
        assert await wait_task(fpool, task_id, ("done", "error"), timeout=120) == "done"
        status, index = await repos.fetch(f"{repos.tree_url('app', snap)}/dists/{DIST}/{SECTION}/binary-amd64/Packages")

    assert status == 200 and packages_in(index) == {(n, "1.0-1") for n in names}
    # Only what was in flight to the killed server failed; everything else was answered, never a 500.
    after_kill = [a for a in answers if a[0] >= killed_at]
    failed = [a for a in answers if a[2] != 200]
    assert all(str(a[2]).startswith("client error") and a[0] < killed_at + 1 for a in failed), failed[:5]
    assert len(failed) <= 2 * reporting.HOSTS, failed[:5]
    assert sum(a[2] == 200 for a in after_kill if a[0] < killed_at + back_after) >= 1, answers[-5:]
    assert all(a.acked == list(range(reporting.REPORTS)) for a in agents)
    await wait_for(lambda: reporting.settled(fpool), timeout=60, interval=0.1)
    for (host_id, _), agent in zip(hosts, agents):
        assert await reporting.inventory(fpool, host_id) == reporting.expected(reporting.report(reporting.REPORTS - 1)), host_id
    after = _children(run)
    assert killed_server not in after["serve"] and killed_worker not in after["worker"], after
    assert await _restarts(base) == {"server": 1, "worker": 1}
    attempts = await fpool.fetchval("SELECT attempts FROM tasks WHERE id = $1", task_id)
    run.close()
    assert run.proc.returncode == 0, run.output()[-3000:]
    print(f"\nworker and a server SIGKILLed mid-rebuild during a burst of {len(answers)} report PUTs: both back"
          f" {back_after:.1f} s later; {len(failed)} PUTs cut (retried), none refused; rebuild done in"
          f" {attempts} attempts with all {len(names)} packages; every host's inventory is its last report")
