"""/api/v2/environment/...: list and create environments, point one at a snapshot."""
from __future__ import annotations

from aiohttp import web

from app.tasks import dispatch
from app.api._repos_common import domain_errors
from app.auth import Role, require_role, require_user
from app.errors import ApiError, bad_request, ok, read_json
from app.repos import model
from app.keys import POOL, REDIS


async def list_environments(request: web.Request) -> web.Response:
    require_user(request)
    async with request.app[POOL].acquire() as conn:
        return ok(await model.list_environments(conn))


async def create_environment(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to create environments")
    body = await read_json(request)
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        raise bad_request("description must be a string of at most 200 characters")
    async with request.app[POOL].acquire() as conn:
        with domain_errors():
            env = await model.create_environment(conn, body.get("name"), description)
    return ok(env, rc=201)


async def point(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    body = await read_json(request, allow_empty=True)
    raw = body.get("snapshot")
    if raw in (None, "", 0, "0") or isinstance(raw, bool):
        raise bad_request("Snapshot Id is required")
    if not str(raw).isdigit() or len(str(raw)) > 18:
        raise bad_request(f"Invalid snapshot Id #{raw}")
    snap_id = int(raw)
    who = require_role(request, Role.operator, "You are not allowed to point an environment to a snapshot")
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        async with conn.transaction():
            if await conn.fetchval("SELECT 1 FROM environments WHERE name = $1", env) is None:
                raise ApiError(404, f"Environment {env} does not exist")
            row = await conn.fetchrow("SELECT repo_id FROM snapshots WHERE id = $1 AND status = 'active'", snap_id)
            if row is None:
                raise ApiError(404, f"Snapshot #{snap_id} does not exist")
            # The URL's environment is the one pointed (Repomanager always points prod).
            ref = await dispatch.create_task(conn, "env_point", f"env:{env}:repo:{row['repo_id']}",
                                          {"env": env, "snapshot": snap_id}, requested_by=who.username)
    await dispatch.dispatch(request.app[REDIS], ref)
    return ok("Environment point started", rc=202, **{"task-id": ref.id})
