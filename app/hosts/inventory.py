"""The host_diff task: a host's pending reports applied to its inventory, history and available updates.

An inventory is a sorted array of package_versions ids (host_sets). Each installed report comes as its
items' ids (the server mapped them: bodies.IDS), or is cut into its items (the agent's form, in C; any
other form parsed by orjson) and each item's bytes mapped to an id through the worker's cache of the
dictionary; it is compared with the host's current ids as sets (in C); only the ids that differ are
named and classified (a first inventory's are only counted). A batch of hosts is then written with one
statement per table, package_hosts (the inverted index) included, and its applied reports deleted
(host_diff_batch).
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import re
from dataclasses import dataclass, field
from typing import Sequence

import asyncpg
import orjson

from app.gc_pause import gc_paused
from app.hosts import versions
from app.hosts.bodies import IDS, agent_items, decode_body, decode_ids, is_split_form, load_body
from app.hosts.reports import AVAILABLE, BODY_KEYS, INSTALLED
from app.settings import Settings
from app.tasks import rows, turns
from app.tasks.kinds import Kind

log = logging.getLogger(__name__)

_ARCH_RE = re.compile(r"^(.+):([A-Za-z0-9_.+-]{1,32})$")


def split_arch(raw: str) -> tuple[str, str]:
    """`name:arch` -> (name, arch); a name without an arch suffix -> (name, "")."""
    if ":" in raw:
        m = _ARCH_RE.match(raw)
        if m:
            return m.group(1), m.group(2)
    return raw, ""


def join_arch(name: str, arch: str) -> str:
    # The inverse of split_arch (it is one-to-one), so inventories can be keyed by the raw name.
    return f"{name}:{arch}" if arch else name


def installed_map(body: dict) -> dict[str, str]:
    """{raw name: version}; a (name, arch) given twice: the last one wins."""
    return {item["name"]: item["version"] for item in body[BODY_KEYS[INSTALLED]]}


def item_key(raw_name: str, version: str) -> bytes:
    """The dictionary cache's key of a (raw name, version): the bytes of its item in the agent's form,
    `"name": "...", "version": "..."`. Its strings hold no escape and no byte above 0x7f, and orjson
    writes such a string as the agent does, so one key per pair whichever form the report came in."""
    return b'"name": ' + orjson.dumps(raw_name) + b', "version": ' + orjson.dumps(version)


def key_pair(key: bytes) -> tuple[str, str]:
    item = orjson.loads(b"{" + key + b"}")
    return item["name"], item["version"]


def installed_keys(stored: bytes) -> tuple[list[bytes], bool]:
    """The item_key() of each package of a stored installed report, and whether a name may occur twice
    (then the caller keeps the last version). The agent's form is cut into its items in C (no JSON
    objects); any other form goes through orjson and comes out with one version per name."""
    raw = decode_body(stored)
    if is_split_form(stored):  # its strings hold no brace (reports._STR): each "}, {" is a boundary
        keys = agent_items(raw)
        if keys is not None and len(keys) == raw.count(b"{") - 1:
            return keys, True
    return [item_key(n, v) for n, v in installed_map(orjson.loads(raw)).items()], False


# --- the package dictionary ----------------------------------------------------------------------

# Host ids are stored as int4 (host_sets' arrays, package_hosts' ranges).
INT4_MAX = 2**31 - 1
# The hosts of one package_hosts row: posting_bucket() in sql/017_inventory_store.sql, their bits
# posting_bit() in sql/024_posting_bits.sql.
POSTING_BUCKET = 400


def _split_cached(cache: dict, wanted) -> tuple[dict, list]:
    """The wanted entries `cache` holds ({key: value}), and the keys it lacks, in order."""
    out, missing = {}, []
    for key in wanted:
        value = cache.get(key)
        if value is None:
            missing.append(key)
        else:
            out[key] = value
    return out, missing


PROBES = 16  # ids of a large set that _may_be_near looks for in a template


def _probe(ids: set[int]) -> list[int]:
    """PROBES of a set's ids, spread over its hash table. A set of ints iterates in the order of their values
    modulo its table's size, so its first few are ids made together (the new versions one host brought):
    they would say a set is far from a template it differs from by a few dozen ids."""
    return list(itertools.islice(ids, 0, None, max(1, len(ids) // PROBES)))[:PROBES]


def _may_be_near(template, ids: set[int], probe: list[int], limit: int) -> bool:
    """A cheap first test of a template for a large set (a set of one OS image's hosts): sizes at most `limit`
    apart, and at most a quarter of the set's probed ids missing from the template (the callers accept a
    template that lacks up to an eighth of the set, or a sixteenth). The caller then compares the two whole."""
    return abs(len(template) - len(ids)) <= limit and sum(map(template.__contains__, probe)) * 4 >= len(probe) * 3


class Dictionary:
    """The worker's bounded cache of package_versions, both ways: item_key(raw name, version) -> id
    (how reports are read), and id -> (raw name, version) (how changes are named).

    Both maps hold the same entries (added together, trimmed alike), so every id a batch read from a
    report can be named. Entries are immutable in the database, so a cached one never goes stale; only an emptied
    dictionary (its identity sequence back below the ids seen: a test database reset) clears it.
    Past its limit, the oldest entries go (insertion order: cheaper than an LRU on every hit)."""

    def __init__(self, limit: int):
        self.limit = max(limit, 1000)
        self.ids: dict[bytes, int] = {}
        self.keys: dict[int, tuple[str, str]] = {}
        # Each cached id's raw name as a number, indexed by id (names are compared as numbers, in C). A list, not
        # an array: its items are int objects already, which an array would make anew at each read.
        self.name_numbers: dict[str, int] = {}
        self.name_of: list[int] = []
        self.ids_of_name: dict[int, list[int]] = {}  # the cached ids, by name number
        # A few large sets of one id per name (names_twice), with their id by name number; newest first.
        self.checked: list[tuple[frozenset[int], dict[int, int]]] = []
        self.max_id = 0
        self.max_key: tuple[str, str] | None = None  # the (raw name, version) of max_id
        self.generation = 0  # bumped whenever entries leave the cache (ids looked up before may be gone)
        self.planning = 0  # plan_chunk calls under way (they read entries across their awaits)
        self._idle: tuple[asyncio.AbstractEventLoop, asyncio.Condition] | None = None

    def check(self, last_id: int, known_max: int, replaced: bool = False) -> None:
        """At the start of a batch: forget everything if the dictionary was emptied (its last id below
        the highest this cache knew before the id was read: a batch running meanwhile may have cached
        newer ones) or `replaced` (that highest id names another entry now: emptied, then filled past it by
        another process before this check), and trim to the limit; neither while another batch is
        planning (it relies on the entries it found here)."""
        if self.planning:
            return
        if last_id < known_max or replaced:
            self.ids.clear()
            self.keys.clear()
            self.name_numbers.clear()
            self.name_of = []
            self.ids_of_name.clear()
            self.checked.clear()
            self.max_id, self.max_key = 0, None
            self.generation += 1
        self.trim()

    def trim(self) -> None:
        """Past the limit, down to 3/4 of it (oldest first), names numbered again from the entries kept;
        not while a batch is planning. Called before each chunk too: a batch of hosts whose versions
        the fleet does not share adds a chunk's items at a time, not the whole batch's."""
        if self.planning or len(self.keys) <= self.limit:
            return
        self.generation += 1
        for cache in (self.ids, self.keys):
            for old in list(itertools.islice(iter(cache), len(cache) - self.limit * 3 // 4)):
                del cache[old]
        self.name_numbers, self.ids_of_name, self.checked = {}, {}, []
        for id_, (raw, _) in self.keys.items():
            number = self.name_of[id_] = self.name_numbers.setdefault(raw, len(self.name_numbers) + 1)
            self.ids_of_name.setdefault(number, []).append(id_)

    def _idle_condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._idle is None or self._idle[0] is not loop:
            self._idle = (loop, asyncio.Condition())
        return self._idle[1]

    async def start_planning(self) -> None:
        """Before a chunk is planned: trim the cache, first waiting, if it is past its limit, until no other chunk
        is being planned (trim() does nothing meanwhile). Two batches planning by turns would otherwise keep it
        from ever being trimmed, and a fleet whose hosts share no version would grow it without bound. Under
        the limit, chunks are planned side by side."""
        if self.planning and len(self.keys) > self.limit:
            idle = self._idle_condition()
            async with idle:
                await idle.wait_for(lambda: self.planning == 0 or len(self.keys) <= self.limit)
        self.trim()
        self.planning += 1

    async def end_planning(self) -> None:
        self.planning -= 1
        if self.planning == 0 and self._idle is not None and self._idle[0] is asyncio.get_running_loop():
            idle = self._idle[1]
            async with idle:
                idle.notify_all()

    def _add(self, name: str, arch: str, version: str, id_: int) -> bytes:
        raw = join_arch(name, arch)
        key = item_key(raw, version)
        self.ids[key] = id_
        self.keys[id_] = (raw, version)
        if id_ > self.max_id:
            self.max_id, self.max_key = id_, (raw, version)
        if id_ >= len(self.name_of):
            self.name_of.extend(itertools.repeat(0, id_ + 1 - len(self.name_of) + 4096))
        number = self.name_of[id_] = self.name_numbers.setdefault(raw, len(self.name_numbers) + 1)
        self.ids_of_name.setdefault(number, []).append(id_)
        return key

    def names_twice(self, ids: set[int], came: set[int]) -> bool:
        """Whether a raw name occurs twice among these cached ids. `came` are those not in an inventory (one id
        per name), so only their names are checked, when they are few. Many (a first inventory): if the set is
        near one checked before (one id per name too), only the ids that set lacks are checked, against each
        other and against that set's id of their name."""
        name_of = self.name_of.__getitem__
        if len(came) * 16 <= len(ids):
            names = list(map(name_of, came))
            return len(set(names)) < len(names) or any(
                j != i and j in ids for i, n in zip(came, names) for j in self.ids_of_name[n])
        near = self._near_checked(ids)
        if near is None:
            names = list(map(name_of, ids))
            if len(set(names)) < len(names):
                return True
            if len(ids) >= 256:
                self.checked.insert(0, (frozenset(ids), dict(zip(names, ids))))
                del self.checked[8:]
            return False
        beyond, by_name = near
        names = list(map(name_of, beyond))
        return len(set(names)) < len(names) or any(j is not None and j in ids for j in map(by_name.get, names))

    def _near_checked(self, ids: set[int]) -> tuple[set[int], dict[int, int]] | None:
        """(the ids a set checked before lacks, that set's id by name number), if it lacks at most 1/16 of them
        (that set is moved first); else None."""
        probe, limit = _probe(ids), len(ids) // 8
        for n, (checked, by_name) in enumerate(self.checked):
            if not _may_be_near(checked, ids, probe, limit):
                continue
            beyond = ids.difference(checked)
            if len(beyond) * 16 <= len(ids):
                if n:
                    self.checked.insert(0, self.checked.pop(n))
                return beyond, by_name
        return None

    def version_in(self, ids: set[int], raw: str) -> str | None:
        """The version of package `raw` (name[:arch]) in an inventory (one id per name), every id of which
        is cached; None if it has none."""
        number = self.name_numbers.get(raw)
        for id_ in self.ids_of_name.get(number, ()) if number else ():
            if id_ in ids:
                return self.keys[id_][1]
        return None

    async def resolve_ids(self, conn, keys) -> dict[bytes, int]:
        """Ids of item_key()s, entries created for new ones. The keys not cached are looked up (and
        inserted) in bulk."""
        out, missing = _split_cached(self.ids, keys)
        # A row another worker inserts meanwhile is not in this statement's snapshot: the next round
        # sees it (ON CONFLICT DO NOTHING gave nothing for it).
        for _ in range(3):
            if not missing:
                break
            for r in await dictionary_entries(conn, missing):
                out[self._add(r["name"], r["arch"], r["version"], r["id"])] = r["id"]
            missing = [k for k in missing if k not in out]
        if missing:
            raise RuntimeError(f"{len(missing)} package versions could not be added to the dictionary")
        return out

    async def resolve_keys(self, conn, ids) -> dict[int, tuple[str, str]]:
        """(raw name, version) of dictionary ids."""
        out, missing = _split_cached(self.keys, ids)
        if missing:
            for r in await conn.fetch("SELECT id, name, arch, version FROM package_versions WHERE id = ANY($1::int4[])",
                                      missing):
                self._add(r["name"], r["arch"], r["version"], r["id"])
                out[r["id"]] = self.keys[r["id"]]
        return out


