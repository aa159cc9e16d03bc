"""What a handler reads from its request: the body and the query through the schemas its @docs declares
(so the OpenAPI description and the validation are one thing), ids from the path, and PHP-style booleans.

Handlers call these where their checks belong, so the order of refusals stays the handler's own (some
endpoints check their input before the caller's role, as the reference does, others after).
"""
from __future__ import annotations

import binascii
import zlib
from contextlib import contextmanager
from typing import Any, AsyncIterator

from aiohttp import BodyPartReader, hdrs, http_exceptions, web
from aiohttp.helpers import parse_mimetype
from marshmallow import ValidationError

from app.domain_errors import Invalid
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


# ---- multipart/form-data -------------------------------------------------------------------------
MALFORMED_MULTIPART = "Malformed multipart body"
# What aiohttp's reader raises on a malformed body, told apart by its message (anything else: the
# generic reason): the body ending early, a first line that is not the boundary, a bad boundary line.
_READER_ERRORS = (
    ("Reading after EOF", "the body ends before its closing boundary"),
    ("Could not find starting boundary", "it does not start with the boundary its Content-Type names"),
    ("Invalid boundary", "a boundary line is malformed"),
)


def _malformed(reason: str) -> Invalid:
    return Invalid(f"{MALFORMED_MULTIPART}: {reason}")


@contextmanager
def _reading():
    """Errors of aiohttp's multipart reader as Invalid (400); the body's own transport errors (cut short,
    undecodable Content-Encoding of the request) go on to the error middleware's answer."""
    try:
        yield
    except http_exceptions.PayloadEncodingError:
        raise
    except http_exceptions.LineTooLong:
        raise _malformed("a part's header line is too long") from None
    except http_exceptions.BadHttpMessage:
        raise _malformed("a part's headers are malformed") from None
    except RuntimeError as exc:
        # aiohttp: unknown Content-Encoding / Content-Transfer-Encoding of a part, a bad _charset_ part.
        if "encoding" in str(exc):
            raise _malformed("a part's Content-Encoding or Content-Transfer-Encoding is unknown") from None
        raise _malformed("the body could not be parsed") from None
    except (binascii.Error, zlib.error, LookupError, UnicodeError):
        raise _malformed("a part could not be decoded") from None
    except ValueError as exc:
        text = str(exc)
        reason = next((r for prefix, r in _READER_ERRORS if text.startswith(prefix)), "the body could not be parsed")
        raise _malformed(reason) from None


class FormPart:
    """One part of a multipart/form-data body (see form_parts); each read raises Invalid if it is malformed."""

    def __init__(self, part: BodyPartReader):
        self._part = part
        self.name: str | None = part.name
        self.filename: str | None = part.filename

    async def text(self) -> str:
        """A form field's value (decoded as its headers say; bad UTF-8 replaced)."""
        with _reading():
            data = await self._part.read(decode=True)
        return data.decode("utf-8", "replace")

    async def chunks(self, size: int = 1 << 20) -> AsyncIterator[bytes]:
        """A file's bytes as sent, streamed."""
        while True:
            with _reading():
                chunk = await self._part.read_chunk(size)
            if not chunk:
                return
            yield chunk

    async def release(self) -> None:
        """Skip the rest of this part."""
        with _reading():
            await self._part.release()


async def form_parts(request: web.Request) -> AsyncIterator[FormPart]:
    """The parts of a multipart body, in order, up to its closing boundary. A malformed body (no or a bad
    boundary, a part without a Content-Disposition naming it, headers or a part cut off, no closing
    boundary, a nested multipart part) raises Invalid, at the part where it shows, so a caller that keeps
    nothing until the loop ends stores nothing of a malformed body."""
    boundary = parse_mimetype(request.headers.get(hdrs.CONTENT_TYPE, "")).parameters.get("boundary")
    if boundary is None:
        raise _malformed("the Content-Type names no boundary")
    if not boundary:
        raise _malformed("the boundary is empty")
    if len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise _malformed("the boundary is longer than 70 characters")
    with _reading():
        reader = await request.multipart()
    while True:
        with _reading():
            part = await reader.next()
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise _malformed("a part is itself multipart (nested multipart bodies are not supported)")
        if part.name is None and part.filename is None:
            with _reading():  # a body cut short inside a part's headers ends here: say that instead
                await part.release()
            raise _malformed("a part has no Content-Disposition naming it")
        yield FormPart(part)
