"""Agents sending installed-package reports to `depot serve` subprocesses under faults, and what
their hosts' inventories must be once everything settles.

Agents retry a report until it is acknowledged (2xx), as linupdate does on its next run.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.helpers import bearer, host_auth

HOSTS = 20
REPORTS = 8


def report(step: int, salt: str = "") -> dict:
    # Every step changes some versions, removes one package and adds one: a real diff each time.
    pkgs = {f"lib{n}": f"1.{step if n % 3 == 0 else 0}{salt}" for n in range(40)}
    pkgs[f"extra{step}"] = "1.0"
    pkgs["step"] = str(step)
    return {"installed_packages": [{"name": k, "version": v} for k, v in pkgs.items()]}


def expected(report: dict) -> set:
    return {(p["name"], p["version"]) for p in report["installed_packages"]}


async def register(session, base, key, name: str) -> tuple[int, dict]:
    async with session.post(base + "/api/v2/host/registering", json={"hostname": name, "ip": "192.0.2.1"},
                            headers=bearer(key)) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    return body["host_id"], host_auth(body["results"]["id"], body["results"]["token"])


class Agent:
    """Sends reports in order; retries one until it gets a 2xx; records every answer."""

    def __init__(self, session, base, headers, answers: list):
        self.session, self.base, self.headers, self.answers = session, base, headers, answers
        self.acked: list[int] = []

    async def send(self, step: int, report: dict) -> None:
        while True:
            t0 = time.monotonic()
            try:
                async with self.session.put(self.base + "/api/v2/host/packages/installed", json=report,
                                            headers=self.headers, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    body = await resp.read()
                    self.answers.append((t0, time.monotonic() - t0, resp.status, resp.headers.get("Retry-After"),
                                         resp.content_type, body[:300]))
                    if resp.status < 300:
                        self.acked.append(step)
                        return
                    retry = float(resp.headers.get("Retry-After", "1"))
            except aiohttp.ClientError as exc:
                self.answers.append((t0, time.monotonic() - t0, f"client error {type(exc).__name__}", None, None, b""))
                retry = 1
            await asyncio.sleep(min(retry, 0.3))  # a real agent waits Retry-After; the test keeps it short


async def settled(pool) -> bool:
    return await pool.fetchval(
        "SELECT NOT EXISTS (SELECT 1 FROM host_reports)"
        " AND NOT EXISTS (SELECT 1 FROM tasks WHERE kind = 'host_diff' AND status IN ('queued', 'running'))"
    )


async def inventory(pool, host_id: int) -> set:
    rows = await pool.fetch("SELECT v.name, v.version FROM host_sets s, unnest(s.ids) i"
                            " JOIN package_versions v ON v.id = i WHERE s.host_id = $1", host_id)
    return {(r["name"], r["version"]) for r in rows}
