"""Adding one received file to a snapshot: parse, decide, store — never a half-stored file.

The HTTP layer streams each part into storage.receive() (hashed, size-limited, in tmp/); this
module takes it from there. The file name used is the canonical one from the package's own
metadata, never the client's. Nothing reaches the pool or the database unless the file parsed
as a valid package of the repository's type, and `overwrite` replaces a file only after that.
"""
from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from .metadata.deb import render_stanza
from .model import snapshot_with_repo
from .packages import PackageError, ParsedPackage, parse_package
from .publish import sign_rpm_file
from .storage import Incoming, Storage

log = logging.getLogger(__name__)


class Outcome(str, enum.Enum):
    uploaded = "uploaded"
    ignored = "ignored"          # already present, ignore-if-exists
    exists = "exists"            # already present, not overwritten
    invalid = "invalid"          # not a valid package of the repository's type
    empty = "empty"
    too_large = "too_large"
    error = "error"


# Reply headings of Repomanager's upload endpoint, by outcome.
HEADINGS = {
    Outcome.uploaded: "Following packages have been uploaded successfully",
    Outcome.ignored: "Following packages already exist and have been ignored",
    Outcome.exists: "Following packages already exist and have not been uploaded",
    Outcome.invalid: "Following files are not considered valid packages and have not been uploaded",
    Outcome.empty: "Following packages are empty and have not been uploaded",
    Outcome.too_large: "Following packages are too large and have not been uploaded",
    Outcome.error: "Following packages encountered error and have not been uploaded",
}
FAILED = {Outcome.exists, Outcome.invalid, Outcome.empty, Outcome.too_large, Outcome.error}


@dataclass
class FileResult:
    client_name: str
    outcome: Outcome
    filename: str | None = None      # canonical name, when the file parsed
    reason: str | None = None

    def wire(self) -> dict:
        out = {"file": self.client_name, "status": self.outcome.value}
        if self.filename:
            out["filename"] = self.filename
        if self.reason:
            out["reason"] = self.reason
        return out


async def parse_incoming(incoming: Incoming, pkg_type: str) -> ParsedPackage:
    # createrepo_c and rpmkeys block: keep them off the event loop.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, parse_package, incoming.path, pkg_type, incoming.digests)


async def _sign_upfront(pool, storage: Storage, signer, pkg: ParsedPackage, incoming: Incoming):
    """rpm: sign the package once, now, so a rebuild never waits for its signing (add-one stays cheap).
    Returns the signed copy's ParsedPackage (already in the pool), or None if it exists or failed;
    a failure is not fatal: the rebuild signs whatever is still unsigned."""
    done = await pool.fetchval("SELECT signed_id FROM package_files WHERE sha256 = $1 AND signed_by = $2",
                               pkg.sha256, signer.fingerprint)
    if done is not None:
        return None
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, sign_rpm_file, storage, signer, incoming.path, pkg)
    except Exception as exc:
        log.warning("signing %s at upload failed (the rebuild will retry): %s", pkg.filename, exc)
        return None


async def add_file(pool, storage: Storage, snap_id: int, pkg_type: str, incoming: Incoming, client_name: str, *,
                   overwrite: bool = False, ignore_if_exists: bool = False, signer=None) -> FileResult:
    adopted = False
    try:
        if incoming.digests.size == 0:
            return FileResult(client_name, Outcome.empty, reason="empty file")
        try:
            pkg = await parse_incoming(incoming, pkg_type)
        except PackageError as exc:
            return FileResult(client_name, Outcome.invalid, reason=exc.reason)
        signed = None
        if pkg.type == "rpm" and signer is not None and (overwrite or not await pool.fetchval(
                "SELECT 1 FROM snapshot_packages WHERE snapshot_id = $1 AND filename = $2", snap_id, pkg.filename)):
            signed = await _sign_upfront(pool, storage, signer, pkg, incoming)
        async with pool.acquire() as conn, conn.transaction():
            # The row lock serialises uploads into one snapshot (same-name races).
            snap, repo = await snapshot_with_repo(conn, snap_id, for_update=True)
            current = await conn.fetchrow(
                "SELECT p.sha256 FROM snapshot_packages sp JOIN package_files p ON p.id = sp.package_id"
                " WHERE sp.snapshot_id = $1 AND sp.filename = $2", snap.id, pkg.filename)
            if current is not None:
                if ignore_if_exists:
                    return FileResult(client_name, Outcome.ignored, pkg.filename)
                if not overwrite:
                    return FileResult(client_name, Outcome.exists, pkg.filename, "a package with this file "
                                      "name is already in the snapshot")
            package_id = await store_row(conn, pkg)
            if signed is not None:
                signed_id = await store_row(conn, signed, signed_by=signer.fingerprint)
                await conn.execute("UPDATE package_files SET signed_id = $2, signed_by = $3 WHERE id = $1",
                                   package_id, signed_id, signer.fingerprint)
            storage.adopt(incoming)          # into the pool before commit: a row never lacks its file
            adopted = True
            await conn.execute(
                "INSERT INTO snapshot_packages (snapshot_id, filename, package_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (snapshot_id, filename) DO UPDATE SET package_id = $3, added_at = now()",
                snap.id, pkg.filename, package_id)
            await conn.execute("UPDATE snapshots SET reconstruct = 'needed' WHERE id = $1", snap.id)
        return FileResult(client_name, Outcome.uploaded, pkg.filename)
    finally:
        if not adopted:
            incoming.discard()