# New entries inserted, then every asked entry read (the inserted ones from RETURNING: the same
# statement's SELECT does not see them).
_DICTIONARY_SQL = """
WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS k(name, arch, version)),
ins AS (
    INSERT INTO package_versions (name, arch, version)
    SELECT k.name, k.arch, k.version FROM k
    WHERE NOT EXISTS (SELECT 1 FROM package_versions v
                      WHERE v.name = k.name AND v.arch = k.arch AND v.version = k.version)
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING RETURNING id, name, arch, version
)
SELECT id, name, arch, version FROM ins
UNION ALL
SELECT v.id, v.name, v.arch, v.version FROM k JOIN package_versions v
    ON v.name = k.name AND v.arch = k.arch AND v.version = k.version
"""

async def dictionary_entries(conn, keys) -> list:
    """The dictionary's entries (id, name, arch, version) of these item_key()s, new ones inserted; one another
    transaction inserts meanwhile may be missing (it is not in this statement's snapshot)."""
    pairs = [key_pair(k) for k in keys]
    split = [split_arch(raw) for raw, _ in pairs]
    return await conn.fetch(_DICTIONARY_SQL, [n for n, _ in split], [a for _, a in split], [v for _, v in pairs])


# One per database (a worker has one; a test process may use two).
_dictionaries: dict[str, Dictionary] = {}
_current_db = ""


