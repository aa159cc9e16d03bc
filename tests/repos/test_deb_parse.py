"""Parsing uploaded .deb files: real packages are read, hostile ones refused with a reason."""
import subprocess

import pytest

from app.repos.packages import PackageError, parse_package
from app.repos.packages.deb import parse_deb
from tests import pkgfactory
from tests.pkgfactory import _tar_gz, ar_archive, control_text, deb_bytes


def test_generated_deb_is_accepted_by_dpkg_and_parsed(tmp_path):
    path = pkgfactory.make_deb(tmp_path, "hello", "1:2.0-1", "amd64")
    assert subprocess.run(["dpkg-deb", "--info", str(path)], capture_output=True).returncode == 0
    p = parse_package(path, "deb")
    assert (p.name, p.version, p.arch) == ("hello", "1:2.0-1", "amd64")
    assert p.filename == "hello_2.0-1_amd64.deb"        # epoch dropped from the file name
    assert list(p.control)[:3] == ["Package", "Version", "Architecture"]
    assert p.control["Description"].startswith("test package hello\n ")
    assert p.size == path.stat().st_size and len(p.sha256) == 64


def test_dpkg_deb_built_package(tmp_path):
    # A package built by the real tool (xz-compressed members) parses too.
    root = tmp_path / "src"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc/real").mkdir(parents=True)
    (root / "usr/share/doc/real/README").write_text("x")
    (root / "DEBIAN/control").write_text(control_text("real-pkg", "0.9~rc1-2", "all"))
    out = tmp_path / "real.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    p = parse_deb(out)
    assert (p.name, p.version, p.arch, p.filename) == ("real-pkg", "0.9~rc1-2", "all", "real-pkg_0.9~rc1-2_all.deb")


def _refused(tmp_path, data: bytes, match: str):
    path = tmp_path / "x.deb"
    path.write_bytes(data)
    with pytest.raises(PackageError, match=match):
        parse_deb(path)


def test_empty_and_non_package_files(tmp_path):
    _refused(tmp_path, b"", "empty")
    _refused(tmp_path, b"hello world, not a package\n", "ar archive")
    rpm_like = b"\xed\xab\xee\xdb" + b"\0" * 200
    _refused(tmp_path, rpm_like, "ar archive")


def test_truncated_and_corrupt(tmp_path):
    good = deb_bytes("hello")
    _refused(tmp_path, good[: len(good) // 2], "truncated")
    _refused(tmp_path, good[:70], "truncated|corrupt")
    # Flip bytes inside the compressed control member.
    off = good.index(b"control.tar.gz") + 60 + 20
    bad = bytearray(good)
    for i in range(off, off + 16):
        bad[i] ^= 0xFF
    _refused(tmp_path, bytes(bad), "corrupt")


def test_wrong_member_order_or_missing_members(tmp_path):
    ctl = _tar_gz({"./control": control_text("a-b", "1.0", "amd64").encode()})
    _refused(tmp_path, ar_archive([("debian-binary", b"2.0\n"), ("control.tar.gz", ctl)]), "needs debian-binary")
    _refused(tmp_path, ar_archive([("control.tar.gz", ctl), ("debian-binary", b"2.0\n"),
                                   ("data.tar.gz", ctl)]), "needs debian-binary")


def test_member_names_with_dotdot_or_absolute(tmp_path):
    data = deb_bytes("hello", control_files={"../../etc/evil": b"x"})
    _refused(tmp_path, data, "unsafe path")
    ctl = _tar_gz({"./control": control_text("a-b", "1.0", "amd64").encode()})
    _refused(tmp_path, ar_archive([("debian-binary", b"2.0\n"), ("control.tar.gz", ctl),
                                   ("../data.tar.gz", ctl)]), "invalid ar member name")


def test_injected_newlines_and_field_games(tmp_path):
    # A second stanza smuggled into the control file would become a fake package in Packages.
    inject = control_text("hello", "1.0", "amd64") + "\nPackage: evil\nVersion: 6.6\nArchitecture: amd64\n"
    _refused(tmp_path, deb_bytes("hello", control=inject), "blank lines")
    ws_line = control_text("hello", "1.0", "amd64") + " \n"
    _refused(tmp_path, deb_bytes("hello", control=ws_line), "blank lines")
    dup = control_text("hello", "1.0", "amd64", extra="Version: 9.9\n")
    _refused(tmp_path, deb_bytes("hello", control=dup), "duplicate control field")
    dup_case = control_text("hello", "1.0", "amd64", extra="package: other\n")
    _refused(tmp_path, deb_bytes("hello", control=dup_case), "duplicate")
    reserved = control_text("hello", "1.0", "amd64", extra="Filename: pool/../../x.deb\n")
    _refused(tmp_path, deb_bytes("hello", control=reserved), "reserved")
    cr = control_text("hello", "1.0", "amd64", extra="Depends: a\rb\n")
    _refused(tmp_path, deb_bytes("hello", control=cr), "CR or NUL")


def test_control_bomb_is_refused(tmp_path):
    # 8 MiB of zeros compress to a few KiB: decompression must stop at the 1 MiB bound.
    bomb = deb_bytes("hello", control_files={"./postinst": b"\0" * (8 << 20)})
    assert len(bomb) < 64 * 1024
    _refused(tmp_path, bomb, "too large")


@pytest.mark.parametrize("name,version,arch,match", [
    ("Hello", "1.0", "amd64", "package name"),
    ("a", "1.0", "amd64", "package name"),            # policy: at least two characters
    ("hello/../x", "1.0", "amd64", "package name"),
    ("hello", "v1.0", "amd64", "version"),
    ("hello", "1.0 2", "amd64", "version"),
    ("hello", "1.0-", "amd64", "version"),
    ("hello", "1.0", "AMD64", "architecture"),
    ("hello", "1.0", "../amd64", "architecture"),
    ("hello", "1.0", "any", "architecture"),
])
def test_name_version_arch_syntax(tmp_path, name, version, arch, match):
    _refused(tmp_path, deb_bytes("hello", control=control_text(name, version, arch)), match)


def test_missing_required_fields(tmp_path):
    _refused(tmp_path, deb_bytes("x", control="Package: hello\nVersion: 1.0\nDescription: x\n"), "architecture")
    _refused(tmp_path, deb_bytes("x", control="Package: hello\nVersion: 1.0\nArchitecture: all\n"), "Description")
