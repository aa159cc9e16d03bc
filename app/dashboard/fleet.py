"""The fleet page: hosts found by every fleet filter at once, and requests to the hosts selected or matched.

The search is the API's (app/hosts/queries.search_hosts: package names and versions matched as
/api/v2/hosts/package/<name>/<version> does, one statement per page); the requests are made by the domain
function of POST /api/v2/hosts/requests (app/agents/requests.create_many), to the hosts ticked or to every
host the search matches.
"""
from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from app.agents import requests as agent_requests
from app.auth import Role
from app.dashboard.queries import Page, fleet
from app.dashboard.views import PER_PAGE, SESSION, _int, error_page, page, render, request_from_form
from app.hosts import queries
from app.keys import POOL
from app.schemas.agents import MAX_HOSTS

_TEXT = validate.Length(min=1, max=255)
_NAME = validate.Regexp(queries.NAME_RE, error="Only letters, digits and . + _ ~ : - * are allowed.")
YES_NO = {"yes": True, "no": False}
_FLAG = validate.OneOf(list(YES_NO), error="yes, no or empty")
# The fleet cards' links (/hosts?filter=outdated) predate the search form.
CARD_FILTERS = ("outdated", "reboot", "stale")
LINKED_REQUESTS = 100  # the result page links this many requests; the count is of all
PACKAGES_SHOWN = 20  # matching packages listed per host (a prefix like `lib` matches hundreds)


class FleetSearch(Schema):
    """The fleet page's query string (empty fields are absent)."""

    class Meta:
        unknown = EXCLUDE

    q = fields.String(validate=validate.Length(max=200), metadata={"description": "hostname or IP prefix"})
    package = fields.String(validate=_NAME)
    version = fields.String(validate=_NAME)
    exact_name = fields.String(data_key="exact-name")
    exact_version = fields.String(data_key="exact-version")
    os = fields.String(validate=_TEXT)
    os_version = fields.String(data_key="os-version", validate=_TEXT)
    kernel = fields.String(validate=_TEXT)
    arch = fields.String(validate=_TEXT)
    profile = fields.String(validate=_TEXT)
    env = fields.String(validate=_TEXT)
    outdated = fields.String(validate=_FLAG)
    reboot = fields.String(validate=_FLAG)
    connected = fields.String(validate=_FLAG)
    stale = fields.String(validate=_FLAG)

    @pre_load
    def _drop_empty(self, data, **kwargs):
        out = {k: v.strip() for k, v in data.items() if isinstance(v, str) and v.strip()}
        card = out.pop("filter", None)
        if card in CARD_FILTERS:
            out.setdefault(card, "yes")
        return out


def search_fields(params) -> dict:
    """The search fields of a query string or form (first value of each)."""
    names = {f.data_key or name for name, f in FleetSearch().fields.items()} | {"filter"}
    return {k: params.get(k) for k in names if isinstance(params.get(k), str)}


def selection(form: dict) -> dict:
    """A loaded FleetSearch as the filters of app/hosts/queries.selection_where."""
    filters = {k: form[k] for k in ("os", "os_version", "kernel", "arch", "profile", "env", "package", "version")
               if k in form}
    filters.update({k: YES_NO[form[k]] for k in ("outdated", "reboot", "connected", "stale") if k in form})
    if "q" in form:
        filters["name"] = form["q"]
    if "package" in form:
        filters.update(strict_name="exact_name" in form, strict_version="exact_version" in form)
    return filters


def _error_text(exc: ValidationError) -> str:
    messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
    return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in messages.items())


@page
async def hosts_page(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    raw = search_fields(request.query)
    page_no = _int(request.query.get("page"))
    try:
        form, error = FleetSearch().load(raw), None
    except ValidationError as exc:
        form, error = {}, _error_text(exc)
    rows, total = [], 0
    if error is None:
        rows, total = await queries.search_hosts(pool, selection(form), queries.Page(page_no, PER_PAGE), PACKAGES_SHOWN)
    shown = {k: v for k, v in FleetSearch().dump(form).items() if v}
    return render(
        "hosts.html",
        request,
        {"summary": await fleet.summary(pool), "hosts": Page(rows, page_no, PER_PAGE, page_no * PER_PAGE < total),
         "total": total, "form": {**raw, **shown}, "qs": urlencode(shown), "searched": bool(shown),
         "package_search": "package" in form, "packages_shown": PACKAGES_SHOWN, "error": error},
        status=400 if error else 200,
    )


@page(role=Role.operator)
async def fleet_requests(request: web.Request) -> web.Response:
    """The fleet page's request buttons: the request of POST /api/v2/hosts/requests, to the hosts ticked
    (`host` fields) or, with scope=matched, to every host matching the search fields sent along."""
    post = await request.post()
    try:
        loaded = request_from_form(post)
        if loaded is None:
            return error_page(request, 400, "Unknown request.")
        host_ids, filters = None, None
        if post.get("scope") == "matched":
            filters = selection(FleetSearch().load(search_fields(post)))
        else:
            raw = post.getall("host", [])
            if not raw:
                return error_page(request, 400, "No host selected: tick the hosts, or choose all the hosts matched.")
            if len(raw) > MAX_HOSTS or not all(isinstance(v, str) and v.isdigit() and len(v) < 19 for v in raw):
                return error_page(request, 400, "Invalid host selection.")
            host_ids = sorted({int(v) for v in raw})
    except ValidationError as exc:
        return error_page(request, 400, f"Invalid request: {_error_text(exc)}")
    created = await agent_requests.create_many(
        request.app[POOL], loaded["request"], loaded["params"], request[SESSION].principal.username,
        host_ids=host_ids, filters=filters, limit=MAX_HOSTS)
    return render("fleet_requests.html", request, {
        "request_name": loaded["request"], "params": loaded["params"], "created": created[:LINKED_REQUESTS],
        "count": len(created), "back": "/hosts?" + urlencode({k: v for k, v in search_fields(post).items() if v}),
    })
