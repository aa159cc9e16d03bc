"""rpm packages signed in process (packages/rpmsig.py): the file rpmsign writes, checked by rpm's own tools."""
import os
import shutil
import struct
import subprocess
import time
from functools import partial

import pytest

from app.repos.packages import rpmsig
from app.repos.packages.rpm import parse_rpm, signed_copy
from app.repos.signing import Signer, SigningError
from tests.clients import rpm_checksig, rpm_keyring


def _rpmdb(tmp_path, name, *signers):
    return rpm_keyring(tmp_path / name, *(s.public_key() for s in signers))


def _checksig(db, path):
    return rpm_checksig(db, path, "-v")


def _head(path) -> rpmsig.Package:
    with open(path, "rb") as f:
        return rpmsig.read_package_head(f)


def _created(path) -> int:
    """The creation time in a signed package's RSA header signature (hashed subpacket 2)."""
    packet = _head(path).signature[rpmsig.TAG_RSA][2]
    i = packet.index(b"\x05\x02")
    return struct.unpack(">I", packet[i + 2:i + 6])[0]


def _in_process(signer, src, dst, created=None) -> bool:
    return rpmsig.sign_file(src, dst, partial(signer.native_key().sign, created=created, old_format=True))


def _no_rpmsign(monkeypatch, signer):
    def refuse(pairs):
        raise AssertionError(f"rpmsign ran for {pairs}")
    monkeypatch.setattr(signer, "_sign_batch", refuse)


def test_in_process_signature_is_the_file_rpmsign_writes(tmp_path, signer, rpm_dir):
    """rpmsign first (gpg picks the time), then in process with that time: the same bytes, since an RSA
    PKCS#1 v1.5 signature is deterministic. Lead, main header and payload are the original's bytes."""
    for src in sorted(rpm_dir.glob("*.rpm")):
        ref = tmp_path / f"rpmsign-{src.name}"
        signer._sign_batch([(src, ref)])
        ours = tmp_path / f"ours-{src.name}"
        assert _in_process(signer, src, ours, created=_created(ref))
        assert ours.read_bytes() == ref.read_bytes()
        start = _head(src).header_start
        assert _head(ours).header_start == start
        assert ours.read_bytes()[:96] == src.read_bytes()[:96]
        assert ours.read_bytes()[start:] == src.read_bytes()[start:]
        # Signed again by the same key: rpmsign leaves such a file as it is, so does this.
        again = tmp_path / f"again-{src.name}"
        assert _in_process(signer, ours, again)
        assert again.read_bytes() == ours.read_bytes()


def test_a_shorter_signature_is_aligned_as_rpm_aligns_it(tmp_path, signer, rpm_dir):
    """About one signature in 256 is a byte shorter (its value starts with a zero byte): the entries after it
    are then padded to their type's alignment. The time that makes one is found here, and gpg is given it."""
    src = rpm_dir / "depot-hello-1.0-1.noarch.rpm"
    header, key = _head(src).header, signer.native_key()
    usual = max(len(key.sign(header, created=c, old_format=True)) for c in (1, 2, 3))
    created = int(time.time()) + 60
    while len(key.sign(header, created=created, old_format=True)) >= usual:
        created += 1
    ref = tmp_path / "rpmsign.rpm"
    shutil.copyfile(src, ref)
    subprocess.run(["rpmsign", "--addsign", "--define", f"_gpg_name {signer.fingerprint}",
                    "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_path {signer.home}",
                    "--define", f"_gpg_sign_cmd_extra_args --faked-system-time {created}!", str(ref)],
                   check=True, capture_output=True)
    assert len(_head(ref).signature[rpmsig.TAG_RSA][2]) < usual
    ours = tmp_path / "ours.rpm"
    assert _in_process(signer, src, ours, created=created)
    assert ours.read_bytes() == ref.read_bytes()


