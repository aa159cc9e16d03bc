"""A server process's copy of the package dictionary: item key -> id (KnownVersions).

With it, the intake stores an installed report in the agent's form as its items' dictionary ids
(bodies.encode_ids), so the worker neither decompresses nor parses it. The dictionary only grows
(its entries are immutable), so the copy follows it by id; an entry the copy lacks (not read yet,
or committed after a higher id was read) only costs its item being stored as its key, which the
worker looks up as it would in any report.
"""
from __future__ import annotations

import asyncio
import itertools
import logging

from app.hosts.bodies import Ids
from app.hosts.inventory import item_key, join_arch

log = logging.getLogger(__name__)

_LAST_ID_SQL = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM package_versions_id_seq"
_NEW_SQL = "SELECT id, name, arch, version FROM package_versions WHERE id > $1 ORDER BY id LIMIT $2"


class KnownVersions:
    """Keys of dictionary entries -> ids, at most `limit` of them (the oldest go first)."""

    def __init__(self, limit: int, read_rows: int = 20_000):
        self.limit = limit
        self.read_rows = read_rows
        self.ids: Ids = Ids()
        self.max_id = 0
        self._wanted = asyncio.Event()

    def want(self) -> None:
        """A report in the agent's form that the copy mostly lacked: read the dictionary again soon rather than
        at the next interval (a fleet's first reports come while the workers make the entries they share)."""
        self._wanted.set()

    async def refresh(self, pool) -> int:
        """Read the entries added since the last call; returns how many. A dictionary emptied meanwhile (its
        sequence below the ids read: a test database reset) empties the copy first."""
        if self.limit <= 0:
            return 0
        if await pool.fetchval(_LAST_ID_SQL) < self.max_id:
            self.ids.clear()
            self.max_id = 0
        added = 0
        while True:
            rows = await pool.fetch(_NEW_SQL, self.max_id, self.read_rows)
            for r in rows:
                self.ids[item_key(join_arch(r["name"], r["arch"]), r["version"])] = r["id"]
            added += len(rows)
            if rows:
                self.max_id = rows[-1]["id"]
            if len(self.ids) > self.limit:
                for old in list(itertools.islice(iter(self.ids), len(self.ids) - self.limit * 3 // 4)):
                    del self.ids[old]
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
