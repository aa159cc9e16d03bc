"""gc_paused: the collector stays off while any paused work runs, and comes back after the last, even one that fails."""
from __future__ import annotations

import asyncio
import gc

import pytest

from app.gc_pause import gc_paused


async def test_overlapping_work_keeps_the_collector_off_until_the_last_ends():
    assert gc.isenabled()
    first_in, second_done = asyncio.Event(), asyncio.Event()
    seen = []

    async def first():
        with gc_paused():
            first_in.set()
            await second_done.wait()
            seen.append(("first, after the second ended", gc.isenabled()))

    async def second():
        await first_in.wait()
        with gc_paused():
            seen.append(("second", gc.isenabled()))
        second_done.set()

    await asyncio.gather(first(), second())
    assert seen == [("second", False), ("first, after the second ended", False)]
    assert gc.isenabled()


def test_work_that_fails_gives_the_collector_back():
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
