"""The `depot` command.

Server-side commands (migrate, serve, worker, run) talk to the database directly, the same one `make run`
uses (the embedded server under var/ unless DEPOT_DATABASE_URL is set). `user` and `apikey` use the HTTP
API when an API key is configured, else that database directly (bootstrap); --local forces the latter.
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
from pathlib import Path

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


def _use_uvloop() -> None:
    # uvloop's event loop (libuv) costs the server and the worker less CPU per request and per
    # query than asyncio's own; both are otherwise unchanged.
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_serve(args) -> None:
    from aiohttp import web

    from app.logs import setup_logging
    from app.main import create_app

    settings = _settings(need_redis=True)
    setup_logging(settings)
    _prepare(settings)
    _use_uvloop()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=30,
        access_log=None,
        # `depot run --servers N`: N processes share the port; the kernel spreads the connections.
        reuse_port=args.reuse_port or None,
        print=lambda msg: print(f"depot: serving on {settings.base_url} ({settings.host}:{settings.port})", flush=True),
    )


def cmd_worker(args) -> None:
    from app.logs import setup_logging
    from workers.settings import Worker, worker_settings

    settings = _settings(need_redis=True)
    setup_logging(settings)
    asyncio.run(db.migrate(settings.database_url))
    _use_uvloop()
    Worker(**worker_settings(settings), burst=args.burst).run()


def default_servers() -> int:
    # One server process per core (Python runs one core per process), at most 4 by default.
    return max(1, min(os.cpu_count() or 1, 4))


def servers_env(metrics_dir: Path) -> dict:
    """What several server processes need to answer /metrics as one (app/metrics.py): prometheus-client's
    multiprocess files in metrics_dir (emptied: counters start at zero) and one start for the task counts."""
    import shutil
    import time

    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DEPOT_METRICS_SINCE": str(time.time() - 3600)}


def cmd_run(args) -> None:
    """Everything in the foreground: embedded services (unless configured), servers and workers."""
    if args.servers < 1 or args.workers < 0:
        _fail("--servers must be at least 1 and --workers at least 0")
    settings = _settings(need_redis=True)
    _prepare(settings)
    env = dict(os.environ, DEPOT_DATABASE_URL=settings.database_url, DEPOT_REDIS_URL=settings.redis_url)
    depot = [sys.executable, "-m", "app.cli"]
    serve = ["serve"]
    server_env = env
    if args.servers > 1:
        serve.append("--reuse-port")
        server_env = dict(env, **servers_env(settings.var_dir / "run" / "metrics"))
    # The children get a process group of their own: a Ctrl-C reaches only this process, which then
    # stops each child once with SIGTERM (SIGINT from the terminal and then SIGTERM from here made the
    # server exit 1 mid-shutdown).
    children = [subprocess.Popen(depot + serve, env=server_env, process_group=0) for _ in range(args.servers)]
    for i in range(args.workers):
        # One private metrics port per worker process: DEPOT_WORKER_METRICS_PORT, +1, +2, …
        port = {"DEPOT_WORKER_METRICS_PORT": str(settings.worker_metrics_port + i)} if settings.worker_metrics_port else {}
        children.append(subprocess.Popen(depot + ["worker"], env=dict(env, **port), process_group=0))

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


# --- users, keys, profiles -------------------------------------------------------------------------
# Two paths, chosen per command (see `depot user --help`); `profile set|list` work the same way:
# - HTTP (admin endpoints /api/v2/users) when an API key is configured: --key, DEPOT_API_KEY or key in
#   ~/.config/depot/cli.toml|ini (URL from --url, DEPOT_URL, the file, or http://127.0.0.1:8080), as the
#   other client commands do; the key must be an admin's.
# - DB-direct on the database `make run` uses (var/ under the checkout, or DEPOT_DATABASE_URL) when no key
#   is configured, or with --local: this is how the first users and keys are made (bootstrap, recovery).

USER_COLUMNS = [("Name", "USERNAME"), ("Role", "ROLE"), ("Key_created", "KEY CREATED"), ("Key_last_used", "LAST USED"),
                ("Has_password", "PASSWORD")]


def _user_client(args):
    """The HTTP client when the command should go over HTTP, else None (DB-direct)."""
    from app.client import Client, ClientError, read_config

    if getattr(args, "local", False):
        return None
    key = getattr(args, "key", None) or os.environ.get("DEPOT_API_KEY")
    if not key:
        try:
            key = read_config().get("key")
        except ClientError as exc:
            _fail(str(exc))
    return Client.from_args(args) if key else None


def _dual_command(http, local):
    """Run `http(client, args)` over the API when a key is configured, else `local(pool, args)` DB-direct."""

    def run(args):
        import asyncpg

        from app import users
        from app.client import ClientError

        args.json = getattr(args, "json", False)
        client = _user_client(args)
        if client is not None:
            try:
                return http(client, args)
            except ClientError as exc:
                _fail(str(exc))
        settings = _settings()
        try:
            asyncio.run(db.migrate(settings.database_url))
            return asyncio.run(_with_pool(settings, lambda pool: local(pool, args)))
        except users.UserError as exc:
            _fail(exc.message)
        except BrokenPipeError:  # our stdout, not the database: main() ends quietly
            raise
        except (OSError, TimeoutError) as exc:  # the database is not there (wrong URL, down)
            _fail(f"cannot reach the database: {exc}")
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # wrong credentials and the like
            _fail(f"database error: {type(exc).__name__}: {exc}")

    return run


def _print_user_result(args, data, text: str) -> None:
    from app.client import print_json

    if args.json:
        print_json(data)
    else:
        print(text)


def _user_created(args, data: dict) -> None:
    key = data["results"].get("Api_key")
    if key and not args.json:
        print(f"user {args.name} created with role {args.role}; its API key, shown only this once:", file=sys.stderr)
        print(key, flush=True)  # alone on the last line, as `apikey create` prints it
        return
    _print_user_result(args, data, f"user {args.name} created with role {args.role}")


def _user_create_http(client, args):
    body = {"name": args.name, "role": args.role, "api_key": args.with_key}
    if args.password:
        body["password"] = _password(args)
    _user_created(args, client.request("POST", "users", body))


async def _user_create_local(pool, args):
    from app import users
    from app.api.users import user_row

    await users.create_user(pool, args.name, args.role, _password(args) if args.password else None)
    key = await users.create_api_key(pool, args.name) if args.with_key else None
    data = {"results": user_row(await users.get_user(pool, args.name))}
    if key:
        data["results"]["Api_key"] = key
    _user_created(args, data)


def _show_users(args, rows: list[dict]) -> None:
    from app.client import print_json, table

    if args.json:
        print_json({"results": rows})
        return
    for r in rows:
        for k in ("Key_created", "Key_last_used"):
            r[k] = r[k][:16].replace("T", " ") if r.get(k) else None
    table(rows, USER_COLUMNS, empty="(no users)")


def _user_list_http(client, args):
    _show_users(args, client.get("users")["results"])


async def _user_list_local(pool, args):
    from app import users
    from app.api.users import user_row

    _show_users(args, [user_row(r) for r in await users.list_users(pool)])


MIN_PASSWORD = 8  # as the API's schema (app/schemas/users.py)


def _password(args) -> str:
    import getpass

    password = args.password or getpass.getpass(f"New password for {args.name}: ")
    if len(password) < MIN_PASSWORD:
        _fail(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _user_password_http(client, args):
    from urllib.parse import quote

    data = client.request("PATCH", f"users/{quote(args.name, safe='')}", {"password": _password(args)})
    _print_user_result(args, data, f"password of {args.name} set")


async def _user_password_local(pool, args):
    from app import users

    await users.update_user(pool, args.name, password=_password(args))
    _print_user_result(args, {"results": {"Name": args.name}}, f"password of {args.name} set")


def _user_role_http(client, args):
    from urllib.parse import quote

    data = client.request("PATCH", f"users/{quote(args.name, safe='')}", {"role": args.role})
    _print_user_result(args, data, f"user {args.name} now has role {args.role}")


async def _user_role_local(pool, args):
    from app import users

    await users.update_user(pool, args.name, role=args.role)
    _print_user_result(args, {"results": {"Name": args.name, "Role": args.role}},
                       f"user {args.name} now has role {args.role}")


def _user_delete_http(client, args):
    from urllib.parse import quote

    data = client.request("DELETE", f"users/{quote(args.name, safe='')}")
    _print_user_result(args, data, f"user {args.name} deleted")


async def _user_delete_local(pool, args):
    from app import users

    await users.delete_user(pool, args.name)
    _print_user_result(args, {"results": {"Name": args.name}}, f"user {args.name} deleted")


def _show_new_key(args, name: str, key: str) -> None:
    """The key alone on the last line of stdout (scripts take `| tail -1`); --json prints {"results": ...}."""
    from app.client import print_json

    if args.json:
        print_json({"results": {"Name": name, "Api_key": key}})
        return
    print(f"New API key for {name} (the previous one no longer works):", file=sys.stderr)
    print(key, flush=True)


def _apikey_create_http(client, args):
    from urllib.parse import quote

    data = client.request("POST", f"users/{quote(args.name, safe='')}/apikey")
    _show_new_key(args, args.name, data["results"]["Api_key"])


async def _apikey_create_local(pool, args):
    from app import users

    _show_new_key(args, args.name, await users.create_api_key(pool, args.name))


cmd_user_create = _dual_command(_user_create_http, _user_create_local)
cmd_user_list = _dual_command(_user_list_http, _user_list_local)
cmd_user_password = _dual_command(_user_password_http, _user_password_local)
cmd_user_role = _dual_command(_user_role_http, _user_role_local)
cmd_user_delete = _dual_command(_user_delete_http, _user_delete_local)
cmd_apikey_create = _dual_command(_apikey_create_http, _apikey_create_local)


# --- profiles ------------------------------------------------------------------------------------


def _profile_values(args) -> tuple[str, dict]:
    """The options given, validated as the API does: (name, {Package_exclude: "a,b", ...})."""
    from marshmallow import ValidationError

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
    return values.pop("name"), values


def _show_profile(args, profile: dict, created: bool) -> None:
    from app import profiles
    from app.client import print_json

    if args.json:
        print_json({"results": [profile]})
        return
    print(f"profile {profile['Name']} {'created' if created else 'updated'}")
    for key in profiles.FIELDS:
        print(f"  {key}: {profile[key]}")


def _profile_set_http(client, args):
    """Create the profile, or change only the options given (PUT, then POST when it does not exist)."""
    from urllib.parse import quote

    from app.client import ClientError

    name, values = _profile_values(args)
    try:
        data, created = client.request("PUT", f"profile/{quote(name, safe='')}", values), False
    except ClientError as exc:
        if exc.status != 404:
            raise
        data, created = client.request("POST", "profile", {"name": name, **values}), True
    _show_profile(args, data["results"][0], created)


async def _profile_set_local(pool, args):
    from app import profiles

    name, values = _profile_values(args)
    try:
        profile, created = await profiles.set_profile(pool, name, values)
    except profiles.ProfileError as exc:
        _fail(exc.message)
    _show_profile(args, profile, created)


PROFILE_COLUMNS = [("Name", "NAME"), ("Package_exclude", "EXCLUDE"), ("Package_exclude_major", "EXCLUDE MAJOR"),
                   ("Service_reload", "RELOAD"), ("Service_restart", "RESTART")]


def _show_profiles(args, rows: list[dict]) -> None:
    from app.client import print_json, table

    if args.json:
        print_json({"results": rows})
    else:
        table(rows, PROFILE_COLUMNS, empty="(no profiles)")


def _profile_list_http(client, args):
    from urllib.parse import quote

    names = [p["Name"] for p in client.get("profile")["results"]]
    _show_profiles(args, [client.get(f"profile/{quote(n, safe='')}")["results"][0] for n in names])


async def _profile_list_local(pool, args):
    from app import profiles

    _show_profiles(args, [await profiles.get_profile(pool, p["Name"]) for p in await profiles.list_profiles(pool)])


cmd_profile_set = _dual_command(_profile_set_http, _profile_set_local)
cmd_profile_list = _dual_command(_profile_list_http, _profile_list_local)


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
    p = sub.add_parser("serve", help="run the HTTP server")
    p.add_argument("--reuse-port", action="store_true",
                   help="share the port with other `depot serve` processes (SO_REUSEPORT; `depot run --servers`)")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("worker", help="run an arq worker")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(fn=cmd_worker)
    p = sub.add_parser("run", help="run servers and worker(s) in the foreground (what `make run` does)")
    p.add_argument("--servers", type=int, default=default_servers(),
                   help="server processes sharing the port (default: one per core, at most 4)")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(fn=cmd_run)

    way = ("Over the HTTP API when an API key is configured (--key, DEPOT_API_KEY or key in ~/.config/depot/cli.toml;"
           " URL from --url, DEPOT_URL, the file or http://127.0.0.1:8080; an admin's key), else DB-direct on the"
           " database `make run` uses (bootstrap). --local forces DB-direct.")
    ucommon = argparse.ArgumentParser(add_help=False)
    ucommon.add_argument("--url", default=argparse.SUPPRESS, help="server URL (DEPOT_URL)")
    ucommon.add_argument("--key", default=argparse.SUPPRESS, help="API key (DEPOT_API_KEY): use the HTTP API")
    ucommon.add_argument("--local", action="store_true", help="DB-direct, even with a key configured")
    ucommon.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    user = sub.add_parser("user", help="manage users", description=way).add_subparsers(dest="user_command", required=True)
    p = user.add_parser("create", parents=[ucommon], help="create a user", description=way)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["admin", "operator", "uploader", "viewer"])
    p.add_argument("--password", help="password for the web dashboard (optional)")
    p.add_argument("--with-key", action="store_true", help="also make its first API key (alone on the last line)")
    p.set_defaults(fn=cmd_user_create)
    p = user.add_parser("list", parents=[ucommon], help="list users", description=way)
    p.set_defaults(fn=cmd_user_list)
    p = user.add_parser("password", parents=[ucommon], help="set a user's dashboard password", description=way)
    p.add_argument("name")
    p.add_argument("--password")
    p.set_defaults(fn=cmd_user_password)
    p = user.add_parser("role", aliases=["set-role"], parents=[ucommon], help="change a user's role", description=way)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["admin", "operator", "uploader", "viewer"])
    p.set_defaults(fn=cmd_user_role)
    p = user.add_parser("delete", parents=[ucommon], help="delete a user (not the last admin)", description=way)
    p.add_argument("name")
    p.set_defaults(fn=cmd_user_delete)

    apikey = sub.add_parser("apikey", help="manage API keys", description=way).add_subparsers(
        dest="apikey_command", required=True)
    p = apikey.add_parser("create", parents=[ucommon], description=way,
                          help="make a new API key for a user (replaces the old one; the key alone on the last line)")
    p.add_argument("name")
    p.set_defaults(fn=cmd_apikey_create)

    profile = sub.add_parser("profile", help="manage host profiles", description=way).add_subparsers(dest="profile_command", required=True)
    p = profile.add_parser("set", parents=[ucommon], description=way.replace("an admin's key", "an operator's key"),
                           help="create a profile or change the options given (comma-separated or repeated)")
    p.add_argument("name")
    p.add_argument("--exclude", action="append", help="packages never updated (regexes, e.g. 'linux-image.*')")
    p.add_argument("--exclude-major", action="append", help="packages not updated across a major version")
    p.add_argument("--service-reload", action="append", help="services reloaded after an update")
    p.add_argument("--service-restart", action="append", help="services restarted after an update ('svc:pkg' allowed)")
    p.add_argument("--notes")
    p.set_defaults(fn=cmd_profile_set)
    profile.add_parser("list", parents=[ucommon], help="list profiles",
                       description=way.replace("an admin's key", "any user's key")).set_defaults(fn=cmd_profile_list)
    add_client_commands(sub)  # hosts, tasks, queues (issue 4)
    # repo, snapshot, env, upload, profile repos (issue 3): HTTP clients too.
    from app.repos.cli import register as add_repo_commands, register_profile_repos

    add_repo_commands(sub)
    register_profile_repos(profile)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except BrokenPipeError:
        # `depot tasks | head`: the reader went away; no traceback, and none again when Python flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
