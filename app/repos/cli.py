"""`depot repo|snapshot|env|upload|pool` commands: HTTP clients of the API, usable from any desktop or CI.

Server URL and key come from --url/--key or DEPOT_URL / DEPOT_API_KEY.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def _client(args):
    from app.client import Client

    return Client.from_args(args)


def _run(args, method, path, body=None, show=None):
    from app.client import ClientError

    try:
        data = _client(args).request(method, path, body)
    except ClientError as exc:
        print(f"depot: {exc}", file=sys.stderr)
        sys.exit(1)
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        print(show(data) if show else json.dumps(data.get("results"), indent=2))
    return data


def cmd_repo_create(args):
    body = {"name": args.name, "type": args.type}
    if args.type == "deb":
        if not (args.dist and args.section):
            sys.exit("depot: deb repositories need --dist and --section")
        body.update(dist=args.dist, section=args.section)
    else:
        if not args.releasever:
            sys.exit("depot: rpm repositories need --releasever")
        body["releasever"] = args.releasever
    _run(args, "POST", "repo/", body, lambda d: f"repository {d['results']['Id']} created")


def cmd_repo_delete(args):
    _run(args, "DELETE", f"repo/{args.id}/", show=lambda d: d["results"])


def cmd_repo_list(args):
    def show(d):
        lines = [f"{'ID':>5}  {'TYPE':<4}  {'NAME':<24} DIST/SECTION or RELEASEVER"]
        for r in d["results"]:
            where = f"{r['Dist']}/{r['Section']}" if r["Package_type"] == "deb" else r["Releasever"]
            lines.append(f"{r['Id']:>5}  {r['Package_type']:<4}  {r['Name']:<24} {where}")
        return "\n".join(lines)
    _run(args, "GET", "repo/", show=show)


def cmd_snapshot_create(args):
    body = {"from": args.copy_from} if args.copy_from else {}
    _run(args, "POST", f"repo/{args.repo}/snapshot", body, lambda d: f"snapshot {d['results']['Id']} created")


def cmd_snapshot_rebuild(args):
    _run(args, "PUT", f"snapshot/{args.id}/rebuild", {"gpgSign": not args.no_sign},
         lambda d: f"rebuild queued as task {d['task-id']}")


def cmd_profile_repos(args):
    _run(args, "PUT", f"profile/{args.name}/repos", {"repos": args.repos},
         lambda d: f"profile {args.name}: repositories " + (", ".join(str(r["Id"]) for r in d["results"]) or "(none)"))


def cmd_env_create(args):
    _run(args, "POST", "environment/", {"name": args.name, "description": args.description or ""},
         lambda d: f"environment {args.name} created")


def cmd_env_point(args):
    _run(args, "PATCH", f"environment/{args.name}/point", {"snapshot": args.snapshot},
         lambda d: f"point queued as task {d['task-id']}")


def cmd_pool_gc(args):
    _run(args, "POST", "pool/gc", {"dry_run": args.dry_run},
         lambda d: f"pool garbage collection{' (dry run)' if args.dry_run else ''} queued as task {d['task-id']}"
                   f" (depot task show {d['task-id']})")


def cmd_upload(args):
    sys.exit(asyncio.run(_upload(args)))


async def _upload(args) -> int:
    """One request per file (a failure never hides another), a progress bar over all bytes."""
    import aiohttp
    from tqdm import tqdm

    client = _client(args)
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


def register_profile_repos(profile_sub) -> None:
    """`depot profile repos NAME ID...` (set in the profile group, next to `profile set`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="Depot base URL (DEPOT_URL)")
    common.add_argument("--key", help="API key (DEPOT_API_KEY)")
    common.add_argument("--json", action="store_true")
    p = profile_sub.add_parser("repos", parents=[common], help="set the repositories a profile gives its hosts (HTTP)")
    p.add_argument("name")
    p.add_argument("repos", nargs="*", type=int, help="repository ids, in order (none: clear)")
    p.set_defaults(fn=cmd_profile_repos)


def register(sub) -> None:
    """Add the repository commands to the `depot` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="Depot base URL (DEPOT_URL)")
    common.add_argument("--key", help="API key (DEPOT_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")

    repo = sub.add_parser("repo", help="manage repositories").add_subparsers(dest="repo_command", required=True)
    p = repo.add_parser("create", parents=[common], help="create a repository")
    p.add_argument("name")
    p.add_argument("--type", choices=["deb", "rpm"], required=True)
    p.add_argument("--dist")
    p.add_argument("--section", "--component", dest="section")
    p.add_argument("--releasever")
    p.set_defaults(fn=cmd_repo_create)
    p = repo.add_parser("delete", parents=[common], help="delete a repository and its snapshots")
    p.add_argument("id", type=int)
    p.set_defaults(fn=cmd_repo_delete)
    repo.add_parser("list", parents=[common], help="list repositories").set_defaults(fn=cmd_repo_list)

    snap = sub.add_parser("snapshot", help="manage snapshots").add_subparsers(dest="snapshot_command", required=True)
    p = snap.add_parser("create", parents=[common], help="create a snapshot (empty or a copy)")
    p.add_argument("--repo", type=int, required=True)
    p.add_argument("--from", dest="copy_from", type=int, help="copy the packages of this snapshot")
    p.set_defaults(fn=cmd_snapshot_create)
    p = snap.add_parser("rebuild", parents=[common], help="queue a metadata rebuild")
    p.add_argument("id", type=int)
    p.add_argument("--no-sign", action="store_true")
    p.set_defaults(fn=cmd_snapshot_rebuild)

    env = sub.add_parser("env", help="manage environments").add_subparsers(dest="env_command", required=True)
    p = env.add_parser("create", parents=[common], help="create an environment")
    p.add_argument("name")
    p.add_argument("--description")
    p.set_defaults(fn=cmd_env_create)
    p = env.add_parser("point", parents=[common], help="point an environment at a snapshot")
    p.add_argument("name")
    p.add_argument("--snapshot", type=int, required=True)
    p.set_defaults(fn=cmd_env_point)

    pool = sub.add_parser("pool", help="the package pool").add_subparsers(dest="pool_command", required=True)
    p = pool.add_parser("gc", parents=[common], help="queue removal of package files no snapshot uses (operator)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    p.set_defaults(fn=cmd_pool_gc)

    p = sub.add_parser("upload", parents=[common], help="upload package files into a snapshot")
    p.add_argument("--snapshot", type=int, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--ignore-if-exists", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_upload)
