"""`depot tasks|queues`: list, show, follow, stop and schedule tasks; queue depths and workers (HTTP API)."""
from __future__ import annotations

import json
import sys
import time

from app.cli.client import progress_bar, table
from app.cli.common import CLIENT_FLAGS, add_client_flags, client_command, emit, fail
from app.tasks.kinds import SCHEDULABLE

# The listings of GET /api/v2/tasks/<status> (app.tasks.listing.LISTINGS, which a test compares with this:
# importing it here would load the scheduler and the database driver on every `depot` start).
STATUSES = ["all", "running", "queued", "scheduled", "done"]
TASK_COLUMNS = [("Id", "ID"), ("Kind", "KIND"), ("Target", "TARGET"), ("Status", "STATUS"),
                ("Progress", "%"), ("Duration", "DURATION"), ("Date", "DATE"), ("Time", "TIME"),
                ("Progress_text", "PROGRESS"), ("Error", "ERROR")]
SCHEDULE_COLUMNS = [("Id", "ID"), ("Kind", "KIND"), ("Target", "TARGET"), ("Status", "STATUS"),
                    ("Cron", "CRON"), ("Next_run", "NEXT RUN"), ("Last_run", "LAST RUN")]


@client_command
def cmd_tasks_list(client, args) -> None:
    which = "" if args.status == "all" else args.status
    data = client.get(f"tasks/{which}", page=args.page, per_page=args.per_page, kind=args.kind)

    def show(d):
        table(d["results"], SCHEDULE_COLUMNS if args.status == "scheduled" else TASK_COLUMNS)
        paging = d.get("pagination") or {}
        print(f"page {paging.get('page', 1)}, {len(d['results'])} of {paging.get('total', len(d['results']))} task(s)")

    emit(args, data, show)


def _show_task(row: dict) -> None:
    for key in ("Id", "Kind", "Target", "Type", "Status", "Progress", "Progress_text", "Duration", "Date", "Time",
                "Requested_by", "Worker", "Attempts", "Cron", "Next_run", "Last_run", "Error", "Raw_params"):
        if row.get(key) not in (None, ""):
            print(f"{key.replace('_', ' '):<14} {row[key]}")


@client_command
def cmd_tasks_show(client, args) -> None:
    if args.watch:
        return watch_task(client, args)
    emit(args, client.get(f"task/{args.id}"), lambda d: _show_task(d["results"]))


def watch_task(client, args) -> None:
    """Follow a task until it finishes; the exit code says how it ended (0 done, 1 otherwise)."""
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


@client_command
def cmd_tasks_stop(client, args) -> None:
    data = client.request("POST", f"task/{args.id}/stop")
    emit(args, data, lambda d: print(d["results"]))
    if args.watch:
        watch_task(client, args)


def _simple_task_action(method: str, action: str):
    @client_command
    def run(client, args) -> None:
        emit(args, client.request(method, f"task/{args.id}/{action}"), lambda d: print(d["results"]))

    return run


@client_command
def cmd_task_schedule(client, args) -> None:
    params: dict = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--param expects key=value, got {item!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    body = {"kind": args.kind, "cron": args.cron, "params": params, "enabled": not args.disabled}
    if args.target:
        body["target"] = args.target
    data = client.request("POST", "task/schedule", body)
    emit(args, data, lambda d: print(f"task {d['results']['Id']} scheduled ({d['results']['Cron']}),"
                                     f" next run {d['results']['Next_run']}"))


@client_command
def cmd_queues(client, args) -> None:
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

    emit(args, client.get("queues"), show)


def register(sub) -> None:
    tasks = sub.add_parser("tasks", aliases=["task"], help="list, show, follow, stop and schedule tasks (HTTP)")
    tsub = tasks.add_subparsers(dest="tasks_command")
    p = tsub.add_parser("list", parents=[CLIENT_FLAGS], help="list tasks")
    for parser in (tasks, p):  # `depot tasks` alone lists too
        parser.add_argument("--status", default="all", choices=STATUSES)
        parser.add_argument("--kind")
        parser.add_argument("--page", type=int, default=1)
        parser.add_argument("--per-page", type=int, default=50)
        parser.set_defaults(fn=cmd_tasks_list)
    add_client_flags(tasks, hidden=True)
    p = tsub.add_parser("show", parents=[CLIENT_FLAGS], help="one task (--watch follows its progress)")
    p.add_argument("id")
    p.add_argument("--watch", "-w", action="store_true", help="follow progress until the task ends")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(fn=cmd_tasks_show)
    p = tsub.add_parser("stop", parents=[CLIENT_FLAGS], help="stop a queued or running task")
    p.add_argument("id")
    p.add_argument("--watch", "-w", action="store_true", help="then follow it until it has stopped")
    p.add_argument("--interval", type=float, default=0.5)
    p.set_defaults(fn=cmd_tasks_stop)
    for action, method in (("enable", "POST"), ("disable", "POST"), ("delete", "DELETE")):
        p = tsub.add_parser(action, parents=[CLIENT_FLAGS], help=f"{action} a scheduled task")
        p.add_argument("id")
        p.set_defaults(fn=_simple_task_action(method, action))
    p = tsub.add_parser("schedule", parents=[CLIENT_FLAGS], help="create a recurring task")
    p.add_argument("kind", choices=list(SCHEDULABLE))
    p.add_argument("--cron", required=True, help="5 fields, UTC: minute hour day month weekday, e.g. '0 3 * * *'")
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                   help="task parameter (VALUE parsed as JSON when it can be), e.g. -p snapshot=12")
    p.add_argument("--target", help="lock target (derived from the params when omitted)")
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p.set_defaults(fn=cmd_task_schedule)

    p = sub.add_parser("queues", parents=[CLIENT_FLAGS], help="queue depths, outcomes of the last hour, workers (HTTP)")
    p.set_defaults(fn=cmd_queues)
