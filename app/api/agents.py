"""Requests to hosts, sent to their agents over the agent channel (app/agents/).

Who may do what: make and cancel requests, an operator or admin key; read them, any user key (viewer
and up). Host credentials read nothing here.
"""
from __future__ import annotations

from aiohttp import web

from app import auth
from app.agents import requests
from app.api.inputs import load_body, load_page, path_id
from app.auth import Role
from app.db import MAX_ID
from app.errors import not_found, ok
from app.keys import POOL
from app.openapi import docs
from app.schemas.agents import MAX_HOSTS, RequestCreate, RequestRow, RequestsCreate, RequestsCreated, RequestsQuery

_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Not allowed"}
_OPERATOR = "You are not allowed to send requests to hosts (needs an operator or admin API key)"


def _host_id(request: web.Request) -> int:
    host_id = int(request.match_info["host_id"])
    if host_id > MAX_ID:
        raise not_found(f"Host #{host_id} does not exist.")
    return host_id


def _request_id(request: web.Request) -> int:
    rid = path_id(request, "request_id", "Invalid request ID.")
    if rid < 1:
        raise not_found(f"Request #{rid} does not exist.")
    return rid


@docs(summary="Send a request to a host's agent (operator or admin); sent at once if it is connected, else "
              "when it connects", path={"host_id": int}, request=RequestCreate, response=RequestRow, status=201,
      responses={**_ERRORS, 404: "Unknown host"})
async def create_request(request: web.Request) -> web.Response:
    who = auth.require_role(request, Role.operator, _OPERATOR)
    host_id = _host_id(request)
    body = await load_body(request, text_only=True)
    row = await requests.create_one(request.app[POOL], host_id, body["request"], body["params"], who.username)
    return ok(row, rc=201)


@docs(summary="Send the same request to many hosts: a list of ids, or the fleet filters (operator or admin)",
      request=RequestsCreate, response=RequestsCreated, status=202, responses=_ERRORS)
async def create_requests(request: web.Request) -> web.Response:
    who = auth.require_role(request, Role.operator, _OPERATOR)
    body = await load_body(request, text_only=True)
    created = len(await requests.create_many(request.app[POOL], body["request"], body["params"], who.username,
                                             host_ids=body["hosts"], filters=body["filter"], limit=MAX_HOSTS))
    return ok({"Created": created}, message=[f"{created} request(s) created."], rc=202)


@docs(summary="A host's requests, newest first (paginated; without logs)", path={"host_id": int},
      query=RequestsQuery, response=RequestRow, many=True, responses={**_ERRORS, 404: "Unknown host"})
async def host_requests(request: web.Request) -> web.Response:
    auth.require_user(request)
    host_id = _host_id(request)
    query = load_page(request)
    rows, total = await requests.for_host(request.app[POOL], host_id, query["page"], query["per_page"])
    return ok(rows, pagination={"page": query["page"], "per_page": query["per_page"], "total": total})


@docs(summary="One request: status, info, the agent's summary and log", path={"request_id": int},
      response=RequestRow, responses={**_ERRORS, 404: "Unknown request"})
async def get_request(request: web.Request) -> web.Response:
    auth.require_user(request)
    return ok(await requests.get(request.app[POOL], _request_id(request)))


@docs(summary="Cancel a request not sent yet (operator or admin)", path={"request_id": int}, response=RequestRow,
      responses={**_ERRORS, 404: "Unknown request", 409: "Already sent"})
async def cancel_request(request: web.Request) -> web.Response:
    who = auth.require_role(request, Role.operator, _OPERATOR)
    return ok(await requests.cancel(request.app[POOL], _request_id(request), who.username),
              message=["Request canceled."])
