"""Pieces shared by the schemas: bodies checked with the reference's own messages, and its loose values."""
from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields


class ReferenceBody(Schema):
    """A body refused with the reference's texts: the first message alone is the answer, without the
    field's name before it or marshmallow's `errors` detail (see app/api/inputs.py). Unknown keys are
    ignored, as the reference ignores them."""

    bare_errors = True

    class Meta:
        unknown = EXCLUDE


def says(message: str) -> dict:
    """error_messages for a field that answers every refusal with one message."""
    return dict.fromkeys(("required", "null", "invalid"), message)


def php_bool(value: Any) -> bool | None:
    """The reference's booleans (true/false, 1/0, yes/no, on/off, any case) and JSON booleans; None
    for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


class PhpBool(fields.Boolean):
    """A boolean read as php_bool reads it."""

    def _deserialize(self, value, attr, data, **kwargs):
        flag = php_bool(value)
        if flag is None:
            raise self.make_error("invalid", input=value)
        return flag


class Digits(fields.Integer):
    """An id given as a number or a string of digits; at most `max_digits` of them if set."""

    def __init__(self, *, max_digits: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_digits = max_digits

    def _deserialize(self, value, attr, data, **kwargs):
        text = str(value)
        if isinstance(value, bool) or not text.isdigit() or (self.max_digits and len(text) > self.max_digits):
            raise self.make_error("invalid", input=value)
        try:
            return int(text)
        except ValueError:  # digits int() does not read, e.g. superscripts
            raise self.make_error("invalid", input=value) from None
