"""Hypothesis over every registered route: hostile bodies, paths, queries and headers.

Every route of create_app() is probed (the list is read from the router, so new endpoints are covered
without touching this file) with random JSON, wrong types, huge strings and lists, deep nesting,
invalid UTF-8, bad multipart and odd headers, under several identities. Checks: never a 5xx, API
answers are JSON, and a refused request (4xx) changes nothing in the database (digest before/after).
The schemathesis run against the OpenAPI description (tests/operators) checks documented shapes;
this one is about input no schema describes. Bounded: DEPOT_FUZZ_EXAMPLES per route, FUZZ_BUDGET total.
"""
from __future__ import annotations

import pytest

import asyncio
import json
import os
import re
import time
from dataclasses import replace

import aiohttp
import hypothesis
import orjson
from hypothesis import HealthCheck, strategies as st

from app.main import create_app
from tests.helpers import bearer
from tests.hostile.dbdigest import database_digest

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("DEPOT_FUZZ_EXAMPLES", "6"))
# A guard against a run that hangs, not a speed check: a loaded machine takes several times a quiet
# one's time, and every route must still get its examples.
FUZZ_BUDGET = float(os.environ.get("DEPOT_FUZZ_SECONDS", "300"))
_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")

# --- strategies ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "null", "true", "../../etc/passwd", "a|b,c|d", "%00", "\u202e",
                     "'; DROP TABLE hosts; --", "<script>", "\x00", "name|version", "x" * 300]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=20), inner, max_size=6)), max_leaves=25)
# Keys the API uses, so random values reach the validators instead of stopping at "missing field".
KNOWN_KEYS = ["hostname", "ip", "os", "os_version", "os_family", "kernel", "arch", "type", "profile", "env",
              "installed_packages", "available_packages", "events", "name", "version", "packages", "gpgSign",
              "id", "token", "description", "source", "snapshot", "environment", "date", "params", "schedule",
              "Package_exclude", "Service_restart", "repos", "dist", "section", "releasever", "overwrite"]
known_objects = st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, min_size=1, max_size=8)


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


raw_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),  # mostly invalid UTF-8
    st.just(b'{"hostname": "\xff\xfe\xfa"}'),
    st.just(b'{"a":' * 5000 + b"1" + b"}" * 5000),
    st.builds(_nest, st.sampled_from([100, 2000, 100_000])),
    st.just(orjson.dumps({"hostname": "h" * 1_000_000, "ip": "1" * 100_000})),
    st.just(orjson.dumps({"installed_packages": [{"name": "p", "version": "1"}] * 50_000})),
    st.just(orjson.dumps({"installed_packages": "a|1," * 100_000})),
    st.just(b'{"ip": "10.0.0.1", "hostname": "x", "hostname": "y"}'),
    st.just(b"\xef\xbb\xbf{}"),
    st.just(b"NaN"), st.just(b"1e999999"), st.just(b"[" + b"1," * 200_000 + b"1]"),
)
BAD_MULTIPART = [
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.deb\"\r\n\r\nabc"),
    ("multipart/form-data", b"--\r\n\r\n"),
    ("multipart/form-data; boundary=" + "b" * 300, b"--x\r\n"),
    ("multipart/form-data; boundary=z", b"--z\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../x.deb\"\r\n\r\n!<arch>\n\r\n--z--\r\n"),
    ("multipart/form-data; boundary=z", b"--z\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/etc/passwd\"\r\n\r\n\x00\x01\r\n--z--\r\n"),
    ("multipart/mixed; boundary=z", b"--z\r\nContent-Type: text/plain\r\n\r\nhi\r\n--z--\r\n"),
]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "application/xml",
                 "application/json; charset=latin-1", "", "*/*", "application/json; charset=utf-16"]
odd_headers = st.fixed_dictionaries({}, optional={
    "X-Forwarded-For": st.sampled_from(["1.2.3.4", "::1, evil", "x" * 500]),
    "Accept": st.sampled_from(["*/*", "text/html", "application/xml", "", "a" * 200]),
    "Accept-Encoding": st.sampled_from(["gzip", "br", "identity;q=0", "x-unknown"]),
    "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "bogus"]),
    "Origin": st.sampled_from(["https://evil.example", "null"]),
    "X-Request-Id": st.sampled_from(["abc", "\u00e9t\u00e9", "x" * 1000]),
    "Range": st.sampled_from(["bytes=0-1", "bytes=999999999-", "bytes=-1,-2,-3"]),
    "If-Modified-Since": st.sampled_from(["yesterday", "Thu, 01 Jan 1970 00:00:00 GMT"]),
})
path_values = st.one_of(
    st.integers(min_value=-5, max_value=5).map(str), st.just("1"), st.just("2"), st.just("99999999999999999999999"),
    st.just("0"), st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="/?#%"),
                          min_size=1, max_size=20),
    st.sampled_from(["..", "%2e%2e", "a%2Fb", "%00", "%ff", "null", "x" * 2000]),
)
queries = st.dictionaries(
    st.sampled_from(["page", "per_page", "limit", "offset", "status", "name", "version", "new-format", "q", "sort"]),
    st.one_of(st.sampled_from(["-1", "0", "1", "999999999999", "abc", "", "%00", "x" * 500]), st.text(max_size=10)),
    max_size=3,
)


