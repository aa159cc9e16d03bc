"""/api/v2/repo/...: list, create and delete repositories; list and create their snapshots."""
from __future__ import annotations

from aiohttp import web

from app.api._repos_common import domain_errors, path_id, storage_of
from app.auth import Role, require_role, require_user
from app.errors import bad_request, ok, read_json
from app.repos import model
from app.repos.rebuild import unpublish_snapshots
from app.keys import POOL

INVALID_REPO = "Invalid repository ID"


async def list_repos(request: web.Request) -> web.Response:
    # Every repository, even one without snapshots yet; an empty list is a 200 (reference: 400).
    require_user(request)
    async with request.app[POOL].acquire() as conn:
        repos = await model.list_repos(conn)
    return ok([r.wire() for r in repos])


async def create_repo(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to create repositories")
    body = await read_json(request)
    kind = body.get("type")
    if kind not in ("deb", "rpm"):
        raise bad_request('type must be "deb" or "rpm"')
    async with request.app[POOL].acquire() as conn:
        with domain_errors():
            repo = await model.create_repo(conn, name=body.get("name"), type=kind, dist=body.get("dist"),
                                           section=body.get("section", body.get("component")),
                                           releasever=_str_or_none(body.get("releasever")))
    return ok({"Id": repo.id, **repo.wire()}, rc=201)


def _str_or_none(value):
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


async def get_repo(request: web.Request) -> web.Response:
    require_user(request)
    repo_id = path_id(request, "repo_id", INVALID_REPO)
    async with request.app[POOL].acquire() as conn:
        with domain_errors():
            snaps = await model.list_snapshots(conn, repo_id)
    return ok(snaps)


async def delete_repo(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to delete repositories")
    repo_id = path_id(request, "repo_id", INVALID_REPO)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        with domain_errors():
            repo, snaps = await model.delete_repo(conn, repo_id)
    # Rows are gone (committed); now the published trees and environment links.
    storage = storage_of(request)
    await unpublish_snapshots(storage, repo, snaps)
    storage.remove_tree(repo.public_base)
    return ok(f"Repository #{repo_id} deleted")


async def create_snapshot(request: web.Request) -> web.Response:
    require_role(request, Role.uploader, "You are not allowed to create snapshots")
    repo_id = path_id(request, "repo_id", INVALID_REPO)
    body = await read_json(request, allow_empty=True)
    source = body.get("from")
    if source is not None and (isinstance(source, bool) or not str(source).isdigit()):
        raise bad_request("from must be a snapshot id")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        with domain_errors():
            snap = await model.create_snapshot(conn, repo_id, int(source) if source is not None else None)
    return ok({"Id": snap.id}, rc=201)


async def set_profile_repos(request: web.Request) -> web.Response:
    """PUT /api/v2/profile/<p>/repos {"repos": [<repo id>, ...]}: replace the profile's repositories."""
    require_role(request, Role.operator, "You are not allowed to edit profiles (needs an operator or admin API key)")
    body = await read_json(request)
    ids = body.get("repos")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**62
                                            for i in ids):
        raise bad_request("repos must be a list of repository ids")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        with domain_errors():
            repos = await model.set_profile_repos(conn, request.match_info["name"], ids)
    return ok([r.wire() for r in repos])
