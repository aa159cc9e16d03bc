"""The mirror client's body limits: a body longer than the caller allows is refused, whether its length is
announced (Content-Length) or not (chunked), and a rate-limited run reads it chunk by chunk just the same."""
from __future__ import annotations

from dataclasses import replace

import pytest
from aiohttp import web
from yarl import URL

from app.mirrors.net import Fetcher, TooBig


@pytest.fixture
async def body_server(aiohttp_server):
    async def sized(request):
        return web.Response(body=b"x" * int(request.match_info["n"]))

    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(int(request.match_info["n"]) // 100):
            await resp.write(b"y" * 100)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/sized/{n}", sized)
    app.router.add_get("/chunked/{n}", chunked)
    server = await aiohttp_server(app, host="127.0.0.1")
    return URL(f"http://127.0.0.1:{server.port}")


@pytest.mark.parametrize("rate", [0, 10_000_000])
@pytest.mark.parametrize("kind", ["sized", "chunked"])
async def test_body_limits(settings, body_server, kind, rate):
    async with Fetcher(replace(settings, mirror_rate_limit=rate)) as fetcher:
        body = await fetcher.get_bytes(body_server / kind / "1000", 1000)
        assert body == (b"x" if kind == "sized" else b"y") * 1000
        with pytest.raises(TooBig, match="larger than the 999 byte limit"):
            await fetcher.get_bytes(body_server / kind / "1000", 999)
        # The connection is still usable after a refused body.
        assert len(await fetcher.get_bytes(body_server / kind / "200", 1000)) == 200
