"""Mirroring an rpm upstream served on 127.0.0.1: repomd.xml checked with the source's keys, primary in
any compression, only missing files fetched, republished signed by Depot (packages with rpmsign)."""
from __future__ import annotations

import asyncio

import pytest

from tests import pkgfactory
from tests.clients import dnf_install, rpm_installed
from tests.helpers import bearer
from tests.upstream import RpmArchive, Upstream

pytestmark = pytest.mark.usefixtures("repo_db")


@pytest.fixture
async def rpm_site(tmp_path, aiohttp_server, upstream_key):
    archive = RpmArchive(tmp_path / "www" / "el" / "9" / "x86_64", upstream_key)
    archive.add(("el-hello", "1.0", "1", "noarch"), ("el-tool", "2.1", "3", "x86_64"))
    archive.build()
    upstream = Upstream(tmp_path / "www")
    server = await aiohttp_server(upstream.app, host="127.0.0.1")
    return archive, upstream, f"http://127.0.0.1:{server.port}/el/$releasever/$basearch"


@pytest.fixture
def make_rpm_mirror(client, admin_key, upstream_key):
    async def make(url: str, *, key=upstream_key, **fields) -> int:
        h = bearer(admin_key)
        body = {"name": "el", "type": "rpm", "url": url, "releasever": [{"name": 9}]}
        r = await client.post("/api/v2/source/rpm/", json=body, headers=h)
        assert r.status == 201, await r.text()
        if key is not None:
            r = await client.post("/api/v2/source/rpm/el/keys", json={"armored": key.armored()}, headers=h)
            assert r.status == 201
        repo = {"name": "el-mirror", "type": "rpm", "releasever": "9", "source": "el", "arch": ["x86_64", "noarch"],
                **fields}
        r = await client.post("/api/v2/repo/", json=repo, headers=h)
        assert r.status == 201, await r.text()
        return (await r.json())["results"]["Id"]

    return make


async def _names(pool, snap_id: int) -> list[str]:
    rows = await pool.fetch("SELECT filename FROM snapshot_packages WHERE snapshot_id = $1 ORDER BY filename", snap_id)
    return [r["filename"] for r in rows]


@pytest.mark.parametrize("compress", ["gz", "xz", "zstd"])
async def test_rpm_mirror_each_compression(rpm_site, make_rpm_mirror, run_mirror, pool, compress):
    archive, upstream, url = rpm_site
    archive.build(compress=compress)
    repo_id = await make_rpm_mirror(url)
    task = await run_mirror(repo_id)
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["signed_by"] == archive.key.fingerprint
    assert await _names(pool, task["Result"]["snapshot"]) == ["el-hello-1.0-1.noarch.rpm", "el-tool-2.1-3.x86_64.rpm"]
    assert upstream.package_requests() == 2
    assert upstream.counts["el/9/x86_64/repodata/repomd.xml"] == 1
    again = await run_mirror(repo_id)
    assert again["Result"]["unchanged"] is True and upstream.package_requests() == 2


async def test_rpm_mirror_upgrade_and_refusals(rpm_site, make_rpm_mirror, run_mirror, pool, other_key):
    archive, upstream, url = rpm_site
    repo_id = await make_rpm_mirror(url, keepLatest=1)
    assert (await run_mirror(repo_id))["Status"] == "done"
    archive.add(("el-tool", "2.2", "1", "x86_64"))
    archive.build()
    task = await run_mirror(repo_id)
    assert task["Status"] == "done", task["Error"]
    assert await _names(pool, task["Result"]["snapshot"]) == ["el-hello-1.0-1.noarch.rpm", "el-tool-2.2-1.x86_64.rpm"]
    assert task["Result"]["downloaded"] == 1 and upstream.package_requests() == 3

    # repomd.xml changed after signing: refused before the primary is read.
    repomd = archive.root / "repodata" / "repomd.xml"
    repomd.write_bytes(repomd.read_bytes().replace(b"<revision>", b"<revision>1"))
    before = dict(upstream.counts)
    task = await run_mirror(repo_id)
    assert task["Status"] == "error" and "BAD signature" in task["Error"]
    assert {p for p in upstream.counts if upstream.counts[p] != before.get(p)} == {
        "el/9/x86_64/repodata/repomd.xml", "el/9/x86_64/repodata/repomd.xml.asc"}
    # Signed by a key that is not the source's.
    (archive.root / "repodata" / "repomd.xml.asc").write_bytes(other_key.detach(repomd.read_bytes()))
    task = await run_mirror(repo_id)
    assert task["Status"] == "error" and "not one of this source's keys" in task["Error"]
    # Unsigned.
    (archive.root / "repodata" / "repomd.xml.asc").unlink()
    task = await run_mirror(repo_id)
    assert task["Status"] == "error" and "is not signed" in task["Error"]


