"""`depot repo|snapshot|env|pool|upload`: repositories, snapshots and environments over the HTTP API, usable
from any desktop or CI."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from app.cli.client import Client
from app.cli.common import CLIENT_FLAGS, client_command, emit, fail


@client_command
def cmd_repo_create(client, args):
    body = {"name": args.name, "type": args.type}
    if args.type == "deb":
        if not (args.dist and args.section):
            fail("deb repositories need --dist and --section")
        body.update(dist=args.dist, section=args.section)
    else:
        if not args.releasever:
            fail("rpm repositories need --releasever")
        body["releasever"] = args.releasever
    emit(args, client.request("POST", "repo/", body), lambda d: print(f"repository {d['results']['Id']} created"))


@client_command
def cmd_repo_delete(client, args):
    emit(args, client.request("DELETE", f"repo/{args.id}/"), lambda d: print(d["results"]))


@client_command
def cmd_repo_list(client, args):
    def show(d):
        print(f"{'ID':>5}  {'TYPE':<4}  {'NAME':<24} DIST/SECTION or RELEASEVER")
        for r in d["results"]:
            where = f"{r['Dist']}/{r['Section']}" if r["Package_type"] == "deb" else r["Releasever"]
            print(f"{r['Id']:>5}  {r['Package_type']:<4}  {r['Name']:<24} {where}")

    emit(args, client.request("GET", "repo/"), show)


@client_command
def cmd_snapshot_create(client, args):
    body = {"from": args.copy_from} if args.copy_from else {}
    emit(args, client.request("POST", f"repo/{args.repo}/snapshot", body),
         lambda d: print(f"snapshot {d['results']['Id']} created"))


@client_command
def cmd_snapshot_rebuild(client, args):
    emit(args, client.request("PUT", f"snapshot/{args.id}/rebuild", {"gpgSign": not args.no_sign}),
         lambda d: print(f"rebuild queued as task {d['task-id']}"))


@client_command
def cmd_env_create(client, args):
    emit(args, client.request("POST", "environment/", {"name": args.name, "description": args.description or ""}),
         lambda d: print(f"environment {args.name} created"))


@client_command
def cmd_env_point(client, args):
    emit(args, client.request("PATCH", f"environment/{args.name}/point", {"snapshot": args.snapshot}),
         lambda d: print(f"point queued as task {d['task-id']}"))


@client_command
def cmd_pool_gc(client, args):
    emit(args, client.request("POST", "pool/gc", {"dry_run": args.dry_run}),
         lambda d: print(f"pool garbage collection{' (dry run)' if args.dry_run else ''} queued as task"
                         f" {d['task-id']} (depot task show {d['task-id']})"))


def cmd_upload(args):
    sys.exit(asyncio.run(_upload(args)))


async def _upload(args) -> int:
    """One request per file (a failure never hides another), a progress bar over all bytes."""
    import aiohttp
    from tqdm import tqdm

    client = Client.from_args(args)
    if not client.key:
        print("depot: an API key is needed (--key or DEPOT_API_KEY)", file=sys.stderr)
        return 2
    url, headers = client.url, {"Authorization": f"Bearer {client.key}"}
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"depot: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    total = sum(f.stat().st_size for f in files)
    failures = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=args.quiet) as bar:
            for f in files:
                async def body(path=f):
                    with open(path, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            bar.update(len(chunk))
                            yield chunk
                form = aiohttp.FormData()
                if args.overwrite:
                    form.add_field("overwrite", "true")
                if args.ignore_if_exists:
                    form.add_field("ignore-if-exists", "true")
                form.add_field("file", body(), filename=f.name, content_type="application/octet-stream")
                async with session.post(f"{url}/api/v2/snapshot/{args.snapshot}/upload", data=form) as resp:
                    data = await resp.json(content_type=None)
                for item in data.get("files", []):
                    line = f"{item['file']}: {item['status']}" + (f" ({item['reason']})" if item.get("reason") else "")
                    bar.write(line)
                if resp.status >= 400:
                    failures += 1
                    if not data.get("files"):
                        bar.write(f"{f.name}: {resp.status} {data.get('message_error')}")
    return 1 if failures else 0


def register(sub) -> None:
    common = [CLIENT_FLAGS]
    repo = sub.add_parser("repo", help="manage repositories").add_subparsers(dest="repo_command", required=True)
    p = repo.add_parser("create", parents=common, help="create a repository")
    p.add_argument("name")
    p.add_argument("--type", choices=["deb", "rpm"], required=True)
    p.add_argument("--dist")
    p.add_argument("--section", "--component", dest="section")
    p.add_argument("--releasever")
    p.set_defaults(fn=cmd_repo_create)
    p = repo.add_parser("delete", parents=common, help="delete a repository and its snapshots")
    p.add_argument("id", type=int)
    p.set_defaults(fn=cmd_repo_delete)
    repo.add_parser("list", parents=common, help="list repositories").set_defaults(fn=cmd_repo_list)

    snap = sub.add_parser("snapshot", help="manage snapshots").add_subparsers(dest="snapshot_command", required=True)
    p = snap.add_parser("create", parents=common, help="create a snapshot (empty or a copy)")
    p.add_argument("--repo", type=int, required=True)
    p.add_argument("--from", dest="copy_from", type=int, help="copy the packages of this snapshot")
    p.set_defaults(fn=cmd_snapshot_create)
    p = snap.add_parser("rebuild", parents=common, help="queue a metadata rebuild")
    p.add_argument("id", type=int)
    p.add_argument("--no-sign", action="store_true")
    p.set_defaults(fn=cmd_snapshot_rebuild)

    env = sub.add_parser("env", help="manage environments").add_subparsers(dest="env_command", required=True)
    p = env.add_parser("create", parents=common, help="create an environment")
    p.add_argument("name")
    p.add_argument("--description")
    p.set_defaults(fn=cmd_env_create)
    p = env.add_parser("point", parents=common, help="point an environment at a snapshot")
    p.add_argument("name")
    p.add_argument("--snapshot", type=int, required=True)
    p.set_defaults(fn=cmd_env_point)

    pool = sub.add_parser("pool", help="the package pool").add_subparsers(dest="pool_command", required=True)
    p = pool.add_parser("gc", parents=common, help="queue removal of package files no snapshot uses (operator)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    p.set_defaults(fn=cmd_pool_gc)

    p = sub.add_parser("upload", parents=common, help="upload package files into a snapshot")
    p.add_argument("--snapshot", type=int, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--ignore-if-exists", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_upload)
