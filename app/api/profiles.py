"""Profile endpoints. Reads: any credentials (host tokens included). Writes: operator and up; delete: admin."""
from __future__ import annotations

from aiohttp import web

from app import auth, profiles
from app.api.inputs import load_body
from app.auth import Role
from app.errors import not_found, ok
from app.keys import POOL, SETTINGS
from app.openapi import docs
from app.schemas.profiles import ProfileCreate, ProfileResult, ProfileUpdate

_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Not allowed", 404: "Unknown profile"}


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if "\x00" in name:  # cannot exist (and PostgreSQL text cannot hold it)
        raise not_found("Profile does not exist")
    return name


async def _get(request: web.Request) -> dict:
    return await profiles.get_profile(request.app[POOL], _name(request))


@docs(summary="Profile names", responses=_ERRORS)
async def list_profiles(request: web.Request) -> web.Response:
    return ok(await profiles.list_profiles(request.app[POOL]))


@docs(summary="Server settings for agents (URL from DEPOT_BASE_URL)", responses=_ERRORS)
async def server_settings(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    # The URL comes from DEPOT_BASE_URL, never from the request's Host header.
    return ok([{"Ip": settings.host, "Url": settings.base_url, "Package_type": "deb,rpm"}])


@docs(summary="One profile (a list whose item 0 holds the configuration)", response=ProfileResult, many=True,
      responses=_ERRORS)
async def get_profile(request: web.Request) -> web.Response:
    return ok([await _get(request)])


@docs(summary="Package exclusions of a profile", responses=_ERRORS)
async def get_excludes(request: web.Request) -> web.Response:
    profile = await _get(request)
    return ok({"Package_exclude": profile["Package_exclude"], "Package_exclude_major": profile["Package_exclude_major"]})


@docs(summary="Repositories of a profile (flat legacy list, or {repos, reposerver} with ?new-format)",
      responses=_ERRORS)
async def get_repos(request: web.Request) -> web.Response:
    profile = await _get(request)
    settings = request.app[SETTINGS]
    repos = await profiles.profile_repos(request.app[POOL], profile, settings.base_url)
    if "new-format" in request.query:
        return ok(profiles.new_format(repos, settings))
    return ok(profiles.legacy_format(repos, settings))


@docs(summary="Create a profile (operator or admin)", request=ProfileCreate, response=ProfileResult, many=True,
      status=201, responses={**_ERRORS, 409: "Profile exists"})
async def create_profile(request: web.Request) -> web.Response:
    auth.require_role(request, Role.operator, "You are not allowed to create profiles (needs an operator or admin API key)")
    body = await load_body(request, text_only=True)
    name = body.pop("name")
    profile = await profiles.create_profile(request.app[POOL], name, body)
    return ok([profile], message=[f"Profile {name} created."], rc=201)


@docs(summary="Edit a profile (operator or admin)", request=ProfileUpdate, response=ProfileResult, many=True,
      responses={**_ERRORS, 409: "New name taken"})
async def update_profile(request: web.Request) -> web.Response:
    auth.require_role(request, Role.operator, "You are not allowed to edit profiles (needs an operator or admin API key)")
    body = await load_body(request, text_only=True)
    name = _name(request)
    new_name = body.pop("name", None)
    profile = await profiles.update_profile(request.app[POOL], name, body, new_name)
    return ok([profile], message=[f"Profile {profile['Name']} updated."])


@docs(summary="Delete a profile (admin)", responses=_ERRORS)
async def delete_profile(request: web.Request) -> web.Response:
    auth.require_role(request, Role.admin, "You are not allowed to delete profiles (needs an admin API key)")
    name = _name(request)
    await profiles.delete_profile(request.app[POOL], name)
    return ok(message=[f"Profile {name} deleted."])
