"""Request schemas of the source repository endpoints (also feed OpenAPI). The definition's own rules
(names, URL, keys, secrets) are checked by app/sources/definitions.py, which the template import shares."""
from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from app.schemas.common import PhpBool


class SourceDefinition(Schema):
    """One definition, in the shape of an entry of the reference's YAML templates."""

    class Meta:
        unknown = INCLUDE

    name = fields.String(required=True, metadata={"pattern": "^[A-Za-z0-9_-]{1,64}$"})
    type = fields.String(required=True, validate=validate.OneOf(["deb", "rpm"]))
    url = fields.String(required=True, metadata={
        "description": "archive root (deb: the folder holding dists/); http:// or https://; a password in it is "
                       "stored apart and never shown"})
    description = fields.String(load_default="")
    distributions = fields.List(fields.Dict(), metadata={
        "description": "deb: [{name, description, components: [{name}], gpgkeys: [{fingerprint}|{link}|{armored}]}]"})
    releasever = fields.List(fields.Dict(), metadata={"description": "rpm: [{name, description, gpgkeys}]"})
    ssl_authentication = fields.Dict(data_key="ssl-authentication", metadata={
        "description": "{certificate, private-key, ca-certificate}: the private key is never shown again"})
    non_compliant = fields.Raw(data_key="non-compliant", metadata={"description": "deb: the url already is the "
                                                                                 "folder holding InRelease"})


class SourceKeys(Schema):
    armored = fields.String(required=True, validate=validate.Length(min=1, max=1 << 20), metadata={
        "description": "ASCII-armored OpenPGP public key block (one or more keys)"})


class SourceListQuery(Schema):
    mirrors = PhpBool(load_default=False, metadata={
        "description": "Depot: each row also gets `Mirrors`, the mirror repositories using it with their last run"})
