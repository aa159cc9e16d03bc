"""The repository domain over real PostgreSQL and storage: upload decisions, rebuild, env point."""
import gzip
import hashlib
import os
import re

import pytest

from app.repos import Conflict, NotFound, RepoError, model
from app.repos.rebuild import point_env, rebuild_snapshot
from app.repos.upload import Outcome, add_file, summarize
from tests import pkgfactory
from tests.clients import AptRoot, dnf_install, rpm_installed


async def _receive(storage, path):
    data = path.read_bytes()

    async def chunks():
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]
    return await storage.receive(chunks(), max_size=10 << 20)


async def _upload(db, storage, snap_id, kind, path, name=None, **kw):
    return await add_file(db, storage, snap_id, kind, await _receive(storage, path), name or path.name, **kw)


def _pool_files(storage):
    return sorted(p.name for p in storage.pool.rglob("*") if p.is_file())


async def test_repo_and_snapshot_model(repo_db):
    async with repo_db.acquire() as conn:
        deb = await model.create_repo(conn, name="nginx", type="deb", dist="bookworm", section="main")
        rpm = await model.create_repo(conn, name="nginx", type="rpm", releasever="9")
        with pytest.raises(Conflict):
            await model.create_repo(conn, name="nginx", type="deb", dist="bookworm", section="main")
        for bad in ({"name": "../x", "dist": "d", "section": "s"}, {"name": "a b", "dist": "d", "section": "s"},
                    {"name": "x", "dist": "", "section": "s"}, {"name": "x", "dist": "d", "section": None}):
            with pytest.raises(RepoError):
                await model.create_repo(conn, type="deb", **bad)
            assert [r.id for r in await model.list_repos(conn)] == [rpm.id, deb.id]   # Name, Dist (NULL first)
        s1 = await model.create_snapshot(conn, deb.id)
        s2 = await model.create_snapshot(conn, deb.id)         # two on the same day are fine
        assert [s["Id"] for s in await model.list_snapshots(conn, deb.id)] == [s2.id, s1.id]
        with pytest.raises(RepoError):
            await model.create_snapshot(conn, rpm.id, from_id=s1.id)
        with pytest.raises(NotFound):
            await model.get_snapshot(conn, 999)


async def test_upload_decisions_and_nothing_stored_on_refusal(repo_db, storage, tmp_path, rpm_dir):
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="r", type="deb", dist="stable", section="main")
        snap = await model.create_snapshot(conn, repo.id)
    good = pkgfactory.make_deb(tmp_path, "hello", "1.0-1", "amd64")
    r = await _upload(repo_db, storage, snap.id, "deb", good, name="client-chosen-name.deb")
    assert (r.outcome, r.filename) == (Outcome.uploaded, "hello_1.0-1_amd64.deb")
    stored = _pool_files(storage)
    assert len(stored) == 1

    # Refusals: rpm into deb repo, text, truncated, empty: nothing new in the pool, no rows, no temp.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.deb").write_text("not a package")
    (bad / "trunc.deb").write_bytes(good.read_bytes()[:300])
    (bad / "empty.deb").write_bytes(b"")
    results = [await _upload(repo_db, storage, snap.id, "deb", rpm_dir / "depot-hello-1.0-1.noarch.rpm")]
    results += [await _upload(repo_db, storage, snap.id, "deb", bad / n) for n in ("text.deb", "trunc.deb", "empty.deb")]
    assert [x.outcome for x in results] == [Outcome.invalid, Outcome.invalid, Outcome.invalid, Outcome.empty]
    assert all(x.reason for x in results)
    assert _pool_files(storage) == stored
    assert list(storage.tmp.iterdir()) == []
    assert await repo_db.fetchval("SELECT count(*) FROM package_files") == 1

    # Same canonical name again: exists / ignored / overwrite (replaced only once validated).
    again = await _upload(repo_db, storage, snap.id, "deb", good)
    assert again.outcome == Outcome.exists
    assert (await _upload(repo_db, storage, snap.id, "deb", good, ignore_if_exists=True)).outcome == Outcome.ignored
    newer = pkgfactory.make_deb(tmp_path / "v2", "hello", "1.0-1", "amd64", payload=b"rebuilt")
    assert (await _upload(repo_db, storage, snap.id, "deb", newer, overwrite=True)).outcome == Outcome.uploaded
    rows = await repo_db.fetch("SELECT p.sha256 FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id")
    assert [r["sha256"] for r in rows] == [pkgfactory_sha(newer)]
    ok, groups = summarize(results + [again])
    assert not ok and groups["Following packages already exist and have not been uploaded"] == ["hello_1.0-1_amd64.deb"]


