"""Malformed multipart uploads: raw bodies, each next to a valid package part, answered 400 with a JSON
reason, and nothing of them stored (no package rows, no snapshot change, no pool or temp file)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from tests.helpers import bearer
from tests.hostile.test_packages import _snapshot, _stored
from tests.pkgfactory import deb_bytes

B = "depot-boundary"
GOOD = deb_bytes("good-pkg")
MALFORMED = "Malformed multipart body: "


def _part(name: str, data: bytes, filename: str | None = None, boundary: str = B, headers: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (f"--{boundary}\r\n{disposition}\r\n".encode() + headers + b"\r\n" + data + b"\r\n")


def _good(boundary: str = B) -> bytes:
    return _part("file", GOOD, "good-pkg_1.0-1_amd64.deb", boundary)


def _close(boundary: str = B) -> bytes:
    return f"--{boundary}--\r\n".encode()


FORM = f"multipart/form-data; boundary={B}"
# (case, Content-Type, body, what the reason says): each malformed, most after a valid package part.
CASES = [
    ("part without headers", FORM, _good() + f"--{B}\r\n\r\nabc\r\n".encode() + _close(),
     "a part has no Content-Disposition naming it"),
    ("part whose headers never end", FORM, _good() + f"--{B}\r\nabc\r\n".encode() + _close(),
     "a part's headers are malformed"),
    ("header line without a colon", FORM, _good() + f"--{B}\r\ngarbage\r\n\r\nabc\r\n".encode() + _close(),
     "a part's headers are malformed"),
    ("header line too long", FORM,
     _good() + f"--{B}\r\nX-Pad: {'a' * 20000}\r\n".encode() + _part("file", GOOD, "b.deb")[len(B) + 4:] + _close(),
     "a part's header line is too long"),
    ("truncated part", FORM, _good() + _part("file", GOOD[: len(GOOD) // 2], "cut.deb")[:-2],
     "the body ends before its closing boundary"),
    ("truncated part headers", FORM, _good() + f'--{B}\r\nContent-Disposition: form-da'.encode(),
     "the body ends before its closing boundary"),
    ("missing closing boundary", FORM, _good(), "the body ends before its closing boundary"),
    ("closing boundary without its dashes", FORM, _good() + f"--{B}\r\n".encode(),
     "the body ends before its closing boundary"),
    ("boundary line followed by junk", FORM, _good() + f"--{B}junk\r\n".encode() + _close(),
     "a boundary line is malformed"),
    ("LF line endings", FORM, _good().replace(b"\r\n", b"\n") + _close().replace(b"\r\n", b"\n"),
     "the body ends before its closing boundary"),
    ("empty boundary", "multipart/form-data; boundary=", _good("") + _close(""), "the boundary is empty"),
    ("empty quoted boundary", 'multipart/form-data; boundary=""', _good("") + _close(""), "the boundary is empty"),
    ("no boundary", "multipart/form-data", _good() + _close(), "the Content-Type names no boundary"),
    ("boundary too long", "multipart/form-data; boundary=" + "b" * 71, _good("b" * 71) + _close("b" * 71),
     "the boundary is longer than 70 characters"),
    ("another boundary in the body", FORM, _good("other") + _close("other"),
     "it does not start with the boundary its Content-Type names"),
    ("a JSON body", FORM, b'{"file": "good-pkg_1.0-1_amd64.deb"}',
     "it does not start with the boundary its Content-Type names"),
    ("an empty body", FORM, b"", "it does not start with the boundary its Content-Type names"),
    ("nested multipart", FORM,
     _good() + f"--{B}\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n".encode()
     + _part("file", GOOD, "inner.deb", "inner") + _close("inner") + _close(),
     "a part is itself multipart (nested multipart bodies are not supported)"),
    ("unknown transfer encoding", FORM,
     _part("overwrite", b"true", headers=b"Content-Transfer-Encoding: bogus\r\n") + _good() + _close(),
     "a part's Content-Encoding or Content-Transfer-Encoding is unknown"),
    ("invalid base64", FORM,
     _part("overwrite", b"!!!not base64", headers=b"Content-Transfer-Encoding: base64\r\n") + _good() + _close(),
     "a part could not be decoded"),
]


async def _raw(client, key, snap: int, content_type: str, body: bytes):
    resp = await client.post(f"/api/v2/snapshot/{snap}/upload", data=body,
                             headers={"Content-Type": content_type, **bearer(key)})
    return resp.status, resp.content_type, await resp.json(content_type=None)


async def _state(pool, settings, snap: int) -> tuple:
    rows = await pool.fetchval("SELECT count(*) FROM package_files")
    members = await pool.fetchval("SELECT count(*) FROM snapshot_packages")
    reconstruct = await pool.fetchval("SELECT reconstruct FROM snapshots WHERE id = $1", snap)
    return rows, members, reconstruct, _stored(settings)


async def test_malformed_multipart_bodies_are_refused_with_a_reason_and_store_nothing(
    client, pool, settings, admin_key
):
    snap = await _snapshot(client, admin_key)
    before = await _state(pool, settings, snap)
    assert before[:2] == (0, 0)
    seen = {}
    for case, content_type, body, reason in CASES:
        status, ctype, answer = await _raw(client, admin_key, snap, content_type, body)
        assert (status, ctype) == (400, "application/json"), (case, status, answer)
        assert answer["message_error"] == [MALFORMED + reason], (case, answer)
        assert await _state(pool, settings, snap) == before, case
        seen[case] = reason
    # The same valid part, well framed, is stored: what refused the bodies above was their framing.
    status, _, answer = await _raw(client, admin_key, snap, FORM, _good() + _close())
    assert status == 200, answer
    assert answer["results"] == {"Following packages have been uploaded successfully": ["good-pkg_1.0-1_amd64.deb"]}
    print(f"\n{len(seen)} malformed multipart bodies refused (400), nothing stored")


async def test_a_well_framed_body_without_files_keeps_the_reference_answer(client, pool, admin_key):
    snap = await _snapshot(client, admin_key)
    for body in (_close(), _part("overwrite", b"true") + _close()):
        status, _, answer = await _raw(client, admin_key, snap, FORM, body)
        assert status == 400 and answer["message_error"] == ["Invalid request"], answer
    status, _, answer = await _raw(client, admin_key, snap, "text/plain", _good() + _close())
    assert status == 400 and answer["message_error"] == ["Invalid request"], answer


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
async def test_a_body_cut_short_by_the_client_stores_nothing(client, pool, settings, admin_key, cut, caplog):
    """A socket that sends part of its declared Content-Length and closes: the upload ends, nothing stored."""
    caplog.set_level(logging.INFO, logger="depot.access")
    snap = await _snapshot(client, admin_key)
    before = await _state(pool, settings, snap)
    body = _good() + _part("file", deb_bytes("second-pkg"), "second.deb") + _close()
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"POST /api/v2/snapshot/{snap}/upload HTTP/1.1\r\nHost: depot\r\nContent-Type: {FORM}\r\n"
                 f"Authorization: Bearer {admin_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body[: int(len(body) * cut)])
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    def upload_ended() -> bool:  # the access line is written once the handler has returned or unwound
        return any("snapshot_upload" in r.getMessage() for r in caplog.records)

    for _ in range(100):
        if upload_ended():
            break
        await asyncio.sleep(0.05)
    assert upload_ended()
    assert await _state(pool, settings, snap) == before
