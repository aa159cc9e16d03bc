"""Each source's own keyring: armored public keys read with gpg, signatures checked with gpgv.

A source's keys are rows of source_keys; verification writes those rows alone into a throwaway
keyring, so a key added for one source never validates another (the reference trusts one global
keyring for every source). gpg runs in a temporary home each time: nothing is imported into Depot's
signing home, and no agent is started.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from app.domain_errors import Invalid

GPG_TIMEOUT = 60


@dataclass
class PublicKey:
    fingerprint: str
    public_key: bytes             # binary export of the key and its subkeys
    uids: str
    expires_at: datetime | None

    def wire(self) -> dict:
        return {"fingerprint": self.fingerprint, "uids": self.uids,
                "expires": self.expires_at.isoformat() if self.expires_at else None}


class SignatureError(Exception):
    """The upstream's signature did not verify with the source's keys; the message says why."""


def _gpg(home: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--homedir", home, "--batch", "--no-autostart", "--no-tty", *args],
                          input=data, capture_output=True, timeout=GPG_TIMEOUT)


def read_public_keys(armored: str) -> list[PublicKey]:
    """The public keys of an ASCII-armored block (several keys allowed); Invalid for anything else."""
    if not isinstance(armored, str) or "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in armored:
        raise Invalid("An ASCII-armored OpenPGP public key block is required")
    if "PRIVATE KEY BLOCK" in armored:
        raise Invalid("Give the public key only, never a secret key")
    with tempfile.TemporaryDirectory(prefix="depot-keys-") as home:
        _gpg(home, "--import", data=armored.encode())
        listing = _gpg(home, "--with-colons", "--fixed-list-mode", "--list-keys")
        keys = _parse_listing(listing.stdout.decode("utf-8", "replace"))
        if not keys:
            raise Invalid("No usable OpenPGP public key in the block")
        out = []
        for fpr, (uids, expires) in keys.items():
            exported = _gpg(home, "--export", "--export-options", "export-minimal", fpr)
            if exported.returncode != 0 or not exported.stdout:
                raise Invalid(f"Could not read the key {fpr}")
            out.append(PublicKey(fpr, exported.stdout, uids, expires))
    return out


def _parse_listing(text: str) -> dict[str, tuple[str, datetime | None]]:
    """gpg --with-colons: each `pub` line, then its `fpr` line (the primary key's), then `uid` lines."""
    keys: dict[str, tuple[str, datetime | None]] = {}
    current, expires, uids, want_fpr = None, None, [], False
    for line in text.splitlines():
        f = line.split(":")
        if f[0] == "pub":
            if current:
                keys[current] = (", ".join(uids), expires)
            current, uids, want_fpr = None, [], True
            expires = datetime.fromtimestamp(int(f[6]), timezone.utc) if len(f) > 6 and f[6].isdigit() else None
        elif f[0] == "fpr" and want_fpr:
            current, want_fpr = f[9], False
        elif f[0] == "uid" and current:
            uids.append(f[9])
    if current:
        keys[current] = (", ".join(uids), expires)
    return keys


@dataclass
class Verified:
    text: bytes                   # only what the signature covers
    fingerprint: str              # the primary key that signed


def verify(keys: list[bytes], signed: bytes, detached: bytes | None = None, *, label: str = "InRelease") -> Verified:
    """Check a clear-signed file (`signed`), or `signed` against a detached signature, with these keys
    only. Returns the signed text as gpgv read it (never the raw file: text outside the signed block
    is dropped). Raises SignatureError naming the reason."""
    if not keys:
        raise SignatureError(f"{label}: the source has no key to check it with (add one: POST .../keys)")
    with tempfile.TemporaryDirectory(prefix="depot-verify-") as home:
        d = Path(home)
        (d / "keyring.gpg").write_bytes(b"".join(keys))
        args = ["gpgv", "--homedir", home, "--keyring", str(d / "keyring.gpg"), "--status-fd", "1"]
        if detached is None:
            (d / "signed").write_bytes(signed)
            args += ["--output", str(d / "out"), str(d / "signed")]
        else:
            (d / "data").write_bytes(signed)
            (d / "data.sig").write_bytes(detached)
            args += [str(d / "data.sig"), str(d / "data")]
        proc = subprocess.run(args, capture_output=True, timeout=GPG_TIMEOUT)
        status = proc.stdout.decode("utf-8", "replace").splitlines()
        fpr = _valid_signer(status)
        if proc.returncode != 0 or fpr is None:
            raise SignatureError(f"{label}: {_failure(status, proc.stderr)}")
        text = (d / "out").read_bytes() if detached is None else signed
    return Verified(text, fpr)


def _valid_signer(status: list[str]) -> str | None:
    for line in status:
        f = line.split()
        # [GNUPG:] VALIDSIG <sig fpr> <date> <ts> <expire> <ver> <res> <pk algo> <hash> <class> <primary fpr>
        if len(f) >= 3 and f[1] == "VALIDSIG":
            return f[-1] if len(f) >= 12 else f[2]
    return None


_REASONS = (
    ("BADSIG", "BAD signature (the file was changed after it was signed)"),
    ("EXPKEYSIG", "signed with an expired key"),
    ("REVKEYSIG", "signed with a revoked key"),
    ("EXPSIG", "the signature has expired"),
    ("NO_PUBKEY", "signed with a key that is not one of this source's keys"),
    ("NODATA", "no signature found"),
)


def _failure(status: list[str], stderr: bytes) -> str:
    words = {line.split()[1] for line in status if len(line.split()) > 1}
    for word, reason in _REASONS:
        if word in words:
            return reason
    tail = stderr.decode("utf-8", "replace").strip().splitlines()
    return f"signature check failed ({tail[-1][:200] if tail else 'gpgv refused it'})"
