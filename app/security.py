"""Response hardening and brute-force brakes: security headers, CORS for configured origins only,
and a per-address token bucket on failed authentications.

The throttle is in-process (one bucket table per app process): with N replicas an attacker gets at
most N × DEPOT_AUTH_FAIL_LIMIT tries per window, which still turns a brute force into a crawl.
Addresses are `request.remote`, or, when that is a proxy listed in DEPOT_TRUSTED_PROXIES, the last
address its X-Forwarded-For adds (the one the proxy saw); otherwise every client behind a proxy would
share one bucket, and one attacker could lock out a whole fleet.
"""
from __future__ import annotations

import ipaddress
import math
import time

from aiohttp import web

from app.errors import ApiError
from app.keys import SETTINGS

THROTTLE_MESSAGE = "Too many failed authentication attempts, please retry later"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type"


class AuthThrottle:
    """Token bucket per client address: `limit` failures, refilled evenly over `window` seconds."""

    MAX_ADDRESSES = 50_000  # memory bound: a flood of spoofed sources cannot grow the table forever

    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit = max(1, limit)
        self.rate = self.limit / max(1.0, float(window))  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.limit, now))
        return min(self.limit, tokens + (now - at) * self.rate)

    def retry_after(self, address: str) -> int:
        """Seconds until this address may try again (0: it may try now)."""
        now = self.clock()
        tokens = self._tokens(address, now)
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def failed(self, address: str) -> None:
        now = self.clock()
        tokens = self._tokens(address, now)
        if len(self._buckets) >= self.MAX_ADDRESSES and address not in self._buckets:
            self._prune(now)
        self._buckets[address] = (max(0.0, tokens - 1), now)

    def _prune(self, now: float) -> None:
        full = [a for a in self._buckets if self._tokens(a, now) >= self.limit]
        for a in full:
            del self._buckets[a]
        if len(self._buckets) >= self.MAX_ADDRESSES:  # all busy: forget the oldest half
            for a, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: len(self._buckets) // 2]:
                del self._buckets[a]


THROTTLE = web.AppKey("auth_throttle", AuthThrottle)


def _in_networks(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
    except ValueError:
        return False


def client_address(request: web.Request) -> str:
    """The client's address: the peer, or what a trusted proxy says the peer was."""
    remote = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if trusted and _in_networks(remote, trusted):
        # The last hop is the one our proxy appended; anything before it is client-supplied.
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            try:
                return str(ipaddress.ip_address(forwarded))
            except ValueError:
                pass
    return remote


@web.middleware
async def auth_throttle_middleware(request: web.Request, handler):
    """Over the limit → 429 with Retry-After before credentials are even looked at."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    throttle = request.app[THROTTLE]
    address = client_address(request)
    wait = throttle.retry_after(address)
    if wait:
        raise ApiError(429, THROTTLE_MESSAGE, headers={"Retry-After": str(wait)}, retry_after=wait)
    presented = "Authorization" in request.headers  # a missing header is not a guess
    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.status == 401 and presented:
            throttle.failed(address)
        raise
    if response.status == 401 and presented:
        throttle.failed(address)
    return response


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin.rstrip("/") in request.app[SETTINGS].cors_origins:
        return origin
    return None


@web.middleware
async def cors_preflight_middleware(request: web.Request, handler):
    """Answer browser preflights for configured origins only (before auth: preflights carry no key)."""
    if (
        request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
        and _allowed_origin(request)
    ):
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, errors and streamed files included."""
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        # JSON only: nothing to load, nothing to frame, nothing for a shared cache to keep.
        # (A handler may set a stricter-than-nothing policy of its own: the /api/docs page hashes its style.)
        h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        h["Cache-Control"] = "no-store"
    else:
        h.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    # Never a wildcard (Repomanager sends `*`): only a configured origin is echoed back.
    origin = _allowed_origin(request)
    if origin:
        h["Access-Control-Allow-Origin"] = origin
        h["Access-Control-Expose-Headers"] = "Retry-After"
        h.add("Vary", "Origin")
    else:
        h.popall("Access-Control-Allow-Origin", None)
        h.popall("Access-Control-Allow-Credentials", None)


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[THROTTLE] = AuthThrottle(settings.auth_fail_limit, settings.auth_fail_window)
    app.on_response_prepare.append(add_security_headers)
