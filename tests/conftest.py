"""Real PostgreSQL, real Redis, real arq workers.

With DEPOT_DATABASE_URL / DEPOT_REDIS_URL unset, the embedded servers under var/ are used (as
`make run` does); either way the suite runs in its own database (`depot_test`) and Redis db 1.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from arq import create_pool

from app import db, embedded, resources, users
from app.repos import model
from app.main import create_app
from app.resources import redis_settings
from app.settings import Settings
from tests.cleanup import Emptier
from workers.settings import Worker, worker_settings

# The Chromium harness of the dashboard's browser tests (fixtures browser, site, page, new_page).
pytest_plugins = ["tests.browser_harness"]

warnings.filterwarnings("ignore", module="platformdirs")

# Under pytest-xdist (`make test`, `make test-fast`), each worker process gets a database and a Redis db of its own.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_DB = os.environ.get("DEPOT_TEST_DATABASE", "depot_test") + (f"_{_WORKER}" if _WORKER else "")
TEST_REDIS_DB = 9 + _WORKER if _WORKER else 1  # (the benchmarks use 2 and 3, `make run` 0; so 7 processes at most)
if TEST_REDIS_DB > 15:
    raise RuntimeError(f"test process gw{_WORKER}: at most 7 test processes (-n 7), each with a Redis db of its own")


def _test_settings(tmp: Path) -> Settings:
    base = Settings.from_env()
    return replace(
        base,
        database_url=embedded.own_database(base, TEST_DB),
        redis_url=embedded.own_redis_db(base, TEST_REDIS_DB),
        storage_dir=tmp / "storage",
        base_url="http://depot.test:8080",
        server_name="depot.test",
        queue_name="depot:test-queue",
        task_heartbeat_seconds=1,
        task_stale_seconds=3,
        reconcile_seconds=1,
        gpg_key_length=2048,
        # Tests send many wrong credentials on purpose; tests/hostile/ checks the throttle with its own limit.
        auth_fail_limit=100_000,
        # The mirror tests' upstreams listen on 127.0.0.1 (tests/upstream.py); anything else private stays refused.
        mirror_allow_hosts=("127.0.0.1",),
    )


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    s = _test_settings(tmp_path_factory.mktemp("depot"))
    s.storage_dir.mkdir(parents=True, exist_ok=True)

    asyncio.run(db.migrate_empty(s.database_url))
    return s


@pytest.fixture(scope="session", autouse=True)
def _no_gpg_agent_left(tmp_path_factory):
    """gpg starts an agent for each home it uses (Depot's signing homes, dnf's key rings under the test
    roots), which outlives the test run: stopped at its end."""
    yield
    for ring in tmp_path_factory.getbasetemp().rglob("pubring.kbx"):
        subprocess.run(["gpgconf", "--homedir", str(ring.parent), "--kill", "gpg-agent"], capture_output=True)


@pytest.fixture(scope="session")
async def pool(settings):
    p = await db.create_pool(settings, min_size=1, max_size=5)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def redis(settings):
    r = await create_pool(redis_settings(settings), default_queue_name=settings.queue_name)
    yield r
    await r.aclose()


@pytest.fixture(scope="session")
async def _emptier_conn(settings):
    conn = await asyncpg.connect(settings.database_url)
    yield await Emptier.load(conn), conn
    await conn.close()


@pytest.fixture(autouse=True)
async def clean_state(request, _emptier_conn, redis):
    """Every test starts with empty tables (migrations kept, ids from 1) and an empty Redis db."""
    if "no_clean" in request.keywords:
        yield
        return
    emptier, conn = _emptier_conn
    await emptier.empty(conn)
    await redis.flushdb()
    yield


@pytest.fixture(scope="session")
def upstream_key():
    """A throwaway OpenPGP key an upstream signs with (tests/upstream.py)."""
    from tests.upstream import GpgKey

    key = GpgKey("upstream")
    yield key
    key.close()


@pytest.fixture(scope="session")
def other_key():
    """A second throwaway key: another source's, or an attacker's."""
    from tests.upstream import GpgKey

    key = GpgKey("other")
    yield key
    key.close()


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def make_key(pool):
    """make_key(role) -> an API key for a new user with that role."""
    counter = {"n": 0}

    async def make(role: str = "admin", name: str | None = None) -> str:
        counter["n"] += 1
        name = name or f"{role}{counter['n']}"
        await users.create_user(pool, name, role)
        return await users.create_api_key(pool, name)

    return make


@pytest.fixture
async def admin_key(make_key) -> str:
    return await make_key("admin", "admin")


@pytest.fixture
def run_worker(settings, request):
    """await run_worker() runs a real arq worker until the queue is empty (burst mode)."""

    async def run(**overrides) -> Worker:
        if "client" in request.fixturenames:
            # Report endpoints send their tasks in batches (app/tasks/batcher.py): send the open one
            # now, or a burst worker could find an empty queue and stop.
            batcher = request.getfixturevalue("client").app.get(resources.BATCHER)
            if batcher is not None:
                await batcher.flush()
        kwargs = worker_settings(settings)
        # No cron in burst mode: the next cron run would keep the queue from ever being empty.
        kwargs.update(burst=True, handle_signals=False, poll_delay=0.05, cron_jobs=None, **overrides)
        worker = Worker(**kwargs)
        try:
            await worker.main()
        finally:
            await worker.close()
        return worker

    return run


@pytest.fixture
async def live_worker(settings):
    """A real arq worker running in the background for the whole test."""
    kwargs = worker_settings(settings)
    kwargs.update(handle_signals=False, poll_delay=0.05)
    worker = Worker(**kwargs)
    task = asyncio.create_task(worker.main())
    yield worker
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    await worker.close()  # also when a job still runs (workers.settings.Worker)


@pytest.fixture
async def snapshot_id(pool) -> int:
    """An active snapshot of a new repository (schedules refuse targets that do not exist)."""
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="ops", type="deb", dist="bookworm", section="main")
        return (await model.create_snapshot(conn, repo.id)).id


@pytest.fixture
async def repo_db(pool):
    """The repository tables with their default environments (test set-up truncates tables)."""
    await pool.execute("INSERT INTO environments (name) VALUES ('preprod'), ('prod') ON CONFLICT DO NOTHING")
    return pool
