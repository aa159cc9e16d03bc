"""`depot hosts` against a live server: list, filters, pages, one host with its updates."""
from __future__ import annotations

import json


async def test_hosts_list_filter_and_show_with_updates(depot, client, pool, make_key, run_worker):
    from tests.hosts import captured
    from tests.hosts.helpers import put, register

    admin = await make_key("admin")
    resp = await client.post("/api/v2/profile/", json=captured.PROFILE, headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 201
    creds = await register(client, admin, hostname="web01")
    host_id = creds[2]
    await put(client, creds, "status", captured.STATUS)
    await put(client, creds, "packages/installed", captured.INSTALLED)
    await put(client, creds, "packages/available", captured.AVAILABLE)
    await run_worker()
    other = await register(client, admin, hostname="db01", ip="10.0.0.2")

    code, out, err = await depot("hosts", "--key", admin)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "HOSTNAME", "IP"] and lines[-1] == "2 host(s)"
    assert {line.split()[1] for line in lines[1:-1]} == {"localhost", "db01"}  # STATUS renamed web01

    code, out, err = await depot("hosts", "--per-page", "1", "--page", "2", "--key", admin)
    assert code == 0 and out.splitlines()[-1] == "page 2, 1 of 2 host(s)", out + err
    code, out, err = await depot("hosts", "list", "--os", "Debian GNU/Linux", "--key", admin)
    assert code == 0 and out.splitlines()[-1] == "1 host(s)" and str(other[2]) not in out.split()[0:12], err
    code, out, _ = await depot("hosts", "--outdated", "--key", admin)
    assert code == 0 and "UPDATES" in out and out.splitlines()[-1] == "1 host(s)"

    code, out, err = await depot("hosts", "show", str(host_id), "--key", admin)
    assert code == 0, err
    assert "3 available update(s)" in out and "ca-certificates" in out and "20250419~deb12u2" in out
    code, out, _ = await depot("hosts", "show", str(host_id), "--json", "--key", admin)
    data = json.loads(out)
    assert len(data["updates"]) == 3 and data["host"]
    code, _, err = await depot("hosts", "show", "99999", "--key", admin)
    assert code == 1 and "404: Host #99999 does not exist." in err


async def test_hosts_with_a_package_older_than(depot, client, pool, make_key):
    from app.hosts.inventory import seed_inventories
    from tests.hosts.helpers import register

    admin = await make_key("admin")
    old = await register(client, admin, hostname="old01")
    new = await register(client, admin, hostname="new01", ip="10.0.0.2")
    await seed_inventories(pool, [(old[2], "openssl", "", "3.0.11-1"), (new[2], "openssl", "", "3.0.15-1")])
    code, out, err = await depot("hosts", "--package", "openssl", "--older-than", "3.0.15", "--key", admin)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "PACKAGES"] and lines[-1] == "1 host(s)"
    assert "old01" in lines[1] and "openssl 3.0.11-1" in lines[1]
    code, _, err = await depot("hosts", "--package", "openssl", "--older-than", "not a version", "--key", admin)
    assert code == 1 and "400" in err
