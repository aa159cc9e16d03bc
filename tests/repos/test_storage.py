"""Content-addressed pool and atomic publishing on a real filesystem."""
import hashlib
import os

import pytest

from app.repos.storage import Storage, TooLarge, UnsafePath, safe_join


async def _chunks(data: bytes, size: int = 7000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_receive_hashes_while_streaming_and_adopts_once(storage: Storage):
    data = os.urandom(3 * 1024 * 1024 + 17)
    inc = await storage.receive(_chunks(data), max_size=10 << 20)
    assert inc.digests.size == len(data)
    assert inc.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert inc.digests.md5 == hashlib.md5(data).hexdigest()
    assert inc.digests.sha1 == hashlib.sha1(data).hexdigest()
    target = storage.adopt(inc)
    assert target == storage.pool / inc.digests.sha256[:2] / inc.digests.sha256
    assert target.read_bytes() == data
    # The same bytes again: stored once, temp file gone.
    inc2 = await storage.receive(_chunks(data), max_size=10 << 20)
    assert storage.adopt(inc2) == target
    assert not inc2.path.exists()
    assert list(storage.tmp.iterdir()) == []


async def test_too_large_removes_the_temp_file(storage: Storage):
    with pytest.raises(TooLarge):
        await storage.receive(_chunks(b"x" * 5000, 100), max_size=4096)
    assert list(storage.tmp.iterdir()) == []


def test_publish_swaps_atomically_and_removes_old_tree(storage: Storage):
    seen = []

    def build(content):
        def _b(tree):
            (tree / "index").write_text(content)
            seen.append(tree)
        return _b

    first = storage.publish("deb/r/d/c/1", "snap-1", build("one"))
    link = storage.public / "deb/r/d/c/1"
    assert link.is_symlink() and (link / "index").read_text() == "one"
    second = storage.publish("deb/r/d/c/1", "snap-1", build("two"))
    assert (link / "index").read_text() == "two"
    assert not first.exists() and second.exists()
    assert not os.path.isabs(os.readlink(link))          # relative link: the tree can move
    # A failing build leaves the published tree alone and no build folder behind.
    with pytest.raises(RuntimeError):
        storage.publish("deb/r/d/c/1", "snap-1", lambda t: (_ for _ in ()).throw(RuntimeError("boom")))
    assert (link / "index").read_text() == "two"
    assert [p.name for p in storage.trees.iterdir()] == [second.name]


def test_environment_links_follow_the_snapshot(storage: Storage):
    storage.publish("deb/r/d/c/1", "snap-1", lambda t: (t / "f").write_text("s1"))
    storage.publish("deb/r/d/c/2", "snap-2", lambda t: (t / "f").write_text("s2"))
    storage.point("deb/r/d/c/prod", "deb/r/d/c/1")
    assert (storage.public / "deb/r/d/c/prod/f").read_text() == "s1"
    storage.point("deb/r/d/c/prod", "deb/r/d/c/2")
    assert (storage.public / "deb/r/d/c/prod/f").read_text() == "s2"
    # Rebuilding snapshot 2 is visible through prod without touching the env link.
    storage.publish("deb/r/d/c/2", "snap-2", lambda t: (t / "f").write_text("s2b"))
    assert storage.resolve_public("deb/r/d/c/prod/f").read_text() == "s2b"


def test_pool_files_are_hard_linked_into_trees(storage: Storage, tmp_path):
    src = tmp_path / "pkg"
    src.write_bytes(b"package bytes")
    pooled = storage.adopt(storage.receive_file(src))
    tree = storage.publish("rpm/r/9/5", "snap-5",
                           lambda t: storage.link_into(t, "packages/noarch/a.rpm", pooled.name))
    assert os.stat(tree / "packages/noarch/a.rpm").st_ino == os.stat(pooled).st_ino


@pytest.mark.parametrize("bad", ["../etc", "/etc/passwd", "a/../../b", "a//b", "a/./b", "nul\x00"])
def test_client_paths_are_checked(storage: Storage, bad):
    with pytest.raises(UnsafePath):
        safe_join(storage.public, bad)
    assert storage.resolve_public(bad) is None


def test_resolve_public_refuses_links_leaving_storage(storage: Storage):
    (storage.public / "evil").symlink_to("/etc")
    assert storage.resolve_public("evil/passwd") is None
    with pytest.raises(UnsafePath):
        storage.pool_path("../../etc/passwd")


def test_a_name_longer_than_the_filesystem_allows_is_not_found(storage: Storage):
    # Path.is_file() raises ENAMETOOLONG instead of answering False (found by tests/hostile/test_fuzz.py: a 503).
    assert storage.resolve_public("x" * 300) is None
    assert storage.resolve_public("deb/" + "y" * 4000 + "/Release") is None
