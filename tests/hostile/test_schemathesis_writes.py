"""schemathesis, negative mode, over every operation of the OpenAPI description: invalid input never gets
a 5xx, and a refused request writes nothing (database digest before and after each call).

tests/operators/test_openapi.py checks documented shapes; tests/hostile/test_fuzz.py sends what no schema
describes; this one makes schemathesis' invalid cases prove the "no write when refused" rule.
"""
from __future__ import annotations

import pytest

import asyncio
import os
import time

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode

from tests.helpers import bearer
from tests.hostile.dbdigest import database_digest

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("DEPOT_SCHEMATHESIS_EXAMPLES", "6"))
BUDGET_SECONDS = float(os.environ.get("DEPOT_FUZZ_SECONDS", "60"))


async def test_invalid_requests_never_5xx_and_never_write(client, pool, admin_key):
    # Something to write over: a host, a profile, a repository with a snapshot.
    await client.post("/api/v2/host/registering", json={"hostname": "st-host", "ip": "192.0.2.7"},
                      headers=bearer(admin_key))
    await client.post("/api/v2/profile", json={"name": "st-profile"}, headers=bearer(admin_key))
    resp = await client.post("/api/v2/repo/", json={"name": "st", "type": "deb", "dist": "bookworm",
                                                    "section": "main"}, headers=bearer(admin_key))
    if resp.status == 201:
        repo = (await resp.json())["results"]["Id"]
        await client.post(f"/api/v2/repo/{repo}/snapshot", json={}, headers=bearer(admin_key))
    spec = await (await client.get("/api/v2/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    base_url = str(client.make_url("")).rstrip("/")
    loop = asyncio.get_running_loop()
    session = requests.Session()
    failures: list[str] = []
    stats = {"calls": 0, "refused": 0, "operations": 0}

    def digest():
        return asyncio.run_coroutine_threadsafe(database_digest(pool), loop).result(timeout=30)

    def probe_operation(operation) -> None:
        @hypothesis.given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        def probe(case):
            before = digest()
            try:
                resp = case.call(base_url=base_url, headers=bearer(admin_key), session=session, timeout=15)
            except requests.RequestException as exc:
                failures.append(f"{case.method} {case.formatted_path}: no answer ({type(exc).__name__})")
                return
            stats["calls"] += 1
            where = f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:120]!r}"
            if resp.status_code >= 500:
                failures.append(f"{resp.status_code} on {where}: {resp.text[:200]}")
            elif resp.status_code >= 400:
                stats["refused"] += 1
                if digest() != before:
                    failures.append(f"refused ({resp.status_code}) but the database changed: {where}")

        try:
            probe()
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing to make invalid (no parameters, no body)

    def run():
        deadline = time.monotonic() + BUDGET_SECONDS
        for result in schema.get_all_operations():
            operation = result.ok()
            if time.monotonic() > deadline:  # a slow machine tests fewer operations, it does not fail
                print(f"schemathesis: time budget spent before {operation.label}")
                return
            stats["operations"] += 1
            probe_operation(operation)

    t0 = time.monotonic()
    await asyncio.to_thread(run)
    print(f"\nschemathesis negative: {stats['calls']} calls over {stats['operations']} operations in "
          f"{time.monotonic() - t0:.1f}s, {stats['refused']} refused, none wrote, {len(failures)} failures")
    assert stats["calls"] >= stats["operations"] > 0
    assert failures == [], "\n".join(dict.fromkeys(failures))
