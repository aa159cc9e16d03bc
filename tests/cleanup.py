"""Empty a database between tests: every row gone, every id sequence back at its start.

The state TRUNCATE ... RESTART IDENTITY leaves, reached more cheaply: TRUNCATE makes new files for every
table it names, while a test writes to a few tables only. So one query finds the tables that hold rows and
the sequences that were drawn from, and a second DELETEs from those tables (referencing tables first, so no
foreign key refuses) and sets those sequences back to their start.
"""
from __future__ import annotations

from graphlib import TopologicalSorter

import asyncpg

# Far longer than any test's own statement holds a lock: a wait this long means a session that an
# earlier test left behind (an open transaction, a lock never released), named by LeftBehind.
LOCK_WAIT_SECONDS = 60

_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
_REFERENCES = """
SELECT child.relname AS child, parent.relname AS parent
FROM pg_constraint k
JOIN pg_class child ON child.oid = k.conrelid
JOIN pg_class parent ON parent.oid = k.confrelid
WHERE k.contype = 'f' AND k.connamespace = 'public'::regnamespace AND k.conrelid <> k.confrelid
"""
# pg_sequences shows last_value NULL for a sequence that nothing has drawn from since its (re)start.
_USED_SEQUENCES = """
ARRAY(SELECT format('SELECT setval(%L, %s, false)', format('%I.%I', schemaname, sequencename), start_value)
      FROM pg_sequences WHERE schemaname = 'public' AND last_value IS NOT NULL)
"""


class Emptier:
    """Knows a database's tables in a safe order for DELETE; empty(conn) resets them."""

    def __init__(self, tables: list[str]):
        self.tables = tables
        checks = ", ".join(f"CASE WHEN EXISTS (SELECT FROM \"{t}\") THEN '{t}' END" for t in tables)
        self._probe = f"SELECT ARRAY[{checks}]::text[] AS filled, {_USED_SEQUENCES} AS resets"

    @classmethod
    async def load(cls, conn) -> Emptier:
        """(Also sets the lock wait of conn, the connection empty() is then given.)"""
        await conn.execute(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
        order = TopologicalSorter({r["tablename"]: () for r in await conn.fetch(_TABLES)})
        for ref in await conn.fetch(_REFERENCES):
            order.add(ref["parent"], ref["child"])
        return cls(list(order.static_order()))

    async def empty(self, conn) -> None:
        try:
            filled, resets = await conn.fetchrow(self._probe)
            statements = [f'DELETE FROM "{t}"' for t in self.tables if t in filled] + resets
            if statements:
                # One simple-protocol message: one round trip, one transaction.
                await conn.execute("; ".join(statements))
        except asyncpg.LockNotAvailableError:
            raise LeftBehind(await _blockers(conn)) from None


class LeftBehind(AssertionError):
    """The database could not be emptied: sessions left by an earlier test hold locks on its tables."""

    def __init__(self, blockers: list[dict]):
        lines = "\n".join(f"  {b}" for b in blockers) or "  (none found any more)"
        super().__init__(f"emptying the test database waited {LOCK_WAIT_SECONDS} s for locks held by:\n{lines}")


async def _blockers(conn) -> list[dict]:
    rows = await conn.fetch(
        """
        SELECT a.pid, a.application_name, a.state, a.backend_type, a.wait_event_type, a.wait_event,
               now() - a.xact_start AS in_transaction_for, left(a.query, 300) AS query,
               ARRAY(SELECT l.mode || ' on ' || coalesce(l.relation::regclass::text, l.locktype)
                     FROM pg_locks l WHERE l.pid = a.pid AND l.granted) AS holds
        FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(pg_backend_pid()))
           OR (a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL)
        """
    )
    return [dict(r) for r in rows]