def dictionary() -> Dictionary:
    """The cache of the database this process last applied reports to."""
    if _current_db not in _dictionaries:
        _dictionaries[_current_db] = Dictionary(_settings().inventory_cache_entries)
    return _dictionaries[_current_db]


_STATE_SQL = """
SELECT current_database() AS db, CASE WHEN is_called THEN last_value ELSE 0 END AS id,
       (SELECT ARRAY[name, arch, version] FROM package_versions WHERE id = $1) AS entry
FROM package_versions_id_seq
"""


async def dictionary_state(conn, entry_id: int) -> tuple[str, int, tuple[str, str] | None]:
    """The database's name, the dictionary's last id, and the (raw name, version) of entry `entry_id` now (None if
    there is none): how a cache of the dictionary (this module's, hosts/known.py's) tells it was emptied."""
    row = await conn.fetchrow(_STATE_SQL, entry_id)
    entry = row["entry"]
    return row["db"], row["id"], (join_arch(entry[0], entry[1]), entry[2]) if entry else None


async def _check_dictionary(conn) -> None:
    global _current_db
    d = dictionary()
    known_max, known_key = d.max_id, d.max_key
    db, last_id, at_max = await dictionary_state(conn, known_max)
    if db != _current_db:  # (a test process may use two databases: each has its cache)
        _current_db = db
        d = dictionary()
        known_max, known_key = d.max_id, d.max_key
        db, last_id, at_max = await dictionary_state(conn, known_max)
    d.check(last_id, known_max, replaced=known_key is not None and at_max != known_key)


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


# --- applying a host's pending reports -----------------------------------------------------------


@dataclass
class HostPlan:
    """What applying one host's pending reports writes: rows for the batch statements."""

    host_id: int
    summary: dict
    report_ids: list[int] = field(default_factory=list)  # the applied reports, in order
    ids: set[int] | None = None                           # the new set (empty when delta); None: no installed report
    delta: bool = False                                   # the stored set gets added/removed_ids, not `ids`
    since: object = None                                  # a new set's baseline time
    added_ids: set[int] = field(default_factory=set)      # net change of the set: for package_hosts
    removed_ids: set[int] = field(default_factory=set)
    history: list[tuple] = field(default_factory=list)    # (at, change, name, arch, old, new)
    inventory_at: object = None
    available_gone: list[tuple] = field(default_factory=list)  # (name, arch)
    # (name, arch, version, repository, security, installed): new rows, and rows with a column changed
    available_up: list[tuple] = field(default_factory=list)
    available_count: int | None = None                         # None: no available report
    available_at: object = None


def _empty_summary() -> dict:
    return {"reports": 0, "added": 0, "removed": 0, "upgraded": 0, "downgraded": 0, "available": None}


@dataclass
class Parsed:
    """An installed report read for planning: each item's id in report order (0: not known yet), the keys those
    are looked up by, and whether a name may occur twice (then the last one wins).

    `keys` holds every item's key (a JSON body: `found` is what the cache held at `generation`, looked up again
    if entries left it since), or, for an IDS body, only the keys of its 0s, in order (its ids never go stale,
    but the cache may not hold them: `ids_to_name`)."""

    found: Sequence[int]
    keys: list[bytes]
    twice: bool
    every_key: bool
    generation: int
    ids: set[int] | None = None   # set(found), once computed
    named: int | None = None      # the generation at which the cache held every id of `found`
    unknown: list[bytes] | None = None  # unknown_keys(), once computed
    # (the host's current set, ids - it, it - ids) of a host's first installed report, an IDS body: compared as
    # soon as both sets were made (prefetch_entries); the ids of its unknown items (0) are added once resolved
    against: tuple[set[int], set[int], set[int]] | None = None
    unnamed: tuple[int, set[int]] | None = None  # (generation, the ids the cache lacked then), prefetch_entries'

    def refound(self, d: "Dictionary") -> None:
        if self.every_key and self.generation != d.generation:
            self.found = list(map(d.ids.get, self.keys, itertools.repeat(0)))
            self.generation, self.ids, self.unknown = d.generation, None, None

    def id_set(self) -> set[int]:
        if self.ids is None:
            self.ids = set(self.found)
        return self.ids

    def unknown_keys(self) -> list[bytes]:
        """The keys of the items whose id is 0, in order."""
        if not self.every_key:
            return self.keys
        if self.unknown is None:
            self.unknown = list(itertools.compress(self.keys, map(operator.not_, self.found)))
        return self.unknown

    def ids_to_name(self, d: "Dictionary") -> set[int]:
        """The ids of an IDS body that the cache does not hold (it must, to name them and find names given twice)."""
        if self.every_key or self.named == d.generation:
            return set()
        if self.unnamed is not None and self.unnamed[0] == d.generation:
            return self.unnamed[1]   # (those the cache got since are found there again)
        return self.id_set().difference(d.keys)

    def in_order(self, d: "Dictionary") -> list[int]:
        """Every item's id in report order, once every key is in the cache."""
        resolved = map(d.ids.__getitem__, self.unknown_keys())
        return [i or next(resolved) for i in self.found]


def read_installed(stored: bytes, d: "Dictionary") -> Parsed:
    if stored[:1] == IDS:
        found, keys = decode_ids(stored)
        return Parsed(found, keys, True, False, d.generation)
    keys, twice = installed_keys(stored)
    return Parsed(list(map(d.ids.get, keys, itertools.repeat(0))), keys, twice, True, d.generation)


@dataclass
class Change:
    """An installed report's set of ids, and the ids it adds to and removes from the set before it."""

    ids: set[int]
    came: set[int]
    gone: set[int]


async def prefetch_entries(conn, by_host: dict[int, list]) -> dict[int, Parsed]:
    """The chunk's installed reports read (by report id), and the dictionary entries they name that the cache
    lacks looked up (by key, new ones inserted; or by id), before plan_chunk, which may wait for another batch's
    chunk (Dictionary.start_planning). plan_chunk looks up again what the cache lost since."""
    d = dictionary()
    parsed = {}
    for reports in by_host.values():
        first = True
        for r in reports:
            if r["kind"] == INSTALLED:
                try:
                    p = parsed[r["id"]] = read_installed(r["body"], d)
                except Exception:   # plan_chunk reads it again and fails that host
                    first = False
                    continue
                if not p.every_key:
                    # Each set checked and, for a host's first installed report, compared with its current set while
                    # both are in the CPU's caches: a chunk's hundreds of sets, compared afterwards, are read back
                    # from memory. (An IDS body's ids never change; a JSON body's may be looked up again.)
                    ids = p.id_set()
                    p.unnamed = (d.generation, ids.difference(d.keys))
                    if first and reports[0]["ids"]:  # (its 0s stay in `came` until _plan_chunk resolves them)
                        base = set(reports[0]["ids"])
                        p.against = (base, ids - base, base - ids)
                first = False
    generation = d.generation  # entries that leave the cache meanwhile bump it: plan_chunk then checks again
    if await _look_up(conn, d, parsed.values()) <= d.keys.keys():
        for p in parsed.values():
            p.named = generation
    return parsed


