"""OpenAPI 3.1 description of every route registered in create_app(), generated with apispec.

Describe a handler cheaply with the decorator (the spec walks app.router, so nothing else is needed):

    @docs(summary="One task", response=TaskSchema, path={"id": int}, responses={404: "Unknown task"})
    async def get_task(request): ...

- `request`: marshmallow schema of the JSON body; `query`: schema of the query string;
- `response`: schema of `results` in the success envelope (`many=True` for a list); `status`: its code;
- `path`: types of path parameters (default string); `responses`: other codes → description;
- `envelope=False`: the response is `response` itself, not wrapped in {results, rc, return, note};
- `auth`: "user" (API key, the default), "host" (host credentials), "any" (either), or `public=True`.
The `request` and `query` schemas also validate: the handler loads its input with app/api/inputs.py
(`body = await load_body(request)`, `query = load_query(request)`), which finds them here.
Handlers without the decorator are described from their docstring with a generic JSON answer.
"""
from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from app.errors import json_response

API_VERSION = "2"
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_ERROR = {
    "type": "object",
    "required": ["message_error"],
    "properties": {
        "return": {"type": ["integer", "string"]},
        "rc": {"type": "integer"},
        "message_error": {"type": "array"},
    },
}
_ANY_JSON = {"description": "JSON answer", "content": {"application/json": {"schema": {}}}}
_ERROR_RESPONSE = {"description": "Error (JSON envelope)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def docs(summary: str | None = None, *, description: str | None = None, request: type[Schema] | Schema | None = None,
         query: type[Schema] | None = None, response: type[Schema] | Schema | None = None, many: bool = False,
         status: int = 200, path: dict[str, type] | None = None, responses: dict[int, str] | None = None,
         envelope: bool = True, tags: list[str] | None = None, public: bool = False, content_type: str | None = None,
         auth: str = "user"):
    if auth not in AUTH:
        raise ValueError(f"auth must be one of {', '.join(AUTH)}")

    def mark(fn):
        fn.__openapi__ = dict(summary=summary, description=description, request=request, query=query,
                              response=response, many=many, status=status, path=path or {}, responses=responses or {},
                              envelope=envelope, tags=tags, public=public, content_type=content_type, auth=auth)
        fn.__loaders__ = {part: schema() if isinstance(schema, type) else schema
                          for part, schema in (("request", request), ("query", query)) if schema is not None}
        return fn

    return mark


def loader(handler, part: str) -> Schema:
    """The schema instance that loads the handler's `request` body or `query` (declared with @docs)."""
    try:
        return handler.__loaders__[part]
    except (AttributeError, KeyError):
        raise LookupError(f"{handler.__name__} declares no {part} schema with @docs") from None


# Security requirements by `auth` (the host scheme is `Authorization: Host <auth id>:<token>`).
AUTH = {"user": [{"bearer": []}], "host": [{"host": []}], "any": [{"bearer": []}, {"host": []}]}


def _schema_name(schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[:-6] if name.endswith("Schema") and len(name) > 6 else name


def _ref(spec: APISpec, schema) -> dict:
    name = _schema_name(schema)
    if name not in spec.components.schemas:
        spec.components.schema(name, schema=schema)
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(spec: APISpec, handler, method: str, path: str, pattern: str = "") -> dict:
    meta = getattr(handler, "__openapi__", None) or {}
    doc = (handler.__doc__ or "").strip()
    first, _, rest = doc.partition("\n")
    op: dict[str, Any] = {
        "summary": meta.get("summary") or first or handler.__name__.replace("_", " "),
        "operationId": f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}",
    }
    described = meta.get("description") or (doc if meta.get("summary") else rest.strip())
    if described:
        op["description"] = " ".join(described.split())
    op["tags"] = meta.get("tags") or [_tag(path)]
    params = []
    for name in _PARAM.findall(path):
        # Declared type first, else the route's own regex: {host_id:\d+} is an integer.
        typ = (meta.get("path") or {}).get(name) or (int if f"(?P<{name}>\\d+)" in pattern else str)
        params.append({"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 1} if typ is int else {"type": "string", "minLength": 1}})
    if meta.get("query") is not None:
        params.append({"in": "query", "schema": meta["query"]})
    if params:
        op["parameters"] = params
    if meta.get("request") is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(spec, meta["request"])}}}
    responses: dict[str, Any] = {}
    status = str(meta.get("status", 200))
    if meta.get("response") is not None:
        body = _ref(spec, meta["response"])
        if meta.get("many"):
            body = {"type": "array", "items": body}
        if meta.get("envelope", True):
            body = {"allOf": [{"$ref": "#/components/schemas/Envelope"},
                              {"type": "object", "required": ["results"], "properties": {"results": body}}]}
        responses[status] = {"description": "Success", "content": {"application/json": {"schema": body}}}
    elif meta.get("content_type"):
        responses[status] = {"description": "Success", "content": {meta["content_type"]: {"schema": {"type": "string"}}}}
    else:
        responses[status] = dict(_ANY_JSON, description="Success")
    for code, text in (meta.get("responses") or {}).items():
        responses[str(code)] = dict(_ERROR_RESPONSE, description=text)
    responses.setdefault("default", _ERROR_RESPONSE)
    op["responses"] = responses
    if meta.get("public") or not path.startswith("/api/") or path == "/api/v2/openapi.json":
        op["security"] = []
    elif meta.get("auth", "user") != "user":
        op["security"] = AUTH[meta["auth"]]
    return op


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and p not in ("api", "v2")]
    return parts[0] if parts else "service"


