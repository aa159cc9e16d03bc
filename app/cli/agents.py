"""`depot request` and `depot requests`: send requests to hosts' agents, follow them, list them (HTTP API).

    depot request HOST_ID general-infos | packages-infos | profile
    depot request HOST_ID update [--packages a,b] [--dry-run] [--ignore-exclusions] [--full-upgrade]
                                 [--no-keep-config-files] [--watch]
    depot request --profile P | --env E ...      the same request to every host of a profile or environment
    depot request show|cancel REQUEST_ID
    depot requests HOST_ID [--page N] [--per-page N]
"""
from __future__ import annotations

import argparse
import json
import time

from app.cli.client import table
from app.cli.common import CLIENT_FLAGS, client_command, emit, fail

KINDS = {"general-infos": "request-general-infos", "packages-infos": "request-packages-infos",
         "profile": "update-profile"}
UPDATE_KINDS = ("update",)
FINISHED = ("completed", "failed", "canceled")
REQUEST_COLUMNS = [("Id", "ID"), ("Request", "REQUEST"), ("Status", "STATUS"), ("Created", "CREATED"),
                   ("Finished", "FINISHED"), ("Requested_by", "BY"), ("Info", "INFO")]
SHOWN = ("Id", "Host_id", "Request", "Status", "Info", "Error", "Requested_by", "Created", "Sent", "Started", "Finished")


def _body(args) -> dict:
    if args.kind in KINDS:
        if args.packages or args.update_flags:
            fail(f"{args.kind} takes no packages and no update options")
        return {"request": KINDS[args.kind]}
    body: dict = {"request": "request-all-packages-update", "update-params": {
        "dry-run": args.dry_run, "ignore-exclusions": args.ignore_exclusions, "full-upgrade": args.full_upgrade,
        "keep-config-files": not args.no_keep_config_files}}
    if args.packages:
        body["request"] = "request-packages-update"
        body["packages"] = [p.strip() for p in args.packages.split(",") if p.strip()]
    return body


@client_command
def cmd_request(client, args) -> None:
    words = args.words
    if words[0] in ("show", "cancel"):
        if len(words) != 2 or args.profile or args.env:
            fail(f"usage: depot request {words[0]} REQUEST_ID")
        return _show(client, args, words[1]) if words[0] == "show" else _cancel(client, args, words[1])
    selection = {k: v for k, v in (("profile", args.profile), ("env", args.env)) if v}
    if selection:
        if len(words) != 1:
            fail("with --profile or --env, give the request only: depot request --profile P KIND")
        args.kind = words[0]
    else:
        if len(words) != 2:
            fail("usage: depot request HOST_ID KIND (or --profile P KIND)")
        host, args.kind = words
        if not host.isdigit():
            fail(f"not a host id: {host!r} (see `depot hosts`)")
    if args.kind not in (*KINDS, *UPDATE_KINDS):
        fail(f"unknown request {args.kind!r}: one of {', '.join((*KINDS, *UPDATE_KINDS))}")
    args.update_flags = args.dry_run or args.ignore_exclusions or args.full_upgrade or args.no_keep_config_files
    body = _body(args)
    if selection:
        if args.watch:
            fail("--watch follows one request: give a HOST_ID")
        data = client.request("POST", "hosts/requests", {**body, "filter": selection})
        return emit(args, data, lambda d: print(f"{d['results']['Created']} request(s) created"))
    data = client.request("POST", f"host/{host}/requests", body)
    row = data["results"]
    if not args.watch:
        return emit(args, data, lambda d: print(f"request {row['Id']} ({row['Request']}) to host {row['Host_id']}: "
                                                 f"{row['Status']}"))
    _watch(client, args, row)


def _watch(client, args, row: dict) -> None:
    """Follow a request until it is over; exit 0 if it completed, 1 otherwise."""
    last = None
    while True:
        if row["Status"] != last:
            last = row["Status"]
            if args.json:
                print(json.dumps({k: row.get(k) for k in SHOWN}), flush=True)
            else:
                info = f" ({row['Info']})" if row.get("Info") else ""
                print(f"request {row['Id']} {row['Request']}: {row['Status']}{info}", flush=True)
        if row["Status"] in FINISHED:
            break
        time.sleep(args.interval)
        row = client.get(f"host/requests/{row['Id']}")["results"]
    if not args.json:
        _show_result(row)
    if row["Status"] != "completed":
        raise SystemExit(1)


def _show_result(row: dict) -> None:
    if row.get("Error"):
        print(f"error: {row['Error']}")
    update = (row.get("Summary") or {}).get("update") if isinstance(row.get("Summary"), dict) else None
    if isinstance(update, dict):
        ok, bad = update.get("success") or {}, update.get("failed") or {}
        dry = " (dry run)" if (update.get("options") or {}).get("dry_run") else ""
        print(f"update {update.get('status')}{dry}: {ok.get('count', 0)} succeeded, {bad.get('count', 0)} failed")
        for name, item in {**(ok.get("packages") or {}), **(bad.get("packages") or {})}.items():
            print(f"  {name} {item.get('version', '') if isinstance(item, dict) else ''}")
    if row.get("Log"):
        print("--- log ---")
        print(row["Log"].rstrip("\n"))


def _show(client, args, request_id) -> None:
    def show(d):
        row = d["results"]
        for key in SHOWN:
            if row.get(key) not in (None, ""):
                print(f"{key.replace('_', ' '):<13} {row[key]}")
        _show_result(row)

    emit(args, client.get(f"host/requests/{request_id}"), show)


def _cancel(client, args, request_id) -> None:
    data = client.request("DELETE", f"host/requests/{request_id}")
    emit(args, data, lambda d: print(f"request {d['results']['Id']}: {d['results']['Status']}"))


@client_command
def cmd_requests(client, args) -> None:
    data = client.get(f"host/{args.host_id}/requests", page=args.page, per_page=args.per_page)

    def show(d):
        table(d["results"], REQUEST_COLUMNS)
        paging = d.get("pagination") or {}
        print(f"page {paging.get('page', 1)}, {len(d['results'])} of {paging.get('total', len(d['results']))} request(s)")

    emit(args, data, show)


def register(sub) -> None:
    p = sub.add_parser("request", parents=[CLIENT_FLAGS], formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="depot request HOST_ID KIND [options] | --profile P|--env E KIND [options]"
                             " | show|cancel REQUEST_ID",
                       help="send a request to a host's agent (or to a profile's hosts), show or cancel one",
                       description=__doc__.split("\n", 2)[2])
    p.add_argument("words", nargs="+", metavar="ARG",
                   help=f"a host id and one of {', '.join((*KINDS, *UPDATE_KINDS))}; or show|cancel REQUEST_ID")
    p.add_argument("--profile", help="every host of this profile")
    p.add_argument("--env", help="every host of this environment")
    p.add_argument("--packages", help="update: only these packages (comma-separated names)")
    p.add_argument("--dry-run", action="store_true", help="update: simulate only")
    p.add_argument("--ignore-exclusions", action="store_true", help="update: ignore the profile's exclusions")
    p.add_argument("--full-upgrade", action="store_true", help="update: dist-upgrade")
    p.add_argument("--no-keep-config-files", action="store_true",
                   help="update: replace configuration files with the packages' versions")
    p.add_argument("--watch", action="store_true", help="follow the request until it is over (exit 1 unless completed)")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_request)
    p = sub.add_parser("requests", parents=[CLIENT_FLAGS], help="a host's requests, newest first")
    p.add_argument("host_id")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--per-page", type=int, default=20)
    p.set_defaults(fn=cmd_requests)
