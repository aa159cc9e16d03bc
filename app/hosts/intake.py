"""Taking host reports: Intake.take_report and take_events, the whole protocol behind a report endpoint.

A report is checked cheaply (hosts/reports.py), compressed (hosts/bodies.py) and stored with
other requests' reports in one statement (group commit); a changed one creates or joins the
host's queued host_diff task, which goes to the workers in a batch job (app/tasks/batcher.py).

A report endpoint's work in PostgreSQL is small (compare a digest, store a compressed body, create
or join the host's queued host_diff task; or insert the new events), so per-statement costs
dominate it: a round trip, the executor's start-up, a commit that waits for the WAL flush.
GroupCommit queues the writes of concurrent requests and does each group in one statement: under
load, one round trip and one flush serve tens of requests; alone, a request is written at once.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import asyncpg
import orjson

from app.auth import HostCredentialCache, Principal
from app.hosts import bodies, registry, reports
from app.hosts.known import KnownVersions
from app.tasks.batcher import JobBatcher
from app.tasks.rows import create_host_diffs_cte

log = logging.getLogger(__name__)

# The API's reading of a request body as a JSON object (its errors are the wire's): called only when
# a report is not in the agent's exact form.
ReadJson = Callable[[], Awaitable[dict]]

# In one statement, for each report of the group:
# - compare its digest with its host's last one and touch last_seen; if it changed, store it and
#   create (or join) the host's queued host_diff task (that part is app/tasks/rows.py's), and keep its
#   item count beside the digest. A report sent without its body (its digest alone) stores nothing:
#   if the host's digest is another one (the report changed, or a failed diff forgot the digest) or
#   has no count, the row says `stale` and the report is sent again with its body; else the stored
#   count is the answer.
# - write nothing if its host no longer has the token digest the request was authenticated with
#   (see auth.HostCredentialCache).
# - lock the host rows FOR NO KEY UPDATE, in host id order (a group holds at most one report per
#   host; results are matched by host): it orders two reports of one host without blocking the
#   worker's foreign-key checks.
# The commit waits for the WAL flush: a 200 means the report survives a PostgreSQL crash.
_ACCEPT_SQL = f"""
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[], $6::text[], $7::int[])
           AS i(host_id, kind, digest, body, token_digest, job_id, items)
), old AS (
    SELECT h.id, CASE WHEN i.kind = 'installed' THEN h.installed_digest ELSE h.available_digest END AS digest,
           CASE WHEN i.kind = 'installed' THEN h.installed_items ELSE h.available_items END AS items
    FROM input i JOIN hosts h ON h.id = i.host_id AND h.token_digest = i.token_digest
    ORDER BY h.id FOR NO KEY UPDATE OF h
), upd AS (
    UPDATE hosts h SET last_seen_at = now(),
        installed_digest = CASE WHEN i.kind = 'installed' AND i.body IS NOT NULL THEN i.digest ELSE h.installed_digest END,
        available_digest = CASE WHEN i.kind = 'available' AND i.body IS NOT NULL THEN i.digest ELSE h.available_digest END,
        installed_items = CASE WHEN i.kind = 'installed' AND i.body IS NOT NULL THEN i.items ELSE h.installed_items END,
        available_items = CASE WHEN i.kind = 'available' AND i.body IS NOT NULL THEN i.items ELSE h.available_items END
    FROM input i JOIN old ON old.id = i.host_id  -- (after old: a row this statement updated cannot be locked)
    WHERE h.id = i.host_id
    RETURNING h.id
), rep AS (
    INSERT INTO host_reports (host_id, kind, digest, body)
    SELECT i.host_id, i.kind, i.digest, i.body FROM input i JOIN old ON old.id = i.host_id
    WHERE old.digest IS DISTINCT FROM i.digest AND i.body IS NOT NULL
    RETURNING id, host_id
), task AS ({create_host_diffs_cte("rep", "input")}
)
SELECT i.host_id, upd.id IS NOT NULL AS authorized, rep.id IS NOT NULL AS changed,
       task.id AS task_id, coalesce(task.created, false) AS created,
       i.body IS NULL AND old.id IS NOT NULL AND (old.digest IS DISTINCT FROM i.digest OR old.items IS NULL) AS stale,
       coalesce(i.items, old.items) AS items
