"""The fleet-scale benchmark's fleet (bench/fleet_scale.Fleet): deterministic, shared as real fleets
are, in the agent's exact form, and round 1 changes exactly what it says."""
from __future__ import annotations

import json

import pytest

from app.hosts import versions
from app.hosts.reports import AVAILABLE, INSTALLED, fast_count
from bench.fleet_scale import IMAGES, Fleet


@pytest.fixture(scope="module")
def fleet():
    return Fleet(hosts=40, packages=500, seed=5)


def test_same_seed_same_bodies_other_seed_others(fleet):
    again = Fleet(hosts=40, packages=500, seed=5)
    assert [fleet.installed(h, r) for h in range(40) for r in (0, 1)] == \
           [again.installed(h, r) for h in range(40) for r in (0, 1)]
    assert [fleet.available(h) for h in range(40)] == [again.available(h) for h in range(40)]
    assert Fleet(hosts=40, packages=500, seed=6).installed(0) != fleet.installed(0)


def test_bodies_are_the_agents_exact_form_sorted_by_name(fleet):
    for h in range(40):
        for rnd in (0, 1):
            body = fleet.installed(h, rnd)
            names = [n for n, _ in fleet.packages(h, rnd)]
            assert fast_count(INSTALLED, body, 10_000) == len(names)
            assert names == sorted(names) and len(set(names)) == len(names)
        assert fast_count(AVAILABLE, fleet.available(h), 10_000) is not None
        status = json.loads(fleet.status(h))
        assert status["hostname"] == fleet.hostname(h) and status["os_family"] == fleet.image_of(h).os_family


def test_hosts_share_their_images_versions(fleet):
    for h in range(40):
        img = fleet.images[[i.name for i in IMAGES].index(fleet.image_of(h).name)]
        base = dict(zip(img.names, (v[0] for v in img.versions)))
        mine = fleet.packages(h)
        at_base = sum(base.get(n) == v for n, v in mine)
        assert at_base >= 0.97 * len(base)
        assert 1 <= sum(n not in base for n, _ in mine) <= 5  # the site-local packages


def test_round_one_upgrades_three_adds_one_removes_one(fleet):
    for h in range(40):
        compare = versions.comparator(fleet.image_of(h).os_family)
        before, after = dict(fleet.packages(h, 0)), dict(fleet.packages(h, 1))
        changed = [n for n in before.keys() & after.keys() if before[n] != after[n]]
        assert len(changed) == 3 and all(compare(after[n], before[n]) > 0 for n in changed)
        if len(after) == len(before):
            assert len(after.keys() - before.keys()) == 1 and len(before.keys() - after.keys()) == 1
        else:  # the new package was already there: a newer build of it, and one removed
            assert len(after) == len(before) - 1


def test_available_updates_are_newer_than_what_the_host_runs(fleet):
    offered = 0
    for h in range(40):
        compare = versions.comparator(fleet.image_of(h).os_family)
        installed = dict(fleet.packages(h, 1))
        for item in json.loads(fleet.available(h))["available_packages"]:
            offered += 1
            assert compare(item["version"], installed[item["name"]]) > 0
    assert offered
