"""The `depot` commands run in-process against the test server, as a terminal would run them."""
from __future__ import annotations

import asyncio

import pytest

from app import cli


@pytest.fixture
def depot(client, capsys, monkeypatch, tmp_path):
    """await depot("tasks", "list") -> (exit code, stdout, stderr), run in a thread like a real terminal."""
    monkeypatch.setenv("DEPOT_URL", str(client.make_url("")).rstrip("/"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DEPOT_API_KEY", raising=False)

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()

        def go() -> int:
            try:
                cli.main(list(argv))
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else 1
            return 0

        code = await asyncio.to_thread(go)
        out, err = capsys.readouterr()
        return code, out, err

    return run
