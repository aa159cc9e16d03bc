"""Agent channel benchmark: BENCH_AGENTS (10,000) synthetic agents holding /ws open on one node.

Depot runs as `make run` starts it (one `depot serve --reuse-port` process per core, at most 4, and a
`depot worker`; BENCH_SERVERS changes the first) on a fresh `depot_bench_agents` database; the agents
are this process (asyncio, aiohttp's websocket client), each speaking the opening sequence and
answering every request at once with `completed`, as linupdate's reposerver agent does. Reported:
- report PUTs (bench/fleet.py's load generator, a process of its own) from BENCH_AGENTS_PUT_HOSTS of
  the same hosts, while all agents are connected, against the same load before they connect and after
  they leave: p99 and rate;
- the time for all agents to connect and authenticate, and the servers' RSS before and after, per socket;
- a request to one host (POST /api/v2/host/<id>/requests) until its frame reaches that agent: p50, p99, max,
  over BENCH_AGENTS_SAMPLES requests to random hosts, all agents connected;
- a request to every host (POST /api/v2/hosts/requests, filter {}): until the last frame arrived, and until
  every request is completed in PostgreSQL; the slowest GET /healthz meanwhile, from a process of its own;
- a restart: every server process killed (SIGKILL) and started again while all agents are connected.
  Each agent reconnects at once and, once authenticated, uploads its inventory (BENCH_AGENTS_INVENTORY
  packages, one of them naming the host) as a restarted linupdate does; a request to every host is
  created as soon as the API answers again. Nothing may be lost: every agent back, every inventory
  applied as sent, every request completed.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from app.cli.server import default_processes, servers_env
from bench import fleet
from bench._common import fresh_database, private_settings, server_env

AGENTS = int(os.environ.get("BENCH_AGENTS", "10000"))
SAMPLES = int(os.environ.get("BENCH_AGENTS_SAMPLES", "200"))
CONNECT_AT_ONCE = int(os.environ.get("BENCH_AGENTS_CONNECT_AT_ONCE", "200"))
PUT_HOSTS = int(os.environ.get("BENCH_AGENTS_PUT_HOSTS", "768"))
INVENTORY = int(os.environ.get("BENCH_AGENTS_INVENTORY", "200"))
UPLOADS_AT_ONCE = 64  # the agents' concurrent inventory uploads after a restart (one client process)
SERVERS = int(os.environ.get("BENCH_SERVERS", "0")) or default_processes()
BENCH_DB = "depot_bench_agents"
PROJECT_DIR = Path(__file__).resolve().parent.parent
MARKER = "bench-marker"


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
    """A fresh database with AGENTS Debian hosts (host n: auth id id_<n>, token t<n>) and an operator's key."""
    from app import users

    pool = await fresh_database(settings)
    try:
        await users.create_user(pool, "bench", "operator")
        key = await users.create_api_key(pool, "bench")
        await pool.execute(
            "INSERT INTO hosts (hostname, ip, auth_id, token_digest, os_family)"
            " SELECT 'host' || i, '10.0.0.1', 'id_' || i, sha256(convert_to('t' || i, 'UTF8')), 'Debian'"
            " FROM generate_series(1, $1) i", AGENTS)
        await pool.execute("ANALYZE")
    finally:
        await pool.close()
    return key


def _inventory(n: int) -> bytes:
    """What agent n uploads after a restart: INVENTORY packages, the last one's version naming the host."""
    packages = [{"name": f"bench-pkg{i}", "version": f"1.{i % 7}-1"} for i in range(INVENTORY - 1)]
    packages.append({"name": MARKER, "version": f"{n}.0-1"})
    return json.dumps({"installed_packages": packages}).encode()


