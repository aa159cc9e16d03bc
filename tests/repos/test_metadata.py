"""Index rendering from stored rows: content checks and the speed targets."""
import gzip
import hashlib
import re
import time

import createrepo_c as cr

from app.repos.metadata.deb import DebEntry, render_deb, render_stanza
from app.repos.metadata.rpm import RpmEntry, render_rpm
from app.repos.packages.deb import parse_deb
from app.repos.packages.rpm import parse_rpm
from app.repos.publish import deb_entry, rpm_entry
from tests import pkgfactory


def _entries(tmp_path, specs):
    return [deb_entry(parse_deb(pkgfactory.make_deb(tmp_path / "debs", *s))) for s in specs]


def _parse_release(text):
    sums, section = {}, None
    for line in text.splitlines():
        if line.startswith(" ") and section:
            dg, size, rel = line.split()
            sums.setdefault(section, {})[rel] = (dg, int(size))
        else:
            section = line.rstrip(":") if line.endswith(":") else None
    return sums


def test_deb_index_per_arch_with_all_packages_in_each(tmp_path):
    entries = _entries(tmp_path, [("alpha", "1.0-1", "amd64"), ("beta", "2:3.0", "arm64"),
                                  ("gamma", "0.1", "all")])
    release = render_deb(tmp_path / "out", "bookworm", "main", entries, origin="Depot test")
    dist = tmp_path / "out/dists/bookworm"
    amd = (dist / "main/binary-amd64/Packages").read_text()
    arm = (dist / "main/binary-arm64/Packages").read_text()
    assert re.findall(r"^Package: (\S+)", amd, re.MULTILINE) == ["alpha", "gamma"]
    assert re.findall(r"^Package: (\S+)", arm, re.MULTILINE) == ["beta", "gamma"]
    assert "Filename: pool/main/beta_3.0_arm64.deb\n" in arm
    assert gzip.decompress((dist / "main/binary-amd64/Packages.gz").read_bytes()).decode() == amd
    text = release.read_text()
    assert "Architectures: amd64 arm64\n" in text and "Components: main\n" in text
    assert "Acquire-By-Hash: yes\n" in text and "Suite: bookworm\n" in text
    sums = _parse_release(text)
    assert set(sums) == {"MD5Sum", "SHA1", "SHA256"}
    for rel, (dg, size) in sums["SHA256"].items():
        data = (dist / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == dg and len(data) == size
        by_hash = (dist / rel).parent / "by-hash/SHA256" / dg
        assert by_hash.read_bytes() == data
    for rel, (dg, _) in sums["MD5Sum"].items():
        assert hashlib.md5((dist / rel).read_bytes()).hexdigest() == dg


def test_only_arch_all_still_gives_an_arch(tmp_path):
    entries = _entries(tmp_path, [("docs", "1.0", "all")])
    release = render_deb(tmp_path / "out", "stable", "main", entries)
    assert "Architectures: amd64\n" in release.read_text()
    assert "Package: docs" in (tmp_path / "out/dists/stable/main/binary-amd64/Packages").read_text()


def test_multiline_fields_survive(tmp_path):
    stanza = render_stanza({"Version": "1", "Package": "p", "Description": "short\n long line\n .\n more"})
    assert stanza.startswith("Package: p\nVersion: 1\n")
    assert "Description: short\n long line\n .\n more\n" in stanza


def _synthetic_deb(n):
    base = render_stanza({"Package": "x", "Version": "1.0-1", "Architecture": "amd64",
                          "Maintainer": "Bench <b@example.org>", "Installed-Size": "120",
                          "Depends": "libc6 (>= 2.34), libssl3 (>= 3.0.0)", "Section": "utils",
                          "Priority": "optional", "Description": "a benchmark package\n " + "words " * 40})
    archs = ("amd64", "arm64", "all")
    return [DebEntry(f"pkg{i}", "1.0-1", archs[i % 3], f"pkg{i}_1.0-1_{archs[i % 3]}.deb", 1000 + i,
                     hashlib.md5(b"%d" % i).hexdigest(), hashlib.sha1(b"%d" % i).hexdigest(),
                     hashlib.sha256(b"%d" % i).hexdigest(), base.replace("Package: x", f"Package: pkg{i}"))
            for i in range(n)]


def test_deb_5000_packages_render_fast(tmp_path):
    entries = _synthetic_deb(5000)
    t = time.perf_counter()
    render_deb(tmp_path / "out", "bookworm", "main", entries)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, elapsed


def test_rpm_repodata_is_readable_by_createrepo_c(tmp_path, rpm_dir):
    parsed = [parse_rpm(p) for p in sorted(rpm_dir.glob("*.rpm"))]
    render_rpm(tmp_path / "out", [rpm_entry(p) for p in parsed])
    md = cr.Metadata()
    md.locate_and_load_xml(str(tmp_path / "out"))
    assert sorted(md.get(k).name for k in md.keys()) == ["depot-extra", "depot-hello", "depot-tool"]
    tool = next(md.get(k) for k in md.keys() if md.get(k).name == "depot-tool")
    assert tool.location_href == "packages/x86_64/depot-tool-2.1-3.x86_64.rpm"
    assert any(f[1] == "/usr/share/depot-tool/" for f in tool.files)


def test_rpm_5000_packages_render_fast(tmp_path, rpm_dir):
    one = rpm_entry(parse_rpm(rpm_dir / "depot-hello-1.0-1.noarch.rpm"))
    entries = [RpmEntry(hashlib.sha256(b"%d" % i).hexdigest(), f"p{i}", "noarch", one.primary.replace("depot-hello", f"p{i}"),
                        one.filelists.replace("depot-hello", f"p{i}"), one.other.replace("depot-hello", f"p{i}"))
               for i in range(5000)]
    t = time.perf_counter()
    render_rpm(tmp_path / "out", entries)
    assert time.perf_counter() - t < 1.0


def test_rpm_add_one_reuses_cached_blocks(tmp_path, rpm_dir):
    one = rpm_entry(parse_rpm(rpm_dir / "depot-hello-1.0-1.noarch.rpm"))

    def make(i):
        key = hashlib.sha256(b"%d" % i).hexdigest()
        chunks = [c.replace("depot-hello", f"p{i:04d}").replace(one.key, key)
                  for c in (one.primary, one.filelists, one.other)]
        return RpmEntry(key, f"p{i:04d}", "noarch", *chunks)

    full = {e.key: e for e in (make(i) for i in range(2001))}
    requested = []

    def load(keys):
        requested.extend(keys)
        return {k: (full[k].primary, full[k].filelists, full[k].other) for k in keys}

    def light(keys):  # rows without chunks, as the rebuild fetches them
        return [RpmEntry(k, full[k].name, "noarch") for k in keys]

    keys = list(full)
    render_rpm(tmp_path / "a", light(keys[:2000]), cache_dir=tmp_path / "cache", load_chunks=load)
    assert len(requested) == 2000
    requested.clear()
    render_rpm(tmp_path / "b", light(keys), cache_dir=tmp_path / "cache", load_chunks=load)
    assert 1 <= len(requested) <= 256                     # only the block holding the new package
    md = cr.Metadata(key=cr.HT_KEY_NAME)
    md.locate_and_load_xml(str(tmp_path / "b"))
    assert len(md.keys()) == 2001 and md.get("p2000").name == "p2000"
    # The multi-member gzip decompresses to the same XML a one-shot render gives.
    render_rpm(tmp_path / "c", list(full.values()))
    for kind in ("primary", "filelists", "other"):
        b = gzip.decompress(next((tmp_path / "b/repodata").glob(f"*-{kind}.xml.gz")).read_bytes())
        c = gzip.decompress(next((tmp_path / "c/repodata").glob(f"*-{kind}.xml.gz")).read_bytes())
        assert b == c


def test_rpm_block_cache_appends_compacts_and_survives_a_torn_save(tmp_path, rpm_dir):
    """Packs only grow on add-one; deletions leave dead blocks until most of a pack is dead, then it is
    rewritten; bytes appended by a build that stopped before its index are ignored. The output is always
    the one-shot render's."""
    one = rpm_entry(parse_rpm(rpm_dir / "depot-hello-1.0-1.noarch.rpm"))

    def make(i):
        key = hashlib.sha256(b"%d" % i).hexdigest()
        return RpmEntry(key, f"p{i:04d}", "noarch", *[c.replace("depot-hello", f"p{i:04d}").replace(one.key, key)
                                                      for c in (one.primary, one.filelists, one.other)])

    def xml(out, kind):
        (path,) = (out / "repodata").glob(f"*-{kind}.xml.gz")
        return gzip.decompress(path.read_bytes())

    full = [make(i) for i in range(1200)]
    cache = tmp_path / "cache"
    render_rpm(tmp_path / "a", full[:1000], cache_dir=cache, revision=1)
    size = (cache / "primary.xml").stat().st_size
    render_rpm(tmp_path / "b", full[:1001], cache_dir=cache, revision=1)
    grown = (cache / "primary.xml").stat().st_size
    assert size < grown < size * 1.2                                      # appended, not rewritten
    with open(cache / "primary.xml", "ab") as f:                          # a torn save's leftovers
        f.write(b"<garbage/>")
    render_rpm(tmp_path / "c", full[900:1200], cache_dir=cache, revision=1)    # most blocks dead
    assert (cache / "primary.xml").stat().st_size < grown                     # compacted
    render_rpm(tmp_path / "d", full[900:1200], revision=1)
    for kind in ("primary", "filelists", "other"):
        assert xml(tmp_path / "c", kind) == xml(tmp_path / "d", kind)
    render_rpm(tmp_path / "e", full[:1001], revision=1)
    assert xml(tmp_path / "b", "primary") == xml(tmp_path / "e", "primary")
