"""The batcher: the tasks a server creates in a window go as one job, held during a report storm."""
from __future__ import annotations

import pytest

import asyncio

from arq.jobs import Job

from app.tasks import batcher as batcher_module
from app.tasks.batcher import JobBatcher
from tests.helpers import wait_for


async def _storm(batcher: JobBatcher, seconds: float, first_id: int = 1) -> None:
    """Requests joining the batcher, each adding a task, for `seconds`: 10 per turn of the event loop,
    so the rate stays far above the tests' hold_rate (200/s) even when a loaded machine stretches a
    2 ms sleep to 20 ms."""
    loop = asyncio.get_running_loop()
    end, task_id = loop.time() + seconds, first_id
    while loop.time() < end:
        for _ in range(10):
            _report(batcher, task_id)
            task_id += 1
        await asyncio.sleep(0.002)


def _report(batcher: JobBatcher, task_id: int) -> None:
    """What a report request does with the batcher: join, add its task, leave."""
    batch = batcher.join()
    batch.add(task_id)
    batcher.leave(batch)


async def test_batches_are_held_during_a_report_storm_and_sent_when_it_passes(redis, settings):
    batcher = JobBatcher(redis, window=0.02, hold_seconds=5, hold_rate=200)
    await _storm(batcher, 0.2)  # the rate builds up: the first windows may go out before it is seen
    assert batcher.arrivals.rate(asyncio.get_running_loop().time()) > 200
    sent_early = await redis.zcard(settings.queue_name)
    await _storm(batcher, 0.3, first_id=10_000)  # ~15 more windows close, all held
    assert await redis.zcard(settings.queue_name) == sent_early
    # The storm is over: the rate decays below 200/s within a second, and every held batch goes,
    # one job per window, as without a storm.
    assert await wait_for(lambda: _more_than(redis, settings.queue_name, sent_early + 10), timeout=10)


async def _more_than(redis, queue_name: str, n: int) -> bool:
    return await redis.zcard(queue_name) > n


@pytest.mark.slow
async def test_a_batch_is_held_no_longer_than_hold_seconds(redis, settings):
    batcher = JobBatcher(redis, window=0.02, hold_seconds=1.0, hold_rate=200)
    await _storm(batcher, 0.2)
    sent_early = await redis.zcard(settings.queue_name)
    storm = asyncio.create_task(_storm(batcher, 3.0, first_id=100_000))
    await asyncio.sleep(0.3)  # every batch so far closed less than a second ago
    assert await redis.zcard(settings.queue_name) == sent_early  # held
    await asyncio.sleep(1.2)
    assert await redis.zcard(settings.queue_name) > sent_early  # sent while the storm goes on
    assert not storm.done()
    await storm
    await batcher.flush()


async def test_flush_sends_held_batches_at_once(redis, settings):
    batcher = JobBatcher(redis, window=0.02, hold_seconds=30, hold_rate=200)
    await _storm(batcher, 0.4)
    sent_early = await redis.zcard(settings.queue_name)
    await batcher.flush()
    assert await redis.zcard(settings.queue_name) > sent_early
    # Every task went in some job, exactly once.
    ids = []
    for job_id in await redis.zrange(settings.queue_name, 0, -1):
        info = await Job(job_id.decode(), redis).info()
        ids += info.args[0]
    assert sorted(ids) == list(range(1, len(ids) + 1)) and len(ids) > 100


async def test_no_hold_below_the_storm_rate(redis, settings):
    batcher = JobBatcher(redis, window=0.02, hold_seconds=5, hold_rate=200)
    for task_id in range(3):  # a few hosts reporting, as between storms
        _report(batcher, task_id)
    assert await wait_for(lambda: redis.zcard(settings.queue_name), timeout=0.5)


async def test_a_storm_that_stops_at_once_releases_its_batches_before_the_rate_has_decayed(redis, settings):
    batcher = JobBatcher(redis, window=0.02, hold_seconds=5, hold_rate=200)
    batch = batcher.join()
    batcher.leave(batch)
    start = asyncio.get_running_loop().time()
    for i in range(500):  # 1,000 reports a second for half a second, then none
        batcher.arrivals.add(start + i / 1000)
    batch.closed_at = last = start + 0.499
    assert batcher._holds(batch, last + 0.05)                        # a pause, within the storm
    quiet = last + batcher_module.STORM_QUIET / 200 + 0.01
    assert batcher.arrivals.rate(quiet) > 200                         # the average alone would still hold it
    assert not batcher._holds(batch, quiet)
    assert batcher._holds(batch, quiet - 0.02)
