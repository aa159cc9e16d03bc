"""Agent channel benchmark: BENCH_AGENTS (10,000) synthetic agents holding /ws open on one `depot serve`.

The server runs as a process of its own on a fresh `depot_bench_agents` database; the agents are this
process (asyncio, aiohttp's websocket client), each speaking the opening sequence and answering every
request at once with `completed`, as linupdate's reposerver agent does. Reported:
- the time for all of them to connect and authenticate, and the server's RSS before and after, per socket;
- a request to one host (POST /api/v2/host/<id>/requests) until its frame reaches that agent: p50, p99, max,
  over BENCH_AGENTS_SAMPLES requests to random hosts, all agents connected;
- a request to every host (POST /api/v2/hosts/requests, filter {}): until the last frame arrived, and until
  every request is completed in PostgreSQL;
- the server's responsiveness meanwhile: the slowest GET /healthz (which reads PostgreSQL and Redis), probed
  every 50 ms from a process of its own during the bulk request.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench._common import fresh_database, private_settings, server_env

AGENTS = int(os.environ.get("BENCH_AGENTS", "10000"))
SAMPLES = int(os.environ.get("BENCH_AGENTS_SAMPLES", "200"))
CONNECT_AT_ONCE = int(os.environ.get("BENCH_AGENTS_CONNECT_AT_ONCE", "200"))
BENCH_DB = "depot_bench_agents"
PROJECT_DIR = Path(__file__).resolve().parent.parent


def _settings():
    return private_settings(BENCH_DB, 4, "depot:bench-agents-queue")


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * AGENTS + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < AGENTS + 500:
        raise SystemExit(f"open files limited to {want}: too few for {AGENTS} agents")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _load(settings) -> str:
    """A fresh database with AGENTS hosts (auth id id_<n>, token t<n>) and an operator's key."""
    from app import users

    pool = await fresh_database(settings)
    try:
        await users.create_user(pool, "bench", "operator")
        key = await users.create_api_key(pool, "bench")
        await pool.execute(
            "INSERT INTO hosts (hostname, ip, auth_id, token_digest)"
            " SELECT 'host' || i, '10.0.0.1', 'id_' || i, sha256(convert_to('t' || i, 'UTF8'))"
            " FROM generate_series(1, $1) i", AGENTS)
        await pool.execute("ANALYZE")
    finally:
        await pool.close()
    return key


