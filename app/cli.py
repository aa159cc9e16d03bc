"""The `depot` command.

Server-side commands (migrate, serve, worker, run, user, apikey) talk to the database directly,
the same one `make run` uses (the embedded server under var/ unless DEPOT_DATABASE_URL is set).
"""
from __future__ import annotations

import argparse
import asyncio
import json
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


# --- HTTP client commands: hosts, tasks, queues (issue 4) -----------------------------------------
# These talk to the HTTP API (app/client.py), so they work from any machine with a key.
# Other capabilities add theirs the same way: Client.from_args(args).request(...), table(), print_json().

TASK_COLUMNS = [("Id", "ID"), ("Kind", "KIND"), ("Target", "TARGET"), ("Status", "STATUS"),
                ("Progress", "%"), ("Duration", "DURATION"), ("Date", "DATE"), ("Time", "TIME"),
                ("Progress_text", "PROGRESS"), ("Error", "ERROR")]
SCHEDULE_COLUMNS = [("Id", "ID"), ("Kind", "KIND"), ("Target", "TARGET"), ("Status", "STATUS"),
                    ("Cron", "CRON"), ("Next_run", "NEXT RUN"), ("Last_run", "LAST RUN")]
HOST_COLUMNS = [("Id", "ID"), ("Hostname", "HOSTNAME"), ("Ip", "IP"), ("Os", "OS"), ("Os_version", "VERSION"),
                ("Kernel", "KERNEL"), ("Arch", "ARCH"), ("Profile", "PROFILE"), ("Env", "ENV"),
                ("Online_status", "STATUS"), ("Reboot_required", "REBOOT")]
UPDATE_COLUMNS = [("Name", "PACKAGE"), ("Current_version", "INSTALLED"), ("Version", "AVAILABLE"),
                  ("Repository", "REPOSITORY")]


def _client_command(fn):
    """Run an HTTP command: readable message and exit 1 on any API or connection error."""

    def run(args):
        from app.client import Client, ClientError

        args.json = getattr(args, "json", False)
        try:
            return fn(Client.from_args(args), args)
        except ClientError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            sys.exit(130)

    return run


def _emit(args, data, show) -> None:
    from app.client import print_json

    if args.json:
        print_json(data)
    else:
        show(data)


@_client_command
def cmd_tasks_list(client, args) -> None:
    from app.client import table

    which = "" if args.status == "all" else args.status
    data = client.get(f"tasks/{which}", page=args.page, per_page=args.per_page, kind=args.kind)

    def show(d):
        table(d["results"], SCHEDULE_COLUMNS if args.status == "scheduled" else TASK_COLUMNS)
        paging = d.get("pagination") or {}
        print(f"page {paging.get('page', 1)}, {len(d['results'])} of {paging.get('total', len(d['results']))} task(s)")

    _emit(args, data, show)


def _show_task(row: dict) -> None:
    for key in ("Id", "Kind", "Target", "Type", "Status", "Progress", "Progress_text", "Duration", "Date", "Time",
                "Requested_by", "Worker", "Attempts", "Cron", "Next_run", "Last_run", "Error", "Raw_params"):
        if row.get(key) not in (None, ""):
            print(f"{key.replace('_', ' '):<14} {row[key]}")


@_client_command
def cmd_tasks_show(client, args) -> None:
    if args.watch:
        return _watch(client, args)
    _emit(args, client.get(f"task/{args.id}"), lambda d: _show_task(d["results"]))


def _watch(client, args) -> None:
    """Follow a task until it finishes; the exit code says how it ended (0 done, 1 otherwise)."""
    import time

    from app.client import progress_bar

    tty = sys.stdout.isatty() and not args.json
    last = None
    while True:
        row = client.get(f"task/{args.id}")["results"]
        line = f"task {row['Id']} {row['Kind']} {row['Status']:<8} {progress_bar(row['Progress'])} {row.get('Progress_text') or ''}"
        if args.json:
            if row != last:
                print(json.dumps(row), flush=True)
        elif tty:
            print("\r" + line[:150].ljust(150), end="", flush=True)
        elif line != last:
            print(line, flush=True)
        last = row if args.json else line
        if row["Status"] not in ("queued", "running"):
            if tty:
                print()
            if row["Status"] == "error":
                print(f"depot: task {row['Id']} failed: {row.get('Error')}", file=sys.stderr)
            sys.exit(0 if row["Status"] in ("done", "scheduled", "disabled") else 1)
        time.sleep(args.interval)


