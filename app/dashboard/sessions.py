"""Dashboard sessions: a random id in an HttpOnly cookie, only its SHA-256 digest in `sessions`.

The CSRF token of a session is derived from its id (HMAC), so it needs no storage and is worthless
without the cookie; forms carry it and every POST checks it (SameSite=Strict is the first wall).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from app.auth import Principal, Role

COOKIE = "depot_session"
LOGIN_COOKIE = "depot_login"  # double-submit token for the login form (no session exists yet)
TTL = timedelta(hours=12)


@dataclass(frozen=True)
class Session:
    sid: str
    principal: Principal

    @property
    def csrf(self) -> str:
        return csrf_token(self.sid)


def _digest(sid: str) -> bytes:
    return hashlib.sha256(sid.encode()).digest()


def csrf_token(sid: str) -> str:
    return hmac.new(sid.encode(), b"depot-csrf", hashlib.sha256).hexdigest()


def same_token(a: str | None, b: str) -> bool:
    return hmac.compare_digest((a or "").encode(), b.encode())


async def create(pool, user_id: int, user_agent: str | None = None, ttl: timedelta = TTL) -> str:
    """Open a session for the user and return its id (the cookie value, shown nowhere else)."""
    sid = secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO sessions (digest, user_id, expires_at, user_agent) VALUES ($1, $2, now() + $3, $4)",
        _digest(sid),
        user_id,
        ttl,
        (user_agent or "")[:300],
    )
    # Expired sessions are swept here, at login, rather than by a job: cheap and indexed.
    await pool.execute("DELETE FROM sessions WHERE expires_at < now()")
    return sid


async def load(pool, sid: str | None) -> Session | None:
    """The live session for a cookie value, or None (unknown, malformed or expired)."""
    if not sid or len(sid) > 100:
        return None
    digest = _digest(sid)
    # The role is read on every request, so a changed role applies at once.
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.role, s.last_seen_at < now() - interval '1 minute' AS touch"
        " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.digest = $1 AND s.expires_at > now()",
        digest,
    )
    if row is None:
        return None
    if row["touch"]:  # at most one write a minute per session, however often the pages poll
        await pool.execute("UPDATE sessions SET last_seen_at = now() WHERE digest = $1", digest)
    return Session(sid, Principal("user", user_id=row["id"], username=row["username"], role=Role(row["role"])))


async def delete(pool, sid: str | None) -> None:
    if sid:
        await pool.execute("DELETE FROM sessions WHERE digest = $1", _digest(sid))
