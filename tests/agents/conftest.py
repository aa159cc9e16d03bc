"""Fixtures of the agent channel tests: registered hosts and a server whose settings a test may change."""
from __future__ import annotations

from dataclasses import replace

import pytest

from app.agents.hub import HUB
from app.hosts import registry
from app.main import create_app


@pytest.fixture
def make_host(pool):
    """make_host(name) -> (auth id, token, host id) of a newly registered host."""

    async def make(hostname: str = "web1"):
        r = await registry.register(pool, hostname, "192.0.2.10", may_reregister=False)
        return r.auth_id, r.token, r.host_id

    return make


@pytest.fixture
async def host(make_host):
    return await make_host("web1")


@pytest.fixture
def server(aiohttp_client, settings):
    """server(**settings overrides) -> a test client of a Depot app, its hub listening."""

    async def make(**overrides):
        client = await aiohttp_client(create_app(replace(settings, **overrides)))
        await client.app[HUB].listening()
        return client

    return make
