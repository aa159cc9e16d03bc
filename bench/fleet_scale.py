"""Fleet-scale benchmark: a whole fleet onboarded, then steady state, quiet reports and fleet questions.

Depot runs as `make run` starts it (BENCH_SERVERS `depot serve` processes sharing the port, default one
per core and at most 4, and BENCH_SCALE_WORKERS `depot worker` processes, default as many) on a database of
its own; the load comes from a separate process on loopback (BENCH_CONCURRENCY keep-alive connections,
default 64, bench/fleet.py's `_Connection`). The reference is bench/fleet.py's do-nothing aiohttp
server (reads and JSON-parses each body), sent the same bodies in the same run, before and after Depot.
Depot is only touched through its HTTP API, its processes, and two facts about its database: a report
is applied when no `host_diff` task is queued or running and no report is pending (the
`host_pending_reports` view where it exists, else `host_reports` is empty), and `pg_database_size`.

The database: BENCH_DATABASE_URL names a PostgreSQL server and the database the benchmark owns
(postgresql://postgres@127.0.0.1:5432/depot_fleet_scale; a URL naming `postgres` or no database means
`depot_fleet_scale`): it is DROPPED and created at the start and dropped at the end, so never point it
at a database you keep. Default: `depot_fleet_scale` on the embedded PostgreSQL, also dropped at the end.
BENCH_SCALE_KEEP=1 (with BENCH_DATABASE_URL) leaves it in place at the end, fleet and all, to look at the
questions' plans (the next run drops it).

The fleet (deterministic from BENCH_SCALE_SEED, each host's bodies generated when sent):
- BENCH_SCALE_HOSTS hosts (5,000; the documented large run is 20,000), about BENCH_SCALE_PACKAGES (2,000)
  installed packages each, spread over four OS images: debian12 40%, ubuntu22.04 30%, debian11 20% (dpkg
  order) and rocky9 10% (rpm order: its hosts send os_family "Redhat"). Image of host h: by h % 10.
- An image is a base list of PACKAGES - 3 (name, version): the deb images share 1,600 names and have 400
  of their own (2% of each deb list are `name:i386` multiarch entries of names it has); rocky9 shares 800
  names and has 1,200 of its own. Each base package has three alternative versions (two older, one newer:
  its last number -2, -1, +1).
- A host is its image with 2% of its packages (40) at one of the alternatives, plus 1-5 packages from
  1,000 site-local ones (each then on ~0.3% of the hosts): the fleet shares almost all its versions.
- Round 1 (steady state): every host's list with 3 upgrades (last number +5), 1 new package, 1 removed.
- Bodies are byte for byte what linupdate's json.dumps sends (`{"name": "x", "version": "y"}` items,
  sorted by name), so the intake's fast path runs; status bodies as linupdate sends them (indent=1).

Measures, each printed next to its target:
1. onboarding: every host sends its status and its first installed report; hosts/s from the first request
   until every diff is applied, against the reference's hosts/s on the same bodies (target >= 0.5x).
2. database growth per installed package: pg_database_size after onboarding minus before registration,
   divided by the installed packages (target <= 20 bytes); also after VACUUM + CHECKPOINT, for information.
3. steady state: round 1, end to end, against the reference (target >= 0.6x), and the PUTs' p99 (< 100 ms).
4. unchanged reports: round 1 again, accepted reports/s against the reference (target >= 1.7x, what quiet
   rounds cost before).
5. fleet questions (after an untimed round of available reports): `GET /api/v2/hosts/package/...` and
   hosts/outdated, uptodate; median and max of BENCH_SCALE_QUERY_RUNS runs (target: median < 50 ms); the
   `older-than` filter (whole and a page) if this build's OpenAPI document names it.
6. the peak RSS of the worker process(es) from their start through onboarding (VmHWM; target < 300 MB).

`python -m bench fleet_scale` (part of `make bench`); the 20,000-host run:
`BENCH_SCALE_HOSTS=20000 BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/depot_fleet_scale
nice .venv/bin/python -m bench fleet_scale`.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

HOSTS = int(os.environ.get("BENCH_SCALE_HOSTS", "5000"))
PACKAGES = int(os.environ.get("BENCH_SCALE_PACKAGES", "2000"))
SEED = int(os.environ.get("BENCH_SCALE_SEED", "17"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "64"))
WORKERS = int(os.environ.get("BENCH_SCALE_WORKERS", "0"))
QUERY_RUNS = int(os.environ.get("BENCH_SCALE_QUERY_RUNS", "7"))
KEEP = os.environ.get("BENCH_SCALE_KEEP", "") not in ("", "0")
DEFAULT_DB = "depot_fleet_scale"
ROOT = Path(__file__).resolve().parent.parent

# --- the fleet ---------------------------------------------------------------------------------------

VARIANT_SHARE = 0.02       # of a host's packages at an alternative version
SITE_PACKAGES = 1000       # site-local packages; each host has 1-5 of them
ALTERNATIVES = (-2, -1, 1)  # an alternative version: the base version's last number moved by this
UPGRADE = 5                 # round 1's upgrades: the last number moved by this
# Packages every image has (at its own version), which round 1 never removes: the fleet questions ask them.
EVERYWHERE = ("openssl", "bash", "curl", "tzdata", "zlib1g")
_PREFIXES = ("lib", "lib", "lib", "python3-", "fonts-", "golang-", "node-", "perl-", "ruby-", "gir1.2-",
             "x11-", "", "", "", "")
_SYLLABLES = ("ba", "co", "de", "fi", "gu", "ka", "lo", "mu", "ne", "po", "ri", "sa", "tu", "vo", "xe",
              "zy", "ar", "en", "ix", "ol", "um", "st", "pr", "gl", "th")


@dataclass(frozen=True)
class Image:
    name: str
    os_family: str
    os: str
    os_version: str
    kernel: str
    repository: str
    share: int  # hosts of this image in every 10
    # Version forms: {a}.{b}.{c}-{d}{suffix}{n}, n the last number the alternatives move.
    suffix: str


IMAGES = (
    Image("debian12", "Debian", "Debian GNU/Linux", "12", "6.1.0-28-amd64", "http://deb.debian.org/debian", 4,
          "+deb12u"),
    Image("ubuntu2204", "Debian", "Ubuntu", "22.04", "5.15.0-127-generic", "http://archive.ubuntu.com/ubuntu", 3,
          "ubuntu0.22.04."),
    Image("debian11", "Debian", "Debian GNU/Linux", "11", "5.10.0-33-amd64", "http://deb.debian.org/debian", 2,
          "+deb11u"),
    Image("rocky9", "Redhat", "Rocky Linux", "9.5", "5.14.0-503.15.1.el9_5.x86_64",
          "https://dl.rockylinux.org/pub/rocky/9/BaseOS", 1, ".el9_"),
)
_IMAGE_OF = [i for i, img in enumerate(IMAGES) for _ in range(img.share)]


def _item(name: str, version: str) -> bytes:
    return b'{"name": "%s", "version": "%s"}' % (name.encode(), version.encode())


def _moved(version: str, by: int) -> str:
    """version with its last number moved by `by` (2.36-9+deb12u4, 2 -> 2.36-9+deb12u6)."""
    head = version.rstrip("0123456789")
    return f"{head}{int(version[len(head):]) + by}"


class _ImageList:
    """One image's base list, sorted by name, with each package's versions and their items."""

    def __init__(self, image: Image, names: list[str], rng: random.Random):
        self.image = image
        self.names = sorted(names)
        # versions[i]: (base, alternative 0, 1, 2); the base's last number from 3 so older ones exist.
        self.versions = []
        for _ in self.names:
            base = f"{rng.randint(0, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}-{rng.randint(1, 9)}" \
                   f"{image.suffix}{rng.randint(3, 12)}"
            self.versions.append((base, *(_moved(base, by) for by in ALTERNATIVES)))
        self.items = [[_item(n, v) for v in vs] for n, vs in zip(self.names, self.versions)]
        # The base list's items joined once; a host's body copies runs of it between its own items.
        self.joined = b", ".join(variants[0] for variants in self.items)
        self.start, offset = [], 0
        for variants in self.items:
            self.start.append(offset)
            offset += len(variants[0]) + 2
        self.protected = {i for i, n in enumerate(self.names) if n in EVERYWHERE}


@dataclass
class _HostState:
    image: _ImageList
    choice: dict[int, int]          # package index -> version index (0 base, 1-3 alternatives)
    changed: dict[int, str]         # package index -> version set by round 1
    removed: set[int]
    site: list[tuple[str, str]]     # site-local (name, version), sorted


class Fleet:
    """The deterministic fleet: `installed(h, round)`, `status(h)`, `available(h)` as the agent's bytes."""

    def __init__(self, hosts: int = HOSTS, packages: int = PACKAGES, seed: int = SEED):
        self.hosts, self.seed = hosts, seed
        rng = random.Random(seed)
        base = packages - 3  # hosts add 1-5 site-local packages: ~`packages` on average
        deb_own, rpm_shared = base // 5, int(base * 0.4)
        shared_count = base - deb_own
        pool = self._names(rng, shared_count + 3 * deb_own + (base - rpm_shared))
        shared = list(EVERYWHERE) + pool[: shared_count - len(EVERYWHERE)]
        rest = pool[shared_count - len(EVERYWHERE):]
        self.images = []
        for i, image in enumerate(IMAGES):
            if image.os_family == "Debian":
                names = shared + rest[i * deb_own:(i + 1) * deb_own]
                # Multiarch entries (dpkg lists a foreign architecture's package as name:arch).
                foreign = [f"{n}:i386" for n in rng.sample([n for n in names if n.startswith("lib")], base // 50)]
                names = names[: base - len(foreign)] + foreign
            else:
                own = rest[3 * deb_own:]
                names = shared[:rpm_shared] + own[: base - rpm_shared]
            self.images.append(_ImageList(image, names, rng))
        self.site = [(f"site-{self._word(rng)}-{j:04d}", f"1.{j % 7}.{j % 13}-1") for j in range(SITE_PACKAGES)]

    @staticmethod
    def _word(rng: random.Random) -> str:
        return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))

    @classmethod
    def _names(cls, rng: random.Random, count: int) -> list[str]:
        names, seen = [], set(EVERYWHERE)
        while len(names) < count:
            name = f"{rng.choice(_PREFIXES)}{cls._word(rng)}{rng.choice(('', '', '1', '2', '6', '-common', '-dev'))}"
            if name not in seen:
                seen.add(name)
                names.append(name)
        return names

    def image_of(self, h: int) -> Image:
        return IMAGES[_IMAGE_OF[h % 10]]

    def hostname(self, h: int) -> str:
        return f"{self.image_of(h).name}-{h:06d}.fleet"

    def _state(self, h: int, rnd: int) -> _HostState:
        img = self.images[_IMAGE_OF[h % 10]]
        rng = random.Random(self.seed * 1_000_003 + h)
        n = len(img.names)
        choice = {i: rng.randint(1, len(ALTERNATIVES)) for i in rng.sample(range(n), round(n * VARIANT_SHARE))}
        site = sorted(self.site[j] for j in rng.sample(range(len(self.site)), rng.randint(1, 5)))
        state = _HostState(img, choice, {}, set(), site)
        if rnd >= 1:
            r1 = random.Random((self.seed * 1_000_003 + h) * 31 + 1)
            picked = r1.sample([i for i in range(n) if i not in img.protected], 4)
            for i in picked[:3]:
                state.changed[i] = _moved(img.versions[i][choice.get(i, 0)], UPGRADE)
            state.removed.add(picked[3])
            extra = self.site[r1.randrange(len(self.site))]
            if extra not in site:
                state.site = sorted([*site, extra])
            else:  # already there: a newer build of it instead
                state.site = sorted([s for s in site if s != extra] + [(extra[0], _moved(extra[1], 1))])
        return state

    def _items(self, state: _HostState) -> bytes:
        """The host's items joined, as runs of the image's joined base list between the host's own."""
        img = state.image
        own: dict[int, bytes | None] = {i: img.items[i][c] for i, c in state.choice.items()}
        for i, version in state.changed.items():
            own[i] = _item(img.names[i], version)
        for i in state.removed:
            own[i] = None
        inserted: dict[int, list[bytes]] = {}
        for name, version in state.site:  # in name order, before the first base name after it
            inserted.setdefault(bisect.bisect(img.names, name), []).append(_item(name, version))
        parts, pos = [], 0
        for i in sorted(own.keys() | inserted.keys()):
            if pos < i:  # base items pos .. i-1, with their separators
                parts.append(img.joined[img.start[pos]:img.start[i - 1] + len(img.items[i - 1][0])])
            parts.extend(inserted.get(i, ()))
            if i in own:
                if own[i] is not None:
                    parts.append(own[i])
                pos = i + 1
            else:
                pos = i
        if pos < len(img.items):
            parts.append(img.joined[img.start[pos]:])
        return b", ".join(parts)

    def installed(self, h: int, rnd: int = 0) -> bytes:
        return b'{"installed_packages": [' + self._items(self._state(h, rnd)) + b"]}"

    def packages(self, h: int, rnd: int = 0) -> list[tuple[str, str]]:
        """The host's installed (name, version) in the order it sends them."""
        return [(p["name"], p["version"]) for p in json.loads(self.installed(h, rnd))["installed_packages"]]

    def available(self, h: int, rnd: int = 1) -> bytes:
        """A third of the hosts are up to date; the others can update what they run at an older version."""
        state = self._state(h, rnd)
        img = state.image
        items = []
        if h % 3:
            for i in sorted(state.choice):
                if state.choice[i] < 3 and i not in state.changed and i not in state.removed:
                    items.append(b'{"name": "%s", "version": "%s", "repository": "%s", "security": %s}' % (
                        img.names[i].encode(), img.versions[i][0].encode(), img.image.repository.encode(),
                        b"true" if i % 3 == 0 else b"false"))
        return b'{"available_packages": [' + b", ".join(items) + b"]}"

    def status(self, h: int) -> bytes:
        image = self.image_of(h)
        return json.dumps({
            "hostname": self.hostname(h), "os_family": image.os_family, "os": image.os,
            "os_version": image.os_version, "type": "kvm ", "kernel": image.kernel, "arch": "x86_64",
            "cpu": "AMD EPYC (2 cores)", "ram": "7.76 GB",
            "network": {"lo": {"ipv4": "127.0.0.1", "ipv6": "::1", "mac": "00:00:00:00:00:00"},
                        "eth0": {"ipv4": _ip(h), "ipv6": None, "mac": f"02:fc:00:{h >> 16 & 255:02x}:"
                                 f"{h >> 8 & 255:02x}:{h & 255:02x}"}},
            "env": "prod", "agent_status": "running", "agent_version": "3.17.1",
            "reboot_required": "false", "uptime": 1795683892.0,
        }, indent=1).encode()


