"""Fixtures for fault tests: a private PostgreSQL + Valkey for the session, `depot` subprocesses per test."""
from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from arq import create_pool

from app import db, users
from app.resources import redis_settings
from app.settings import Settings
from tests.cleanup import Emptier
from tests.faults import procs

FAULT_DB = "depot_faults"
HANDLERS = "tests.faults.handlers"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.faults)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def fault_root() -> Path:
    root = Settings.from_env().var_dir / "faults"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def private_pg(fault_root):
    pg = procs.PrivatePostgres(fault_root)
    try:
        pg.start()
        pg.create_database(FAULT_DB)
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="session")
def private_valkey(fault_root):
    valkey = procs.PrivateValkey(fault_root)
    try:
        valkey.start()
        yield valkey
    finally:
        valkey.destroy()


@pytest.fixture(scope="session")
def fault_settings(private_pg, private_valkey, tmp_path_factory) -> Settings:
    base = Settings.from_env()
    storage = tmp_path_factory.mktemp("fault-storage")
    s = replace(
        base,
        database_url=private_pg.url(FAULT_DB),
        redis_url=private_valkey.url,
        var_dir=storage.parent / "fault-var",
        storage_dir=storage,
        queue_name="depot:fault-queue",
        task_heartbeat_seconds=1,
        task_stale_seconds=3,
        reconcile_seconds=1,
        gpg_key_length=2048,
    )
    s.var_dir.mkdir(exist_ok=True)

    async def setup():
        await db.migrate(s.database_url)
        conn = await asyncpg.connect(s.database_url)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS fault_effects (task_id bigint PRIMARY KEY, target text NOT NULL,"
                " runs integer NOT NULL, at timestamptz NOT NULL DEFAULT now())"
            )
        finally:
            await conn.close()

    asyncio.run(setup())
    return s


@pytest.fixture
async def fpool(fault_settings, private_pg):
    """A pool on the fault database, emptied first (and PostgreSQL started if a test left it down)."""
    if not private_pg.running():
        private_pg.start()
    conn = await asyncpg.connect(fault_settings.database_url)
    try:
        await (await Emptier.load(conn)).empty(conn)
    finally:
        await conn.close()
    pool = await db.create_pool(fault_settings, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def fredis(fault_settings, private_valkey):
    if private_valkey.server is None:
        private_valkey.start()
    r = await create_pool(redis_settings(fault_settings), default_queue_name=fault_settings.queue_name)
    await r.flushall()
    yield r
    await r.aclose()


@pytest.fixture
async def fault_admin_key(fpool) -> str:
    await users.create_user(fpool, "admin", "admin")
    return await users.create_api_key(fpool, "admin")


class Processes:
    """Starts `depot serve` / `depot worker` against the fault services; stops them all at the end."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[procs.DepotProcess] = []

    def env(self, **extra) -> dict:
        s = self.settings
        return procs.depot_env(
            database_url=s.database_url, redis_url=s.redis_url, var_dir=s.var_dir, storage_dir=s.storage_dir,
            queue_name=s.queue_name, extra={"DEPOT_TEST_HANDLERS": HANDLERS, **extra},
        )

    def server(self, **extra) -> tuple[procs.DepotProcess, str]:
        proc, base = procs.start_server(self.env(**extra), self.log_dir)
        self.started.append(proc)
        return proc, base

    def worker(self, **extra) -> procs.DepotProcess:
        proc = procs.start_worker(self.env(**extra), self.log_dir)
        self.started.append(proc)
        return proc

    def close(self, dump: bool) -> None:
        for proc in self.started:
            proc.close(10)
            if dump:
                # Access and warning lines repeat by the hundred during an outage: show every ERROR with
                # the traceback after it, then the last lines.
                lines = proc.output().splitlines()
                keep: list[str] = []
                for i, line in enumerate(lines):
                    if " ERROR " in line and len(keep) < 400:
                        keep += lines[i : i + 40] + ["..."]
                text = "\n".join(keep[:400] + ["----- last lines -----"] + lines[-30:])
                print(f"----- {' '.join(proc.args)} (pid {proc.pid}) -----\n{text}", file=sys.stderr)


@pytest.fixture
def processes(fault_settings, tmp_path, request):
    ps = Processes(fault_settings, tmp_path)
    yield ps
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    ps.close(dump=failed)