# The API surface the spec describes; dashboard pages (HTML behind a session cookie) are not part of it.
API_PREFIXES = ("/api/", "/healthz", "/metrics", "/repo/")


def is_api_route(route) -> bool:
    resource = route.resource
    return (
        resource is not None
        and route.method != "HEAD"
        and not isinstance(resource, web.StaticResource)
        and resource.canonical.startswith(API_PREFIXES)
    )


def build_spec(app: web.Application) -> dict:
    spec = APISpec(
        title="Depot API",
        version=API_VERSION,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Repomanager-compatible HTTP API v2, plus Depot's extensions."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "API key (ak_...) of a Depot user"})
    spec.components.security_scheme("host", {"type": "apiKey", "in": "header", "name": "Authorization",
                                             "description": "Host credentials: `Host <auth id>:<token>`"})
    spec.components.schema("Error", _ERROR)
    spec.components.schema("Envelope", {
        "type": "object",
        "required": ["rc", "return"],
        "properties": {"rc": {"type": "integer"}, "return": {"type": "integer"}, "note": {"type": "string"},
                       "message": {"type": "array", "items": {"type": "string"}}},
    })
    paths: dict[str, dict[str, dict]] = {}
    registered = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    for route in app.router.routes():
        if not is_api_route(route):
            continue
        path = route.resource.canonical
        if path.endswith("/") and len(path) > 1 and path.rstrip("/") in registered:
            continue  # the trailing-slash twin of a documented path
        methods = ["get", "post"] if route.method == "*" else [route.method.lower()]
        for method in methods:
            pattern = getattr(route.resource.get_info().get("pattern"), "pattern", "")
            paths.setdefault(path, {})[method] = _operation(spec, route.handler, method, path, pattern)
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    out = spec.to_dict()
    out["security"] = [{"bearer": []}]
    return out


STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    ".m{font-weight:bold}code{font-size:13px}"
)
# The page's only resource is its inline style, allowed by hash (no script, nothing loaded from elsewhere).
DOCS_CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    + "'; frame-ancestors 'none'"
)


def render_html(spec: dict) -> str:
    """A self-contained reference page (no scripts, no CDN): one table row per operation."""
    esc = html.escape
    schemas = spec.get("components", {}).get("schemas", {})
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = ", ".join(
                f"{p.get('name', 'query')} ({p.get('in')})" for p in op.get("parameters", [])
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            ref = body.get("$ref", "").rsplit("/", 1)[-1]
            codes = ", ".join(k for k in op.get("responses", {}))
            auth = {0: "public", 1: "API key"}.get(len(op.get("security", [1])), "API key or host")
            if op.get("security") == AUTH["host"]:
                auth = "host"
            rows.append(
                f"<tr><td class=m>{esc(method.upper())}</td><td><code>{esc(path)}</code></td>"
                f"<td>{esc(op.get('summary', ''))}</td><td>{esc(params)}</td>"
                f"<td>{f'<a href=#schema-{esc(ref)}>{esc(ref)}</a>' if ref else ''}</td>"
                f"<td>{esc(codes)}</td><td>{auth}</td></tr>"
            )
    schema_blocks = []
    for name, body in schemas.items():
        props = body.get("properties", {})
        items = "".join(
            f"<tr><td><code>{esc(k)}</code></td><td>{esc(_type_of(v))}</td></tr>" for k, v in props.items()
        )
        schema_blocks.append(f"<h3 id=schema-{esc(name)}>{esc(name)}</h3><table>{items}</table>")
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Depot API reference</title><style>"
        + STYLE + "</style></head><body>"
        f"<h1>{esc(spec['info']['title'])} v{esc(spec['info']['version'])}</h1>"
        f"<p>{esc(spec['info'].get('description', ''))} Machine-readable: "
        "<a href=/api/v2/openapi.json>/api/v2/openapi.json</a> (OpenAPI 3.1).</p>"
        "<table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Parameters</th><th>Body</th>"
        "<th>Responses</th><th>Auth</th></tr>" + "".join(rows) + "</table><h2>Schemas</h2>"
        + "".join(schema_blocks) + "</body></html>"
    )


def _type_of(v: dict) -> str:
    if "$ref" in v:
        return v["$ref"].rsplit("/", 1)[-1]
    t = v.get("type", "any")
    if t == "array":
        return f"array of {_type_of(v.get('items', {}))}"
    return "/".join(t) if isinstance(t, list) else str(t)


async def openapi_json(request: web.Request) -> web.Response:
    """OpenAPI 3.1 description of this server's API (public)."""
    return json_response(build_spec(request.app))


async def docs_page(request: web.Request) -> web.Response:
    """Human-readable API reference, rendered on the server from the OpenAPI description."""
    return web.Response(text=render_html(build_spec(request.app)), content_type="text/html",
                        headers={"Content-Security-Policy": DOCS_CSP})


docs(summary="OpenAPI 3.1 description of the API", public=True, envelope=False)(openapi_json)
docs(summary="API reference page (HTML)", public=True, content_type="text/html")(docs_page)
