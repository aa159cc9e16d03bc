"""Signing with a real gpg key: apt-style Release signatures, repomd.xml.asc, rpm signatures."""
import os
import stat
import subprocess

import pytest

from app.repos.signing import Signer
from tests.clients import rpm_checksig, rpm_keyring


def _gpgv(tmp_path, signer, *args):
    keyring = tmp_path / "key.gpg"
    keyring.write_bytes(signer.gpg.export_keys(signer.fingerprint, armor=False))
    return subprocess.run(["gpgv", "--keyring", str(keyring), *args], capture_output=True)


def test_release_and_repomd_signatures_verify(tmp_path, signer):
    release = tmp_path / "Release"
    release.write_text("Origin: test\nSuite: stable\n")
    inrelease, detached = signer.sign_release(release)
    assert inrelease.read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512")
    assert detached.read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    assert _gpgv(tmp_path, signer, str(inrelease)).returncode == 0
    assert _gpgv(tmp_path, signer, str(detached), str(release)).returncode == 0
    release.write_text("Origin: tampered\n")
    assert _gpgv(tmp_path, signer, str(detached), str(release)).returncode != 0
    repomd = tmp_path / "repomd.xml"
    repomd.write_text("<repomd/>\n")
    asc = signer.sign_repomd(repomd)
    assert _gpgv(tmp_path, signer, str(asc), str(repomd)).returncode == 0


def test_key_is_private_and_reused(tmp_path, signer):
    assert stat.S_IMODE(os.stat(signer.home).st_mode) == 0o700
    for f in (signer.home / "private-keys-v1.d").iterdir():
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0
    again = Signer(signer.home)
    assert again.fingerprint == signer.fingerprint          # generated once, then found
    assert "PRIVATE" not in signer.public_key()


def test_import_key_from_file(tmp_path, signer):
    key_file = tmp_path / "key.asc"
    key_file.write_text(signer.gpg.export_keys(signer.fingerprint, secret=True, armor=True,
                                               expect_passphrase=False))
    imported = Signer(tmp_path / "h", key_file=str(key_file))
    try:
        assert imported.fingerprint == signer.fingerprint
    finally:
        imported.close()


def test_signed_rpm_verifies_against_the_public_key(tmp_path, signer, rpm_dir):
    signed = signer.sign_rpm(rpm_dir / "depot-hello-1.0-1.noarch.rpm", tmp_path / "signed.rpm")
    dbpath = rpm_keyring(tmp_path / "rpmdb", signer.public_key())
    out = rpm_checksig(dbpath, signed)
    assert out.returncode == 0 and "signatures OK" in out.stdout
    # The original is untouched (unsigned) and fails a signature-required check.
    orig = rpm_checksig(dbpath, rpm_dir / "depot-hello-1.0-1.noarch.rpm", "--define", "_pkgverify_level all")
    assert orig.returncode != 0


@pytest.mark.slow
def test_in_process_signatures_verify_like_gpgs(tmp_path, signer):
    """Depot's own key signs in process (openpgp.py); gpgv and gpg read the result as their own.
    A key gpg cannot hand over unprotected falls back to gpg, with the same results."""
    from app.repos.openpgp import load_native_key

    assert signer.native_key() is not None
    texts = ["Origin: t\nSuite: stable\nSHA256:\n 0f 12 main/binary-amd64/Packages\n",
             "-leading dash\ntrailing \t\n\nblank line above, ünïcode\n"]
    protected = tmp_path / "pgh"
    protected.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(protected), "--pinentry-mode", "loopback", "--passphrase", "pw"]
    subprocess.run(gpg + ["--quick-gen-key", "Protected <p@x>", "rsa2048", "sign", "never"], check=True,
                   capture_output=True)
    fpr = next(line.split(":")[9] for line in subprocess.run(
        gpg + ["--list-secret-keys", "--with-colons"], capture_output=True, text=True).stdout.splitlines()
        if line.startswith("fpr"))
    assert load_native_key(protected, fpr) is None             # protected: gpg signs, not Depot
    subprocess.run(["gpgconf", "--homedir", str(protected), "--kill", "gpg-agent"], capture_output=True)
    for i, text in enumerate(texts):
        release = tmp_path / f"Release{i}"
        release.write_text(text)
        inrelease, detached = signer.sign_release(release)
        assert _gpgv(tmp_path, signer, str(inrelease)).returncode == 0
        assert _gpgv(tmp_path, signer, str(detached), str(release)).returncode == 0
        shown = subprocess.run(["gpg", "--batch", "--homedir", str(signer.home), "--decrypt", str(inrelease)],
                               capture_output=True)
        assert shown.returncode == 0
        assert shown.stdout == text.replace(" \t\n", "\n").encode()   # gpg drops trailing blanks too
        tampered = inrelease.read_text().replace("stable", "stab1e").replace("blank", "b1ank")
        inrelease.write_text(tampered)
        assert _gpgv(tmp_path, signer, str(inrelease)).returncode != 0
