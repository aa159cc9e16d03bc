"""Helpers the tests import (fixtures live in conftest.py)."""
from __future__ import annotations

import asyncio


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def host_auth(auth_id: str, token: str) -> dict:
    return {"Authorization": f"Host {auth_id}:{token}"}


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def inventory(pool, host_id: int) -> list:
    """A host's installed packages as the API derives them (name, arch, version, state, since), by name."""
    from app.hosts.queries import INVENTORY_SQL

    return await pool.fetch(f"SELECT name, arch, version, state, since FROM ({INVENTORY_SQL}) p ORDER BY name, arch",
                            host_id)


async def package_count(pool) -> int:
    """Installed packages, all hosts together; and the inverted index checked against the sets."""
    await check_postings(pool)
    return await pool.fetchval("SELECT coalesce(sum(cardinality(ids)), 0) FROM host_sets")


async def check_postings(pool) -> None:
    """package_hosts is exactly the inverse of host_sets (every set sorted; empty rows aside), and entry 0's
    rows hold every host that has a set."""
    wrong = await pool.fetchval("""
        WITH inv AS (SELECT i AS version_id, posting_bucket(s.host_id) AS bucket,
                            sort(array_agg(s.host_id::int4)) AS hosts
                     FROM host_sets s, unnest(s.ids) i GROUP BY 1, 2
                     UNION ALL
                     SELECT 0, posting_bucket(s.host_id), sort(array_agg(s.host_id::int4)) FROM host_sets s GROUP BY 2)
        SELECT count(*) FROM inv FULL JOIN (
            SELECT version_id, bucket, posting_ids(bucket, hosts) AS hosts FROM package_hosts WHERE bit_count(hosts) > 0
        ) p USING (version_id, bucket)
        WHERE inv.hosts IS DISTINCT FROM p.hosts""")
    assert wrong == 0, f"{wrong} posting lists disagree with host_sets"
    unsorted = await pool.fetchval("SELECT count(*) FROM host_sets WHERE ids <> sort(ids)")
    assert unsorted == 0
