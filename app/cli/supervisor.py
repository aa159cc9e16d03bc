"""What `depot run` does with its parts (server and worker processes): starts them, restarts one that
dies with a growing delay, and stops them all on Ctrl-C / SIGTERM, or when a part keeps failing to
start: `run_start_failures` starts in a row that each ended within `run_start_window` seconds.

A part killed by the OOM killer (or anyone) comes back on its own; the other parts keep serving
meanwhile. Each restart is said on the output and counted in /metrics (`depot_run_restarts_total`
by part, through the servers' prometheus multiprocess folder).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

# The delay before restarting a part: FIRST_DELAY after a part that had started well, doubled for each
# failed start in a row, at most MAX_DELAY.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
POLL_SECONDS = 0.2
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)


@dataclass
class Part:
    kind: str                   # "server" or "worker": the metric's label
    number: int
    argv: list[str]
    env: dict
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failed_starts: int = 0      # in a row
    restart_at: float | None = None
    stop_sent: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind} {self.number}"

    def start(self) -> None:
        # A process group of its own: a Ctrl-C reaches only `depot run`, which then stops each part once
        # with SIGTERM (a second signal would interrupt a part's clean shutdown).
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0)
        self.started_at = time.monotonic()
        self.restart_at = None
        self.stop_sent = False

    def stop(self) -> None:
        """SIGTERM, once: the part finishes what it is doing and exits."""
        if self.proc is not None and not self.stop_sent and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.stop_sent = True


def restart_counter(metrics_dir: str):
    """depot_run_restarts_total, written to the servers' multiprocess folder (their /metrics sums it)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Imported here, after the line above: prometheus-client picks its multiprocess mode when imported.
    from prometheus_client import Counter

    return Counter("depot_run_restarts", "Parts of `depot run` restarted after they died, by part (server, worker)",
                   ["part"], registry=None)


def _how(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


class Supervisor:
    def __init__(self, parts: list[Part], *, start_window: float, start_failures: int, restarts=None):
        self.parts = parts
        self.start_window = start_window
        self.start_failures = start_failures
        self.restarts = restarts
        self.stopping = False
        self.gave_up = False
        self.code = 0
        if restarts is not None:
            for kind in sorted({p.kind for p in parts}):
                restarts.labels(kind)  # every part at 0 from the start

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        for part in self.parts:
            part.start()
        while not self.stopping:
            now = time.monotonic()
            for part in self.parts:
                if self.stopping:
                    break
                if part.proc is None:
                    if now >= part.restart_at:
                        self._restart(part)
                elif (rc := part.proc.poll()) is not None:
                    self._died(part, rc, now)
            time.sleep(POLL_SECONDS)
        self._stop(None, None)  # again: a part may have been started while the signal came
        for part in self.parts:
            if part.proc is not None:
                rc = part.proc.wait()
                if rc not in CLEAN_EXITS and not self.code:
                    self.code = rc if rc > 0 else 1
        print("depot: stopped", flush=True)
        return 1 if self.gave_up else self.code

    def _stop(self, signum, frame) -> None:
        self.stopping = True
        for part in self.parts:
            part.stop()

    def _died(self, part: Part, rc: int, now: float) -> None:
        ran = now - part.started_at
        pid = part.proc.pid
        part.proc = None
        part.failed_starts = part.failed_starts + 1 if ran < self.start_window else 0
        if part.failed_starts >= self.start_failures:
            print(f"depot: {part.name} (pid {pid}) {_how(rc)} after {ran:.1f} s: it failed to start "
                  f"{part.failed_starts} times in a row (each ended within {self.start_window:g} s); "
                  f"stopping everything", flush=True)
            self.gave_up = True
            self._stop(None, None)
            return
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** part.failed_starts)
        part.restart_at = now + delay
        print(f"depot: {part.name} (pid {pid}) {_how(rc)} after {ran:.1f} s; restarting it in {delay:g} s",
              flush=True)

    def _restart(self, part: Part) -> None:
        part.start()
        if self.restarts is not None:
            self.restarts.labels(part.kind).inc()
        print(f"depot: {part.name} restarted (pid {part.proc.pid})", flush=True)
