"""The SQL behind each dashboard page, one small module per page, so the pages stay thin.

Every list is paginated in SQL (LIMIT/OFFSET over an indexed order, one extra row to know whether a
next page exists: no count(*) over big tables); fleet-wide figures are single aggregate queries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

# The tables of other capabilities may not exist yet (or may change shape): a page then says so
# instead of failing.
MISSING_SCHEMA = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError, asyncpg.UndefinedFunctionError)


# Fleet-wide and hour-wide figures are cached this long per process: the overview polls every few
# seconds, and these change slowly while costing a scan each.
CACHE_SECONDS = 10.0
_cache: dict = {}


async def cached(key, compute):
    hit = _cache.get(key)
    if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = await compute()
    _cache[key] = (time.monotonic(), value)
    return value


def clear_cache() -> None:
    _cache.clear()


@dataclass
class Page:
    rows: list
    page: int
    per_page: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.page > 1


async def fetch_page(conn_or_pool, sql: str, *args, page: int = 1, per_page: int = 50) -> Page:
    """Run `sql` (which must end with its ORDER BY) with LIMIT/OFFSET appended as the last two args."""
    page = max(1, page)
    n = len(args)
    rows = await conn_or_pool.fetch(f"{sql} LIMIT ${n + 1} OFFSET ${n + 2}", *args, per_page + 1, (page - 1) * per_page)
    return Page(list(rows[:per_page]), page, per_page, len(rows) > per_page)


def prefix_pattern(q: str) -> str:
    """A user's search text as a LIKE prefix pattern (index-friendly); `*` is a wildcard."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%") + "%"


def like_pattern(q: str) -> str:
    """A user's search text as a literal ILIKE substring pattern."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
