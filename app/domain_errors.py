"""The one family of domain errors: a refusal with a client-facing message and the HTTP status it means.

HTTP-free: domain code raises these, and app/errors.py's middleware renders every one of them in the
Repomanager envelope (`message_error` holds the message verbatim; keyword arguments become extra keys).
"""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400

    def __init__(self, message: Any, *, status: int | None = None, **extra):
        super().__init__(message if isinstance(message, str) else repr(message))
        self.message = message
        if status is not None:
            self.status = status
        self.extra = extra


class Invalid(DomainError):
    status = 400


class Denied(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class TooLarge(DomainError):
    status = 413
