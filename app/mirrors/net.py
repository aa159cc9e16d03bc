"""The HTTP client of mirrors (aiohttp's), guarded: an upstream is bad input like any other.

- Only http(s) URLs; hosts whose addresses are loopback, link-local, private or otherwise not global are
  refused unless listed in DEPOT_MIRROR_ALLOW_HOSTS (names, addresses, CIDR blocks). Names are checked
  at connection time, on the addresses the connector is about to use (a resolver that filters), so a
  name that changes its answer between a check and the connection gains nothing; address literals,
  which aiohttp never resolves, are checked before each request. Redirects are followed here, at most
  MAX_REDIRECTS, each hop checked the same way.
- Patient: connection errors and 429/5xx answers are retried (DEPOT_MIRROR_RETRIES, exponential backoff with
  jitter, an upstream's Retry-After honoured up to MAX_RETRY_WAIT) before any byte of a body is read.
- DEPOT_MIRROR_PROXY: every request through that HTTP proxy (upstream names are then checked here before
  each request, since the connector only resolves the proxy's).
- DEPOT_MIRROR_RATE_LIMIT: bytes per second for a whole run, all its connections together.
- Bounded: connection and read timeouts, a size cap on every body read into memory, a byte limit on
  every file streamed to disk (the size its index gives).
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_REDIRECTS = 5
MAX_RETRY_WAIT = 30.0          # seconds, whatever an upstream's Retry-After asks
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRIED = (429, 500, 502, 503, 504)


def _retry_after(value: str | None) -> float | None:
    """A Retry-After in seconds (capped); None when absent or not a number of seconds."""
    if value is None or not value.strip().isdigit():
        return None
    return min(MAX_RETRY_WAIT, float(value.strip()))


class UpstreamError(Exception):
    """The upstream could not be read, or gave something refused; the message names the URL."""


class Refused(UpstreamError):
    """The URL's host is not one a mirror may reach."""


class TooBig(UpstreamError):
    """A body longer than the caller's limit."""


