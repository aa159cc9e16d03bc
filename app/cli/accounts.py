"""`depot user|apikey`: users and their API keys, over the HTTP API (an admin's key) or DB-direct (bootstrap)."""
from __future__ import annotations

import getpass
import sys
from urllib.parse import quote

from app.cli.client import table
from app.cli.common import CLIENT_FLAGS, DUAL_DESCRIPTION, LOCAL_FLAG, dual_command, emit, fail

ROLES = ["admin", "operator", "uploader", "viewer"]
USER_COLUMNS = [("Name", "USERNAME"), ("Role", "ROLE"), ("Key_created", "KEY CREATED"), ("Key_last_used", "LAST USED"),
                ("Has_password", "PASSWORD")]
MIN_PASSWORD = 8  # as the API's schema (app/schemas/users.py)


def _done(args, data, text: str) -> None:
    emit(args, data, lambda _: print(text))


def _password(args) -> str:
    password = args.password or getpass.getpass(f"New password for {args.name}: ")
    if len(password) < MIN_PASSWORD:
        fail(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _user_created(args, data: dict) -> None:
    key = data["results"].get("Api_key")
    if key and not args.json:
        print(f"user {args.name} created with role {args.role}; its API key, shown only this once:", file=sys.stderr)
        print(key, flush=True)  # alone on the last line, as `apikey create` prints it
        return
    _done(args, data, f"user {args.name} created with role {args.role}")


def _user_create_http(client, args):
    body = {"name": args.name, "role": args.role, "api_key": args.with_key}
    if args.password:
        body["password"] = _password(args)
    _user_created(args, client.request("POST", "users", body))


async def _user_create_local(pool, args):
    from app import users

    await users.create_user(pool, args.name, args.role, _password(args) if args.password else None)
    key = await users.create_api_key(pool, args.name) if args.with_key else None
    data = {"results": users.user_row(await users.get_user(pool, args.name))}
    if key:
        data["results"]["Api_key"] = key
    _user_created(args, data)


def _show_users(args, rows: list[dict]) -> None:
    def show(d):
        for r in d["results"]:
            for k in ("Key_created", "Key_last_used"):
                r[k] = r[k][:16].replace("T", " ") if r.get(k) else None
        table(d["results"], USER_COLUMNS, empty="(no users)")

    emit(args, {"results": rows}, show)


def _user_list_http(client, args):
    _show_users(args, client.get("users")["results"])


async def _user_list_local(pool, args):
    from app import users

    _show_users(args, [users.user_row(r) for r in await users.list_users(pool)])


def _user_password_http(client, args):
    data = client.request("PATCH", f"users/{quote(args.name, safe='')}", {"password": _password(args)})
    _done(args, data, f"password of {args.name} set")


async def _user_password_local(pool, args):
    from app import users

    await users.update_user(pool, args.name, password=_password(args))
    _done(args, {"results": {"Name": args.name}}, f"password of {args.name} set")


def _user_role_http(client, args):
    data = client.request("PATCH", f"users/{quote(args.name, safe='')}", {"role": args.role})
    _done(args, data, f"user {args.name} now has role {args.role}")


async def _user_role_local(pool, args):
    from app import users

    await users.update_user(pool, args.name, role=args.role)
    _done(args, {"results": {"Name": args.name, "Role": args.role}}, f"user {args.name} now has role {args.role}")


def _user_delete_http(client, args):
    data = client.request("DELETE", f"users/{quote(args.name, safe='')}")
    _done(args, data, f"user {args.name} deleted")


async def _user_delete_local(pool, args):
    from app import users

    await users.delete_user(pool, args.name)
    _done(args, {"results": {"Name": args.name}}, f"user {args.name} deleted")


def _show_new_key(args, name: str, key: str) -> None:
    """The key alone on the last line of stdout (scripts take `| tail -1`); --json prints {"results": ...}."""
    def show(d):
        print(f"New API key for {name} (the previous one no longer works):", file=sys.stderr)
        print(key, flush=True)

    emit(args, {"results": {"Name": name, "Api_key": key}}, show)


def _apikey_create_http(client, args):
    data = client.request("POST", f"users/{quote(args.name, safe='')}/apikey")
    _show_new_key(args, args.name, data["results"]["Api_key"])


async def _apikey_create_local(pool, args):
    from app import users

    _show_new_key(args, args.name, await users.create_api_key(pool, args.name))


def register(sub) -> None:
    flags, way = [CLIENT_FLAGS, LOCAL_FLAG], DUAL_DESCRIPTION
    user = sub.add_parser("user", help="manage users", description=way).add_subparsers(dest="user_command", required=True)
    p = user.add_parser("create", parents=flags, help="create a user", description=way)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--password", help="password for the web dashboard (optional)")
    p.add_argument("--with-key", action="store_true", help="also make its first API key (alone on the last line)")
    p.set_defaults(fn=dual_command(_user_create_http, _user_create_local))
    p = user.add_parser("list", parents=flags, help="list users", description=way)
    p.set_defaults(fn=dual_command(_user_list_http, _user_list_local))
    p = user.add_parser("password", parents=flags, help="set a user's dashboard password", description=way)
    p.add_argument("name")
    p.add_argument("--password")
    p.set_defaults(fn=dual_command(_user_password_http, _user_password_local))
    p = user.add_parser("role", aliases=["set-role"], parents=flags, help="change a user's role", description=way)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.set_defaults(fn=dual_command(_user_role_http, _user_role_local))
    p = user.add_parser("delete", parents=flags, help="delete a user (not the last admin)", description=way)
    p.add_argument("name")
    p.set_defaults(fn=dual_command(_user_delete_http, _user_delete_local))

    apikey = sub.add_parser("apikey", help="manage API keys", description=way).add_subparsers(
        dest="apikey_command", required=True)
    p = apikey.add_parser("create", parents=flags, description=way,
                          help="make a new API key for a user (replaces the old one; the key alone on the last line)")
    p.add_argument("name")
    p.set_defaults(fn=dual_command(_apikey_create_http, _apikey_create_local))
