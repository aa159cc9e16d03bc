"""Schemas of the requests to hosts (app/agents/): what an operator asks, and a request as the API shows it.

Update parameters are JSON booleans here; app/agents/protocol.py turns them into the strings the agent
reads.
"""
from __future__ import annotations

import re

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from app.agents import protocol
from app.agents.requests import STATUSES
from app.schemas.common import PhpBool

PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_~:-]{0,254}$")
MAX_PACKAGES = 1000
MAX_HOSTS = 100_000
_TEXT = validate.Length(min=1, max=255)


class UpdateParams(Schema):
    class Meta:
        unknown = RAISE

    dry_run = PhpBool(data_key="dry-run", load_default=protocol.UPDATE_PARAMS["dry-run"])
    ignore_exclusions = PhpBool(data_key="ignore-exclusions", load_default=protocol.UPDATE_PARAMS["ignore-exclusions"])
    full_upgrade = PhpBool(data_key="full-upgrade", load_default=protocol.UPDATE_PARAMS["full-upgrade"])
    keep_config_files = PhpBool(data_key="keep-config-files", load_default=protocol.UPDATE_PARAMS["keep-config-files"])

    @post_load
    def _wire_keys(self, data, **kwargs):
        return {self.fields[k].data_key: v for k, v in data.items()}


class RequestCreate(Schema):
    """One request: its name, and for the updates the packages and parameters (defaults as the agent's)."""

    class Meta:
        unknown = RAISE

    request = fields.String(required=True, validate=validate.OneOf(protocol.REQUESTS))
    packages = fields.List(
        fields.String(validate=validate.Regexp(PACKAGE_RE, error="Invalid package name")),
        validate=validate.Length(min=1, max=MAX_PACKAGES),
        metadata={"description": "request-packages-update only: package names (versions cannot be pinned)"})
    update_params = fields.Nested(UpdateParams, data_key="update-params",
                                  metadata={"description": "the two update requests only"})

    @validates_schema
    def _fits_the_request(self, data, **kwargs):
        name = data.get("request")
        if name == protocol.PACKAGES_UPDATE and not data.get("packages"):
            raise ValidationError("request-packages-update needs packages", "packages")
        if "packages" in data and name != protocol.PACKAGES_UPDATE:
            raise ValidationError(f"{name} takes no packages", "packages")
        if "update_params" in data and name not in protocol.UPDATES:
            raise ValidationError(f"{name} takes no update-params", "update-params")

    @post_load
    def _params(self, data, **kwargs):
        """(name, params) as stored: the updates always carry their four parameters."""
        params = {}
        if data["request"] in protocol.UPDATES:
            params["update-params"] = data.get("update_params") or UpdateParams().load({})
        if "packages" in data:
            params["packages"] = list(dict.fromkeys(data["packages"]))
        return {"request": data["request"], "params": params}


class HostFilter(Schema):
    """Hosts matching every key given (the fleet filters of /hosts/); {} is every host."""

    class Meta:
        unknown = RAISE

    profile = fields.String(validate=_TEXT)
    env = fields.String(validate=_TEXT)
    os = fields.String(validate=_TEXT)
    os_version = fields.String(validate=_TEXT)
    kernel = fields.String(validate=_TEXT)
    arch = fields.String(validate=_TEXT)
    outdated = PhpBool(metadata={"description": "true: hosts with updates available; false: up to date"})
    package = fields.String(validate=validate.Regexp(PACKAGE_RE, error="Invalid package name"),
                            metadata={"description": "hosts with this package installed (exact name)"})
    connected = PhpBool(metadata={"description": "hosts whose agent is (true) or is not (false) connected"})

    @post_load
    def _exact_package(self, data, **kwargs):
        if "package" in data:
            data["strict_name"] = True  # the package by its exact name, as documented above
        return data


class RequestsCreate(RequestCreate):
    """The same request to many hosts: `hosts` (ids) or `filter`, one of them."""

    hosts = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=2**63 - 1)),
                        validate=validate.Length(min=1, max=MAX_HOSTS))
    filter = fields.Nested(HostFilter)

    @validates_schema
    def _one_selection(self, data, **kwargs):
        if ("hosts" in data) == ("filter" in data):
            raise ValidationError("give either hosts (a list of host ids) or filter (an object)", "hosts")

    @post_load
    def _params(self, data, **kwargs):
        loaded = super()._params(data)
        loaded.update(hosts=data.get("hosts"), filter=data.get("filter"))
        return loaded


class RequestsCreated(Schema):
    Created = fields.Integer(required=True, metadata={"description": "requests made (one per host matched)"})


class RequestRow(Schema):
    """A request to a host. Summary and Log only when one request is read; Has_log in listings."""

    Id = fields.Integer(required=True)
    Host_id = fields.Integer(required=True)
    Request = fields.String(required=True, validate=validate.OneOf(protocol.REQUESTS))
    Params = fields.Dict(required=True, metadata={"description": "packages and update-params, as given"})
    Status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    Info = fields.String(allow_none=True, metadata={"description": "why it is where it is (sent, lost, ...)"})
    Error = fields.String(allow_none=True, metadata={"description": "the agent's error, when it failed"})
    Requested_by = fields.String(allow_none=True)
    Timed_out = fields.Boolean(metadata={"description": "failed by Depot's time limits, not by the agent"})
    Created = fields.String(required=True)
    Sent = fields.String(allow_none=True)
    Started = fields.String(allow_none=True)
    Finished = fields.String(allow_none=True)
    Summary = fields.Raw(allow_none=True, metadata={"description": "the agent's summary of an update"})
    Log = fields.String(allow_none=True)
    Has_log = fields.Boolean()


class RequestsQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(validate=validate.Range(min=1))
