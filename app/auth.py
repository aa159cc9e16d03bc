"""Credentials: parsing the Authorization header, hashing, the auth middleware, and roles.

API keys look like `ak_<12-char key id><40-char secret>`; host credentials are an auth id
(`id_<32 hex>`, public) and a 256-bit token. Only SHA-256 digests are stored; lookups go by the
public id in O(1) and digests are compared in constant time.
"""
from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass, field
from itertools import islice

from aiohttp import web

from app.errors import ApiError, forbidden, unauthorized
from app.keys import POOL

ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX = "ak_"
KEY_ID_LEN = 12
KEY_SECRET_LEN = 40
KEY_LEN = len(KEY_PREFIX) + KEY_ID_LEN + KEY_SECRET_LEN
HOST_ID_PREFIX = "id_"
BAD_HOST_CREDENTIALS = "invalid host Id and token"
# Compared against when the key id or host id is unknown, so a miss costs the same as a hit.
_DUMMY_DIGEST = hashlib.sha256(b"depot-dummy").digest()


class Role(str, enum.Enum):
    viewer = "viewer"
    uploader = "uploader"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.viewer: 0, Role.uploader: 1, Role.operator: 2, Role.admin: 3}


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" or "host"
    user_id: int | None = None
    username: str | None = None
    role: Role | None = None
    host_id: int | None = None
    # Host credentials: the public auth id and the stored digest they were checked against. The
    # report endpoints write only `WHERE token_digest = <this>`, so cached credentials that have
    # since changed can never write (see HostCredentialCache).
    auth_id: str | None = None
    token_digest: bytes | None = field(default=None, repr=False)
    # The digests of the host's last installed and available reports, read with the credentials by
    # this request's lookup (None when they came from HostCredentialCache): a report whose digest is
    # another one is new, and goes to the intake with its body at once (hosts/intake.Intake.take_report).
    last_digests: dict[str, bytes | None] | None = field(default=None, repr=False)

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    def has_role(self, role: Role) -> bool:
        return self.kind == "user" and self.role is not None and self.role.rank >= role.rank


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def same_digest(a: bytes | None, b: bytes) -> bool:
    return hmac.compare_digest(a if a is not None else _DUMMY_DIGEST, b)


def new_api_key() -> tuple[str, str]:
    """Return (key_id, full key). The key id is the lookup part; the whole key is the secret."""
    key_id = "".join(secrets.choice(ALPHABET) for _ in range(KEY_ID_LEN))
    secret = "".join(secrets.choice(ALPHABET) for _ in range(KEY_SECRET_LEN))
    return key_id, f"{KEY_PREFIX}{key_id}{secret}"


def new_host_credentials() -> tuple[str, str]:
    """Return (auth id, token) for a host; both JSON strings on the wire."""
    return HOST_ID_PREFIX + secrets.token_hex(16), secrets.token_hex(32)


async def authenticate_api_key(pool, key: str) -> Principal | None:
    well_formed = len(key) == KEY_LEN and key.startswith(KEY_PREFIX) and key[3:].isalnum()
    key_id = key[3 : 3 + KEY_ID_LEN] if well_formed else ""
    row = None
    if well_formed:
        row = await pool.fetchrow(
            "SELECT k.digest, u.id, u.username, u.role,"
            " k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' AS stale"
            " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_id = $1",
            key_id,
        )
    matches = same_digest(row["digest"] if row else None, digest(key))
    if not (row and matches):
        return None
    if row["stale"]:  # last use, to the minute (shown by `depot user list`): one write per key per minute at most
        await pool.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = $1", key_id)
    return Principal("user", user_id=row["id"], username=row["username"], role=Role(row["role"]))


class HostCredentialCache:
    """Host credentials verified in the last `seconds`: auth id -> (host id, stored token digest).

    An agent sends status, events, available and installed within seconds: with this, only the
    first costs a database lookup. Used only for the report endpoints (REPORT_PATHS), whose SQL
    writes `WHERE id = <host> AND token_digest = <cached digest>`: after a re-registration or an
    unregistration (in any replica) the stale entry writes nothing and the caller gets a 401.
    The presented token is still compared with the digest in constant time at every request.
    """

    def __init__(self, seconds: float, max_entries: int = 100_000):
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[int, bytes, float]] = {}

    def get(self, auth_id: str) -> tuple[int, bytes] | None:
        entry = self._entries.get(auth_id)
        if entry is None:
            return None
        if entry[2] < time.monotonic():
            self._entries.pop(auth_id, None)
            return None
        return entry[0], entry[1]

    def put(self, auth_id: str, host_id: int, token_digest: bytes) -> None:
        if self.seconds <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest entry (dicts keep insertion order)
        self._entries[auth_id] = (host_id, token_digest, time.monotonic() + self.seconds)

    def drop(self, auth_id: str | None) -> None:
        self._entries.pop(auth_id, None)

    def stale(self, auth_id: str | None) -> ApiError:
        """A report's guarded write found other credentials: forget the cached ones; the 401 to raise."""
        self.drop(auth_id)
        return unauthorized(BAD_HOST_CREDENTIALS)


