"""Hostile packages through the HTTP upload: each refused with a JSON reason, nothing stored, nothing
reaching `Packages`; decompression bombs cost bounded time and memory. (tests/repos checks the parsers
one by one; this is the end-to-end view: upload endpoint, storage, database, rebuild, published index.)"""
from __future__ import annotations

import io
import os
import tarfile
import time
import tracemalloc

import aiohttp
import pytest

from tests import pkgfactory
from tests.helpers import bearer
from tests.pkgfactory import _tar_gz, ar_archive, control_text, deb_bytes

MiB = 1 << 20


def _tar_gz_members(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data[m.name]) if m.name in data else None)
    return buf.getvalue()


def _deb_with_control_tar(ctl_tar_gz: bytes) -> bytes:
    return ar_archive([("debian-binary", b"2.0\n"), ("control.tar.gz", ctl_tar_gz),
                       ("data.tar.gz", _tar_gz({"./x": b"x"}))])


def _symlinked_control() -> bytes:
    link = tarfile.TarInfo("./control")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _deb_with_control_tar(_tar_gz_members([link], {}))


def _hardlinked_control() -> bytes:
    link = tarfile.TarInfo("./control")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/shadow"
    return _deb_with_control_tar(_tar_gz_members([link], {}))


def _absolute_member() -> bytes:
    info = tarfile.TarInfo("/etc/cron.d/evil")
    payload = b"* * * * * root sh\n"
    info.size = len(payload)
    ctl = tarfile.TarInfo("./control")
    text = control_text("abs-member", "1.0", "amd64").encode()
    ctl.size = len(text)
    return _deb_with_control_tar(_tar_gz_members([ctl, info], {"./control": text, "/etc/cron.d/evil": payload}))


def _many_members() -> bytes:
    # 50,000 empty entries: a tar "bomb" by count rather than size.
    members = []
    for n in range(50_000):
        m = tarfile.TarInfo(f"./f{n}")
        members.append(m)
    return _deb_with_control_tar(_tar_gz_members(members, {}))


