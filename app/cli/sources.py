"""`depot source import|add|list|key add`: source repositories (the upstreams of mirrors), and `depot mirror`:
run a mirror; over the API."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import quote

from app.cli.client import table
from app.cli.common import CLIENT_FLAGS, client_command, emit, fail


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


def cmd_import(client, args):
    data = client.post_file(f"source/{args.type}/import", "template", Path(args.file).name, _read(args.file))

    def show(d):
        print(f"{d['results']}: {', '.join(d.get('imported', []))}")
        for warning in d.get("warnings", []):
            print(f"  note: {warning}")

    emit(args, data, show)


def cmd_add(client, args):
    keys = [{"armored": _read(k).decode("utf-8", "replace")} for k in args.gpg_key or []]
    body = {"name": args.name, "type": args.type, "url": args.source_url, "description": args.description or ""}
    if args.type == "deb":
        if not (args.dist and args.component):
            fail("a deb source needs --dist and --component (each may be repeated)")
        body["distributions"] = [{"name": d, "components": [{"name": c} for c in args.component], "gpgkeys": keys}
                                 for d in args.dist]
    else:
        if not args.releasever:
            fail("an rpm source needs --releasever (may be repeated)")
        body["releasever"] = [{"name": r, "gpgkeys": keys} for r in args.releasever]
    data = client.request("POST", f"source/{args.type}/", body)
    emit(args, data, lambda d: print(f"source {args.name} ({args.type}) created, id {d['results']['Id']}"))


def _last_run(run: dict | None) -> dict:
    if run is None:
        return {"Status": "never run"}
    if run["Status"] == "done":
        outcome = "unchanged" if run["Unchanged"] else f"{run['Downloaded'] or 0} files downloaded"
        outcome += f", snapshot #{run['Snapshot_id']}" if run["Snapshot_id"] else ""
    else:
        outcome = run["Error"] or ""
    return {"Task": run["Task_id"], "Status": run["Status"], "Date": run["Date"][:19].replace("T", " "),
            "Outcome": outcome}


def cmd_list(client, args):
    data = client.get(f"source/{args.type}/" if args.type else "source/", mirrors="true")

    def show(d):
        rows, mirrors = [], []
        for r in d["results"]:
            definition = json.loads(r["Definition"])
            scopes = definition.get("distributions") or definition.get("releasever") or []
            rows.append({"Id": r["Id"], "Type": definition["type"], "Name": definition["name"],
                         "Url": definition["url"], "Scopes": ",".join(s["name"] for s in scopes)})
            for m in r.get("Mirrors", []):
                mirrors.append({"Source": definition["name"], "Repo": m["Repo_id"], "Name": m["Name"],
                                **_last_run(m["Last_run"])})
        table(rows, [("Id", "ID"), ("Type", "TYPE"), ("Name", "NAME"), ("Url", "URL"),
                     ("Scopes", "DISTRIBUTIONS / RELEASES")], empty="(no source repositories)")
        if mirrors:
            print()
            table(mirrors, [("Source", "SOURCE"), ("Repo", "REPO"), ("Name", "MIRROR"), ("Task", "LAST TASK"),
                            ("Status", "STATUS"), ("Date", "WHEN (UTC)"), ("Outcome", "OUTCOME")])

    emit(args, data, show)


def cmd_key_add(client, args):
    armored = _read(args.file).decode("utf-8", "replace")
    data = client.request("POST", f"source/{args.type}/{quote(args.name, safe='')}/keys", {"armored": armored})
    emit(args, data, lambda d: print("\n".join(f"key {k['fingerprint']} added ({k['uids']})"
                                               for k in d["results"]["keys"])))


def cmd_mirror(client, args):
    from app.cli.tasks import watch_task

    data = client.request("POST", f"repo/{args.repo}/mirror", {"env": args.env} if args.env else {})
    if not args.watch:
        return emit(args, data, lambda d: print(f"mirror queued as task {d['task-id']}"))
    args.id = data["task-id"]
    watch_task(client, args)


def register(sub) -> None:
    common = [CLIENT_FLAGS]
    src = sub.add_parser("source", help="source repositories (upstreams to mirror)").add_subparsers(
        dest="source_command", required=True)
    p = src.add_parser("import", parents=common, help="import a YAML template of source repositories")
    p.add_argument("file")
    p.add_argument("--type", choices=["deb", "rpm"], default="deb", help="(the path's type; each entry has its own)")
    p.set_defaults(fn=client_command(cmd_import))
    p = src.add_parser("add", parents=common, help="add one source repository")
    p.add_argument("name")
    p.add_argument("--type", choices=["deb", "rpm"], required=True)
    p.add_argument("--source-url", dest="source_url", required=True,
                   help="archive root (deb: the folder holding dists/)")
    p.add_argument("--dist", action="append", help="deb: a distribution (repeatable)")
    p.add_argument("--component", action="append", help="deb: a component of each distribution (repeatable)")
    p.add_argument("--releasever", action="append", help="rpm: a release version (repeatable)")
    p.add_argument("--description")
    p.add_argument("--gpg-key", dest="gpg_key", action="append", help="an ASCII-armored public key file (repeatable)")
    p.set_defaults(fn=client_command(cmd_add))
    p = src.add_parser("list", parents=common, help="list source repositories")
    p.add_argument("--type", choices=["deb", "rpm"])
    p.set_defaults(fn=client_command(cmd_list))
    key = src.add_parser("key", help="a source's own keys").add_subparsers(dest="key_command", required=True)
    p = key.add_parser("add", parents=common, help="add ASCII-armored public keys to one source's keyring")
    p.add_argument("type", choices=["deb", "rpm"])
    p.add_argument("name")
    p.add_argument("file")
    p.set_defaults(fn=client_command(cmd_key_add))

    p = sub.add_parser("mirror", parents=common, help="run a mirror repository from its source (a task)")
    p.add_argument("repo", type=int, help="the mirror repository's id")
    p.add_argument("--env", help="point this environment at the new snapshot")
    p.add_argument("--watch", "-w", action="store_true", help="follow the task's progress until it ends")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(fn=client_command(cmd_mirror))
