"""Repository signing: Depot's key in gpg (python-gnupg), signatures in process (openpgp.py, packages/rpmsig.py)
when the key allows it, else by gpg and rpmsign.

Depot keeps its own GNUPGHOME under the storage folder (mode 0700) so the host's keyrings are
never touched. The key is generated on first use without a passphrase (a passphrase stored next
to the key, as Repomanager does, protects nothing) or imported once from a file named by a
setting. Only the public part ever leaves this module.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import gnupg

from .openpgp import load_native_key
from .packages import rpmsig

DIGEST = "SHA512"   # apt refuses SHA1 signatures; SHA512 is what Debian's archive uses


class SigningError(Exception):
    pass


class Signer:
    def __init__(self, home, *, key_file: str | None = None, key_type: str = "RSA", key_length: int = 3072,
                 name: str = "Depot repository signing key", email: str = "depot@localhost"):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.gpg = gnupg.GPG(gnupghome=str(self.home))
        self.gpg.encoding = "utf-8"
        self._key_file = key_file
        self._key_type, self._key_length = key_type, key_length
        self._name, self._email = name, email
        self._fpr: str | None = None
        self._lock = threading.Lock()
        self._native = None         # openpgp.NativeKey, or False once known to be unusable

    # ---- key ---------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        if self._fpr is None:
            with self._lock:
                if self._fpr is None:
                    fpr = self._ensure_key()
                    # Once per process, with the key: the secret part for in-process signatures.
                    self._native = load_native_key(self.home, fpr) or False
                    self._fpr = fpr
        return self._fpr

    def _ensure_key(self) -> str:
        # App and worker processes share the home: a file lock makes exactly one of them create it.
        import fcntl

        with open(self.home / ".depot-key.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._find_or_create_key()

    def _find_or_create_key(self) -> str:
        keys = self.gpg.list_keys(secret=True)
        if keys:
            return keys[0]["fingerprint"]
        if self._key_file:
            self.gpg.import_keys(Path(self._key_file).read_text())
            secret = self.gpg.list_keys(secret=True)
            if not secret:
                raise SigningError("the signing key file holds no usable secret key")
            return secret[0]["fingerprint"]
        params = self.gpg.gen_key_input(
            key_type=self._key_type, key_length=self._key_length, key_usage="sign",
            name_real=self._name, name_email=self._email, expire_date=0, no_protection=True)
        key = self.gpg.gen_key(params)
        if not key.fingerprint:
            raise SigningError(f"key generation failed: {key.stderr[-300:]}")
        for f in self.home.glob("private-keys-v1.d/*"):
            os.chmod(f, 0o600)
        return key.fingerprint

    def public_key(self) -> str:
        armored = self.gpg.export_keys(self.fingerprint, armor=True)
        if not armored:
            raise SigningError("could not export the public key")
        return armored

    # ---- signatures --------------------------------------------------------------------------
    def native_key(self):
        """Depot's key for in-process signing (openpgp.py), or None: then gpg signs."""
        self.fingerprint    # loads it
        return self._native or None

    def _sign(self, data: bytes, *, clearsign: bool, detach: bool) -> bytes:
        native = self.native_key()
        if native is not None:
            return native.clearsign(data) if clearsign else native.detached_armor(data)
        return self._gpg_sign(data, clearsign=clearsign, detach=detach)

    def _gpg_sign(self, data: bytes, *, clearsign: bool, detach: bool) -> bytes:
        sig = self.gpg.sign(data, keyid=self.fingerprint, clearsign=clearsign, detach=detach,
                            binary=False, extra_args=["--digest-algo", DIGEST])
        if not sig.data:
            raise SigningError(f"gpg signing failed: {(sig.stderr or '')[-300:]}")
        return sig.data

    def sign_release(self, release_path) -> tuple[Path, Path]:
        """Release -> InRelease (clear-signed) and Release.gpg (detached, armored)."""
        release_path = Path(release_path)
        data = release_path.read_bytes()
        if self.native_key() is not None:     # in process, no gpg subprocess
            clear_sig = self._sign(data, clearsign=True, detach=False)
            detach_sig = self._sign(data, clearsign=False, detach=True)
        else:
            # Two independent gpg runs; in parallel they cost one.
            with ThreadPoolExecutor(max_workers=2) as pool:
                clear = pool.submit(self._sign, data, clearsign=True, detach=False)
                detach = pool.submit(self._sign, data, clearsign=False, detach=True)
                clear_sig, detach_sig = clear.result(), detach.result()
        inrelease = release_path.with_name("InRelease")
        inrelease.write_bytes(clear_sig)
        detached = release_path.with_name("Release.gpg")
        detached.write_bytes(detach_sig)
        return inrelease, detached

    def sign_repomd(self, repomd_path) -> Path:
        repomd_path = Path(repomd_path)
        asc = repomd_path.with_name("repomd.xml.asc")
        asc.write_bytes(self._sign(repomd_path.read_bytes(), clearsign=False, detach=True))
        return asc

    def sign_rpm(self, src, dst) -> Path:
        """Sign a copy of `src` at `dst`. Callers keep the signed copy (in the pool) and never sign the
        same package twice."""
        return self.sign_rpms([(src, dst)])[0]

    def sign_rpms(self, pairs: list[tuple]) -> list[Path]:
        """Sign copies of many rpms: in process with Depot's key (packages/rpmsig.py: the file rpmsign
        writes), else, and for any package rpmsig leaves to it, with rpmsign. In process, threads would
        not help: the RSA signature holds the GIL."""
        native = self.native_key()
        left = list(pairs)
        if native is not None:
            sign = partial(native.sign, old_format=True)
            left = [(src, dst) for src, dst in pairs if not rpmsig.sign_file(src, dst, sign)]
        self.rpmsign(left)
        return [Path(dst) for _, dst in pairs]

    def sign_rpm_bytes(self, data: bytes) -> bytes | None:
        """An rpm held in memory, signed in process (rpmsig.sign_bytes); None when only rpmsign can sign it
        (sign_rpms, on a file)."""
        native = self.native_key()
        return None if native is None else rpmsig.sign_bytes(data, partial(native.sign, old_format=True))

    def rpmsign(self, pairs: list[tuple], batch: int = 50) -> list[Path]:
        """Sign copies with rpmsign: one run per batch (a process per file costs more than the signing),
        batches on every core (rpmsign runs gpg once per file)."""
        self.fingerprint  # resolve (or create) the key before the threads start
        batches = [pairs[i:i + batch] for i in range(0, len(pairs), batch)]
        with ThreadPoolExecutor(max_workers=max(1, min(len(batches), os.cpu_count() or 2))) as pool:
            results = list(pool.map(self._sign_batch, batches))
        return [path for chunk in results for path in chunk]

    def _sign_batch(self, pairs: list[tuple]) -> list[Path]:
        dsts = []
        for src, dst in pairs:
            shutil.copyfile(src, dst)
            dsts.append(Path(dst))
        cmd = ["rpmsign", "--addsign",
               "--define", f"_gpg_name {self.fingerprint}",
               "--define", "__gpg /usr/bin/gpg",
               "--define", f"_gpg_path {self.home}",
               *map(str, dsts)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "GNUPGHOME": str(self.home)})
        if proc.returncode != 0:
            for d in dsts:
                d.unlink(missing_ok=True)
            raise SigningError(f"rpmsign failed: {proc.stderr.strip()[-300:]}")
        return dsts

    def close(self) -> None:
        """Stop the gpg-agent gpg started for this home (tests make many homes)."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       capture_output=True)


_SIGNERS: dict[str, Signer] = {}


def signer_from_settings(settings) -> Signer:
    """One Signer per storage folder and process (the key lives under the storage folder)."""
    home = Path(settings.storage_dir) / "gnupg"
    signer = _SIGNERS.get(str(home))
    if signer is None:
        signer = _SIGNERS[str(home)] = Signer(
            home, key_file=settings.gpg_key_file, key_type=settings.gpg_key_type,
            key_length=settings.gpg_key_length, email=f"depot@{settings.server_name}")
    return signer
