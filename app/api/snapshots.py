"""/api/v2/snapshot/<id>/...: details, package listing, diff, upload, delete, rebuild."""
from __future__ import annotations

import logging

from aiohttp import web

from app.api.inputs import form_parts, load_body, parse_bool, path_id
from app.auth import Role, require_role
from app.errors import ApiError, accepted, bad_request, ok
from app.keys import POOL, REDIS, SETTINGS
from app.openapi import docs
from app.repos import model
from app.repos.rebuild import remove_snapshot, request_rebuild
from app.repos.signing import signer_from_settings
from app.repos.storage import TooLarge, storage_from_settings
from app.repos.upload import FAILED, HEADINGS, FileResult, Outcome, add_file
from app.schemas.snapshots import PackagesDelete, RebuildRequest

log = logging.getLogger(__name__)
INVALID_SNAPSHOT = "Invalid snapshot ID"
MAX_FILES = 1000
MAX_NAME = 255
_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Role too low", 404: "Unknown snapshot"}
_SNAP = {"snap_id": int}


def _snap_id(request) -> int:
    return path_id(request, "snap_id", INVALID_SNAPSHOT)


def _browse(request):
    return require_role(request, Role.viewer, "You are not allowed to list packages (browse repository)")


@docs(summary="One snapshot", path=_SNAP, responses=_ERRORS)
async def get_snapshot(request: web.Request) -> web.Response:
    require_role(request, Role.viewer, "You are not allowed to read snapshots")
    return ok(await model.snapshot_details(request.app[POOL], _snap_id(request)))


@docs(summary="The packages of a snapshot, by name", path=_SNAP, responses=_ERRORS)
async def list_packages(request: web.Request) -> web.Response:
    _browse(request)
    snap_id = _snap_id(request)
    return ok(await model.list_packages(request.app[POOL], snap_id, request.app[SETTINGS].base_url))


@docs(summary="Packages added and removed from this snapshot to the other (compared by content)",
      path={**_SNAP, "other_id": int}, responses=_ERRORS)
async def diff(request: web.Request) -> web.Response:
    _browse(request)
    snap_id = _snap_id(request)
    raw = request.match_info.get("other_id", "")
    if not raw.isdigit():
        raise bad_request(f"Invalid snapshot Id #{raw}")
    return ok(await model.diff_snapshots(request.app[POOL], snap_id, int(raw), request.app[SETTINGS].base_url))


@docs(summary="Remove package files from a snapshot (uploader and up; never metadata files)",
      request=PackagesDelete, path=_SNAP, responses={**_ERRORS, 404: "Unknown snapshot, or nothing to delete"})
async def delete_packages(request: web.Request) -> web.Response:
    require_role(request, Role.uploader, "You are not allowed to delete packages.")
    snap_id = _snap_id(request)
    body = await load_body(request)
    deleted = await model.delete_packages(request.app[POOL], snap_id, body["packages"])
    # Reference key (sic, with the colon); names only, never server paths.
    return ok({"Packages deleted successfully:": [{"name": n} for n in deleted]})


@docs(summary="Delete a snapshot and its published tree (operator; not while an environment points at it)",
      path=_SNAP, responses={**_ERRORS, 409: "An environment points at it"})
