"""The sources page: source repositories with their keys, the mirrors using each and each mirror's last
run; for operators, adding a source (one definition, or a YAML template file), adding an armored key to a
source, deleting a source, and making a mirror repository of one.

Every action is the API's: its schema (SourceDefinition, SourceKeys, RepoCreate), its domain function
(app/sources/model.py, app/mirrors/model.py), its role and its refusal texts (a viewer who posts reads
"You are not allowed to edit source repositories", as from /api/v2/source/). The page reads no secret:
a definition holds none (a URL's password and a TLS client key are stored apart, app/sources/definitions.py).
"""
from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from app.api.sources import DENIED, FIELD_NAME, NO_TEMPLATE, ONE_FILE
from app.auth import Role
from app.dashboard import forms
from app.dashboard.queries import sources as queries
from app.dashboard.views import SESSION, page, redirect, render
from app.domain_errors import Denied, DomainError, Invalid, TooLarge
from app.keys import POOL, SETTINGS
from app.mirrors.model import create_mirror_repo
from app.schemas.repos import RepoCreate
from app.schemas.sources import SourceDefinition, SourceKeys
from app.sources import model
from app.sources.templates import read_template

CREATE_FIELDS = ("type", "name", "url", "description", "dists", "components", "releasevers", "non_compliant",
                 "armored")
MIRROR_FIELDS = ("name", "dist", "section", "releasever", "arch", "include", "exclude", "keepLatest", "gpgCheck")
NOTICES = {
    "created": "Source repository {} added.",
    "imported": "Template imported: {}.",
    "key": "Key added to {}: {}.",
    "deleted": "Source repository {} deleted.",
}


def _can_edit(request: web.Request) -> bool:
    return request[SESSION].principal.has_role(Role.operator)


def _editor(request: web.Request) -> None:
    if not _can_edit(request):
        raise Denied(DENIED)


def _notice(request: web.Request) -> str | None:
    done = request.query.get("done", "")
    return NOTICES[done].format(*request.query.getall("what", [])[:2], "", "")[:600] if done in NOTICES else None


async def _list(request: web.Request, status: int = 200, error: str | None = None, values: dict | None = None,
                where: str = "") -> web.Response:
    return render("sources.html", request, {
        "sources": await queries.list_sources(request.app[POOL]), "error": error, "error_where": where,
        "values": values or {}, "notice": _notice(request), "can_edit": _can_edit(request)}, status=status)


def _done(what: str, *args: str, anchor: str = "") -> web.Response:
    query = "&".join(f"what={quote(a[:300], safe='')}" for a in args)
    return redirect(f"/sources?done={what}&{query}{anchor}")


@page
async def sources_page(request: web.Request) -> web.Response:
    return await _list(request)


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def definition_of(form: dict) -> dict:
    """The form as one definition in the API's (the YAML entry's) shape: each distribution gets the listed
    components; an armored key is given once (its fingerprint is then recorded for every scope)."""
    raw: dict = {"type": form.get("type", ""), "name": form.get("name", "").strip(),
                 "url": form.get("url", "").strip(), "description": form.get("description", "")}
    armored = form.get("armored", "").strip()
    keys = [{"armored": armored}] if armored else []
    if raw["type"] == "deb":
        components = [{"name": c} for c in _words(form.get("components", ""))]
        raw["distributions"] = [{"name": d, "components": components, "gpgkeys": keys if i == 0 else []}
                                for i, d in enumerate(_words(form.get("dists", "")))]
        raw["non-compliant"] = "true" if form.get("non_compliant") else "false"
    elif raw["type"] == "rpm":
        raw["releasever"] = [{"name": v, "gpgkeys": keys if i == 0 else []}
                             for i, v in enumerate(_words(form.get("releasevers", "")))]
    return raw


def _shown(form: dict) -> dict:
    """The values a refused form is shown again with: never a URL's password."""
    values = dict(form)
    if "@" in values.get("url", ""):
        values["url"] = ""
    return values


