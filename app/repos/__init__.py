"""The repository domain: repositories, snapshots, environments, package files, publishing.

HTTP-free. Its refusals are the app's domain errors (app/domain_errors.py: Invalid, NotFound, Conflict,
Denied), which the API's error middleware renders; RepoError names the whole family, for callers that
treat any refusal of this domain alike.
"""
from app.domain_errors import Conflict, Denied, Invalid, NotFound
from app.domain_errors import DomainError as RepoError

__all__ = ["Conflict", "Denied", "Invalid", "NotFound", "RepoError"]
