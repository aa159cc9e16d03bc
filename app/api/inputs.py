"""What a handler reads from its request: the body and the query through the schemas its @docs declares
(so the OpenAPI description and the validation are one thing), ids from the path, and PHP-style booleans.

Handlers call these where their checks belong, so the order of refusals stays the handler's own (some
endpoints check their input before the caller's role, as the reference does, others after).
"""
from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import ValidationError

from app.errors import bad_request, read_json, read_json_text, validation_error
from app.keys import SETTINGS
from app.openapi import loader
from app.schemas.common import php_bool


async def load_body(request: web.Request, *, allow_empty: bool = False, text_only: bool = False) -> dict:
    """The JSON body, loaded by the handler's @docs(request=...) schema. `text_only` refuses NUL characters
    (for values stored as PostgreSQL text); `allow_empty` reads an empty body as {}."""
    read = read_json_text if text_only else read_json
    return check_body(request, await read(request, allow_empty=allow_empty))


def check_body(request: web.Request, data: Any) -> dict:
    """Load a body already read (for a handler that answers some refusals before its schema does)."""
    return _load(request, "request", data)


def load_query(request: web.Request) -> dict:
    """The query string, loaded by the handler's @docs(query=...) schema."""
    return _load(request, "query", dict(request.query))


def _load(request: web.Request, part: str, data: Any) -> dict:
    schema = loader(request.match_info.route.handler, part)
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise validation_error(exc.messages, bare=getattr(schema, "bare_errors", False))


def load_page(request: web.Request, *, everything_by_default: bool = False) -> dict:
    """The query (see load_query) with `page` and `per_page` checked against the server's limit and
    filled in: page 1 of 100 rows (or fewer if the limit is lower) when not given; or, with
    `everything_by_default`, both None (no paging) when the client gives neither (the reference's
    unpaginated host listings)."""
    query = load_query(request)
    page, per_page = query.get("page"), query.get("per_page")
    limit = request.app[SETTINGS].max_per_page
    if per_page is not None and per_page > limit:
        raise bad_request(f"per_page must be at most {limit}")
    if not (everything_by_default and page is None and per_page is None):
        page, per_page = page or 1, per_page or min(100, limit)
    query.update(page=page, per_page=per_page)
    return query


def path_id(request: web.Request, key: str, invalid: str) -> int:
    """A numeric id from the path; `invalid` is the message for anything else."""
    raw = request.match_info.get(key, "")
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(invalid)
    return int(raw)


def parse_bool(value: Any, error: str) -> bool:
    """A PHP-style boolean (see schemas.common.php_bool); `error` is the message for anything else."""
    flag = php_bool(value)
    if flag is None:
        raise bad_request(error)
    return flag