class HostLookups:
    """The host credential lookups of one server process's concurrent requests, in one statement.

    A fleet's reports each cost a lookup when their credentials are not cached (a first report, a status
    report, a host heard from more than HostCredentialCache's seconds ago): under load, one round trip then
    serves tens of requests, as the intake's group commit (hosts/intake.py) does for their writes. At most
    `max_inflight` statements run at once; the requests that arrive meanwhile go in the next (at most
    `max_group` auth ids). Alone, a request looks up at once. Each request compares its own token with the
    digest read, in constant time (authenticate_host). A failed statement fails the requests it served.
    """

    SQL = ("SELECT auth_id, id, token_digest, installed_digest, available_digest FROM hosts"
           " WHERE auth_id = ANY($1::text[])")

    def __init__(self, max_group: int = 64, max_inflight: int = 2):
        self.max_group = max_group
        self.max_inflight = max_inflight
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._inflight = 0
        self._drains: set[asyncio.Task] = set()

    async def row(self, pool, auth_id: str):
        """The hosts row of `auth_id` (id, token_digest and the last reports' digests), or None."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(auth_id, []).append(future)
        if self._inflight < self.max_inflight:
            self._inflight += 1
            drain = asyncio.create_task(self._drain(pool))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self, pool) -> None:
        try:
            while self._waiting:
                group = {a: self._waiting.pop(a) for a in list(islice(self._waiting, self.max_group))}
                try:
                    found = {r["auth_id"]: r for r in await pool.fetch(self.SQL, list(group))}
                except Exception as exc:
                    for futures in group.values():
                        for future in futures:
                            if not future.done():  # a request gone (client away) has cancelled its own
                                future.set_exception(exc)
                    continue
                for auth_id, futures in group.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(found.get(auth_id))
        finally:
            self._inflight -= 1


HOST_CACHE = web.AppKey("host_credential_cache", HostCredentialCache)
HOST_LOOKUPS = web.AppKey("host_lookups", HostLookups)
# The endpoints whose writes re-check the token digest (and so may use HostCredentialCache).
REPORT_PATHS = frozenset(
    f"/api/v2/host/{p}{slash}" for p in ("packages/installed", "packages/available", "packages/event") for slash in ("", "/")
)


async def authenticate_host(pool, lookups: HostLookups, auth_id: str, token: str,
                            cache: HostCredentialCache | None = None) -> Principal | None:
    presented = digest(token)
    if cache is not None:
        hit = cache.get(auth_id)
        if hit is not None and same_digest(hit[1], presented):
            return Principal("host", host_id=hit[0], auth_id=auth_id, token_digest=hit[1])
    row = None
    if auth_id and token and len(auth_id) <= 64 and len(token) <= 128:
        row = await lookups.row(pool, auth_id)
    matches = same_digest(row["token_digest"] if row else None, presented)
    if not (row and matches):
        return None
    if cache is not None:
        cache.put(auth_id, row["id"], row["token_digest"])
    return Principal("host", host_id=row["id"], auth_id=auth_id, token_digest=row["token_digest"],
                     last_digests={"installed": row["installed_digest"], "available": row["available_digest"]})


async def authenticate(request: web.Request) -> Principal:
    """Authenticate from the Authorization header, or raise a 401 with the reference's reasons."""
    header = request.headers.get("Authorization")
    if header is None:
        raise unauthorized("HTTP Authorization header is missing")
    pool = request.app[POOL]
    if header.startswith("Bearer "):
        principal = await authenticate_api_key(pool, header[7:])
        if principal is None:
            raise unauthorized("invalid API key")
        return principal
    if header.startswith("Host "):
        parts = header[5:].split(":")
        if len(parts) != 2:
            raise unauthorized("invalid host Id and token format")
        cache = request.app[HOST_CACHE] if request.path in REPORT_PATHS else None
        principal = await authenticate_host(pool, request.app[HOST_LOOKUPS], parts[0], parts[1], cache)
        if principal is None:
            raise unauthorized(BAD_HOST_CREDENTIALS)
        return principal
    raise unauthorized("invalid Authorization header format")


PRINCIPAL = web.RequestKey("principal", Principal)
# API paths reachable without credentials.
PUBLIC_API_PATHS = {"/api/v2/openapi.json", "/api/docs"}


@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path.startswith("/api/") and request.path not in PUBLIC_API_PATHS:
        request[PRINCIPAL] = await authenticate(request)
    return await handler(request)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require_role(request: web.Request, role: Role, message: str | None = None) -> Principal:
    """The caller must be a user whose role is at least `role`; hosts and lesser roles get a 403."""
    who = request[PRINCIPAL]
    if not who.has_role(role):
        raise forbidden(message or f"You are not allowed to perform this action (needs the {role.value} role)")
    return who


def require_user(request: web.Request) -> Principal:
    """Any user API key (viewer and up); host tokens may not read fleet-wide data."""
    return require_role(request, Role.viewer, "This resource needs a user API key, not host credentials")


def require_host(request: web.Request) -> Principal:
    who = request[PRINCIPAL]
    if not who.is_host:
        raise forbidden("This endpoint needs host credentials (Authorization: Host <id>:<token>)")
    return who
