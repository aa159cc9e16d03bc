"""Profile request/response schemas (also feed OpenAPI)."""
from __future__ import annotations

import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

NAME = validate.And(
    validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}$", error="Profile name may hold 1-64 letters, digits, '.', '_' or '-'"),
    validate.NoneOf(["server-settings"], error="This profile name is reserved"),
)
PACKAGE_RE = re.compile(r"^[A-Za-z0-9_.+*:-]{1,255}$")
SERVICE_RE = re.compile(r"^[A-Za-z0-9_.@:*+-]{1,255}$")


class CommaList(fields.Field):
    """A comma-joined string (as the agent reads it) or a list of strings; stored comma-joined."""

    def __init__(self, item_re: re.Pattern, what: str, **kwargs):
        super().__init__(**kwargs)
        self.item_re = item_re
        self.what = what

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None:
            return ""
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value]
        else:
            raise ValidationError(f"must be a comma-separated string or a list of {self.what} names")
        items = [v for v in items if v]
        if len(items) > 1000:
            raise ValidationError("too many entries")
        for item in items:
            if not self.item_re.match(item):
                raise ValidationError(f"invalid {self.what} name {item[:64]!r}")
        return ",".join(items)


class ProfileFields(Schema):
    class Meta:
        unknown = EXCLUDE

    Package_exclude = CommaList(PACKAGE_RE, "package")
    Package_exclude_major = CommaList(PACKAGE_RE, "package")
    Service_reload = CommaList(SERVICE_RE, "service")
    Service_restart = CommaList(SERVICE_RE, "service")
    Notes = fields.String(allow_none=True, validate=validate.Length(max=4096))


class ProfileCreate(ProfileFields):
    name = fields.String(required=True, validate=NAME)


class ProfileUpdate(ProfileFields):
    name = fields.String(validate=NAME)


class ProfileResult(Schema):
    Id = fields.Integer()
    Name = fields.String()
    Package_exclude = fields.String()
    Package_exclude_major = fields.String()
    Service_reload = fields.String()
    Service_restart = fields.String()
    Notes = fields.String()


class ReposerverResult(Schema):
    hostname = fields.String()
    gpgkey_url = fields.String()
