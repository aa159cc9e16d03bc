"""Throwaway upstream keys, made once per session."""
from __future__ import annotations

import pytest

from tests.upstream import GpgKey


@pytest.fixture(scope="session")
def upstream_key():
    key = GpgKey("upstream")
    yield key
    key.close()


@pytest.fixture(scope="session")
def other_key():
    key = GpgKey("other")
    yield key
    key.close()
