"""versions.dpkg_compare is python-debian's order, computed with one comparison instead of two."""
from __future__ import annotations

import itertools

from debian.debian_support import version_compare

from app.hosts import versions

SAMPLES = ["1.0", "1.0-1", "1.0-1~bpo1", "1:0.9-1", "2.36-9+deb12u9", "2.36-9+deb12u10", "1.0~rc1", "1.0a",
           "1.0+b1", "0", "1.9-1", "1.10-1", "7.88.1-10+deb12u7", "1.0-1ubuntu0.22.04.1"]


def test_dpkg_compare_is_python_debians_order():
    for a, b in itertools.product(SAMPLES, repeat=2):
        assert versions.dpkg_compare(a, b) == version_compare(a, b), (a, b)


def test_invalid_versions_still_get_a_stable_order():
    assert versions.dpkg_compare("not a version!", "1.0") == -versions.dpkg_compare("1.0", "not a version!")
