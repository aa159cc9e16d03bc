"""Repositories, snapshots and environments in PostgreSQL, and their published paths.

Functions take `db`: the pool, or a connection when the caller runs several of them in one transaction
of its own. Those that need a transaction are @transactional: given the pool, they open their own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.db import transactional
from app.domain_errors import Conflict, Invalid, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
ENV_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass
class Repo:
    id: int
    name: str
    type: str
    dist: str | None
    section: str | None
    releasever: str | None
    source: str | None = None        # a mirror's source repository

    @classmethod
    def from_row(cls, r) -> Repo:
        return cls(r["id"], r["name"], r["type"], r["dist"], r["section"], r["releasever"], r.get("source"))

    @property
    def public_base(self) -> str:
        """Folder of this repository under /repo (Repomanager's layout)."""
        if self.type == "deb":
            return f"deb/{self.name}/{self.dist}/{self.section}"
        return f"rpm/{self.name}/{self.releasever}"

    def wire(self) -> dict:
        return {"Id": self.id, "Name": self.name, "Releasever": self.releasever, "Dist": self.dist,
                "Section": self.section, "Source": self.source or self.name, "Package_type": self.type}


@dataclass
class Snapshot:
    id: int
    repo_id: int
    status: str
    signed: bool
    reconstruct: str | None
    created_at: datetime
    built_at: datetime | None

    @classmethod
    def from_row(cls, r) -> Snapshot:
        return cls(r["id"], r["repo_id"], r["status"], r["signed"], r["reconstruct"], r["created_at"],
                   r["built_at"])

    @property
    def key(self) -> str:
        return f"snap-{self.id}"

    def public_rel(self, repo: Repo) -> str:
        return f"{repo.public_base}/{self.id}"

    def wire(self, archs: list[str] | None = None, envs: list[str] | None = None) -> dict:
        out = {"Id": self.id, "Date": self.created_at.strftime("%Y-%m-%d"),
               "Time": self.created_at.strftime("%H:%M:%S"), "Signed": "true" if self.signed else "false",
               "Arch": ",".join(archs or []), "Advanced_params": "{}", "Type": "local",
               "Reconstruct": self.reconstruct, "Status": self.status, "Id_repo": self.repo_id}
        if envs is not None:
            out["Environments"] = ",".join(envs)
        return out


# ---- repositories ----------------------------------------------------------------------------
async def create_repo(db, *, name: str, type: str, dist: str | None = None, section: str | None = None,
                      releasever: str | None = None) -> Repo:
    if type not in ("deb", "rpm"):
        raise Invalid("type must be deb or rpm")
    values = {"name": name, "dist": dist, "section": section} if type == "deb" else \
        {"name": name, "releasever": releasever}
    for field, value in values.items():
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise Invalid(f"Invalid {field}: letters, digits, '.', '_', '+', '-' only (1-64 characters)")
    if type == "deb":
        releasever = None
    else:
        dist = section = None
    try:
        row = await db.fetchrow(
            "INSERT INTO repos (name, type, dist, section, releasever) VALUES ($1, $2, $3, $4, $5) RETURNING *",
            name, type, dist, section, releasever)
    except asyncpg.UniqueViolationError:
        raise Conflict("Repository already exists") from None
    return Repo.from_row(row)


async def get_repo(db, repo_id: int) -> Repo:
    row = await db.fetchrow("SELECT * FROM repos WHERE id = $1", repo_id)
    if row is None:
        raise NotFound("Repository does not exist")
    return Repo.from_row(row)


async def list_repos(db) -> list[Repo]:
    rows = await db.fetch(
        "SELECT r.*, s.name AS source FROM repos r LEFT JOIN mirrors m ON m.repo_id = r.id"
        " LEFT JOIN sources s ON s.id = m.source_id ORDER BY r.name, r.dist NULLS FIRST, r.section NULLS FIRST, r.releasever")
    return [Repo.from_row(r) for r in rows]


@transactional
async def delete_repo(conn, repo_id: int) -> tuple[Repo, list[Snapshot]]:
    """Delete the rows; the caller unpublishes the returned snapshots' trees after commit."""
    repo = await get_repo(conn, repo_id)
    snaps = [Snapshot.from_row(r) for r in await conn.fetch("SELECT * FROM snapshots WHERE repo_id = $1", repo_id)]
    await conn.execute("DELETE FROM repos WHERE id = $1", repo_id)
    return repo, snaps


# ---- snapshots -------------------------------------------------------------------------------
@transactional
async def create_snapshot(conn, repo_id: int, from_id: int | None = None) -> Snapshot:
    repo = await get_repo(conn, repo_id)
    if from_id is not None:
        src = await get_snapshot(conn, from_id)
        if src.repo_id != repo.id:
            raise Invalid(f"Snapshot #{from_id} belongs to another repository")
    row = await conn.fetchrow(
        "INSERT INTO snapshots (repo_id, copied_from, reconstruct) VALUES ($1, $2, 'needed') RETURNING *",
        repo.id, from_id)
    if from_id is not None:
        await conn.execute(
            "INSERT INTO snapshot_packages (snapshot_id, filename, package_id)"
            " SELECT $1, filename, package_id FROM snapshot_packages WHERE snapshot_id = $2", row["id"], from_id)
        await conn.execute(
            "INSERT INTO snapshot_metadata (snapshot_id, type, name, data, open_sha256, open_size)"
            " SELECT $1, type, name, data, open_sha256, open_size FROM snapshot_metadata WHERE snapshot_id = $2",
            row["id"], from_id)
    return Snapshot.from_row(row)


async def get_snapshot(db, snap_id: int, *, for_update: bool = False) -> Snapshot:
    row = await db.fetchrow(
        "SELECT * FROM snapshots WHERE id = $1 AND status = 'active'" + (" FOR UPDATE" if for_update else ""),
        snap_id)
    if row is None:
        raise NotFound("Unknown snapshot ID")
    return Snapshot.from_row(row)


async def snapshot_details(db, snap_id: int) -> dict:
    """A snapshot's wire form, with the architectures of its packages."""
    snap = await get_snapshot(db, snap_id)
    return snap.wire((await snapshot_archs(db, [snap.id])).get(snap.id, []))


async def snapshot_with_repo(db, snap_id: int, *, for_update: bool = False) -> tuple[Snapshot, Repo]:
    snap = await get_snapshot(db, snap_id, for_update=for_update)
    return snap, await get_repo(db, snap.repo_id)


async def snapshot_archs(db, snap_ids: list[int]) -> dict[int, list[str]]:
    rows = await db.fetch(
        "SELECT sp.snapshot_id, array_agg(DISTINCT p.arch ORDER BY p.arch) AS archs FROM snapshot_packages sp"
        " JOIN package_files p ON p.id = sp.package_id WHERE sp.snapshot_id = ANY($1::bigint[])"
        " GROUP BY sp.snapshot_id", snap_ids)
    return {r["snapshot_id"]: list(r["archs"]) for r in rows}


async def list_snapshots(db, repo_id: int) -> list[dict]:
    await get_repo(db, repo_id)
    rows = await db.fetch(
        "SELECT s.*, coalesce((SELECT string_agg(e.name, ',' ORDER BY e.name) FROM environment_snapshots es"
        "  JOIN environments e ON e.id = es.environment_id WHERE es.snapshot_id = s.id), '') AS envs"
        " FROM snapshots s WHERE s.repo_id = $1 AND s.status = 'active' ORDER BY s.created_at DESC, s.id DESC",
        repo_id)
    archs = await snapshot_archs(db, [r["id"] for r in rows])
    out = []
    for r in rows:
        snap = Snapshot.from_row(r)
        out.append(snap.wire(archs.get(snap.id, []), [e for e in r["envs"].split(",") if e]))
    return out


def package_wire(row, repo: Repo, snap_id: int, base_url: str) -> dict:
    """One package of a snapshot listing; relative paths and URLs only, never server paths."""
    from .packages.rpm import location_href

    if repo.type == "deb":
        rel = f"pool/{repo.section}/{row['filename']}"
    else:
        rel = location_href(row["filename"], row["arch"])
    size = row["size"]
    return {
        "filename": row["filename"], "name": row["name"], "version": row["version"],
        "release": row["release"], "arch": row["arch"], "size": size, "size-human": _human(size),
        "relative-path": rel, "sha256": row["sha256"],
        "download-url": f"{base_url}/repo/{repo.public_base}/{snap_id}/{rel}",
    }


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}".replace(".0", "")
        n /= 1024
    return f"{n}"


