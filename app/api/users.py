"""Users and API keys over HTTP (admin only). Keys are returned once, when made; digests never.

An admin cannot demote or delete the last admin (409); a new key replaces the user's older one at once.
"""
from __future__ import annotations

from aiohttp import web

from app import auth, users
from app.api.inputs import load_body
from app.auth import Role
from app.errors import not_found, ok
from app.keys import POOL
from app.openapi import docs
from app.schemas.users import ApiKeySchema, UserCreateSchema, UserSchema, UserUpdateSchema
from app.users import user_row

_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Not an admin", 404: "Unknown user"}


def _admin(request: web.Request) -> None:
    auth.require_role(request, Role.admin, "Managing users and API keys needs an admin API key")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if "\x00" in name or len(name) > 64:  # cannot exist
        raise not_found(f"User {name[:64]} does not exist")
    return name




async def _one(request: web.Request, name: str) -> dict:
    row = await users.get_user(request.app[POOL], name)
    if row is None:
        raise not_found(f"User {name} does not exist")
    return user_row(row)


@docs(summary="Users with their role and key dates (admin)", response=UserSchema, many=True,
      responses=_ERRORS)
async def list_users(request: web.Request) -> web.Response:
    _admin(request)
    return ok([user_row(r) for r in await users.list_users(request.app[POOL])])


@docs(summary="One user (admin)", response=UserSchema, responses=_ERRORS)
async def get_user(request: web.Request) -> web.Response:
    _admin(request)
    return ok(await _one(request, _name(request)))


@docs(summary="Create a user (admin); with api_key (default true) its first API key is returned once",
      request=UserCreateSchema, response=UserSchema, status=201, responses={**_ERRORS, 409: "User exists"})
async def create_user(request: web.Request) -> web.Response:
    _admin(request)
    body = await load_body(request, text_only=True)
    pool = request.app[POOL]
    await users.create_user(pool, body["name"], body["role"], body["password"])
    key = await users.create_api_key(pool, body["name"]) if body["api_key"] else None
    result = await _one(request, body["name"])
    if key:
        result["Api_key"] = key
    return ok(result, rc=201, message=[f"User {body['name']} created with role {body['role']}."])


@docs(summary="Change a user's role and/or dashboard password (admin; the last admin cannot be demoted)",
      request=UserUpdateSchema, response=UserSchema, responses={**_ERRORS, 409: "Last admin"})
async def update_user(request: web.Request) -> web.Response:
    _admin(request)
    name = _name(request)
    body = await load_body(request, text_only=True)
    await users.update_user(request.app[POOL], name, body.get("role"), body.get("password"))
    changed = [f"role {body['role']}"] if "role" in body else []
    changed += ["a new password"] if "password" in body else []
    return ok(await _one(request, name), message=[f"User {name} now has {' and '.join(changed)}."])


@docs(summary="Delete a user, their API key and sessions (admin; not the last admin)",
      responses={**_ERRORS, 409: "Last admin"})
async def delete_user(request: web.Request) -> web.Response:
    _admin(request)
    name = _name(request)
    await users.delete_user(request.app[POOL], name)
    return ok(message=[f"User {name} deleted."])


@docs(summary="Make a new API key for a user (admin): returned once, the older key stops working",
      response=ApiKeySchema, status=201, responses=_ERRORS)
async def create_api_key(request: web.Request) -> web.Response:
    _admin(request)
    name = _name(request)
    key = await users.create_api_key(request.app[POOL], name)
    return ok({"Name": name, "Api_key": key}, rc=201,
              message=[f"New API key for {name}, shown only this once (the previous one no longer works)."])
