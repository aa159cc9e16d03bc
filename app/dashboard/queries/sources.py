"""Sources page: the source repositories, their keys, the mirrors that use each and each mirror's last run.

Tables from sql/015_sources.sql and sql/016_mirrors.sql; each mirror's last run is the API's
(app/mirrors/model.last_runs). The `secrets` column is never read here.
"""
from __future__ import annotations

from collections import defaultdict

from app.mirrors.model import last_runs


async def list_sources(pool) -> list[dict]:
    """Every source by type then name, each with `keyring` (its keys), `named` (keys its definition
    names by link or fingerprint that are not in its keyring) and `mirrors` (with their last run)."""
    async with pool.acquire() as conn:
        sources = await conn.fetch(
            "SELECT id, type, name, definition, method, created_at, updated_at FROM sources ORDER BY type, name")
        keys = await conn.fetch(
            "SELECT source_id, fingerprint, uids, expires_at, added_at FROM source_keys ORDER BY source_id, added_at,"
            " fingerprint")
        mirrors = await last_runs(conn)
    by_source: dict[int, dict[str, list]] = defaultdict(lambda: {"keys": [], "mirrors": []})
    for k in keys:
        by_source[k["source_id"]]["keys"].append(k)
    for m in mirrors:
        by_source[m["source_id"]]["mirrors"].append(m)
    out = []
    for s in sources:
        extra = by_source[s["id"]]
        d = s["definition"]
        scopes = d.get("distributions") or d.get("releasever") or []
        have = {k["fingerprint"] for k in extra["keys"]}
        named = []
        for scope in scopes:
            for entry in scope.get("gpgkeys", []):
                fpr, link = entry.get("fingerprint"), entry.get("link")
                # A long or short key id names a key in the keyring when the fingerprint ends with it.
                if fpr and not any(h.endswith(fpr) for h in have) and fpr not in named:
                    named.append(fpr)
                if link and link not in named:
                    named.append(link)
        out.append({**dict(s), "scopes": scopes, "keyring": extra["keys"], "mirrors": extra["mirrors"], "named": named,
                    "client_certificate": bool(d.get("ssl-authentication", {}).get("certificate"))})
    return out
