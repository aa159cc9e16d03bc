"""Profiles pages: everyone reads; operators create, edit and choose the repositories a profile hands
to its hosts; admins delete (the roles of /api/v2/profile). The API's schemas and domain functions, so
an edit also queues update-profile to the profile's connected hosts, as the API's does."""
from __future__ import annotations

from aiohttp import web

from app import profiles
from app.auth import Role
from app.dashboard import forms
from app.dashboard.queries import MISSING_SCHEMA, profiles as queries
from app.dashboard.views import SESSION, page, redirect, render
from app.domain_errors import DomainError, Invalid
from app.keys import POOL
from app.schemas.profiles import ProfileCreate, ProfileUpdate
from app.schemas.repos import REPOS_MESSAGE, ProfileRepos

FIELDS = ["name", *profiles.FIELDS]  # the form's inputs are named as the API's body keys
NOTICES = {"created": "Profile created.", "saved": "Profile saved; its connected hosts reload it.",
           "repos": "Repositories saved; the profile's connected hosts reload it.", "deleted": "Profile {} deleted."}


def _notice(request: web.Request) -> str | None:
    done = request.query.get("done", "")
    return NOTICES[done].format(request.query.get("name", "")[:64]) if done in NOTICES else None


async def _list(request: web.Request, status: int = 200, error: str | None = None, values: dict | None = None):
    return render("profiles.html", request, {
        "profiles": await queries.list_profiles(request.app[POOL]), "error": error, "values": values or {},
        "notice": _notice(request), **_may(request),
    }, status=status)


def _may(request: web.Request) -> dict:
    principal = request[SESSION].principal
    return {"can_edit": principal.has_role(Role.operator), "can_delete": principal.has_role(Role.admin)}


async def _one(request: web.Request, name: str, status: int = 200, error: str | None = None,
               values: dict | None = None) -> web.Response:
    pool = request.app[POOL]
    profile = await profiles.get_profile(pool, name)
    try:
        repos = await queries.repo_choices(pool, profile["Id"])
    except MISSING_SCHEMA:
        repos = None
    return render("profile.html", request, {
        "profile": profile, "repos": repos, "hosts": await queries.hosts_count(pool, name), "error": error,
        "values": values or {}, "notice": _notice(request), **_may(request),
    }, status=status)


async def _name(request: web.Request) -> str:
    name = await queries.name_of(request.app[POOL], int(request.match_info["id"]))
    if name is None:
        raise profiles.ProfileError(f"Profile #{request.match_info['id']} does not exist", status=404)
    return name


@page
async def profiles_page(request: web.Request) -> web.Response:
    return await _list(request)


@page
async def profile_page(request: web.Request) -> web.Response:
    return await _one(request, await _name(request))


@page(role=Role.operator)
async def profile_create(request: web.Request) -> web.Response:
    form = await forms.fields(request, *FIELDS)
    try:
        body = forms.load(ProfileCreate(), form)
        name = body.pop("name")
        profile = await profiles.create_profile(request.app[POOL], name, body)
    except DomainError as exc:
        return await _list(request, exc.status, exc.message, form)
    return redirect(f"/profiles/{profile['Id']}?done=created")


@page(role=Role.operator)
async def profile_update(request: web.Request) -> web.Response:
    name = await _name(request)
    form = await forms.fields(request, *FIELDS)
    try:
        body = forms.load(ProfileUpdate(), form)
        await profiles.update_profile(request.app[POOL], name, body, body.pop("name", None))
    except DomainError as exc:
        return await _one(request, name, exc.status, exc.message, form)
    return redirect(f"/profiles/{request.match_info['id']}?done=saved")


@page(role=Role.operator)
async def profile_repos(request: web.Request) -> web.Response:
    name = await _name(request)
    try:
        chosen = (await request.post()).getall("repo", [])
        if not all(isinstance(v, str) and v.isdigit() and len(v) <= 18 for v in chosen):
            raise Invalid(REPOS_MESSAGE)
        body = forms.load(ProfileRepos(), {"repos": [int(v) for v in chosen]})
        await profiles.set_repos(request.app[POOL], name, body["repos"])
    except DomainError as exc:
        return await _one(request, name, exc.status, exc.message)
    return redirect(f"/profiles/{request.match_info['id']}?done=repos")


@page(role=Role.admin)
async def profile_delete(request: web.Request) -> web.Response:
    name = await _name(request)
    await profiles.delete_profile(request.app[POOL], name)
    return redirect(f"/profiles?done=deleted&name={name}")