FROM input i LEFT JOIN old ON old.id = i.host_id LEFT JOIN upd ON upd.id = i.host_id
LEFT JOIN rep ON rep.host_id = i.host_id LEFT JOIN task ON task.target = 'host:' || i.host_id
"""


@dataclass(frozen=True)
class Report:
    host_id: int
    kind: str  # installed | available
    digest: bytes  # of the body as received: an unchanged report is not stored again
    body: bytes | None  # bodies.encode_body(); None: the digest alone (unchanged?), store nothing
    token_digest: bytes  # the credentials the request was authenticated with
    job_id: str | None  # the batch job that will carry a new task (app/tasks/batcher.py); None without a body
    items: int | None = None  # the body's item count; None without a body


@dataclass(frozen=True)
class Accepted:
    authorized: bool  # False: the host's credentials changed since the request was authenticated
    changed: bool
    task_id: int | None
    created: bool  # a new host_diff task (else none, or the host's queued one was joined)
    stale: bool = False  # sent without its body, but the host's last digest is another one
    items: int | None = None  # the item count of the report stored (with a body: this one's)


async def accept_reports(pool, reports: list[Report]) -> dict[int, Accepted]:
    """Store each report unless its digest equals its host's last one, in one statement.
    At most one report per host. Returns the outcome by host id."""
    reports = sorted(reports, key=lambda r: r.host_id)
    columns = [list(c) for c in zip(*((r.host_id, r.kind, r.digest, r.body, r.token_digest, r.job_id, r.items)
                                       for r in reports))]
    rows = await pool.fetch(_ACCEPT_SQL, *columns)
    return {row["host_id"]: Accepted(row["authorized"], row["changed"], row["task_id"], row["created"], row["stale"],
                                     row["items"])
            for row in rows}


# One statement for the events of several hosts: each event is stored once (host + start + command),
# the whole history of a host is skipped when its digest is the last one's. Sent without its events
# (SeenDigests), a history stores nothing, and is `stale` if the host's last digest is another one.
_EVENTS_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[]) AS i(host_id, digest, token_digest, events)
), old AS (
    SELECT h.id, h.events_digest FROM input i JOIN hosts h ON h.id = i.host_id AND h.token_digest = i.token_digest
    ORDER BY h.id FOR NO KEY UPDATE OF h
), upd AS (
    UPDATE hosts h SET last_seen_at = now(),
        events_digest = CASE WHEN i.events IS NOT NULL THEN i.digest ELSE h.events_digest END
    FROM input i JOIN old ON old.id = i.host_id WHERE h.id = i.host_id
    RETURNING h.id
), ins AS (
    INSERT INTO host_events (host_id, date_start, time_start, date_end, time_end, command, packages)
    SELECT i.host_id, (e->>'date_start')::date, (e->>'time_start')::time, (e->>'date_end')::date,
           (e->>'time_end')::time, e->>'command', e->'packages'
    FROM input i JOIN old ON old.id = i.host_id, jsonb_array_elements(i.events::jsonb) AS e
    WHERE old.events_digest IS DISTINCT FROM i.digest AND i.events IS NOT NULL
    ON CONFLICT (host_id, date_start, time_start, command) DO NOTHING
    RETURNING host_id
)
SELECT i.host_id, upd.id IS NOT NULL AS authorized, (SELECT count(*) FROM ins WHERE ins.host_id = i.host_id) AS added,
       i.events IS NULL AND old.id IS NOT NULL AND old.events_digest IS DISTINCT FROM i.digest AS stale
FROM input i LEFT JOIN old ON old.id = i.host_id LEFT JOIN upd ON upd.id = i.host_id
"""


@dataclass(frozen=True)
class Events:
    host_id: int
    digest: bytes  # of the raw body: the same history sent again costs a comparison
    token_digest: bytes
    events: list[dict] | None  # reports.check_events(); None: believed unchanged (SeenDigests)


@dataclass(frozen=True)
class EventsStored:
    authorized: bool
    added: int  # events not stored before
    stale: bool = False  # sent without its events, but the host's last digest is another one


async def store_events(pool, items: list[Events]) -> dict[int, EventsStored]:
    items = sorted(items, key=lambda e: e.host_id)
    rows = await pool.fetch(_EVENTS_SQL, [e.host_id for e in items], [e.digest for e in items],
                            [e.token_digest for e in items],
                            [None if e.events is None else orjson.dumps(e.events).decode() for e in items])
    return {row["host_id"]: EventsStored(row["authorized"], row["added"], row["stale"]) for row in rows}


