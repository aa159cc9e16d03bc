"""Request schemas of the repository endpoints (also feed OpenAPI); their messages are the reference's."""
from __future__ import annotations

from marshmallow import fields, post_load, validate

from app.schemas.common import Digits, ReferenceBody, says

# The repository model checks the names themselves (app/repos/model.py); here they are described.
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"}
TYPE_MESSAGE = 'type must be "deb" or "rpm"'
REPOS_MESSAGE = "repos must be a list of repository ids"


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

    @post_load
    def _repo(self, data, **kwargs):
        # The model's keyword arguments: `component` only stands in for an absent `section`.
        section = data["section"] if "section" in data else data.get("component")
        return {"name": data.get("name"), "type": data["type"], "dist": data.get("dist"), "section": section,
                "releasever": data.get("releasever")}


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
