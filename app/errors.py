"""The Repomanager-compatible envelope, and every error turned into JSON (never a 500 page)."""
from __future__ import annotations

import errno
import logging
from typing import Any

import asyncpg
import orjson
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestPayloadError

from app.domain_errors import DomainError
from app.keys import SETTINGS

log = logging.getLogger(__name__)

NOTE = "The 'return' key is deprecated and will be removed in a future major release (replaced by 'rc' key)"
JSON_TYPE = "application/json"


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type=JSON_TYPE,
        charset="utf-8",
        headers=headers,
    )


def ok(results: Any = None, *, message: list[str] | None = None, rc: int = 200, **extra) -> web.Response:
    """Success envelope: handler keys first, then rc, return (same integer) and note."""
    body: dict[str, Any] = {}
    if message is not None:
        body["message"] = list(message)
    if results is not None:
        body["results"] = results
    body.update(extra)
    body["rc"] = rc
    body["return"] = rc
    body["note"] = NOTE
    return json_response(body, status=rc)


def accepted(ref, message: str) -> web.Response:
    """202 for work handed to a task: the message, and the task's id under `task-id`."""
    return ok(message, rc=202, **{"task-id": ref.id})


class ApiError(DomainError):
    """A DomainError raised by the HTTP layer itself, with its status given and optional headers."""

    def __init__(self, status: int, message: Any, *, headers: dict | None = None, **extra):
        super().__init__(message, status=status, **extra)
        self.headers = headers

    def response(self) -> web.Response:
        return render(self)


def render(exc: DomainError) -> web.Response:
    """Any domain error as {"return": N, "rc": N, "message_error": [message]} plus its extra keys."""
    body = {"return": exc.status, "rc": exc.status, "message_error": [exc.message]}
    body.update(exc.extra)
    return json_response(body, status=exc.status, headers=getattr(exc, "headers", None))


def bad_request(message: Any, **extra) -> ApiError:
    return ApiError(400, message, **extra)


def unauthorized(reason: str) -> ApiError:
    return ApiError(401, f"Authentication error: {reason}")


def forbidden(message: str = "You are not allowed to perform this action", **extra) -> ApiError:
    return ApiError(403, message, **extra)


def not_found(message: str, **extra) -> ApiError:
    return ApiError(404, message, **extra)


def conflict(message: str, **extra) -> ApiError:
    return ApiError(409, message, **extra)


def too_large(message: str, **extra) -> ApiError:
    return ApiError(413, message, **extra)


def unavailable(message: str = "Service temporarily unavailable, please retry", retry_after: int = 5) -> ApiError:
    return ApiError(503, message, headers={"Retry-After": str(retry_after)})


# Errors that mean "the database is not answering right now": the client should retry.
DB_DOWN = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    # Class 08 (connection failures), 57 (shutdown, crash, statement timeout), 53 (disk full, memory).
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # asyncpg's "cannot switch to state …": a connection PostgreSQL dropped, found broken while the pool
    # resets it after a query that did succeed.
    asyncpg.exceptions._base.InternalClientError,
)

def _disk_full(exc: BaseException) -> bool:
    """Our storage (ENOSPC, EDQUOT) or PostgreSQL's (53100) is full: a 507, not a retry-soon 503."""
    return (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or isinstance(
        exc, asyncpg.exceptions.DiskFullError)


def _caused_by_db_down(exc: BaseException) -> bool:
    """A follow-up error of a lost connection, e.g. asyncpg's InternalClientError ("cannot switch to
    state …") raised while the pool resets a connection that PostgreSQL just dropped."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DB_DOWN + (TimeoutError,)):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


HTTP_MESSAGES = {
    404: "Invalid request",
    405: "Method not allowed",
    413: "Request body too large",
}


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except DomainError as exc:
        return render(exc)
    except (RequestPayloadError, http_exceptions.HttpProcessingError) as exc:
        # The body could not be read as sent (undecodable Content-Encoding, truncated chunked body).
        log.info("unreadable request body on %s %s: %s", request.method, request.path, type(exc).__name__)
        return bad_request("Invalid request body: it could not be read or decoded").response()
    except asyncpg.exceptions.DataError as exc:
        # A value the database cannot take (an id past 64 bits, a malformed date): the input is bad.
        log.info("invalid value on %s %s: %s", request.method, request.path, type(exc).__name__)
        return bad_request("Invalid request: a value is out of range or malformed").response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return too_large(
                HTTP_MESSAGES[413], limit=request.app[SETTINGS].max_body_bytes
            ).response()
        message = HTTP_MESSAGES.get(exc.status, exc.reason)
        return ApiError(exc.status, message, headers={k: v for k, v in exc.headers.items() if k == "Allow"}).response()
    except DB_DOWN as exc:
        if _disk_full(exc):
            log.error("disk full on %s %s: %s", request.method, request.path, type(exc).__name__)
            return ApiError(507, "Insufficient storage: the server has no space left; nothing was stored",
                            headers={"Retry-After": "60"}).response()
        log.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        return unavailable().response()
    except TimeoutError:
        log.warning("timeout on %s %s", request.method, request.path)
        return unavailable().response()
    except Exception as exc:
        if _caused_by_db_down(exc):
            log.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
            return unavailable().response()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return ApiError(500, "Internal server error").response()


async def read_json(request: web.Request, *, expect: type | None = dict, allow_empty: bool = False) -> Any:
    """Read the body as JSON whatever the Content-Type (the agent sends none, curl -d sends a form type)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(HTTP_MESSAGES[413], limit=request.app[SETTINGS].max_body_bytes)
    if not raw.strip():
        if allow_empty:
            return {} if expect is dict else None
        raise bad_request("Invalid JSON data: the request body is empty")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Could not parse JSON data: {exc.args[0] if exc.args else 'Syntax error'}")
    if expect is not None and not isinstance(data, expect):
        raise bad_request(f"Invalid JSON data: expected a JSON {'object' if expect is dict else expect.__name__}")
    return data


async def read_json_text(request: web.Request, **kwargs) -> dict:
    """read_json, and refuse NUL characters (PostgreSQL text and jsonb cannot hold them)."""
    data = await read_json(request, **kwargs)
    if b"\\u0000" in await request.read():
        raise bad_request("Invalid JSON data: NUL characters (\\u0000) are not accepted")
    return data


def validation_error(errors: dict, *, bare: bool = False) -> ApiError:
    """Turn marshmallow errors into a 400: the first message, after its field's name, with the details in
    `errors`; or, `bare`, the first message alone (a schema whose messages are the reference's texts)."""
    path, message = _first_error(errors)
    if bare:
        return bad_request(message)
    return bad_request(f"{path}: {message}" if path else message, errors=errors)


def _first_error(errors: Any, path: str = "") -> tuple[str, str]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(errors, list) and errors:
        if all(isinstance(e, str) for e in errors):
            return path, errors[0]
        return _first_error(errors[0], path)
    return path, "invalid" if path else "Invalid request"
