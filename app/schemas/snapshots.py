"""Request schemas of the snapshot endpoints (also feed OpenAPI); their messages are the reference's."""
from __future__ import annotations

from marshmallow import fields, validate

from app.schemas.common import ReferenceBody, says

INVALID = "Invalid request"


class PackagesDelete(ReferenceBody):
    packages = fields.List(
        fields.String(validate=validate.Length(min=1, error=INVALID), error_messages=says(INVALID)),
        required=True, validate=validate.Length(min=1, error=INVALID), error_messages=says(INVALID),
        metadata={"description": "package file names (as listed), never metadata files"})


class RebuildRequest(ReferenceBody):
    # Only its presence is checked here: the reference checks the value after the caller's role.
    gpgSign = fields.Raw(required=True, validate=validate.NoneOf([""], error=INVALID), error_messages=says(INVALID),
                         metadata={"type": ["boolean", "string"],
                                   "description": "sign the metadata: true/false, 1/0, yes/no or on/off"})
