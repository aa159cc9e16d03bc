"""`depot profile set|list`: DB-direct without a key, over HTTP with one; the API's validation either way."""
from __future__ import annotations

import json


async def test_profile_set_and_list_both_ways(depot, client, settings, make_key, monkeypatch):
    monkeypatch.setenv("DEPOT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DEPOT_URL", "http://127.0.0.1:9")
    code, out, err = await depot("profile", "set", "web", "--exclude", "linux-image.*,openssl")
    assert code == 0 and out.startswith("profile web created\n") and "Package_exclude: linux-image.*,openssl" in out, err

    # Over HTTP with an operator's key (a database URL that cannot work proves the path).
    monkeypatch.setenv("DEPOT_URL", str(client.make_url("")).rstrip("/"))
    monkeypatch.setenv("DEPOT_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    monkeypatch.setenv("DEPOT_API_KEY", await make_key("operator", "op"))
    code, out, err = await depot("profile", "set", "web", "--service-restart", "nginx")
    assert code == 0 and out.startswith("profile web updated\n") and "Service_restart: nginx" in out, err
    code, out, err = await depot("profile", "set", "db", "--notes", "databases", "--json")
    assert code == 0 and json.loads(out)["results"][0]["Notes"] == "databases", err
    code, out, _ = await depot("profile", "list")
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "db", "web"]
    assert "linux-image.*,openssl" in out and "nginx" in out
    code, out, _ = await depot("profile", "list", "--json")
    assert [p["Name"] for p in json.loads(out)["results"]] == ["db", "web"]
    code, _, err = await depot("profile", "set", "bad name!")
    assert code == 1 and "invalid profile" in err
    code, _, err = await depot("profile", "set", "x", "--key", await make_key("viewer", "v"))
    assert code == 1 and err.startswith("depot: 403: ")
