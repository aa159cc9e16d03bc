"""Header-only OpenPGP signatures of rpm packages, made in process: the file `rpmsign --addsign` of rpm 4.18
writes (sign/rpmgensig.c), without a gpg process per package.

An rpm is a 96-byte lead, the signature header (padded to 8 bytes), the main header and the payload. Only the
signature header changes: its entries are read, every existing signature dropped (rpmsign replaces them),
Depot's RSA signature of the main header (magic included) added as RPMSIGTAG_RSA, and the reserved space shrunk
by as much as the header grew, so the file keeps its layout. The header is then written as rpm writes a header
it reloaded: entries in tag order, each aligned to its type, the region entry (tag 62) first and its trailer
last. The lead, the main header and the payload are copied unchanged.

`sign_file` returns False, having written nothing, for any package it does not take apart exactly as rpm
would (no payload digest: rpmsign would add a header+payload signature too; a bad digest: rpmsign refuses it;
any unexpected header shape): the caller then runs rpmsign on it.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

LEAD_SIZE = 96
HEADER_MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"
MAX_ENTRIES, MAX_DATA = 0xFFFF, 256 << 20          # rpm's own header limits (lib/header.c)
MAX_SIGNATURE_HEADER = 64 << 10

# Entry types: fixed sizes and alignments; 6 string, 8 string array, 9 i18n string.
BIN, STRING, STRING_ARRAY, I18NSTRING = 7, 6, 8, 9
TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, BIN: 1}

REGION_SIGNATURES = 62
TAG_RSA, TAG_SHA1, TAG_SHA256, TAG_MD5, TAG_RESERVED = 268, 269, 273, 1004, 1008
SIGNATURE_TAGS = {1002, 1005, 267, 268, 1006}   # rpmgensig.c deleteSigs: PGP, GPG, DSA, RSA, PGP5
TAG_IMMUTABLE, TAG_PAYLOADDIGEST, TAG_PAYLOADDIGESTALGO, TAG_PAYLOADDIGESTALT = 63, 5092, 5093, 5097
DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}


class Unsupported(Exception):
    """Not a package this module signs exactly as rpmsign does."""


def _data_length(kind: int, count: int, data: bytes, offset: int) -> int:
    if kind in TYPE_SIZE:
        return TYPE_SIZE[kind] * count
    if kind in (STRING, STRING_ARRAY, I18NSTRING):
        if kind == STRING and count != 1:
            raise Unsupported("string entry with a count")
        end = offset
        for _ in range(count):
            end = data.index(b"\0", end) + 1       # ValueError: unterminated
        return end - offset
    raise Unsupported(f"entry type {kind}")


def _align(kind: int, size: int) -> int:
    unit = TYPE_SIZE.get(kind, 1)
    return (-size) % unit if unit > 1 else 0


def read_header(blob: bytes, pos: int) -> tuple[dict[int, tuple[int, int, bytes]], int, int]:
    """The header at `pos`: ({tag: (type, count, data)}, region tag or 0, size with magic) after the checks
    rpm makes (bounds, alignment, no tag twice, the region trailer covering every entry)."""
    if blob[pos:pos + 8] != HEADER_MAGIC:
        raise Unsupported("no header magic")
    il, dl = struct.unpack_from(">II", blob, pos + 8)
    if not 0 < il <= MAX_ENTRIES or dl > MAX_DATA:
        raise Unsupported("header size")
    start = pos + 16 + 16 * il
    size = 16 + 16 * il + dl
    if pos + size > len(blob):
        raise Unsupported("truncated header")
    data = blob[start:start + dl]
    entries: dict[int, tuple[int, int, bytes]] = {}
    region, prev = 0, -1
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">iiii", blob, pos + 16 + 16 * i)
        if i == 0 and tag in (REGION_SIGNATURES, TAG_IMMUTABLE):
            trailer = data[offset:offset + 16] if kind == BIN and count == 16 and 0 <= offset else b""
            if len(trailer) != 16 or struct.unpack(">iiii", trailer) != (tag, BIN, -16 * il, 16):
                raise Unsupported("region trailer")      # entries outside the region (dribbles) included
            region = tag
            continue
        if count < 1 or offset < 0 or offset > dl or tag <= prev:
            raise Unsupported("header index")
        if _align(kind, offset):
            raise Unsupported("misaligned entry")
        try:
            length = _data_length(kind, count, data, offset)
        except ValueError:
            raise Unsupported("unterminated string") from None
        if offset + length > dl:
            raise Unsupported("entry past the data")
        entries[tag] = (kind, count, data[offset:offset + length])
        prev = tag
    return entries, region, size


def _size(entries: dict[int, tuple[int, int, bytes]]) -> int:
    """rpm's headerSizeof(HEADER_MAGIC_YES) of a header without its region entry."""
    size = 16
    for tag in sorted(entries):
        kind, _, value = entries[tag]
        size += _align(kind, size) + 16 + len(value)
    return size


