"""The proof: real apt-get and dnf read what the domain publishes, signatures checked."""
import gzip
import time

import pytest

from app.repos.packages import parse_package
from app.repos.publish import deb_entry, publish_deb, publish_rpm, rpm_entry, sign_rpms_into_pool
from tests import pkgfactory
from tests.clients import AptRoot, dnf_install, rpm_installed

pytestmark = pytest.mark.clients


def _ingest(storage, path, kind):
    inc = storage.receive_file(path)
    parsed = parse_package(inc.path, kind, inc.digests)
    storage.adopt(inc)
    return parsed


def test_apt_get_update_and_download_then_tamper(tmp_path, storage, signer, http_root):
    www, base = http_root
    src = tmp_path / "src"
    specs = [("depot-hello", "1.0-1", "amd64"), ("depot-hello", "1.0-1", "arm64"), ("depot-doc", "2:0.5", "all")]
    parsed = [_ingest(storage, pkgfactory.make_deb(src, *s), "deb") for s in specs]
    publish_deb(storage, "deb/test/bookworm/main/1", "s1", dist="bookworm", component="main",
                entries=[deb_entry(p) for p in parsed], signer=signer)
    (www / "repo").symlink_to(storage.public)
    key = tmp_path / "depot.asc"
    key.write_text(signer.public_key())

    apt = AptRoot(tmp_path / "apt")
    apt.set_source(f"{base}/repo/deb/test/bookworm/main/1", "bookworm", "main", key)
    t = time.time()
    up = apt.update()
    assert up.returncode == 0, up.stdout + up.stderr
    assert "NO_PUBKEY" not in up.stderr and "not signed" not in up.stderr
    dl = apt.download("depot-hello", "depot-doc")
    assert dl.returncode == 0, dl.stdout + dl.stderr
    got = sorted(p.name for p in (apt.root / "dl").iterdir())
    assert got == ["depot-doc_2%3a0.5_all.deb", "depot-hello_1.0-1_amd64.deb"]   # amd64 build, not arm64
    assert (apt.root / "dl/depot-hello_1.0-1_amd64.deb").read_bytes() == \
        (src / "depot-hello_1.0-1_amd64.deb").read_bytes()
    assert time.time() - t < 30

    # Tamper with the index after signing: apt must refuse it (hash mismatch vs signed Release).
    pk = storage.public / "deb/test/bookworm/main/1/dists/bookworm/main/binary-amd64/Packages.gz"
    plain = gzip.decompress(pk.read_bytes()).replace(b"Version: 1.0-1", b"Version: 9.9-9")
    with open(pk, "r+b") as f:                     # in place: the by-hash hard link changes too
        f.write(gzip.compress(plain))
        f.truncate()
    (pk.parent / "Packages").write_bytes(plain)
    apt2 = AptRoot(tmp_path / "apt2")
    apt2.set_source(f"{base}/repo/deb/test/bookworm/main/1", "bookworm", "main", key)
    bad = apt2.update()
    assert bad.returncode != 0 and "Failed to fetch" in bad.stderr, bad.stdout + bad.stderr
    assert "9.9-9" not in apt2.policy("depot-hello")


def test_apt_refuses_a_repository_signed_by_another_key(tmp_path, storage, signer, http_root):
    www, base = http_root
    p = _ingest(storage, pkgfactory.make_deb(tmp_path / "src", "depot-x", "1.0", "amd64"), "deb")
    publish_deb(storage, "deb/t/stable/main/2", "s2", dist="stable", component="main",
                entries=[deb_entry(p)], signer=signer)
    (www / "repo").symlink_to(storage.public)
    other = tmp_path / "other.asc"
    from app.repos.signing import Signer
    s2 = Signer(tmp_path / "g2", key_type="RSA", key_length=1024)
    try:
        other.write_text(s2.public_key())
    finally:
        s2.close()
    apt = AptRoot(tmp_path / "apt")
    apt.set_source(f"{base}/repo/deb/t/stable/main/2", "stable", "main", other)
    out = apt.update()
    assert out.returncode != 0 or "NO_PUBKEY" in out.stderr or "not signed" in out.stderr, out.stderr
    assert "1.0" not in apt.policy("depot-x").split("Version table:")[-1]


def test_dnf_installs_a_signed_rpm_with_gpgcheck(tmp_path, storage, signer, http_root, rpm_dir):
    www, base = http_root
    parsed = [_ingest(storage, f, "rpm") for f in sorted(rpm_dir.glob("*.rpm"))]
    signed = sign_rpms_into_pool(storage, signer, parsed)
    assert all(s.sha256 != p.sha256 for s, p in zip(signed, parsed))
    publish_rpm(storage, "rpm/test/9/1", "s1", entries=[(rpm_entry(s), s.filename) for s in signed],
                signer=signer)
    assert (storage.public / "rpm/test/9/1/repodata/repomd.xml.asc").exists()
    (www / "repo").symlink_to(storage.public)
    (www / "key.pub").write_text(signer.public_key())
    t = time.time()
    out = dnf_install(tmp_path / "root", f"{base}/repo/rpm/test/9/1", f"{base}/key.pub", "depot-tool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert rpm_installed(tmp_path / "root") == ["depot-tool-2.1-3"]
    assert (tmp_path / "root/usr/share/depot-tool/README").read_text() == "depot-tool\n"
    assert time.time() - t < 60


def test_dnf_refuses_unsigned_packages_with_gpgcheck(tmp_path, storage, signer, http_root, rpm_dir):
    www, base = http_root
    parsed = [_ingest(storage, f, "rpm") for f in sorted(rpm_dir.glob("*.rpm"))]
    publish_rpm(storage, "rpm/test/9/2", "s2", entries=[(rpm_entry(p), p.filename) for p in parsed],
                signer=signer)                 # repomd signed, packages not
    (www / "repo").symlink_to(storage.public)
    (www / "key.pub").write_text(signer.public_key())
    out = dnf_install(tmp_path / "root", f"{base}/repo/rpm/test/9/2", f"{base}/key.pub", "depot-hello")
    assert out.returncode != 0
    assert "not signed" in (out.stdout + out.stderr), out.stdout + out.stderr
    assert rpm_installed(tmp_path / "root") == []
