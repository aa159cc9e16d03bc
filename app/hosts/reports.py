"""What agents send: the checks of installed/available reports (both wire forms) and of events.

The API side only checks cheaply; hosts/intake.py stores the body as received (hosts/bodies.py) and
the worker applies it (hosts/inventory.py). A ReportError is a 400 whose message the agent is shown.
"""
from __future__ import annotations

import datetime as dt
import re

import orjson
import xxhash

from app.domain_errors import Invalid

INSTALLED = "installed"
AVAILABLE = "available"
BODY_KEYS = {INSTALLED: "installed_packages", AVAILABLE: "available_packages"}
MAX_FIELD = 255


class ReportError(Invalid):
    """Bad report content; the message is shown to the client (400)."""


# The exact bytes linupdate's json.dumps() produces for a valid report, checked by one regex in C
# (no JSON parse, no Python loop over the items): ASCII strings without escapes or braces, names
# and versions of 1-255 characters (anything else, e.g. UTF-8 or another layout, takes the full
# path, which validates it). Without braces in strings, each item has one "{" and every "}, {" of
# such a body is a boundary between two items.
_STR = rb'"[^"\\{}\x00-\x1f\x80-\xff]{1,255}+"'
_ITEMS = {
    INSTALLED: rb'\{"name": ' + _STR + rb', "version": ' + _STR + rb'\}',
    AVAILABLE: rb'\{"name": ' + _STR + rb', "version": ' + _STR
    + rb', "repository": "[^"\\{}\x00-\x1f\x80-\xff]{0,1024}+", "security": (?:true|false)\}',
}
# One item of the agent's form without its braces (bodies.encode_ids checks the items a dictionary lacks).
_AGENT_ITEM = re.compile(rb'"name": ' + _STR + rb', "version": ' + _STR)
_FAST = {
    kind: re.compile(rb'\{"' + BODY_KEYS[kind].encode() + rb'": \[(?:' + item + rb'(?:, ' + item + rb')*+)?\]\}')
    for kind, item in _ITEMS.items()
}


def fast_count(kind: str, raw: bytes, max_items: int) -> int | None:
    """Item count of a report in the agent's exact form, all items valid; None: use the full check."""
    if not _FAST[kind].fullmatch(raw):
        return None
    count = raw.count(b"{") - 1  # braces cannot occur inside the strings: one per item and the body's own
    check_count(kind, count, max_items)
    return count


def is_agent_item(key: bytes) -> bool:
    """Whether `key` is an installed item in the agent's exact form, its braces left out."""
    return _AGENT_ITEM.fullmatch(key) is not None


def check_count(kind: str, count: int, max_items: int) -> None:
    """The limits of a report of `count` items (the agent is shown these texts). An empty installed list is
    refused: the full list is the truth, and an empty one would mark every package removed."""
    if count > max_items:
        raise ReportError(f"Too many packages: {count} (at most {max_items})")
    if kind == INSTALLED and count == 0:
        raise ReportError("Installed packages update has failed: the package list is empty")


# --- parsing -------------------------------------------------------------------------------------


def check_items(kind: str, value, max_items: int) -> int:
    """Validation of a report's list on the API side (the hot path). Returns the item count.

    One plain loop with type() checks: the fastest form for lists of thousands of items.
    """
    if isinstance(value, str):
        count = len(_parse_string_form(kind, value))
    elif isinstance(value, list):
        count = len(value)
        check_count(kind, count, max_items)  # before the loop over a list too long
        _check_list(kind, value)
    else:
        raise ReportError(f"{BODY_KEYS[kind]} must be a list of packages or a \"name|version,...\" string")
    check_count(kind, count, max_items)
    return count


def _check_list(kind: str, value: list) -> None:
    """Raise a ReportError naming the first bad item."""
    for i, item in enumerate(value):
        if type(item) is not dict:
            raise ReportError(f"Package #{i} must be an object with name and version")
        name = item.get("name")
        version = item.get("version")
        if type(name) is not str or not name or len(name) > MAX_FIELD:
            raise ReportError(f"Package #{i}: name must be a non-empty string of at most {MAX_FIELD} characters")
        if type(version) is not str or not version or len(version) > MAX_FIELD:
            raise ReportError(f"Package version is empty or invalid for package: {name}")
        if kind == AVAILABLE:
            repo = item.get("repository")
            if repo is not None and (type(repo) is not str or len(repo) > 1024):
                raise ReportError(f"Package #{i}: repository must be a string of at most 1024 characters")
            sec = item.get("security")
            if sec is not None and type(sec) is not bool and sec not in ("true", "false"):
                raise ReportError(f"Package #{i}: security must be a boolean")


