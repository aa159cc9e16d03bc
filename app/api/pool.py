"""/api/v2/pool/gc: queue a garbage collection of the package pool (app/repos/gc.py, task kind pool_gc)."""
from __future__ import annotations

from aiohttp import web

from app.api.inputs import load_body
from app.auth import Role, require_role
from app.errors import accepted
from app.keys import POOL, REDIS
from app.openapi import docs
from app.repos.gc import pool_gc_target
from app.tasks import dispatch
from app.schemas.pool import PoolGcRequest


@docs(summary="Queue a pool garbage collection: package files no snapshot references any more", status=202,
      request=PoolGcRequest,
      responses={400: "Invalid dry_run value", 401: "No or bad credentials", 403: "Role too low"})
async def collect(request: web.Request) -> web.Response:
    """202 with `task-id`. One collection runs at a time; requests made while one is queued join it."""
    who = require_role(request, Role.operator, "You are not allowed to collect the package pool")
    dry_run = (await load_body(request, allow_empty=True))["dry_run"]
    ref = await dispatch.enqueue(request.app[POOL], request.app[REDIS], "pool_gc", pool_gc_target(dry_run),
                              {"dry_run": dry_run}, requested_by=who.username)
    return accepted(ref, "Pool garbage collection started")
