"""Operator actions on tasks, shared by the dashboard and the tasks API (no HTTP here).

Stop is cooperative: a running task gets `stop_requested` and its handler stops at the next
ctx.check_stop() (between steps, so nothing is left half-written); a queued task is marked
`stopped` at once and the worker's claim (`WHERE status = 'queued'`) skips it.
"""
from __future__ import annotations


class TaskNotFound(Exception):
    pass


class TaskNotStoppable(Exception):
    def __init__(self, task_id: int, status: str):
        super().__init__(f"Task #{task_id} is not running")
        self.status = status


async def stop_task(pool, task_id: int) -> str:
    """Stop a task. Returns 'stop_requested' (running) or 'stopped' (was queued).

    Raises TaskNotFound, or TaskNotStoppable when it is already finished, scheduled or disabled.
    """
    async with pool.acquire() as conn:
        async with conn.transaction():
            status = await conn.fetchval("SELECT status FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            if status is None:
                raise TaskNotFound(f"Task #{task_id} does not exist.")
            if status == "queued":
                await conn.execute(
                    "UPDATE tasks SET status = 'stopped', stop_requested = true, finished_at = now() WHERE id = $1",
                    task_id,
                )
                return "stopped"
            if status == "running":
                await conn.execute("UPDATE tasks SET stop_requested = true WHERE id = $1", task_id)
                return "stop_requested"
            raise TaskNotStoppable(task_id, status)