class GroupCommit:
    """Group commit of one kind of host write, for the report endpoints of one server process.

    accept(item) queues an item (with a host_id) and waits for the statement that writes it:
    `write(pool, items) -> {host_id: outcome}`. At most `max_inflight` statements run at once; the
    items that arrive meanwhile wait and go together in the next one (at most `max_group`, one per
    host). If a group's statement fails, its items are retried one by one, so one item cannot fail
    the others; each request then sees its own outcome.
    """

    def __init__(self, pool, write: Callable[[Any, list], Awaitable[dict]], max_group: int = 64,
                 max_inflight: int = 2):
        self.pool = pool
        self.write = write
        self.max_group = max_group
        self.max_inflight = max_inflight
        self._waiting: list[tuple[Any, asyncio.Future]] = []
        self._inflight = 0
        self._drains: set[asyncio.Task] = set()

    async def accept(self, item):
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._inflight < self.max_inflight:
            self._inflight += 1
            drain = asyncio.create_task(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, rest, hosts = [], [], set()
                for entry in self._waiting:
                    if len(group) < self.max_group and entry[0].host_id not in hosts:
                        group.append(entry)
                        hosts.add(entry[0].host_id)
                    else:
                        rest.append(entry)
                self._waiting = rest
                await self._write(group)
        finally:
            self._inflight -= 1

    async def _write(self, group: list[tuple[Any, asyncio.Future]]) -> None:
        try:
            outcome = await self.write(self.pool, [item for item, _ in group])
        except Exception as exc:
            if len(group) == 1 or not _item_may_be_at_fault(exc):
                for _, future in group:
                    _settle(future, exc=exc)
                return
            log.warning("a group of %d writes failed (%s); doing them one by one", len(group), type(exc).__name__)
            await asyncio.gather(*(self._write([entry]) for entry in group))
            return
        for item, future in group:
            found = outcome.get(item.host_id)
            _settle(future, found, None if found else RuntimeError(f"no outcome for host {item.host_id}"))


class SeenDigests:
    """The digest of each host's last accepted events history, in this process.

    A history whose digest is the one remembered here is byte for byte one this process checked and
    stored before, so it goes to the intake without being checked or sent again: PostgreSQL still
    compares the digest with the host's and, if another one was stored since, says `stale`; the
    request then takes the full path. At most `max_entries` (the oldest go first); 0 turns it off.
    (Installed and available reports need no such memory: see Intake.take_report.)
    """

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: dict[int, bytes] = {}

    def seen(self, host_id: int, digest: bytes) -> bool:
        return self._entries.get(host_id) == digest

    def remember(self, host_id: int, digest: bytes) -> None:
        if self.max_entries <= 0:
            return
        self._entries.pop(host_id, None)  # re-inserted last: the oldest entries stay first
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[host_id] = digest

    def forget(self, host_id: int) -> None:
        self._entries.pop(host_id, None)


@dataclass(frozen=True)
class Taken:
    """An installed or available report taken: its item count, and the host_diff task if it changed."""

    count: int
    changed: bool
    task_id: int | None


class Intake:
    """A server process's intake of host reports: its group commits (installed/available reports,
    events, and statuses: registry.update_status), its SeenDigests (of events histories), and the
    batcher that sends the tasks they create.

    take_report and take_events raise a domain error with the text the agent is shown: a bad report
    (reports.ReportError, 400), or credentials changed since the request was authenticated (401).
    """

    def __init__(self, pool, batcher: JobBatcher, credentials: HostCredentialCache, *, max_items: int,
                 max_group: int = 64, max_inflight: int = 2, seen_entries: int = 100_000,
                 known: KnownVersions | None = None):
        self.pool = pool
        self.batcher = batcher
        self.credentials = credentials
        self.max_items = max_items
        self.known = known or KnownVersions(0)
        self.reports = GroupCommit(pool, accept_reports, max_group, max_inflight)
        self.events = GroupCommit(pool, store_events, max_group, max_inflight)
        self.statuses = GroupCommit(pool, registry.write_statuses, max_group, max_inflight)
        self.seen = SeenDigests(seen_entries)

    async def take_report(self, who: Principal, kind: str, raw: bytes, read_json: ReadJson) -> Taken:
        """Take the host's installed or available report, `raw` being its body as received.

        The hot path: most reports of a fleet are the host's last one again, whichever server process
        took that one. So the digest goes to the intake first, alone (unless the request's credential
        lookup has just read another digest as the host's last): if PostgreSQL holds it as the host's
        last, the report is answered with the item count stored beside it, nothing checked or
        stored. Otherwise (`stale`) the agent's exact form is checked by one regex, and anything else
        is parsed (`read_json`, the API's reading of the body as a JSON object) and checked item by
        item; the report is stored with other requests' in one statement, and the host_diff task it
        creates goes out in a batch job.
        """
        digest = reports.body_digest(raw)
        # This request's credential lookup read the host's last digest (a host's first report, or one
        # whose credentials were not cached): another one means a changed report, whose digest alone
        # would only come back `stale`. PostgreSQL compares the digests again when it stores it.
        known = who.last_digests
        if known is None or known.get(kind) == digest:
            outcome = await self.reports.accept(Report(who.host_id, kind, digest, None, who.token_digest, None))
            if not outcome.authorized:
                raise self.credentials.stale(who.auth_id)
            if not outcome.stale:
                return Taken(outcome.items, False, None)
        stored, count = await self.check(kind, raw, read_json)
        batch = self.batcher.join()
        try:
            accepted = await self.reports.accept(Report(
                who.host_id, kind, digest, stored, who.token_digest, batch.job_id, count,
            ))
            if accepted.created:
                batch.add(accepted.task_id)
        finally:
            self.batcher.leave(batch)
        if not accepted.authorized:
            raise self.credentials.stale(who.auth_id)
        return Taken(count, accepted.changed, accepted.task_id)

    async def check(self, kind: str, raw: bytes, read_json: ReadJson) -> tuple[bytes, int]:
        """A changed report checked: its stored form (hosts/bodies.py) and item count, or a ReportError."""
        if kind == reports.INSTALLED and self.known.ids and (encoded := bodies.encode_ids(raw, self.known.ids)):
            reports.check_count(kind, encoded[1], self.max_items)
            return encoded
        count = reports.fast_count(kind, raw, self.max_items)  # (the agent's form: every item checked)
        body = raw
        splittable = bodies.is_splittable(kind, count)
        if splittable:  # in the agent's form, but the copy lacked too many of its items (or is empty)
            if await self.known.learn(self.pool, raw) and (encoded := bodies.encode_ids(raw, self.known.ids)):
                return encoded
            self.known.want()
        if count is None:
            value = reports.body_value(await read_json(), reports.BODY_KEYS[kind])
            count = reports.check_items(kind, value, self.max_items)
            body = reports.stored_body(kind, value, raw)
        return bodies.encode_body(body, splittable), count

    async def take_events(self, who: Principal, raw: bytes, read_json: ReadJson) -> int:
        """Take the host's apt/dnf history (the whole of it, `raw` as received); returns how many
        events were new. A body accepted last time (SeenDigests) is not checked again."""
        digest = reports.body_digest(raw)
        if self.seen.seen(who.host_id, digest) and await self._accepted_without_body(
            Events(who.host_id, digest, who.token_digest, None), who
        ):
            return 0
        events = reports.check_events(reports.body_value(await read_json(), "events"), self.max_items)
        stored = await self.events.accept(Events(who.host_id, digest, who.token_digest, events))
        if not stored.authorized:
            raise self.credentials.stale(who.auth_id)
        self.seen.remember(who.host_id, digest)
        return stored.added

    async def _accepted_without_body(self, item: Events, who: Principal) -> bool:
        """Hand the group commit a history without its events, this process having accepted the same
        body last. False if the host's last digest is another one: the full path must run."""
        outcome = await self.events.accept(item)
        if not outcome.authorized:
            raise self.credentials.stale(who.auth_id)
        if outcome.stale:
            self.seen.forget(who.host_id)
            return False
        return True


def _item_may_be_at_fault(exc: Exception) -> bool:
    """An error of the statement's data (a constraint, a deadlock), not of PostgreSQL being away,
    overloaded or shutting down (SQLSTATE classes 08, 53, 57): only then can writing the items one
    by one save the others. During an outage, each request gets the error at once (503)."""
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] not in ("08", "53", "57")


def _settle(future: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if future.done():  # the request was cancelled (client gone): its report is stored anyway
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
