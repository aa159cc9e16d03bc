"""Version order: dpkg rules for Debian-family hosts, rpm rules for RHEL-family hosts."""
from __future__ import annotations

import functools
from typing import Callable

import rpm_version
from debian.debian_support import Version as DebianVersion

# os_family values (as sent by linupdate, or os names) that mean "rpm rules".
RPM_FAMILIES = {
    "redhat", "rhel", "red hat", "centos", "fedora", "rocky", "almalinux", "alma", "oracle", "ol",
    "amazon", "amzn", "suse", "opensuse", "sles", "mageia", "openeuler",
}


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


_DIGITS = "0123456789"


def _last_number_order(a: str, b: str) -> int | None:
    """The order of two valid versions that differ only in their last run of digits, after the same
    text (2.36-9+deb12u4 -> 2.36-9+deb12u7, 1.2-0ubuntu1.4 -> 1.5: most updates): dpkg compares that
    text alike in both, then the two numbers. None for any other pair."""
    pa, pb = len(a.rstrip(_DIGITS)), len(b.rstrip(_DIGITS))
    if pa == len(a) or pb == len(b) or a[:pa] != b[:pb]:
        return None
    if not (_valid(a) and _valid(b)):
        return None
    return _sign(int(a[pa:]) - int(b[pb:]))


@functools.lru_cache(maxsize=65536)
def _valid(version: str) -> bool:
    try:
        DebianVersion(version)  # its parse, not its comparison, decides what is valid
    except ValueError:
        return False
    return True


# Cached: across a fleet, many hosts report the same upgrade (same package, same two versions).
@functools.lru_cache(maxsize=65536)
def dpkg_compare(a: str, b: str) -> int:
    quick = _last_number_order(a, b)  # most pairs, without python-debian's pure-Python compare
    if quick is not None:
        return quick
    try:
        # One comparison: debian_support.version_compare() makes two (< and then >).
        return _sign(DebianVersion(a)._compare(DebianVersion(b)))
    except ValueError:  # not a valid Debian version: still give a stable order
        return _sign((a > b) - (a < b))


@functools.lru_cache(maxsize=65536)
def rpm_compare(a: str, b: str) -> int:
    try:
        return _sign(rpm_version.evr_compare(a, b))
    except Exception:
        return _sign((a > b) - (a < b))


def is_rpm_family(os_family: str | None) -> bool:
    return bool(os_family) and os_family.strip().lower() in RPM_FAMILIES


def comparator(os_family: str | None) -> Callable[[str, str], int]:
    """The compare function for a host: -1, 0 or 1 like cmp()."""
    return rpm_compare if is_rpm_family(os_family) else dpkg_compare