async def snapshot_package_rows(db, snap_id: int):
    return await db.fetch(
        "SELECT sp.filename, p.name, p.version, p.release, p.arch, p.size, p.sha256 FROM snapshot_packages sp"
        " JOIN package_files p ON p.id = sp.package_id WHERE sp.snapshot_id = $1 ORDER BY p.name, sp.filename",
        snap_id)


async def list_packages(db, snap_id: int, base_url: str) -> list[dict]:
    snap, repo = await snapshot_with_repo(db, snap_id)
    return [package_wire(r, repo, snap.id, base_url) for r in await snapshot_package_rows(db, snap.id)]


async def diff_snapshots(db, id1: int, id2: int, base_url: str) -> dict:
    """Packages added/removed from id1 to id2, compared by content (sha256), not by path."""
    s1, r1 = await snapshot_with_repo(db, id1)
    s2, r2 = await snapshot_with_repo(db, id2)
    if r1.type != r2.type:
        raise Invalid("Cannot compare snapshots with different package types")
    a = {r["sha256"]: r for r in await snapshot_package_rows(db, s1.id)}
    b = {r["sha256"]: r for r in await snapshot_package_rows(db, s2.id)}
    return {"added": [package_wire(b[k], r2, s2.id, base_url) for k in b if k not in a],
            "removed": [package_wire(a[k], r1, s1.id, base_url) for k in a if k not in b]}


