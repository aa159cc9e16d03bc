"""Host (agent) endpoints and the /hosts/ fleet family.

Who may do what:
- register a host: an operator or admin API key; re-registering an existing hostname: admin only;
- unregister: the host itself (Host credentials), or an operator/admin key with {"hostname": ...};
- status and reports: the host itself;
- /host/<id>/...: the host itself, or any user key (viewer and up);
- /hosts/...: user keys only (viewer and up); credentials are never returned.
"""
from __future__ import annotations

from aiohttp import web

from app import auth, reports_counter
from app.api.inputs import check_body, load_body, load_page
from app.auth import Role
from app.db import MAX_ID
from app.errors import bad_request, forbidden, not_found, ok, read_json_text
from app.hosts import queries, registry, reports
from app.keys import POOL, SETTINGS
from app.openapi import docs
from app.resources import INTAKE
from app.schemas.hosts import (
    AvailableReport,
    EventsReport,
    HostRow,
    InstalledReport,
    PackageSearchQuery,
    PageQuery,
    RegisterRequest,
    RegisterResult,
    StatusRequest,
    UnregisterRequest,
)

_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Not allowed"}
_HOST_PATH = {"host_id": int}

# --- registration --------------------------------------------------------------------------------


@docs(summary="Register a host (operator or admin key; an existing hostname: admin only)", request=RegisterRequest,
      response=RegisterResult, status=201, responses={**_ERRORS, 409: "Hostname already registered"})
async def register(request: web.Request) -> web.Response:
    who = auth.require_role(
        request, Role.operator, "You are not allowed to register hosts (needs an operator or admin API key)"
    )
    data = await read_json_text(request)
    if data.get("hostname") in (None, "") or data.get("ip") in (None, ""):
        raise bad_request("You must provide IP address and hostname")  # the reference's message
    body = check_body(request, data)
    result = await registry.register(
        request.app[POOL], body["hostname"], body["ip"], may_reregister=who.has_role(Role.admin)
    )
    message = ["Host successfully registered."]
    if result.reregistered:
        message.append("The host was already registered: it has new credentials and keeps its history.")
    return ok({"id": result.auth_id, "token": result.token}, message=message, rc=201, host_id=result.host_id)


@docs(summary="Unregister a host (itself with Host credentials, or an operator key with a hostname)",
      request=UnregisterRequest, responses={**_ERRORS, 404: "Unknown hostname"})
async def unregister(request: web.Request) -> web.Response:
    who = request[auth.PRINCIPAL]
    pool = request.app[POOL]
    if who.is_host:
        host_id = who.host_id
    else:
        auth.require_role(request, Role.operator, "You are not allowed to unregister hosts (needs an operator or admin API key)")
        data = await read_json_text(request, allow_empty=True)
        if not data.get("hostname"):
            raise bad_request(
                "To unregister a host, you must use either host authId+token authentication or Api key "
                "authentication with hostname specified."
            )
        body = check_body(request, data)
        host_id = await registry.host_id_by_name(pool, body["hostname"])
        if host_id is None:
            raise not_found("No Id has been found from this hostname")
    if not await registry.unregister(pool, host_id):
        raise not_found(f"Host #{host_id} does not exist.")
    return ok(message=["Host has been deleted."])


# --- agent reports -------------------------------------------------------------------------------


@docs(summary="The agent's general information (host credentials)", request=StatusRequest,
      responses={**_ERRORS, 409: "Hostname taken by another host"})
async def put_status(request: web.Request) -> web.Response:
    who = auth.require_host(request)
    values = await load_body(request, text_only=True)
    messages = await registry.update_status(request.app[INTAKE].statuses, who.host_id, values)
    reports_counter.record(request.app, "status")
    return ok(message=messages)


@docs(summary="Full installed-package inventory (list of objects, or the \"name|version,...\" string)",
      request=InstalledReport, responses={**_ERRORS, 413: "Body too large"})
