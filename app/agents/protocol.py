"""The frames of the agent channel, as linupdate's reposerver agent speaks them (HTTP-free, no I/O).

Agent → server: `{"connection-type": "host"}`, then the credentials in reply to the server's
`{"request": "authenticate"}`, then `{"response-to-request": {...}}` for each request it runs.
Server → agent: `{"info": ...}` / `{"error": ...}` texts, requests `{"request-id": N, "request": name,
"data": {...}}` and the acknowledgement of every response.

The agent dies on anything it does not expect (a non-JSON frame, a non-string `info`, an integer
`request-id` in an acknowledgement, any close), and each restart re-uploads its whole inventory, so
every frame the server sends is built here, from these constants.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

AUTHENTICATE = {"request": "authenticate"}
AUTH_OK = {"info": "Authentication successful"}
# The agent is told no reason (its credentials are checked like the HTTP Host scheme's).
AUTH_ERROR = {"error": 'error while processing response to request "authenticate"'}
DISCONNECT = {"info": "You will now be disconnected from the server"}
ACK_INFO = "Request response received"

# Statuses an agent may report: `unknown` is its resend of a request whose result it lost.
RESPONSE_STATUSES = frozenset({"running", "completed", "failed", "unknown"})
# The ack names, after `status`, each of these fields that is set, in this order.
ACK_FIELDS = ("info", "error", "summary", "log")

# Request names, and the wire parameters of the two update requests with the agent's own defaults.
GENERAL_INFOS = "request-general-infos"
PACKAGES_INFOS = "request-packages-infos"
ALL_PACKAGES_UPDATE = "request-all-packages-update"
PACKAGES_UPDATE = "request-packages-update"
UPDATE_PROFILE = "update-profile"
REQUESTS = (GENERAL_INFOS, PACKAGES_INFOS, ALL_PACKAGES_UPDATE, PACKAGES_UPDATE, UPDATE_PROFILE)
UPDATES = (ALL_PACKAGES_UPDATE, PACKAGES_UPDATE)
UPDATE_PARAMS = {"dry-run": False, "ignore-exclusions": False, "full-upgrade": False, "keep-config-files": True}

# A request id Depot can have made (a bigint); any other id is acknowledged and applied to nothing.
_OUR_ID = re.compile(r"^[1-9][0-9]{0,17}$")


def encode(message: dict) -> str:
    return orjson.dumps(message).decode()


def decode(text: str) -> dict | None:
    """A frame as a JSON object, or None (not JSON, or another JSON value)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


# --- server → agent -------------------------------------------------------------------------------


def wire_data(name: str, params: dict) -> dict | None:
    """The `data` of a request as the agent reads it: update parameters as the strings "true"/"false"
    (it takes a JSON true for false, so a dry run would really update), packages as {"name": ...} only
    (it skips an item that names a version)."""
    if name not in UPDATES:
        return None
    given = params.get("update-params") or {}
    data: dict[str, Any] = {"update-params": {
        key: "true" if given.get(key, default) is True else "false" for key, default in UPDATE_PARAMS.items()
    }}
    if name == PACKAGES_UPDATE:
        data["packages"] = [{"name": str(package)} for package in params.get("packages") or []]
    return data


def request_frame(request_id: int, name: str, params: dict) -> dict:
    frame: dict[str, Any] = {"request-id": request_id, "request": name}
    data = wire_data(name, params)
    if data:
        frame["data"] = data
    return frame


def ack_frame(request_id: str, fields: list[str]) -> dict:
    return {"info": ACK_INFO, "request-id": request_id, "data": fields}


# --- agent → server -------------------------------------------------------------------------------


def php_empty(value: Any) -> bool:
    """PHP's empty(): the reference server's rule for which fields an acknowledgement names."""
    return value is None or value is False or value == "" or value == "0" or (
        not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0) or (
        isinstance(value, (list, dict)) and not value)


def connection_type(message: dict) -> Any:
    return message.get("connection-type")


def credentials(message: dict) -> tuple[str, str] | None:
    """The (auth id, token) of an authentication reply; ("", "") when it is one with unusable values;
    None when the frame is not an authentication reply."""
    reply = message.get("response-to-request")
    if not isinstance(reply, dict) or reply.get("request") != "authenticate":
        return None
    auth_id, token = reply.get("auth-id"), reply.get("token")
    if not (isinstance(auth_id, str) and isinstance(token, str)):
        return "", ""
    return auth_id, token


@dataclass(frozen=True)
class Response:
    """A response-to-request with a request id, its fields read as the server stores them."""

    echo: str                 # the id as the acknowledgement must carry it: always a JSON string
    request_id: int | None    # the id if it can be one of Depot's requests, else None
    status: str | None        # one of RESPONSE_STATUSES, else None (nothing to apply)
    summary: Any              # None when absent ("", null or missing)
    log: str | None
    error: str | None
    ack_fields: list[str]


def response(message: dict) -> Response | None:
    """The response-to-request of a frame, or None when it has none or no usable request id."""
    reply = message.get("response-to-request")
    if not isinstance(reply, dict) or "request-id" not in reply:
        return None
    raw_id = reply["request-id"]
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return None
    echo = str(raw_id)
    status = reply.get("status")
    log, error = reply.get("log"), reply.get("error")
    summary = reply.get("summary")
    return Response(
        echo=echo,
        request_id=int(echo) if _OUR_ID.match(echo) else None,
        status=status if isinstance(status, str) and status in RESPONSE_STATUSES else None,
        summary=None if summary in ("", None) else _without_nul(summary),
        log=_without_nul(log) if isinstance(log, str) and log else None,
        error=_without_nul(error) if isinstance(error, str) and error else None,
        ack_fields=["status"] + [f for f in ACK_FIELDS if not php_empty(reply.get(f))],
    )


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; an agent's log can."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def masked(text: str) -> str:
    """A frame fit for the log: the token of an authentication reply replaced."""
    return re.sub(r'("token"\s*:\s*)"[^"]*"', r'\1"***"', text)
