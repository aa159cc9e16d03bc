"""OpenAPI 3.1 description of every route, the rendered reference page, and schemathesis against the live app."""
from __future__ import annotations

import pytest

import asyncio
import os
import re
import time

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.tasks import dispatch
from app.openapi import is_api_route
from tests.helpers import bearer

# Bounded: a few examples per operation, the whole run well under a minute.
EXAMPLES = int(os.environ.get("DEPOT_SCHEMATHESIS_EXAMPLES", "10"))
BUDGET_SECONDS = 60
# 5xx found in code other teams own and reported to the lead: (path regex, why), shown but not failed on
# until fixed. Keep it short and specific; empty now (the hosts 500 on ids beyond bigint was fixed).
KNOWN_ISSUES: list[tuple[re.Pattern, str]] = []


async def test_spec_lists_every_route_and_is_public(client):
    resp = await client.get("/api/v2/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    app = client.server.app
    documented = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    for route in app.router.routes():
        if not is_api_route(route):
            continue
        path = route.resource.canonical
        path = path.rstrip("/") if path.rstrip("/") in spec["paths"] else path
        methods = ["get", "post"] if route.method == "*" else [route.method.lower()]
        for m in methods:
            assert (path, m) in documented, (path, m)
    task = spec["paths"]["/api/v2/task/{id}"]["get"]
    assert task["parameters"][0] == {"name": "id", "in": "path", "required": True,
                                     "schema": {"type": "integer", "minimum": 1}}
    assert "Task" in spec["components"]["schemas"] and "Raw_params" in spec["components"]["schemas"]["Task"]["properties"]
    sched = spec["paths"]["/api/v2/task/schedule"]["post"]
    assert sched["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ScheduleRequest"}
    assert "201" in sched["responses"]

    page = await client.get("/api/docs")
    html = await page.text()
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/api/v2/task/{id}/stop" in html and "<script" not in html and "http" not in html.split("</style>")[0]
    csp = page.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; style-src 'sha256-") and "unsafe" not in csp
    assert (await client.get("/api/v2/queues")).headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.slow
async def test_schemathesis_finds_no_5xx_and_no_broken_response(client, pool, redis, admin_key):
    # Some data so that listings and ids have something to show.
    async with pool.acquire() as conn:
        for n in range(3):
            await dispatch.create_task(conn, "op_fuzz", f"thing:{n}", {"n": n})
    spec = await (await client.get("/api/v2/openapi.json")).json()
    base_url = str(client.make_url("")).rstrip("/")
    headers = bearer(admin_key)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    session = requests.Session()

    def run() -> tuple[list[str], int]:
        calls = 0
        deadline = time.monotonic() + BUDGET_SECONDS
        operations = [r.ok() for r in schema.get_all_operations()]
        # Valid input must get documented answers; invalid input (negative mode) must never get a 5xx.
        for mode, mode_checks in ((GenerationMode.POSITIVE, checks), (GenerationMode.NEGATIVE, [not_a_server_error])):
            for operation in operations:
                if time.monotonic() > deadline:  # a slow machine tests fewer operations, it does not fail
                    print(f"schemathesis: time budget spent, stopped before {mode.value} {operation.label}")
                    return failures, calls
                calls += _probe(operation, mode, mode_checks)
        return failures, calls

    def _probe(operation, mode, mode_checks) -> int:
        calls = 0

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        def probe(case):
            nonlocal calls
            calls += 1
            try:
                case.call_and_validate(base_url=base_url, headers=headers, session=session, checks=mode_checks,
                                       timeout=10)
            except (Exception, FailureGroup) as exc:  # collect every finding, with the exact request
                known = next((why for rx, why in KNOWN_ISSUES if rx.match(case.formatted_path)), None)
                if known:
                    print(f"schemathesis: known issue ({known}): {case.method} {case.formatted_path}")
                    return
                found = [e for e in getattr(exc, "exceptions", [exc])]
                failures.append(f"[{mode.value}] {case.method} {case.formatted_path} query={case.query}"
                                f" body={case.body!r}: "
                                + "; ".join(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                            for e in found))

        try:
            probe()
        except hypothesis.errors.Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing to make invalid (no parameters, no body)
        return calls

    failures, calls = await asyncio.to_thread(run)
    print(f"schemathesis: {calls} calls over {len(spec['paths'])} paths")
    assert calls >= len(spec["paths"])
    assert failures == [], "\n".join(dict.fromkeys(failures))


async def test_host_id_beyond_bigint_is_not_a_500(client, admin_key):
    resp = await client.get("/api/v2/host/256216685315387375484928", headers=bearer(admin_key))
    assert resp.status == 404


def test_docs_decorator_describes_a_route_for_other_modules():
    from aiohttp import web
    from marshmallow import Schema, fields

    from app.openapi import build_spec, docs, render_html

    class ThingSchema(Schema):
        name = fields.String(required=True)

    @docs(summary="Report a thing", request=ThingSchema, response=ThingSchema, status=202, auth="host",
          responses={409: "Busy"})
    async def put_thing(request):
        return web.Response()

    app = web.Application()
    app.router.add_put(r"/api/v2/thing/{thing_id:\d+}", put_thing, name="thing")
    app.router.add_put(r"/api/v2/thing/{thing_id:\d+}/", put_thing, name="thing_slash")
    spec = build_spec(app)
    op = spec["paths"]["/api/v2/thing/{thing_id}"]["put"]
    assert list(spec["paths"]) == ["/api/v2/thing/{thing_id}"]  # the trailing-slash twin is not repeated
    assert op["summary"] == "Report a thing" and op["security"] == [{"host": []}]
    assert op["parameters"][0]["schema"] == {"type": "integer", "minimum": 1}
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}
    assert set(op["responses"]) == {"202", "409", "default"}
    assert spec["components"]["schemas"]["Thing"]["required"] == ["name"]
    assert ">host<" in render_html(spec)
