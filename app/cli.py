"""The `depot` command.

Server-side commands (migrate, serve, worker, run, user, apikey) talk to the database directly,
the same one `make run` uses (the embedded server under var/ unless DEPOT_DATABASE_URL is set).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import warnings

from app import db, embedded
from app.settings import Settings

warnings.filterwarnings("ignore", module="platformdirs")


def _settings(need_redis: bool = False) -> Settings:
    settings = Settings.from_env()
    if not settings.database_url:
        settings = Settings.from_env(database_url=embedded.postgres_url(settings.var_dir))
    if need_redis and not settings.redis_url:
        from dataclasses import replace

        settings = replace(settings, redis_url=embedded.redis_url(settings.var_dir))
    return settings


async def _with_pool(settings: Settings, fn):
    pool = await db.create_pool(settings, min_size=1, max_size=2)
    try:
        return await fn(pool)
    finally:
        await pool.close()


def _fail(message: str, code: int = 1):
    print(f"depot: {message}", file=sys.stderr)
    sys.exit(code)


# --- service commands ----------------------------------------------------------------------------


def cmd_migrate(args) -> None:
    settings = _settings()
    applied = asyncio.run(db.migrate(settings.database_url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def _prepare(settings: Settings) -> None:
    """Migrate, and on the very first start create `admin` and print its key once."""
    from app import users

    asyncio.run(db.migrate(settings.database_url))
    key = asyncio.run(_with_pool(settings, users.ensure_admin))
    if key:
        print("Created user 'admin' (role admin). Its API key, shown only this once:", flush=True)
        print(key, flush=True)


def cmd_serve(args) -> None:
    from aiohttp import web

    from app.logs import setup_logging
    from app.main import create_app

    settings = _settings(need_redis=True)
    setup_logging(settings)
    _prepare(settings)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=30,
        access_log=None,
        print=lambda msg: print(f"depot: serving on {settings.base_url} ({settings.host}:{settings.port})", flush=True),
    )


def cmd_worker(args) -> None:
    from arq.worker import Worker

    from app.logs import setup_logging
    from workers.settings import worker_settings

    settings = _settings(need_redis=True)
    setup_logging(settings)
    asyncio.run(db.migrate(settings.database_url))
    Worker(**worker_settings(settings), burst=args.burst).run()


def cmd_run(args) -> None:
    """Everything in the foreground: embedded services (unless configured), server and workers."""
    settings = _settings(need_redis=True)
    _prepare(settings)
    env = dict(os.environ, DEPOT_DATABASE_URL=settings.database_url, DEPOT_REDIS_URL=settings.redis_url)
    depot = [sys.executable, "-m", "app.cli"]
    children = [subprocess.Popen(depot + ["serve"], env=env)]
    children += [subprocess.Popen(depot + ["worker"], env=env) for _ in range(args.workers)]

    def stop(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while children:
        for child in list(children):
            try:
                rc = child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            children.remove(child)
            if rc not in (0, -signal.SIGTERM, -signal.SIGINT):
                code = rc or 1
                stop(None, None)  # one part died: stop the rest rather than run half a service
    print("depot: stopped", flush=True)
    sys.exit(code)


# --- users and keys ------------------------------------------------------------------------------


def cmd_user_create(args) -> None:
    from app import users

    async def go(pool):
        await users.create_user(pool, args.name, args.role, args.password)

    _run_user_command(go)
    print(f"user {args.name} created with role {args.role}")


def cmd_user_list(args) -> None:
    from app import users

    rows = _run_user_command(lambda pool: users.list_users(pool))
    print(f"{'USERNAME':<24} {'ROLE':<9} {'KEY CREATED':<20} LAST USED")
    for r in rows:
        created = r["key_created_at"].strftime("%Y-%m-%d %H:%M") if r["key_created_at"] else "-"
        used = r["last_used_at"].strftime("%Y-%m-%d %H:%M") if r["last_used_at"] else "-"
        print(f"{r['username']:<24} {r['role']:<9} {created:<20} {used}")


def cmd_user_password(args) -> None:
    import getpass

    from app import users

    password = args.password or getpass.getpass(f"New password for {args.name}: ")
    _run_user_command(lambda pool: users.set_password(pool, args.name, password))
    print(f"password of {args.name} set")


def cmd_apikey_create(args) -> None:
    from app import users

    key = _run_user_command(lambda pool: users.create_api_key(pool, args.name))
    print(f"New API key for {args.name} (the previous one no longer works):", file=sys.stderr)
    print(key)


def _run_user_command(fn):
    from app import users

    settings = _settings()
    asyncio.run(db.migrate(settings.database_url))
    try:
        return asyncio.run(_with_pool(settings, fn))
    except users.UserError as exc:
        _fail(str(exc))


# --- profiles ------------------------------------------------------------------------------------


def cmd_profile_set(args) -> None:
    """Create the profile, or change only the options given."""
    from marshmallow import ValidationError

    from app import profiles
    from app.schemas.profiles import ProfileCreate

    raw = {"name": args.name}
    for option, key in (("exclude", "Package_exclude"), ("exclude_major", "Package_exclude_major"),
                        ("service_reload", "Service_reload"), ("service_restart", "Service_restart"),
                        ("notes", "Notes")):
        value = getattr(args, option)
        if value is not None:
            raw[key] = value if option == "notes" else [v for item in value for v in item.split(",")]
    try:
        values = ProfileCreate().load(raw)
    except ValidationError as exc:
        _fail(f"invalid profile: {exc.messages}")
    name = values.pop("name")
    settings = _settings()
    asyncio.run(db.migrate(settings.database_url))
    try:
        profile, created = asyncio.run(_with_pool(settings, lambda pool: profiles.set_profile(pool, name, values)))
    except profiles.ProfileError as exc:
        _fail(exc.message)
    print(f"profile {name} {'created' if created else 'updated'}")
    for key in profiles.FIELDS:
        print(f"  {key}: {profile[key]}")


def cmd_profile_list(args) -> None:
    from app import profiles

    settings = _settings()
    asyncio.run(db.migrate(settings.database_url))

    async def go(pool):
        return [await profiles.get_profile(pool, p["Name"]) for p in await profiles.list_profiles(pool)]

    rows = asyncio.run(_with_pool(settings, go))
    print(f"{'NAME':<24} {'EXCLUDE':<28} {'EXCLUDE MAJOR':<20} {'RELOAD':<16} RESTART")
    for p in rows:
        print(f"{p['Name']:<24} {p['Package_exclude']:<28} {p['Package_exclude_major']:<20} {p['Service_reload']:<16}"
              f" {p['Service_restart']}")


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depot", description="Depot package repository and fleet inventory server")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    sub.add_parser("serve", help="run the HTTP server").set_defaults(fn=cmd_serve)
    p = sub.add_parser("worker", help="run an arq worker")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(fn=cmd_worker)
    p = sub.add_parser("run", help="run server and worker(s) in the foreground (what `make run` does)")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(fn=cmd_run)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    p = user.add_parser("create", help="create a user")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["admin", "operator", "uploader", "viewer"])
    p.add_argument("--password", help="password for the web dashboard (optional)")
    p.set_defaults(fn=cmd_user_create)
    user.add_parser("list", help="list users").set_defaults(fn=cmd_user_list)
    p = user.add_parser("password", help="set a user's dashboard password")
    p.add_argument("name")
    p.add_argument("--password")
    p.set_defaults(fn=cmd_user_password)

    apikey = sub.add_parser("apikey", help="manage API keys").add_subparsers(dest="apikey_command", required=True)
    p = apikey.add_parser("create", help="make a new API key for a user (replaces the old one)")
    p.add_argument("name")
    p.set_defaults(fn=cmd_apikey_create)

    profile = sub.add_parser("profile", help="manage host profiles").add_subparsers(dest="profile_command", required=True)
    p = profile.add_parser("set", help="create a profile or change the options given (comma-separated or repeated)")
    p.add_argument("name")
    p.add_argument("--exclude", action="append", help="packages never updated (regexes, e.g. 'linux-image.*')")
    p.add_argument("--exclude-major", action="append", help="packages not updated across a major version")
    p.add_argument("--service-reload", action="append", help="services reloaded after an update")
    p.add_argument("--service-restart", action="append", help="services restarted after an update ('svc:pkg' allowed)")
    p.add_argument("--notes")
    p.set_defaults(fn=cmd_profile_set)
    profile.add_parser("list", help="list profiles").set_defaults(fn=cmd_profile_list)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