def _dumps(value) -> bytes:
    # json, not orjson: integers past 64 bits; lone surrogates pass through as invalid UTF-8.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def requests_for(draw, method: str, template: str, identities: dict):
    path = template
    for name, _ in _PARAM.findall(template):
        value = draw(path_values)
        path = re.sub(r"\{" + name + r"(?::[^}]*)?\}", lambda _m: value, path, count=1)
    kind = draw(st.sampled_from(["json", "known", "raw", "multipart", "none"]))
    headers = dict(draw(odd_headers))
    body = None
    if kind == "json":
        body = _dumps(draw(json_values))
    elif kind == "known":
        body = _dumps(draw(known_objects))
    elif kind == "raw":
        body = draw(raw_bodies)
    elif kind == "multipart":
        ctype, body = draw(st.sampled_from(BAD_MULTIPART))
        headers["Content-Type"] = ctype
    if body is not None and "Content-Type" not in headers:
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        if ctype:
            headers["Content-Type"] = ctype
    who = draw(st.sampled_from(sorted(identities)))
    headers.update(identities[who])
    return method, path, draw(queries), headers, body, who


# --- the run -------------------------------------------------------------------------------------


def _routes(app) -> list[tuple[str, str]]:
    seen = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        template = route.resource.canonical
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"] if route.method == "*" else [route.method]
        for m in methods:
            seen.add((m, template))
    return sorted(seen)


async def _identities(client, pool, make_key) -> dict:
    admin = await make_key("admin", "fuzzadmin")
    viewer = await make_key("viewer", "fuzzviewer")
    ids = {"admin": bearer(admin), "viewer": bearer(viewer), "none": {}, "garbage": {"Authorization": "Bearer ak_x"}}
    # A registered host, if this build has host registration.
    resp = await client.post("/api/v2/host/registering", json={"hostname": "fuzz-host", "ip": "192.0.2.10"},
                             headers=bearer(admin))
    if resp.status == 201:
        creds = (await resp.json())["results"]
        ids["host"] = {"Authorization": f"Host {creds['id']}:{creds['token']}"}
    return ids


async def test_hostile_input_on_every_route_gives_no_5xx_and_no_write_when_refused(
    aiohttp_client, settings, pool, make_key
):
    app = create_app(replace(settings, max_body_bytes=4 * 1024 * 1024))
    client = await aiohttp_client(app)
    identities = await _identities(client, pool, make_key)
    routes = _routes(app)
    loop = asyncio.get_running_loop()
    stats = {"requests": 0, "refused": 0, "accepted": 0}
    failures: list[str] = []
    deadline = time.monotonic() + FUZZ_BUDGET

    async def one(method, path, query, headers, body) -> tuple[int, str, bytes, bool]:
        before = await database_digest(pool)
        try:
            resp = await client.request(method, path, params=query, headers=headers, data=body,
                                        skip_auto_headers=["Content-Type"])
            status, ctype, payload = resp.status, resp.content_type, await resp.read()
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            # The server may answer a big body early (401, 413) and close without reading the rest:
            # the client then sees a reset while still sending. Recorded as a refusal.
            status, ctype, payload = 0, "", repr(exc).encode()
        changed = before != await database_digest(pool)
        return status, ctype, payload, changed

    def probe_route(method: str, template: str) -> None:
        @hypothesis.given(req=requests_for(method, template, identities))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        def probe(req):
            if time.monotonic() > deadline:
                return
            method_, path, query, headers, body, who = req
            status, ctype, payload, changed = asyncio.run_coroutine_threadsafe(
                one(method_, path, query, headers, body), loop).result(timeout=60)
            stats["requests"] += 1
            where = f"{method_} {path[:80]} as {who} ({len(body or b'')} byte body, {headers.get('Content-Type')})"
            # aiohttp's own HTTP parser refuses an undecodable Content-Encoding (a plain-text 400, or it
            # drops the connection) before the application and its JSON errors ever see the request.
            protocol_level = "Content-Encoding" in headers and (status == 0 or (status == 400 and ctype == "text/plain"))
            if status == 0:
                if len(body or b"") < 64 * 1024 and not protocol_level:
                    failures.append(f"connection dropped on a small request: {where}: {payload[:200]!r}")
                stats["refused"] += 1
                if changed:
                    failures.append(f"dropped but the database changed: {where}")
                return
            if status >= 500:
                failures.append(f"{status} on {where}: {payload[:200]!r}")
            if path.startswith("/api/v2/") and ctype != "application/json" and status != 204 and not protocol_level:
                failures.append(f"non-JSON {status} ({ctype}) on {where}")
            if status >= 400:
                stats["refused"] += 1
                if changed:
                    failures.append(f"refused ({status}) but the database changed: {where}")
            else:
                stats["accepted"] += 1

        probe()

    def run_all():
        for method, template in routes:
            if time.monotonic() > deadline:
                failures.append(f"fuzz budget of {FUZZ_BUDGET}s exhausted before {method} {template}")
                return
            probe_route(method, template)

    t0 = time.monotonic()
    await asyncio.to_thread(run_all)
    print(f"\nfuzz: {stats['requests']} requests over {len(routes)} routes in {time.monotonic() - t0:.1f}s, "
          f"{stats['refused']} refused, {stats['accepted']} accepted, {len(failures)} failures")
    assert stats["requests"] >= len(routes) * min(EXAMPLES, 5)
    assert not failures, "\n".join(dict.fromkeys(failures))