@page
async def source_create(request: web.Request) -> web.Response:
    """As POST /api/v2/source/<type>/ (201 there): one definition, its armored key imported with it."""
    _editor(request)
    form = await forms.fields(request, *CREATE_FIELDS)
    try:
        raw = definition_of(form)
        forms.load(SourceDefinition(), raw)
        created = await model.create_source(request.app[POOL], raw["type"], raw)
    except DomainError as exc:
        return await _list(request, exc.status, exc.message, _shown(form), where="create")
    return _done("created", f"{raw['name']} ({raw['type']})", anchor=f"#source-{created['Id']}")


@page
async def source_import(request: web.Request) -> web.Response:
    """As POST /api/v2/source/<type>/import: one YAML template file in the field `template`."""
    _editor(request)
    post = await request.post()
    files = [(name, value) for name, value in post.items() if isinstance(value, web.FileField)]
    try:
        if not files:
            raise Invalid(NO_TEMPLATE)
        if len(files) > 1:
            raise Invalid(ONE_FILE)
        name, upload = files[0]
        if name != "template":
            raise Invalid(FIELD_NAME)
        limit = request.app[SETTINGS].source_template_max_bytes
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"The template is larger than {limit} bytes")
        definitions = read_template(data)
        await model.import_definitions(request.app[POOL], definitions)
    except DomainError as exc:
        return await _list(request, exc.status, exc.message, where="import")
    return _done("imported", ", ".join(f"{d.name} ({d.type})" for d in definitions))


async def _source(request: web.Request) -> model.Source:
    return await model.get_source(request.app[POOL], model.check_type(request.match_info["type"]),
                                  request.match_info["name"])


@page
async def source_key(request: web.Request) -> web.Response:
    """As POST /api/v2/source/<type>/<name>/keys: armored public keys into this source's keyring only."""
    _editor(request)
    source = await _source(request)
    form = await forms.fields(request, "armored")
    try:
        body = forms.load(SourceKeys(), form)
        keys = await model.add_keys(request.app[POOL], source.type, source.name, body["armored"])
    except DomainError as exc:
        return await _list(request, exc.status, exc.message, where=f"key-{source.id}")
    return _done("key", source.name, ", ".join(k.fingerprint for k in keys), anchor=f"#source-{source.id}")


@page
async def source_delete(request: web.Request) -> web.Response:
    """As DELETE /api/v2/source/<type>/<name>: refused (409, naming them) while a mirror uses it."""
    _editor(request)
    source = await _source(request)
    try:
        await model.delete_source(request.app[POOL], source.type, source.name)
    except DomainError as exc:
        return await _list(request, exc.status, exc.message, where=f"delete-{source.id}")
    return _done("deleted", f"{source.name} ({source.type})")


@page
async def mirror_create(request: web.Request) -> web.Response:
    """As POST /api/v2/repo/ with a `source`: a mirror repository of this source (then Mirror now on its page)."""
    _editor(request)
    source = await _source(request)
    form = await forms.fields(request, *MIRROR_FIELDS)
    body: dict = {"type": source.type, "source": source.name, "name": form.get("name", ""),
                  "arch": _words(form.get("arch", "")), "gpgCheck": "true" if form.get("gpgCheck") else "false"}
    for field in ("include", "exclude"):
        body[field] = _words(form.get(field, ""))
    if form.get("keepLatest", "").strip():
        body["keepLatest"] = int(form["keepLatest"]) if form["keepLatest"].strip().isdigit() else form["keepLatest"]
    if source.type == "deb":
        body.update(dist=form.get("dist", ""), section=form.get("section", ""))
    else:
        body["releasever"] = form.get("releasever", "")
    try:
        repo = await create_mirror_repo(request.app[POOL], **forms.load(RepoCreate(), body))
    except DomainError as exc:
        return await _list(request, exc.status, exc.message, where=f"mirror-{source.id}")
    return redirect(f"/repos/{repo.id}")
