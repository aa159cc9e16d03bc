"""A synthetic linupdate agent: the frames of its reposerver websocket, sent as the real one sends them
(Python's json.dumps with its default separators, request ids as strings), over aiohttp's client.

`Agent.hello()` is the opening sequence; `serve()` answers requests with canned responses the way
the agent does (running first except for general infos, then the final response), one at a time.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

# A final update summary in the agent's shape.
UPDATE_SUMMARY = {"update": {
    "status": "done",
    "options": {"dry_run": True},
    "success": {"count": 1, "packages": {"nginx": {"version": "1.22.1-9+deb12u2",
                                                   "log": "\n▪ Updating nginx (1.22.1-9 → 1.22.1-9+deb12u2):\n"}}},
    "failed": {"count": 0, "packages": {}},
}}


class Agent:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, auth_id: str = "", token: str = ""):
        self.ws = ws
        self.auth_id = auth_id
        self.token = token
        self.requests: list[dict] = []   # every request received, in order
        self.acks: list[dict] = []       # every acknowledgement received

    @classmethod
    async def connect(cls, session_or_client, url: str = "/ws", auth_id: str = "", token: str = "", **kwargs):
        # autoping off: a ping from the server would show up as a frame (the tests check there is none).
        ws = await session_or_client.ws_connect(url, autoping=False, **kwargs)
        return cls(ws, auth_id, token)

    async def send(self, message: Any) -> None:
        await self.ws.send_str(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> dict | None:
        """The next JSON frame; None once the server closed the socket."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR):
            return None
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        assert isinstance(frame, dict), frame
        return frame

    async def hello(self) -> dict:
        """connection-type → authenticate → credentials → the server's answer (returned)."""
        await self.send({"connection-type": "host"})
        assert await self.receive() == {"request": "authenticate"}
        await self.send({"response-to-request": {"request": "authenticate", "auth-id": self.auth_id,
                                                 "token": self.token}})
        return await self.receive()

    async def respond(self, request_id, status: str, summary: Any = "", log: str = "", error: str | None = None,
                      final_form: bool = True) -> None:
        """A response as the agent sends it: final ones always carry summary and log (maybe "")."""
        body: dict[str, Any] = {"request-id": str(request_id), "status": status}
        if final_form and status in ("completed", "failed"):
            body["summary"] = summary
            body["log"] = log
            if error is not None:
                body["error"] = error
        elif log:
            body["log"] = log
        await self.send({"response-to-request": body})

    async def next_request(self, timeout: float = 5.0) -> dict:
        """The next request, keeping the acknowledgements that come before it."""
        while True:
            frame = await self.receive(timeout)
            assert frame is not None, "socket closed"
            if "request-id" in frame and "request" in frame:
                self.requests.append(frame)
                return frame
            assert frame.get("info") == "Request response received", frame
            self.acks.append(frame)

    async def ack(self, timeout: float = 5.0) -> dict:
        frame = await self.receive(timeout)
        assert frame is not None and frame.get("info") == "Request response received", frame
        self.acks.append(frame)
        return frame

    async def run_one(self, request: dict, hold: float = 0.0) -> None:
        """Answer one request with canned responses, as the agent would run it."""
        rid, name = request["request-id"], request["request"]
        if name != "request-general-infos":
            await self.respond(rid, "running")
        if hold:
            await asyncio.sleep(hold)
        if name in ("request-all-packages-update", "request-packages-update"):
            await self.respond(rid, "completed", summary=UPDATE_SUMMARY, log="(dry run) 1 packages would be updated\n")
        elif name in ("request-general-infos", "request-packages-infos", "update-profile"):
            await self.respond(rid, "completed", log=f"{name} done\n")
        else:
            await self.respond(rid, "failed", log="", error=f"unknown request sent by reposerver: {name}")

    async def serve(self, hold: float = 0.0) -> None:
        """Run requests until the socket closes (acks are read as they come)."""
        while True:
            try:
                request = await self.next_request(timeout=3600)
            except AssertionError:
                return
            await self.run_one(request, hold)

    async def close(self) -> None:
        await self.ws.close()