def test_signed_in_process_verifies_and_a_tampered_header_fails(tmp_path, signer, rpm_dir, monkeypatch):
    _no_rpmsign(monkeypatch, signer)
    srcs = sorted(rpm_dir.glob("*.rpm"))
    out = tmp_path / "signed"
    out.mkdir()
    signed = signer.sign_rpms([(s, out / s.name) for s in srcs])
    db = _rpmdb(tmp_path, "db", signer)
    fpr = signer.fingerprint.lower()
    for path in signed:
        check = _checksig(db, path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"Header V4 RSA/SHA512 Signature, key ID {fpr[-8:]}: OK" in check.stdout
        shown = subprocess.run(["rpm", "--dbpath", str(db), "-qp", "--qf", "%{RSAHEADER:pgpsig}", str(path)],
                               capture_output=True, text=True)
        assert shown.stdout.startswith("RSA/SHA512, ") and shown.stdout.endswith(f"Key ID {fpr[-16:]}")
        # createrepo_c reads it, and rpm's digest check of the payload passes.
        parsed = parse_rpm(path, verify_payload=True)
        assert path.name == parsed.filename
    listed = subprocess.run(["createrepo_c", "--quiet", str(out)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert len(list((out / "repodata").glob("*-primary.xml*"))) == 1

    data = bytearray(signed[0].read_bytes())
    i = data.index(b"Test package depot-")          # the %description, in the main header
    data[i] = ord("X")
    tampered = tmp_path / "tampered.rpm"
    tampered.write_bytes(data)
    check = _checksig(db, tampered)
    assert check.returncode != 0
    assert f"Header V4 RSA/SHA512 Signature, key ID {fpr[-8:]}: BAD" in check.stdout


@pytest.mark.parametrize("bits", [1024, 3072])
def test_upstream_signed_rpm_is_re_signed_with_depots_key(tmp_path, signer, rpm_dir, monkeypatch, bits):
    """A mirrored package signed upstream: its signature is replaced, as `rpmsign --addsign` does. A smaller
    upstream signature: the reserved space shrinks and the file keeps its size; a larger one: the signature
    header shrinks (rpmsign then writes a new lead; the original lead is kept)."""
    upstream = Signer(tmp_path / "up", key_length=bits)
    try:
        src = rpm_dir / "depot-tool-2.1-3.x86_64.rpm"
        up = tmp_path / "upstream.rpm"
        upstream._sign_batch([(src, up)])
        assert _checksig(_rpmdb(tmp_path, "updb", upstream), up).returncode == 0

        ref = tmp_path / "rpmsign.rpm"
        signer._sign_batch([(up, ref)])
        ours = tmp_path / "ours.rpm"
        assert _in_process(signer, up, ours, created=_created(ref))
        assert ours.read_bytes()[96:] == ref.read_bytes()[96:]
        assert ours.read_bytes()[:96] == up.read_bytes()[:96]
        assert (ours.stat().st_size == up.stat().st_size) == (bits < 2048)

        _no_rpmsign(monkeypatch, signer)
        resigned = signer.sign_rpm(up, tmp_path / "resigned.rpm")
        check = _checksig(_rpmdb(tmp_path, "depotdb", signer), resigned)
        assert check.returncode == 0, check.stdout
        assert f"key ID {signer.fingerprint.lower()[-8:]}: OK" in check.stdout
        packet = _head(resigned).signature[rpmsig.TAG_RSA][2]              # Depot's signature only
        assert bytes.fromhex(signer.fingerprint) in packet and bytes.fromhex(upstream.fingerprint) not in packet
        assert _checksig(_rpmdb(tmp_path, "updb2", upstream), resigned).returncode != 0
    finally:
        upstream.close()


def test_what_rpmsig_does_not_sign_goes_to_rpmsign(tmp_path, signer, rpm_dir):
    src = rpm_dir / "depot-hello-1.0-1.noarch.rpm"
    data = src.read_bytes()
    corrupt = tmp_path / "corrupt.rpm"
    corrupt.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))          # the payload's last byte
    bad_header = tmp_path / "bad-header.rpm"
    i = data.index(b"Test package depot-")
    bad_header.write_bytes(data[:i] + b"X" + data[i + 1:])
    for name, body in (("short.rpm", data[:300]), ("text.rpm", b"not an rpm\n" * 40)):
        (tmp_path / name).write_bytes(body)
    for path in (corrupt, bad_header, tmp_path / "short.rpm", tmp_path / "text.rpm"):
        dst = tmp_path / f"signed-{path.name}"
        assert not _in_process(signer, path, dst)
        assert not list(tmp_path.glob("signed-*"))                   # nothing written
        with pytest.raises(SigningError):                           # rpmsign refuses them too
            signer.sign_rpm(path, dst)
        assert not dst.exists()


def test_a_key_rpmsig_cannot_use_signs_with_rpmsign(tmp_path, rpm_dir):
    """A Depot key gpg holds but NativeKey does not take (here ed25519): rpmsign signs, as before."""
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-gen-key", "Ed <ed@depot.invalid>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    ed = Signer(home)
    try:
        assert ed.native_key() is None
        signed = ed.sign_rpm(rpm_dir / "depot-hello-1.0-1.noarch.rpm", tmp_path / "signed.rpm")
        check = _checksig(_rpmdb(tmp_path, "db", ed), signed)
        assert check.returncode == 0 and "EdDSA" in check.stdout, check.stdout
    finally:
        ed.close()
        shutil.rmtree(home, ignore_errors=True)


def _shorter_signature_time(key, header) -> int:
    usual = max(len(key.sign(header, created=c, old_format=True)) for c in (1, 2, 3))
    created = int(time.time()) + 60
    while len(key.sign(header, created=created, old_format=True)) >= usual:
        created += 1
    return created


def test_signed_copy_entry_is_what_createrepo_c_reads_from_it(tmp_path, signer, rpm_dir):
    """The signed copy's repodata entry derived from the original's (packages/rpm.signed_copy) is createrepo_c's
    reading of the signed file: unsigned packages, upstream-signed ones (smaller and larger signatures), a
    package already signed by Depot's key, and a signature one byte shorter. sign_bytes writes sign_file's bytes."""
    key = signer.native_key()
    upstreams = [Signer(tmp_path / f"up{bits}", key_length=bits) for bits in (1024, 3072)]
    try:
        cases = []
        for src in sorted(rpm_dir.glob("*.rpm")):
            cases.append((src, None))
        tool = rpm_dir / "depot-tool-2.1-3.x86_64.rpm"
        for i, up in enumerate(upstreams):
            cases.append((up.sign_rpm(tool, tmp_path / f"upstream{i}.rpm"), None))
        cases.append((signer.sign_rpm(tool, tmp_path / "ours.rpm"), None))
        hello = rpm_dir / "depot-hello-1.0-1.noarch.rpm"
        cases.append((hello, _shorter_signature_time(key, _head(hello).header)))
        sizes = set()
        for n, (src, created) in enumerate(cases):
            original = parse_rpm(src, verify_payload=False)
            sign = partial(key.sign, created=created or 1_800_000_000 + n, old_format=True)
            signed = rpmsig.sign_bytes(src.read_bytes(), sign)
            by_file = tmp_path / f"by-file-{n}.rpm"
            assert rpmsig.sign_file(src, by_file, sign) and by_file.read_bytes() == signed
            written = tmp_path / f"signed-{n}.rpm"
            written.write_bytes(signed)
            st = src.stat()
            os.utime(written, (st.st_atime, st.st_mtime))        # <time file> is the file's mtime
            read = parse_rpm(written, verify_payload=True)
            derived = signed_copy(original, signed)
            assert derived == read
            sizes.add(len(signed) - original.size)
        assert 0 in sizes and min(sizes) < 0      # signed in place, and with the main header moved (3072-bit upstream)
    finally:
        for up in upstreams:
            up.close()


def test_signing_into_the_pool_derives_entries_and_reads_a_copy_it_cannot_derive(storage, signer, rpm_dir):
    """sign_rpms_into_pool: each copy in the pool under its digest, its entry derived; an original entry not in
    createrepo_c's shape (here its checksum element altered) makes it read the copy with createrepo_c instead."""
    from dataclasses import replace

    from app.repos.packages import file_digests
    from app.repos.publish import sign_rpms_into_pool

    originals = []
    for src in sorted(rpm_dir.glob("*.rpm")):
        incoming = storage.receive_file(src)
        originals.append(parse_rpm(incoming.path, incoming.digests, verify_payload=False))
        storage.adopt(incoming)
    odd = originals[0]
    originals[0] = replace(odd, chunks={**odd.chunks, "primary": odd.chunks["primary"].replace(
        '<checksum type="sha256" pkgid="YES">', '<checksum pkgid="YES" type="sha256">')})
    signed = sign_rpms_into_pool(storage, signer, originals)
    for original, copy in zip(originals, signed):
        path = storage.pool_path(copy.sha256)
        assert copy.sha256 != original.sha256 and file_digests(path) == copy.digests
        read = parse_rpm(path, verify_payload=True)
        assert read.chunks["filelists"] == copy.chunks["filelists"] and read.chunks["other"] == copy.chunks["other"]
        assert f'<checksum type="sha256" pkgid="YES">{copy.sha256}</checksum>' in copy.chunks["primary"]
