"""The repository pages' actions: create and delete repositories and snapshots, upload package files,
rebuild, create environments and point them, compare two snapshots.

Each action reads its form with the API's schema and calls the API's domain function (app/repos/), with
the API's roles: snapshots, uploads and rebuilds need uploader; repositories, environments, pointing and
deletions need operator. Rebuilds and points are tasks: the repository page then follows the task live
with the tasks page's fragment (/ui/tasks/<id>). The upload is the API's own handler, run with the
session's user, so the browser's files go through exactly the checks and limits of the API's uploads.
"""
from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from marshmallow import ValidationError

from app import auth
from app.api import snapshots as snapshots_api
from app.api.inputs import parse_bool
from app.auth import Role
from app.dashboard.queries import repos as repo_queries, tasks as task_queries
from app.dashboard.views import PER_PAGE, SESSION, _int, error_page, page, redirect, render
from app.keys import POOL, REDIS, SETTINGS
from app.mirrors.model import request_mirror
from app.repos import model
from app.repos.rebuild import remove_repo, remove_snapshot, request_point, request_rebuild
from app.repos.storage import storage_from_settings
from app.schemas.environments import EnvironmentCreate, PointRequest
from app.schemas.repos import RepoCreate, SnapshotCreate

_ID_MAX = 2**62


def _form(post) -> dict:
    """A posted form's text fields (first value each), without the CSRF token."""
    return {k: v for k, v in post.items() if isinstance(v, str) and k != "csrf"}


def _invalid(exc: ValidationError) -> str:
    messages = exc.messages
    if isinstance(messages, dict):
        return "; ".join(" ".join(map(str, v)) if isinstance(v, list) else str(v) for v in messages.values())
    return " ".join(map(str, messages))


async def _act(request: web.Request, action, done):
    """Run `action()` (a domain call); redirect to done(result), or show the refusal as the API words it."""
    try:
        result = await action()
    except ValidationError as exc:
        return error_page(request, 400, _invalid(exc))
    return redirect(done(result))


def _snap(request: web.Request) -> int:
    return _int(request.match_info["snap_id"], 0, 0, _ID_MAX)


def _repo_page(repo_id: int, **query) -> str:
    return f"/repos/{repo_id}" + (f"?{urlencode(query)}" if query else "")


# --- pages ----------------------------------------------------------------------------------------

def _roles(request: web.Request) -> dict:
    who = request[SESSION].principal
    return {"can_upload": who.has_role(Role.uploader), "can_operate": who.has_role(Role.operator)}


