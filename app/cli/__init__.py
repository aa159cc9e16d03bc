"""The `depot` command: one module per command group, each adding its commands with register(sub).

server.py (migrate, serve, worker, run), accounts.py (user, apikey), profiles.py (profile), tasks.py (tasks,
queues), hosts.py (hosts), agents.py (request, requests), repos.py (repo, snapshot, env, pool, upload),
sources.py (source); common.py holds what they share and
client.py the HTTP client of the API. The parser and main() are here, so `depot = "app.cli:main"` and
`python -m app.cli` find them.

Every `depot` start imports every command module to build the parser, so the modules import the database
driver, aiohttp, the server, the worker and the domain modules inside the commands that use them: the
commands that only talk to the HTTP API start without loading any of them.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from app.cli import accounts, agents, hosts, profiles, repos, server, sources, tasks

warnings.filterwarnings("ignore", module="platformdirs")

GROUPS = (server, accounts, profiles, tasks, hosts, agents, repos, sources)  # in the order `depot --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depot", description="Depot package repository and fleet inventory server")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except BrokenPipeError:
        # `depot tasks | head`: the reader went away; no traceback, and none again when Python flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
