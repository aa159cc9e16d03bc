"""Soak run: a simulated fleet reporting at a steady rate for a few minutes while uploads and rebuilds run.

A real `depot serve` and `depot worker` on a fresh `depot_soak` database (embedded PostgreSQL unless
DEPOT_DATABASE_URL is set). SOAK_HOSTS hosts send installed-package reports at SOAK_RATE reports per
second in total (each host changes a few packages every time); an uploader sends SOAK_UPLOAD_EVERY
seconds a few .deb files and asks for a rebuild. Printed per SOAK_INTERVAL: requests, errors, p50/p99
latency, the server's RSS. Targets: 0 errors, flat p99, flat memory. `python -m bench soak`.
"""
from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._common import private_settings, server_env

SECONDS = float(os.environ.get("SOAK_SECONDS", 180))
HOSTS = int(os.environ.get("SOAK_HOSTS", 200))
RATE = float(os.environ.get("SOAK_RATE", 40))  # reports per second, whole fleet
PACKAGES = int(os.environ.get("SOAK_PACKAGES", 500))
UPLOAD_EVERY = float(os.environ.get("SOAK_UPLOAD_EVERY", 5))
INTERVAL = float(os.environ.get("SOAK_INTERVAL", 15))
SOAK_DB = "depot_soak"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _settings():
    from app.settings import Settings

    base_var = Settings.from_env().var_dir
    storage = Path(os.environ.get("SOAK_STORAGE", base_var / "soak-storage"))
    return private_settings(SOAK_DB, 3, "depot:soak-queue", storage_dir=storage)


def _env(settings) -> dict:
    return server_env(settings, DEPOT_STORAGE_DIR=str(settings.storage_dir), DEPOT_GPG_KEY_LENGTH="2048")


class Stats:
    def __init__(self):
        self.lat: list[float] = []
        self.errors: list[str] = []
        self.requests = 0

    def add(self, seconds: float, error: str | None = None) -> None:
        self.requests += 1
        self.lat.append(seconds)
        if error:
            self.errors.append(error)