async def _look_up(conn, d: Dictionary, reports) -> set[int]:
    """Into the cache, for these Parsed reports: the entries of the keys it lacks (new ones inserted), and the
    names of the ids it lacks. Returns the ids looked up by id (an id no entry has stays out of the cache)."""
    missing, to_name = set(), set()
    for p in reports:
        if 0 in p.id_set():
            missing.update(p.unknown_keys())
        to_name.update(p.ids_to_name(d))
    to_name.discard(0)
    if missing:
        await d.resolve_ids(conn, missing)
    if to_name:
        await d.resolve_keys(conn, to_name)
    return to_name


async def plan_chunk(conn, by_host: dict[int, list], out: dict,
                     parsed: dict[int, Parsed] | None = None) -> list[HostPlan]:
    """Plans for a chunk of hosts: their reports read (or taken from `parsed`, prefetch_entries'), mapped to
    dictionary ids (one cache lookup per item, in C, unless the server mapped them; the misses of the whole chunk
    looked up in bulk), compared as sets of ids. A host that fails gets its exception in `out` and no plan."""
    d = dictionary()
    await d.start_planning()
    try:
        return await _plan_chunk(conn, d, by_host, out, parsed or {})
    finally:
        await d.end_planning()


async def _plan_chunk(conn, d: Dictionary, by_host: dict[int, list], out: dict,
                      parsed: dict[int, Parsed]) -> list[HostPlan]:
    cached_id = d.ids.get
    # host -> per report: [set of ids (0 in it: some not cached yet), its Parsed, then its Change], or None
    # (an available report)
    lists: dict[int, list] = {}
    for host_id, reports in by_host.items():
        try:
            if host_id > INT4_MAX:
                raise ValueError(f"host id {host_id} exceeds the inventory store's int4 range")
            maps = []
            for r in reports:
                if r["kind"] != INSTALLED:
                    maps.append(None)
                    continue
                p = parsed.get(r["id"]) or read_installed(r["body"], d)
                p.refound(d)
                maps.append([p.id_set(), p])
            lists[host_id] = maps
        except Exception as exc:
            out[host_id] = exc
    absent = (await _look_up(conn, d, (m[1] for maps in lists.values() for m in maps if m is not None))).difference(d.keys)
    for host_id, maps in list(lists.items()) if absent else ():  # ids no entry has: those hosts fail
        bad = set().union(*(m[0] & absent for m in maps if m is not None))
        if bad:
            out[host_id] = ValueError(f"a report names dictionary ids that do not exist: {sorted(bad)[:5]}")
            del lists[host_id]
    current = {host_id: _current_set(by_host[host_id][0]["ids"], maps) for host_id, maps in lists.items()}
    for host_id, maps in lists.items():
        base = current[host_id]  # one id per name, as every set (the reports' sets are checked here)
        for m in maps:
            if m is None:
                continue
            ids, p = m
            if 0 in ids:
                ids.discard(0)
                resolved = set(map(cached_id, p.unknown_keys()))
                ids |= resolved
                if p.against is not None:
                    p.against[1].discard(0)
                    p.against[1].update(resolved - base)
                    p.against[2].difference_update(resolved)
            # The report's change against the state before it, computed once: plan_host names it.
            if p.against is not None:  # the host's first installed report, compared as it was read (`base` is its set)
                _, came, gone = p.against
            elif base:
                came, gone = ids - base, None
            else:  # a first inventory: its set is its change, one copy (set() of an array made its table twice as large)
                ids = came = ids.copy()
                gone = None
            if p.twice and d.names_twice(ids, came):
                # a name given twice (several versions of an rpm): the last one wins
                ids = set({d.keys[i][0]: i for i in p.in_order(d)}.values())
                came, gone = ids - base if base else ids, None
            m.append(Change(ids, came, base - ids if gone is None else gone))
            base = ids
    # The names of the ids the first installed report removes from the current set: looked up if not cached.
    # And a host with only available reports: the names of its whole set (its available rows get the
    # versions installed, Dictionary.version_in).
    unknown_ids = set()
    for host_id, maps in lists.items():
        now = current[host_id]
        first = next((m for m in maps if m is not None), None)
        if first is None:
            unknown_ids.update(now.difference(d.keys))
        elif now and not by_host[host_id][0]["baseline"]:
            unknown_ids.update(first[2].gone.difference(d.keys))
    if unknown_ids:
        await d.resolve_keys(conn, unknown_ids)
    plans = []
    for host_id, maps in lists.items():
        try:
            plans.append(plan_host(host_id, by_host[host_id], [m and m[2] for m in maps], current[host_id], d))
        except Exception as exc:
            out[host_id] = exc
    return plans


def _current_set(ids: list[int] | None, maps: list) -> set[int]:
    """A host's current set: the one its first installed report was compared with, if it was."""
    first = next((m for m in maps if m is not None), None)
    if first is not None and first[1].against is not None:
        return first[1].against[0]
    return set(ids or ())