def pkgfactory_sha(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_same_file_in_two_snapshots_is_stored_once_and_diff_is_by_content(repo_db, storage, tmp_path):
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="r", type="deb", dist="stable", section="main")
        s1 = await model.create_snapshot(conn, repo.id)
    a = pkgfactory.make_deb(tmp_path / "a", "alpha", "1.0", "amd64")
    b = pkgfactory.make_deb(tmp_path / "b", "beta", "1.0", "all")
    await _upload(repo_db, storage, s1.id, "deb", a)
    await _upload(repo_db, storage, s1.id, "deb", b)
    async with repo_db.acquire() as conn:
        s2 = await model.create_snapshot(conn, repo.id, from_id=s1.id)
    a2 = pkgfactory.make_deb(tmp_path / "a2", "alpha", "1.0", "amd64", payload=b"same name, other bytes")
    await _upload(repo_db, storage, s2.id, "deb", a2, overwrite=True)
    assert len(_pool_files(storage)) == 3
    async with repo_db.acquire() as conn:
        d = await model.diff_snapshots(conn, s1.id, s2.id, "http://depot.test")
        assert [p["filename"] for p in d["added"]] == ["alpha_1.0_amd64.deb"]
        assert [p["filename"] for p in d["removed"]] == ["alpha_1.0_amd64.deb"]
        assert d["added"][0]["sha256"] != d["removed"][0]["sha256"]
        listing = await model.list_packages(conn, s2.id, "http://depot.test")
        assert all("/" not in p["filename"] and not p["relative-path"].startswith("/") for p in listing)
        assert listing[0]["download-url"] == f"http://depot.test/repo/deb/r/stable/main/{s2.id}/pool/main/alpha_1.0_amd64.deb"
        # Only package rows can be deleted: metadata names match nothing.
        assert await model.delete_packages(conn, s2.id, ["Release", "Packages.gz", "beta_1.0_all.deb"]) == ["beta_1.0_all.deb"]


@pytest.mark.clients
async def test_deb_rebuild_and_env_point_with_apt(repo_db, storage, signer, tmp_path, http_root):
    www, base = http_root
    (www / "repo").symlink_to(storage.public)
    key = tmp_path / "k.asc"
    key.write_text(signer.public_key())
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="app", type="deb", dist="bookworm", section="main")
        s1 = await model.create_snapshot(conn, repo.id)
    for spec in (("app-core", "1.0-1", "amd64"), ("app-core", "1.0-1", "arm64"), ("app-data", "1.0", "all")):
        await _upload(repo_db, storage, s1.id, "deb", pkgfactory.make_deb(tmp_path / "v1", *spec))
    summary = await rebuild_snapshot(repo_db, storage, signer, s1.id, sign=True)
    assert summary["packages"] == 3
    snap = await repo_db.fetchrow("SELECT * FROM snapshots WHERE id = $1", s1.id)
    assert snap["reconstruct"] is None and snap["signed"] and snap["built_at"]
    await point_env(repo_db, storage, signer, "prod", s1.id)

    apt = AptRoot(tmp_path / "apt")
    apt.set_source(f"{base}/repo/deb/app/bookworm/main/prod", "bookworm", "main", key)
    assert apt.update().returncode == 0
    assert "1.0-1" in apt.policy("app-core")

    # A newer snapshot, built, then prod pointed at it: the same client sees it on its next update.
    async with repo_db.acquire() as conn:
        s2 = await model.create_snapshot(conn, repo.id, from_id=s1.id)
    await _upload(repo_db, storage, s2.id, "deb", pkgfactory.make_deb(tmp_path / "v2", "app-core", "2.0-1", "amd64"))
    result = await point_env(repo_db, storage, signer, "prod", s2.id)       # builds s2 first
    assert result["previous"] == s1.id
    up = apt.update()
    assert up.returncode == 0, up.stderr
    assert "Candidate: 2.0-1" in apt.policy("app-core")
    # preprod was never pointed; unknown env refused.
    with pytest.raises(NotFound):
        await point_env(repo_db, storage, signer, "staging", s2.id)


