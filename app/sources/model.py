"""Source repositories in PostgreSQL: listing in the reference's wire shape, saving, deleting, keys.

Functions take `db`: the pool, or a connection of a caller's transaction (@transactional ones open
their own when given the pool). Secrets are read only by `source_for_mirror`, never by a listing.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from app.db import transactional
from app.domain_errors import Conflict, Invalid, NotFound

from .definitions import Definition, check
from .keys import PublicKey, read_public_keys

INVALID_TYPE = "Invalid source repository type (deb or rpm)"
_COLUMNS = "id, type, name, definition, method"


def check_type(kind: str) -> str:
    if kind not in ("deb", "rpm"):
        raise Invalid(INVALID_TYPE)
    return kind


def _wire(row) -> dict:
    # The reference gives Definition as a JSON string, not an object.
    return {"Id": row["id"], "Definition": orjson.dumps(row["definition"]).decode(), "Method": row["method"]}


async def list_sources(db, kind: str | None = None) -> list[dict]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM sources WHERE $1::text IS NULL OR type = $1"
                          " ORDER BY type, name", kind)
    return [_wire(r) for r in rows]


async def source_wire(db, kind: str, name: str) -> dict | list:
    """One source's row, or [] when there is none (the reference answers 200 [] then)."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM sources WHERE type = $1 AND name = $2", kind, name)
    return _wire(row) if row else []


@dataclass
class Source:
    id: int
    type: str
    name: str
    definition: dict
    secrets: dict


async def get_source(db, kind: str, name: str) -> Source:
    row = await db.fetchrow("SELECT id, type, name, definition, secrets FROM sources WHERE type = $1 AND name = $2",
                            kind, name)
    if row is None:
        raise NotFound(f"Source repository {name} ({kind}) does not exist")
    return Source(row["id"], row["type"], row["name"], row["definition"], row["secrets"])


async def source_by_id(db, source_id: int) -> Source:
    row = await db.fetchrow("SELECT id, type, name, definition, secrets FROM sources WHERE id = $1", source_id)
    if row is None:
        raise NotFound(f"Source repository #{source_id} does not exist")
    return Source(row["id"], row["type"], row["name"], row["definition"], row["secrets"])


async def _read_keys(armored: list[str]) -> list[PublicKey]:
    loop = asyncio.get_running_loop()
    keys: list[PublicKey] = []
    for block in armored:
        keys += await loop.run_in_executor(None, read_public_keys, block)
    return keys


def _with_fingerprints(d: Definition, keys: list[PublicKey]) -> dict:
    """Armored keys are recorded in the definition by fingerprint (as the reference records fetched keys)."""
    if not keys:
        return d.definition
    entries = [{"fingerprint": k.fingerprint} for k in keys]
    scopes = d.definition.get("distributions") or d.definition.get("releasever") or []
    for scope in scopes:
        scope["gpgkeys"] = scope["gpgkeys"] + [e for e in entries if e not in scope["gpgkeys"]]
    return d.definition


async def _save(conn, d: Definition, keys: list[PublicKey], method: str, *, mode: str) -> int:
    definition = _with_fingerprints(d, keys)
    if mode == "create":
        source_id = await conn.fetchval(
            "INSERT INTO sources (type, name, definition, secrets, method) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (type, name) DO NOTHING RETURNING id", d.type, d.name, definition, d.secrets, method)
        if source_id is None:
            raise Conflict(f"Source repository {d.name} ({d.type}) already exists")
    elif mode == "replace":
        source_id = await conn.fetchval(
            "UPDATE sources SET definition = $3, secrets = $4, updated_at = now() WHERE type = $1 AND name = $2"
            " RETURNING id", d.type, d.name, definition, d.secrets)
        if source_id is None:
            raise NotFound(f"Source repository {d.name} ({d.type}) does not exist")
    else:  # import: a source of the same type and name is replaced (its id, keys and mirrors stay)
        source_id = await conn.fetchval(
            "INSERT INTO sources (type, name, definition, secrets, method) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (type, name) DO UPDATE SET definition = $3, secrets = $4, method = $5, updated_at = now()"
            " RETURNING id", d.type, d.name, definition, d.secrets, method)
    await _store_keys(conn, source_id, keys)
    return source_id


async def _store_keys(conn, source_id: int, keys: list[PublicKey]) -> None:
    await conn.executemany(
        "INSERT INTO source_keys (source_id, fingerprint, public_key, uids, expires_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (source_id, fingerprint) DO UPDATE SET public_key = $3, uids = $4, expires_at = $5",
        [(source_id, k.fingerprint, k.public_key, k.uids, k.expires_at) for k in keys])


async def import_definitions(pool, definitions: list[Definition]) -> int:
    """Every definition of a template, all or nothing."""
    keys = [await _read_keys(d.armored) for d in definitions]     # gpg runs before the transaction
    async with pool.acquire() as conn, conn.transaction():
        for d, k in zip(definitions, keys):
            await _save(conn, d, k, "import-api", mode="import")
    return len(definitions)


async def create_source(pool, kind: str, raw) -> dict:
    d = _checked(kind, raw)
    keys = await _read_keys(d.armored)
    async with pool.acquire() as conn, conn.transaction():
        source_id = await _save(conn, d, keys, "manual", mode="create")
        return _wire(await conn.fetchrow(f"SELECT {_COLUMNS} FROM sources WHERE id = $1", source_id))


async def replace_source(pool, kind: str, name: str, raw) -> dict:
    d = _checked(kind, raw)
    if d.name != name:
        raise Invalid("The definition's name must be the name in the path (a source is not renamed)")
    keys = await _read_keys(d.armored)
    async with pool.acquire() as conn, conn.transaction():
        source_id = await _save(conn, d, keys, "manual", mode="replace")
        return _wire(await conn.fetchrow(f"SELECT {_COLUMNS} FROM sources WHERE id = $1", source_id))


def _checked(kind: str, raw) -> Definition:
    d = check(raw)
    if d.type != check_type(kind):
        raise Invalid(f"The definition's type ({d.type}) is not the type in the path ({kind})")
    return d


@transactional
async def delete_source(conn, kind: str, name: str) -> None:
    source = await get_source(conn, check_type(kind), name)
    users = await conn.fetch("SELECT repo_id FROM mirrors WHERE source_id = $1 ORDER BY repo_id", source.id)
    if users:
        raise Conflict(f"Source repository {name} is mirrored by repositories "
                       f"{', '.join('#' + str(r['repo_id']) for r in users)}: delete them first")
    await conn.execute("DELETE FROM sources WHERE id = $1", source.id)


async def add_keys(pool, kind: str, name: str, armored: str) -> list[PublicKey]:
    """Import armored public keys into this source's keyring (and only this one's)."""
    source = await get_source(pool, check_type(kind), name)
    keys = await _read_keys([armored])
    async with pool.acquire() as conn, conn.transaction():
        await _store_keys(conn, source.id, keys)
    return keys


async def keyring(db, source_id: int) -> list[bytes]:
    rows = await db.fetch("SELECT public_key FROM source_keys WHERE source_id = $1 ORDER BY fingerprint", source_id)
    return [bytes(r["public_key"]) for r in rows]