@_client_command
def cmd_tasks_stop(client, args) -> None:
    data = client.request("POST", f"task/{args.id}/stop")
    _emit(args, data, lambda d: print(d["results"]))
    if args.watch:
        _watch(client, args)


def _simple_task_action(method: str, action: str):
    @_client_command
    def run(client, args) -> None:
        _emit(args, client.request(method, f"task/{args.id}/{action}"), lambda d: print(d["results"]))

    return run


@_client_command
def cmd_task_schedule(client, args) -> None:
    params: dict = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--param expects key=value, got {item!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    body = {"kind": args.kind, "cron": args.cron, "params": params, "enabled": not args.disabled}
    if args.target:
        body["target"] = args.target
    data = client.request("POST", "task/schedule", body)
    _emit(args, data, lambda d: print(f"task {d['results']['Id']} scheduled ({d['results']['Cron']}),"
                                      f" next run {d['results']['Next_run']}"))


@_client_command
def cmd_queues(client, args) -> None:
    from app.client import table

    def show(d):
        r = d["results"]
        table(r["queues"], [("name", "QUEUE"), ("depth", "DEPTH"), ("in_progress", "RUNNING"),
                            ("oldest_waiting_seconds", "OLDEST WAIT (s)"), ("done_last_hour", "DONE 1h"),
                            ("failed_last_hour", "FAILED 1h"), ("stopped_last_hour", "STOPPED 1h")])
        print()
        table([k for q in r["queues"] for k in q["kinds"]],
              [("kind", "KIND"), ("queued", "QUEUED"), ("running", "RUNNING"), ("done_last_hour", "DONE 1h"),
               ("failed_last_hour", "FAILED 1h")], empty="(no tasks in the last hour)")
        print()
        table(r["workers"], [("worker_id", "WORKER"), ("state", "STATE"), ("last_heartbeat", "LAST HEARTBEAT"),
                             ("heartbeat_age_seconds", "AGE (s)"), ("running_tasks", "RUNNING")],
              empty="(no workers)")

    _emit(args, client.get("queues"), show)


@_client_command
def cmd_hosts_list(client, args) -> None:
    from app.client import table

    from urllib.parse import quote

    def q(v):
        return quote(v, safe="")

    if args.package:
        path = f"hosts/package/{q(args.package)}" + (f"/{q(args.version)}" if args.version else "")
    elif args.os:
        path = f"hosts/os/{q(args.os)}" + (f"/{q(args.os_version)}" if args.os_version else "")
    elif args.outdated or args.uptodate:
        path = "hosts/outdated" if args.outdated else "hosts/uptodate"
    else:
        path = "hosts/"
        for flag in ("kernel", "arch", "profile", "env"):
            if getattr(args, flag):
                path = f"hosts/{'environment' if flag == 'env' else flag}/{q(getattr(args, flag))}"
    data = client.get(path, page=args.page, per_page=args.per_page)

    def show(d):
        rows = d.get("results") or []
        if args.package:
            rows = [{"Id": r.get("id"), "Hostname": r.get("hostname"),
                     "Packages": ", ".join(f"{k} {v}" for k, v in (r.get("packages") or {}).items())} for r in rows]
            table(rows, [("Id", "ID"), ("Hostname", "HOSTNAME"), ("Packages", "PACKAGES")])
        else:
            for r in rows:
                if isinstance(r.get("Available_updates"), dict):
                    r["Updates"] = r["Available_updates"].get("Total")
            cols = HOST_COLUMNS + ([("Updates", "UPDATES")] if args.outdated or args.uptodate else [])
            table(rows, cols)
        paging = d.get("pagination")
        if paging and paging.get("total", 0) > len(rows):
            print(f"page {paging['page']}, {len(rows)} of {paging['total']} host(s)")
        else:
            print(f"{len(rows)} host(s)")

    _emit(args, data, show)


@_client_command
def cmd_hosts_show(client, args) -> None:
    from app.client import table

    host = client.get(f"host/{args.id}")["results"]
    updates = client.get(f"host/{args.id}/available").get("results") or []

    def show(d):
        for key, value in d["host"].items():
            if not isinstance(value, (dict, list)):
                print(f"{key.replace('_', ' '):<20} {value}")
        print(f"\n{len(d['updates'])} available update(s)")
        table(d["updates"], UPDATE_COLUMNS, empty="(up to date)")

    _emit(args, {"host": host, "updates": updates}, show)


def add_client_commands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    # default=SUPPRESS: a flag given before the subcommand (`depot tasks --key K show 5`) is not reset by it.
    common.add_argument("--url", default=argparse.SUPPRESS, help="server URL (DEPOT_URL; default http://127.0.0.1:8080)")
    common.add_argument("--key", default=argparse.SUPPRESS, help="API key (DEPOT_API_KEY)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON (for scripts)")

    tasks = sub.add_parser("tasks", aliases=["task"], help="list, show, follow, stop and schedule tasks (HTTP)")
    tsub = tasks.add_subparsers(dest="tasks_command")
    p = tsub.add_parser("list", parents=[common], help="list tasks")
    for parser in (tasks, p):
        parser.add_argument("--status", default="all", choices=["all", "running", "queued", "scheduled", "done"])
        parser.add_argument("--kind")
        parser.add_argument("--page", type=int, default=1)
        parser.add_argument("--per-page", type=int, default=50)
        parser.set_defaults(fn=cmd_tasks_list)
    # `depot tasks` / `depot hosts` alone list too, so the group parsers take the common flags as well.
    tasks.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    tasks.add_argument("--key", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    tasks.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p = tsub.add_parser("show", parents=[common], help="one task (--watch follows its progress)")
    p.add_argument("id")
    p.add_argument("--watch", "-w", action="store_true", help="follow progress until the task ends")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(fn=cmd_tasks_show)
    p = tsub.add_parser("stop", parents=[common], help="stop a queued or running task")
    p.add_argument("id")
    p.add_argument("--watch", "-w", action="store_true", help="then follow it until it has stopped")
    p.add_argument("--interval", type=float, default=0.5)
    p.set_defaults(fn=cmd_tasks_stop)
    for action, method in (("enable", "POST"), ("disable", "POST"), ("delete", "DELETE")):
        p = tsub.add_parser(action, parents=[common], help=f"{action} a scheduled task")
        p.add_argument("id")
        p.set_defaults(fn=_simple_task_action(method, action))
    p = tsub.add_parser("schedule", parents=[common], help="create a recurring task")
    p.add_argument("kind", choices=["rebuild", "snapshot_create", "env_point", "retention", "pool_gc"])
    p.add_argument("--cron", required=True, help="5 fields, UTC: minute hour day month weekday, e.g. '0 3 * * *'")
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                   help="task parameter (VALUE parsed as JSON when it can be), e.g. -p snapshot=12")
    p.add_argument("--target", help="lock target (derived from the params when omitted)")
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p.set_defaults(fn=cmd_task_schedule)

    p = sub.add_parser("queues", parents=[common], help="queue depths, outcomes of the last hour, workers (HTTP)")
    p.set_defaults(fn=cmd_queues)

    hosts = sub.add_parser("hosts", help="list and filter hosts, or show one with its updates (HTTP)")
    hsub = hosts.add_subparsers(dest="hosts_command")
    p = hsub.add_parser("list", parents=[common], help="list hosts")
    for parser in (hosts, p):
        parser.add_argument("--os")
        parser.add_argument("--os-version")
        parser.add_argument("--kernel")
        parser.add_argument("--arch")
        parser.add_argument("--profile")
        parser.add_argument("--env")
        parser.add_argument("--package", help="hosts with this package (prefix match)")
        parser.add_argument("--version", help="with --package: version prefix")
        parser.add_argument("--outdated", action="store_true")
        parser.add_argument("--uptodate", action="store_true")
        parser.add_argument("--page", type=int, default=1)
        parser.add_argument("--per-page", type=int, default=100, help="hosts per page (default 100)")
        parser.set_defaults(fn=cmd_hosts_list)
    hosts.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    hosts.add_argument("--key", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    hosts.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p = hsub.add_parser("show", parents=[common], help="one host and its available updates")
    p.add_argument("id")
    p.set_defaults(fn=cmd_hosts_show)


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
    add_client_commands(sub)  # hosts, tasks, queues (issue 4)
    # repo, snapshot, env, upload, profile repos (issue 3): HTTP clients too.
    from app.repos.cli import register as add_repo_commands, register_profile_repos

    add_repo_commands(sub)
    register_profile_repos(profile)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
