"""Users and API keys (admin endpoints): request and response schemas. Never a digest or password hash."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

ROLES = ["admin", "operator", "uploader", "viewer"]
USERNAME = validate.Regexp(r"^[A-Za-z0-9_.@-]{1,64}$", error="1-64 letters, digits, '_', '.', '@' or '-'")


class UserCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=USERNAME)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    password = fields.String(load_default=None, validate=validate.Length(min=8, max=1024),
                             metadata={"description": "dashboard password (optional)"})
    api_key = fields.Boolean(load_default=True,
                             metadata={"description": "also make the user's first API key (returned once)"})


class UserUpdateSchema(Schema):
    """A new role, a new dashboard password, or both."""

    class Meta:
        unknown = EXCLUDE

    role = fields.String(validate=validate.OneOf(ROLES))
    password = fields.String(validate=validate.Length(min=8, max=1024))

    @validates_schema
    def _something(self, data, **kwargs):
        if not data:
            raise ValidationError("give a role, a password or both", "_schema")


class UserSchema(Schema):
    Name = fields.String(required=True)
    Role = fields.String(required=True, validate=validate.OneOf(ROLES))
    Created = fields.String(required=True)
    Has_password = fields.Boolean(required=True)
    Key_created = fields.String(allow_none=True, required=True)
    Key_last_used = fields.String(allow_none=True, required=True)
    Api_key = fields.String(metadata={"description": "the new API key, only in the answer that creates it"})


class ApiKeySchema(Schema):
    Name = fields.String(required=True)
    Api_key = fields.String(required=True,
                            metadata={"description": "shown once; the user's older key stops working"})
