"""A digest of every table's content, to prove that a refused request wrote nothing.

Bookkeeping columns that reads legitimately touch (key last-used times, heartbeats, last-seen) are left
out; everything else, row counts included, must be identical before and after a refused request.
"""
from __future__ import annotations

import re

VOLATILE = re.compile(r"last_used|last_seen|heartbeat|seen_at", re.I)

_cache: dict[str, str] = {}


async def digest_query(conn) -> str:
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.table_name <> 'schema_migrations'"
        " ORDER BY c.table_name, c.ordinal_position"
    )
    tables: dict[str, list[str]] = {}
    for r in rows:
        tables.setdefault(r["table_name"], [])
        if not VOLATILE.search(r["column_name"]):
            tables[r["table_name"]].append(r["column_name"])
    parts = []
    for table, cols in sorted(tables.items()):
        row_text = "concat_ws('|', " + ", ".join(f'"{c}"::text' for c in cols) + ")" if cols else "''"
        parts.append(
            f"SELECT '{table}' AS t, count(*) AS n, md5(coalesce(string_agg(md5({row_text}), ',' ORDER BY md5({row_text})), ''))"
            f' AS h FROM "{table}"'
        )
    return " UNION ALL ".join(parts) + " ORDER BY 1"


async def database_digest(pool) -> tuple:
    async with pool.acquire() as conn:
        schema_key = str(await conn.fetchval(
            "SELECT count(*) || ':' || coalesce(max(ordinal_position), 0) FROM information_schema.columns"
            " WHERE table_schema = 'public'"))
        query = _cache.get(schema_key)
        if query is None:
            query = _cache[schema_key] = await digest_query(conn)
        return tuple(tuple(r) for r in await conn.fetch(query))
