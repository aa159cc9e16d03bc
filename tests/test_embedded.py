"""The embedded Valkey is shared by the processes that use it and stops with the last of them."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from app import embedded

# A process using the embedded Valkey of the var dir in argv[1]: prints its URL, then PINGs the server
# for each line it reads, and exits (normally) at the end of its input.
USER = """
import socket, sys
from pathlib import Path
from app import embedded
url = embedded.redis_url(Path(sys.argv[1]))
print(url, flush=True)
port = int(url.rsplit(":", 1)[1].split("/")[0])
for _ in sys.stdin:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\\r\\n")
        print(sock.recv(16).decode().strip(), flush=True)
"""


class User:
    def __init__(self, var_dir):
        self.proc = subprocess.Popen([sys.executable, "-c", USER, str(var_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("redis://127.0.0.1:"), self.url

    def ping(self) -> str:
        self.proc.stdin.write("ping\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def exit(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


@pytest.fixture
def var_dir(tmp_path):
    started: list[User] = []
    yield tmp_path, started
    for user in started:
        user.proc.kill()
        user.proc.wait()
    with contextlib.suppress(OSError, ValueError, KeyError):  # a server a failed test left running
        os.kill(json.loads((tmp_path / "valkey" / "state.json").read_text())["pid"], signal.SIGTERM)


def start(var_dir) -> User:
    path, started = var_dir
    started.append(User(path))
    return started[-1]


def server_pid(var_dir) -> int:
    return json.loads((var_dir[0] / "valkey" / "state.json").read_text())["pid"]


def test_the_server_outlives_the_process_that_started_it_and_stops_with_the_last_user(var_dir):
    a = start(var_dir)
    b = start(var_dir)
    assert b.url == a.url
    pid = server_pid(var_dir)

    a.exit()
    assert b.ping() == "+PONG"
    assert server_pid(var_dir) == pid

    b.exit()
    assert not embedded._alive(pid)
    assert not (var_dir[0] / "valkey" / "state.json").exists()


def test_a_user_that_was_killed_does_not_keep_the_server_up(var_dir):
    a = start(var_dir)
    b = start(var_dir)
    pid = server_pid(var_dir)
    b.proc.kill()
    b.proc.wait()

    a.exit()
    assert not embedded._alive(pid)


def test_a_server_that_went_away_is_started_again(var_dir):
    a = start(var_dir)
    killed = server_pid(var_dir)
    os.kill(killed, signal.SIGKILL)
    b = start(var_dir)
    restarted = server_pid(var_dir)
    assert restarted != killed
    assert b.ping() == "+PONG"
    b.exit()
    a.exit()
    assert not embedded._alive(restarted)
