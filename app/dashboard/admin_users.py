"""The users page (/users, admins only): create a user, change a role, reset a password, delete. The
same schemas and domain functions as /api/v2/users, so the same rules and messages (the last admin
can be neither demoted nor deleted)."""
from __future__ import annotations

from aiohttp import web

from app import users
from app.auth import Role
from app.dashboard import forms
from app.dashboard.views import SESSION, page, redirect, render, set_session_cookie
from app.domain_errors import DomainError, Invalid, NotFound
from app.keys import POOL
from app.schemas.users import ROLES, UserCreateSchema, UserUpdateSchema

NOTICES = {"created": "User {} created.", "role": "User {} has a new role.", "password": "User {} has a new password.",
           "deleted": "User {} deleted."}


async def _page(request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
    done, name = request.query.get("done", ""), request.query.get("name", "")[:64]
    return render("users.html", request, {
        "users": await users.list_users(request.app[POOL]), "roles": ROLES, "error": error,
        "notice": NOTICES[done].format(name) if done in NOTICES else None,
    }, status=status)


def _done(what: str, name: str) -> web.Response:
    return redirect(f"/users?done={what}&name={name}")  # names are [A-Za-z0-9_.@-]: nothing to quote


@page(role=Role.admin)
async def users_page(request: web.Request) -> web.Response:
    return await _page(request)


@page(role=Role.admin)
async def user_create(request: web.Request) -> web.Response:
    try:
        form = {k: v for k, v in (await forms.fields(request, "name", "role", "password")).items() if v}
        body = forms.load(UserCreateSchema(), {**form, "api_key": False})
        if body["password"] is None:
            # No key is made here, so without a password the user could not log in anywhere.
            raise Invalid("password: give the new user a password (they make their API key on their account page)")
        await users.create_user(request.app[POOL], body["name"], body["role"], body["password"])
    except DomainError as exc:
        return await _page(request, exc.status, exc.message)
    return _done("created", body["name"])


@page(role=Role.admin)
async def user_role(request: web.Request) -> web.Response:
    try:
        name = _name(request)
        body = forms.load(UserUpdateSchema(), await forms.fields(request, "role"))
        await users.update_user(request.app[POOL], name, role=body.get("role"))
    except DomainError as exc:
        return await _page(request, exc.status, exc.message)
    # An admin who gave up their own admin role can no longer see this page.
    return redirect("/account") if _is_me(request, name) and body["role"] != Role.admin else _done("role", name)


@page(role=Role.admin)
async def user_password(request: web.Request) -> web.Response:
    try:
        name = _name(request)
        body = forms.load(UserUpdateSchema(), {"password": (await forms.fields(request, "password")).get("password", "")})
        await users.update_user(request.app[POOL], name, password=body["password"])
    except DomainError as exc:
        return await _page(request, exc.status, exc.message)
    resp = _done("password", name)
    if _is_me(request, name):  # a new password ends every session of the user: this browser keeps one
        set_session_cookie(request, resp, await forms.renew_session(request))
    return resp


@page(role=Role.admin)
async def user_delete(request: web.Request) -> web.Response:
    try:
        name = _name(request)
        await users.delete_user(request.app[POOL], name)
    except DomainError as exc:
        return await _page(request, exc.status, exc.message)
    return redirect("/login") if _is_me(request, name) else _done("deleted", name)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if "\x00" in name or len(name) > 64:  # cannot exist
        raise NotFound(f"User {name[:64]} does not exist")
    return name


def _is_me(request: web.Request, name: str) -> bool:
    return request[SESSION].principal.username == name