def plan_host(host_id: int, reports: list, maps: list[Change | None], current: set[int], d: Dictionary) -> HostPlan:
    """Compare each pending report with the state before it, in order.

    Installed: the new list's ids against the current ones (a set difference in C; only the ids
    that differ are named, through `cached`, and classified). Every report's changes go to the
    history; the set gets the last list, package_hosts the net change. The host's first inventory is
    its baseline (no history: its packages are only counted). Available: the last report replaces the
    set; only the rows that differ from the current ones are written. Each available row also holds the
    version installed after the last installed report (of every id of which `d` knows the name).
    """
    cached = d.keys
    first = reports[0]
    plan = HostPlan(host_id, _empty_summary())
    baseline, cmp = first["baseline"], versions.comparator(first["os_family"])
    final_ids = current
    new_av: dict[tuple[str, str], tuple] | None = None
    installed, last = 0, None
    for report, change in zip(reports, maps):
        plan.report_ids.append(report["id"])
        plan.summary["reports"] += 1
        if report["kind"] == AVAILABLE:
            new_av = {}
            for item in load_body(report["body"])[BODY_KEYS[AVAILABLE]]:
                sec = item.get("security")
                new_av[split_arch(item["name"])] = (item["version"], item.get("repository"), sec is True or sec == "true")
            plan.available_at = report["received_at"]
            continue
        at = report["received_at"]
        new_ids, last = change.ids, change
        installed += 1
        if baseline:  # every package added (one version per name), none named
            plan.summary["added"] += len(new_ids)
            if plan.ids is None:
                plan.since = at
        else:
            # Against the set before this report (`current`, or the report before).
            old = dict(cached[i] for i in change.gone)
            changes = []
            for i in change.came:
                raw, version = cached[i]
                was = old.pop(raw, None)
                if was is None:
                    changes.append((raw, None, version, "added"))
                else:
                    changes.append((raw, was, version, "upgraded" if cmp(version, was) > 0 else "downgraded"))
            changes += [(raw, was, None, "removed") for raw, was in old.items()]
            for raw, was, now, kind in changes:
                plan.summary[kind] += 1
                name, arch = split_arch(raw)
                plan.history.append((at, kind, name, arch, was, now))
        plan.ids = final_ids = new_ids
        plan.inventory_at = at
        baseline = False
    if plan.ids is not None:
        if installed == 1:      # the one report's change is against `current`
            plan.added_ids, plan.removed_ids = last.came, last.gone
        else:
            plan.added_ids = plan.ids - current if current else plan.ids
            plan.removed_ids = current - plan.ids
        # A host's stored set is `current` (one diff of a host runs at a time): a few changes of a
        # large set are sent as such (no sort, no encoding of 2,000 ids per host).
        plan.delta = bool(current)
        if plan.delta:
            plan.ids = set()
        if plan.since is None:  # a host without a set yet that is not at its baseline (an empty inventory)
            plan.since = plan.inventory_at
    current_av = {(n, a): (v, r, s, i) for n, a, v, r, s, i in orjson.loads(first["available"] or "[]")}
    if new_av is not None or (plan.ids is not None and current_av):
        touched = None  # a few changes of the inventory: only the rows of the names they touch can differ
        changed = [*plan.added_ids, *plan.removed_ids] if new_av is None and plan.delta else None
        if changed is not None and all(map(cached.__contains__, changed)):
            touched = {cached[i][0] for i in changed}
        rows = new_av if new_av is not None else {key: row[:3] for key, row in current_av.items()
                                                  if touched is None or join_arch(*key) in touched}
        for key, row in rows.items():
            row = (*row, d.version_in(final_ids, join_arch(*key)))
            if current_av.get(key) != row:
                plan.available_up.append((*key, *row))
    if new_av is not None:
        plan.available_gone = list(current_av.keys() - new_av.keys())
        plan.available_count = plan.summary["available"] = len(new_av)
    return plan


# A diff's statements read and write rows by key, a few per host of its batch. Their plans would follow
# the tables as they were when a statement was first prepared, or last analyzed (host_available read
# empty, or package_hosts a tenth of its size): a scan of a whole table for every batch, which grows with
# the fleet. So in a diff's transactions, no whole-table scan, no hash or merge join; and room to sort a
# batch's posting rows in memory.
_BY_KEY = ("SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
           " SET LOCAL work_mem = '32MB'")

# package_hosts, first the (entry, bucket) rows that do not exist yet: inserted with their hosts (in
# key order, as every writer goes). Each row's hosts arrive as one host id, or as a bitmap in hex when
# there are several (_hosts_text). The writers of a bucket's new rows take its advisory lock first
# (_POSTING_LOCKS_SQL, buckets in order), for the rest of their transaction: another worker's batch
# that inserts rows of the bucket waits, and its insert then sees them (a new snapshot per statement).
# A plain insert does half the work of ON CONFLICT's speculative one.
POSTING_LOCK = 7_405_002  # the advisory locks' first key; the second is the bucket
_POSTING_LOCKS_SQL = f"SELECT pg_advisory_xact_lock({POSTING_LOCK}, b) FROM unnest($1::int4[]) AS b ORDER BY b"
_POSTINGS_NEW_SQL = """
INSERT INTO package_hosts (version_id, bucket, hosts)
SELECT d.vid, d.bucket, coalesce(posting_bit(d.host), d.bits::bit(400))
FROM unnest($1::text::int4[], $2::text::int4[], $3::text::int8[], $4::text::text[]) AS d(vid, bucket, host, bits)
WHERE NOT EXISTS (SELECT 1 FROM package_hosts p WHERE p.version_id = d.vid AND p.bucket = d.bucket)
ORDER BY d.vid, d.bucket
RETURNING version_id, bucket
"""
# Then the others: the batch's hosts removed and added, rows locked in key order (two workers
# updating the same rows never deadlock).
_POSTINGS_SQL = """
WITH d AS (
    SELECT * FROM unnest($1::text::int4[], $2::text::int4[], $3::text::int8[], $4::text::text[], $5::text::int8[],
                         $6::text::text[])
    AS d(vid, bucket, added_host, added_bits, removed_host, removed_bits)
), locked AS (
    SELECT p.version_id, p.bucket,
           coalesce(posting_bit(d.added_host), d.added_bits::bit(400), B'0'::bit(400)) AS added,
           coalesce(posting_bit(d.removed_host), d.removed_bits::bit(400), B'0'::bit(400)) AS removed
    FROM package_hosts p JOIN d ON p.version_id = d.vid AND p.bucket = d.bucket
    ORDER BY p.version_id, p.bucket FOR UPDATE OF p
)
UPDATE package_hosts p SET hosts = (p.hosts & ~l.removed) | l.added
FROM locked l WHERE p.version_id = l.version_id AND p.bucket = l.bucket
"""

# The rest of a batch's writes in one statement: the hosts' sets, history, available rows, and the
# deletion of the applied reports; then the hosts' columns (_HOSTS_SQL), in the same transaction.
# No WAL flush wait: if a crash loses this commit, the report rows come back with it and are
# applied again (the tasks are marked done by a later, flushed commit).
_WRITE_SQL = """
WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
sets AS (
    INSERT INTO host_sets (host_id, ids, since)
    SELECT u.host_id, (((SELECT $5::text::int4[]))[u.lo:u.hi] - ((SELECT $31::text::int4[]))[u.mlo:u.mhi])
                      | ((SELECT $34::text::int4[]))[u.elo:u.ehi], u.since
    FROM unnest($1::bigint[], $2::int4[], $3::int4[], $4::timestamptz[], $32::int4[], $33::int4[], $35::int4[],
                $36::int4[]) AS u(host_id, lo, hi, since, mlo, mhi, elo, ehi)
    ON CONFLICT (host_id) DO UPDATE SET ids = EXCLUDED.ids
), delta AS (
    UPDATE host_sets s SET ids = (s.ids - ((SELECT $24::text::int4[]))[d.rlo:d.rhi]) | ((SELECT $23::text::int4[]))[d.alo:d.ahi]
    FROM unnest($25::bigint[], $26::int4[], $27::int4[], $28::int4[], $29::int4[]) AS d(host_id, alo, ahi, rlo, rhi)
    WHERE s.host_id = d.host_id
), hist AS (
    INSERT INTO host_history (host_id, at, change, name, arch, old_version, new_version)
    SELECT * FROM unnest($6::bigint[], $7::timestamptz[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::text[])
), av_gone AS (
    DELETE FROM host_available a USING unnest($13::bigint[], $14::text[], $15::text[]) AS g(host_id, name, arch)
    WHERE a.host_id = g.host_id AND a.name = g.name COLLATE "C" AND a.arch = g.arch COLLATE "C"
), av_up AS (
    INSERT INTO host_available (host_id, name, arch, version, repository, security, installed)
    SELECT * FROM unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::text[], $21::bool[], $30::text[])
    ON CONFLICT (host_id, name, arch) DO UPDATE
    SET version = EXCLUDED.version, repository = EXCLUDED.repository, security = EXCLUDED.security,
        installed = EXCLUDED.installed
)
DELETE FROM host_reports USING async WHERE id = ANY($22::bigint[])
"""