@page
async def repos_page(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    q = request.query.get("q", "")[:200]
    return render("repos.html", request, {
        "repos": await repo_queries.list_repos(pool, q, _int(request.query.get("page")), PER_PAGE), "q": q,
        "environments": await repo_queries.environments(pool), **_roles(request)})


@page
async def repo_page(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    repo = await repo_queries.get_repo(pool, _int(request.match_info["id"], 0, 0, _ID_MAX))
    if repo is None:
        return error_page(request, 404, f"Repository #{request.match_info['id']} does not exist.")
    snaps = await repo_queries.snapshots(pool, repo["id"])
    wanted = _int(request.query.get("snapshot"), 0, 0, _ID_MAX)
    current = next((s for s in snaps if s["id"] == wanted), snaps[0] if snaps else None)
    q = request.query.get("q", "")[:200]
    packages = None
    if current is not None:
        packages = await repo_queries.packages(pool, current["id"], q, _int(request.query.get("page")), PER_PAGE)
    task_id = _int(request.query.get("task"), 0, 0, _ID_MAX)
    return render("repo.html", request, {
        "repo": repo, "snapshots": snaps, "current": current, "packages": packages, "q": q,
        "environments": await repo_queries.environments(pool),
        "task": await task_queries.get_task(pool, task_id) if task_id else None,
        "mirror": await repo_queries.mirror(pool, repo["id"]),
        "max_upload": request.app[SETTINGS].max_upload_bytes, **_roles(request)})


# --- repositories --------------------------------------------------------------------------------

@page(role=Role.operator)
async def repo_mirror(request: web.Request) -> web.Response:
    """The repository page's "Mirror now": the same domain call as POST /api/v2/repo/<id>/mirror."""
    repo_id = _int(request.match_info["id"], 0, 0, _ID_MAX)
    ref = await request_mirror(request.app[POOL], request.app[REDIS], repo_id, None,
                               requested_by=request[SESSION].principal.username)
    return redirect(f"/repos/{repo_id}?task={ref.id}")


@page(role=Role.operator)
async def create_repo(request: web.Request) -> web.Response:
    """As POST /api/v2/repo."""
    form = _form(await request.post())
    if form.get("type") == "deb":
        form.pop("releasever", None)
    else:
        form.pop("dist", None)
        form.pop("section", None)

    async def action():
        return await model.create_repo(request.app[POOL], **RepoCreate().load(form))

    return await _act(request, action, lambda repo: _repo_page(repo.id))


@page(role=Role.operator)
async def delete_repo(request: web.Request) -> web.Response:
    """As DELETE /api/v2/repo/<id>: its snapshots, published trees and environment links go with it."""
    repo_id = _int(request.match_info["id"], 0, 0, _ID_MAX)

    async def action():
        await remove_repo(request.app[POOL], storage_from_settings(request.app[SETTINGS]), repo_id)

    return await _act(request, action, lambda _: "/repos")


# --- snapshots -----------------------------------------------------------------------------------

@page(role=Role.uploader)
async def create_snapshot(request: web.Request) -> web.Response:
    """As POST /api/v2/repo/<id>/snapshot: empty, or a copy of another snapshot of the repository."""
    repo_id = _int(request.match_info["id"], 0, 0, _ID_MAX)
    form = _form(await request.post())
    if not form.get("from"):
        form.pop("from", None)

    async def action():
        return await model.create_snapshot(request.app[POOL], repo_id, SnapshotCreate().load(form)["source"])

    return await _act(request, action, lambda snap: _repo_page(repo_id, snapshot=snap.id))


@page(role=Role.operator)
async def delete_snapshot(request: web.Request) -> web.Response:
    """As DELETE /api/v2/snapshot/<id> (refused while an environment points at it)."""
    snap_id = _snap(request)

    async def action():
        snap = await model.get_snapshot(request.app[POOL], snap_id)
        await remove_snapshot(request.app[POOL], storage_from_settings(request.app[SETTINGS]), snap_id)
        return snap.repo_id

    return await _act(request, action, lambda repo_id: _repo_page(repo_id))


@page(role=Role.uploader)
async def rebuild(request: web.Request) -> web.Response:
    """As PUT /api/v2/snapshot/<id>/rebuild: a task, followed live on the repository page."""
    snap_id = _snap(request)
    form = _form(await request.post())
    pool = request.app[POOL]

    async def action():
        snap = await model.get_snapshot(pool, snap_id)
        sign = parse_bool(form.get("gpgSign", "false"), "Invalid GPG sign value")
        ref = await request_rebuild(pool, request.app[REDIS], snap_id, sign,
                                    requested_by=request[SESSION].principal.username)
        return snap.repo_id, ref.id

    return await _act(request, action, lambda r: _repo_page(r[0], snapshot=snap_id, task=r[1]))


@page(role=Role.uploader, ui=True)
async def upload(request: web.Request) -> web.Response:
    """The browser's upload (XMLHttpRequest, CSRF token in its header, checked before the body is read):
    POST /api/v2/snapshot/<id>/upload itself, as the session's user; it answers the API's JSON."""
    request[auth.PRINCIPAL] = request[SESSION].principal
    return await snapshots_api.upload(request)


# --- environments --------------------------------------------------------------------------------

@page(role=Role.operator)
async def create_environment(request: web.Request) -> web.Response:
    """As POST /api/v2/environment."""
    form = _form(await request.post())

    async def action():
        body = EnvironmentCreate().load(form)
        return await model.create_environment(request.app[POOL], body.get("name"), body["description"])

    return await _act(request, action, lambda _: "/repos#environments")


@page(role=Role.operator)
async def point(request: web.Request) -> web.Response:
    """As PATCH /api/v2/environment/<env>/point: a task, followed live on the repository page."""
    form = _form(await request.post())
    pool = request.app[POOL]

    async def action():
        snap_id = PointRequest().load(form)["snapshot"]
        ref = await request_point(pool, request.app[REDIS], form.get("env", ""), snap_id,
                                  requested_by=request[SESSION].principal.username)
        snap = await model.get_snapshot(pool, snap_id)
        return snap.repo_id, snap_id, ref.id

    return await _act(request, action, lambda r: _repo_page(r[0], snapshot=r[1], task=r[2]))


# --- compare ---------------------------------------------------------------------------------------

@page
async def compare(request: web.Request) -> web.Response:
    """As GET /api/v2/snapshot/<a>/diff/<b>, with the packages of the same name and arch on both sides
    shown as changed (a new version, or the same one rebuilt) rather than as one removed and one added."""
    pool = request.app[POOL]
    repo_id = _int(request.match_info["id"], 0, 0, _ID_MAX)
    a, b = (_int(request.query.get(k), 0, 0, _ID_MAX) for k in ("a", "b"))
    if not a or not b:
        return error_page(request, 400, "Choose the two snapshots to compare.")
    repo = await model.get_repo(pool, repo_id)
    snaps = {s.id: s for s in [await model.get_snapshot(pool, a), await model.get_snapshot(pool, b)]}
    if any(s.repo_id != repo.id for s in snaps.values()):
        return error_page(request, 400, "Both snapshots must belong to this repository.")
    diff = await model.diff_snapshots(pool, a, b, request.app[SETTINGS].base_url)
    removed = {(p["name"], p["arch"]): p for p in diff["removed"]}
    changed, added = [], []
    for p in diff["added"]:
        old = removed.pop((p["name"], p["arch"]), None)
        (changed.append((old, p)) if old else added.append(p))
    return render("repo_compare.html", request, {
        "repo": repo, "a": a, "b": b, "added": added, "removed": list(removed.values()), "changed": changed,
        "snapshots": await repo_queries.snapshots(pool, repo.id),
    })
