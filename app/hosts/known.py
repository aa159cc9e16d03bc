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

# The dictionary's last id, and the entry that now has the copy's highest id.
_CHECK_SQL = """
SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS id,
       (SELECT ARRAY[name, arch, version] FROM package_versions WHERE id = $1) AS at_max
FROM package_versions_id_seq
"""
_NEW_SQL = "SELECT id, name, arch, version FROM package_versions WHERE id > $1 ORDER BY id LIMIT $2"


class KnownVersions:
    """Keys of dictionary entries -> ids, at most `limit` of them (the oldest go first)."""

    def __init__(self, limit: int, read_rows: int = 20_000):
        self.limit = limit
        self.read_rows = read_rows
        self.ids: Ids = Ids()
        self.max_id = 0
        self.max_key: bytes | None = None  # the key of max_id
        self._wanted = asyncio.Event()

    def want(self) -> None:
        """A report in the agent's form that the copy mostly lacked: read the dictionary again soon rather than
        at the next interval (a fleet's first reports come while the workers make the entries they share)."""
        self._wanted.set()

    async def refresh(self, pool) -> int:
        """Read the entries added since the last call; returns how many. A dictionary emptied meanwhile (its
        sequence below the ids read, or the highest id read now another entry's: a database reset or restored,
        then filled past it) empties the copy first."""
        if self.limit <= 0:
            return 0
        row = await pool.fetchrow(_CHECK_SQL, self.max_id)
        at_max = row["at_max"] and item_key(join_arch(row["at_max"][0], row["at_max"][1]), row["at_max"][2])
        if row["id"] < self.max_id or (self.max_key is not None and at_max != self.max_key):
            self.ids.clear()
            self.max_id, self.max_key = 0, None
        added = 0
        while True:
            rows = await pool.fetch(_NEW_SQL, self.max_id, self.read_rows)
            for r in rows:
                self.ids[item_key(join_arch(r["name"], r["arch"]), r["version"])] = r["id"]
            added += len(rows)
            if rows:
                last = rows[-1]
                self.max_id, self.max_key = last["id"], item_key(join_arch(last["name"], last["arch"]), last["version"])
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
