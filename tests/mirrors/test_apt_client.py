"""The real apt-get against a mirrored and republished repository, signatures on."""
from __future__ import annotations

import asyncio

import pytest

from tests.clients import AptRoot

pytestmark = [pytest.mark.clients, pytest.mark.usefixtures("repo_db")]


async def test_apt_get_reads_the_mirror(site, make_mirror, run_mirror, client, tmp_path):
    site.archive.add("alpha", "2.0-1")
    site.archive.build()
    task = await run_mirror(await make_mirror(site), env="prod")
    assert task["Status"] == "done", task["Error"]
    key = tmp_path / "depot.asc"
    key.write_text(await (await client.get("/repo/gpgkeys/depot.test.pub")).text())
    apt = AptRoot(tmp_path / "apt")
    apt.set_source(str(client.make_url("/repo/deb/mirror1/stable/main/prod")), "stable", "main", key)
    up = await asyncio.to_thread(apt.update)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "NO_PUBKEY" not in up.stderr and "not signed" not in up.stderr
    assert "Candidate: 2.0-1" in await asyncio.to_thread(apt.policy, "alpha")
    dl = await asyncio.to_thread(apt.download, "alpha", "common")
    assert dl.returncode == 0, dl.stdout + dl.stderr
    for name in ("alpha_2.0-1_amd64.deb", "common_1.0-1_all.deb"):
        assert (apt.root / "dl" / name).read_bytes() == (site.archive.pool / name).read_bytes()

    # The upstream's own key does not validate the republished repository: Depot signed it.
    other = AptRoot(tmp_path / "apt-upstream-key")
    upstream_key = tmp_path / "upstream.asc"
    upstream_key.write_text(site.archive.key.armored())
    other.set_source(str(client.make_url("/repo/deb/mirror1/stable/main/prod")), "stable", "main", upstream_key)
    bad = await asyncio.to_thread(other.update)
    assert "NO_PUBKEY" in bad.stderr, bad.stdout + bad.stderr
    assert "Candidate: 2.0-1" not in await asyncio.to_thread(other.policy, "alpha")
