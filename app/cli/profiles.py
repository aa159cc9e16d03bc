"""`depot profile set|list|repos`: host profiles. set and list go over the HTTP API or DB-direct, as the user
commands do; repos over the API only."""
from __future__ import annotations

from urllib.parse import quote

from app.cli.client import ClientError, table
from app.cli.common import CLIENT_FLAGS, DUAL_DESCRIPTION, LOCAL_FLAG, client_command, dual_command, emit, fail

PROFILE_COLUMNS = [("Name", "NAME"), ("Package_exclude", "EXCLUDE"), ("Package_exclude_major", "EXCLUDE MAJOR"),
                   ("Service_reload", "RELOAD"), ("Service_restart", "RESTART")]


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
        fail(f"invalid profile: {exc.messages}")
    return values.pop("name"), values


def _show_profile(args, profile: dict, created: bool) -> None:
    from app import profiles

    def show(d):
        print(f"profile {profile['Name']} {'created' if created else 'updated'}")
        for key in profiles.FIELDS:
            print(f"  {key}: {profile[key]}")

    emit(args, {"results": [profile]}, show)


def _profile_set_http(client, args):
    """Create the profile, or change only the options given (PUT, then POST when it does not exist)."""
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
        fail(exc.message)
    _show_profile(args, profile, created)


def _show_profiles(args, rows: list[dict]) -> None:
    emit(args, {"results": rows}, lambda d: table(d["results"], PROFILE_COLUMNS, empty="(no profiles)"))


def _profile_list_http(client, args):
    names = [p["Name"] for p in client.get("profile")["results"]]
    _show_profiles(args, [client.get(f"profile/{quote(n, safe='')}")["results"][0] for n in names])


async def _profile_list_local(pool, args):
    from app import profiles

    _show_profiles(args, [await profiles.get_profile(pool, p["Name"]) for p in await profiles.list_profiles(pool)])


@client_command
def cmd_profile_repos(client, args):
    data = client.request("PUT", f"profile/{args.name}/repos", {"repos": args.repos})
    emit(args, data, lambda d: print(
        f"profile {args.name}: repositories " + (", ".join(str(r["Id"]) for r in d["results"]) or "(none)")))


def register(sub) -> None:
    flags, way = [CLIENT_FLAGS, LOCAL_FLAG], DUAL_DESCRIPTION
    profile = sub.add_parser("profile", help="manage host profiles", description=way).add_subparsers(
        dest="profile_command", required=True)
    p = profile.add_parser("set", parents=flags, description=way.replace("an admin's key", "an operator's key"),
                           help="create a profile or change the options given (comma-separated or repeated)")
    p.add_argument("name")
    p.add_argument("--exclude", action="append", help="packages never updated (regexes, e.g. 'linux-image.*')")
    p.add_argument("--exclude-major", action="append", help="packages not updated across a major version")
    p.add_argument("--service-reload", action="append", help="services reloaded after an update")
    p.add_argument("--service-restart", action="append", help="services restarted after an update ('svc:pkg' allowed)")
    p.add_argument("--notes")
    p.set_defaults(fn=dual_command(_profile_set_http, _profile_set_local))
    profile.add_parser("list", parents=flags, help="list profiles",
                       description=way.replace("an admin's key", "any user's key")).set_defaults(
        fn=dual_command(_profile_list_http, _profile_list_local))
    p = profile.add_parser("repos", parents=[CLIENT_FLAGS],
                           help="set the repositories a profile gives its hosts (HTTP)")
    p.add_argument("name")
    p.add_argument("repos", nargs="*", type=int, help="repository ids, in order (none: clear)")
    p.set_defaults(fn=cmd_profile_repos)