@pytest.mark.clients
async def test_rpm_rebuild_signs_once_and_dnf_installs(repo_db, storage, signer, tmp_path, http_root, rpm_dir):
    www, base = http_root
    (www / "repo").symlink_to(storage.public)
    (www / "key.pub").write_text(signer.public_key())
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="tools", type="rpm", releasever="9")
        snap = await model.create_snapshot(conn, repo.id)
    for f in sorted(rpm_dir.glob("*.rpm")):
        assert (await _upload(repo_db, storage, snap.id, "rpm", f)).outcome == Outcome.uploaded
    await rebuild_snapshot(repo_db, storage, signer, snap.id, sign=True)
    signed_rows = await repo_db.fetch("SELECT id, signed_id FROM package_files WHERE signed_id IS NOT NULL ORDER BY id")
    assert len(signed_rows) == 3
    pool_before = _pool_files(storage)
    await rebuild_snapshot(repo_db, storage, signer, snap.id, sign=True)      # no re-signing
    assert await repo_db.fetch("SELECT id, signed_id FROM package_files WHERE signed_id IS NOT NULL ORDER BY id") == signed_rows
    assert _pool_files(storage) == pool_before
    out = dnf_install(tmp_path / "root", f"{base}/repo/rpm/tools/9/{snap.id}", f"{base}/key.pub", "depot-tool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert rpm_installed(tmp_path / "root") == ["depot-tool-2.1-3"]
    tree = storage.public / f"rpm/tools/9/{snap.id}"
    assert (tree / "repodata/repomd.xml.asc").exists()
    assert os.path.exists(tree / "packages/x86_64/depot-tool-2.1-3.x86_64.rpm")


async def test_rpm_signed_once_at_upload(repo_db, storage, signer, rpm_dir):
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="s", type="rpm", releasever="9")
        snap = await model.create_snapshot(conn, repo.id)
    f = rpm_dir / "depot-hello-1.0-1.noarch.rpm"
    assert (await _upload(repo_db, storage, snap.id, "rpm", f, signer=signer)).outcome == Outcome.uploaded
    row = await repo_db.fetchrow("SELECT signed_id, signed_by FROM package_files WHERE name = 'depot-hello'"
                                 " AND signed_id IS NOT NULL")
    assert row["signed_by"] == signer.fingerprint
    pool_files = _pool_files(storage)
    assert len(pool_files) == 2                                  # the upload and its signed copy
    # An identical upload elsewhere reuses the signed copy; the rebuild signs nothing more.
    async with repo_db.acquire() as conn:
        snap2 = await model.create_snapshot(conn, repo.id)
    assert (await _upload(repo_db, storage, snap2.id, "rpm", f, signer=signer)).outcome == Outcome.uploaded
    result = await rebuild_snapshot(repo_db, storage, signer, snap2.id, sign=True)
    assert _pool_files(storage) == pool_files
    assert "sign_packages" not in result["timings"]               # nothing left to sign


async def test_failed_rebuild_marks_snapshot_and_keeps_the_published_tree(repo_db, storage, signer, tmp_path):
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="f", type="deb", dist="stable", section="main")
        snap = await model.create_snapshot(conn, repo.id)
    await _upload(repo_db, storage, snap.id, "deb", pkgfactory.make_deb(tmp_path, "one", "1.0", "amd64"))
    await rebuild_snapshot(repo_db, storage, signer, snap.id, sign=True)
    release = storage.public / f"deb/f/stable/main/{snap.id}/dists/stable/Release"
    before = release.read_bytes()
    r = await _upload(repo_db, storage, snap.id, "deb", pkgfactory.make_deb(tmp_path, "two", "1.0", "amd64"))
    storage.pool_path(pkgfactory_sha(tmp_path / "two_1.0_amd64.deb")).unlink()      # a lost pool file
    assert r.outcome == Outcome.uploaded
    with pytest.raises(OSError):
        await rebuild_snapshot(repo_db, storage, signer, snap.id, sign=True)
    row = await repo_db.fetchrow("SELECT reconstruct FROM snapshots WHERE id = $1", snap.id)
    assert row["reconstruct"] == "failed"
    assert release.read_bytes() == before                                         # clients keep the old tree
    assert not [p for p in storage.trees.iterdir() if p.name.startswith(".build-")]


