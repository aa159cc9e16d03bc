"""/api/v2/snapshot/<id>/...: details, package listing, diff, upload, delete, rebuild."""
from __future__ import annotations

import logging

from aiohttp import web

from app.tasks import dispatch
from app.api._repos_common import domain_errors, parse_bool, path_id, storage_of
from app.auth import Role, require_role
from app.errors import ApiError, bad_request, ok, read_json
from app.repos import model
from app.repos.signing import signer_from_settings
from app.repos.storage import TooLarge
from app.repos.upload import FAILED, HEADINGS, FileResult, Outcome, add_file
from app.keys import POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)
INVALID_SNAPSHOT = "Invalid snapshot ID"
MAX_FILES = 1000
MAX_NAME = 255


def _snap_id(request) -> int:
    return path_id(request, "snap_id", INVALID_SNAPSHOT)


def _browse(request):
    return require_role(request, Role.viewer, "You are not allowed to list packages (browse repository)")


async def get_snapshot(request: web.Request) -> web.Response:
    require_role(request, Role.viewer, "You are not allowed to read snapshots")
    snap_id = _snap_id(request)
    async with request.app[POOL].acquire() as conn:
        with domain_errors():
            snap = await model.get_snapshot(conn, snap_id)
        archs = (await model.snapshot_archs(conn, [snap.id])).get(snap.id, [])
    return ok(snap.wire(archs))


async def list_packages(request: web.Request) -> web.Response:
    _browse(request)
    snap_id = _snap_id(request)
    async with request.app[POOL].acquire() as conn:
        with domain_errors():
            rows = await model.list_packages(conn, snap_id, request.app[SETTINGS].base_url)
    return ok(rows)


async def diff(request: web.Request) -> web.Response:
    _browse(request)
    snap_id = _snap_id(request)
    raw = request.match_info.get("other_id", "")
    if not raw.isdigit():
        raise bad_request(f"Invalid snapshot Id #{raw}")
    async with request.app[POOL].acquire() as conn:
        with domain_errors():
            result = await model.diff_snapshots(conn, snap_id, int(raw), request.app[SETTINGS].base_url)
    return ok(result)


async def delete_packages(request: web.Request) -> web.Response:
    require_role(request, Role.uploader, "You are not allowed to delete packages.")
    snap_id = _snap_id(request)
    body = await read_json(request)
    names = body.get("packages")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise bad_request("Invalid request")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        with domain_errors():
            deleted = await model.delete_packages(conn, snap_id, names)
    if not deleted:
        raise ApiError(404, "Nothing to delete")
    # Reference key (sic, with the colon); names only, never server paths.
    return ok({"Packages deleted successfully:": [{"name": n} for n in deleted]})


async def delete_snapshot(request: web.Request) -> web.Response:
    require_role(request, Role.operator, "You are not allowed to delete snapshots")
    snap_id = _snap_id(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        with domain_errors():
            snap, repo = await model.delete_snapshot(conn, snap_id)
    storage_of(request).unpublish(snap.public_rel(repo))
    return ok(f"Snapshot #{snap_id} deleted")


async def rebuild(request: web.Request) -> web.Response:
    snap_id = _snap_id(request)
    body = await read_json(request, allow_empty=True)
    if body.get("gpgSign") in (None, ""):
        raise bad_request("Invalid request")
    who = require_role(request, Role.uploader, "You are not allowed to rebuild a repository snapshot")
    sign = parse_bool(body["gpgSign"], "Invalid GPG sign value")
    pool = request.app[POOL]
    async with pool.acquire() as conn, conn.transaction():
        with domain_errors():
            await model.get_snapshot(conn, snap_id, for_update=True)
        await conn.execute(
            "UPDATE snapshots SET reconstruct = coalesce(reconstruct, 'needed') WHERE id = $1", snap_id)
        ref = await dispatch.create_task(conn, "rebuild", f"snapshot:{snap_id}",
                                      {"snapshot": snap_id, "gpg_sign": sign}, requested_by=who.username)
    await dispatch.dispatch(request.app[REDIS], ref)
    return ok("Snapshot metadata rebuild started", rc=202, **{"task-id": ref.id})


# ---- upload ------------------------------------------------------------------------------------
async def upload(request: web.Request) -> web.Response:
    require_role(request, Role.uploader, "You are not allowed to upload packages")
    snap_id = _snap_id(request)
    pool, settings = request.app[POOL], request.app[SETTINGS]
    async with pool.acquire() as conn:
        with domain_errors():
            snap, repo = await model.snapshot_with_repo(conn, snap_id)
    if not request.content_type.startswith("multipart/"):
        raise bad_request("Invalid request")
    storage = storage_of(request)
    limit = settings.max_upload_bytes

    received: list[tuple[str, object]] = []      # (client name, Incoming | FileResult)
    options: dict[str, str] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.filename is None:           # a plain form field: an option
                if part.name in ("overwrite", "ignore-if-exists"):
                    options[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")[:16]
                else:
                    await part.release()
                continue
            name = (part.filename or part.name or "file")[:MAX_NAME]
            if len(received) >= MAX_FILES:
                raise bad_request(f"Too many files in one request (at most {MAX_FILES})")
            try:
                incoming = await storage.receive(_chunks(part), max_size=limit)
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
    # rpm packages are signed at upload, once, so rebuilds never wait for rpmsign.
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


async def _chunks(part):
    while chunk := await part.read_chunk(1 << 20):
        yield chunk


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
