"""versions.dpkg_compare is python-debian's order, computed with one comparison instead of two, or
without python-debian for two versions that differ only in their last number."""
from __future__ import annotations

import itertools
import random

from debian.debian_support import version_compare

from app.hosts import versions

SAMPLES = ["1.0", "1.0-1", "1.0-1~bpo1", "1:0.9-1", "2.36-9+deb12u9", "2.36-9+deb12u10", "1.0~rc1", "1.0a",
           "1.0+b1", "0", "1.9-1", "1.10-1", "7.88.1-10+deb12u7", "1.0-1ubuntu0.22.04.1"]


def test_dpkg_compare_is_python_debians_order():
    for a, b in itertools.product(SAMPLES, repeat=2):
        assert versions.dpkg_compare(a, b) == version_compare(a, b), (a, b)


def test_invalid_versions_still_get_a_stable_order():
    assert versions.dpkg_compare("not a version!", "1.0") == -versions.dpkg_compare("1.0", "not a version!")


def test_versions_differing_in_their_last_number_keep_python_debians_order():
    rng = random.Random(5)
    parts = ["1", "0", "2.36", "-", "+deb12u", "~rc", "ubuntu", ".", ":", "+b", "a", "~", "-0ubuntu", "007", "10"]
    quick = 0
    for _ in range(20000):
        head = "".join(rng.choice(parts) for _ in range(rng.randint(0, 5)))
        a, b = head + str(rng.randint(0, 30)).zfill(rng.randint(1, 3)), head + str(rng.randint(0, 30))
        quick += versions._last_number_order(a, b) is not None
        try:
            expected = version_compare(a, b)
        except ValueError:  # invalid: the quick path must not have answered
            assert versions._last_number_order(a, b) is None, (a, b)
            continue
        versions.dpkg_compare.cache_clear()
        assert versions.dpkg_compare(a, b) == expected, (a, b)
    assert quick > 5000
    assert versions._last_number_order("2.36-9+deb12u4", "2.36-9+deb12u10") == -1
    assert versions._last_number_order("1.0a", "1.0a5") is None  # no number on one side
    assert versions._last_number_order("1.9", "1.10") == -1
    assert versions._last_number_order("1.9-1", "1.10-1") is None  # differs before the last number
