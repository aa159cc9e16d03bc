"""asyncpg pool, JSON codecs and the migration runner for `sql/NNN_*.sql`."""
from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import orjson

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Any constant: serialises migrations when several app replicas start at once.
MIGRATION_LOCK = 7_405_001


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_pool(settings, **kwargs) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=kwargs.pop("min_size", settings.db_pool_min),
        max_size=kwargs.pop("max_size", settings.db_pool_max),
        command_timeout=settings.db_command_timeout,
        init=_init_connection,
        **kwargs,
    )


def migration_files() -> list[Path]:
    return sorted(p for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


async def migrate(database_url: str) -> list[str]:
    """Apply every sql/NNN_*.sql not applied yet, each in its own transaction. Returns the names applied."""
    conn = await asyncpg.connect(database_url)
    applied_now = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files():
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()
    return applied_now
