"""`depot user …` and `depot apikey create`: over HTTP when a key is configured, DB-direct otherwise (bootstrap).

Each test makes the other path impossible (an unreachable server, or a database URL that cannot work), so
it proves which one was used.
"""
from __future__ import annotations

import json

from tests.helpers import bearer


async def _works(client, key: str) -> int:
    return (await client.get("/api/v2/tasks", headers=bearer(key))).status


async def test_db_direct_without_configuration(depot, client, settings, monkeypatch):
    # No key anywhere (the fixture empties the config dir and DEPOT_API_KEY); the database of `make run`
    # is DEPOT_DATABASE_URL here; a server URL that answers nothing shows HTTP is not used.
    monkeypatch.setenv("DEPOT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DEPOT_URL", "http://127.0.0.1:9")
    code, out, err = await depot("user", "create", "bob", "--role", "admin")
    assert code == 0 and out == "user bob created with role admin\n", err
    code, out, err = await depot("apikey", "create", "bob")
    assert code == 0, err
    first = out.splitlines()[-1]
    assert first.startswith("ak_") and len(first) == 55 and "previous one no longer works" in err
    assert await _works(client, first) == 200
    code, out, _ = await depot("apikey", "create", "bob")
    second = out.splitlines()[-1]
    assert code == 0 and second != first
    assert await _works(client, first) == 401 and await _works(client, second) == 200

    code, out, _ = await depot("user", "create", "eve", "--role", "viewer", "--json")
    assert code == 0 and json.loads(out)["results"]["Role"] == "viewer"
    code, out, err = await depot("user", "create", "fay", "--role", "viewer", "--with-key")
    assert code == 0 and "shown only this once" in err and await _works(client, out.splitlines()[-1]) == 200
    code, out, err = await depot("user", "delete", "fay")
    code, out, _ = await depot("user", "list")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["USERNAME", "ROLE"] and [x.split()[:2] for x in lines[1:]] == [
        ["bob", "admin"], ["eve", "viewer"]]
    code, _, err = await depot("user", "password", "eve", "--password", "short")
    assert code == 1 and "at least 8 characters" in err
    code, out, _ = await depot("user", "password", "eve", "--password", "long enough")
    assert code == 0 and "password of eve set" in out
    code, out, _ = await depot("user", "role", "eve", "--role", "operator")
    assert code == 0 and "eve now has role operator" in out
    code, _, err = await depot("user", "delete", "bob")
    assert code == 1 and "last admin" in err
    code, _, err = await depot("user", "create", "bob", "--role", "viewer")
    assert code == 1 and err == "depot: User bob already exists\n"
    code, _, err = await depot("apikey", "create", "nobody")
    assert code == 1 and "User nobody does not exist" in err
    code, out, _ = await depot("user", "delete", "eve")
    assert code == 0 and "eve deleted" in out


async def test_over_http_with_a_key(depot, client, settings, admin_key, make_key, monkeypatch, tmp_path):
    # A database URL that cannot work: only the HTTP path can succeed.
    monkeypatch.setenv("DEPOT_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    code, out, err = await depot("user", "create", "carol", "--role", "operator", "--key", admin_key)
    assert code == 0 and out == "user carol created with role operator\n", err
    monkeypatch.setenv("DEPOT_API_KEY", admin_key)
    code, out, err = await depot("apikey", "create", "carol")
    assert code == 0, err
    first = out.splitlines()[-1]
    assert first.startswith("ak_") and await _works(client, first) == 200
    code, out, _ = await depot("apikey", "create", "carol")
    second = out.splitlines()[-1]
    assert await _works(client, first) == 401 and await _works(client, second) == 200
    code, out, _ = await depot("apikey", "create", "carol", "--json")
    third = json.loads(out)["results"]["Api_key"]
    assert await _works(client, second) == 401 and await _works(client, third) == 200

    code, out, _ = await depot("user", "list", "--json")
    assert [u["Name"] for u in json.loads(out)["results"]] == ["admin", "carol"]
    code, out, err = await depot("user", "create", "gus", "--role", "uploader", "--with-key")
    assert code == 0 and "shown only this once" in err and await _works(client, out.splitlines()[-1]) == 200
    code, out, _ = await depot("user", "set-role", "carol", "--role", "viewer")
    assert code == 0 and "carol now has role viewer" in out
    code, out, _ = await depot("user", "password", "carol", "--password", "a long password")
    assert code == 0 and "password of carol set" in out
    code, _, err = await depot("user", "delete", "admin")
    assert code == 1 and err.startswith("depot: 409: User admin is the last admin")
    # A key that is not an admin's: a readable refusal, non-zero.
    code, _, err = await depot("user", "list", "--key", third)
    assert code == 1 and "403: Managing users and API keys needs an admin API key" in err
    # The key from the config file selects HTTP too.
    monkeypatch.delenv("DEPOT_API_KEY")
    (tmp_path / "config" / "depot").mkdir(parents=True)
    (tmp_path / "config" / "depot" / "cli.toml").write_text(f'key = "{admin_key}"\n')
    code, out, err = await depot("user", "delete", "carol")
    assert code == 0 and "carol deleted" in out, err
    # --local forces DB-direct (which cannot work here): a readable error, non-zero.
    code, _, err = await depot("user", "list", "--local")
    assert code == 1 and err.startswith("depot: cannot reach the database")


def test_a_closed_stdout_ends_quietly(settings, tmp_path):
    """`depot user list | head -0`: exit 141 like other tools, no traceback."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DEPOT_DATABASE_URL=settings.database_url, XDG_CONFIG_HOME=str(tmp_path))
    env.pop("DEPOT_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "user", "list", "--local"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err, err
