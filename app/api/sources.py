"""/api/v2/source/...: source repositories (the upstreams mirrors come from), the reference's four
routes plus Depot's create, replace, delete and keys. Operators and admins only, even to read: a
source's definition may name internal hosts (the reference's rule, and its message)."""
from __future__ import annotations

from aiohttp import web

from app.api.inputs import check_body, form_parts, load_body, load_query
from app.auth import Role, require_role
from app.domain_errors import Invalid, TooLarge
from app.errors import ok, read_json_text
from app.keys import POOL, SETTINGS
from app.openapi import docs
from app.schemas.sources import SourceDefinition, SourceKeys, SourceListQuery
from app.mirrors import model as mirrors
from app.sources import model
from app.sources.templates import read_template

DENIED = "You are not allowed to edit source repositories"
NO_TEMPLATE = "You must provide a template file"
ONE_FILE = "Please, only provide one file at a time"
FIELD_NAME = 'The file must be prefixed with "template"'
IMPORTED = "Source repositories imported successfully"
_ERRORS = {400: "Bad input", 401: "No or bad credentials", 403: "Role too low"}
_ONE = {"type": str, "name": str}


def _operator(request: web.Request):
    return require_role(request, Role.operator, DENIED)


async def _listing(request: web.Request, kind: str | None) -> list[dict]:
    if load_query(request)["mirrors"]:
        return await mirrors.sources_with_runs(request.app[POOL], kind)
    return await model.list_sources(request.app[POOL], kind)


@docs(summary="Every source repository, by type then name (Definition is a JSON string)", query=SourceListQuery,
      responses=_ERRORS)
async def list_all(request: web.Request) -> web.Response:
    _operator(request)
    return ok(await _listing(request, None))


@docs(summary="The source repositories of one type (deb or rpm)", path={"type": str}, query=SourceListQuery,
      responses=_ERRORS)
async def list_type(request: web.Request) -> web.Response:
    _operator(request)
    return ok(await _listing(request, model.check_type(request.match_info["type"])))


@docs(summary="One source repository, or [] when there is none", path=_ONE, responses=_ERRORS)
async def get_one(request: web.Request) -> web.Response:
    _operator(request)
    kind = model.check_type(request.match_info["type"])
    return ok(await model.source_wire(request.app[POOL], kind, request.match_info["name"]))


@docs(summary="Import a YAML template of source repositories (multipart, one file field `template`); "
              "the type in the path is ignored, each entry's own is used",
      path={"type": str}, responses={**_ERRORS, 413: "Template too large"})
async def import_template(request: web.Request) -> web.Response:
    _operator(request)
    limit = request.app[SETTINGS].source_template_max_bytes
    data, files, misnamed = None, 0, False
    if request.content_type.startswith("multipart/"):
        async for part in form_parts(request):
            if part.filename is None:           # a plain form field
                await part.release()
                continue
            files += 1
            misnamed = misnamed or part.name != "template"
            if files > 1 or misnamed:
                await part.release()
                continue
            buf = bytearray()
            async for chunk in part.chunks():
                buf += chunk
                if len(buf) > limit:
                    raise TooLarge(f"The template is larger than {limit} bytes")
            data = bytes(buf)
    if files == 0:
        raise Invalid(NO_TEMPLATE)
    if files > 1:
        raise Invalid(ONE_FILE)
    if misnamed:
        raise Invalid(FIELD_NAME)
    definitions = read_template(data or b"")
    await model.import_definitions(request.app[POOL], definitions)
    return ok(IMPORTED, imported=[d.name for d in definitions], warnings=_unfetched(definitions))


def _unfetched(definitions) -> list[str]:
    """Keys named by link or fingerprint are recorded, not fetched (the server makes no request at import)."""
    out = []
    for d in definitions:
        scopes = d.definition.get("distributions") or d.definition.get("releasever") or []
        named = {e.get("link") or e.get("fingerprint") for s in scopes for e in s["gpgkeys"]}
        if named and not d.armored:
            out.append(f"{d.name}: keys recorded, not fetched ({', '.join(sorted(named))}); add them with "
                       f"POST /api/v2/source/{d.type}/{d.name}/keys")
    return out


async def _definition(request: web.Request) -> dict:
    """The JSON body, checked by the handler's schema, given on as sent (the schema renames nothing)."""
    raw = await read_json_text(request)
    check_body(request, raw)
    return raw


@docs(summary="Create one source repository from a JSON definition (the template entry's shape)",
      request=SourceDefinition, path={"type": str}, status=201, responses={**_ERRORS, 409: "It exists"})
async def create(request: web.Request) -> web.Response:
    _operator(request)
    raw = await _definition(request)
    return ok(await model.create_source(request.app[POOL], request.match_info["type"], raw), rc=201)


@docs(summary="Replace a source repository's definition (its keys and mirrors stay)", request=SourceDefinition,
      path=_ONE, responses={**_ERRORS, 404: "No such source"})
async def replace(request: web.Request) -> web.Response:
    _operator(request)
    raw = await _definition(request)
    return ok(await model.replace_source(request.app[POOL], request.match_info["type"], request.match_info["name"],
                                         raw))


@docs(summary="Delete a source repository and its keys (refused while a mirror uses it)", path=_ONE,
      responses={**_ERRORS, 404: "No such source", 409: "A mirror uses it"})
async def delete(request: web.Request) -> web.Response:
    _operator(request)
    name = request.match_info["name"]
    await model.delete_source(request.app[POOL], request.match_info["type"], name)
    return ok(f"Source repository {name} deleted")


@docs(summary="Add ASCII-armored public keys to this source's own keyring (they validate no other source)",
      request=SourceKeys, path=_ONE, status=201, responses={**_ERRORS, 404: "No such source"})
async def add_keys(request: web.Request) -> web.Response:
    _operator(request)
    body = await load_body(request)
    keys = await model.add_keys(request.app[POOL], request.match_info["type"], request.match_info["name"],
                                body["armored"])
    return ok({"fingerprints": [k.fingerprint for k in keys], "keys": [k.wire() for k in keys]}, rc=201)