async def put_installed(request: web.Request) -> web.Response:
    return await _put_report(request, reports.INSTALLED, "Installed packages updated successfully.")


@docs(summary="Available updates (list of objects, or the string form; \"none\" = none)", request=AvailableReport,
      responses={**_ERRORS, 413: "Body too large"})
async def put_available(request: web.Request) -> web.Response:
    return await _put_report(request, reports.AVAILABLE, "Available packages updated successfully.")


async def _put_report(request: web.Request, kind: str, message: str) -> web.Response:
    """The hot path: the intake checks and stores the report (hosts/intake.py, Intake.take_report)."""
    who = auth.require_host(request)
    raw = await request.read()  # too large: error_middleware's 413, with the limit
    taken = await request.app[INTAKE].take_report(who, kind, raw, lambda: read_json_text(request))
    reports_counter.record(request.app, kind)
    return ok(message=[message], packages=taken.count, changed=taken.changed, **{"task-id": taken.task_id})


@docs(summary="apt/dnf history events (the whole history; each event stored once)", request=EventsReport,
      responses=_ERRORS)
async def put_events(request: web.Request) -> web.Response:
    who = auth.require_host(request)
    raw = await request.read()
    added = await request.app[INTAKE].take_events(who, raw, lambda: read_json_text(request))
    reports_counter.record(request.app, "event")
    return ok(message=["Package events history updated successfully."], added=added)


# --- reads ---------------------------------------------------------------------------------------


def _page(request: web.Request) -> queries.Page:
    query = load_page(request, everything_by_default=True)
    return queries.Page(query["page"], query["per_page"])


def _paged(items, total: int, page: queries.Page) -> web.Response:
    if not page.paginated:
        return ok(items)
    return ok(items, pagination={"page": page.page, "per_page": page.per_page, "total": total})


async def _readable_host(request: web.Request) -> int:
    who = request[auth.PRINCIPAL]
    host_id = int(request.match_info["host_id"])
    if host_id > MAX_ID:
        raise not_found(f"Host #{host_id} does not exist.")
    if who.is_host:
        if who.host_id != host_id:
            raise forbidden("Host credentials can only read their own host")
    else:
        auth.require_user(request)
        if not await queries.host_exists(request.app[POOL], host_id):
            raise not_found(f"Host #{host_id} does not exist.")
    return host_id


@docs(summary="Installed packages of a host", path=_HOST_PATH, query=PageQuery, responses={**_ERRORS, 404: "Unknown host"})
async def host_installed(request: web.Request) -> web.Response:
    host_id = await _readable_host(request)
    page = _page(request)
    return _paged(*await queries.installed(request.app[POOL], host_id, page), page)


@docs(summary="Available updates of a host", path=_HOST_PATH, query=PageQuery, responses={**_ERRORS, 404: "Unknown host"})
async def host_available(request: web.Request) -> web.Response:
    host_id = await _readable_host(request)
    page = _page(request)
    return _paged(*await queries.available(request.app[POOL], host_id, page), page)


@docs(summary="Inventory changes and package events of a host, newest first", path=_HOST_PATH, query=PageQuery,
      responses={**_ERRORS, 404: "Unknown host"})
async def host_history(request: web.Request) -> web.Response:
    host_id = await _readable_host(request)
    page = _page(request)
    return _paged(*await queries.history(request.app[POOL], host_id, page), page)


@docs(summary="One host (never its credentials)", path=_HOST_PATH, response=HostRow,
      responses={**_ERRORS, 404: "Unknown host"})
async def host_details(request: web.Request) -> web.Response:
    host_id = await _readable_host(request)
    host = await queries.get_host(request.app[POOL], host_id)
    if host is None:
        raise not_found(f"Host #{host_id} does not exist.")
    return ok(host)


@docs(summary="Every host (paginated with page/per_page; never credentials)", query=PageQuery, response=HostRow,
      many=True, responses=_ERRORS)
async def hosts_list(request: web.Request) -> web.Response:
    auth.require_user(request)
    page = _page(request)
    return _paged(*await queries.list_hosts(request.app[POOL], page), page)


