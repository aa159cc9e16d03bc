"""Fleet benchmark: hosts sending installed/available/events reports, and a fleet-wide package query.

Depot runs as `make run` starts it (`depot run`: one `depot serve` process per core, at most 4, sharing
the port, and a `depot worker` process; BENCH_SERVERS changes the first) on a
fresh `depot_bench` database of the embedded PostgreSQL; the load comes from a separate process on
loopback (64 concurrent hosts on keep-alive HTTP/1.1 connections, see _Connection). As the reference,
the same load goes to a do-nothing aiohttp server that only reads and JSON-parses the bodies. Run
with `make bench` or `python -m bench fleet`; sizes can be changed with BENCH_HOSTS, BENCH_ROUNDS,
BENCH_PACKAGES, BENCH_QUERY_HOSTS.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.cli.server import default_processes, servers_env
from bench._common import free_port, private_settings, server_env

# 768 hosts: a run of 4 rounds lasts 3-6 s here (the reference takes 2,500-5,000 reports/s as the
# machine's speed drifts). The servers hold diff jobs during such a storm (DEPOT_DIFF_HOLD_SECONDS), so
# most of the diff work runs after the run: "end to end" measures both together.
HOSTS = int(os.environ.get("BENCH_HOSTS", "768"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "64"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
# Depot and the reference alternate REPEATS times on fresh rounds (the machine's speed drifts between
# runs): each Depot run is compared with the reference runs just before and after it, and the median
# of those ratios is the result.
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
PACKAGES = int(os.environ.get("BENCH_PACKAGES", "2000"))
AVAILABLE = 40
QUERY_HOSTS = int(os.environ.get("BENCH_QUERY_HOSTS", "10_000"))
SERVERS = int(os.environ.get("BENCH_SERVERS", "0")) or default_processes()
BENCH_DB = "depot_bench"
ROOT = Path(__file__).resolve().parent.parent


# --- the fleet's reports (deterministic, the same for Depot and the reference) -------------------


def _version(rng: random.Random) -> str:
    return f"{rng.randint(0, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}-{rng.randint(1, 5)}+deb12u{rng.randint(1, 9)}"


def _bump(version: str) -> str:
    head, _, tail = version.rpartition("u")
    return f"{head}u{int(tail) + 1}"


def make_rounds(hosts: int, rounds: int, seed: int = 7, only: range | None = None) -> list[list[list[bytes]]]:
    """bodies[round][host] = [events, available, installed] as the agent sends them (json.dumps);
    rounds outside `only` are evolved but left empty (their JSON is not needed)."""
    rng = random.Random(seed)
    common = [f"lib{chr(97 + i % 26)}{i}-common" for i in range(PACKAGES)]
    out: list[list[list[bytes]]] = [[] for _ in range(rounds + 1)]
    for h in range(hosts):
        inv = {name: _version(rng) for name in common}
        events: list[dict] = []
        for r in range(rounds + 1):
            if r:
                # A few packages change between rounds: 3 upgrades, 1 new, 1 removed.
                for name in rng.sample(sorted(inv), 3):
                    inv[name] = _bump(inv[name])
                inv[f"extra-{h}-{r}"] = "1.0-1+deb12u1"
                inv.pop(rng.choice(sorted(inv)))
            avail = [
                {"name": n, "version": _bump(inv[n]), "repository": "http://deb.debian.org/debian",
                 "security": i % 3 == 0}
                for i, n in enumerate(sorted(inv)[r * 7 : r * 7 + AVAILABLE])
            ]
            events.append({
                "date_start": f"2026-01-{r + 1:02d}", "time_start": f"10:{h % 60:02d}:00",
                "date_end": f"2026-01-{r + 1:02d}", "time_end": f"10:{h % 60:02d}:30",
                "command": f"apt-get -y upgrade # round {r}",
                "upgraded": [{"name": n, "version": inv[n]} for n in sorted(inv)[:3]],
            })
            if only is not None and r not in only:
                continue
            out[r].append([
                json.dumps({"events": events}).encode(),
                json.dumps({"available_packages": avail}).encode(),
                json.dumps({"installed_packages": [{"name": n, "version": v} for n, v in sorted(inv.items())]}).encode(),
            ])
    return out


# --- the load generator (its own process) ---------------------------------------------------------

PATHS = ["/api/v2/host/packages/event", "/api/v2/host/packages/available", "/api/v2/host/packages/installed"]


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads each whole answer.

    The load generator shares the machine with what it measures, so it is kept lean: one formatted
    head and the prepared body go out in one write, and the answer is only split into status,
    headers and body (~0.1 ms of CPU per request on uvloop; an aiohttp client cost ~0.3 ms, a sixth
    of the machine's CPU during a Depot run, which the reference, held to one core, did not need).
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def put(self, path: str, headers: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.writelines([
            b"PUT %s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Length: %d\r\n\r\n"
            % (path.encode(), self.host.encode(), self.port, headers, len(body)),
            body,
        ])
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:] if line)}
        if b"content-length" not in fields:  # both servers answer with a length; anything else is a bug here
            raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
        answer = await self.reader.readexactly(int(fields[b"content-length"]))
        if fields.get(b"connection", b"").lower() == b"close":
            self.writer.close()
            self.reader = self.writer = None
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _load(base_url: str, creds: list, rounds: list, concurrency: int, phase: str) -> dict:
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    latencies: list[float] = []
    by_path: dict[str, list[float]] = {p: [] for p in PATHS}
    failures = 0
    connections = [_Connection(url.hostname, url.port) for _ in range(concurrency)]
    try:

        async def one_host(conn: _Connection, h: int, bodies: list[bytes]):
            nonlocal failures
            headers = f"Authorization: Host {creds[h][0]}:{creds[h][1]}\r\n".encode()
            for path, body in zip(PATHS, bodies):
                t0 = time.perf_counter()
                status, _ = await conn.put(path, headers, body)
                latencies.append(time.perf_counter() - t0)
                by_path[path].append(latencies[-1])
                failures += status != 200

        async def run_round(bodies_by_host):
            queue = list(enumerate(bodies_by_host))

            async def worker(conn: _Connection):
                while queue:
                    h, bodies = queue.pop()
                    await one_host(conn, h, bodies)

            await asyncio.gather(*(worker(conn) for conn in connections))

        t0, stat0, cpu0 = time.perf_counter(), _cpu_times(), time.process_time()
        for bodies_by_host in _selected(rounds, phase):
            await run_round(bodies_by_host)
        elapsed, stat1 = time.perf_counter() - t0, _cpu_times()
    finally:
        for conn in connections:
            conn.close()
    latencies.sort()
    for values in by_path.values():
        values.sort()
    return {
        "p99_by_path_ms": {p.rsplit("/", 1)[1]: round(v[int(len(v) * 0.99)] * 1000, 1) for p, v in by_path.items() if v},
        "requests": len(latencies), "failures": failures, "seconds": elapsed,
        "rate": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "bytes": sum(len(b) for r in _selected(rounds, phase) for host in r for b in host),
        # Share of the machine's CPU time that was busy during the run (every process, this one too).
        "busy": 1 - (stat1[1] - stat0[1]) / max(1, stat1[0] - stat0[0]),
        "load_cpu_ms": (time.process_time() - cpu0) * 1000 / max(1, len(latencies)),
    }


def _cpu_times() -> tuple[int, int]:
    """(all, idle) CPU ticks of the machine since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def _phase_rounds(phase: str) -> slice:
    """warmup: every host's first (baseline) reports; timed:K: the K-th run's ROUNDS later rounds;
    unchanged: the last timed round again (what most hourly reports of a real fleet are)."""
    if phase == "warmup":
        return slice(0, 1)
    if phase == "unchanged":
        return slice(ROUNDS * REPEATS, ROUNDS * REPEATS + 1)
    k = int(phase.split(":")[1])
    return slice(1 + k * ROUNDS, 1 + (k + 1) * ROUNDS)


