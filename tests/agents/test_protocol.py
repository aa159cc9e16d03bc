"""The frames, without a server: what Depot sends (B5: never a JSON boolean, never a version) and how it
reads what agents send."""
from __future__ import annotations

import json

from app.agents import protocol


def test_update_params_are_strings_and_packages_names_only():
    """B5: a JSON true would make the agent run a real update; a target version makes it skip the package."""
    frame = protocol.request_frame(12, "request-packages-update", {
        "packages": ["nginx", "openssl"],
        "update-params": {"dry-run": True, "ignore-exclusions": False, "keep-config-files": True, "full-upgrade": False},
    })
    assert frame == {"request-id": 12, "request": "request-packages-update", "data": {
        "update-params": {"dry-run": "true", "ignore-exclusions": "false", "full-upgrade": "false",
                          "keep-config-files": "true"},
        "packages": [{"name": "nginx"}, {"name": "openssl"}],
    }}
    text = protocol.encode(frame)
    assert "true," not in text.replace('"true",', "") and ": true" not in text and "target_version" not in text
    for value in json.loads(text)["data"]["update-params"].values():
        assert value in ("true", "false")


def test_update_params_default_to_the_agents_own_defaults():
    frame = protocol.request_frame(3, "request-all-packages-update", {})
    assert frame["data"] == {"update-params": {"dry-run": "false", "ignore-exclusions": "false",
                                               "full-upgrade": "false", "keep-config-files": "true"}}
    # Only a JSON true is true: "1", 1 and "yes" never make an update real or skip a safety.
    frame = protocol.request_frame(3, "request-all-packages-update",
                                   {"update-params": {"dry-run": 1, "keep-config-files": "yes"}})
    assert frame["data"]["update-params"]["dry-run"] == "false"
    assert frame["data"]["update-params"]["keep-config-files"] == "false"


def test_requests_without_data():
    for name in ("request-general-infos", "request-packages-infos", "update-profile"):
        assert protocol.request_frame(7, name, {"update-params": {"dry-run": True}}) == {
            "request-id": 7, "request": name}


def test_fixed_texts_and_acks_are_compact_json_objects_with_string_values():
    assert protocol.encode(protocol.AUTHENTICATE) == '{"request":"authenticate"}'
    assert protocol.encode(protocol.AUTH_OK) == '{"info":"Authentication successful"}'
    assert protocol.encode(protocol.AUTH_ERROR) == '{"error":"error while processing response to request \\"authenticate\\""}'
    assert protocol.encode(protocol.ack_frame("42", ["status", "log"])) == (
        '{"info":"Request response received","request-id":"42","data":["status","log"]}')


def test_php_empty():
    for value in (None, False, 0, 0.0, "", "0", [], {}):
        assert protocol.php_empty(value), value
    for value in (True, 1, "a", "00", " ", [0], {"a": 0}):
        assert not protocol.php_empty(value), value


def test_response_fields():
    r = protocol.response({"response-to-request": {"request-id": "107", "status": "completed", "summary": "",
                                                   "log": "done\n"}})
    assert (r.echo, r.request_id, r.status, r.summary, r.log, r.error) == ("107", 107, "completed", None, "done\n", None)
    assert r.ack_fields == ["status", "log"]
    r = protocol.response({"response-to-request": {"request-id": "108", "status": "unknown", "log": "part\x00ial"}})
    assert r.status == "unknown" and r.log == "partial"
    r = protocol.response({"response-to-request": {"request-id": "abc", "status": "weird", "summary": {"k\x00": "v\x00"}}})
    assert r.request_id is None and r.status is None and r.summary == {"k": "v"}
    for rid in ("0", "-1", "1.5", " 1", "1" * 19):
        assert protocol.response({"response-to-request": {"request-id": rid}}).request_id is None, rid
    for rid in (None, True, 1.5, [1], {"a": 1}):
        assert protocol.response({"response-to-request": {"request-id": rid}}) is None, rid
    assert protocol.response({"response-to-request": {"status": "completed"}}) is None
    assert protocol.response({"response-to-request": "x"}) is None


def test_credentials_and_masking():
    frame = {"response-to-request": {"request": "authenticate", "auth-id": "id_1", "token": "secret"}}
    assert protocol.credentials(frame) == ("id_1", "secret")
    assert protocol.credentials({"response-to-request": {"request": "authenticate", "auth-id": 1}}) == ("", "")
    assert protocol.credentials({"response-to-request": {"request-id": "1"}}) is None
    assert "secret" not in protocol.masked(json.dumps(frame))