_INSERT_ROW = (
    "INSERT INTO package_files (sha256, sha1, md5, size, type, name, version, release, epoch, arch, filename,"
    " stanza, primary_xml, filelists_xml, other_xml, signed_by)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    " ON CONFLICT (sha256) DO ")


def _row(p: ParsedPackage, signed_by: str | None) -> tuple:
    stanza = render_stanza(p.control) if p.type == "deb" else None
    return (p.sha256, p.sha1, p.md5, p.size, p.type, p.name, p.version, p.release, p.epoch, p.arch, p.filename,
            stanza, p.chunks.get("primary"), p.chunks.get("filelists"), p.chunks.get("other"), signed_by)


async def store_row(conn, p: ParsedPackage, signed_by: str | None = None) -> int:
    """The package_files row of a parsed package (the existing one if its SHA-256 is known); its id."""
    return await conn.fetchval(_INSERT_ROW + "UPDATE SET sha256 = EXCLUDED.sha256 RETURNING id", *_row(p, signed_by))


_COLUMNS = ("sha256, sha1, md5, size, type, name, version, release, epoch, arch, filename, stanza, primary_xml,"
            " filelists_xml, other_xml, signed_by")
_UNNEST = ("unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[],"
           " $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[]")
_INSERT_MANY = (f"INSERT INTO package_files ({_COLUMNS}) SELECT * FROM {_UNNEST})"
                " ON CONFLICT (sha256) DO NOTHING")
# Each row with the id of its signed copy (whose row is already there), found by the sha256 index.
_INSERT_MANY_LINKED = (
    f"INSERT INTO package_files ({_COLUMNS}, signed_id)"
    f" SELECT u.sha256, u.sha1, u.md5, u.size, u.type, u.name, u.version, u.release, u.epoch, u.arch, u.filename,"
    f" u.stanza, u.primary_xml, u.filelists_xml, u.other_xml, u.signed_by, s.id"
    f" FROM {_UNNEST}, $17::text[]) AS u({_COLUMNS}, copy) LEFT JOIN package_files s ON s.sha256 = u.copy"
    " ON CONFLICT (sha256) DO NOTHING")


def _columns(rows: list[tuple]) -> list[list]:
    """Rows in digest order (two runs storing some of the same files never wait on each other in a cycle), as
    columns (one INSERT per row costs the server a statement each)."""
    return [list(column) for column in zip(*sorted(rows, key=lambda r: r[0]))]


async def store_rows(conn, packages: list[ParsedPackage], copies: list[ParsedPackage | None] | None = None,
                     fpr: str | None = None) -> None:
    """The package_files rows of many parsed packages, rows already there kept. `copies`: each package's copy
    signed with the key `fpr` (or None), whose row is written first and named by the package's row."""
    pairs = [(p, c) for p, c in zip(packages, copies or [None] * len(packages))]
    await _store_copies(conn, [(p, c) for p, c in pairs if c is not None], fpr)
    if pairs:
        await conn.execute(_INSERT_MANY_LINKED, *_columns(
            [(*_row(p, fpr if c is not None else None), c.sha256 if c is not None else None) for p, c in pairs]))
    own = [p.sha256 for p, c in pairs if c is not None and c.sha256 == p.sha256]
    if own:         # already signed with Depot's key: the package is its own signed copy
        await conn.execute("UPDATE package_files SET signed_id = id, signed_by = $2 WHERE sha256 = ANY($1::text[])",
                           own, fpr)


async def _store_copies(conn, pairs: list[tuple[ParsedPackage, ParsedPackage]], fpr: str) -> None:
    """The rows of (original, signed copy) pairs' copies, rows already there kept; a package already signed
    with the key is its own copy (no second row)."""
    copies = [_row(c, fpr) for p, c in pairs if c.sha256 != p.sha256]
    if copies:
        await conn.execute(_INSERT_MANY, *_columns(copies))


async def store_signed(conn, pairs: list[tuple[ParsedPackage, ParsedPackage]], fpr: str) -> None:
    """The rows of signed copies (rows already there are kept) and their link from each original's row (which
    exists), in two round trips."""
    await _store_copies(conn, pairs, fpr)
    await conn.execute(
        "UPDATE package_files p SET signed_id = s.id, signed_by = $3"
        " FROM unnest($1::text[], $2::text[]) AS u(original, signed) JOIN package_files s ON s.sha256 = u.signed"
        " WHERE p.sha256 = u.original",
        [o.sha256 for o, _ in pairs], [s.sha256 for _, s in pairs], fpr)


def summarize(results: list[FileResult]) -> tuple[bool, dict[str, list[str]]]:
    """(all_ok, headings -> file names) for the reference's reply shape; every file is reported."""
    groups: dict[str, list[str]] = {}
    for r in results:
        groups.setdefault(HEADINGS[r.outcome], []).append(r.client_name)
    return not any(r.outcome in FAILED for r in results), groups
