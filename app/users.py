"""Users, their roles, API keys and dashboard passwords."""
from __future__ import annotations

import hashlib
import hmac
import secrets

import asyncpg

from app.auth import Role, digest, new_api_key
from app.domain_errors import DomainError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UserError(DomainError):
    """A refusal about users: 400 unless given (404 unknown, 409 taken or the last admin)."""


async def create_user(pool, username: str, role: Role | str, password: str | None = None) -> int:
    role = Role(role)
    try:
        return await pool.fetchval(
            "INSERT INTO users (username, role, password) VALUES ($1, $2, $3) RETURNING id",
            username,
            role.value,
            hash_password(password) if password else None,
        )
    except asyncpg.UniqueViolationError:
        raise UserError(f"User {username} already exists", status=409)
    except asyncpg.CheckViolationError:
        raise UserError(f"Invalid user name {username!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")


_USER_ROW = (
    "SELECT u.id, u.username, u.role, u.created_at, u.password IS NOT NULL AS has_password,"
    " k.created_at AS key_created_at, k.last_used_at"
    " FROM users u LEFT JOIN api_keys k ON k.user_id = u.id"
)


async def get_user(pool, username: str):
    """The user with their key's dates (never a digest or password hash), or None."""
    return await pool.fetchrow(_USER_ROW + " WHERE u.username = $1", username)


async def list_users(pool):
    return await pool.fetch(_USER_ROW + " ORDER BY u.username")


def user_row(r) -> dict:
    """A row of get_user / list_users as the API and the CLI show it."""
    return {"Name": r["username"], "Role": r["role"], "Created": _iso(r["created_at"]),
            "Has_password": r["has_password"], "Key_created": _iso(r["key_created_at"]),
            "Key_last_used": _iso(r["last_used_at"])}


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


async def _lock_and_check_admins(conn, username: str):
    """In a transaction: serialise user changes, return the user's row (UserError 404 if unknown)."""
    await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
    row = await conn.fetchrow("SELECT id, role FROM users WHERE username = $1", username)
    if row is None:
        raise UserError(f"User {username} does not exist", status=404)
    return row


async def update_user(pool, username: str, role: Role | str | None = None, password: str | None = None) -> None:
    """Change a user's role (effective at once: keys and sessions read the role on every request) and/or
    dashboard password (ends their sessions). The last admin cannot be demoted."""
    role = Role(role) if role else None
    hashed = hash_password(password) if password else None
    async with pool.acquire() as conn, conn.transaction():
        row = await _lock_and_check_admins(conn, username)
        if role and row["role"] == Role.admin.value and role != Role.admin and await _admins(conn) <= 1:
            raise UserError(f"User {username} is the last admin: make another admin first", status=409)
        if role:
            await conn.execute("UPDATE users SET role = $2 WHERE id = $1", row["id"], role.value)
        if hashed:
            await conn.execute("UPDATE users SET password = $2 WHERE id = $1", row["id"], hashed)
            await conn.execute("DELETE FROM sessions WHERE user_id = $1", row["id"])


async def delete_user(pool, username: str) -> None:
    """Delete a user, their API key and dashboard sessions (cascade). The last admin cannot be deleted."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _lock_and_check_admins(conn, username)
        if row["role"] == Role.admin.value and await _admins(conn) <= 1:
            raise UserError(f"User {username} is the last admin: make another admin first", status=409)
        await conn.execute("DELETE FROM users WHERE id = $1", row["id"])


async def _admins(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM users WHERE role = 'admin'")


async def create_api_key(pool, username: str) -> str:
    """Make a new key for the user; the older key stops working at once. Returns the key (shown once)."""
    key_id, key = new_api_key()
    async with pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval("SELECT id FROM users WHERE username = $1 FOR KEY SHARE", username)
        if user_id is None:
            raise UserError(f"User {username} does not exist", status=404)
        await conn.execute(
            "INSERT INTO api_keys (key_id, user_id, digest) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET key_id = EXCLUDED.key_id, digest = EXCLUDED.digest,"
            " created_at = now(), last_used_at = NULL",
            key_id,
            user_id,
            digest(key),
        )
        # New credentials end the user's dashboard sessions (a leaked key must not live on in a cookie).
        await conn.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
    return key


async def set_password(pool, username: str, password: str) -> None:
    hashed = hash_password(password)
    async with pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval("UPDATE users SET password = $2 WHERE username = $1 RETURNING id", username, hashed)
        if user_id is None:
            raise UserError(f"User {username} does not exist", status=404)
        # A new password ends the user's dashboard sessions everywhere.
        await conn.execute("DELETE FROM sessions WHERE user_id = $1", user_id)


async def check_password(pool, username: str, password: str):
    """Return the user row if the password matches, else None (same work either way)."""
    row = await pool.fetchrow("SELECT id, username, role, password FROM users WHERE username = $1", username)
    stored = row["password"] if row and row["password"] else None
    ok = verify_password(password, stored)
    return row if (row and ok) else None


async def ensure_admin(pool) -> str | None:
    """On the first start with no users, create `admin` and return its API key (printed once)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")
            if await conn.fetchval("SELECT count(*) FROM users"):
                return None
            await conn.execute("INSERT INTO users (username, role) VALUES ('admin', 'admin')")
    return await create_api_key(pool, "admin")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${h.hex()}"


_DUMMY_HASH = "scrypt$16384$8$1$" + "00" * 16 + "$" + "00" * 64


def verify_password(password: str, stored: str | None) -> bool:
    _, n, r, p, salt, expected = (stored or _DUMMY_HASH).split("$")
    h = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return stored is not None and hmac.compare_digest(h.hex(), expected)
