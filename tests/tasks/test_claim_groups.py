"""A batch kind's backlog is claimed by groups of consecutive target numbers (rows.claim_queued's `group`)."""
from __future__ import annotations

from app.tasks import rows
from workers import runner


async def _queue(pool, kind: str, numbers) -> None:
    async with pool.acquire() as conn:
        for n in numbers:
            await rows.create(conn, kind, f"host:{n}", None, None)


async def _claim(pool, kind: str, limit: int, group: int) -> list[int]:
    return sorted(int(r["target"].split(":")[1]) for r in await rows.claim_queued(pool, kind, "w1", limit, group))


async def test_a_full_claim_leaves_the_group_it_reaches_into(pool):
    kind = "test_grouped"
    await _queue(pool, kind, [*range(5, 10), *range(10, 13), 25])     # groups of 10: 0 (5..9), 1 (10..12), 2 (25)
    assert await _claim(pool, kind, 7, 10) == [5, 6, 7, 8, 9]         # 5..9 and 10, 11: group 1 left whole
    assert await _claim(pool, kind, 2, 10) == [10, 11]                # a full claim within one group keeps it all
    assert await _claim(pool, kind, 7, 10) == [12, 25]                # not full: everything, whatever the groups
    assert await _claim(pool, kind, 7, 10) == []


async def test_without_a_group_a_claim_takes_its_limit(pool):
    kind = "test_ungrouped"
    await _queue(pool, kind, range(5, 13))
    assert await _claim(pool, kind, 7, 0) == list(range(5, 12))
    assert await _claim(pool, kind, 7, 0) == [12]


def test_host_diffs_are_claimed_by_posting_range():
    from app.hosts import inventory
    import workers.host_jobs  # noqa: F401  (registers the fleet's kinds)

    assert runner.BATCH_GROUPS["host_diff"] == inventory.POSTING_BUCKET
