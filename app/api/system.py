"""Health and the built-in `status` route."""
from __future__ import annotations

import asyncio

from aiohttp import web

from app.errors import json_response, ok
from app.keys import POOL, REDIS


async def healthz(request: web.Request) -> web.Response:
    """No auth: whether PostgreSQL and Redis answer (200 if both do, 503 otherwise)."""
    checks = {}
    try:
        await asyncio.wait_for(request.app[POOL].fetchval("SELECT 1"), 2)
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), 2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return json_response({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


async def status(request: web.Request) -> web.Response:
    """Authenticated ping (Repomanager answers 201 with "return":"200"; Depot answers a plain 200)."""
    return ok(status="OK")
