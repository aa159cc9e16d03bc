"""Fixtures of the operators' tests."""
from __future__ import annotations

import pytest

from app.repos import model


@pytest.fixture
async def snapshot_id(pool) -> int:
    """An active snapshot of a new repository (schedules refuse targets that do not exist)."""
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="ops", type="deb", dist="bookworm", section="main")
        return (await model.create_snapshot(conn, repo.id)).id