async def test_deb_indexes_rendered_in_sql_equal_the_python_renderer(repo_db, storage, tmp_path):
    """The rebuild renders Packages in PostgreSQL; metadata/deb.py's render_deb is the reference form."""
    from app.repos.metadata.deb import DebEntry, render_deb

    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="sql", type="deb", dist="bookworm", section="contrib")
        snap = await model.create_snapshot(conn, repo.id)
        only_all = await model.create_snapshot(conn, repo.id)
    specs = [("zeta", "1.0-1", "amd64"), ("a-b", "2:1.0~rc1-1", "arm64"), ("alpha", "1.0+b1", "all"),
             ("alpha", "1.0", "amd64"), ("mid", "0.9", "i386"), ("mid", "0.10", "i386"), ("a+b", "1", "all"),
             ("a.b", "1", "amd64"), ("a0", "1", "amd64")]
    for spec in specs:
        extra = "Depends: libc6 (>= 2.36)\nHomepage: https://exämple.org/ü\n" if spec[0] == "zeta" else ""
        ctl = pkgfactory.control_text(*spec, extra=extra)
        path = tmp_path / f"{spec[0]}_{spec[1].split(':')[-1]}_{spec[2]}.deb"
        path.write_bytes(pkgfactory.deb_bytes(*spec, control=ctl))
        assert (await _upload(repo_db, storage, snap.id, "deb", path)).outcome == Outcome.uploaded
    assert (await _upload(repo_db, storage, only_all.id, "deb", tmp_path / "alpha_1.0+b1_all.deb")).outcome \
        == Outcome.uploaded
    for s in (snap, only_all):
        await rebuild_snapshot(repo_db, storage, None, s.id, sign=False)
        rows = await repo_db.fetch(
            "SELECT sp.filename, p.* FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
            " WHERE sp.snapshot_id = $1", s.id)
        entries = [DebEntry(r["name"], r["version"], r["arch"], r["filename"], r["size"], r["md5"], r["sha1"],
                            r["sha256"], r["stanza"]) for r in rows]
        render_deb(tmp_path / f"py{s.id}", "bookworm", "contrib", entries)
        published = storage.public / s.public_rel(repo) / "dists/bookworm/contrib"
        expected = tmp_path / f"py{s.id}/dists/bookworm/contrib"
        archs = sorted(p.name for p in expected.iterdir())
        assert archs == sorted(p.name for p in published.iterdir() if p.is_dir())
        assert archs == (["binary-amd64", "binary-arm64", "binary-i386"] if s is snap else ["binary-amd64"])
        for a in archs:
            for name in ("Packages", "Packages.gz"):
                assert (published / a / name).read_bytes() == (expected / a / name).read_bytes(), (a, name)


async def test_rpm_rebuild_cache_of_an_earlier_database_with_the_same_ids_is_not_trusted(repo_db, storage, signer, rpm_dir):
    """A database restored or recreated under the same storage gives the same snapshot and package ids to
    other rows: the identities kept beside the last build must not be taken for them."""
    async with repo_db.acquire() as conn:
        repo = await model.create_repo(conn, name="r", type="rpm", releasever="9")
        snap = await model.create_snapshot(conn, repo.id)
    await _upload(repo_db, storage, snap.id, "rpm", rpm_dir / "depot-hello-1.0-1.noarch.rpm")
    await rebuild_snapshot(repo_db, storage, signer, snap.id, sign=True)
    package_id = await repo_db.fetchval("SELECT min(id) FROM package_files")
    assert (storage.cache_dir(snap.key) / "rows.json").exists()

    await repo_db.execute("TRUNCATE repos, snapshots, package_files CASCADE")
    await repo_db.execute("INSERT INTO environments (name) VALUES ('preprod'), ('prod') ON CONFLICT DO NOTHING")
    for table, next_id in (("repos", repo.id), ("snapshots", snap.id), ("package_files", package_id)):
        await repo_db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {next_id}, false)")
    async with repo_db.acquire() as conn:
        repo2 = await model.create_repo(conn, name="r", type="rpm", releasever="9")
        snap2 = await model.create_snapshot(conn, repo2.id)
    assert snap2.id == snap.id
    await _upload(repo_db, storage, snap2.id, "rpm", rpm_dir / "depot-tool-2.1-3.x86_64.rpm")
    assert await repo_db.fetchval("SELECT min(id) FROM package_files") == package_id

    await rebuild_snapshot(repo_db, storage, signer, snap2.id, sign=True)
    tree = storage.public / f"rpm/r/9/{snap2.id}"
    [rpm] = (tree / "packages").rglob("*.rpm")
    assert rpm.name == "depot-tool-2.1-3.x86_64.rpm"
    signed_sha = await repo_db.fetchval("SELECT s.sha256 FROM package_files p JOIN package_files s ON s.id = p.signed_id")
    assert hashlib.sha256(rpm.read_bytes()).hexdigest() == signed_sha       # the file, not the earlier one
    [primary] = (tree / "repodata").glob("*-primary.xml.gz")
    names = re.findall(rb"<name>([^<]+)</name>", gzip.decompress(primary.read_bytes()))
    assert names == [b"depot-tool"]