class Agents:
    """The synthetic agents: their sockets, and when each request reached its agent."""

    def __init__(self, session, url: str):
        self.session = session
        self.url = url
        self.arrived: dict[int, float] = {}  # request id -> time its frame arrived
        self.waiters: dict[int, asyncio.Future] = {}
        self.authenticated = 0
        self.tasks: list[asyncio.Task] = []

    async def run_one(self, n: int, ready: asyncio.Semaphore) -> None:
        async with ready:
            ws = await self.session.ws_connect(self.url, autoping=True, max_msg_size=0)
            await ws.send_str(json.dumps({"connection-type": "host"}))
            await ws.receive()
            await ws.send_str(json.dumps({"response-to-request": {"request": "authenticate", "auth-id": f"id_{n}",
                                                                  "token": f"t{n}"}}))
            answer = json.loads((await ws.receive()).data)
            assert answer == {"info": "Authentication successful"}, answer
            self.authenticated += 1
        async for msg in ws:
            frame = json.loads(msg.data)
            rid = frame.get("request-id")
            if rid is None or "request" not in frame:
                continue  # an acknowledgement
            self.arrived[rid] = time.perf_counter()
            waiter = self.waiters.pop(rid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            await ws.send_str(json.dumps({"response-to-request": {"request-id": str(rid), "status": "completed",
                                                                  "summary": "", "log": "ok\n"}}))

    async def connect_all(self) -> float:
        ready = asyncio.Semaphore(CONNECT_AT_ONCE)
        started = time.perf_counter()
        self.tasks = [asyncio.create_task(self.run_one(n, ready)) for n in range(1, AGENTS + 1)]
        while self.authenticated < AGENTS:
            failed = [t for t in self.tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            await asyncio.sleep(0.05)
        return time.perf_counter() - started


def _probe(url: str, stop, result) -> None:
    """In a process of its own (the agents' process is busy): the slowest GET /healthz until `stop`."""
    slowest = 0.0
    while not stop.is_set():
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
        slowest = max(slowest, time.perf_counter() - t)
        time.sleep(0.05)
    result.put(slowest)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def _run() -> None:
    import aiohttp
    import asyncpg

    _raise_file_limit()
    settings = _settings()
    key = await _load(settings)
    env = server_env(settings)
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=PROJECT_DIR, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = settings.base_url
    headers = {"Authorization": f"Bearer {key}"}
    db = await asyncpg.connect(settings.database_url)
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{base}/healthz")).status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            rss_before = _rss_kib(server.pid)
            agents = Agents(http, f"{base}/ws")
            took = await agents.connect_all()
            await asyncio.sleep(2.0)
            rss_after = _rss_kib(server.pid)
            sessions = await db.fetchval("SELECT count(*) FROM agent_sessions")
            print(f"{AGENTS} agents connected and authenticated in {took:.1f} s ({AGENTS / took:.0f}/s);"
                  f" {sessions} sessions recorded", flush=True)
            print(f"server RSS {rss_before / 1024:.1f} MiB idle, {rss_after / 1024:.1f} MiB with {AGENTS} sockets:"
                  f" {(rss_after - rss_before) / AGENTS:.1f} KiB per socket", flush=True)

            latencies = []
            for _ in range(SAMPLES):
                host = random.randint(1, AGENTS)
                t = time.perf_counter()
                resp = await http.post(f"{base}/api/v2/host/{host}/requests", headers=headers,
                                       json={"request": "request-general-infos"})
                rid = (await resp.json())["results"]["Id"]
                if rid not in agents.arrived:
                    waiter = asyncio.get_running_loop().create_future()
                    agents.waiters[rid] = waiter
                    if rid not in agents.arrived:
                        await asyncio.wait_for(waiter, 30)
                latencies.append((agents.arrived[rid] - t) * 1000)
            print(f"one host, POST to frame: p50 {statistics.median(latencies):.1f} ms, p99 {_pct(latencies, 99):.1f} ms,"
                  f" max {max(latencies):.1f} ms ({SAMPLES} requests)", flush=True)

            stop, result = multiprocessing.Event(), multiprocessing.Queue()
            prober = multiprocessing.get_context("fork").Process(target=_probe, args=(f"{base}/healthz", stop, result))
            prober.start()
            before = set(agents.arrived)
            t = time.perf_counter()
            resp = await http.post(f"{base}/api/v2/hosts/requests", headers=headers,
                                   json={"request": "update-profile", "filter": {}})
            created = (await resp.json())["results"]["Created"]
            posted = time.perf_counter() - t
            while len(agents.arrived) - len(before) < created:
                await asyncio.sleep(0.01)
            delivered = max(v for k, v in agents.arrived.items() if k not in before) - t
            while await db.fetchval("SELECT count(*) FROM agent_requests WHERE request = 'update-profile'"
                                    " AND status <> 'completed'"):
                await asyncio.sleep(0.05)
            completed = time.perf_counter() - t
            stop.set()
            slowest = result.get(timeout=30)
            prober.join(timeout=10)
            print(f"every host ({created} requests): POST answered in {posted:.2f} s, last frame at {delivered:.2f} s,"
                  f" all completed at {completed:.2f} s; slowest /healthz meanwhile {slowest * 1000:.0f} ms", flush=True)
            print(f"server RSS after: {_rss_kib(server.pid) / 1024:.1f} MiB", flush=True)
            for task in agents.tasks:
                task.cancel()
            await asyncio.gather(*agents.tasks, return_exceptions=True)
    finally:
        await db.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
