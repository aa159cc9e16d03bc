"""Sources page: the source repositories, their keys, the mirrors that use each and each mirror's last run.

Tables from sql/015_sources.sql and sql/016_mirrors.sql; a run is the newest `mirror` task of the mirror's
repository (index tasks_mirror_runs). The `secrets` column is never read here.
"""
from __future__ import annotations

from collections import defaultdict


async def list_sources(pool) -> list[dict]:
    """Every source by type then name, each with `keyring` (its keys), `named` (keys its definition
    names by link or fingerprint that are not in its keyring) and `mirrors` (with their last run)."""
    async with pool.acquire() as conn:
        sources = await conn.fetch(
            "SELECT id, type, name, definition, method, created_at, updated_at FROM sources ORDER BY type, name")
        keys = await conn.fetch(
            "SELECT source_id, fingerprint, uids, expires_at, added_at FROM source_keys ORDER BY source_id, added_at,"
            " fingerprint")
        mirrors = await conn.fetch(
            """
            SELECT m.source_id, m.repo_id, r.name, r.dist, r.section, r.releasever, m.arches,
                   m.last_snapshot_id, m.last_run_at,
                   t.id AS task_id, t.status AS task_status, t.error AS task_error, t.created_at AS task_created,
                   t.finished_at AS task_finished, t.progress_text AS task_progress,
                   (t.result->>'snapshot')::bigint AS task_snapshot, (t.result->>'unchanged')::boolean AS unchanged,
                   (t.result->>'downloaded')::bigint AS downloaded
            FROM mirrors m JOIN repos r ON r.id = m.repo_id
            LEFT JOIN LATERAL (SELECT id, status, error, created_at, finished_at, progress_text, result FROM tasks
                               WHERE kind = 'mirror' AND target = 'repo:' || m.repo_id
                               ORDER BY id DESC LIMIT 1) t ON true
            ORDER BY m.source_id, r.name, r.id
            """)
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
