"""Dashboard pages (server-rendered, jinja2 autoescaped) and the small /ui/ endpoints they poll.

Pages need a session (else a redirect to /login); /ui/ endpoints answer 401 JSON instead. Every
POST checks the session's CSRF token. Viewers see everything; stopping a task needs operator.
"""
from __future__ import annotations

import functools
import re
import secrets
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from marshmallow import ValidationError

from app import logs, reports_counter, security, users
from app.agents import requests as agent_requests, sessions as agent_sessions
from app.auth import Role, authenticate_api_key
from app.dashboard import chart, sessions
from app.dashboard.queries import fleet, tasks
from app.dashboard.setup import JINJA
from app.domain_errors import DomainError
from app.errors import json_response, unauthorized
from app.keys import POOL, REDIS, SETTINGS
from app.schemas.agents import RequestCreate
from app.tasks.dispatch import stop_task
from app.tasks.status import list_workers

SESSION = web.RequestKey("dashboard_session", sessions.Session)
PER_PAGE = 50
SECURITY_HEADERS = {
    # No inline script or style anywhere: the one script and stylesheet come from /static/.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _secure(request: web.Request) -> bool:
    return request.app[SETTINGS].base_url.startswith("https://")


_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


def _safe_next(value: str | None) -> str:
    """Only a local path may follow a login or a stop (no open redirect): no `//host`, no `/\\host`,
    and no whitespace or control characters (browsers drop those, turning `/\t/host` into `//host`)."""
    if not value or not _LOCAL_PATH.fullmatch(value):
        return "/"
    return value


def _int(value: str | None, default: int = 1, low: int = 1, high: int = 1_000_000) -> int:
    try:
        return max(low, min(high, int(value))) if value is not None else default
    except ValueError:
        return default


def render(template: str, request: web.Request, context: dict, status: int = 200) -> web.Response:
    sess = request.get(SESSION)
    context = {
        "user": sess.principal if sess else None,
        "csrf": sess.csrf if sess else "",
        "can_stop": bool(sess and sess.principal.has_role(Role.operator)),
        "path": request.path,
        "path_qs": request.path_qs,
        **context,
    }
    resp = aiohttp_jinja2.render_template(template, request, context, status=status, app_key=JINJA)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render("error.html", request, {"status": status, "message": message}, status=status)


def page(fn=None, *, role: Role = Role.viewer, ui: bool = False):
    """A dashboard handler: needs a live session (and `role`); POSTs need the CSRF token. A domain
    error it lets out is the error page, with the API's status and words (JSON for `ui` handlers)."""

    def decorate(handler):
        @functools.wraps(handler)
        async def wrapper(request: web.Request):
            sess = await sessions.load(request.app[POOL], request.cookies.get(sessions.COOKIE))
            if sess is None:
                if ui:
                    raise unauthorized("your dashboard session has expired; log in again")
                return redirect("/login?next=" + quote(request.path_qs, safe=""))
            request[SESSION] = sess
            if request.method == "POST":
                # The header first: a script's upload is checked before its body is read (and streamed).
                token = request.headers.get("X-CSRF-Token") or (await request.post()).get("csrf")
                if not sessions.same_token(token if isinstance(token, str) else None, sess.csrf):
                    return error_page(request, 403, "This form has expired or did not come from this dashboard (CSRF check failed). Reload the page and try again.")
            if not sess.principal.has_role(role):
                return error_page(request, 403, f"This needs the {role.value} role.")
            if ui:  # a fragment or a script's call: its errors are the API's JSON (error_middleware)
                return await handler(request)
            try:
                return await handler(request)
            except DomainError as exc:
                return error_page(request, exc.status, exc.message)

        return _audited(wrapper)

    return decorate(fn) if fn is not None else decorate


def _audited(wrapper):
    """Every POST of a session is an action, granted or refused: one audit line (user, route, target,
    status, request id) however it ends."""

    @functools.wraps(wrapper)
    async def audited(request: web.Request):
        if request.method != "POST":
            return await wrapper(request)
        status = 500
        try:
            resp = await wrapper(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:  # e.g. a body over the size limit
            status = exc.status
            raise
        finally:
            sess = request.get(SESSION)
            if sess is not None:
                logs.audit(request, sess.principal.username or "", logs.route_name(request), status,
                           await _target(request))

    return audited


async def _target(request: web.Request) -> str:
    """What an action was about: the ids and names in its path, else the `name` a plain form creates."""
    if request.match_info:
        return "/".join(request.match_info.values())[:200]
    if request.content_type != "application/x-www-form-urlencoded":  # never read (or re-read) a streamed body
        return ""
    try:
        name = (await request.post()).get("name")
    except (web.HTTPException, ValueError):  # an unreadable body: refused already, nothing to name
        return ""
    return name[:200] if isinstance(name, str) else ""


def set_session_cookie(request: web.Request, resp: web.StreamResponse, sid: str) -> None:
    """Give this browser the session `sid` (a login, or the fresh session that follows the user's own
    credential change, which ends all their older sessions)."""
    resp.set_cookie(
        sessions.COOKIE,
        sid,
        max_age=int(sessions.TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


# --- login / logout --------------------------------------------------------------------------------

async def login_form(
    request: web.Request, error: str | None = None, status: int = 200, next_url: str | None = None
) -> web.Response:
    token = secrets.token_urlsafe(24)
    resp = render(
        "login.html",
        request,
        {"error": error, "login_token": token, "next": _safe_next(next_url or request.query.get("next"))},
        status=status,
    )
    resp.set_cookie(
        sessions.LOGIN_COOKIE, token, max_age=3600, path="/login", httponly=True, samesite="Strict", secure=_secure(request)
    )
    return resp


async def login_page(request: web.Request) -> web.Response:
    sess = await sessions.load(request.app[POOL], request.cookies.get(sessions.COOKIE))
    if sess is not None:
        return redirect(_safe_next(request.query.get("next")))
    return await login_form(request)


async def login_submit(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    form = await request.post()
    next_url = _safe_next(str(form.get("next") or "/"))
    # Login CSRF: the form's token must match the cookie set with the form (double submit).
    token = form.get("login_token")
    if not isinstance(token, str) or not sessions.same_token(request.cookies.get(sessions.LOGIN_COOKIE), token):
        return await login_form(request, "Your login form expired. Please try again.", 403, next_url)
    # The same failed-auth brake as the API: a login form is a key and password guessing surface too.
    throttle = request.app.get(security.THROTTLE)
    address = security.client_address(request)
    wait = throttle.retry_after(address) if throttle else 0
    if wait:
        resp = await login_form(request, f"Too many failed logins. Try again in {wait} s.", 429, next_url)
        resp.headers["Retry-After"] = str(wait)
        return resp
    api_key = str(form.get("api_key") or "").strip()
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    user_id = None
    if api_key:
        who = await authenticate_api_key(pool, api_key)
        user_id = who.user_id if who else None
    elif username and password:
        row = await users.check_password(pool, username[:64], password[:1024])
        user_id = row["id"] if row else None
    if user_id is None:
        if throttle:
            throttle.failed(address)
        return await login_form(request, "Invalid credentials.", 401, next_url)
    await sessions.delete(pool, request.cookies.get(sessions.COOKIE))  # a new login replaces this browser's old session
    sid = await sessions.create(pool, user_id, request.headers.get("User-Agent"))
    resp = redirect(next_url)
    set_session_cookie(request, resp, sid)
    resp.del_cookie(sessions.LOGIN_COOKIE, path="/login")
    return resp


@page
async def logout(request: web.Request) -> web.Response:
    await sessions.delete(request.app[POOL], request[SESSION].sid)
    resp = redirect("/login")
    resp.del_cookie(sessions.COOKIE, path="/")
    return resp


# --- overview ---------------------------------------------------------------------------------------

async def _overview_context(request: web.Request) -> dict:
    pool, settings = request.app[POOL], request.app[SETTINGS]
    return {
        "queue": await tasks.queue_summary(pool, request.app[REDIS], settings),
        "workers": await list_workers(pool, settings.task_stale_seconds),
        "active": await tasks.list_tasks(pool, "active", per_page=10),
        "failed": await tasks.list_tasks(pool, "failed", per_page=5),
        "chart": await chart.build(pool, request.app[REDIS], request.app.get(reports_counter.COUNTER),
                                   request.query.get("span", "hour")),
        "fleet": await fleet.summary(pool),
    }


@page
async def overview(request: web.Request) -> web.Response:
    return render("overview.html", request, await _overview_context(request))


@page(ui=True)
async def ui_overview(request: web.Request) -> web.Response:
    ctx = await _overview_context(request)
    return _fragment(request, "overview_live.html", ctx, counts=ctx["queue"]["total"])


# --- tasks ------------------------------------------------------------------------------------------

async def _tasks_context(request: web.Request) -> dict:
    tab = request.query.get("tab", "active")
    tab = tab if tab in tasks.TABS else "active"
    q = request.query.get("q", "")[:200]
    page_no = _int(request.query.get("page"))
    return {
        "tab": tab,
        "tabs": list(tasks.TABS),
        "q": q,
        "tasks": await tasks.list_tasks(request.app[POOL], tab, q, page_no, PER_PAGE),
    }


@page
async def tasks_page(request: web.Request) -> web.Response:
    return render("tasks.html", request, await _tasks_context(request))


@page(ui=True)
async def ui_tasks(request: web.Request) -> web.Response:
    ctx = await _tasks_context(request)
    return _fragment(request, "tasks_table.html", ctx, rows=len(ctx["tasks"].rows))


@page
async def task_page(request: web.Request) -> web.Response:
    task = await tasks.get_task(request.app[POOL], _int(request.match_info["id"], 0, 0, 2**62))
    if task is None:
        return error_page(request, 404, f"Task #{request.match_info['id']} does not exist.")
    return render("task.html", request, {"task": task})


@page(ui=True)
async def ui_task(request: web.Request) -> web.Response:
    task = await tasks.get_task(request.app[POOL], _int(request.match_info["id"], 0, 0, 2**62))
    if task is None:
        return json_response({"html": "<p class=\"alert\">This task no longer exists.</p>"}, status=404)
    # final: the page stops polling once the task has ended.
    return _fragment(request, "task_detail.html", {"task": task}, status=task["status"],
                     final=task["status"] not in ("queued", "running"))


@page(role=Role.operator)
async def task_stop(request: web.Request) -> web.Response:
    task_id = _int(request.match_info["id"], 0, 0, 2**62)
    # The same domain function as POST /api/v2/task/<id>/stop (queued: stopped and its arq job
    # removed; running: stop_requested, honoured at the task's next check).
    await stop_task(request.app[POOL], request.app[REDIS], request.app[SETTINGS].queue_name, task_id)
    form = await request.post()
    return redirect(_safe_next(str(form.get("next") or "/tasks")))


# --- fleet and hosts --------------------------------------------------------------------------------

# A host's status, in reading order; any other column of `hosts` follows under its own name.
HOST_FIELDS = [
    ("os", "OS"), ("os_version", "OS version"), ("os_family", "OS family"), ("kernel", "Kernel"), ("arch", "Arch"),
    ("type", "Virtualization"), ("cpu", "CPU"), ("ram", "RAM"), ("network", "Network"), ("profile", "Profile"),
    ("env", "Environment"), ("agent_status", "Agent"), ("agent_version", "Agent version"),
    ("reboot_required", "Reboot required"), ("boot_time", "Booted"), ("available_count", "Pending updates"),
    ("last_seen_at", "Last seen"), ("inventory_at", "Inventory applied"), ("available_at", "Updates applied"),
    ("agent_status_at", "Agent status since"), ("registered_at", "Registered"),
]


def host_fields(doc: dict) -> list[tuple[str, str, object]]:
    known = dict(HOST_FIELDS)
    out = [(k, label, doc[k]) for k, label in HOST_FIELDS if k in doc]
    out += [(k, k.replace("_", " "), v) for k, v in doc.items() if k not in known and k not in ("id", "hostname", "ip")]
    return out


@page
async def host_page(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    host_id = _int(request.match_info["id"], 0, 0, 2**62)
    host = await fleet.get_host(pool, host_id)
    if host is None:
        return error_page(request, 404, f"Host #{request.match_info['id']} does not exist.")
    q = request.query.get("q", "")[:200]
    doc = dict(host["doc"])
    return render(
        "host.html",
        request,
        {
            "host": host,
            "fields": host_fields(doc),
            "q": q,
            "inventory": await fleet.inventory(pool, host_id, q, _int(request.query.get("page")), PER_PAGE),
            "updates": await fleet.updates(pool, host_id),
            "history": await fleet.history(pool, host_id, _int(request.query.get("hpage")), PER_PAGE),
            "events": await fleet.events(pool, host_id, _int(request.query.get("epage")), PER_PAGE),
            **await _requests_context(request, host_id),
        },
    )


# --- requests to a host's agent ----------------------------------------------------------------------

REQUESTS_PER_PAGE = 10
# The buttons of the host page: button value -> request name (updates: all packages, or those listed).
REQUEST_BUTTONS = {"general-infos": "request-general-infos", "packages-infos": "request-packages-infos",
                   "update": "request-all-packages-update", "profile": "update-profile"}
UPDATE_OPTIONS = ("dry-run", "ignore-exclusions", "full-upgrade", "keep-config-files")


async def _requests_context(request: web.Request, host_id: int) -> dict:
    pool = request.app[POOL]
    page = _int(request.query.get("rpage"))
    rows, total = await agent_requests.for_host(pool, host_id, page, REQUESTS_PER_PAGE)
    return {"requests": rows, "requests_page": page, "requests_more": page * REQUESTS_PER_PAGE < total,
            "connected_since": await agent_sessions.connected_since(pool, host_id), "host_id": host_id}


@page(ui=True)
async def ui_host_requests(request: web.Request) -> web.Response:
    host_id = _int(request.match_info["id"], 0, 0, 2**62)
    try:
        context = await _requests_context(request, host_id)
    except DomainError:
        return json_response({"html": "<p class=\"alert\">This host no longer exists.</p>", "final": True}, status=404)
    return _fragment(request, "host_requests.html", context)


def request_from_form(form) -> dict | None:
    """The request a host or fleet page's buttons ask for, loaded by the API's schema (as POST
    /api/v2/host/<id>/requests reads it: ValidationError when bad); None for an unknown button."""
    name = REQUEST_BUTTONS.get(str(form.get("request", "")))
    if name is None:
        return None
    body: dict = {"request": name}
    if name == "request-all-packages-update":
        body["update-params"] = {option: option in form for option in UPDATE_OPTIONS}
        packages = [p.strip() for p in str(form.get("packages", "")).replace(",", " ").split() if p.strip()]
        if packages:
            body.update(request="request-packages-update", packages=packages)
    return RequestCreate().load(body)


@page(role=Role.operator)
async def host_request_create(request: web.Request) -> web.Response:
    """The host page's request buttons: the same checks and domain call as POST /api/v2/host/<id>/requests."""
    host_id = _int(request.match_info["id"], 0, 0, 2**62)
    form = await request.post()
    try:
        loaded = request_from_form(form)
        if loaded is None:
            return error_page(request, 400, "Unknown request.")
        await agent_requests.create_one(request.app[POOL], host_id, loaded["request"], loaded["params"],
                                        request[SESSION].principal.username)
    except ValidationError as exc:
        return error_page(request, 400, f"Invalid request: {exc.messages}")
    return redirect(f"/hosts/{host_id}#requests")


@page(role=Role.operator)
async def host_request_cancel(request: web.Request) -> web.Response:
    host_id = _int(request.match_info["id"], 0, 0, 2**62)
    await agent_requests.cancel(request.app[POOL], _int(request.match_info["rid"], 0, 0, 2**62),
                                request[SESSION].principal.username)
    return redirect(f"/hosts/{host_id}#requests")


async def _one_request(request: web.Request) -> dict | None:
    try:
        row = await agent_requests.get(request.app[POOL], _int(request.match_info["rid"], 0, 0, 2**62))
    except DomainError:
        return None
    return row if str(row["Host_id"]) == request.match_info["id"] else None


@page
async def host_request_page(request: web.Request) -> web.Response:
    row = await _one_request(request)
    if row is None:
        return error_page(request, 404, f"Request #{request.match_info['rid']} does not exist.")
    return render("request.html", request, {"r": row})


@page(ui=True)
async def ui_host_request(request: web.Request) -> web.Response:
    row = await _one_request(request)
    if row is None:
        return json_response({"html": "<p class=\"alert\">This request no longer exists.</p>", "final": True},
                             status=404)
    return _fragment(request, "request_detail.html", {"r": row}, final=row["Status"] in agent_requests.FINISHED)


# --- helpers ----------------------------------------------------------------------------------------

def _fragment(request: web.Request, template: str, context: dict, **extra) -> web.Response:
    """A live-update answer: a server-rendered (escaped) HTML fragment inside JSON."""
    sess = request[SESSION]
    env = aiohttp_jinja2.get_env(request.app, app_key=JINJA)
    html = env.get_template(template).render(
        user=sess.principal, csrf=sess.csrf, can_stop=sess.principal.has_role(Role.operator),
        path=request.path, path_qs=request.path_qs, **context,
    )
    return json_response({"html": html, **extra}, headers={"Cache-Control": "no-store"})
