"""A source definition checked and put in its stored form: the reference's shape (name, type, url,
description, distributions | releasever, ...), its secrets taken out, its armored keys read.

One function for the three ways a definition arrives (a template import, Depot's POST and PUT), so
they accept exactly the same things.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.domain_errors import Invalid

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Distribution, component and release names: what an archive path segment may hold.
PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$")
# Fingerprints, and the long (16) or short (8) key ids templates also give under `fingerprint`.
FPR_RE = re.compile(r"^(?:[0-9A-F]{8}|[0-9A-F]{16}|[0-9A-F]{40}|[0-9A-F]{64})$")
SECRET_MARK = "<set>"          # shown in place of a secret that is stored
MAX_ITEMS = 200                # distributions, components, releasevers or keys in one definition


@dataclass
class Definition:
    type: str
    name: str
    definition: dict              # what listings show (no secrets)
    secrets: dict                 # TLS client key, basic-auth password
    armored: list[str] = field(default_factory=list)   # armored keys to import for this source


def _text(value: Any, what: str, *, required: bool = False, limit: int = 4096) -> str:
    if value is None or value == "":
        if required:
            raise Invalid(f"{what} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"{what} must be a string")
    text = str(value)
    if len(text) > limit or "\x00" in text:
        raise Invalid(f"{what} is too long or holds a NUL character")
    return text


def _part(value: Any, what: str) -> str:
    # YAML reads `name: 9` as a number: the reference's rpm templates rely on it being the text "9".
    text = _text(value, what, required=True, limit=64)
    if not PART_RE.match(text):
        raise Invalid(f"{what} {text!r}: letters, digits, '.', '_', '+', '~', '-' only")
    return text


def _list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{what} must be a list")
    if len(value) > MAX_ITEMS:
        raise Invalid(f"{what}: at most {MAX_ITEMS} entries")
    return value


def _url(value: Any, secrets: dict) -> str:
    text = _text(value, "url", required=True, limit=2048).strip().rstrip("/")
    if not re.match(r"^https?://", text, re.I) or any(c.isspace() or ord(c) < 32 for c in text):
        raise Invalid("url must start with http:// or https:// and hold no spaces")
    parts = urlsplit(text)
    if not parts.hostname:
        raise Invalid("url names no host")
    if parts.password is not None:
        # user:password@host: the password is a secret, kept apart and never shown.
        secrets["url_password"] = parts.password
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        text = urlunsplit((parts.scheme, f"{parts.username}@{host}", parts.path, parts.query, parts.fragment))
    return text


def _keys(value: Any, where: str, armored: list[str]) -> list[dict]:
    out = []
    for entry in _list(value, f"{where} gpgkeys"):
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise Invalid(f"{where} gpgkeys: each entry is a mapping (fingerprint, link or armored)")
        fpr = _text(entry.get("fingerprint"), "fingerprint", limit=200).replace(" ", "").upper()
        link = _text(entry.get("link"), "link", limit=2048).strip()
        key = _text(entry.get("armored"), "armored", limit=1 << 20)
        if fpr:
            if not FPR_RE.match(fpr.removeprefix("0X")):
                raise Invalid(f"{where}: {fpr!r} is not a key fingerprint or id (8, 16, 40 or 64 hex digits)")
            out.append({"fingerprint": fpr.removeprefix("0X")})
        if link:
            if not re.match(r"^https?://\S+$", link):
                raise Invalid(f"{where}: the key link must be an http(s) URL")
            # Recorded, never fetched: the server makes no request at import (an operator adds the key).
            out.append({"link": link})
        if key:
            armored.append(key)
    return out


def check(raw: Any) -> Definition:
    """The stored form of one definition, or Invalid saying what is wrong."""
    if not isinstance(raw, dict):
        raise Invalid("a source repository definition is a mapping")
    kind = _text(raw.get("type"), "type", required=True)
    if kind not in ("deb", "rpm"):
        raise Invalid("type must be deb or rpm")
    name = _text(raw.get("name"), "name", required=True, limit=64)
    if not NAME_RE.match(name):
        raise Invalid(f"name {name!r}: letters, digits, '-' and '_' only (1-64 characters)")
    secrets: dict = {}
    armored: list[str] = []
    out: dict = {"name": name, "type": kind, "description": _text(raw.get("description"), "description"),
                 "url": _url(raw.get("url"), secrets)}
    if kind == "deb":
        dists = _list(raw.get("distributions"), "distributions")
        if not dists:
            raise Invalid(f"{name}: distributions is required (each with its components)")
        out["distributions"] = []
        for d in dists:
            if not isinstance(d, dict):
                raise Invalid(f"{name}: each distribution is a mapping")
            dist = _part(d.get("name"), "distribution name")
            comps = [_part((c or {}).get("name") if isinstance(c, dict) else c, "component name")
                     for c in _list(d.get("components"), f"{dist} components")]
            if not comps:
                raise Invalid(f"{name} {dist}: components is required")
            out["distributions"].append({"name": dist, "description": _text(d.get("description"), "description"),
                                         "components": [{"name": c} for c in comps],
                                         "gpgkeys": _keys(d.get("gpgkeys"), f"{name} {dist}", armored)})
        flag = raw.get("non-compliant", "false")
        out["non-compliant"] = "true" if str(flag).lower() in ("true", "1", "yes") else "false"
    else:
        vers = _list(raw.get("releasever"), "releasever")
        if not vers:
            raise Invalid(f"{name}: releasever is required")
        out["releasever"] = []
        for v in vers:
            if not isinstance(v, dict):
                raise Invalid(f"{name}: each releasever is a mapping")
            rel = _part(v.get("name"), "releasever name")
            out["releasever"].append({"name": rel, "description": _text(v.get("description"), "description"),
                                      "gpgkeys": _keys(v.get("gpgkeys"), f"{name} {rel}", armored)})
    for key in ("architectures",):
        if raw.get(key) is not None:
            out[key] = [_part(a, "architecture") for a in _list(raw[key], key)]
    if raw.get("keyserver"):
        out["keyserver"] = _text(raw["keyserver"], "keyserver", limit=2048)
    ssl = raw.get("ssl-authentication")
    if ssl:
        if not isinstance(ssl, dict):
            raise Invalid("ssl-authentication must be a mapping (certificate, private-key, ca-certificate)")
        shown = {}
        for part in ("certificate", "ca-certificate"):
            if ssl.get(part):
                shown[part] = _text(ssl[part], part, limit=1 << 16)
        if ssl.get("private-key"):
            secrets["private-key"] = _text(ssl["private-key"], "private-key", limit=1 << 16)
            shown["private-key"] = SECRET_MARK
        out["ssl-authentication"] = shown
    return Definition(kind, name, out, secrets, armored)
