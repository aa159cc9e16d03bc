"""Task kinds for the worker-metrics test, loaded into `depot worker` subprocesses with
DEPOT_TEST_HANDLERS=tests.operators.worker_handlers."""
from __future__ import annotations

import asyncio

from workers import runner


@runner.handler("op_wait")
async def op_wait(ctx: runner.TaskContext) -> dict:
    """Runs until stopped (or `seconds` pass), checking for a stop every 50 ms."""
    for _ in range(int(float(ctx.params.get("seconds", 30)) / 0.05)):
        await ctx.check_stop()
        await asyncio.sleep(0.05)
    return {}


@runner.handler("op_fail")
async def op_fail(ctx: runner.TaskContext) -> dict:
    raise ValueError("failed on purpose")