def _parse_string_form(kind: str, value: str) -> list[tuple[str, str]]:
    """The late-2023 form: "name|version,name|version" (fields after the 2nd ignored); "none" = empty."""
    if value.strip() in ("", "none"):
        return []
    items = []
    for raw in value.split(","):
        if not raw.strip():
            continue
        parts = raw.split("|")
        name = parts[0].strip()
        version = parts[1].strip() if len(parts) > 1 else ""
        if not name:
            continue
        if len(name) > MAX_FIELD:
            raise ReportError(f"Package name too long: {name[:40]}...")
        if not version or len(version) > MAX_FIELD:
            raise ReportError(f"Package version is empty or invalid for package: {name}")
        items.append((name, version))
    return items


def stored_body(kind: str, value, body: bytes) -> bytes:
    """What the worker reads: the raw body for the list form; the string form turned into the list form."""
    if not isinstance(value, str):
        return body
    return orjson.dumps({BODY_KEYS[kind]: [{"name": n, "version": v} for n, v in _parse_string_form(kind, value)]})


def body_digest(body: bytes) -> bytes:
    # Of the body as received: equal for an agent's unchanged report, known before any check
    # (compared with the stored one first, such a body skips them: intake.Intake.take_report). It
    # tells a host's reports apart, and only the host chooses its bodies: no adversary to resist, so a
    # fast non-cryptographic hash (XXH3-128).
    return xxhash.xxh3_128_digest(body)


def body_value(data: dict, key: str):
    """The report's value under `key` (installed_packages, available_packages, events)."""
    if key not in data:
        raise Invalid("Invalid request", detail=f"the body needs the key {key!r}")
    return data[key]


# --- events --------------------------------------------------------------------------------------

EVENT_LISTS = ("installed", "dep_installed", "upgraded", "removed", "downgraded", "reinstalled", "purged")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIME_RE = re.compile(r"^\d{2}:\d{2}:\d{2}$")


def check_events(events, max_items: int) -> list[dict]:
    """Validate the events list; returns the normalised events (one JSON object each)."""
    try:
        return _normalised_events(events, max_items)
    except ReportError as exc:
        raise ReportError(f"Package events history update has failed: {exc}") from None


def _normalised_events(events, max_items: int) -> list[dict]:
    if not isinstance(events, list):
        raise ReportError("events must be a list")
    if len(events) > max_items:
        raise ReportError(f"Too many events: {len(events)} (at most {max_items})")
    out = []
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            raise ReportError(f"Event #{i} must be an object")
        norm = {}
        for key, pattern, required in (
            ("date_start", DATE_RE, True), ("time_start", TIME_RE, True),
            ("date_end", DATE_RE, False), ("time_end", TIME_RE, False),
        ):
            value = ev.get(key)
            if value is None or value == "":
                if required:
                    raise ReportError(f"Event #{i}: {key} is required")
                norm[key] = None
                continue
            if type(value) is not str or not pattern.match(value):
                raise ReportError(f"Event #{i}: invalid {key} {str(value)[:40]!r}")
            try:
                (dt.date if key.startswith("date") else dt.time).fromisoformat(value)
            except ValueError:
                raise ReportError(f"Event #{i}: invalid {key} {value!r}")
            norm[key] = value
        command = ev.get("command")
        if type(command) is not str or not command or len(command) > 8192:
            raise ReportError(f"Event #{i}: command must be a non-empty string")
        norm["command"] = command
        lists = {}
        for key in EVENT_LISTS:
            items = ev.get(key)
            if items is None:
                continue
            if type(items) is not list or len(items) > max_items:
                raise ReportError(f"Event #{i}: {key} must be a list of packages")
            for item in items:
                if (
                    type(item) is not dict or type(item.get("name")) is not str or not item["name"]
                    or type(item.get("version", "")) is not str
                ):
                    raise ReportError(f"Event #{i}: {key} items need a name and a version")
            lists[key] = [{"name": it["name"], "version": it.get("version", "")} for it in items]
        norm["packages"] = lists
        out.append(norm)
    return out
