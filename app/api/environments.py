"""/api/v2/environment/...: list and create environments, point one at a snapshot."""
from __future__ import annotations

from aiohttp import web

from app.api.inputs import load_body
from app.auth import Role, require_role, require_user
from app.errors import accepted, ok
from app.keys import POOL, REDIS
from app.openapi import docs
from app.repos import model
from app.repos.rebuild import request_point
from app.schemas.environments import EnvironmentCreate, PointRequest

_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Role too low"}


@docs(summary="Every environment", responses=_ERRORS)
async def list_environments(request: web.Request) -> web.Response:
    require_user(request)
    return ok(await model.list_environments(request.app[POOL]))


@docs(summary="Create an environment (operator or admin)", request=EnvironmentCreate, status=201,
      responses={**_ERRORS, 409: "Environment exists"})
async def create_environment(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to create environments")
    body = await load_body(request)
    return ok(await model.create_environment(request.app[POOL], body.get("name"), body["description"]), rc=201)


@docs(summary="Point an environment at a snapshot of a repository (operator): a task, 202 with its id",
      request=PointRequest, status=202, responses={**_ERRORS, 404: "Unknown environment or snapshot"})
async def point(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    body = await load_body(request, allow_empty=True)
    who = require_role(request, Role.operator, "You are not allowed to point an environment to a snapshot")
    ref = await request_point(request.app[POOL], request.app[REDIS], env, body["snapshot"], requested_by=who.username)
    return accepted(ref, "Environment point started")
