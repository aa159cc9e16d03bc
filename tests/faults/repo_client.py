"""A small HTTP client for the repository endpoints of a `depot serve` subprocess (fault tests)."""
from __future__ import annotations

import asyncio
import hashlib
import re
import time

import aiohttp

from tests import pkgfactory
from tests.helpers import bearer

DIST, SECTION = "bookworm", "main"


class Repos:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str):
        self.s, self.base, self.h = session, base, bearer(key)

    async def _json(self, method, path, **kw):
        async with self.s.request(method, self.base + path, headers=self.h, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

    async def deb_snapshot(self, name: str = "app") -> tuple[int, int]:
        status, body = await self._json("POST", "/api/v2/repo/", json={"name": name, "type": "deb", "dist": DIST,
                                                                       "section": SECTION})
        assert status == 201, body
        repo = body["results"]["Id"]
        status, body = await self._json("POST", f"/api/v2/repo/{repo}/snapshot", json={})
        assert status == 201, body
        return repo, body["results"]["Id"]

    async def upload(self, snap: int, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
        form = aiohttp.FormData()
        for name, data in files:
            form.add_field("file", data, filename=name, content_type="application/octet-stream")
        return await self._json("POST", f"/api/v2/snapshot/{snap}/upload", data=form)

    async def rebuild(self, snap: int, sign: bool = False) -> int:
        status, body = await self._json("PUT", f"/api/v2/snapshot/{snap}/rebuild", json={"gpgSign": str(sign).lower()})
        assert status == 202, body
        return body["task-id"]

    def tree_url(self, name: str, snap: int) -> str:
        return f"{self.base}/repo/deb/{name}/{DIST}/{SECTION}/{snap}"

    async def fetch(self, url: str) -> tuple[int, bytes]:
        async with self.s.get(url) as resp:
            return resp.status, await resp.read()


def debs(names: list[str], version: str = "1.0-1") -> list[tuple[str, bytes]]:
    return [(f"{n}_{version}_amd64.deb", pkgfactory.deb_bytes(n, version, "amd64")) for n in names]


def packages_in(index: bytes) -> set[tuple[str, str]]:
    """(Package, Version) of every stanza of a Packages file; each stanza must be complete."""
    out = set()
    for stanza in index.decode().strip().split("\n\n"):
        if not stanza.strip():
            continue
        fields = dict(re.findall(r"^([A-Za-z0-9-]+): (.*)$", stanza, re.M))
        assert {"Package", "Version", "Filename", "SHA256", "Size"} <= fields.keys(), stanza
        out.add((fields["Package"], fields["Version"]))
    return out


def release_lists(release: bytes, index: bytes, rel_path: str) -> bool:
    """Whether the Release file lists this exact Packages content under rel_path."""
    digest = hashlib.sha256(index).hexdigest()
    return re.search(rf"^ {digest}\s+{len(index)}\s+{re.escape(rel_path)}$", release.decode(), re.M) is not None


async def wait_task(pool, task_id: int, statuses=("done",), timeout: float = 60, interval: float = 0.05) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id)
        if status in statuses:
            return status
        assert time.monotonic() < deadline, f"task {task_id} is {status}"
        await asyncio.sleep(interval)
