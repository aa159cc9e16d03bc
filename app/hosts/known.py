"""A server process's copy of the package dictionary: item key -> id (KnownVersions).

With it, the intake stores an installed report in the agent's form as its items' dictionary ids
(bodies.encode_ids), so the worker neither decompresses nor parses it. The dictionary only grows
(its entries are immutable), so the copy follows it by id; an entry the copy lacks (not read yet,
or committed after a higher id was read) only costs its item being stored as its key, which the
worker looks up as it would in any report. A report the copy mostly lacks has its entries made here
(learn): a fleet's first reports come before any worker has made them.
"""
from __future__ import annotations

import asyncio
import itertools
import logging

from app.hosts import bodies, reports
from app.hosts.bodies import Ids
from app.hosts.inventory import dictionary_entries, dictionary_state, item_key, join_arch

log = logging.getLogger(__name__)

_NEW_SQL = "SELECT id, name, arch, version FROM package_versions WHERE id > $1 ORDER BY id LIMIT $2"


class KnownVersions:
    """Keys of dictionary entries -> ids, at most `limit` of them (the oldest go first)."""

    def __init__(self, limit: int, read_rows: int = 20_000):
        self.limit = limit
        self.read_rows = read_rows
        self.ids: Ids = Ids()
        self.max_id = 0  # the highest id the copy holds (read or made), and its (raw name, version)
        self.max_key: tuple[str, str] | None = None
        self._read_to = 0  # the id refresh() reads on from
        self._wanted = asyncio.Event()
        self._learning = False

    def want(self) -> None:
        """A report in the agent's form that the copy mostly lacked: read the dictionary again soon rather than
        at the next interval (a fleet's first reports come while the workers make the entries they share)."""
        self._wanted.set()

    async def learn(self, pool, raw: bytes) -> bool:
        """The entries of an installed report in the agent's form that the copy lacks, made (as the worker would
        make them when it applies the report) and added to the copy; False if none were.

        A fleet's first reports come before any worker has made the entries they share: each would be stored
        whole, then split and looked up by a worker. One report's entries made here let the next ones of its
        image be stored as ids. One report at a time per process (the others meanwhile are stored whole),
        and only items in the agent's exact form."""
        if self.limit <= 0 or self._learning:
            return False
        keys = bodies.agent_items(raw)
        if keys is None:
            return False
        missing = list(dict.fromkeys(k for k in keys if k not in self.ids))
        if not missing or not all(map(reports.is_agent_item, missing)):
            return False
        self._learning = True
        try:
            async with pool.acquire() as conn:
                rows = await dictionary_entries(conn, missing)
        except Exception as exc:  # noqa: BLE001 - the copy only saves work: the report is stored whole
            log.warning("making dictionary entries failed: %s", exc)
            return False
        finally:
            self._learning = False
        self._add(rows)
        self._trim()
        return bool(rows)

    def _add(self, rows) -> None:
        for r in rows:
            raw = join_arch(r["name"], r["arch"])
            self.ids.put(item_key(raw, r["version"]), r["id"])
            if r["id"] > self.max_id:
                self.max_id, self.max_key = r["id"], (raw, r["version"])

    def _trim(self) -> None:
        if len(self.ids) > self.limit:
            for old in list(itertools.islice(iter(self.ids), len(self.ids) - self.limit * 3 // 4)):
                del self.ids[old]

    async def refresh(self, pool) -> int:
        """Read the entries added since the last call; returns how many. A dictionary emptied meanwhile (its
        sequence below the ids read, or the highest id read now another entry's: a database reset or restored,
        then filled past it) empties the copy first."""
        if self.limit <= 0:
            return 0
        max_id, max_key = self.max_id, self.max_key  # (learn() may add entries meanwhile)
        _, last_id, at_max = await dictionary_state(pool, max_id)
        if last_id < max_id or (max_key is not None and at_max != max_key):
            self.ids.clear()
            self.max_id, self.max_key, self._read_to = 0, None, 0
        added = 0
        while True:
            rows = await pool.fetch(_NEW_SQL, self._read_to, self.read_rows)
            self._add(rows)
            added += len(rows)
            if rows:
                self._read_to = rows[-1]["id"]
            self._trim()
            if len(rows) < self.read_rows:
                return added

    async def follow(self, pool, seconds: float, soon: float = 0.1) -> None:
        """Refresh every `seconds` until cancelled, and `soon` after want() (at most that often); PostgreSQL
        being away only delays it."""
        while True:
            self._wanted.clear()
            try:
                await self.refresh(pool)
            except Exception as exc:  # noqa: BLE001 - the copy only saves work: never stop following
                log.warning("reading the package dictionary failed: %s", exc)
            try:
                await asyncio.wait_for(self._wanted.wait(), seconds)
            except asyncio.TimeoutError:
                continue
            await asyncio.sleep(min(soon, seconds))
