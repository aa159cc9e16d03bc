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
