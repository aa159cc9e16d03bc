"""GET /repo/...: the published trees and the public signing key, served by Depot itself.

Only what storage.resolve_public() maps inside public/ (and the trees its links lead to) is
served: no directory listings, no build folders, no pool browsing by digest.
"""
from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate, parsedate_to_datetime

from aiohttp import web

from app.keys import SETTINGS
from app.repos.rebuild import publish_public_key
from app.repos.signing import signer_from_settings
from app.repos.storage import storage_from_settings

log = logging.getLogger(__name__)

# Small index entry points: answered with exact-match If-Modified-Since (as nginx's default does),
# so pointing an environment back to an older snapshot is seen by clients too.
ENTRY_NAMES = {"InRelease", "Release", "Release.gpg", "repomd.xml", "repomd.xml.asc"}


async def serve(request: web.Request) -> web.StreamResponse:
    rel = request.match_info.get("path", "")
    path = storage_from_settings(request.app[SETTINGS]).resolve_public(rel)
    if path is None:
        raise web.HTTPNotFound(text="Not found\n")
    if path.name not in ENTRY_NAMES:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})
    st = path.stat()
    last_modified = formatdate(st.st_mtime, usegmt=True)
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            if int(parsedate_to_datetime(since).timestamp()) == int(st.st_mtime):
                return web.Response(status=304, headers={"Last-Modified": last_modified})
        except (TypeError, ValueError):
            pass
    body = path.read_bytes() if request.method != "HEAD" else b""
    resp = web.Response(body=body, headers={"Last-Modified": last_modified, "Cache-Control": "no-cache"},
                        content_type="text/xml" if path.suffix == ".xml" else "text/plain")
    if request.method == "HEAD":
        resp.content_length = st.st_size
    return resp


async def publish_key_on_startup(app: web.Application) -> None:
    """Create the signing key on first start (or import it) and publish its public part at
    /repo/gpgkeys/<server_name>.pub, so hosts can fetch it before any rebuild."""
    settings = app[SETTINGS]
    try:
        storage = storage_from_settings(settings)
        signer = signer_from_settings(settings)
        await asyncio.get_running_loop().run_in_executor(None, publish_public_key, storage, signer,
                                                         settings.server_name)
    except Exception as exc:  # the API still works; rebuilds will report the signing problem
        log.warning("could not publish the signing key: %s", exc)
