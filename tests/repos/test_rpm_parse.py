"""Parsing uploaded .rpm files with createrepo_c; payload digests verified with rpmkeys."""
import pytest

from app.repos.packages import PackageError, parse_package
from app.repos.packages.rpm import parse_rpm
from tests.pkgfactory import deb_bytes


def test_real_rpm_is_parsed_with_chunks(rpm_dir):
    p = parse_package(rpm_dir / "depot-tool-2.1-3.x86_64.rpm", "rpm")
    assert (p.name, p.version, p.release, p.epoch, p.arch) == ("depot-tool", "2.1", "3", "0", "x86_64")
    assert p.filename == "depot-tool-2.1-3.x86_64.rpm"
    assert f'pkgid="YES">{p.sha256}<' in p.chunks["primary"]
    assert 'href="packages/x86_64/depot-tool-2.1-3.x86_64.rpm"' in p.chunks["primary"]
    assert "/usr/share/depot-tool/README" in p.chunks["filelists"]
    assert p.chunks["other"].startswith("<package")


def _refused(tmp_path, data: bytes, match: str):
    path = tmp_path / "x.rpm"
    path.write_bytes(data)
    with pytest.raises(PackageError, match=match):
        parse_rpm(path)


def test_hostile_rpms(tmp_path, rpm_dir):
    good = (rpm_dir / "depot-hello-1.0-1.noarch.rpm").read_bytes()
    _refused(tmp_path, b"", "empty")
    _refused(tmp_path, b"just text\n" * 10, "not an RPM")
    _refused(tmp_path, deb_bytes("hello"), "not an RPM")          # a deb into an rpm repository
    _refused(tmp_path, good[:200], "header|digest")                # truncated inside the header
    _refused(tmp_path, good[:-40], "digest")                       # truncated payload
    bad = bytearray(good)
    bad[-30] ^= 0xFF                                               # corrupted payload byte
    _refused(tmp_path, bytes(bad), "digest")