# The hosts' rows last, in a statement of their own just before the commit: the report endpoints
# lock these rows too (FOR NO KEY UPDATE), and a group of their requests would otherwise wait for
# the whole write above (PostgreSQL runs a statement's main query first, its other CTEs after).
# Locked in id order, as hosts/intake.py does: in another order, the two deadlocked (and PostgreSQL
# took a second, deadlock_timeout, to tell).
_HOSTS_SQL = """
WITH locked AS (SELECT id FROM hosts WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE)
UPDATE hosts h SET inventory_at = coalesce(u.inventory_at, h.inventory_at),
    available_count = coalesce(u.available_count, h.available_count),
    available_at = coalesce(u.available_at, h.available_at)
FROM locked JOIN unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::timestamptz[])
     AS u(host_id, inventory_at, available_count, available_at) ON u.host_id = locked.id
WHERE h.id = locked.id
"""


def _flat(lists: list) -> tuple[str, list[int], list[int]]:
    """Lists -> (one flat int4[] as text (int_array_text), 1-based start of each, end of each): slices of
    one array parameter (read once per statement, as an InitPlan: `(SELECT $n::text::int4[])`)."""
    flat: list[int] = []
    lo, hi = [], []
    for items in lists:
        lo.append(len(flat) + 1)
        flat.extend(items)
        hi.append(len(flat))
    return int_array_text(flat), lo, hi


def posting_bit(host_id: int) -> int:
    """A host's bit in the bitmap of its package_hosts row, as an int (posting_bit() in sql/024)."""
    return 1 << (POSTING_BUCKET - 1 - host_id % POSTING_BUCKET)


class _RangeBits:
    """The bitmaps of one range of hosts (one package_hosts bucket) that a batch adds to (or removes from)
    its entries: entry -> bitmap, as an int (posting_bit()).

    A host's first inventory adds its bit to some 2,000 entries, and most hosts of a range share most of
    their entries with some others (those of one OS image). So a large set is compared with a few templates,
    sets of hosts seen before: one it differs from by a little gets the host's bit in the template's mask,
    and only the differences are set or cleared entry by entry; each template's mask goes to its entries once,
    at the end. A set that matches none becomes a template while there are fewer than TEMPLATES; past that,
    its entries are set one by one."""

    TEMPLATES = 8
    LARGE = 256          # a set of fewer entries is set one by one
    NEAR = 8             # a template differs from a set it serves by at most 1/NEAR of the set's size

    def __init__(self):
        self.bits: dict[int, int] = {}
        self.templates: list[list] = []  # [entries (a set), mask], most recently matched first
        self.cleared: list[tuple[set[int], int]] = []

    def add(self, ids: set[int], bit: int) -> tuple[set[int], set[int], set[int]] | None:
        """Add the host's bit to these entries. Returns (a template, the entries it lacks, the ones it has
        that `ids` lacks) when the set is near one (or became one), else None."""
        if len(ids) >= self.LARGE:
            probe, limit = _probe(ids), len(ids) // self.NEAR
            for n, template in enumerate(self.templates):
                entries = template[0]
                if not _may_be_near(entries, ids, probe, limit):
                    continue
                extra = ids - entries
                if len(extra) > limit:
                    continue
                missing = entries - ids
                if len(missing) > limit:
                    continue
                template[1] |= bit
                if missing:
                    self.cleared.append((missing, bit))
                if n:
                    self.templates.insert(0, self.templates.pop(n))
                self._set(extra, bit)
                return entries, extra, missing
            if len(self.templates) < self.TEMPLATES:
                self.templates.insert(0, [ids, bit])
                return ids, set(), set()
        self._set(ids, bit)
        return None

    def _set(self, ids: set[int], bit: int) -> None:
        bits = self.bits
        for i in ids:
            bits[i] = bits.get(i, 0) | bit

    def done(self) -> dict[int, int]:
        bits = self.bits
        for entries, mask in self.templates:
            for i in entries:
                bits[i] = bits.get(i, 0) | mask
        for entries, bit in self.cleared:
            for i in entries:
                bits[i] &= ~bit
        self.templates, self.cleared = [], []
        return bits


def _hosts_text(keys, bitmaps: dict[tuple[int, int], int]) -> tuple[str, str]:
    """The hosts of these (entry, bucket) rows (bitmaps, posting_bit()) -> an int8[] and a text[] parameter:
    one host as its id (most rows of a fleet's new versions have one host), else its bitmap as bit(400) reads
    hex ('x' and 100 digits); NULL in the other (both for a row without hosts)."""
    ids, bits = [], []
    for key in keys:
        b = bitmaps.get(key, 0)
        if not b:
            ids.append("NULL")
            bits.append("NULL")
        elif b & (b - 1):
            ids.append("NULL")
            bits.append("x%0100x" % b)
        else:
            ids.append(str(key[1] * POSTING_BUCKET + POSTING_BUCKET - b.bit_length()))
            bits.append("NULL")
    return "{" + ",".join(ids) + "}", "{" + ",".join(bits) + "}"


def int_array_text(ints) -> str:
    """An int4[] (or int8[]) parameter as text: asyncpg's binary encoding tests every element of a list against
    collections.abc in Python, and a batch's arrays hold every id of its sets; repr() is C."""
    return "{" + repr(ints)[1:-1] + "}"


