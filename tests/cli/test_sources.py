"""`depot source import|add|list|key add` against a real server."""
from pathlib import Path

import pytest

from tests.mirrors.conftest import make_mirror, site  # noqa: F401 (fixtures)
from tests.upstream import GpgKey

TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "source-templates"


@pytest.fixture(scope="module")
def cli_key():
    key = GpgKey("cli")
    yield key
    key.close()


async def test_cli_sources(depot, client, make_key, pool, tmp_path, cli_key):
    url, key = str(client.make_url("")).rstrip("/"), await make_key("operator")

    def run(*argv):
        return depot(*argv, "--url", url, "--key", key)

    code, out, err = await run("source", "import", str(TEMPLATES / "deb" / "nginx.yml"))
    assert code == 0, err
    assert "Source repositories imported successfully: nginx" in out and "not fetched" in out
    code, out, err = await run("source", "import", "--type", "rpm", str(TEMPLATES / "rpm" / "nginx.yml"))
    assert code == 0, err
    keyfile = tmp_path / "k.asc"
    keyfile.write_text(cli_key.armored())
    code, out, err = await run("source", "add", "local", "--type", "deb", "--source-url", "http://127.0.0.1:9/debian",
                               "--dist", "stable", "--component", "main", "--gpg-key", str(keyfile))
    assert code == 0 and "source local (deb) created" in out, err
    code, out, _ = await run("source", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "NAME", "URL", "DISTRIBUTIONS", "/", "RELEASES"]
    assert [ln.split()[1:3] for ln in lines[1:]] == [["deb", "local"], ["deb", "nginx"], ["rpm", "nginx"]]
    code, out, _ = await run("source", "list", "--type", "rpm")
    assert "nginx" in out and "local" not in out
    code, out, err = await run("source", "key", "add", "deb", "nginx", str(keyfile))
    assert code == 0 and f"key {cli_key.fingerprint} added" in out, err
    assert await pool.fetchval("SELECT count(*) FROM source_keys") == 2        # one per source
    code, _, err = await run("source", "add", "bad", "--type", "deb", "--source-url", "http://x.test")
    assert code == 1 and "--dist and --component" in err
    code, _, err = await run("source", "key", "add", "deb", "nope", str(keyfile))
    assert code == 1 and "404" in err
    viewer = await make_key("viewer")
    code, _, err = await depot("source", "list", "--url", url, "--key", viewer)
    assert code == 1 and "You are not allowed to edit source repositories" in err


async def test_cli_mirror_watch(depot, client, admin_key, site, make_mirror, live_worker, pool):  # noqa: F811
    repo_id = await make_mirror(site)
    url = str(client.make_url("")).rstrip("/")
    code, out, err = await depot("mirror", str(repo_id), "--env", "prod", "--watch", "--interval", "0.1",
                                 "--url", url, "--key", admin_key)
    assert code == 0, out + err
    assert "task 1 mirror done" in out
    assert await pool.fetchval("SELECT count(*) FROM environment_snapshots") == 1
    # `depot source list` gives each mirror's last run under the sources.
    code, out, err = await depot("source", "list", "--url", url, "--key", admin_key)
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("") + 1
    assert lines[at].split()[:6] == ["SOURCE", "REPO", "MIRROR", "LAST", "TASK", "STATUS"]
    assert lines[at + 1].split()[:5] == ["up1", str(repo_id), "mirror1", "1", "done"]
    assert lines[at + 1].endswith("4 files downloaded, snapshot #1")
    code, out, err = await depot("mirror", "999", "--url", url, "--key", admin_key)
    assert code == 1 and "Repository does not exist" in err
