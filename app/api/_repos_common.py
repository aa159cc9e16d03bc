"""Helpers shared by the repository handlers: ids from the path, domain errors -> envelope."""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

from aiohttp import web

from app.errors import ApiError, bad_request
from app.repos import RepoError
from app.repos.storage import Storage
from app.keys import SETTINGS


@lru_cache(maxsize=8)
def _storage(path: str) -> Storage:
    return Storage(path)


def storage_of(request: web.Request) -> Storage:
    return _storage(str(request.app[SETTINGS].storage_dir))


def path_id(request: web.Request, key: str, invalid: str) -> int:
    raw = request.match_info.get(key, "")
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(invalid)
    return int(raw)


@contextmanager
def domain_errors():
    """RepoError carries its own status (400/403/404/409): turn it into the JSON envelope."""
    try:
        yield
    except RepoError as exc:
        raise ApiError(exc.status, exc.message) from None


def parse_bool(value, error: str) -> bool:
    """PHP-style booleans of the reference (true/false, 1/0, yes/no, on/off) plus JSON booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise bad_request(error)