def _selected(rounds: list, phase: str) -> list:
    # The unchanged round is sent ROUNDS times, as long a run as a timed one.
    return rounds[_phase_rounds(phase)] * (ROUNDS if phase == "unchanged" else 1)


def load_main(base_url: str, creds_file: str, phase: str) -> None:
    creds = json.loads(Path(creds_file).read_text())
    needed = _phase_rounds(phase)
    rounds = make_rounds(len(creds), ROUNDS * REPEATS, only=range(needed.start, needed.stop))
    import uvloop

    print(json.dumps(uvloop.run(_load(base_url, creds, rounds, CONCURRENCY, phase))), flush=True)


def run_load(base_url: str, creds: list, phase: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(creds, f)
    out = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "load", base_url, f.name, phase],
        cwd=ROOT, capture_output=True, text=True, check=False,  # its stderr goes into the error below
    )
    os.unlink(f.name)
    if out.returncode:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the reference: a do-nothing server that reads and parses the bodies -------------------------


def reference_main(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"message": ["ok"]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("PUT", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def _postgres_pids() -> list[int]:
    # pgrep exits 1 when nothing matches: then there is no backend to count.
    out = subprocess.run(["pgrep", "-f", "postgres: .*depot_bench"], capture_output=True, text=True,
                         check=False).stdout
    return [int(p) for p in out.split()]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- Depot -----------------------------------------------------------------------------------------


def _bench_settings():
    return private_settings(BENCH_DB, 2, "depot:bench-queue")


async def _reset(settings) -> tuple[str, str]:
    from arq import create_pool

    from app import db, users
    from app.resources import redis_settings

    await db.migrate_empty(settings.database_url)
    redis = await create_pool(redis_settings(settings))
    await redis.flushdb()
    await redis.aclose()
    pool = await db.create_pool(settings, min_size=1, max_size=2)
    try:
        await users.create_user(pool, "admin", "admin")
        await users.create_user(pool, "viewer", "viewer")
        return await users.create_api_key(pool, "admin"), await users.create_api_key(pool, "viewer")
    finally:
        await pool.close()


async def _register(base_url: str, key: str, n: int) -> list:
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        creds = []
        for i in range(n):
            async with s.post(f"{base_url}/api/v2/host/registering",
                              json={"hostname": f"host{i:05d}.bench", "ip": f"10.0.{i // 250}.{i % 250 + 1}"}) as r:
                body = await r.json()
                creds.append((body["results"]["id"], body["results"]["token"]))
            async with s.put(f"{base_url}/api/v2/host/status", json={"os_family": "Debian", "os": "Debian GNU/Linux"},
                             headers={"Authorization": f"Host {creds[-1][0]}:{creds[-1][1]}"}) as r:
                assert r.status == 200, await r.text()
        return creds


# Whether any report waits to be applied, polled while Depot works: probes that stop at their first row
# (the queued and running tasks by their partial indexes), not counts, so the benchmark's own load on
# PostgreSQL stays negligible whatever the fleet's size. {pending}: the table (or view) of pending reports.
DIFFS_BUSY_SQL = """
SELECT EXISTS (SELECT 1 FROM tasks WHERE kind = 'host_diff' AND status = 'queued')
    OR EXISTS (SELECT 1 FROM tasks WHERE kind = 'host_diff' AND status = 'running')
    OR EXISTS (SELECT 1 FROM {pending})
"""


async def _wait_diffs(settings, timeout: float = 600) -> float:
    """Seconds until no report is pending and no host_diff task is queued or running."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout:
            if not await conn.fetchval(DIFFS_BUSY_SQL.format(pending="host_reports")):
                return time.perf_counter() - t0
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise RuntimeError("diffs did not finish in time")


async def _vacuum(settings) -> None:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def _check(settings) -> dict:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        return dict(await conn.fetchrow(
            "SELECT (SELECT sum(cardinality(ids)) FROM host_sets) AS packages,"
            " (SELECT count(*) FROM host_history) AS history,"
            " (SELECT count(*) FROM host_events) AS events, (SELECT count(*) FROM host_available) AS available,"
            " (SELECT sum(available_count) FROM hosts) AS available_counted,"
            " (SELECT count(*) FROM tasks WHERE status = 'error') AS errors"
        ))
    finally:
        await conn.close()


def _depot_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


# --- the package query on a large fleet -------------------------------------------------------------


async def _load_query_fleet(settings, hosts: int, packages: int) -> float:
    """hosts x packages installed, written straight into the store (dictionary, sets, posting lists) by SQL."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    t0 = time.perf_counter()
    common = packages - 100
    try:
        await conn.execute("TRUNCATE hosts, host_sets, package_hosts, package_versions, host_available, host_history,"
                           " host_events, host_reports CASCADE")
        await conn.copy_records_to_table(
            "hosts", columns=["id", "hostname", "ip", "auth_id", "token_digest", "os", "os_family", "inventory_at"],
            records=[(i, f"q{i:05d}.fleet", "10.1.0.1", f"id_q{i}", b"\0" * 32, "Debian GNU/Linux", "Debian",
                      datetime.datetime.now(datetime.timezone.utc)) for i in range(1, hosts + 1)],
        )
        await conn.execute("SELECT setval('hosts_id_seq', $1)", hosts)
        # common - 100 packages every host has, 100 of 5,000 rarer ones (a realistic mix); 7 versions of
        # each (host h has version h % 7). Entry ids: common name i, version v -> 7 i + v + 1, then the rare ones.
        await conn.execute(
            """
            INSERT INTO package_versions (id, name, arch, version)
            SELECT 7 * i + v + 1, n, '', '1.' || v || '.' || length(n) || '-1'
            FROM (SELECT i, CASE WHEN i < $1 THEN 'lib' || chr(97 + i % 26) || i || '-common'
                                 ELSE 'rare' || (i - $1) || '-tool' END AS n
                  FROM generate_series(0, $1 + 4999) i) x, generate_series(0, 6) v
            """, common)
        await conn.execute("SELECT setval('package_versions_id_seq', (SELECT max(id) FROM package_versions))")
        await conn.execute(
            """
            INSERT INTO host_sets (host_id, ids, since)
            SELECT h, ARRAY(SELECT 7 * i + h % 7 + 1 FROM generate_series(0, $1 - 1) i
                            UNION ALL
                            SELECT 7 * ($1 + j) + h % 7 + 1 FROM generate_series(0, 4999) j
                            WHERE (j * 7919 + h * 104729) % 50 = 0 ORDER BY 1), now()
            FROM generate_series(1, $2) h
            """, common, hosts)
        await conn.execute("INSERT INTO package_hosts (version_id, bucket, hosts)"
                           " SELECT i, posting_bucket(s.host_id), bit_or(posting_bit(s.host_id))"
                           " FROM host_sets s, unnest(s.ids) i GROUP BY 1, 2")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def _time_queries(base_url: str, key: str) -> list[tuple[str, float, float, int]]:
    import aiohttp

    cases = [
        "/api/v2/hosts/package/rare42-tool?strict-name",
        "/api/v2/hosts/package/rare4",
        "/api/v2/hosts/package/rare4?per_page=100",
        # A prefix of most of the table: a page of 100 hosts x 1,900 packages.
        "/api/v2/hosts/package/lib?per_page=100",
        "/api/v2/hosts/package/libq16-common?per_page=100",
        "/api/v2/hosts/package/libq16-common/1.3?per_page=100",
        "/api/v2/hosts/package/libq16-common",
        "/api/v2/hosts/package/libq16-common?older-than=1.3",
        "/api/v2/hosts/package/libq16-common?older-than=1.3&per_page=100",
        "/api/v2/hosts/package/*q16-comm*?per_page=100",
        "/api/v2/hosts/outdated?per_page=100",
    ]
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        for path in cases:
            times, hosts = [], 0
            for i in range(12):
                # The server's answer time: until its last byte is in (the client's own JSON parse
                # of a 10,000-host answer, ~10 ms in Python, comes after).
                t0 = time.perf_counter()
                async with s.get(base_url + path) as r:
                    raw = await r.read()
                elapsed = (time.perf_counter() - t0) * 1000
                body = json.loads(raw)
                assert r.status == 200, body
                if i >= 2:
                    times.append(elapsed)
                hosts = len(body["results"])
            times.sort()
            out.append((path, times[len(times) // 2], times[-1], hosts))
    return out


def main() -> None:
    settings = _bench_settings()
    admin_key, viewer_key = asyncio.run(_reset(settings))
    print(f"fleet: {HOSTS} hosts x {PACKAGES} packages, {CONCURRENCY} concurrent, {REPEATS} runs of {ROUNDS} rounds"
          f" (+1 warm-up round of baseline reports), 3 reports per host per round; Depot: {SERVERS} server"
          f" process(es) and 1 worker, the reference: 1 process", flush=True)

    # The reference runs before, between and after Depot's runs; each Depot run is compared with the
    # mean of its two neighbours, so that other load on the machine affects both sides alike.
    ref_port = free_port()
    ref = subprocess.Popen([sys.executable, "-m", "bench.fleet", "reference", str(ref_port)], cwd=ROOT)
    fake = [(f"id_{i}", "t") for i in range(HOSTS)]
    _wait_port(ref_port, ref)
    run_load(f"http://127.0.0.1:{ref_port}", fake, "warmup")
    # As `make run` starts them: one server process per core (at most 4) sharing the port, and a worker.
    # One environment for all of them: servers_env() empties the metrics folder and sets their common start.
    metrics_dir = tempfile.mkdtemp(prefix="depot-bench-metrics-")
    serve_env = server_env(settings, **servers_env(Path(metrics_dir)))
    servers = [subprocess.Popen(_depot_cmd("serve", "--reuse-port"), cwd=ROOT, stdout=subprocess.DEVNULL, env=serve_env)
               for _ in range(SERVERS)]
    worker = subprocess.Popen(_depot_cmd("worker"), cwd=ROOT, env=server_env(settings), stdout=subprocess.DEVNULL)
    try:
        for server in servers:  # each alive, the port answering
            _wait_port(settings.port, server)
        creds = asyncio.run(_register(settings.base_url, admin_key, HOSTS))
        warm = run_load(settings.base_url, creds, "warmup")
        warm_drain = asyncio.run(_wait_diffs(settings))
        print(f"warm-up (baseline inventories): {warm['requests']} PUTs in {warm['seconds']:.2f} s,"
              f" every diff applied {warm_drain:.2f} s later", flush=True)
        # The baseline just inserted every inventory: without this, autovacuum's first pass over the
        # store (and its analyze) would land in the timed rounds, which measure steady state.
        asyncio.run(_vacuum(settings))
        pg_pids = _postgres_pids()
        ref_url = f"http://127.0.0.1:{ref_port}"
        refs = [run_load(ref_url, fake, "timed:0")]
        ref_cpu = 0.0
        runs, cpu = [], [0.0, 0.0, 0.0]
        def depot_cpu() -> list[float]:
            return [_cpu_seconds([s.pid for s in servers]), _cpu_seconds([worker.pid]), _cpu_seconds(pg_pids)]

        for k in range(REPEATS):
            cpu0 = depot_cpu()
            depot = run_load(settings.base_url, creds, f"timed:{k}")
            drain = asyncio.run(_wait_diffs(settings))
            cpu1 = depot_cpu()
            cpu = [c + (b - a) * 1000 / depot["requests"] / REPEATS for c, a, b in zip(cpu, cpu0, cpu1)]
            # The reference after this run (and before the next one) on the same rounds' bodies.
            ref_cpu0 = _cpu_seconds([ref.pid])
            refs.append(run_load(ref_url, fake, f"timed:{min(k + 1, REPEATS - 1)}"))
            ref_cpu += (_cpu_seconds([ref.pid]) - ref_cpu0) * 1000 / refs[-1]["requests"] / REPEATS
            runs.append((depot, drain, (refs[k]["rate"] + refs[k + 1]["rate"]) / 2))
        state = asyncio.run(_check(settings))
        # Every host sends its last reports again, ROUNDS times, unchanged: Depot compares digests only.
        same = run_load(settings.base_url, creds, "unchanged")
        same_ref = run_load(ref_url, fake, "unchanged")

        print(f"CPU per report: reference server {ref_cpu:.2f} ms; Depot server {cpu[0]:.2f} ms,"
              f" worker {cpu[1]:.2f} ms, PostgreSQL backends {cpu[2]:.2f} ms (total {sum(cpu):.2f} ms)")
        accepted, end_to_end, p99s = [], [], []
        for k, (depot, drain, ref_rate) in enumerate(runs):
            e2e = depot["requests"] / (depot["seconds"] + drain)
            accepted.append(depot["rate"] / ref_rate)
            end_to_end.append(e2e / ref_rate)
            p99s.append(depot["p99_ms"])
            print(f"\nrun {k + 1}/{REPEATS}: {depot['requests']} PUTs ({depot['bytes'] / 1e6:.0f} MB) in"
                  f" {depot['seconds']:.2f} s; failures {depot['failures']}")
            print(f"  reference (read + json.loads): {ref_rate:8.0f} reports/s (mean of the runs before and after:"
                  f" {refs[k]['rate']:.0f} and {refs[k + 1]['rate']:.0f}; p99 {refs[k]['p99_ms']:.1f} ms)")
            print(f"  depot accepted:                {depot['rate']:8.0f} reports/s   p50 {depot['p50_ms']:6.1f} ms"
                  f"   p99 {depot['p99_ms']:6.1f} ms")
            print(f"  depot p99 by endpoint: {depot['p99_by_path_ms']} (reference: {refs[k]['p99_by_path_ms']})")
            print(f"  depot end to end (every diff applied, {drain:.2f} s after the last PUT): {e2e:8.0f} reports/s")
            print(f"  load generator CPU per request: {depot['load_cpu_ms']:.3f} ms (reference run {refs[k]['load_cpu_ms']:.3f})")
            print(f"  ratios: accepted {accepted[-1]:.2f}x, end to end {end_to_end[-1]:.2f}x; CPU busy during the"
                  f" run: Depot's {depot['busy']:.0%}, the reference's {refs[k]['busy']:.0%} (load generator included)")
        print(f"\nmedian of {REPEATS} runs: accepted {statistics.median(accepted):.2f}x (target >= 0.7;"
              f" runs {min(accepted):.2f}-{max(accepted):.2f}),"
              f" end to end {statistics.median(end_to_end):.2f}x (target >= 0.4),"
              f" p99 {statistics.median(p99s):.1f} ms (target < 100)")
        print(f"after the runs: {state}")
        print(f"unchanged reports (every host sends its last round again, {ROUNDS} times): Depot {same['rate']:.0f} reports/s"
              f" (p99 {same['p99_ms']:.1f} ms, failures {same['failures']}), reference {same_ref['rate']:.0f} reports/s:"
              f" {same['rate'] / same_ref['rate']:.2f}x")

        if QUERY_HOSTS > 0:  # BENCH_QUERY_HOSTS=0 skips the package-query part (its load takes a minute)
            print(f"\nloading {QUERY_HOSTS} hosts x {PACKAGES} packages ...", flush=True)
            loaded = asyncio.run(_load_query_fleet(settings, QUERY_HOSTS, PACKAGES))
            print(f"loaded {QUERY_HOSTS * PACKAGES:,} installed packages in {loaded:.0f} s")
            for path, p50, worst, hosts in asyncio.run(_time_queries(settings.base_url, viewer_key)):
                print(f"GET {path:<55} {hosts:6d} hosts   median {p50:7.1f} ms   max {worst:7.1f} ms (target < 50;"
                      " time to the last byte)")
    finally:
        for server in servers:
            _stop(server)
        _stop(worker)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        _stop(ref)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "reference":
        reference_main(int(sys.argv[2]))
    else:
        main()