async def write_plans(conn, plans: list[HostPlan]) -> None:
    history, av_gone, av_up, deleted, hosts, sets, deltas = [], [], [], [], [], [], []
    # bucket -> its hosts' bits added to (removed from) each entry
    adding: dict[int, _RangeBits] = {}
    removing: dict[int, _RangeBits] = {}
    # A new set (the host had none: its added ids are the set) goes as a template its range's bitmaps
    # matched it with, less and plus its few differences: PostgreSQL makes it with intarray's `-` and `|`,
    # and the batch's text holds each template once instead of each host's 2,000 ids.
    templates: dict[int, tuple[int, int]] = {}  # id() of a template set -> its slice in `template_ids`
    template_ids: list[int] = []
    for p in sorted(plans, key=lambda p: p.host_id):  # one lock order for every writer
        h = p.host_id
        history += [(h, *r) for r in p.history]
        av_gone += [(h, *r) for r in p.available_gone]
        av_up += [(h, *r) for r in p.available_up]
        deleted += p.report_ids
        hosts.append((h, p.inventory_at, p.available_count, p.available_at))
        if p.ids is None:
            continue
        bucket, bit = h // POSTING_BUCKET, posting_bit(h)
        near = None
        if p.added_ids:
            near = adding.setdefault(bucket, _RangeBits()).add(p.added_ids, bit)
        if p.removed_ids:
            removing.setdefault(bucket, _RangeBits()).add(p.removed_ids, bit)
        if p.delta:
            deltas.append(p)
        elif near is None:
            sets.append((p, (1, 0), (), sorted(p.ids)))
        else:
            template, extra, missing = near
            where = templates.get(id(template))
            if where is None:
                where = templates[id(template)] = (len(template_ids) + 1, len(template_ids) + len(template))
                template_ids += sorted(template)
            sets.append((p, where, sorted(missing), sorted(extra)))
    # (entry, bucket) -> bitmap of hosts
    added = {(i, b): bits for b, r in adding.items() for i, bits in r.done().items() if bits}
    removed = {(i, b): bits for b, r in removing.items() for i, bits in r.done().items() if bits}
    set_missing, set_mlo, set_mhi = _flat([missing for _, _, missing, _ in sets])
    set_extra, set_elo, set_ehi = _flat([extra for _, _, _, extra in sets])
    d_add, d_alo, d_ahi = _flat([sorted(p.added_ids) for p in deltas])
    d_rem, d_rlo, d_rhi = _flat([sorted(p.removed_ids) for p in deltas])
    new_keys = sorted(added)
    av_columns = _columns(av_up, 7)
    async with conn.transaction():
        await conn.execute(_BY_KEY)
        inserted = set()
        if new_keys:
            await conn.execute(_POSTING_LOCKS_SQL, sorted({k[1] for k in new_keys}))
            inserted = {tuple(r) for r in await conn.fetch(
                _POSTINGS_NEW_SQL, int_array_text([k[0] for k in new_keys]), int_array_text([k[1] for k in new_keys]),
                *_hosts_text(new_keys, added))}
        keys = sorted((added.keys() - inserted) | removed.keys())
        if keys:
            await conn.execute(
                _POSTINGS_SQL, int_array_text([k[0] for k in keys]), int_array_text([k[1] for k in keys]),
                *_hosts_text([k if k not in inserted else None for k in keys], added),
                *_hosts_text(keys, removed))
        await conn.execute(
            _WRITE_SQL, [p.host_id for p, *_ in sets], [t[0] for _, t, _, _ in sets], [t[1] for _, t, _, _ in sets],
            [p.since for p, *_ in sets], int_array_text(template_ids),
            *_columns(history, 7), *_columns(av_gone, 3), *av_columns[:6], deleted,
            d_add, d_rem, [p.host_id for p in deltas], d_alo, d_ahi, d_rlo, d_rhi, av_columns[6],
            set_missing, set_mlo, set_mhi, set_extra, set_elo, set_ehi,
        )
        await conn.execute(_HOSTS_SQL, *_columns(hosts, 4))


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Rows -> one list per column (for unnest), empty lists when there are no rows."""
    return [list(col) for col in zip(*rows)] if rows else [[] for _ in range(width)]


# Every host_reports row is pending. The host's current set and available rows come with its first
# report (compared in Python: only the differences are written); and the dictionary's last id, to
# tell a reset dictionary (Dictionary.check).
_PENDING_SQL = """
SELECT r.id, r.host_id, r.kind, r.received_at, r.body, h.os_family, h.inventory_at IS NULL AS baseline,
       CASE WHEN r.id = min(r.id) OVER (PARTITION BY r.host_id) THEN s.ids END AS ids,
       CASE WHEN r.id = min(r.id) OVER (PARTITION BY r.host_id) THEN (
           SELECT json_agg(json_build_array(a.name, a.arch, a.version, a.repository, a.security, a.installed))
           FROM host_available a WHERE a.host_id = r.host_id)::text END AS available
FROM host_reports r JOIN hosts h ON h.id = r.host_id LEFT JOIN host_sets s ON s.host_id = r.host_id
WHERE r.host_id = ANY($1::bigint[]) ORDER BY r.host_id, r.id
"""


async def apply_pending(pool, host_ids: list[int], turn: turns.Turn | None = None) -> dict[int, dict | Exception]:
    """Apply the pending reports of these hosts: read, Python, one write per table, one transaction.

    Only one host_diff task of a host runs at a time (the per-target lock), and a report accepted
    meanwhile queues another task, so what is read here is all this run has to do. The hosts are
    read and planned a chunk at a time (a burst of first inventories: 2,000 items each), and only
    their plans (ids) are kept for the write; a batch whose hosts bring many versions new to the fleet
    (DEPOT_INVENTORY_WRITE_NEW_ENTRIES) is written in parts. Returns each host's summary, or the exception that
    kept its reports from being applied: a host that fails does not stop the others (after a failed
    batch write, each host is written on its own). The write waits for the batch's `turn`
    (app/tasks/turns.py): meanwhile, the worker reads and plans its next batch.
    """
    with gc_paused():    # a batch makes hundreds of thousands of short-lived objects
        return await _apply_pending(pool, host_ids, turn)


async def _apply_pending(pool, host_ids: list[int], turn: turns.Turn | None) -> dict[int, dict | Exception]:
    out: dict[int, dict | Exception] = {h: _empty_summary() for h in host_ids}
    chunk = max(_settings().inventory_chunk_hosts, 1)
    new_limit = _settings().inventory_write_new_entries
    async with pool.acquire() as conn:
        await _check_dictionary(conn)
        known = dictionary().max_id      # an id above it is a version new to the fleet: a new posting-list row
        plans: list[HostPlan] = []
        new_entries: set[int] = set()
        start, size = 0, min(_chunking.hosts or chunk, chunk)
        while start < len(host_ids):
            part = host_ids[start:start + size]
            start += len(part)
            by_host: dict[int, list] = {}
            async with conn.transaction(readonly=True):
                await conn.execute(_BY_KEY)
                pending = await conn.fetch(_PENDING_SQL, part)
            for row in pending:
                by_host.setdefault(row["host_id"], []).append(row)
            planned = await plan_chunk(conn, by_host, out, await prefetch_entries(conn, by_host))
            plans += planned
            before = len(new_entries)
            # The ids the chunk's hosts added so far: a host's are checked against `known` only where they are not
            # among them (hosts of one image share most of theirs; a set difference is C, a filter is not).
            added: set[int] = set()
            for p in planned:
                if p.added_ids and (fresh := p.added_ids - added):
                    added |= fresh
                    new_entries.update(filter(known.__lt__, fresh))
            # Hosts that bring many new versions each are read fewer at a time, so that neither the cache
            # (trimmed before each chunk) nor a part's write holds much more than a part's new entries.
            per_host = (len(new_entries) - before) // max(len(part), 1)
            size = _chunking.hosts = max(1, min(chunk, new_limit // per_host)) if per_host else chunk
            if len(new_entries) >= new_limit and start < len(host_ids):
                # Hosts that share no version make a row of each of theirs: write this part now.
                async with turns.writing(turn):
                    await _write_isolated(conn, plans, out)
                plans, new_entries, known = [], set(), dictionary().max_id
        if plans:
            async with turns.writing(turn):
                await _write_isolated(conn, plans, out)
    return out


class _Chunking:
    """Hosts per chunk at the start of the next batch: the size the last chunk's hosts called for (a fleet that
    brings many new versions keeps bringing them, in batches as small as the reports arrive)."""
    hosts = 0


_chunking = _Chunking()


RECLAIM_LOCK_TIMEOUT = "5s"  # reclaim_reports' wait for host_reports' lock
# No report pending (the oldest by the primary key: a scan of the table would read every dead row), and the
# table, all dead space then, at least $1 bytes.
_RECLAIMABLE_SQL = """
SELECT NOT EXISTS (SELECT 1 FROM (SELECT id FROM host_reports ORDER BY id LIMIT 1) r)
       AND pg_table_size('host_reports') >= $1
