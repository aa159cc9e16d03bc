"""Dashboard forms: a posted form is read through the API's own marshmallow schema, so a form and the
matching API call accept and refuse the same input; refusals are the one domain-error family."""
from __future__ import annotations

from aiohttp import web
from marshmallow import Schema, ValidationError

from app.dashboard import sessions
from app.dashboard.views import SESSION
from app.domain_errors import Invalid
from app.keys import POOL


async def fields(request: web.Request, *names: str) -> dict:
    """The named text fields the form holds (absent ones left out). NUL cannot be stored in PostgreSQL
    text, so a field holding one is refused here, as the API's text-only bodies are."""
    form = await request.post()
    out = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, str):
            if "\x00" in value:
                raise Invalid(f"{name}: must not contain NUL characters")
            out[name] = value
    return out


def load(schema: Schema, data: dict) -> dict:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise Invalid(explain(exc.messages)) from None


def explain(messages) -> str:
    """marshmallow's {field: [messages]} as one sentence a person reads."""
    if isinstance(messages, dict):
        parts = [f"{k}: {explain(v)}" if k != "_schema" else explain(v) for k, v in messages.items()]
        return "; ".join(parts)
    if isinstance(messages, list):
        return " ".join(explain(m) for m in messages)
    return str(messages)


async def renew_session(request: web.Request) -> str:
    """A fresh session for this browser after the user changed their own credentials (which ends every
    session they had, this one too). The page rendered next carries its CSRF token; the caller puts the
    returned id in the response's cookie (views.set_session_cookie)."""
    principal = request[SESSION].principal
    sid = await sessions.create(request.app[POOL], principal.user_id, request.headers.get("User-Agent"))
    request[SESSION] = sessions.Session(sid, principal)
    return sid
