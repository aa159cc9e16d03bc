"""The repository domain: repositories, snapshots, environments, package files, publishing.

HTTP-free: handlers in app/api/ call these functions and map RepoError.status to the envelope.
"""


class RepoError(Exception):
    """A refusal with a client-facing message; `status` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(RepoError):
    status = 404


class Conflict(RepoError):
    status = 409


class Denied(RepoError):
    status = 403