async def test_rpm_another_valid_package_in_place_of_the_listed_one_is_refused(rpm_site, make_rpm_mirror, run_mirror,
                                                                               pool, tmp_path):
    """Payload digests are not checked again for a mirrored rpm: the file's SHA-256 against the signed primary
    is what proves it is the package listed."""
    archive, upstream, url = rpm_site
    listed = archive.packages / "el-tool-2.1-3.x86_64.rpm"
    [other] = pkgfactory.make_rpms(tmp_path / "other", [("el-tool", "2.1", "3", "x86_64")], payload_size=64)
    listed.write_bytes(other.read_bytes())          # same name, version and arch; the primary is unchanged
    task = await run_mirror(await make_rpm_mirror(url))
    assert task["Status"] == "error"
    assert "Packages/el-tool-2.1-3.x86_64.rpm: " in task["Error"] and "no snapshot made" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == 0
    assert await pool.fetchval("SELECT array_agg(DISTINCT name) FROM package_files") == ["el-hello"]


async def test_rpm_unsafe_location_refused(rpm_site, make_rpm_mirror, run_mirror):
    archive, upstream, url = rpm_site
    primary = next((archive.root / "repodata").glob("*primary.xml.gz"))
    import gzip
    import hashlib
    import re

    xml = gzip.decompress(primary.read_bytes()).replace(b'href="Packages/el-hello', b'href="../../el-hello')
    data = gzip.compress(xml)
    primary.write_bytes(data)
    repomd = archive.root / "repodata" / "repomd.xml"
    text = repomd.read_text()
    block = re.search(r'<data type="primary">.*?</data>', text, re.S).group(0)
    fixed = re.sub(r'<checksum type="sha256">\w+</checksum>',
                   f'<checksum type="sha256">{hashlib.sha256(data).hexdigest()}</checksum>', block, count=1)
    fixed = re.sub(r"<size>\d+</size>", f"<size>{len(data)}</size>", fixed, count=1)
    repomd.write_text(text.replace(block, fixed))
    (archive.root / "repodata" / "repomd.xml.asc").write_bytes(archive.key.detach(repomd.read_bytes()))
    task = await run_mirror(await make_rpm_mirror(url))
    assert task["Status"] == "error"
    assert "package el-hello has an unsafe location '../../el-hello-1.0-1.noarch.rpm'" in task["Error"]
    assert upstream.package_requests() == 0


async def test_rpm_packages_are_signed_as_they_land(rpm_site, make_rpm_mirror, run_mirror, pool, settings):
    """Each rpm is signed in the run's threads, a pool file without a row (a killed run's) included: the rebuild
    finds every package signed with Depot's key and signs none."""
    from app.repos.packages import file_digests
    from app.repos.signing import signer_from_settings
    from app.repos.storage import Storage

    archive, upstream, url = rpm_site
    storage = Storage(settings.storage_dir)
    placed = archive.packages / "el-hello-1.0-1.noarch.rpm"
    target = storage.pool_path(file_digests(placed).sha256)
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(placed.read_bytes())
    task = await run_mirror(await make_rpm_mirror(url))
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["downloaded"] == 1 and task["Result"]["reused"] == 1
    assert "sign_packages" not in task["Result"]["rebuild"]["timings"]
    rows = await pool.fetch(
        "SELECT p.sha256 AS original, s.sha256 AS signed, p.signed_by, s.signed_by AS copy_signed_by, s.size"
        " FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
        " JOIN package_files s ON s.id = p.signed_id WHERE sp.snapshot_id = $1", task["Result"]["snapshot"])
    fpr = signer_from_settings(settings).fingerprint
    assert len(rows) == 2
    for r in rows:
        assert r["signed"] != r["original"] and r["signed_by"] == r["copy_signed_by"] == fpr
        assert file_digests(storage.pool_path(r["signed"])).size == r["size"]


@pytest.mark.clients
async def test_dnf_installs_from_the_rpm_mirror(rpm_site, make_rpm_mirror, run_mirror, client, tmp_path):
    archive, upstream, url = rpm_site
    task = await run_mirror(await make_rpm_mirror(url), env="prod")
    assert task["Status"] == "done", task["Error"]
    repo_url = str(client.make_url("/repo/rpm/el-mirror/9/prod"))
    key_url = str(client.make_url("/repo/gpgkeys/depot.test.pub"))
    out = await asyncio.to_thread(dnf_install, tmp_path / "root", repo_url, key_url, "el-hello", "el-tool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert rpm_installed(tmp_path / "root") == ["el-hello-1.0-1", "el-tool-2.1-3"]