# /hosts/<filter>/<value>: filter name -> message when the value is missing
FILTERS = {
    "os": "You must specify an OS",
    "kernel": "You must specify a kernel",
    "arch": "You must specify an architecture",
    "profile": "You must specify a profile",
    "environment": "You must specify an environment",
    "package": "You must specify a package",
    "agent": "You must specify connected or disconnected",
}


def hosts_filter(name: str):
    @docs(summary=f"Hosts by {name} (paginated)", query=PageQuery, response=HostRow, many=True, responses=_ERRORS)
    async def handler(request: web.Request) -> web.Response:
        auth.require_user(request)
        value = request.match_info.get("value", "").strip()
        if not value:
            raise bad_request(FILTERS[name])
        if "\x00" in value or "\x00" in request.match_info.get("version", ""):
            raise bad_request("Invalid value: NUL characters are not accepted")
        page = _page(request)
        args: tuple = (value,)
        filter_name = name
        if name == "os" and request.match_info.get("version"):
            filter_name, args = "os_version", (value, request.match_info["version"])
        return _paged(*await queries.list_hosts(request.app[POOL], page, filter_name, args), page)

    handler.__name__ = f"hosts_by_{name}"
    return handler


@docs(summary="Hosts whose agent is (or is not) connected to the agent channel (paginated)", query=PageQuery,
      response=HostRow, many=True, responses=_ERRORS)
async def hosts_by_agent(request: web.Request) -> web.Response:
    auth.require_user(request)
    value = request.match_info["value"]
    if value not in ("connected", "disconnected"):
        raise bad_request(FILTERS["agent"])
    page = _page(request)
    return _paged(*await queries.list_hosts(request.app[POOL], page, value), page)


@docs(summary="A filter without its value (always 400)", responses=_ERRORS)
async def hosts_missing_value(request: web.Request) -> web.Response:
    auth.require_user(request)
    raise bad_request(FILTERS[request.match_info["filter"]])


@docs(summary="Hosts with a package (prefix match; strict, strict-name, strict-version flags; * wildcard;"
              " older-than: hosts with an older version of it, name exact)",
      query=PackageSearchQuery, responses=_ERRORS)
async def hosts_package(request: web.Request) -> web.Response:
    auth.require_user(request)
    name = request.match_info["value"]
    version = request.match_info.get("version") or None
    if not queries.NAME_RE.match(name) or (version is not None and not queries.NAME_RE.match(version)):
        raise bad_request("Package name contains invalid characters")
    query = load_page(request, everything_by_default=True)
    page = queries.Page(query["page"], query["per_page"])
    older_than = query.get("older_than")
    if older_than is not None and (version is not None or "*" in name):
        raise bad_request("older-than takes an exact package name and no version")
    strict = "strict" in request.query
    items, total = await queries.hosts_with_package(
        request.app[POOL], name, version,
        strict_name=strict or "strict-name" in request.query,
        strict_version=strict or "strict-version" in request.query,
        page=page, older_than=older_than, max_bytes=request.app[SETTINGS].max_answer_bytes,
    )
    return _paged(items, total, page)


@docs(summary="Hosts with fewer available updates than the threshold", query=PageQuery, responses=_ERRORS)
async def hosts_uptodate(request: web.Request) -> web.Response:
    auth.require_user(request)
    page = _page(request)
    return _paged(*await queries.hosts_by_updates(request.app[POOL], False, page,
                                                  max_bytes=request.app[SETTINGS].max_answer_bytes), page)


@docs(summary="Hosts with at least the threshold of available updates", query=PageQuery, responses=_ERRORS)
async def hosts_outdated(request: web.Request) -> web.Response:
    auth.require_user(request)
    page = _page(request)
    return _paged(*await queries.hosts_by_updates(request.app[POOL], True, page,
                                                  max_bytes=request.app[SETTINGS].max_answer_bytes), page)