async def delete_snapshot(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to delete snapshots")
    snap_id = _snap_id(request)
    await remove_snapshot(request.app[POOL], storage_from_settings(request.app[SETTINGS]), snap_id)
    return ok(f"Snapshot #{snap_id} deleted")


@docs(summary="Rebuild a snapshot's metadata (uploader and up): a task, 202 with its id", request=RebuildRequest,
      path=_SNAP, status=202, responses=_ERRORS)
async def rebuild(request: web.Request) -> web.Response:
    snap_id = _snap_id(request)
    body = await load_body(request, allow_empty=True)
    who = require_role(request, Role.uploader, "You are not allowed to rebuild a repository snapshot")
    sign = parse_bool(body["gpgSign"], "Invalid GPG sign value")
    ref = await request_rebuild(request.app[POOL], request.app[REDIS], snap_id, sign, requested_by=who.username)
    return accepted(ref, "Snapshot metadata rebuild started")


# ---- upload ------------------------------------------------------------------------------------
@docs(summary="Upload package files (multipart: one file per field; options overwrite, ignore-if-exists)",
      path=_SNAP, responses={**_ERRORS, 413: "A file is larger than the upload limit"})
async def upload(request: web.Request) -> web.Response:
    require_role(request, Role.uploader, "You are not allowed to upload packages")
    snap_id = _snap_id(request)
    pool, settings = request.app[POOL], request.app[SETTINGS]
    snap, repo = await model.snapshot_with_repo(pool, snap_id)
    if not request.content_type.startswith("multipart/"):
        raise bad_request("Invalid request")
    storage = storage_from_settings(settings)
    limit = settings.max_upload_bytes

    received: list[tuple[str, object]] = []      # (client name, Incoming | FileResult)
    options: dict[str, str] = {}
    try:
        # Every part is received before any is stored: a body malformed anywhere stores nothing.
        async for part in form_parts(request):
            if part.filename is None:           # a plain form field: an option
                if part.name in ("overwrite", "ignore-if-exists"):
                    options[part.name] = (await part.text())[:16]
                else:
                    await part.release()
                continue
            name = (part.filename or part.name or "file")[:MAX_NAME]
            if len(received) >= MAX_FILES:
                raise bad_request(f"Too many files in one request (at most {MAX_FILES})")
            try:
                incoming = await storage.receive(part.chunks(), max_size=limit)
                received.append((name, incoming))
            except TooLarge:
                await part.release()            # skip the rest of this file, keep reading the others
                received.append((name, FileResult(name, Outcome.too_large,
                                                  reason=f"larger than the {limit} byte upload limit")))
        if not received:
            raise bad_request("Invalid request")
        overwrite = parse_bool(options.get("overwrite", "false"), "Invalid overwrite value")
        ignore = parse_bool(options.get("ignore-if-exists", "false"), "Invalid ignore-if-exists value")
        if overwrite and ignore:
            raise bad_request("Options overwrite and ignore-if-exists are mutually exclusive")
    except BaseException:
        for _, item in received:
            if not isinstance(item, FileResult):
                item.discard()
        raise

    results: list[FileResult] = []
    # rpm packages are signed at upload, once, so rebuilds never wait for their signing.
    signer = signer_from_settings(settings) if repo.type == "rpm" else None
    for name, item in received:
        if isinstance(item, FileResult):
            results.append(item)
            continue
        try:
            results.append(await add_file(pool, storage, snap.id, repo.type, item, name,
                                          overwrite=overwrite, ignore_if_exists=ignore, signer=signer))
        except ApiError:
            raise
        except Exception:
            # One file's failure never hides the others (reference: last file decides).
            log.exception("upload of %r into snapshot %s failed", name, snap.id)
            item.discard()
            results.append(FileResult(name, Outcome.error, reason="internal error while storing the file"))
    return _upload_reply(results)


def _upload_reply(results: list[FileResult]) -> web.Response:
    good = {HEADINGS[o]: [r.client_name for r in results if r.outcome == o]
            for o in (Outcome.uploaded, Outcome.ignored)}
    good = {k: v for k, v in good.items() if v}
    failed = [r for r in results if r.outcome in FAILED]
    files = [r.wire() for r in results]
    if not failed:
        return ok(good, files=files)
    details: dict[str, list[str]] = {}
    for r in failed:
        details.setdefault(HEADINGS[r.outcome], []).append(r.client_name)
    status = 413 if any(r.outcome == Outcome.too_large for r in failed) else 400
    raise ApiError(status, details, results=good, files=files)
