"""Fixtures for the repository domain tests: real gpg, real package files, a tiny HTTP server."""
from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from app.repos.signing import Signer
from app.repos.storage import Storage
from tests import pkgfactory


@pytest.fixture(scope="session")
def signer():
    # gpg-agent's socket lives in the home folder: keep the path short (108-byte socket limit).
    home = Path(tempfile.mkdtemp(prefix="dg-"))
    s = Signer(home / "gnupg", key_length=2048)
    s.fingerprint  # generate once per session (~0.5 s for RSA 2048)
    yield s
    s.close()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(tmp_path / "storage")


@pytest.fixture(scope="session")
def rpm_dir(tmp_path_factory) -> Path:
    """A few real rpms, built once per session with one rpmbuild run per arch."""
    d = tmp_path_factory.mktemp("rpms")
    pkgfactory.make_rpms(d, [("depot-hello", "1.0", "1", "noarch"), ("depot-tool", "2.1", "3", "x86_64"),
                             ("depot-extra", "1.0", "1", "noarch")])
    return d


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve a folder on 127.0.0.1 (random port); yields (root, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
