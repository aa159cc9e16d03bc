"""A worker process lowers its own CPU priority (DEPOT_WORKER_NICE, 10 by default), so that where servers,
PostgreSQL and workers share cores the requests go first; a value outside 0-19 is refused at start."""
from __future__ import annotations

import asyncio
import os

import pytest

from tests.faults import procs

pytestmark = pytest.mark.slow


def _env(settings, **extra) -> dict:
    return procs.depot_env(database_url=settings.database_url, redis_url=settings.redis_url, var_dir=settings.var_dir,
                           storage_dir=settings.storage_dir, queue_name=settings.queue_name, extra=extra)


def _expected(added: int) -> int:
    return min(os.getpriority(os.PRIO_PROCESS, 0) + added, 19)


@pytest.mark.parametrize("extra, added", [({}, 10), ({"DEPOT_WORKER_NICE": "3"}, 3), ({"DEPOT_WORKER_NICE": "0"}, 0)])
async def test_a_worker_process_runs_at_its_niceness(settings, tmp_path, extra, added):
    worker = await asyncio.to_thread(procs.start_worker, _env(settings, **extra), tmp_path, "niced")
    try:
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == _expected(added)
    finally:
        worker.close()


async def test_a_niceness_outside_0_to_19_is_refused(settings, tmp_path):
    for value in ("20", "-1"):
        worker = procs.DepotProcess(["worker"], _env(settings, DEPOT_WORKER_NICE=value), tmp_path / f"w{value}.log")
        try:
            assert await asyncio.to_thread(worker.wait, 30) != 0
            assert "DEPOT_WORKER_NICE must be between 0 and 19" in worker.output()
        finally:
            worker.close()
