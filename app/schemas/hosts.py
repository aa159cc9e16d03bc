"""Request and response schemas of the host and fleet endpoints (also feed OpenAPI)."""
from __future__ import annotations

import ipaddress
import math
import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate, validates

HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
# A package version as dpkg and rpm both read it ([epoch:]version[-release]).
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~:_^-]{0,254}$")
SHORT = validate.Length(max=255)


class RegisterRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    hostname = fields.String(required=True, validate=validate.Regexp(HOSTNAME_RE, error="Invalid hostname"))
    ip = fields.String(required=True)

    @validates("ip")
    def _ip(self, value, **kwargs):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValidationError("Invalid IP address")


class RegisterResult(Schema):
    id = fields.String(required=True, metadata={"description": "auth id (public half of the host credentials)"})
    token = fields.String(required=True, metadata={"description": "host token, shown only once"})


class UnregisterRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    hostname = fields.String(required=True, validate=validate.Length(min=1, max=253))


def _network(value):
    if not isinstance(value, dict) or len(value) > 256:
        raise ValidationError("network must be an object {interface: {ipv4, ipv6, mac}}")
    for iface, info in value.items():
        if len(iface) > 64 or not isinstance(info, dict):
            raise ValidationError(f"network.{iface[:64]} must be an object {{ipv4, ipv6, mac}}")
        for key, item in info.items():
            if item is not None and (not isinstance(item, str) or len(item) > 255):
                raise ValidationError(f"network.{iface}.{key} must be a string or null")


class BootTime(fields.Field):
    """The agent's `uptime`: the boot time in epoch seconds, a number or a numeric string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("uptime must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationError("uptime must be a number")
        if not math.isfinite(number) or number < 0:
            raise ValidationError("uptime must be a positive number")
        return number


class RebootRequired(fields.Field):
    """The agent sends the strings "true"/"false"; JSON booleans are accepted too."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is True or value == "true":  # `is`: 1 == True, and 1 is not a valid value
            return True
        if value is False or value == "false":
            return False
        raise ValidationError('reboot_required must be "true" or "false"')


class StatusRequest(Schema):
    """PUT /host/status: every field is optional; unknown fields are ignored; null or "" = not given."""

    class Meta:
        unknown = EXCLUDE

    hostname = fields.String(validate=validate.Regexp(HOSTNAME_RE, error="Invalid hostname"))
    os = fields.String(validate=SHORT)
    os_version = fields.String(validate=SHORT)
    os_family = fields.String(validate=SHORT)
    type = fields.String(validate=SHORT)
    cpu = fields.String(validate=SHORT)
    ram = fields.String(validate=SHORT)
    network = fields.Raw(validate=_network)
    kernel = fields.String(validate=SHORT)
    arch = fields.String(validate=SHORT)
    profile = fields.String(validate=validate.Length(max=64))
    env = fields.String(validate=validate.Length(max=64))
    agent_status = fields.String(validate=validate.OneOf(["running", "stopped", "disabled"]))
    agent_version = fields.String(validate=validate.Length(max=64))
    linupdate_version = fields.String(validate=validate.Length(max=64))
    reboot_required = RebootRequired()
    uptime = BootTime()

    @pre_load
    def _drop_empty(self, data, **kwargs):
        # Like the reference, null and "" mean "not given" (but "0" and false are values).
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None and v != ""}
        return data


class HostRow(Schema):
    """A row of /hosts/ and its filters (never credentials)."""

    Id = fields.Integer()
    Ip = fields.String()
    Hostname = fields.String()
    Os = fields.String(allow_none=True)
    Os_version = fields.String(allow_none=True)
    Os_family = fields.String(allow_none=True)
    Cpu = fields.String(allow_none=True)
    Ram = fields.String(allow_none=True)
    Network = fields.String(allow_none=True, metadata={"description": "JSON text, as in Repomanager"})
    Kernel = fields.String(allow_none=True)
    Arch = fields.String(allow_none=True)
    Type = fields.String(allow_none=True)
    Profile = fields.String(allow_none=True)
    Env = fields.String(allow_none=True)
    Online_status = fields.String()
    Online_status_date = fields.String()
    Online_status_time = fields.String()
    Reboot_required = fields.String(allow_none=True)
    Uptime = fields.String(allow_none=True)
    Linupdate_version = fields.String(allow_none=True)
    Agent_version = fields.String(allow_none=True)
    Last_seen = fields.String(allow_none=True)
    Available_updates = fields.Integer()
    Agent_connected = fields.Boolean(metadata={"description": "its agent holds a socket open on /ws"})
    Agent_connected_since = fields.String(allow_none=True, metadata={"description": "when that socket authenticated"})


class PageQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(validate=validate.Range(min=1))
    per_page = fields.Integer(validate=validate.Range(min=1))


class PackageSearchQuery(PageQuery):
    strict = fields.Raw()
    strict_name = fields.Raw(data_key="strict-name")
    strict_version = fields.Raw(data_key="strict-version")
    older_than = fields.String(
        data_key="older-than", validate=validate.Regexp(VERSION_RE, error="Not a package version"),
        metadata={"description": "hosts whose installed version of the package (name exact, no version in the"
                                 " path) is older than this one, in dpkg or rpm order as the host's OS family says"},
    )


# Report bodies (documentation of the wire shape; the handlers check them with faster code).
class PackageItem(Schema):
    name = fields.String(required=True, metadata={"description": "may end in :<arch> (kept as its own field)"})
    version = fields.String(required=True)


class AvailableItem(PackageItem):
    repository = fields.String()
    security = fields.Boolean()


class InstalledReport(Schema):
    installed_packages = fields.Raw(
        required=True, metadata={"description": 'list of {name, version}, or the string "name|version,..."'}
    )


class AvailableReport(Schema):
    available_packages = fields.Raw(
        required=True,
        metadata={"description": 'list of {name, version, repository?, security?}, or "name|version,...", or "none"'},
    )


class Event(Schema):
    date_start = fields.String(required=True, metadata={"description": "YYYY-MM-DD"})
    time_start = fields.String(required=True, metadata={"description": "HH:MM:SS"})
    date_end = fields.String()
    time_end = fields.String()
    command = fields.String(required=True)
    installed = fields.List(fields.Nested(PackageItem))
    upgraded = fields.List(fields.Nested(PackageItem))
    removed = fields.List(fields.Nested(PackageItem))
    purged = fields.List(fields.Nested(PackageItem))
    downgraded = fields.List(fields.Nested(PackageItem))
    reinstalled = fields.List(fields.Nested(PackageItem))
    dep_installed = fields.List(fields.Nested(PackageItem))


class EventsReport(Schema):
    events = fields.List(fields.Nested(Event), required=True)