class Agents:
    """The synthetic agents: their sockets, when each request reached its agent, and their uploads."""

    def __init__(self, session, base_url: str):
        self.session = session
        self.base_url = base_url
        self.arrived: dict[int, float] = {}  # request id -> time its frame arrived
        self.waiters: dict[int, asyncio.Future] = {}
        self.authentications = 0  # every successful authentication, reconnections included
        self.failed_attempts = 0  # connection attempts refused or cut before authentication
        self.attempt_errors: Counter = Counter()
        self.upload_after_auth = False  # set for the restart: each agent then uploads its inventory
        self.uploaded: set[int] = set()
        self.upload_errors: Counter = Counter()
        self.upload_slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
        self.stopping = False
        self.tasks: list[asyncio.Task] = []
        self.uploads: set[asyncio.Task] = set()

    async def _connect(self, n: int):
        import aiohttp

        for attempt in range(200):
            ws = None
            try:
                ws = await self.session.ws_connect(f"{self.base_url}/ws", autoping=True, max_msg_size=0,
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=5))
                await ws.send_str(json.dumps({"connection-type": "host"}))
                await ws.receive(timeout=120)
                await ws.send_str(json.dumps({"response-to-request": {"request": "authenticate", "auth-id": f"id_{n}",
                                                                      "token": f"t{n}"}}))
                answer = await ws.receive(timeout=120)
                if answer.type == aiohttp.WSMsgType.TEXT and json.loads(answer.data) == {"info": "Authentication successful"}:
                    return ws
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                self.attempt_errors[type(exc).__name__] += 1
            if ws is not None:
                # An agent process that gives up on a socket closes it (its process ends): a socket left
                # open would hold the host's session, and the requests sent on it, until replaced.
                await ws.close()
            self.failed_attempts += 1
            # Backoff with jitter, up to 2 s: ten thousand clients retrying in step would mostly measure
            # this process's own event loop.
            await asyncio.sleep(min(2.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))
        raise RuntimeError(f"agent {n} could not authenticate")

    async def run_one(self, n: int, first: asyncio.Semaphore) -> None:
        async with first:
            ws = await self._connect(n)
        while True:
            self.authentications += 1
            if self.upload_after_auth:
                task = asyncio.create_task(self._upload(n))
                self.uploads.add(task)
                task.add_done_callback(self.uploads.discard)
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
            if self.stopping:
                return
            ws = await self._connect(n)  # the server went away: straight back, as the agent's service would

    async def _upload(self, n: int) -> None:
        import aiohttp

        body, headers = _inventory(n), {"Authorization": f"Host id_{n}:t{n}"}
        while True:
            async with self.upload_slots:
                try:
                    async with self.session.put(f"{self.base_url}/api/v2/host/packages/installed", data=body,
                                                headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.uploaded.add(n)
                            return
                        self.upload_errors[resp.status] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.upload_errors[type(exc).__name__] += 1
            await asyncio.sleep(1.0)

    async def connect_all(self) -> float:
        first = asyncio.Semaphore(CONNECT_AT_ONCE)
        started = time.perf_counter()
        self.tasks = [asyncio.create_task(self.run_one(n, first)) for n in range(1, AGENTS + 1)]
        await self.until(lambda: self.authentications >= AGENTS)
        return time.perf_counter() - started

    async def until(self, done, timeout: float = 600) -> None:
        deadline = time.perf_counter() + timeout
        while not done():
            failed = [t for t in self.tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            if time.perf_counter() > deadline:
                raise RuntimeError("the agents took too long")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.stopping = True
        for task in [*self.tasks, *self.uploads]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.uploads, return_exceptions=True)


def _probe(url: str, stop, result) -> None:
    """In a process of its own (the agents' process is busy): the slowest GET /healthz until `stop`, and
    the answers other than 200 (a 503 says PostgreSQL or Redis did not answer it within 2 s)."""
    slowest, other = 0.0, Counter()
    while not stop.is_set():
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            other[exc.code] += 1
        except OSError as exc:
            other[type(exc).__name__] += 1
        slowest = max(slowest, time.perf_counter() - t)
        time.sleep(0.05)
    result.put((slowest, dict(other)))


def _first_answer(url: str, t0: float, result) -> None:
    """Seconds from t0 (a perf_counter reading of the parent) until `url` answers 200."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.05)
    result.put(time.perf_counter() - t0)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Node:
    """Depot as `make run` starts it: SERVERS server processes sharing the port, and a worker."""

    def __init__(self, settings):
        self.settings = settings
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="depot-bench-agents-metrics-"))
        self.serve_env = server_env(settings, **servers_env(self.metrics_dir))
        self.servers: list[subprocess.Popen] = []
        # The processes' output, shown if the benchmark fails.
        self.log = open(self.metrics_dir.with_suffix(".log"), "ab")
        self.worker = subprocess.Popen(fleet._depot_cmd("worker"), cwd=PROJECT_DIR, env=server_env(settings),
                                       stdout=self.log, stderr=self.log)

    def start_servers(self) -> None:
        self.servers = [subprocess.Popen(fleet._depot_cmd("serve", "--reuse-port"), cwd=PROJECT_DIR,
                                         env=self.serve_env, stdout=self.log, stderr=self.log)
                        for _ in range(SERVERS)]

    def kill_servers(self) -> None:
        for server in self.servers:
            server.kill()
        for server in self.servers:
            server.wait()

    def rss_kib(self) -> int:
        return sum(_rss_kib(s.pid) for s in self.servers)

    def stop(self) -> None:
        for proc in [*self.servers, self.worker]:
            fleet._stop(proc)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


async def _healthy(http, base: str) -> None:
    import aiohttp

    for _ in range(600):
        try:
            async with http.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the servers did not answer /healthz")


def _puts(settings, creds, phase: str, label: str) -> dict:
    result = fleet.run_load(settings.base_url, creds, phase)
    drain = asyncio.run(fleet._wait_diffs(settings))
    print(f"report PUTs, {label}: {result['requests']} in {result['seconds']:.2f} s ({result['rate']:.0f}/s),"
          f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, failures {result['failures']};"
          f" every diff applied {drain:.2f} s later", flush=True)
    return result


async def _requests_done(db, request: str, since) -> tuple[int, int]:
    row = await db.fetchrow("SELECT count(*) FILTER (WHERE status = 'completed') AS done, count(*) AS total"
                            " FROM agent_requests WHERE request = $1 AND created_at >= $2", request, since)
    return row["done"], row["total"]


async def _run(node: Node, key: str) -> dict:
    import aiohttp
    import asyncpg

    settings = node.settings
    base = settings.base_url
    headers = {"Authorization": f"Bearer {key}"}
    db = await asyncpg.connect(settings.database_url)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        agents = Agents(http, base)
        try:
            await _healthy(http, base)
            await asyncio.sleep(1.0)
            rss_before = node.rss_kib()
            took = await agents.connect_all()
            await asyncio.sleep(2.0)
            rss_after = node.rss_kib()
            sessions = await db.fetchval("SELECT count(*) FROM agent_sessions")
            print(f"{AGENTS} agents connected and authenticated in {took:.1f} s ({AGENTS / took:.0f}/s);"
                  f" {sessions} sessions recorded", flush=True)
            print(f"servers' RSS ({SERVERS} processes) {rss_before / 1024:.1f} MiB idle, {rss_after / 1024:.1f} MiB"
                  f" with {AGENTS} sockets: {(rss_after - rss_before) / AGENTS:.1f} KiB per socket (target <= 50 KB)",
                  flush=True)
            # What holding the sockets costs while nothing happens on them: the servers' CPU time over 10 s.
            pids = [server.pid for server in node.servers]
            cpu0 = fleet._cpu_seconds(pids)
            await asyncio.sleep(10.0)
            print(f"servers' CPU while the {AGENTS} agents are idle: {(fleet._cpu_seconds(pids) - cpu0) * 100:.1f} ms"
                  " per second, all processes together", flush=True)

            creds = [(f"id_{n}", f"t{n}") for n in range(1, PUT_HOSTS + 1)]
            connected = await asyncio.to_thread(_puts, settings, creds, "timed:1", f"all {AGENTS} agents connected")

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
            print(f"one host, POST to frame: p50 {statistics.median(latencies):.1f} ms, p99 {_pct(latencies, 99):.1f} ms"
                  f" (target < 1 s), max {max(latencies):.1f} ms ({SAMPLES} requests)", flush=True)

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
            slowest, unhealthy = result.get(timeout=60)
            prober.join(timeout=10)
            print(f"every host ({created} requests): POST answered in {posted:.2f} s, last frame at {delivered:.2f} s"
                  f" (target < 10 s), all completed at {completed:.2f} s; slowest /healthz meanwhile"
                  f" {slowest * 1000:.0f} ms, answers other than 200: {unhealthy or 'none'}", flush=True)
            print(f"servers' RSS after: {node.rss_kib() / 1024:.1f} MiB", flush=True)

            await _restart(node, http, db, agents, headers)
            return connected
        finally:
            await agents.close()
            await db.close()


async def _restart(node: Node, http, db, agents: Agents, headers: dict) -> None:
    base = node.settings.base_url
    agents.upload_after_auth = True
    auths0, failed0 = agents.authentications, agents.failed_attempts
    since = await db.fetchval("SELECT now()")
    t0 = time.perf_counter()
    await asyncio.to_thread(node.kill_servers)
    node.start_servers()
    # When the API answers again, seen from a process of its own: this one is busy reconnecting agents.
    answered = multiprocessing.get_context("fork").Queue()
    watcher = multiprocessing.get_context("fork").Process(target=_first_answer, args=(f"{base}/healthz", t0, answered))
    watcher.start()
    up = await asyncio.to_thread(answered.get, True, 600)
    watcher.join(timeout=10)
    resp = await http.post(f"{base}/api/v2/hosts/requests", headers=headers,
                           json={"request": "request-general-infos", "filter": {}})
    created = (await resp.json())["results"]["Created"]
    await agents.until(lambda: agents.authentications - auths0 >= AGENTS)
    back = time.perf_counter() - t0
    await agents.until(lambda: len(agents.uploaded) >= AGENTS)
    uploaded = time.perf_counter() - t0
    await fleet._wait_diffs(node.settings)
    applied = time.perf_counter() - t0
    while (await _requests_done(db, "request-general-infos", since))[0] < created:
        if time.perf_counter() - t0 > 600:
            break
        await asyncio.sleep(0.1)
    done, total = await _requests_done(db, "request-general-infos", since)
    finished = time.perf_counter() - t0
    check = await db.fetchrow(
        "SELECT (SELECT count(*) FROM agent_sessions) AS sessions,"
        " (SELECT count(*) FROM host_sets s CROSS JOIN LATERAL unnest(s.ids) i JOIN package_versions p ON p.id = i"
        "   JOIN hosts h ON h.id = s.host_id WHERE p.name = $1 AND p.version = substr(h.auth_id, 4) || '.0-1')"
        "   AS inventories,"
        " (SELECT count(*) FROM hosts h LEFT JOIN host_sets s ON s.host_id = h.id"
        "   WHERE coalesce(cardinality(s.ids), 0) <> $2) AS wrong_size,"
        " (SELECT count(*) FROM agent_requests WHERE status IN ('new', 'sent', 'running')) AS open_requests,"
        " (SELECT count(*) FROM tasks WHERE status = 'error') AS error_tasks", MARKER, INVENTORY)
    print(f"restart: {SERVERS} servers killed (SIGKILL) with {AGENTS} agents connected; API answering again after"
          f" {up:.1f} s; every agent authenticated again at {back:.1f} s ({agents.failed_attempts - failed0} failed"
          f" attempts meanwhile: {dict(agents.attempt_errors)}); {len(agents.uploaded)} inventories ({INVENTORY} packages) accepted at {uploaded:.1f} s"
          f" (refused and retried: {dict(agents.upload_errors) or 'none'}), every diff applied at {applied:.1f} s;"
          f" request to every host created at once: {done} of {total} completed at {finished:.1f} s", flush=True)
    lost = (check["sessions"] != AGENTS or check["inventories"] != AGENTS or check["wrong_size"]
            or check["open_requests"] or check["error_tasks"] or done != created)
    print(f"  after the restart: {dict(check)} -> {'NOTHING LOST' if not lost else 'SOMETHING LOST'}", flush=True)
    if lost:
        raise SystemExit("the restart lost something")


def main() -> None:
    _raise_file_limit()
    settings = _settings()
    key = asyncio.run(_load(settings))
    print(f"agents: {AGENTS} synthetic agents on one node ({SERVERS} server processes and a worker);"
          f" report PUTs from {PUT_HOSTS} of those hosts", flush=True)
    node = Node(settings)
    try:
        node.start_servers()
        for server in node.servers:
            fleet._wait_port(settings.port, server)
        creds = [(f"id_{n}", f"t{n}") for n in range(1, PUT_HOSTS + 1)]
        _puts(settings, creds, "warmup", "first inventories (warm-up)")
        asyncio.run(fleet._vacuum(settings))
        before = _puts(settings, creds, "timed:0", "no agent connected")
        connected = asyncio.run(_run(node, key))
        # The same load once more with no agent connected: the machine's speed drifts, so the run with
        # the agents is compared with the mean of the runs before and after it.
        after = _puts(settings, creds, "timed:2", "after the agents left")
        p99 = (before["p99_ms"] + after["p99_ms"]) / 2
        rate = (before["rate"] + after["rate"]) / 2
        print(f"report PUTs with {AGENTS} agents connected against the mean of the runs without:"
              f" p99 {connected['p99_ms']:.1f} ms against {p99:.1f} ms ({connected['p99_ms'] / p99:.2f}x),"
              f" rate {connected['rate'] / rate:.2f}x", flush=True)
    except BaseException:
        print(f"the Depot processes' output ({node.log.name}), its end:\n{node.output()[-5000:]}", flush=True)
        raise
    finally:
        node.stop()


if __name__ == "__main__":
    main()
