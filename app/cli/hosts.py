"""`depot hosts`: list and filter the fleet's hosts, or show one with its available updates (HTTP API)."""
from __future__ import annotations

from urllib.parse import quote

from app.cli.client import table
from app.cli.common import CLIENT_FLAGS, add_client_flags, client_command, emit

HOST_COLUMNS = [("Id", "ID"), ("Hostname", "HOSTNAME"), ("Ip", "IP"), ("Os", "OS"), ("Os_version", "VERSION"),
                ("Kernel", "KERNEL"), ("Arch", "ARCH"), ("Profile", "PROFILE"), ("Env", "ENV"),
                ("Online_status", "STATUS"), ("Reboot_required", "REBOOT")]
UPDATE_COLUMNS = [("Name", "PACKAGE"), ("Current_version", "INSTALLED"), ("Version", "AVAILABLE"),
                  ("Repository", "REPOSITORY")]


def _q(value: str) -> str:
    return quote(value, safe="")


@client_command
def cmd_hosts_list(client, args) -> None:
    if args.package:
        path = f"hosts/package/{_q(args.package)}" + (f"/{_q(args.version)}" if args.version else "")
    elif args.os:
        path = f"hosts/os/{_q(args.os)}" + (f"/{_q(args.os_version)}" if args.os_version else "")
    elif args.outdated or args.uptodate:
        path = "hosts/outdated" if args.outdated else "hosts/uptodate"
    elif args.connected or args.disconnected:
        path = "hosts/agent/connected" if args.connected else "hosts/agent/disconnected"
    else:
        path = "hosts/"
        for flag in ("kernel", "arch", "profile", "env"):
            if getattr(args, flag):
                path = f"hosts/{'environment' if flag == 'env' else flag}/{_q(getattr(args, flag))}"
    extra = {"older-than": args.older_than} if args.package and args.older_than else {}
    data = client.get(path, page=args.page, per_page=args.per_page, **extra)

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
                if "Agent_connected" in r:
                    r["Agent"] = "connected" if r["Agent_connected"] else "-"
            cols = HOST_COLUMNS + ([("Updates", "UPDATES")] if args.outdated or args.uptodate else [])
            if any("Agent" in r for r in rows):
                cols = cols + [("Agent", "AGENT")]
            table(rows, cols)
        paging = d.get("pagination")
        if paging and paging.get("total", 0) > len(rows):
            print(f"page {paging['page']}, {len(rows)} of {paging['total']} host(s)")
        else:
            print(f"{len(rows)} host(s)")

    emit(args, data, show)


@client_command
def cmd_hosts_show(client, args) -> None:
    host = client.get(f"host/{args.id}")["results"]
    updates = client.get(f"host/{args.id}/available").get("results") or []

    def show(d):
        for key, value in d["host"].items():
            if not isinstance(value, (dict, list)):
                print(f"{key.replace('_', ' '):<20} {value}")
        print(f"\n{len(d['updates'])} available update(s)")
        table(d["updates"], UPDATE_COLUMNS, empty="(up to date)")

    emit(args, {"host": host, "updates": updates}, show)


def register(sub) -> None:
    hosts = sub.add_parser("hosts", help="list and filter hosts, or show one with its updates (HTTP)")
    hsub = hosts.add_subparsers(dest="hosts_command")
    p = hsub.add_parser("list", parents=[CLIENT_FLAGS], help="list hosts")
    for parser in (hosts, p):  # `depot hosts` alone lists too
        parser.add_argument("--os")
        parser.add_argument("--os-version")
        parser.add_argument("--kernel")
        parser.add_argument("--arch")
        parser.add_argument("--profile")
        parser.add_argument("--env")
        parser.add_argument("--package", help="hosts with this package (prefix match)")
        parser.add_argument("--version", help="with --package: version prefix")
        parser.add_argument("--older-than", metavar="VERSION",
                            help="with --package (exact name): hosts with a version older than this one"
                                 " (dpkg or rpm order, as each host's OS family says)")
        parser.add_argument("--outdated", action="store_true")
        parser.add_argument("--uptodate", action="store_true")
        parser.add_argument("--connected", action="store_true", help="hosts whose agent is connected (/ws)")
        parser.add_argument("--disconnected", action="store_true", help="hosts whose agent is not connected")
        parser.add_argument("--page", type=int, default=1)
        parser.add_argument("--per-page", type=int, default=100, help="hosts per page (default 100)")
        parser.set_defaults(fn=cmd_hosts_list)
    add_client_flags(hosts, hidden=True)
    p = hsub.add_parser("show", parents=[CLIENT_FLAGS], help="one host and its available updates")
    p.add_argument("id")
    p.set_defaults(fn=cmd_hosts_show)
