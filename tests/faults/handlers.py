"""Task kinds for fault tests, loaded into worker subprocesses with DEPOT_TEST_HANDLERS=tests.faults.handlers.

`fault_slow` sleeps `steps` × `step_seconds` (reporting progress) and then records its effect in
`fault_effects` (a table the fault tests create), counting how many times each task's work completed.
"""
from __future__ import annotations

import asyncio

from workers import runner


@runner.handler("fault_slow")
async def fault_slow(ctx: runner.TaskContext) -> dict:
    steps = int(ctx.params.get("steps", 10))
    for step in range(steps):
        await asyncio.sleep(float(ctx.params.get("step_seconds", 0.1)))
        await ctx.progress(100 * (step + 1) // steps, f"step {step + 1}/{steps}")
    await ctx.pool.execute(
        "INSERT INTO fault_effects (task_id, target, runs) VALUES ($1, $2, 1)"
        " ON CONFLICT (task_id) DO UPDATE SET runs = fault_effects.runs + 1",
        ctx.id,
        ctx.task["target"],
    )
    return {"steps": steps}