"""


async def reclaim_reports(pool, threshold: int) -> bool:
    """Vacuum host_reports once the backlog is drained (no host_diff task queued, no report pending) and the
    table holds `threshold` bytes. Every row of that table is a pending report, so a drained backlog leaves it
    all dead space, which a vacuum then truncates; its size counts what every worker process deleted. A batch
    that ends while another has yet to write leaves it to that one (its reports are still there): whatever the
    other's task rows still say, the last batch to write vacuums.

    It waits for the table's lock, at most RECLAIM_LOCK_TIMEOUT: an autovacuum of the table (a backlog's
    deletes start one) gives way to it after PostgreSQL's deadlock_timeout, and skipping would leave the
    drained backlog's pages to that autovacuum, which may not truncate them."""
    if threshold <= 0 or await rows.any_queued(pool, Kind.host_diff):
        return False
    if not await pool.fetchval(_RECLAIMABLE_SQL, threshold):
        return False
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"SET lock_timeout = '{RECLAIM_LOCK_TIMEOUT}'")
            try:
                await conn.execute("VACUUM host_reports")
            finally:
                await conn.execute("RESET lock_timeout")
    except asyncpg.PostgresError as exc:  # space is then reclaimed by autovacuum, as without this
        log.warning("vacuum of host_reports failed: %s", exc)
        return False
    return True


async def _write_isolated(conn, plans: list[HostPlan], out: dict) -> None:
    """Write the plans in one transaction; if that fails, each on its own, so a host fails alone."""
    try:
        await write_plans(conn, plans)
    except Exception as exc:
        if len(plans) == 1:
            out[plans[0].host_id] = exc
            return
        for plan in plans:
            await _write_isolated(conn, [plan], out)
        return
    for plan in plans:
        out[plan.host_id] = plan.summary


async def forget_digests(pool, host_ids: list[int]) -> None:
    """After a failed diff: the hosts' next reports are stored (and applied) even if unchanged."""
    await pool.execute(
        "UPDATE hosts SET installed_digest = NULL, available_digest = NULL WHERE id = ANY($1::bigint[])", host_ids
    )


def _host_id(target: str) -> int:
    return int(target.split(":", 1)[1])


async def host_diff_batch(pool, targets: list[str], turn: turns.Turn | None = None) -> dict[str, dict | Exception]:
    """Batch task handler for kind `host_diff` (targets `host:<id>`): see workers/runner.py run_tasks.

    The digests of hosts whose reports were not applied are forgotten, so that their next report,
    even unchanged, is stored and queues a task that applies everything pending."""
    host_ids = [_host_id(t) for t in targets]
    try:
        results = await apply_pending(pool, host_ids, turn)
    except Exception:
        await forget_digests(pool, host_ids)
        raise
    failed = [h for h, r in results.items() if isinstance(r, Exception)]
    if failed:
        await forget_digests(pool, failed)
    await reclaim_reports(pool, _settings().reports_vacuum_bytes)
    return {t: results[_host_id(t)] for t in targets}


async def host_diff(ctx) -> dict:
    """Task handler for kind `host_diff`, target `host:<id>` (a task sent on its own)."""
    result = (await host_diff_batch(ctx.pool, [ctx.task["target"]]))[ctx.task["target"]]
    if isinstance(result, Exception):
        raise result
    return result


# --- baselines written directly --------------------------------------------------------------------

_SEED_DICTIONARY_SQL = """
INSERT INTO package_versions (name, arch, version)
SELECT DISTINCT name, arch, version FROM unnest($1::text[], $2::text[], $3::text[]) AS r(name, arch, version)
ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING
"""
_SEED_SQL = """
WITH m AS (
    SELECT r.host_id, v.id FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS r(host_id, name, arch, version)
    JOIN package_versions v ON v.name = r.name COLLATE "C" AND v.arch = r.arch COLLATE "C"
                           AND v.version = r.version COLLATE "C"
), sets AS (
    INSERT INTO host_sets (host_id, ids, since)
    SELECT host_id, sort(array_agg(id)), now() FROM m GROUP BY host_id
    ON CONFLICT (host_id) DO UPDATE SET ids = host_sets.ids | EXCLUDED.ids
)
INSERT INTO package_hosts (version_id, bucket, hosts)
SELECT id, posting_bucket(host_id), bit_or(posting_bit(host_id)) FROM m GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (version_id, bucket) DO UPDATE SET hosts = package_hosts.hosts | EXCLUDED.hosts
"""


async def seed_inventories(pool, rows: list[tuple]) -> None:
    """Add (host id, name, arch, version) rows to hosts' inventories as baseline packages, straight into
    the store (no report, no history): the fleets of tests and benchmarks. Not for hosts being diffed."""
    if not rows:
        return
    if max(r[0] for r in rows) > INT4_MAX:
        raise ValueError("a host id exceeds the inventory store's int4 range")
    host_ids, names, archs, vers = (list(c) for c in zip(*rows))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SEED_DICTIONARY_SQL, names, archs, vers)
        await conn.execute(_SEED_SQL, host_ids, names, archs, vers)