def _ip(h: int) -> str:
    return f"10.{h >> 16 & 255}.{h >> 8 & 255}.{h & 255 or 1}"


# --- the load generator (its own process) ---------------------------------------------------------

STATUS, INSTALLED, AVAILABLE = "/api/v2/host/status", "/api/v2/host/packages/installed", "/api/v2/host/packages/available"
PHASES = {
    "onboard": ((STATUS, "status", 0), (INSTALLED, "installed", 0)),
    "steady": ((INSTALLED, "installed", 1),),
    "unchanged": ((INSTALLED, "installed", 1),),
    "available": ((AVAILABLE, "available", 1),),
}


async def _load(base_url: str, creds: list, phase: str) -> dict:
    from bench.fleet import _Connection

    fleet = Fleet(len(creds))
    url = urlsplit(base_url)
    latencies: list[float] = []
    failures: list[str] = []
    sent = 0
    queue = list(range(len(creds) - 1, -1, -1))

    async def worker(conn):
        nonlocal sent
        while queue:
            h = queue.pop()
            headers = f"Authorization: Host {creds[h][0]}:{creds[h][1]}\r\n".encode()
            for path, what, rnd in PHASES[phase]:
                body = fleet.status(h) if what == "status" else getattr(fleet, what)(h, rnd)
                sent += len(body)
                t0 = time.perf_counter()
                status, answer = await conn.put(path, headers, body)
                latencies.append(time.perf_counter() - t0)
                if status != 200 and len(failures) < 5:
                    failures.append(f"{path} {status} {answer[:200]!r}")
                elif status != 200:
                    failures.append("")

    connections = [_Connection(url.hostname, url.port) for _ in range(CONCURRENCY)]
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for c in connections:
            c.close()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "failures": len(failures), "failure_samples": [f for f in failures if f], "bytes": sent}


