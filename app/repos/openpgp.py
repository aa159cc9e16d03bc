"""In-process OpenPGP signatures (RFC 4880 / 9580, v4, RSA, SHA-512) for repository metadata.

Running gpg costs a process start and an agent round trip per signature (2 or 3 per rebuild):
more than rendering a large index. Depot's own key is an unprotected RSA key
in its GNUPGHOME; it is exported from gpg once per process and signatures are made here with
`cryptography`, in the exact form gpg writes (issuer fingerprint and creation time hashed,
issuer key id unhashed). Any other key shape (a protected key, a signing subkey, not RSA) makes
`load_native_key` return None and the caller keeps using gpg. The same key signs rpm headers
(`packages/rpmsig.py`).
"""
from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import time
from dataclasses import dataclass

HASH_SHA512 = 10
ALGO_RSA = 1
SIG_BINARY = 0x00
SIG_TEXT = 0x01


@dataclass
class NativeKey:
    fingerprint: bytes          # 20 bytes (v4)
    private_key: object         # cryptography RSAPrivateKey

    def sign(self, data: bytes, sig_type: int = SIG_BINARY, created: int | None = None, *,
             old_format: bool = False) -> bytes:
        """One signature packet over `data` (already canonicalised for text signatures); `old_format`: the
        packet header gpg writes (an rpm header keeps gpg's packet as it is)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        created = int(time.time()) if created is None else created
        hashed = _subpacket(33, b"\x04" + self.fingerprint) + _subpacket(2, struct.pack(">I", created))
        head = bytes([4, sig_type, ALGO_RSA, HASH_SHA512]) + struct.pack(">H", len(hashed)) + hashed
        h = hashlib.sha512(data)
        h.update(head)
        h.update(b"\x04\xff" + struct.pack(">I", len(head)))
        digest = h.digest()
        sig = self.private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA512()))
        unhashed = _subpacket(16, self.fingerprint[-8:])
        body = head + struct.pack(">H", len(unhashed)) + unhashed + digest[:2] + _mpi(int.from_bytes(sig, "big"))
        return _old_packet(2, body) if old_format else _packet(2, body)

    def detached_armor(self, data: bytes) -> bytes:
        """`gpg --armor --detach-sign` (binary signature, as gpg makes for Release.gpg and repomd.xml.asc)."""
        return armor(self.sign(data, SIG_BINARY))

    def clearsign(self, data: bytes) -> bytes:
        """`gpg --clearsign` of a UTF-8 text (InRelease)."""
        text = data.decode("utf-8")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()     # the line end before "-----BEGIN PGP SIGNATURE-----" is not signed
        canon = "\r\n".join(line.rstrip(" \t\r") for line in lines).encode("utf-8")
        body = "".join(("- " + line if line.startswith("-") else line) + "\n" for line in lines)
        return (b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + body.encode("utf-8")
                + armor(self.sign(canon, SIG_TEXT)))


def _subpacket(kind: int, data: bytes) -> bytes:
    n = len(data) + 1
    assert n < 192
    return bytes([n, kind]) + data


def _mpi(value: int) -> bytes:
    bits = value.bit_length()
    return struct.pack(">H", bits) + value.to_bytes((bits + 7) // 8, "big")


def _packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + struct.pack(">I", n)
    return bytes([0xC0 | tag]) + length + body


def _old_packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    kind, size = (0, 1) if n < 0x100 else (1, 2) if n < 0x10000 else (2, 4)
    return bytes([0x80 | tag << 2 | kind]) + n.to_bytes(size, "big") + body


def _crc24_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24 = _crc24_table()


def _crc24(data: bytes) -> int:
    """The armor checksum (RFC 4880 6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24[(crc >> 16) ^ byte]
    return crc


def armor(packet: bytes) -> bytes:
    b64 = base64.b64encode(packet).decode()
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    crc = base64.b64encode(_crc24(packet).to_bytes(3, "big")).decode()
    return f"-----BEGIN PGP SIGNATURE-----\n\n{lines}\n={crc}\n-----END PGP SIGNATURE-----\n".encode()


# ---- reading the key gpg made --------------------------------------------------------------------
def _packets(data: bytes):
    i = 0
    while i < len(data):
        ctb = data[i]
        if not ctb & 0x80:
            raise ValueError("not an OpenPGP packet")
        if ctb & 0x40:                      # new format
            tag = ctb & 0x3F
            first = data[i + 1]
            if first < 192:
                n, i = first, i + 2
            elif first < 224:
                n, i = ((first - 192) << 8) + data[i + 2] + 192, i + 3
            elif first == 255:
                n, i = struct.unpack(">I", data[i + 2:i + 6])[0], i + 6
            else:
                raise ValueError("partial body lengths are not expected in a key")
        else:                               # old format
            tag, ltype = (ctb >> 2) & 0x0F, ctb & 0x03
            size = {0: 1, 1: 2, 2: 4}.get(ltype)
            if size is None:
                raise ValueError("indeterminate length")
            n = int.from_bytes(data[i + 1:i + 1 + size], "big")
            i += 1 + size
        yield tag, data[i:i + n]
        i += n


def _read_mpi(body: bytes, pos: int) -> tuple[int, int]:
    bits = struct.unpack(">H", body[pos:pos + 2])[0]
    size = (bits + 7) // 8
    return int.from_bytes(body[pos + 2:pos + 2 + size], "big"), pos + 2 + size


def parse_secret_key(data: bytes, fingerprint: str) -> NativeKey | None:
    """The RSA key of `fingerprint` from `gpg --export-secret-keys` output, if it is an unprotected
    primary key with no secret subkeys (gpg would then sign with it); None otherwise."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    packets = list(_packets(data))
    secrets = [body for tag, body in packets if tag in (5, 7)]
    if len(secrets) != 1 or packets[0][0] != 5:
        return None
    body = secrets[0]
    if body[0] != 4 or body[5] != ALGO_RSA:
        return None
    n, pos = _read_mpi(body, 6)
    e, pos = _read_mpi(body, pos)
    public = body[:pos]
    fpr = hashlib.sha1(b"\x99" + struct.pack(">H", len(public)) + public).digest()
    if fpr.hex().upper() != fingerprint.upper():
        return None
    if body[pos] != 0:                      # S2K usage: protected by a passphrase
        return None
    d, pos = _read_mpi(body, pos + 1)
    p, pos = _read_mpi(body, pos)
    q, pos = _read_mpi(body, pos)
    numbers = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                    rsa.rsa_crt_iqmp(p, q), rsa.RSAPublicNumbers(e, n))
    return NativeKey(fpr, numbers.private_key())


def load_native_key(home, fingerprint: str) -> NativeKey | None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return None
    proc = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback",
                           "--passphrase", "", "--export-secret-keys", fingerprint],
                          capture_output=True, timeout=60, check=False)
    if proc.returncode != 0 or not proc.stdout:
        return None
    try:
        return parse_secret_key(proc.stdout, fingerprint)
    except (ValueError, IndexError, struct.error):
        return None