def write_signature_header(entries: dict[int, tuple[int, int, bytes]]) -> bytes:
    """The header as rpm's headerReload(RPMTAG_HEADERSIGNATURES) then headerWrite lay it out."""
    index, data = [], bytearray()
    for tag in sorted(entries):
        kind, count, value = entries[tag]
        data += bytes(_align(kind, len(data)))
        index.append(struct.pack(">iiii", tag, kind, len(data), count))
        data += value
    il = len(index) + 1
    region = struct.pack(">iiii", REGION_SIGNATURES, BIN, len(data), 16)
    data += struct.pack(">iiii", REGION_SIGNATURES, BIN, -16 * il, 16)
    return HEADER_MAGIC + struct.pack(">II", il, len(data)) + region + b"".join(index) + bytes(data)


def _hex(entries, tag) -> str | None:
    entry = entries.get(tag)
    return entry[2].rstrip(b"\0").decode("ascii", "replace") if entry else None


def _same_signer(packet: bytes, ours: bytes) -> bool:
    """rpm's pgpDigParamsCmp of two signature packets: version, type, key and hash algorithms, issuer key id."""
    def params(p: bytes):
        try:
            ctb = p[0]
            if ctb & 0x40:
                first = p[1]
                body = p[2:] if first < 192 else p[3:] if first < 224 else p[6:]
            else:
                body = p[1 + (1, 2, 4)[ctb & 3]:]
            if body[0] != 4:
                return None
            hashed_len = struct.unpack_from(">H", body, 4)[0]
            hashed = body[6:6 + hashed_len]
            unhashed_len = struct.unpack_from(">H", body, 6 + hashed_len)[0]
            unhashed = body[8 + hashed_len:8 + hashed_len + unhashed_len]
            keyid = None
            for area in (hashed, unhashed):
                i = 0
                while i < len(area):
                    n = area[i]
                    if n < 192:
                        i += 1
                    elif n < 255:
                        n, i = ((n - 192) << 8) + area[i + 1] + 192, i + 2
                    else:
                        n, i = struct.unpack_from(">I", area, i + 1)[0], i + 5
                    if area[i] & 0x7F == 16:
                        keyid = area[i + 1:i + 9]
                    i += n
            return body[1:4], keyid
        except (IndexError, struct.error):
            return None

    mine = params(ours)
    return mine is not None and params(packet) == mine


@dataclass
class Package:
    """What signing reads of an rpm: the lead, the signature header's entries and the main header."""
    lead: bytes
    signature: dict[int, tuple[int, int, bytes]]
    header_start: int                       # in the file: after the signature header and its padding
    header: bytes                           # the main header, magic included: what the signature covers
    main: dict[int, tuple[int, int, bytes]]


def read_package_head(f) -> Package:
    """Read an rpm's lead, signature header and main header from the open file `f` (left at the payload)."""
    head = f.read(LEAD_SIZE + 16)
    if len(head) < LEAD_SIZE + 16 or head[:4] != b"\xed\xab\xee\xdb" or head[4] not in (3, 4) \
            or struct.unpack_from(">h", head, 78)[0] != 5:
        raise Unsupported("lead")
    il, dl = struct.unpack_from(">II", head, LEAD_SIZE + 8)
    if 16 + 16 * il + dl > MAX_SIGNATURE_HEADER:
        raise Unsupported("signature header size")
    size = 16 + 16 * il + dl
    head += f.read(size - 16 + (-size) % 8)
    signature, region, _ = read_header(head, LEAD_SIZE)
    if region != REGION_SIGNATURES or not signature or min(signature) < 100:
        raise Unsupported("signature header shape")
    header = f.read(16)
    if len(header) < 16:
        raise Unsupported("short file")
    il, dl = struct.unpack_from(">II", header, 8)
    if il > MAX_ENTRIES or dl > MAX_DATA:
        raise Unsupported("header size")
    header += f.read(16 * il + dl)
    main, main_region, _ = read_header(header, 0)
    if main_region != TAG_IMMUTABLE:
        raise Unsupported("v3 package")                # rpmsign refuses it
    return Package(head[:LEAD_SIZE], signature, len(head), header, main)


