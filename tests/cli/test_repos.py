"""`depot repo|snapshot|env|pool|upload|profile repos` against a real server: create, upload with progress,
rebuild, point."""
import pytest

from tests import pkgfactory

pytestmark = pytest.mark.usefixtures("repo_db")


def _as(depot, url, key):
    """`depot ...` with --url and --key given."""
    return lambda *argv: depot(*argv, "--url", url, "--key", key)


async def test_cli_repository_workflow(depot, client, make_key, pool, run_worker, tmp_path):
    run = _as(depot, str(client.make_url("")).rstrip("/"), await make_key("admin"))
    code, out, err = await run("repo", "create", "cli-app", "--type", "deb", "--dist", "bookworm", "--section", "main")
    assert code == 0 and out.startswith("repository "), err
    repo_id = int(out.split()[1])
    code, out, _ = await run("repo", "list")
    assert "cli-app" in out and "bookworm/main" in out
    code, out, _ = await run("snapshot", "create", "--repo", str(repo_id))
    snap = int(out.split()[1])
    files = [pkgfactory.make_deb(tmp_path, f"cli-pkg{i}", "1.0", "amd64") for i in range(3)]
    (tmp_path / "junk.deb").write_text("junk")
    code, out, err = await run("upload", "--snapshot", str(snap), *map(str, files))
    assert code == 0, out + err
    assert out.count(": uploaded") == 3
    assert "B/s" in err or "%" in err                           # the tqdm progress bar (on stderr)
    code, out, err = await run("upload", "--snapshot", str(snap), "--quiet", str(files[0]), str(tmp_path / "junk.deb"))
    assert code == 1                                             # any refused file: non-zero exit
    assert "junk.deb: invalid" in out and "cli-pkg0_1.0_amd64.deb: exists" in out
    code, out, _ = await run("snapshot", "rebuild", str(snap))
    assert code == 0 and "task" in out
    await run_worker()
    code, out, _ = await run("env", "create", "qa")
    assert code == 0
    code, out, _ = await run("env", "point", "qa", "--snapshot", str(snap))
    assert code == 0
    await run_worker()
    r = await client.get("/repo/deb/cli-app/bookworm/main/qa/dists/bookworm/InRelease")
    assert r.status == 200 and "BEGIN PGP SIGNED MESSAGE" in await r.text()
    await pool.execute("INSERT INTO profiles (name) VALUES ('web')")
    code, out, err = await run("profile", "repos", "web", str(repo_id))
    assert code == 0, err
    code, out, err = await run("repo", "delete", "999")
    assert code == 1 and ("404" in err or "does not exist" in err)
    code, out, _ = await run("repo", "delete", str(repo_id))
    assert code == 0
    assert (await client.get("/repo/deb/cli-app/bookworm/main/qa/dists/bookworm/InRelease")).status == 404


async def test_cli_pool_gc(depot, client, make_key, pool, run_worker):
    url = str(client.make_url("")).rstrip("/")
    run = _as(depot, url, await make_key("operator"))
    code, out, err = await run("pool", "gc", "--dry-run")
    assert code == 0 and "(dry run) queued as task" in out, err
    code, out, err = await run("pool", "gc")
    assert code == 0 and "queued as task" in out, err
    await run_worker()
    rows = await pool.fetch("SELECT target, status, result FROM tasks WHERE kind = 'pool_gc' ORDER BY id")
    assert [(r["target"], r["status"], r["result"]["dry_run"]) for r in rows] == [
        ("pool:dry-run", "done", True), ("pool", "done", False)]
    code, out, err = await _as(depot, url, await make_key("viewer"))("pool", "gc")
    assert code == 1 and ("403" in err or "not allowed" in err)


async def test_repository_commands_are_wired_into_depot(depot, make_key):
    key = await make_key("admin")
    code, out, err = await depot("repo", "create", "tools", "--type", "deb", "--dist", "bookworm", "--section", "main",
                                 "--key", key)
    assert code == 0 and "created" in out, err
    code, out, err = await depot("repo", "list", "--key", key)
    assert code == 0 and "tools" in out and "bookworm/main" in out, err
