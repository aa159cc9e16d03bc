"""/api/v2/repo/...: list, create and delete repositories; list and create their snapshots."""
from __future__ import annotations

from aiohttp import web

from app import profiles
from app.api.inputs import load_body, path_id
from app.auth import Role, require_role, require_user
from app.errors import accepted, ok
from app.keys import POOL, REDIS, SETTINGS
from app.mirrors import model as mirrors
from app.openapi import docs
from app.repos import model
from app.repos.rebuild import remove_repo
from app.repos.storage import storage_from_settings
from app.schemas.repos import MirrorRequest, ProfileRepos, RepoCreate, SnapshotCreate

INVALID_REPO = "Invalid repository ID"
_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Role too low"}
_REPO = {"repo_id": int}


def _repo_id(request: web.Request) -> int:
    return path_id(request, "repo_id", INVALID_REPO)


@docs(summary="Every repository, even one without snapshots yet", responses=_ERRORS)
async def list_repos(request: web.Request) -> web.Response:
    # An empty list is a 200 (reference: 400).
    require_user(request)
    return ok([r.wire() for r in await model.list_repos(request.app[POOL])])


@docs(summary="Create a repository (operator or admin)", request=RepoCreate, status=201,
      responses={**_ERRORS, 409: "Repository exists"})
async def create_repo(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to create repositories")
    body = await load_body(request)
    if "source" in body:
        repo = await mirrors.create_mirror_repo(request.app[POOL], **body)
    else:
        repo = await model.create_repo(request.app[POOL], **body)
    return ok({"Id": repo.id, **repo.wire()}, rc=201)


@docs(summary="Run a mirror repository from its source into a new snapshot (operator): a task, 202 with its id",
      request=MirrorRequest, path=_REPO, status=202, responses={**_ERRORS, 404: "Unknown repository or environment"})
async def mirror(request: web.Request) -> web.Response:
    who = require_role(request, Role.operator, "You are not allowed to mirror repositories")
    repo_id = _repo_id(request)
    body = await load_body(request, allow_empty=True)
    ref = await mirrors.request_mirror(request.app[POOL], request.app[REDIS], repo_id, body["env"],
                                       requested_by=who.username)
    return accepted(ref, "Mirror started")


@docs(summary="The active snapshots of a repository, newest first", path=_REPO,
      responses={**_ERRORS, 404: "Unknown repository"})
async def get_repo(request: web.Request) -> web.Response:
    require_user(request)
    return ok(await model.list_snapshots(request.app[POOL], _repo_id(request)))


@docs(summary="Delete a repository with its snapshots, published trees and environment links (operator)",
      path=_REPO, responses={**_ERRORS, 404: "Unknown repository"})
async def delete_repo(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to delete repositories")
    repo_id = _repo_id(request)
    await remove_repo(request.app[POOL], storage_from_settings(request.app[SETTINGS]), repo_id)
    return ok(f"Repository #{repo_id} deleted")


@docs(summary="Create a snapshot of a repository: empty, or a copy of another (uploader and up)",
      request=SnapshotCreate, path=_REPO, status=201, responses={**_ERRORS, 404: "Unknown repository or snapshot"})
async def create_snapshot(request: web.Request) -> web.Response:
    require_role(request, Role.uploader, "You are not allowed to create snapshots")
    repo_id = _repo_id(request)
    body = await load_body(request, allow_empty=True)
    snap = await model.create_snapshot(request.app[POOL], repo_id, body["source"])
    return ok({"Id": snap.id}, rc=201)


@docs(summary="Replace a profile's repositories (operator or admin)", request=ProfileRepos,
      responses={**_ERRORS, 404: "Unknown profile or repository"})
async def set_profile_repos(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to edit profiles (needs an operator or admin API key)")
    body = await load_body(request)
    repos = await profiles.set_repos(request.app[POOL], request.match_info["name"], body["repos"])
    return ok([r.wire() for r in repos])
