"""Mirror repositories in PostgreSQL: creation (a repository and its mirror row together), the
configuration a run reads, and the request that queues a run."""
from __future__ import annotations

import re
from dataclasses import dataclass

from app.db import transactional
from app.domain_errors import Invalid, NotFound
from app.repos import model as repos
from app.sources.model import get_source, list_sources, source_by_id
from app.tasks.dispatch import create_task, dispatch
from app.tasks.kinds import Kind
from app.tasks.rows import TaskRef

ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9.+*?\[\]_-]{1,128}$")


def mirror_target(repo_id: int) -> str:
    return f"repo:{repo_id}"


@dataclass
class Mirror:
    repo: repos.Repo
    source_id: int
    arches: list[str]
    gpg_check: bool
    include: list[str]
    exclude: list[str]
    keep_latest: int | None
    last_digest: str | None
    last_snapshot_id: int | None
    udebs: bool = False

    def settings_key(self) -> str:
        """What, besides the upstream, decides a run's result: a change makes the next run a full one."""
        key = (sorted(self.arches), self.gpg_check, sorted(self.include), sorted(self.exclude),
               self.keep_latest, self.repo.dist, self.repo.section, self.repo.releasever)
        return repr((*key, "udebs") if self.udebs else key)     # a mirror without udebs: the key it always had


@transactional
async def create_mirror_repo(conn, *, name, type, dist=None, section=None, releasever=None, source: str,
                             arch: list[str], gpg_check: bool = True, include=(), exclude=(),
                             keep_latest: int | None = None, udebs: bool = False) -> repos.Repo:
    if udebs and type != "deb":
        raise Invalid("udebs are for deb mirrors")
    src = await get_source(conn, type, source)
    if type == "deb":
        dists = {d["name"]: [c["name"] for c in d["components"]] for d in src.definition.get("distributions", [])}
        if dist not in dists:
            raise Invalid(f"Source {source} has no distribution {dist} (it has: {', '.join(dists) or 'none'})")
        if section not in dists[dist]:
            raise Invalid(f"Source {source} {dist} has no component {section} (it has: {', '.join(dists[dist])})")
    else:
        vers = [v["name"] for v in src.definition.get("releasever", [])]
        if releasever not in vers:
            raise Invalid(f"Source {source} has no releasever {releasever} (it has: {', '.join(vers) or 'none'})")
    arches = list(dict.fromkeys(arch))
    for a in arches:
        if not isinstance(a, str) or not ARCH_RE.match(a):
            raise Invalid(f"Invalid architecture {a!r}")
    if not arches:
        raise Invalid("arch must list at least one architecture")
    for p in (*include, *exclude):
        if not PATTERN_RE.match(p):
            raise Invalid(f"Invalid package name pattern {p!r} (letters, digits, . + _ - and * ? [ ])")
    repo = await repos.create_repo(conn, name=name, type=type, dist=dist, section=section, releasever=releasever)
    await conn.execute(
        "INSERT INTO mirrors (repo_id, source_id, arches, gpg_check, include, exclude, keep_latest, udebs)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", repo.id, src.id, arches, gpg_check, list(include), list(exclude),
        keep_latest, udebs)
    repo.source = src.name
    return repo


async def get_mirror(db, repo_id: int) -> Mirror:
    repo = await repos.get_repo(db, repo_id)
    row = await db.fetchrow("SELECT * FROM mirrors WHERE repo_id = $1", repo_id)
    if row is None:
        raise Invalid(f"Repository #{repo_id} is not a mirror (create it with a source)")
    return Mirror(repo, row["source_id"], list(row["arches"]), row["gpg_check"], list(row["include"]),
                  list(row["exclude"]), row["keep_latest"], row["last_digest"], row["last_snapshot_id"], row["udebs"])


async def mirror_source(db, mirror: Mirror):
    return await source_by_id(db, mirror.source_id)


async def request_mirror(pool, redis, repo_id: int, env: str | None, *, requested_by: str | None = None) -> TaskRef:
    """Queue a run of the mirror (a run already queued is joined: requests coalesce)."""
    async with pool.acquire() as conn, conn.transaction():
        await get_mirror(conn, repo_id)
        if env is not None:
            await repos.get_environment(conn, env)
        ref = await create_task(conn, Kind.mirror.value, mirror_target(repo_id), {"repo": repo_id, "env": env},
                                requested_by=requested_by)
    await dispatch(redis, ref)
    return ref


async def last_snapshot(db, mirror: Mirror) -> int | None:
    """The last run's snapshot, if it is still there."""
    if mirror.last_snapshot_id is None:
        return None
    try:
        return (await repos.get_snapshot(db, mirror.last_snapshot_id)).id
    except NotFound:
        return None


async def last_runs(db) -> list:
    """Every mirror with its repository and its last run: the newest `mirror` task of its repository (index
    tasks_mirror_runs), by source then repository name."""
    return await db.fetch(
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


def run_wire(row) -> dict:
    """A mirror and its last run in the API's (the reference's capitalised) style; Last_run None: never run."""
    run = None
    if row["task_id"] is not None:
        run = {"Task_id": row["task_id"], "Status": row["task_status"],
               "Date": (row["task_finished"] or row["task_created"]).isoformat(),
               "Snapshot_id": row["task_snapshot"], "Unchanged": row["unchanged"], "Downloaded": row["downloaded"],
               "Error": row["task_error"]}
    return {"Repo_id": row["repo_id"], "Name": row["name"], "Dist": row["dist"], "Section": row["section"],
            "Releasever": row["releasever"], "Arch": list(row["arches"]), "Last_run": run}


async def sources_with_runs(db, kind: str | None = None) -> list[dict]:
    """The sources' wire rows (app/sources/model.list_sources), each with `Mirrors`: the mirrors using it and
    their last run (Depot's addition, asked for with ?mirrors=true)."""
    rows = await list_sources(db, kind)
    runs: dict[int, list] = {}
    for r in await last_runs(db):
        runs.setdefault(r["source_id"], []).append(run_wire(r))
    return [{**row, "Mirrors": runs.get(row["Id"], [])} for row in rows]
