"""Logging set-up: text by default, one JSON object per line with DEPOT_LOG_FORMAT=json."""
from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import secrets
import sys
import time

import orjson
from aiohttp import web


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "method", "route", "status", "duration_ms", "task_id", "kind", "user", "action",
                    "target"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# The id of the request being handled, so every log line written while handling it carries it.
CURRENT_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = CURRENT_REQUEST_ID.get()
            if request_id:
                record.request_id = request_id
        return True


def setup_logging(settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Access lines carry client data; our own request log (with request ids) replaces them.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# --- request ids and the one log line per request ---------------------------------------------

REQUEST_ID_HEADER = "X-Request-Id"
# Accept a caller's id only if it is short and plain (it goes into logs and a response header).
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
REQUEST_ID = web.RequestKey("request_id", str)
# Ids of this process's requests: a random prefix (told apart from other processes' and restarts') and a
# count. Unique, not secret: no random bytes drawn from the kernel per request.
_ID_PREFIX = secrets.token_hex(6)
_id_count = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = secrets.token_hex(6)


os.register_at_fork(after_in_child=_new_id_prefix)  # a forked child is another process
access_log = logging.getLogger("depot.access")
audit_log = logging.getLogger("depot.audit")


def audit(request: web.Request, user: str, action: str, status: int, target: str = "") -> None:
    """One line per operator action: who did what to which object, how it ended, and the request id
    (names only: never a form's values, which may hold passwords)."""
    request_id = request.get(REQUEST_ID, "")
    audit_log.info(
        "%s by %s%s: %s request_id=%s", action, user, f" on {target}" if target else "", status, request_id,
        extra={"request_id": request_id, "user": user, "action": action, "target": target, "status": status},
    )


def route_name(request: web.Request) -> str:
    """A bounded label: the route's registered name, else its canonical path, never a raw path with ids."""
    route = request.match_info.route
    name = getattr(route, "name", None)
    if name:
        return name.removesuffix("_slash")
    resource = getattr(route, "resource", None)
    if resource is not None:
        return resource.canonical
    return "unmatched"


@web.middleware
async def request_middleware(request: web.Request, handler):
    """Outermost middleware: request id in and out, one log line and the HTTP metrics per request."""
    from app import metrics

    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _VALID_REQUEST_ID.match(incoming) else f"{_ID_PREFIX}{next(_id_count):012x}"
    request[REQUEST_ID] = request_id
    token = CURRENT_REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:  # redirects and the like raised past the error middleware
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_name(request)
        metrics.observe_request(route, request.method, status, elapsed)
        # Method, route and status only: never the query string, headers or body (they may hold keys).
        access_log.info(
            "%s %s %s %.1fms request_id=%s",
            request.method,
            route,
            status,
            elapsed * 1000,
            request_id,
            extra={"request_id": request_id, "method": request.method, "route": route, "status": status,
                   "duration_ms": round(elapsed * 1000, 2)},
        )
        CURRENT_REQUEST_ID.reset(token)
    return response


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed ones too, carries the request id."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