class HostPolicy:
    def __init__(self, allow: tuple[str, ...] | list[str] = ()):
        self.names: set[str] = set()
        self.networks: list = []
        self._literals: dict[str, bool] = {}      # address literal -> allowed (a run asks thousands of times)
        for item in allow:
            item = item.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.add(item)

    def address_allowed(self, address: str, host: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if host.lower().rstrip(".") in self.names or any(ip in net for net in self.networks):
            return True
        return ip.is_global and not ip.is_multicast

    def check_url(self, url: URL) -> URL:
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused(f"{_shown(url)}: only http and https URLs with a host are fetched")
        allowed = self._literals.get(url.host)
        if allowed is None:
            try:
                literal = ipaddress.ip_address(url.host)
            except ValueError:
                return url          # a name: checked by GuardedResolver when connecting
            allowed = self._literals[url.host] = self.address_allowed(str(literal), url.host)
        if not allowed:
            literal = ipaddress.ip_address(url.host)
            raise Refused(f"{_shown(url)}: {literal} is a loopback, link-local or private address "
                          "(allow it with DEPOT_MIRROR_ALLOW_HOSTS)")
        return url


class GuardedResolver(AbstractResolver):
    """The default resolver, keeping only the addresses the policy allows (none: Refused)."""

    def __init__(self, policy: HostPolicy):
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        allowed = [i for i in infos if self.policy.address_allowed(i["host"], host)]
        if not allowed:
            raise Refused(f"{host} resolves to loopback, link-local or private addresses only "
                          f"({', '.join(sorted({i['host'] for i in infos}))}); allow it with DEPOT_MIRROR_ALLOW_HOSTS")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def tls_context(certificate: str | None, private_key: str | None, ca_certificate: str | None) -> ssl.SSLContext | None:
    """The TLS settings of a source: its client certificate and key, its own CA (else the system's); None when
    it has none. The key is written to a private file only while it is loaded (the ssl module reads files)."""
    if not (certificate and private_key) and not ca_certificate:
        return None
    ctx = ssl.create_default_context(cadata=ca_certificate) if ca_certificate else ssl.create_default_context()
    if certificate and private_key:
        with tempfile.TemporaryDirectory(prefix="depot-tls-") as folder:
            path = os.path.join(folder, "client.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(certificate.strip() + "\n" + private_key.strip() + "\n")
            try:
                ctx.load_cert_chain(path)
            except (ssl.SSLError, ValueError) as exc:
                raise UpstreamError(f"the source's client certificate or key is unusable ({exc})") from None
    return ctx


def _shown(url: URL) -> str:
    """A URL as it may appear in messages and logs: never its password."""
    return str(url.with_password(None)) if url.password else str(url)


class Fetcher:
    """One aiohttp session for one mirror run. `auth` is sent only to the base URL's host."""

    def __init__(self, settings, *, auth: aiohttp.BasicAuth | None = None, auth_host: str | None = None,
                 tls: ssl.SSLContext | None = None):
        self.policy = HostPolicy(settings.mirror_allow_hosts)
        self.concurrency = settings.mirror_concurrency
        self.retries, self.retry_seconds = settings.mirror_retries, settings.mirror_retry_seconds
        self.proxy = settings.mirror_proxy
        # One byte budget for all of the run's connections (a per-connection limit multiplies by the concurrency).
        self.rate = settings.mirror_rate_limit
        self._allowance, self._stamp, self.throttled = float(self.rate), None, 0.0
        if self.proxy:
            # The proxy is the operator's own: its host is allowed, whatever its address.
            self.policy.names.add((URL(self.proxy).host or "").lower())
        self._resolver = GuardedResolver(self.policy)
        self._auth, self._auth_host = auth, auth_host
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency,
                                         resolver=self._resolver, use_dns_cache=False,
                                         ssl=tls if tls is not None else True)
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.mirror_connect_timeout,
                                        sock_read=settings.mirror_read_timeout)
        # Bodies are checked byte for byte against signed sizes and digests: ask for them as they are (aiohttp
        # would offer gzip, and a server that takes it up, or serves a stale Packages.gz for Packages, sends
        # other bytes).
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                             headers={"User-Agent": "Depot-mirror", "Accept-Encoding": "identity"})
        self.requests = 0

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _open(self, url: URL) -> aiohttp.ClientResponse:
        """The answer to a GET of `url`, redirects followed (each hop checked); connection errors and
        429/5xx answers retried with backoff before any byte of a body is read."""
        for _ in range(MAX_REDIRECTS + 1):
            self.policy.check_url(url)
            if self.proxy and url.host:
                # Through a proxy the connector resolves the proxy's name, not the upstream's: check that
                # name here (the proxy resolves it again; a proxy that must not reach private addresses
                # enforces that itself).
                await self._resolver.resolve(url.host, url.port or 0)
            resp = await self._get_retrying(url)
            if resp.status not in _REDIRECTS:
                return resp
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise UpstreamError(f"{_shown(url)}: a redirect without a Location")
            url = url.join(URL(location))
        raise UpstreamError(f"{_shown(url)}: more than {MAX_REDIRECTS} redirects")

    async def _get_retrying(self, url: URL) -> aiohttp.ClientResponse:
        auth = self._auth if self._auth is not None and url.host == self._auth_host else None
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            self.requests += 1
            try:
                resp = await self.session.get(url, allow_redirects=False, auth=auth, proxy=self.proxy)
            except Refused:
                raise
            except TimeoutError:          # aiohttp's timeouts are ClientErrors too: this first
                if last:
                    raise UpstreamError(f"{_shown(url)}: no answer in time") from None
            except aiohttp.ClientError as exc:
                if last:
                    raise UpstreamError(f"{_shown(url)}: {type(exc).__name__}: {exc}") from None
            else:
                if resp.status not in _RETRIED or last:
                    return resp
                wait = _retry_after(resp.headers.get("Retry-After"))
                resp.release()
                await asyncio.sleep(wait if wait is not None else self._backoff(attempt))
                continue
            await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return min(MAX_RETRY_WAIT, self.retry_seconds * 2 ** attempt) * (0.5 + random.random() / 2)

    async def _throttle(self, size: int) -> None:
        """A token bucket of `rate` bytes per second, one second deep: a reader that overdraws it waits."""
        now = asyncio.get_running_loop().time()
        if self._stamp is not None:
            self._allowance = min(float(self.rate), self._allowance + (now - self._stamp) * self.rate)
        self._stamp = now
        self._allowance -= size
        if self._allowance < 0:
            wait = -self._allowance / self.rate
            self.throttled += wait
            await asyncio.sleep(wait)

    async def get_bytes(self, url: URL, max_bytes: int, *, missing_ok: bool = False) -> bytes | None:
        """A whole body of at most max_bytes; None for a 404/410 when missing_ok."""
        resp = await self._open(url)
        try:
            if missing_ok and resp.status in (404, 410):
                return None
            if resp.status != 200:
                raise UpstreamError(f"{_shown(url)}: HTTP {resp.status}")
            length = resp.content_length
            if length is not None and not self.rate:
                # A Content-Length frames the body: aiohttp reads exactly that many bytes, so one read is as
                # bounded as the chunk loop, and costs one await instead of one per chunk.
                if length > max_bytes:
                    raise TooBig(f"{_shown(url)}: larger than the {max_bytes} byte limit")
                try:
                    return await resp.read()
                except TimeoutError:
                    raise UpstreamError(f"{_shown(url)}: the answer stalled") from None
                except aiohttp.ClientError as exc:
                    raise UpstreamError(f"{_shown(url)}: {type(exc).__name__}: {exc}") from None
            buf = bytearray()
            async for chunk in self._chunks(resp, url):
                buf += chunk
                if len(buf) > max_bytes:
                    raise TooBig(f"{_shown(url)}: larger than the {max_bytes} byte limit")
            return bytes(buf)
        finally:
            resp.release()

    async def stream(self, url: URL) -> AsyncIterator[bytes]:
        """The body of a 200 answer, chunk by chunk (the caller limits its size)."""
        resp = await self._open(url)
        try:
            if resp.status != 200:
                raise UpstreamError(f"{_shown(url)}: HTTP {resp.status}")
            async for chunk in self._chunks(resp, url):
                yield chunk
        finally:
            resp.release()

    async def _chunks(self, resp: aiohttp.ClientResponse, url: URL) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.content.iter_chunked(1 << 18):
                if self.rate:
                    await self._throttle(len(chunk))
                yield chunk
        except TimeoutError:
            raise UpstreamError(f"{_shown(url)}: the answer stalled") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{_shown(url)}: {type(exc).__name__}: {exc}") from None