async def _fleet(base: str, creds: list, stop_at: float, interval: list[Stats]) -> None:
    import aiohttp

    rng = random.Random(11)
    inventories = [{f"pkg{n}": f"1.{rng.randint(0, 9)}" for n in range(PACKAGES)} for _ in creds]
    gap = 1.0 / RATE
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        pending: set[asyncio.Task] = set()

        async def report(h: int) -> None:
            inv = inventories[h]
            for name in rng.sample(sorted(inv), 3):
                inv[name] = inv[name] + ".1"
            body = {"installed_packages": [{"name": k, "version": v} for k, v in inv.items()]}
            t0 = time.monotonic()
            try:
                async with session.put(base + "/api/v2/host/packages/installed", json=body,
                                       headers={"Authorization": f"Host {creds[h][0]}:{creds[h][1]}"}) as resp:
                    await resp.read()
                    interval[-1].add(time.monotonic() - t0, None if resp.status == 200 else f"report {resp.status}")
            except Exception as exc:
                interval[-1].add(time.monotonic() - t0, f"report {type(exc).__name__}")

        n = 0
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            task = asyncio.create_task(report(n % len(creds)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)


async def _uploader(base: str, key: str, stop_at: float, interval: list[Stats]) -> int:
    import aiohttp

    from tests.pkgfactory import deb_bytes

    headers = {"Authorization": f"Bearer {key}"}
    uploads = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(base + "/api/v2/repo/", json={"name": "soak", "type": "deb", "dist": "bookworm",
                                                              "section": "main"}, headers=headers) as resp:
            repo = (await resp.json())["results"]["Id"]
        async with session.post(f"{base}/api/v2/repo/{repo}/snapshot", json={}, headers=headers) as resp:
            snap = (await resp.json())["results"]["Id"]
        while time.monotonic() < stop_at:
            form = aiohttp.FormData()
            for i in range(3):
                name = f"soak-{uploads}-{i}"
                form.add_field("file", deb_bytes(name), filename=f"{name}_1.0-1_amd64.deb")
            t0 = time.monotonic()
            try:
                async with session.post(f"{base}/api/v2/snapshot/{snap}/upload", data=form, headers=headers) as r:
                    await r.read()
                    interval[-1].add(time.monotonic() - t0, None if r.status == 200 else f"upload {r.status}")
                t0 = time.monotonic()
                async with session.put(f"{base}/api/v2/snapshot/{snap}/rebuild", json={"gpgSign": "true"},
                                       headers=headers) as r:
                    await r.read()
                    interval[-1].add(time.monotonic() - t0, None if r.status == 202 else f"rebuild {r.status}")
            except Exception as exc:
                interval[-1].add(time.monotonic() - t0, f"upload {type(exc).__name__}")
            uploads += 1
            await asyncio.sleep(UPLOAD_EVERY)
    return uploads


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else values[0] * 1000


async def _run(settings, server_pid: int, admin_key: str) -> dict:
    import aiohttp

    base = settings.base_url
    creds = []
    async with aiohttp.ClientSession() as session:
        for h in range(HOSTS):
            async with session.post(base + "/api/v2/host/registering", json={"hostname": f"soak{h:04d}",
                                    "ip": "192.0.2.1"}, headers={"Authorization": f"Bearer {admin_key}"}) as resp:
                body = await resp.json()
                creds.append((body["results"]["id"], body["results"]["token"]))
    intervals = [Stats()]
    rss = [(0.0, _rss_mib(server_pid))]
    start = time.monotonic()
    stop_at = start + SECONDS
    print(f"{'t (s)':>6} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'server RSS MiB':>15}", flush=True)

    async def ticker():
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(INTERVAL, max(0.0, stop_at - time.monotonic())))
            s = intervals[-1]
            intervals.append(Stats())
            mem = _rss_mib(server_pid)
            rss.append((time.monotonic() - start, mem))
            print(f"{time.monotonic() - start:6.0f} {s.requests:9d} {len(s.errors):7d} {_p(s.lat, 50):8.1f} "
                  f"{_p(s.lat, 99):8.1f} {mem:15.1f}", flush=True)

    results = await asyncio.gather(_fleet(base, creds, stop_at, intervals), _uploader(base, admin_key, stop_at, intervals),
                                   ticker())
    all_errors = [e for s in intervals for e in s.errors]
    return {"requests": sum(s.requests for s in intervals), "errors": all_errors, "uploads": results[1],
            "rss_start": rss[0][1], "rss_end": rss[-1][1], "p99": [_p(s.lat, 99) for s in intervals if len(s.lat) >= 20]}


def main() -> None:
    from bench.fleet import _reset, _stop, _wait_port

    settings = _settings()
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["rm", "-rf", str(settings.storage_dir)], check=False)
    settings.storage_dir.mkdir(parents=True)
    admin_key, _ = asyncio.run(_reset(settings))
    cmd = [sys.executable, "-m", "app.cli"]
    server = subprocess.Popen(cmd + ["serve"], cwd=ROOT, env=_env(settings), stdout=subprocess.DEVNULL)
    worker = subprocess.Popen(cmd + ["worker"], cwd=ROOT, env=_env(settings), stdout=subprocess.DEVNULL)
    try:
        _wait_port(settings.port, server)
        print(f"soak: {HOSTS} hosts, {RATE:g} reports/s of {PACKAGES} packages, an upload of 3 debs + rebuild "
              f"every {UPLOAD_EVERY:g}s, for {SECONDS:g}s", flush=True)
        out = asyncio.run(_run(settings, server.pid, admin_key))
    finally:
        _stop(server)
        _stop(worker)
    errors = out["errors"]
    print(f"soak: {out['requests']} requests, {len(errors)} errors"
          + (f" ({', '.join(sorted(set(errors))[:5])})" if errors else "")
          + f", {out['uploads']} upload+rebuild rounds; p99 per interval {min(out['p99']):.0f}-{max(out['p99']):.0f} ms;"
          f" server RSS {out['rss_start']:.0f} MiB at start, {out['rss_end']:.0f} MiB at the end", flush=True)


if __name__ == "__main__":
    main()
