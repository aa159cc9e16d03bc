"""What the benchmarks share: a free loopback port, settings on a database and a Redis db of their own
(so a benchmark never touches `make run`'s data), and the environment of the Depot processes they start."""
from __future__ import annotations

import os
import socket
from dataclasses import replace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_settings(database: str, redis_db: int, queue_name: str, admin_url: str | None = None, **changes):
    """Depot's settings from the environment, on `database` and Redis db `redis_db`, on a free port;
    `database` on the server of `admin_url` if given, else on the configured or embedded PostgreSQL."""
    from app import embedded
    from app.settings import Settings

    base = Settings.from_env()
    if admin_url:
        base = replace(base, database_url=admin_url)
    port = free_port()
    return replace(base, database_url=embedded.own_database(base, database),
                   redis_url=embedded.own_redis_db(base, redis_db), port=port,
                   base_url=f"http://127.0.0.1:{port}", queue_name=queue_name, **changes)


def server_env(settings, **extra: str) -> dict:
    """The environment for `depot serve` / `depot worker` processes that use `settings`."""
    return dict(
        os.environ, DEPOT_DATABASE_URL=settings.database_url, DEPOT_REDIS_URL=settings.redis_url,
        DEPOT_PORT=str(settings.port), DEPOT_BASE_URL=settings.base_url, DEPOT_QUEUE_NAME=settings.queue_name,
        DEPOT_LOG_LEVEL="WARNING", **extra,
    )


async def fresh_database(settings):
    """The benchmark's own database emptied and migrated; returns a small pool on it."""
    from app import db

    await db.migrate_empty(settings.database_url)
    return await db.create_pool(settings, min_size=1, max_size=2)
