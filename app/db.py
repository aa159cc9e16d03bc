"""asyncpg pool, JSON codecs and the migration runner for `sql/NNN_*.sql`."""
from __future__ import annotations

import functools
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import orjson

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Largest value of a bigint id: a larger id in a URL is simply unknown (asyncpg cannot even send it).
MAX_ID = 2**63 - 1
# Any constant: serialises migrations when several app replicas start at once.
MIGRATION_LOCK = 7_405_001


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )
    # The first statement with an array parameter on a connection is slow (asyncpg introspects
    # the array types); pay it here, once per connection, not inside the first rebuild or report it serves.
    await conn.prepare("SELECT $1::bigint[], $2::text[], $3::int[]")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing beyond asyncpg's rollback of an open transaction.

    asyncpg's default reset (RESET ALL, pg_advisory_unlock_all(), CLOSE ALL, UNLISTEN *) is one more
    round trip at every release, i.e. on every query made through the pool. Depot keeps no session
    state on pooled connections: settings are transaction-local (set_config(..., true)) and the one
    session advisory locks are released with session_unlock() below.
    """


@asynccontextmanager
async def session_lock(conn, *key: int, shared: bool = False):
    """A session advisory lock (exclusive or shared) held for the block."""
    kind = "_shared" if shared else ""
    await conn.execute(f"SELECT pg_advisory_lock{kind}({_placeholders(key)})", *key)
    try:
        yield
    finally:
        await session_unlock(conn, *key, shared=shared)


async def session_unlock(conn, *key: int, shared: bool = False) -> None:
    """Release a session advisory lock. If that cannot run (the task was cancelled mid-query, the
    connection broke), close the connection: with the pool's light reset a lock must never go back
    to the pool."""
    kind = "_shared" if shared else ""
    try:
        await conn.execute(f"SELECT pg_advisory_unlock{kind}({_placeholders(key)})", *key)
    except BaseException:
        conn.terminate()
        raise


def _placeholders(key: tuple) -> str:
    return ", ".join(f"${i + 1}" for i in range(len(key)))


class Pool(asyncpg.Pool):
    """asyncpg's pool with a default acquire timeout.

    Without one, a request waits forever for a connection when PostgreSQL hangs or the pool is
    exhausted; with it the caller gets a TimeoutError, which error_middleware turns into a 503.
    """

    __slots__ = ("acquire_timeout",)

    def acquire(self, *, timeout=None):
        return super().acquire(timeout=timeout if timeout is not None else self.acquire_timeout)


def transactional(fn):
    """For a domain function written against one connection. Called with the pool (what handlers do), it
    takes a connection and runs in its own transaction; called with a connection, it runs in the
    caller's transaction, for callers that compose several steps and commit once."""

    @functools.wraps(fn)
    async def run(db, *args, **kwargs):
        if isinstance(db, asyncpg.Pool):
            async with db.acquire() as conn, conn.transaction():
                return await fn(conn, *args, **kwargs)
        return await fn(db, *args, **kwargs)

    return run


async def create_pool(settings, **kwargs) -> asyncpg.Pool:
    pool = Pool(
        settings.database_url,
        min_size=kwargs.pop("min_size", settings.db_pool_min),
        max_size=kwargs.pop("max_size", settings.db_pool_max),
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=settings.db_command_timeout,
        # Connect timeout: a PostgreSQL that accepts TCP but never answers must not hold a request.
        timeout=settings.db_connect_timeout,
        init=_init_connection,
        reset=_keep_session,
        # No JIT: a fleet question over many posting lists is estimated costly enough for PostgreSQL to
        # compile it, which takes longer than running it.
        server_settings={"jit": "off", **kwargs.pop("server_settings", {})},
        **kwargs,
    )
    pool.acquire_timeout = settings.db_acquire_timeout
    return await pool


def migration_files() -> list[Path]:
    return sorted(p for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


async def migrate_empty(database_url: str) -> None:
    """Drop everything in the database's public schema, then migrate: an empty database of the current
    schema. For the test suite's and the benchmarks' own databases only."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    await migrate(database_url)


async def migrate(database_url: str, upto: str | None = None) -> list[str]:
    """Apply every sql/NNN_*.sql not applied yet (up to number `upto`, e.g. "016", if given), each in its
    own transaction. Returns the names applied."""
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
            if path.name in done or (upto is not None and path.name[:3] > upto):
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
