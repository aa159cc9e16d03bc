"""A batch's turn to write: how a worker process overlaps one batch's reading with another's writing.

A batch handler (workers/runner.py run_tasks) spends its time in two halves: reading and planning in
Python, then writing in PostgreSQL. Run one after the other, the worker waits while PostgreSQL writes
and PostgreSQL waits while the worker plans. So the runner starts the next batch as soon as the
running one says it is done reading (`async with turn.writing():`), and the writes take turns: one at
a time per process, in the order the batches started (an asyncio.Lock is first come, first served), so
two batches of a process never wait on each other's row locks. The targets of a running batch cannot
be claimed by the next (one running task per target), so its reads never see a half-applied target.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator


class Turn:
    """One batch's: `planned` is set once it starts writing; `writes` is shared by the process's batches."""

    def __init__(self, writes: asyncio.Lock):
        self.planned = asyncio.Event()
        self._writes = writes

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        self.planned.set()
        async with self._writes:
            yield


@contextlib.asynccontextmanager
async def writing(turn: Turn | None) -> AsyncIterator[None]:
    """`turn.writing()`, or nothing for a handler run outside a batch job (a single task, a test)."""
    if turn is None:
        yield
        return
    async with turn.writing():
        yield
