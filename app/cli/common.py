"""What the command modules share: the server's settings and database, `fail`, the flags and error handling
of the commands that use the HTTP API, and the commands that go over HTTP or DB-direct (users, profiles)."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace

from app import embedded
from app.cli.client import Client, ClientError, print_json, read_config
from app.settings import Settings


def load_settings(need_redis: bool = False) -> Settings:
    """The configured settings; the embedded PostgreSQL (and Valkey) under var/ where none is configured."""
    settings = Settings.from_env()
    if not settings.database_url:
        settings = Settings.from_env(database_url=embedded.postgres_url(settings.var_dir))
    if need_redis and not settings.redis_url:
        settings = replace(settings, redis_url=embedded.redis_url(settings.var_dir))
    return settings


def migrate(settings: Settings) -> list[str]:
    from app import db

    return asyncio.run(db.migrate(settings.database_url))


async def with_pool(settings: Settings, fn):
    from app import db

    pool = await db.create_pool(settings, min_size=1, max_size=2)
    try:
        return await fn(pool)
    finally:
        await pool.close()


def fail(message: str, code: int = 1):
    print(f"depot: {message}", file=sys.stderr)
    sys.exit(code)


def emit(args, data, show) -> None:
    """The API's JSON with --json, else show(data)."""
    if args.json:
        print_json(data)
    else:
        show(data)


# --- commands over the HTTP API -------------------------------------------------------------------
# Flags > DEPOT_URL / DEPOT_API_KEY > ~/.config/depot/cli.toml|ini (app/cli/client.py), from any machine.


def add_client_flags(parser: argparse.ArgumentParser, hidden: bool = False) -> None:
    """--url, --key, --json. default=SUPPRESS: a flag given before the subcommand (`depot tasks --key K show 5`)
    is not reset by it; hidden on a group parser that runs a command of its own (`depot tasks` lists)."""
    def text(help: str) -> str:
        return argparse.SUPPRESS if hidden else help

    parser.add_argument("--url", default=argparse.SUPPRESS,
                        help=text("server URL (DEPOT_URL; default http://127.0.0.1:8080)"))
    parser.add_argument("--key", default=argparse.SUPPRESS, help=text("API key (DEPOT_API_KEY)"))
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help=text("print the API's JSON (for scripts)"))


CLIENT_FLAGS = argparse.ArgumentParser(add_help=False)  # the parent parser of every command using the API
add_client_flags(CLIENT_FLAGS)


def client_command(fn):
    """Run `fn(client, args)` over the API: a readable message and exit 1 on any API or connection error."""

    def run(args):
        args.json = getattr(args, "json", False)
        try:
            return fn(Client.from_args(args), args)
        except ClientError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            sys.exit(130)

    return run


# --- commands over HTTP or DB-direct --------------------------------------------------------------
# `user`, `apikey`, `profile set|list`: over HTTP (as above) when an API key is configured; else DB-direct
# on the database `make run` uses (var/ under the checkout, or DEPOT_DATABASE_URL), or with --local: this is
# how the first users and keys are made (bootstrap, recovery).

DUAL_DESCRIPTION = (
    "Over the HTTP API when an API key is configured (--key, DEPOT_API_KEY or key in ~/.config/depot/cli.toml;"
    " URL from --url, DEPOT_URL, the file or http://127.0.0.1:8080; an admin's key), else DB-direct on the"
    " database `make run` uses (bootstrap). --local forces DB-direct.")
LOCAL_FLAG = argparse.ArgumentParser(add_help=False)
LOCAL_FLAG.add_argument("--local", action="store_true", help="DB-direct, even with a key configured")


def _key_configured(args) -> bool:
    if getattr(args, "local", False):
        return False
    key = getattr(args, "key", None) or os.environ.get("DEPOT_API_KEY")
    if not key:
        try:
            key = read_config().get("key")
        except ClientError as exc:
            fail(str(exc))
    return bool(key)


def dual_command(http, local):
    """Run `http(client, args)` over the API when a key is configured, else `local(pool, args)` DB-direct."""
    over_http = client_command(http)

    def run(args):
        if _key_configured(args):
            return over_http(args)
        import asyncpg

        from app import users

        args.json = getattr(args, "json", False)
        settings = load_settings()
        try:
            migrate(settings)
            return asyncio.run(with_pool(settings, lambda pool: local(pool, args)))
        except users.UserError as exc:
            fail(exc.message)
        except BrokenPipeError:  # our stdout, not the database: main() ends quietly
            raise
        except (OSError, TimeoutError) as exc:  # the database is not there (wrong URL, down)
            fail(f"cannot reach the database: {exc}")
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # wrong credentials and the like
            fail(f"database error: {type(exc).__name__}: {exc}")

    return run