@transactional
async def delete_packages(conn, snap_id: int, filenames: list[str]) -> list[str]:
    """Remove package files (by canonical file name) from a snapshot. Only package rows can match:
    metadata files are not rows, so they can never be deleted this way."""
    snap = await get_snapshot(conn, snap_id, for_update=True)
    rows = await conn.fetch(
        "DELETE FROM snapshot_packages WHERE snapshot_id = $1 AND filename = ANY($2::text[]) RETURNING filename",
        snap.id, filenames)
    if not rows:
        raise NotFound("Nothing to delete")
    await conn.execute("UPDATE snapshots SET reconstruct = 'needed' WHERE id = $1", snap.id)
    return sorted(r["filename"] for r in rows)


@transactional
async def delete_snapshot(conn, snap_id: int) -> tuple[Snapshot, Repo]:
    snap, repo = await snapshot_with_repo(conn, snap_id, for_update=True)
    if await conn.fetchval("SELECT 1 FROM environment_snapshots WHERE snapshot_id = $1", snap.id):
        raise Conflict(f"Snapshot #{snap.id} is used by an environment")
    await conn.execute("UPDATE snapshots SET status = 'deleted' WHERE id = $1", snap.id)
    await conn.execute("DELETE FROM snapshot_packages WHERE snapshot_id = $1", snap.id)
    await conn.execute("DELETE FROM snapshot_metadata WHERE snapshot_id = $1", snap.id)
    return snap, repo


# ---- environments ----------------------------------------------------------------------------
async def create_environment(db, name: str, description: str = "") -> dict:
    if not isinstance(name, str) or not ENV_RE.match(name):
        raise Invalid("Invalid environment name: lower-case letters, digits, '_', '-' (1-32, letter first)")
    try:
        row = await db.fetchrow("INSERT INTO environments (name, description) VALUES ($1, $2) RETURNING *",
                                name, description or "")
    except asyncpg.UniqueViolationError:
        raise Conflict(f"Environment {name} already exists") from None
    return {"Id": row["id"], "Name": row["name"], "Description": row["description"]}


async def list_environments(db) -> list[dict]:
    rows = await db.fetch("SELECT * FROM environments ORDER BY id")
    return [{"Id": r["id"], "Name": r["name"], "Description": r["description"]} for r in rows]


async def get_environment(db, name: str):
    row = await db.fetchrow("SELECT * FROM environments WHERE name = $1", name)
    if row is None:
        raise NotFound(f"Environment {name} does not exist")
    return row


async def point_environment(conn, env_name: str, snap_id: int) -> tuple[Snapshot, Repo, str | None]:
    """Record that env serves snap_id for its repository; return the previous snapshot's id."""
    env = await get_environment(conn, env_name)
    snap, repo = await snapshot_with_repo(conn, snap_id)
    old = await conn.fetchval(
        "SELECT snapshot_id FROM environment_snapshots WHERE environment_id = $1 AND repo_id = $2 FOR UPDATE",
        env["id"], repo.id)
    await conn.execute(
        "INSERT INTO environment_snapshots (environment_id, repo_id, snapshot_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (environment_id, repo_id) DO UPDATE SET snapshot_id = $3, pointed_at = now()",
        env["id"], repo.id, snap.id)
    return snap, repo, old


# ---- profiles ----------------------------------------------------------------------------------
@transactional
async def set_profile_repos(conn, profile_name: str, repo_ids: list[int]) -> list[Repo]:
    """Replace a profile's repositories (in the given order). Unknown ids refuse the whole change."""
    profile_id = await conn.fetchval("SELECT id FROM profiles WHERE name = $1 FOR UPDATE", profile_name)
    if profile_id is None:
        raise NotFound(f"{profile_name} profile does not exist")
    ids = list(dict.fromkeys(repo_ids))
    found = {r["id"]: r for r in await conn.fetch("SELECT * FROM repos WHERE id = ANY($1::bigint[])", ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"Repository does not exist: {', '.join(map(str, missing))}")
    await conn.execute("DELETE FROM profile_repos WHERE profile_id = $1", profile_id)
    await conn.executemany("INSERT INTO profile_repos (profile_id, repo_id, position) VALUES ($1, $2, $3)",
                           [(profile_id, rid, pos) for pos, rid in enumerate(ids)])
    return [Repo.from_row(found[i]) for i in ids]


async def profile_repositories(db, profile_id: int, base_url: str) -> list[dict]:
    """The profile's repositories that have at least one active snapshot (as the reference), with
    URLs built from the configured base URL and the literal __ENV__ the agent replaces."""
    rows = await db.fetch(
        "SELECT r.* FROM profile_repos pr JOIN repos r ON r.id = pr.repo_id WHERE pr.profile_id = $1"
        " AND EXISTS (SELECT 1 FROM snapshots s WHERE s.repo_id = r.id AND s.status = 'active')"
        " ORDER BY pr.position, r.id", profile_id)
    out = []
    for row in rows:
        repo = Repo.from_row(row)
        out.append({"name": repo.name, "package_type": repo.type,
                    "url": f"{base_url}/repo/{repo.public_base}/__ENV__",
                    "distribution": repo.dist, "component": repo.section, "releasever": repo.releasever,
                    "filename_prefix": "repomanager-"})
    return out
