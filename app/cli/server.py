"""`depot migrate|serve|worker|run`: the service itself, on the database `make run` uses (the embedded server
under var/ unless DEPOT_DATABASE_URL is set). serve and worker run on uvloop; run supervises them
(app/cli/supervisor.py)."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

from app.cli.common import fail, load_settings, migrate, with_pool
from app.cli.supervisor import Part, Supervisor, restart_counter
from app.settings import Settings


def cmd_migrate(args) -> None:
    applied = migrate(load_settings())
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def _prepare(settings: Settings) -> None:
    """Migrate, and on the very first start create `admin` and print its key once."""
    from app import users

    migrate(settings)
    key = asyncio.run(with_pool(settings, users.ensure_admin))
    if key:
        print("Created user 'admin' (role admin). Its API key, shown only this once:", flush=True)
        print(key, flush=True)


def _use_uvloop() -> None:
    # uvloop's event loop (libuv) costs the server and the worker less CPU per request and per
    # query than asyncio's own; both are otherwise unchanged.
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_serve(args) -> None:
    from aiohttp import web

    from app.logs import setup_logging
    from app.main import create_app

    settings = load_settings(need_redis=True)
    setup_logging(settings)
    _prepare(settings)
    _use_uvloop()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=30,
        access_log=None,
        # `depot run --servers N`: N processes share the port; the kernel spreads the connections.
        reuse_port=args.reuse_port or None,
        print=lambda msg: print(f"depot: serving on {settings.base_url} ({settings.host}:{settings.port})", flush=True),
    )


def cmd_worker(args) -> None:
    from app.logs import setup_logging
    from workers.settings import Worker, worker_settings

    settings = load_settings(need_redis=True)
    setup_logging(settings)
    if not 0 <= settings.worker_nice <= 19:
        fail("DEPOT_WORKER_NICE must be between 0 and 19")
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    migrate(settings)
    _use_uvloop()
    Worker(**worker_settings(settings), burst=args.burst).run()


def default_processes() -> int:
    # One server process and one worker process per core (Python runs one core per process), at most 4 of
    # each by default: the servers are busy while reports come, the workers once they have come.
    return max(1, min(os.cpu_count() or 1, 4))


def servers_env(metrics_dir: Path) -> dict:
    """What several server processes need to answer /metrics as one (app/metrics.py): prometheus-client's
    multiprocess files in metrics_dir (emptied: counters start at zero) and one start for the task counts."""
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DEPOT_METRICS_SINCE": str(time.time() - 3600)}


def cmd_run(args) -> None:
    """Everything in the foreground: embedded services (unless configured), servers and workers, each
    restarted if it dies (app/cli/supervisor.py)."""
    if args.servers < 1 or args.workers < 0:
        fail("--servers must be at least 1 and --workers at least 0")
    settings = load_settings(need_redis=True)
    if settings.run_start_failures < 1 or settings.run_start_window < 0:
        fail("DEPOT_RUN_START_FAILURES must be at least 1 and DEPOT_RUN_START_WINDOW at least 0")
    _prepare(settings)
    env = dict(os.environ, DEPOT_DATABASE_URL=settings.database_url, DEPOT_REDIS_URL=settings.redis_url)
    depot = [sys.executable, "-m", "app.cli"]
    # The servers answer /metrics as one (and with the restarts counted here) even when there is one.
    metrics = servers_env(settings.var_dir / "run" / "metrics")
    serve = depot + ["serve"] + (["--reuse-port"] if args.servers > 1 else [])
    parts = [Part("server", i + 1, serve, dict(env, **metrics)) for i in range(args.servers)]
    for i in range(args.workers):
        # One private metrics port per worker process: DEPOT_WORKER_METRICS_PORT, +1, +2, …
        port = {"DEPOT_WORKER_METRICS_PORT": str(settings.worker_metrics_port + i)} if settings.worker_metrics_port else {}
        parts.append(Part("worker", i + 1, depot + ["worker"], dict(env, **port)))
    supervisor = Supervisor(parts, start_window=settings.run_start_window, start_failures=settings.run_start_failures,
                            restarts=restart_counter(metrics["PROMETHEUS_MULTIPROC_DIR"]))
    sys.exit(supervisor.run())


def register(sub) -> None:
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    p = sub.add_parser("serve", help="run the HTTP server")
    p.add_argument("--reuse-port", action="store_true",
                   help="share the port with other `depot serve` processes (SO_REUSEPORT; `depot run --servers`)")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("worker", help="run an arq worker")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(fn=cmd_worker)
    p = sub.add_parser("run", help="run servers and worker(s) in the foreground (what `make run` does)")
    p.add_argument("--servers", type=int, default=default_processes(),
                   help="server processes sharing the port (default: one per core, at most 4)")
    p.add_argument("--workers", type=int, default=default_processes(),
                   help="worker processes (default: one per core, at most 4)")
    p.set_defaults(fn=cmd_run)
