"""Request schemas of the repository endpoints (also feed OpenAPI); their messages are the reference's."""
from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validate

from app.schemas.common import Digits, PhpBool, ReferenceBody, says

# The repository model checks the names themselves (app/repos/model.py); here they are described.
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"}
TYPE_MESSAGE = 'type must be "deb" or "rpm"'
REPOS_MESSAGE = "repos must be a list of repository ids"
ARCH_MESSAGE = "arch must list the architectures to mirror"


class Releasever(fields.Raw):
    """An rpm release version: a string, or a number taken as its digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RepoCreate(ReferenceBody):
    """A deb repository needs name, dist and section (or component); an rpm one name and releasever."""

    name = fields.Raw(allow_none=True, metadata=_NAME)
    type = fields.String(required=True, validate=validate.OneOf(["deb", "rpm"], error=TYPE_MESSAGE),
                         error_messages=says(TYPE_MESSAGE))
    dist = fields.Raw(allow_none=True, metadata={**_NAME, "description": "deb: the distribution"})
    section = fields.Raw(allow_none=True, metadata={**_NAME, "description": "deb: the section"})
    component = fields.Raw(allow_none=True, metadata={**_NAME, "description": "deb: another name for section"})
    releasever = Releasever(allow_none=True, metadata={**_NAME, "description": "rpm: the release version"})
    # A mirror: its snapshots come from this source repository (POST /repo/<id>/mirror runs it).
    source = fields.String(metadata={"description": "mirror of this source repository (of the same type)"})
    arch = fields.List(fields.String(), validate=validate.Length(min=1, max=32, error=ARCH_MESSAGE),
                       error_messages=says(ARCH_MESSAGE), metadata={"description": "mirror: architectures to take"})
    gpgCheck = PhpBool(load_default=True, error_messages=says("gpgCheck must be true or false"),
                       metadata={"description": "mirror: check the upstream's signature with the source's keys"})
    include = fields.List(fields.String(), load_default=list, metadata={
        "description": "mirror: only packages whose name matches one of these globs"})
    exclude = fields.List(fields.String(), load_default=list, metadata={
        "description": "mirror: never packages whose name matches one of these globs"})
    keepLatest = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=10_000),
                                error_messages=says("keepLatest must be a number of versions, 1 or more"),
                                metadata={"description": "mirror: keep the N highest versions of each name and arch"})
    udebs = PhpBool(load_default=False, error_messages=says("udebs must be true or false"),
                    metadata={"description": "deb mirror: also the debian-installer's udebs "
                                             "(<component>/debian-installer/binary-<arch>)"})

    @post_load
    def _repo(self, data, **kwargs):
        # The model's keyword arguments: `component` only stands in for an absent `section`.
        section = data["section"] if "section" in data else data.get("component")
        repo = {"name": data.get("name"), "type": data["type"], "dist": data.get("dist"), "section": section,
                "releasever": data.get("releasever")}
        if "source" in data:
            if not data.get("arch"):
                raise ValidationError(ARCH_MESSAGE, "arch")
            repo.update(source=data["source"], arch=data["arch"], gpg_check=data["gpgCheck"],
                        include=data["include"], exclude=data["exclude"], keep_latest=data.get("keepLatest"),
                        udebs=data["udebs"])
        return repo


class MirrorRequest(ReferenceBody):
    env = fields.String(load_default=None, allow_none=True,
                        metadata={"description": "point this environment at the new snapshot once built"})


class SnapshotCreate(ReferenceBody):
    source = Digits(data_key="from", load_default=None, allow_none=True,
                    error_messages=says("from must be a snapshot id"),
                    metadata={"description": "copy the packages of this snapshot of the same repository"})


class ProfileRepos(ReferenceBody):
    repos = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=2**62 - 1, error=REPOS_MESSAGE),
                       error_messages=says(REPOS_MESSAGE)),
        required=True, error_messages=says(REPOS_MESSAGE),
        metadata={"description": "repository ids, in the order the profile gives them"})