def load_main(base_url: str, creds_file: str, phase: str) -> None:
    import uvloop

    creds = json.loads(Path(creds_file).read_text())
    print(json.dumps(uvloop.run(_load(base_url, creds, phase))), flush=True)


def run_load(base_url: str, creds: list, phase: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(creds, f)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.fleet_scale", "load", base_url, f.name, phase],
                             cwd=ROOT, capture_output=True, text=True, check=False)
    finally:
        os.unlink(f.name)
    if out.returncode:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["failures"]:
        raise RuntimeError(f"{phase}: {result['failures']} failed requests, e.g. {result['failure_samples']}")
    return result


# --- Depot and its database ----------------------------------------------------------------------


def _database() -> tuple[str, str]:
    """(URL of a maintenance database on the server, name of the benchmark's own database)."""
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        return "", DEFAULT_DB
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if name in ("", "postgres", "template1"):
        name = DEFAULT_DB
    return urlunsplit(parts._replace(path="/postgres")), name


def _settings(admin_url: str, name: str):
    from bench._common import private_settings

    return private_settings(name, 7, "depot:bench-fleet-scale-queue",
                            admin_url=admin_url or None)


async def _drop(database_url: str) -> None:
    import asyncpg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _register(base_url: str, key: str, fleet: Fleet) -> list:
    import aiohttp

    creds: list = [None] * fleet.hosts
    todo = list(range(fleet.hosts - 1, -1, -1))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:

        async def worker():
            while todo:
                h = todo.pop()
                async with s.post(f"{base_url}/api/v2/host/registering",
                                  json={"hostname": fleet.hostname(h), "ip": _ip(h)}) as r:
                    body = await r.json()
                    assert r.status == 201 or r.status == 200, body
                creds[h] = (body["results"]["id"], body["results"]["token"])

        await asyncio.gather(*(worker() for _ in range(8)))
    return creds


