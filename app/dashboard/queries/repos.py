"""Repositories page: repositories, their snapshots, the environments pointing at them, packages.

Tables from sql/003_repos.sql: repos, snapshots, snapshot_packages, package_files, environments,
environment_snapshots.
"""
from __future__ import annotations

from app.dashboard.queries import Page, fetch_page, like_pattern


async def list_repos(pool, q: str = "", page: int = 1, per_page: int = 50) -> Page:
    sql = """
        SELECT r.id, r.name, r.type, r.dist, r.section, r.releasever, r.created_at,
               (SELECT count(*) FROM snapshots s WHERE s.repo_id = r.id AND s.status = 'active') AS snapshots,
               (SELECT max(s.created_at) FROM snapshots s WHERE s.repo_id = r.id AND s.status = 'active') AS latest,
               (SELECT string_agg(e.name, ', ' ORDER BY e.name) FROM environment_snapshots es
                  JOIN environments e ON e.id = es.environment_id WHERE es.repo_id = r.id) AS envs
        FROM repos r"""
    args: list = []
    if q:
        sql += " WHERE r.name ILIKE $1 OR r.dist ILIKE $1 OR r.releasever ILIKE $1"
        args.append(like_pattern(q))
    sql += " ORDER BY r.name, r.id"
    return await fetch_page(pool, sql, *args, page=page, per_page=per_page)


async def get_repo(pool, repo_id: int):
    return await pool.fetchrow("SELECT * FROM repos WHERE id = $1", repo_id)


async def mirror(pool, repo_id: int):
    """A mirror repository's source and its last run (None for a repository that is not a mirror)."""
    return await pool.fetchrow(
        """
        SELECT m.arches, m.gpg_check, m.include, m.exclude, m.keep_latest, m.last_run_at, m.last_snapshot_id,
               s.name AS source, s.type AS source_type, s.definition->>'url' AS url,
               t.id AS task_id, t.status AS task_status, t.error AS task_error, t.finished_at AS task_finished,
               t.progress_text AS task_progress
        FROM mirrors m JOIN sources s ON s.id = m.source_id
        LEFT JOIN LATERAL (SELECT id, status, error, finished_at, progress_text FROM tasks
                           WHERE kind = 'mirror' AND target = 'repo:' || m.repo_id ORDER BY id DESC LIMIT 1) t ON true
        WHERE m.repo_id = $1
        """,
        repo_id,
    )


async def snapshots(pool, repo_id: int, limit: int = 200) -> list:
    return await pool.fetch(
        """
        SELECT s.id, s.status, s.signed, s.reconstruct, s.copied_from, s.created_at, s.built_at,
               (SELECT count(*) FROM snapshot_packages sp WHERE sp.snapshot_id = s.id) AS packages,
               (SELECT string_agg(e.name, ', ' ORDER BY e.name) FROM environment_snapshots es
                  JOIN environments e ON e.id = es.environment_id WHERE es.snapshot_id = s.id) AS envs
        FROM snapshots s WHERE s.repo_id = $1 AND s.status = 'active'
        ORDER BY s.created_at DESC, s.id DESC LIMIT $2
        """,
        repo_id,
        limit,
    )


async def environments(pool) -> list:
    return await pool.fetch(
        """
        SELECT e.id, e.name, e.description, count(es.repo_id) AS repos
        FROM environments e LEFT JOIN environment_snapshots es ON es.environment_id = e.id
        GROUP BY e.id ORDER BY e.name
        """
    )


async def packages(pool, snapshot_id: int, q: str = "", page: int = 1, per_page: int = 50) -> Page:
    # The primary key (snapshot_id, filename) gives the order; the search filters inside one snapshot.
    sql = """
        SELECT sp.filename, p.name, p.version, p.release, p.epoch, p.arch, p.size, p.sha256, sp.added_at
        FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id
        WHERE sp.snapshot_id = $1"""
    args: list = [snapshot_id]
    if q:
        sql += " AND (p.name ILIKE $2 OR sp.filename ILIKE $2)"
        args.append(like_pattern(q))
    sql += " ORDER BY sp.filename"
    return await fetch_page(pool, sql, *args, page=page, per_page=per_page)
