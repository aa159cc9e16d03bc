"""Tasks, schedules and queues: thin handlers over app/tasks/."""
from __future__ import annotations

from aiohttp import web

from app.auth import Role, require_role, require_user
from app.db import MAX_ID
from app.api.inputs import load_body, load_query
from app.errors import bad_request, not_found, ok
from app.openapi import docs
from app.keys import POOL, REDIS, SETTINGS
from app.schemas.tasks import PageQuerySchema, QueuesSchema, ScheduleRequestSchema, TaskSchema
from app.tasks import dispatch, listing, rows, schedules, status

_ERRORS = {400: "Invalid task ID", 401: "No or bad credentials", 403: "Role too low", 404: "Unknown task"}


def _task_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or not raw.isascii():
        raise bad_request("Invalid task ID.")
    value = int(raw)
    if value < 1 or value > MAX_ID:
        raise not_found(f"Task #{raw} does not exist.")
    return value


def _page_args(request: web.Request) -> dict:
    args = load_query(request)
    limit = request.app[SETTINGS].max_per_page
    if args["per_page"] > limit:
        raise bad_request(f"per_page: must be at most {limit}")
    return args


async def _listing(request: web.Request, which: str) -> web.Response:
    require_user(request)
    args = _page_args(request)
    page = await listing.list_tasks(request.app[POOL], which, **args)
    # Same shape as the hosts listings' pagination.
    pagination = {"page": page.page, "per_page": page.per_page, "total": page.total}
    if page.total_capped:
        pagination["total_capped"] = True  # at least `total` tasks match
    return ok(page.rows, pagination=pagination)


_LIST_DOCS = dict(query=PageQuerySchema, response=TaskSchema, many=True, responses={400: "Bad paging", 401: "No or bad credentials", 403: "Host credentials"})


@docs(summary="Every task, newest first (paginated)", **_LIST_DOCS)
async def list_all(request: web.Request) -> web.Response:
    return await _listing(request, "all")


@docs(summary="Running tasks, newest first", **_LIST_DOCS)
async def list_running(request: web.Request) -> web.Response:
    return await _listing(request, "running")


@docs(summary="Queued tasks, oldest first", **_LIST_DOCS)
async def list_queued(request: web.Request) -> web.Response:
    return await _listing(request, "queued")


@docs(summary="Scheduled (recurring) tasks, enabled or disabled, next run first", **_LIST_DOCS)
async def list_scheduled(request: web.Request) -> web.Response:
    return await _listing(request, "scheduled")


@docs(summary="Finished immediate tasks (done, error, stopped), latest first", **_LIST_DOCS)
async def list_done(request: web.Request) -> web.Response:
    return await _listing(request, "done")


@docs(summary="One task", path={"id": int}, response=TaskSchema, responses=_ERRORS)
async def get_task(request: web.Request) -> web.Response:
    require_user(request)
    task_id = _task_id(request)
    return ok(await listing.get_task(request.app[POOL], task_id))


@docs(summary="Stop a task: a queued one at once, a running one at its next step (202)", path={"id": int},
      responses={**_ERRORS, 202: "Stop requested from a running task", 409: "Task not queued or running"})
async def stop_task(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to stop a task")
    task_id = _task_id(request)
    outcome = await dispatch.stop_task(request.app[POOL], request.app[REDIS], request.app[SETTINGS].queue_name, task_id)
    if outcome == "stopped":
        return ok("Task stopped successfully.", status="stopped")
    return ok("Task stop requested: it stops at its next step.", rc=202, status="stopping")


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    verb = "enable" if enabled else "disable"
    require_role(request, Role.operator, f"You are not allowed to {verb} a task")
    task_id = _task_id(request)
    await schedules.set_enabled(request.app[POOL], task_id, enabled)
    return ok(f"Task {verb}d successfully.")


@docs(summary="Enable a scheduled task (its next run is computed from now)", path={"id": int},
      responses={**_ERRORS, 409: "Not a scheduled task"})
async def enable_task(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


@docs(summary="Disable a scheduled task", path={"id": int}, responses={**_ERRORS, 409: "Not a scheduled task"})
async def disable_task(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


@docs(summary="Delete a scheduled or finished task", path={"id": int},
      responses={**_ERRORS, 409: "Task queued or running"})
async def delete_task(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to delete a task")
    task_id = _task_id(request)
    await rows.delete(request.app[POOL], task_id)
    return ok("Task deleted successfully.")


@docs(summary="Create a scheduled (recurring) task", request=ScheduleRequestSchema, response=TaskSchema, status=201,
      responses={400: "Invalid kind, target, params or cron", 401: "No or bad credentials", 403: "Role too low"})
async def create_schedule(request: web.Request) -> web.Response:
    """Body: {"kind": "rebuild", "params": {"snapshot": 5}, "cron": "0 3 * * *"}; the target is derived from
    the params when not given. Each run creates an immediate task of that kind (coalesced as usual)."""
    who = require_role(request, Role.operator, "You are not allowed to schedule a task")
    args = await load_body(request)
    pool = request.app[POOL]
    task_id = await schedules.create_schedule(pool, args["kind"], args["cron"], args["params"], args["target"],
                                              requested_by=who.username, enabled=args["enabled"])
    return ok(await listing.get_task(pool, task_id), rc=201, message=[f"Task #{task_id} scheduled."])


@docs(summary="Queues and workers: depth, in progress, oldest waiting age, last hour's outcomes, heartbeats",
      response=QueuesSchema, responses={401: "No or bad credentials", 403: "Host credentials"})
async def get_queues(request: web.Request) -> web.Response:
    require_user(request)
    return ok(await status.queue_state(request.app[POOL], request.app[REDIS], request.app[SETTINGS]))
