"""Request schemas of the environment endpoints (also feed OpenAPI); their messages are the reference's."""
from __future__ import annotations

from marshmallow import fields, validate

from app.schemas.common import Digits, ReferenceBody, says

DESCRIPTION_MESSAGE = "description must be a string of at most 200 characters"
SNAPSHOT_REQUIRED = "Snapshot Id is required"


class EnvironmentCreate(ReferenceBody):
    # The repository model checks the name itself (app/repos/model.py); here it is described.
    name = fields.Raw(allow_none=True, metadata={"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"})
    description = fields.String(load_default="", validate=validate.Length(max=200, error=DESCRIPTION_MESSAGE),
                                error_messages=says(DESCRIPTION_MESSAGE))


class PointedSnapshot(Digits):
    """The snapshot to point at; empty, 0 and booleans count as missing."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("", 0, "0") or isinstance(value, bool):
            raise self.make_error("required")
        return super()._deserialize(value, attr, data, **kwargs)


class PointRequest(ReferenceBody):
    snapshot = PointedSnapshot(required=True, max_digits=18,
                               error_messages={**says(SNAPSHOT_REQUIRED), "invalid": "Invalid snapshot Id #{input}"},
                               metadata={"description": "the snapshot's id, a number or a string of digits"})
