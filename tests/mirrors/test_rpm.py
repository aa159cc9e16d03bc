"""Mirroring an rpm upstream served on 127.0.0.1: repomd.xml checked with the source's keys, primary in
any compression, only missing files fetched, republished signed by Depot (packages with rpmsign)."""
from __future__ import annotations

import asyncio
import re

import pytest

from tests import pkgfactory
from tests.clients import dnf, dnf_install, rpm_checksig, rpm_installed, rpm_keyring
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
    """dnf installs from the republished mirror with signatures on, and reads its errata, groups and modules."""
    archive, upstream, url = rpm_site
    archive.build(metadata=CARRIED)
    task = await run_mirror(await make_rpm_mirror(url), env="prod")
    assert task["Status"] == "done", task["Error"]
    repo_url = str(client.make_url("/repo/rpm/el-mirror/9/prod"))
    key_url = str(client.make_url("/repo/gpgkeys/depot.test.pub"))
    out = await asyncio.to_thread(dnf_install, tmp_path / "root", repo_url, key_url, "el-hello", "el-tool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert rpm_installed(tmp_path / "root") == ["el-hello-1.0-1", "el-tool-2.1-3"]
    for args, expected in [(["updateinfo", "list", "--installed"], "ELSA-2026:0042"),
                           (["group", "list", "--ids"], "(el-tools)"),
                           (["module", "list"], "el-stack")]:
        out = await asyncio.to_thread(dnf, tmp_path / "root", repo_url, key_url, *args)
        assert out.returncode == 0 and expected in out.stdout, (args, out.stdout + out.stderr)


@pytest.mark.clients
async def test_rpm_mirror_takes_source_packages_when_asked(rpm_site, make_rpm_mirror, run_mirror, pool, client,
                                                           admin_key, tmp_path):
    """A mirror whose arch lists `src` takes the upstream's source rpms (and only then), signs them as it does
    the others, and republishes them with arch src: dnf lists them, rpm checks their signature."""
    archive, upstream, url = rpm_site
    pkgfactory.make_srpm(archive.packages, "el-hello", "1.0", "1")
    archive.build()
    task = await run_mirror(await make_rpm_mirror(url))
    assert task["Status"] == "done", task["Error"]
    assert await _names(pool, task["Result"]["snapshot"]) == ["el-hello-1.0-1.noarch.rpm", "el-tool-2.1-3.x86_64.rpm"]

    r = await client.post("/api/v2/repo/", headers=bearer(admin_key), json={
        "name": "el-src", "type": "rpm", "releasever": "9", "source": "el", "arch": ["x86_64", "noarch", "src"]})
    assert r.status == 201, await r.text()
    task = await run_mirror((await r.json())["results"]["Id"], env="prod")
    assert task["Status"] == "done", task["Error"]
    snap = task["Result"]["snapshot"]
    assert await _names(pool, snap) == ["el-hello-1.0-1.noarch.rpm", "el-hello-1.0-1.src.rpm", "el-tool-2.1-3.x86_64.rpm"]
    signed = await pool.fetch(
        "SELECT p.filename, s.signed_by FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
        " LEFT JOIN package_files s ON s.id = p.signed_id WHERE sp.snapshot_id = $1 ORDER BY 1", snap)
    assert all(r["signed_by"] for r in signed), signed
    repo_url = str(client.make_url("/repo/rpm/el-src/9/prod"))
    key_url = str(client.make_url("/repo/gpgkeys/depot.test.pub"))
    out = await asyncio.to_thread(dnf, tmp_path / "root", repo_url, key_url, "repoquery", "--arch", "src",
                                  "--qf", "%{name}-%{version}-%{release}.%{arch} %{location}")
    assert out.returncode == 0 and out.stdout.split()[::2] == ["el-hello-1.0-1.src"], out.stdout + out.stderr
    # The published file carries Depot's signature, which rpm checks with Depot's public key.
    location = out.stdout.split()[1]          # relative to the repository: packages/SRPMS/...
    path = tmp_path / "el-hello-1.0-1.src.rpm"
    path.write_bytes(await (await client.get(f"/repo/rpm/el-src/9/prod/{location}")).read())
    db = rpm_keyring(tmp_path / "rpmdb", await (await client.get("/repo/gpgkeys/depot.test.pub")).text())
    check = rpm_checksig(db, path, "-v")
    assert check.returncode == 0 and "Signature, key ID" in check.stdout and "NOKEY" not in check.stdout, check.stdout


UPDATEINFO = """<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="security@example.org" status="final" type="security" version="1">
    <id>ELSA-2026:0042</id>
    <title>el-hello security update</title>
    <issued date="2026-11-30 00:00:00"/>
    <severity>Important</severity>
    <description>Fixes a flaw in el-hello.</description>
    <pkglist>
      <collection short="el9">
        <name>el9</name>
        <package name="el-hello" version="1.0" release="1" epoch="0" arch="noarch">
          <filename>el-hello-1.0-1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
"""
COMPS = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">
<comps>
  <group>
    <id>el-tools</id>
    <name>EL tools</name>
    <description>The EL tools.</description>
    <default>false</default>
    <uservisible>true</uservisible>
    <packagelist>
      <packagereq type="mandatory">el-tool</packagereq>
    </packagelist>
  </group>
</comps>
"""
# Its one artifact is not in the repository: el-tool stays installable without the module enabled.
MODULES = """---
document: modulemd
version: 2
data:
  name: el-stack
  stream: "1"
  version: 20261201000000
  context: 9edba152
  arch: x86_64
  summary: EL stack
  description: >-
    A module of the test upstream.
  license:
    module:
    - MIT
  artifacts:
    rpms:
    - el-other-0:1.0-1.x86_64
...
"""
CARRIED = {"updateinfo": ("updateinfo.xml.gz", UPDATEINFO), "group": ("comps.xml", COMPS),
           "modules": ("modules.yaml.xz", MODULES)}


def _records(repomd: bytes) -> dict[str, tuple[str, str]]:
    """type -> (location, sha256) of a repomd.xml."""
    import xml.etree.ElementTree as ET

    ns = {"r": "http://linux.duke.edu/metadata/repo"}
    return {d.get("type"): (d.find("r:location", ns).get("href"), d.find("r:checksum", ns).text)
            for d in ET.fromstring(repomd).findall("r:data", ns)}


async def test_rpm_mirror_carries_errata_modules_and_groups(rpm_site, make_rpm_mirror, run_mirror, run_worker, pool,
                                                            client, admin_key):
    """The upstream's updateinfo, modules and comps files, checked against its signed repomd.xml, are published as
    they are in Depot's own signed repomd.xml, by every rebuild of the snapshot and of its copies; fetched once."""
    import hashlib

    archive, upstream, url = rpm_site
    archive.build(metadata=CARRIED)
    theirs = _records((archive.root / "repodata" / "repomd.xml").read_bytes())
    repo_id = await make_rpm_mirror(url)
    task = await run_mirror(repo_id, env="prod")
    assert task["Status"] == "done", task["Error"]
    assert task["Result"]["metadata"] == ["group", "modules", "updateinfo"]

    async def published(prefix: str) -> dict[str, tuple[str, str]]:
        r = await client.get(f"{prefix}/repodata/repomd.xml")
        assert r.status == 200
        ours = _records(await r.read())
        assert {"primary", "filelists", "other", "group", "modules", "updateinfo"} <= set(ours)
        for kind in CARRIED:
            href, sha = ours[kind]
            assert sha == theirs[kind][1]
            body = await (await client.get(f"{prefix}/{href}")).read()
            assert hashlib.sha256(body).hexdigest() == sha
            assert body == (archive.root / theirs[kind][0]).read_bytes()
        return ours

    await published("/repo/rpm/el-mirror/9/prod")
    assert all(upstream.counts[f"el/9/x86_64/{theirs[kind][0]}"] == 1 for kind in CARRIED)
    assert (await run_mirror(repo_id))["Result"]["unchanged"] is True
    assert all(upstream.counts[f"el/9/x86_64/{theirs[kind][0]}"] == 1 for kind in CARRIED)

    # A copy of the snapshot carries them too.
    h = bearer(admin_key)
    r = await client.post(f"/api/v2/repo/{repo_id}/snapshot", json={"from": task["Result"]["snapshot"]}, headers=h)
    assert r.status == 201, await r.text()
    copy = (await r.json())["results"]["Id"]
    r = await client.put(f"/api/v2/snapshot/{copy}/rebuild", json={"gpgSign": "true"}, headers=h)
    assert r.status == 202, await r.text()
    await run_worker()
    await published(f"/repo/rpm/el-mirror/9/{copy}")

    # A carried file that is not the one the signed repomd.xml lists fails the run, naming it; no new snapshot.
    archive.add(("el-hello", "1.1", "1", "noarch"))
    archive.build(metadata=CARRIED)
    href = _records((archive.root / "repodata" / "repomd.xml").read_bytes())["updateinfo"][0]
    good = (archive.root / href).read_bytes()
    (archive.root / href).write_bytes(good[:20] + bytes([good[20] ^ 1]) + good[21:])
    snapshots = await pool.fetchval("SELECT count(*) FROM snapshots")
    task = await run_mirror(repo_id)
    assert task["Status"] == "error" and href in task["Error"] and "SHA-256" in task["Error"]
    assert await pool.fetchval("SELECT count(*) FROM snapshots") == snapshots


@pytest.mark.parametrize("change, refusal", [
    (lambda block: re.sub(r'href="[^"]+"', 'href="../../../etc/passwd"', block), "unsafe updateinfo location"),
    (lambda block: block.replace("<location ", '<location xml:base="http://10.0.0.1/" '), "lives on another server"),
    (lambda block: re.sub(r"<size>\d+</size>", "<size>900000000</size>", block), "more than the index limit"),
])
async def test_rpm_carried_metadata_refusals(rpm_site, make_rpm_mirror, run_mirror, pool, change, refusal):
    """A carried record outside the repository, on another server or beyond the index limit fails the run before
    any package is fetched, and leaves no snapshot."""
    archive, upstream, url = rpm_site
    archive.build(metadata=CARRIED)
    repomd = archive.root / "repodata" / "repomd.xml"
    text = repomd.read_text()
    block = re.search(r'<data type="updateinfo">.*?</data>', text, re.S).group(0)
    repomd.write_text(text.replace(block, change(block)))
    (archive.root / "repodata" / "repomd.xml.asc").write_bytes(archive.key.detach(repomd.read_bytes()))
    task = await run_mirror(await make_rpm_mirror(url))
    assert task["Status"] == "error" and refusal in task["Error"], task["Error"]
    assert upstream.package_requests() == 0 and not any("passwd" in p for p in upstream.counts)
    assert await pool.fetchval("SELECT count(*) FROM snapshot_metadata") == 0