def new_signature_header(pkg: Package, packet: bytes) -> bytes | None:
    """The signature header rpmsign writes with `packet` (RPMSIGTAG_RSA), padding included; None when the
    package carries a signature by the same key with the same parameters (rpmsign then leaves it as it is)."""
    sig = pkg.signature
    if TAG_RSA in sig and _same_signer(sig[TAG_RSA][2], packet):
        return None
    new = {tag: e for tag, e in sig.items() if tag not in SIGNATURE_TAGS}
    new[TAG_RSA] = (BIN, len(packet), packet)
    # Shrink the reserved space by the growth (both sizes without the region, as rpm counts them): rpmsign then
    # writes in place; otherwise it rewrites the file with the new signature header.
    grew = _size(new) - _size(sig)
    reserved = new.get(TAG_RESERVED)
    in_place = reserved is not None and reserved[0] == BIN and 0 < grew < reserved[1]
    if in_place:
        new[TAG_RESERVED] = (BIN, reserved[1] - grew, reserved[2][:reserved[1] - grew])
    out = write_signature_header(new)
    out += bytes((-len(out)) % 8)
    if in_place and LEAD_SIZE + len(out) != pkg.header_start:
        raise Unsupported("signature header would not fit in place")
    return out


def _digest_checks(pkg: Package) -> list[tuple[object, str]]:
    """rpmsign signs only an intact package: the digests it checks that cover the payload, as (hash, expected
    hex) to be fed the payload; those of the header alone are checked here."""
    checks = []
    if TAG_PAYLOADDIGEST not in pkg.main and TAG_PAYLOADDIGESTALT not in pkg.main:
        raise Unsupported("no payload digest")         # rpmsign adds a header+payload signature
    if TAG_PAYLOADDIGEST in pkg.main:
        algo = pkg.main.get(TAG_PAYLOADDIGESTALGO)
        number = struct.unpack(">I", algo[2][:4])[0] if algo else 8
        if number not in DIGEST_ALGOS:
            raise Unsupported("payload digest algorithm")
        checks.append((hashlib.new(DIGEST_ALGOS[number]), _hex(pkg.main, TAG_PAYLOADDIGEST)))
    if TAG_MD5 in pkg.signature:
        checks.append((hashlib.md5(pkg.header), pkg.signature[TAG_MD5][2].hex()))   # header and payload
    for tag, name in ((TAG_SHA256, "sha256"), (TAG_SHA1, "sha1")):
        if tag in pkg.signature and _hex(pkg.signature, tag) != hashlib.new(name, pkg.header).hexdigest():
            raise Unsupported("header digest")
    return checks


def _signed_head(f, sign) -> tuple[bytes, list[tuple[object, str]]] | None:
    """Lead, new signature header and main header of the rpm open in `f` (left at the payload), and the
    digest checks the payload must pass; None when rpmsign must sign it."""
    try:
        pkg = read_package_head(f)
        checks = _digest_checks(pkg)
        signature = new_signature_header(pkg, sign(pkg.header))
    except (Unsupported, ValueError, IndexError, struct.error):
        return None
    if signature is None:                           # already signed so: the file as it is
        f.seek(LEAD_SIZE)
        signature = f.read(pkg.header_start - LEAD_SIZE)
        f.seek(pkg.header_start + len(pkg.header))
    return pkg.lead + signature + pkg.header, checks


def sign_file(src, dst, sign, chunk: int = 1 << 20) -> bool:
    """Write `src` signed at `dst` (`sign(data)` returns a signature packet); False, with nothing written, when
    rpmsign must do it."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".part")
    with open(src, "rb") as f:
        head = _signed_head(f, sign)
        if head is None:
            return False
        head, checks = head
        with open(tmp, "wb") as out:
            out.write(head)
            while block := f.read(chunk):
                for h, _ in checks:
                    h.update(block)
                out.write(block)
    if any(h.hexdigest() != expected for h, expected in checks):
        tmp.unlink()
        return False                                    # rpmsign refuses it, with its own message
    os.replace(tmp, dst)
    return True


def sign_bytes(data: bytes, sign) -> bytes | None:
    """`data`, an rpm held in memory, signed as sign_file signs a file; None when rpmsign must do it. Only the
    signature header differs: the signed copy is the original from its main header on, shifted by the size
    change (what packages/rpm.signed_copy relies on)."""
    f = io.BytesIO(data)
    head = _signed_head(f, sign)
    if head is None:
        return None
    head, checks = head
    payload = memoryview(data)[f.tell():]
    for h, expected in checks:
        h.update(payload)
        if h.hexdigest() != expected:
            return None
    return head + payload
