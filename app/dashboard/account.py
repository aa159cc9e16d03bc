"""The user space (/account): any logged-in user makes a new API key (shown once; the older one stops
working at once, as `depot apikey create` and POST /api/v2/users/<name>/apikey) and changes their own
password. Both end the user's other dashboard sessions; this browser gets a fresh one."""
from __future__ import annotations

from aiohttp import web

from app import security, users
from app.dashboard import forms
from app.dashboard.views import SESSION, page, redirect, render, set_session_cookie
from app.domain_errors import Denied, DomainError, Invalid
from app.keys import POOL
from app.schemas.users import UserUpdateSchema

NOTICES = {"password": "Your password was changed. Your other dashboard sessions were logged out."}
WRONG_PASSWORD = "Your current password is wrong: nothing was changed."


async def _page(request: web.Request, status: int = 200, **context) -> web.Response:
    me = await users.get_user(request.app[POOL], request[SESSION].principal.username)
    notice = NOTICES.get(request.query.get("done", ""))
    return render("account.html", request, {"me": me, "notice": notice, **context}, status=status)


@page
async def account_page(request: web.Request) -> web.Response:
    return await _page(request)


@page
async def new_api_key(request: web.Request) -> web.Response:
    key = await users.create_api_key(request.app[POOL], request[SESSION].principal.username)
    sid = await forms.renew_session(request)
    # Rendered here rather than redirected to: the key exists only in this answer (never stored, never
    # in a URL), and the page's no-store header keeps it out of the browser's cache.
    resp = await _page(request, new_key=key)
    set_session_cookie(request, resp, sid)
    return resp


@page
async def change_password(request: web.Request) -> web.Response:
    me = request[SESSION].principal
    try:
        form = await forms.fields(request, "current", "password", "confirm")
        await _check_current(request, me.username, form.get("current", ""))
        new = forms.load(UserUpdateSchema(), {"password": form.get("password", "")})["password"]
        if new != form.get("confirm"):
            raise Invalid("The new password and its confirmation differ: nothing was changed.")
        await users.set_password(request.app[POOL], me.username, new)
    except DomainError as exc:
        return await _page(request, exc.status, error=exc.message)
    sid = await forms.renew_session(request)
    resp = redirect("/account?done=password")
    set_session_cookie(request, resp, sid)
    return resp


async def _check_current(request: web.Request, username: str, current: str) -> None:
    """The current password, when the user has one (a user who only ever logged in with a key sets a
    first password with the session alone, which can already make a key). Wrong guesses count against
    the same failed-login brake as the login form."""
    row = await users.get_user(request.app[POOL], username)
    if row is None or not row["has_password"]:
        return
    throttle = request.app.get(security.THROTTLE)
    address = security.client_address(request)
    wait = throttle.retry_after(address) if throttle else 0
    if wait:
        raise DomainError(f"Too many failed attempts. Try again in {wait} s.", status=429)
    if await users.check_password(request.app[POOL], username, current[:1024]) is None:
        if throttle:
            throttle.failed(address)
        raise Denied(WRONG_PASSWORD)