def _hostile_debs() -> dict[str, bytes]:
    good = deb_bytes("fine-pkg")
    flipped = bytearray(good)
    off = good.index(b"control.tar.gz") + 80
    for i in range(off, off + 16):
        flipped[i] ^= 0xFF
    inject = control_text("smuggler", "1.0", "amd64") + "\nPackage: evil\nVersion: 6.6\nArchitecture: amd64\n"
    return {
        "empty.deb": b"",
        "random.deb": os.urandom(4096),
        "truncated.deb": good[: len(good) // 2],
        "header-only.deb": good[:70],
        "corrupt.deb": bytes(flipped),
        "dotdot-control.deb": deb_bytes("dotdot", control_files={"../../etc/evil": b"x"}),
        "dotdot-ar.deb": ar_archive([("debian-binary", b"2.0\n"), ("control.tar.gz",
                                     _tar_gz({"./control": control_text("arname", "1.0", "amd64").encode()})),
                                     ("../data.tar.gz", b"x")]),
        "absolute-member.deb": _absolute_member(),
        "symlink-control.deb": _symlinked_control(),
        "hardlink-control.deb": _hardlinked_control(),
        "injected-stanza.deb": deb_bytes("smuggler", control=inject),
        "injected-filename.deb": deb_bytes("smuggler2", control=control_text(
            "smuggler2", "1.0", "amd64", extra="Filename: ../../../etc/passwd\n")),
        "injected-sha.deb": deb_bytes("smuggler3", control=control_text(
            "smuggler3", "1.0", "amd64", extra="SHA256: 0000\n")),
        "injected-cr.deb": deb_bytes("smuggler4", control=control_text(
            "smuggler4", "1.0", "amd64", extra="Depends: a\rPackage: evil\n")),
        "duplicate-field.deb": deb_bytes("twice", control=control_text("twice", "1.0", "amd64", extra="Version: 9\n")),
        "bomb-control.deb": deb_bytes("bomb", control_files={"./postinst": b"\0" * (64 * MiB)}),
        "many-members.deb": _many_members(),
    }


async def _upload(client, key, snap, files: dict[str, bytes]):
    form = aiohttp.FormData()
    for name, data in files.items():
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    resp = await client.post(f"/api/v2/snapshot/{snap}/upload", data=form, headers=bearer(key))
    return resp.status, await resp.json(content_type=None)


async def _snapshot(client, key, type_="deb") -> int:
    body = {"name": f"hostile-{type_}", "type": type_}
    body.update({"dist": "bookworm", "section": "main"} if type_ == "deb" else {"releasever": 9})
    resp = await client.post("/api/v2/repo/", json=body, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    repo = (await resp.json())["results"]["Id"]
    resp = await client.post(f"/api/v2/repo/{repo}/snapshot", json={}, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["results"]["Id"]


def _stored(settings) -> tuple[list, list]:
    root = settings.storage_dir
    tmp = sorted(os.listdir(root / "tmp")) if (root / "tmp").exists() else []
    pool = sorted(f for d, _, fs in os.walk(root / "pool") for f in fs)
    return tmp, pool


@pytest.mark.slow
async def test_hostile_debs_are_refused_one_by_one_and_nothing_reaches_storage_or_packages(
    client, pool, settings, admin_key, run_worker
):
    snap = await _snapshot(client, admin_key)
    hostile = _hostile_debs()
    _, pool_before = _stored(settings)
    tracemalloc.start()
    t0 = time.monotonic()
    status, body = await _upload(client, admin_key, snap, hostile)
    took = time.monotonic() - t0
    # Peak of Python allocations during the upload beyond what the test already holds (the files).
    peak_mib = (tracemalloc.get_traced_memory()[1]) / MiB
    tracemalloc.stop()
    assert status == 400, body
    outcomes = {f["file"]: f for f in body["files"]}
    assert set(outcomes) == set(hostile)
    assert all(f["status"] != "uploaded" for f in outcomes.values()), [f for f in outcomes.values()
                                                                        if f["status"] == "uploaded"]
    assert all(f.get("reason") for f in outcomes.values())
    assert "reserved" in outcomes["injected-filename.deb"]["reason"]  # Filename: is the server's to write
    assert took < 10, f"hostile upload took {took:.1f}s"
    assert peak_mib < 24, f"the upload allocated {peak_mib:.0f} MiB (a bomb was decompressed?)"
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 0
    tmp, pool_after = _stored(settings)
    assert tmp == [] and pool_after == pool_before

    # A good package next to them, a rebuild: the index holds it and nothing smuggled.
    status, body = await _upload(client, admin_key, snap, {"fine.deb": deb_bytes("fine-pkg"),
                                                          "injected-stanza.deb": hostile["injected-stanza.deb"]})
    assert status == 400 and [f["status"] for f in body["files"]].count("uploaded") == 1
    resp = await client.put(f"/api/v2/snapshot/{snap}/rebuild", json={"gpgSign": "false"}, headers=bearer(admin_key))
    assert resp.status == 202
    await run_worker()
    resp = await client.get(f"/repo/deb/hostile-deb/bookworm/main/{snap}/dists/bookworm/main/binary-amd64/Packages")
    assert resp.status == 200
    index = await resp.text()
    assert index.count("Package: ") == 1 and "Package: fine-pkg" in index
    for smuggled in ("evil", "smuggler", "6.6", "/etc/passwd", "root:", "\r"):
        assert smuggled not in index
    reasons = {name: f["reason"] for name, f in outcomes.items()}
    print(f"\n{len(hostile)} hostile debs refused in {took:.2f}s, allocation peak {peak_mib:.1f} MiB; e.g. "
          f"bomb: {reasons['bomb-control.deb']!r}, symlink: {reasons['symlink-control.deb']!r}")


@pytest.fixture(scope="module")
def real_rpm(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("rpm")
    try:
        paths = pkgfactory.make_rpms(d, [("hostile-base", "1.0", "1", "noarch")])
    except Exception as exc:  # rpmbuild missing
        pytest.skip(f"cannot build an rpm here: {exc}")
    return paths[0].read_bytes()


async def test_hostile_rpms_are_refused_and_nothing_is_stored(client, pool, settings, admin_key, real_rpm):
    snap = await _snapshot(client, admin_key, "rpm")
    flipped = bytearray(real_rpm)
    for i in range(200, 260):
        flipped[i] ^= 0x5A
    tail = bytearray(real_rpm)
    for i in range(len(tail) - 300, len(tail) - 100):
        tail[i] ^= 0xA5
    hostile = {
        "truncated.rpm": real_rpm[: len(real_rpm) // 2],
        "lead-only.rpm": real_rpm[:96],
        "corrupt-header.rpm": bytes(flipped),
        "corrupt-payload.rpm": bytes(tail),
        "magic-then-garbage.rpm": b"\xed\xab\xee\xdb" + os.urandom(4000),
        "a-deb-named-rpm.rpm": deb_bytes("sneaky"),
        "empty.rpm": b"",
    }
    _, pool_before = _stored(settings)
    t0 = time.monotonic()
    status, body = await _upload(client, admin_key, snap, hostile)
    took = time.monotonic() - t0
    assert status == 400, body
    outcomes = {f["file"]: f for f in body["files"]}
    uploaded = [n for n, f in outcomes.items() if f["status"] == "uploaded"]
    # A flipped payload byte is only caught by a digest check: the header's payload digest must be verified.
    assert uploaded == [], f"accepted: {uploaded}"
    assert await pool.fetchval("SELECT count(*) FROM package_files") == 0
    tmp, pool_after = _stored(settings)
    assert tmp == [] and pool_after == pool_before
    assert took < 10
    print(f"\n{len(hostile)} hostile rpms refused in {took:.2f}s")


async def test_a_symlink_planted_in_the_storage_folders_is_never_followed(client, pool, settings, admin_key):
    """Someone with write access to an upload or publish folder plants links to /etc: the server never
    serves through them and never writes through them."""
    public = settings.storage_dir / "public"
    tmp = settings.storage_dir / "tmp"
    public.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    links = [public / "planted", public / "deb" / "planted-file"]
    links[1].parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink("/etc", links[0])
        os.symlink("/etc/passwd", links[1])
        for path in ("/repo/planted/passwd", "/repo/deb/planted-file", "/repo/planted/hostname"):
            resp = await client.get(path)
            assert resp.status == 404, path
            assert b"root:" not in await resp.read()
        # Uploads go through fresh O_EXCL temp files: links already in tmp/ are never written through.
        victim = settings.storage_dir.parent / "victim.txt"
        victim.write_text("untouched")
        for n in range(20):
            os.symlink(victim, tmp / f"up-planted{n}")
        snap = await _snapshot(client, admin_key)
        status, body = await _upload(client, admin_key, snap, {"ok.deb": deb_bytes("linked-ok")})
        assert status == 200, body
        assert victim.read_text() == "untouched"
    finally:
        for p in links + list(tmp.glob("up-planted*")):
            if p.is_symlink():
                p.unlink()