async def _wait_applied(database_url: str, timeout: float = 3600) -> float:
    """Seconds until every report is applied: no host_diff task queued or running, no report pending."""
    import asyncpg

    from bench.fleet import DIFFS_BUSY_SQL

    conn = await asyncpg.connect(database_url)
    t0 = time.perf_counter()
    try:
        # Today's store keeps the applied installed report in host_reports; the view names the pending ones.
        pending = "host_pending_reports" if await conn.fetchval("SELECT to_regclass('host_pending_reports')") \
            else "host_reports"
        sql = DIFFS_BUSY_SQL.format(pending=pending)
        while time.perf_counter() - t0 < timeout:
            if not await conn.fetchval(sql):
                return time.perf_counter() - t0
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise RuntimeError("diffs did not finish in time")


async def _sql(database_url: str, *statements: str):
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        out = None
        for statement in statements:
            out = await conn.fetch(statement)
        return out
    finally:
        await conn.close()


async def _size(database_url: str) -> int:
    return (await _sql(database_url, "SELECT pg_database_size(current_database())"))[0][0]


async def _largest(database_url: str) -> list:
    return await _sql(database_url, """
        SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm') ORDER BY 2 DESC LIMIT 6""")


def _peak_rss_mb(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out.append(int(line.split()[1]) / 1024)
    return out


async def _time_queries(base_url: str, key: str, fleet: Fleet) -> list[tuple[str, float, float, int, int, int]]:
    """(path, median ms, max ms, hosts in the answer, its bytes, status) per fleet question."""
    import aiohttp

    deb = fleet.images[0]
    openssl = deb.versions[deb.names.index("openssl")][0]
    site = fleet._state(0, 1).site[0][0]  # a site-local package: on a few hosts
    lib = next(n for n in deb.names if n.startswith("lib") and ":" not in n and n not in EVERYWHERE)
    cases = [
        "/api/v2/hosts/package/openssl?strict-name",
        "/api/v2/hosts/package/openssl?strict-name&per_page=100",
        f"/api/v2/hosts/package/openssl/{openssl}?strict",
        f"/api/v2/hosts/package/{lib}",
        "/api/v2/hosts/package/lib?per_page=100",
        "/api/v2/hosts/package/py?per_page=100",
        "/api/v2/hosts/package/*ssl*?per_page=100",
        f"/api/v2/hosts/package/{site}?strict-name",
        "/api/v2/hosts/outdated?per_page=100",
        "/api/v2/hosts/outdated",
        "/api/v2/hosts/uptodate",
    ]
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        # "Who still runs openssl older than V": a build that has the filter documents it.
        async with s.get(f"{base_url}/api/v2/openapi.json") as r:
            documented = "older-than" in await r.text()
        older = f"/api/v2/hosts/package/openssl?strict-name&older-than={quote(openssl, safe='')}"
        if documented:
            cases += [older, older + "&per_page=100"]
        for path in cases:
            times, hosts, size, status = [], 0, 0, 0
            for i in range(QUERY_RUNS + 1):
                t0 = time.perf_counter()
                async with s.get(base_url + path) as r:
                    raw = await r.read()  # the server's answer time: until its last byte is in
                    status = r.status
                elapsed = (time.perf_counter() - t0) * 1000
                if status != 200:
                    break
                if i:  # the first run warms the caches
                    times.append(elapsed)
                hosts, size = len(json.loads(raw)["results"]), len(raw)
            out.append((path, statistics.median(times) if times else 0.0, max(times, default=0.0), hosts, size, status))
        if not documented:
            out.append((older, 0.0, 0.0, 0, 0, 0))
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    from app.cli.server import default_processes, servers_env
    from bench._common import free_port, server_env
    from bench.fleet import _depot_cmd, _reset, _stop, _wait_port

    # A SIGTERM (a stopped run) goes through the finally below: no server or worker left behind to serve
    # the next run's database and queue.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers_n = int(os.environ.get("BENCH_SERVERS", "0")) or default_processes()
    workers_n = WORKERS or default_processes()
    admin_url, name = _database()
    if admin_url:
        asyncio.run(_drop(urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))))
    settings = _settings(admin_url, name)
    fleet = Fleet(HOSTS)
    t_gen = time.perf_counter()
    sample = [len(fleet.installed(h)) for h in range(min(HOSTS, 200))]
    gen_ms = (time.perf_counter() - t_gen) * 1000 / len(sample)
    installed = sum(len(fleet.packages(h)) for h in range(min(HOSTS, 200))) * HOSTS / min(HOSTS, 200)
    print(f"fleet-scale: {HOSTS} hosts x ~{PACKAGES} packages (seed {SEED}); images "
          + ", ".join(f"{i.name} {i.share * 10}% ({i.os_family})" for i in IMAGES)
          + f"; {VARIANT_SHARE:.0%} of a host's packages at one of {len(ALTERNATIVES)} alternative versions,"
          f" 1-5 of {SITE_PACKAGES} site-local packages; installed report ~{statistics.mean(sample) / 1000:.0f} KB"
          f" (generated in ~{gen_ms:.1f} ms); Depot: {servers_n} server process(es), {workers_n} worker(s),"
          f" {CONCURRENCY} concurrent hosts; database {name} on {'BENCH_DATABASE_URL' if admin_url else 'the embedded PostgreSQL'};"
          f" load average {os.getloadavg()[0]:.1f}", flush=True)

    admin_key, viewer_key = asyncio.run(_reset(settings))
    ref_port = free_port()
    ref = subprocess.Popen([sys.executable, "-m", "bench.fleet", "reference", str(ref_port)], cwd=ROOT)
    ref_url = f"http://127.0.0.1:{ref_port}"
    fake = [(f"id_{h}", "t") for h in range(HOSTS)]
    metrics_dir = tempfile.mkdtemp(prefix="depot-bench-metrics-")
    serve_env = server_env(settings, **servers_env(Path(metrics_dir)))
    servers = [subprocess.Popen(_depot_cmd("serve", "--reuse-port"), cwd=ROOT, stdout=subprocess.DEVNULL, env=serve_env)
               for _ in range(servers_n)]
    workers = [subprocess.Popen(_depot_cmd("worker"), cwd=ROOT, env=server_env(settings), stdout=subprocess.DEVNULL)
               for _ in range(workers_n)]
    rows: list[tuple[str, str, str]] = []
    try:
        _wait_port(ref_port, ref)
        for server in servers:
            _wait_port(settings.port, server)
        size0 = asyncio.run(_size(settings.database_url))
        t0 = time.perf_counter()
        creds = asyncio.run(_register(settings.base_url, admin_key, fleet))
        print(f"registered {HOSTS} hosts in {time.perf_counter() - t0:.0f} s", flush=True)

        # 1. onboarding, the reference before and after
        ref_on = [run_load(ref_url, fake, "onboard")]
        rss_before = _peak_rss_mb([w.pid for w in workers])
        on = run_load(settings.base_url, creds, "onboard")
        drain = asyncio.run(_wait_applied(settings.database_url))
        rss = _peak_rss_mb([w.pid for w in workers])
        ref_on.append(run_load(ref_url, fake, "onboard"))
        ref_hosts_s = statistics.mean(HOSTS / r["seconds"] for r in ref_on)
        on_hosts_s = HOSTS / (on["seconds"] + drain)
        print(f"onboarding: {on['requests']} PUTs ({on['bytes'] / 1e6:.0f} MB) accepted in {on['seconds']:.1f} s"
              f" (p99 {on['p99_ms']:.0f} ms), every diff applied {drain:.1f} s after the last reply;"
              f" reference {', '.join('%.1f s' % r['seconds'] for r in ref_on)}", flush=True)
        rows.append(("onboarding, end to end", f"{on_hosts_s:.0f} hosts/s vs reference {ref_hosts_s:.0f} hosts/s ="
                     f" {on_hosts_s / ref_hosts_s:.2f}x (applied {drain:.0f} s after the last reply)",
                     f">= 0.5x: {_verdict(on_hosts_s / ref_hosts_s >= 0.5)}"))

        # 2. database growth
        size1 = asyncio.run(_size(settings.database_url))
        largest = asyncio.run(_largest(settings.database_url))
        asyncio.run(_sql(settings.database_url, "VACUUM", "CHECKPOINT"))
        size2 = asyncio.run(_size(settings.database_url))
        per = (size1 - size0) / installed
        rows.append(("database growth per installed package", f"{per:.1f} bytes ({(size1 - size0) / 1e6:.0f} MB for"
                     f" {installed / 1e6:.1f} M packages; after VACUUM + CHECKPOINT {(size2 - size0) / installed:.1f})",
                     f"<= 20 bytes: {_verdict(per <= 20)}"))
        print("largest relations after onboarding: " + ", ".join(f"{r['relname']} {r['bytes'] / 1e6:.0f} MB"
                                                                   for r in largest), flush=True)

        # 3. steady state
        ref_st = [run_load(ref_url, fake, "steady")]
        st = run_load(settings.base_url, creds, "steady")
        st_drain = asyncio.run(_wait_applied(settings.database_url))
        ref_st.append(run_load(ref_url, fake, "steady"))
        ref_rate = statistics.mean(r["rate"] for r in ref_st)
        st_rate = st["requests"] / (st["seconds"] + st_drain)
        print(f"steady state: {st['requests']} PUTs accepted in {st['seconds']:.1f} s ({st['rate']:.0f}/s, p50"
              f" {st['p50_ms']:.0f} ms), applied {st_drain:.1f} s after the last reply;"
              f" reference {', '.join('%.0f/s' % r['rate'] for r in ref_st)}", flush=True)
        rows.append(("steady state (3 up, 1 new, 1 removed), end to end",
                     f"{st_rate:.0f} reports/s vs {ref_rate:.0f} = {st_rate / ref_rate:.2f}x", f">= 0.6x: "
                     f"{_verdict(st_rate / ref_rate >= 0.6)}"))
        rows.append(("steady state p99 of the PUTs", f"{st['p99_ms']:.0f} ms", f"< 100 ms: {_verdict(st['p99_ms'] < 100)}"))

        # 4. unchanged reports
        ref_un = run_load(ref_url, fake, "unchanged")
        un = run_load(settings.base_url, creds, "unchanged")
        asyncio.run(_wait_applied(settings.database_url))
        rows.append(("unchanged reports, accepted", f"{un['rate']:.0f} reports/s vs {ref_un['rate']:.0f} ="
                     f" {un['rate'] / ref_un['rate']:.2f}x (p99 {un['p99_ms']:.0f} ms)",
                     f">= 1.7x: {_verdict(un['rate'] / ref_un['rate'] >= 1.7)}"))

        # 5. fleet questions, after every host's available report
        run_load(settings.base_url, creds, "available")
        asyncio.run(_wait_applied(settings.database_url))
        asyncio.run(_sql(settings.database_url, "VACUUM ANALYZE"))
        for path, median, worst, hosts, size, status in asyncio.run(_time_queries(settings.base_url, viewer_key, fleet)):
            label = f"GET {path.replace('/api/v2/', '')}"
            if status != 200:
                rows.append((label, "n/a (not in this build)" if not status else f"answered {status}", "< 50 ms"))
            else:
                rows.append((label, f"median {median:.1f} ms, max {worst:.1f} ms ({hosts} hosts, {size / 1e6:.1f} MB)",
                             f"median < 50 ms: {_verdict(median < 50)}"))

        # 6. the worker's memory
        rows.append(("worker peak RSS (VmHWM) through onboarding", ", ".join(f"{m:.0f} MB" for m in rss)
                     + f" (at start {', '.join(f'{m:.0f}' for m in rss_before)} MB)",
                     f"< 300 MB: {_verdict(max(rss) < 300)}"))
    finally:
        for p in [*servers, *workers]:
            _stop(p)
        _stop(ref)
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
        if KEEP:
            print(f"kept the database: {settings.database_url}", flush=True)
        else:
            asyncio.run(_drop(settings.database_url))

    width = max(len(r[0]) for r in rows)
    print(f"\nfleet-scale results ({HOSTS} hosts, load average now {os.getloadavg()[0]:.1f}):")
    for label, figure, target in rows:
        print(f"  {label:<{width}}  {figure}   [target {target}]")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
