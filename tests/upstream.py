"""A local upstream for the mirror tests: throwaway OpenPGP keys, a Debian archive built with
dpkg-deb-format packages (tests/pkgfactory.py) and apt-ftparchive, and an aiohttp server on 127.0.0.1
that counts the requests of each path and can be told to misbehave."""
from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import lzma
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import zstandard
from aiohttp import web

from tests import pkgfactory


class GpgKey:
    """A throwaway signing key in a home of its own (ed25519: made in milliseconds)."""

    def __init__(self, name: str):
        # gpg-agent's socket lives in the home folder: keep the path short (108-byte socket limit).
        self.home = tempfile.mkdtemp(prefix="dk-")
        self._gpg("--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key",
                  f"{name} <{name}@upstream.test>", "ed25519", "sign", "never")
        out = self._gpg("--with-colons", "--list-keys").stdout.decode()
        self.fingerprint = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))

    def _gpg(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", self.home, "--batch", "--no-tty", *args], input=data,
                              capture_output=True, check=True, timeout=60)

    def armored(self) -> str:
        return self._gpg("--armor", "--export", self.fingerprint).stdout.decode()

    def clearsign(self, data: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA512", "--clearsign", data=data).stdout

    def detach(self, data: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA512", "--armor", "--detach-sign", data=data).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


COMPRESSORS = {"": lambda b: b, ".gz": lambda b: gzip.compress(b, mtime=0), ".xz": lzma.compress,
               ".bz2": bz2.compress, ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}


class DebArchive:
    """dists/<dist>/<component>/binary-<arch>/Packages* and pool/<component>/..., one component."""

    def __init__(self, root: Path, key: GpgKey, dist: str = "stable", component: str = "main"):
        self.root, self.key, self.dist, self.component = Path(root), key, dist, component
        self.pool = self.root / "pool" / component
        self.pool.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, version: str = "1.0-1", arch: str = "amd64") -> Path:
        return pkgfactory.make_deb(self.pool, name, version, arch)

    def add_udeb(self, name: str, version: str = "1.0-1", arch: str = "amd64") -> Path:
        """A udeb (a .deb by format, named .udeb): listed in debian-installer/binary-<arch>/Packages."""
        deb = pkgfactory.make_deb(self.pool, name, version, arch)
        return deb.rename(deb.with_suffix(".udeb"))

    def remove(self, name: str) -> None:
        for f in self.pool.glob(f"{name}_*.deb"):
            f.unlink()

    def build(self, *, compressions=("", ".gz", ".xz", ".bz2"), by_hash: bool = True, arches=("amd64",),
              valid_until: str | None = None, sign: str = "inrelease", extra_packages: bytes = b"") -> None:
        """Indexes by apt-ftparchive, then Release (apt-ftparchive release), then the signatures.
        `sign`: "inrelease" (InRelease and Release.gpg), "detached" (Release.gpg only), "none"."""
        dist_dir = self.root / "dists" / self.dist
        shutil.rmtree(dist_dir, ignore_errors=True)
        for arch in arches:
            listed = subprocess.run(["apt-ftparchive", "--arch", arch, "packages", f"pool/{self.component}"],
                                    cwd=self.root, capture_output=True, check=True).stdout
            stanzas = [p + b"\n\n" for p in listed.strip(b"\n").split(b"\n\n") if p]
            udebs = b"".join(p for p in stanzas if b".udeb\n" in p)
            indexes = [(dist_dir / self.component / f"binary-{arch}",
                        b"".join(p for p in stanzas if b".udeb\n" not in p) + extra_packages)]
            if udebs:
                indexes.append((dist_dir / self.component / "debian-installer" / f"binary-{arch}", udebs))
            for folder, plain in indexes:
                folder.mkdir(parents=True)
                for ext in compressions:
                    data = COMPRESSORS[ext](plain)
                    (folder / f"Packages{ext}").write_bytes(data)
                    if by_hash:
                        hashed = folder / "by-hash" / "SHA256" / hashlib.sha256(data).hexdigest()
                        hashed.parent.mkdir(parents=True, exist_ok=True)
                        hashed.write_bytes(data)
        options = ["-o", f"APT::FTPArchive::Release::Suite={self.dist}",
                   "-o", f"APT::FTPArchive::Release::Codename={self.dist}",
                   "-o", f"APT::FTPArchive::Release::Components={self.component}",
                   "-o", f"APT::FTPArchive::Release::Architectures={' '.join(arches)}",
                   "-o", f"APT::FTPArchive::Release::Acquire-By-Hash={'yes' if by_hash else 'no'}"]
        release = subprocess.run(["apt-ftparchive", *options, "release", "."], cwd=dist_dir, capture_output=True,
                                 check=True).stdout
        if by_hash:     # apt-ftparchive lists the by-hash copies too: keep the index names only
            release = b"".join(line for line in release.splitlines(keepends=True) if b"by-hash" not in line)
        if valid_until:
            release = release.replace(b"\nArchitectures:", f"\nValid-Until: {valid_until}\nArchitectures:".encode(), 1)
        self.write_release(release, sign=sign)

    def write_release(self, release: bytes, *, sign: str = "inrelease", key: GpgKey | None = None) -> None:
        dist_dir = self.root / "dists" / self.dist
        key = key or self.key
        (dist_dir / "Release").write_bytes(release)
        for name in ("InRelease", "Release.gpg"):
            (dist_dir / name).unlink(missing_ok=True)
        if sign == "inrelease":
            (dist_dir / "InRelease").write_bytes(key.clearsign(release))
        if sign in ("inrelease", "detached"):
            (dist_dir / "Release.gpg").write_bytes(key.detach(release))


def _createrepo_c(tool: str = "createrepo_c") -> str:
    # The PyPI wheel's (next to this Python): Debian's createrepo_c cannot write zstd.
    here = Path(sys.executable).parent / tool
    return str(here) if here.exists() else tool


class RpmArchive:
    """An rpm repository: Packages/*.rpm (rpmbuild) and repodata/ (createrepo_c), repomd.xml.asc."""

    def __init__(self, root: Path, key: GpgKey):
        self.root, self.key = Path(root), key
        self.packages = self.root / "Packages"
        self.packages.mkdir(parents=True, exist_ok=True)

    def add(self, *specs: tuple[str, str, str, str]) -> list[Path]:
        return pkgfactory.make_rpms(self.packages, list(specs))

    def build(self, *, compress: str = "gz", sign: bool = True, metadata: dict[str, tuple[str, str]] = {}) -> None:
        """metadata: repomd type -> (file name, text), added with modifyrepo_c (`.gz` and `.xz` names compressed so,
        others kept plain)."""
        shutil.rmtree(self.root / "repodata", ignore_errors=True)
        subprocess.run([_createrepo_c(), f"--general-compress-type={compress}", "--no-database", "--quiet", "."],
                       cwd=self.root, capture_output=True, check=True)
        for mdtype, (name, text) in metadata.items():
            stem, _, ext = name.rpartition(".")
            plain = self.root / (stem if ext in ("gz", "xz") else name)
            plain.write_text(text)
            how = [f"--compress-type={ext}"] if ext in ("gz", "xz") else ["--no-compress"]
            subprocess.run([_createrepo_c("modifyrepo_c"), f"--mdtype={mdtype}", *how, str(plain),
                            "repodata"], cwd=self.root, capture_output=True, check=True)
            plain.unlink()
        repomd = self.root / "repodata" / "repomd.xml"
        if sign:
            (self.root / "repodata" / "repomd.xml.asc").write_bytes(self.key.detach(repomd.read_bytes()))


class Upstream:
    """An aiohttp app serving `root`: counts GETs by path; `redirects` maps a path to a Location."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.counts: Counter = Counter()
        self.redirects: dict[str, str] = {}
        self.package_delay = 0.0        # seconds before each .deb answer (a slow upstream)
        self.stalled: set[str] = set()  # paths answered with a few bytes, then nothing (a drip-feeding upstream)
        self.failing: Counter = Counter()   # path -> how many more times to answer it 503 (Retry-After: 0)
        self.gzip_when_asked = False        # answer gzip-compressed (Content-Encoding) a client that accepts it
        self.gzipped = 0
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.counts[path] += 1
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if self.failing[path] > 0:
            self.failing[path] -= 1
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "0"})
        if self.package_delay and path.endswith(".deb"):
            await asyncio.sleep(self.package_delay)
        if path in self.stalled:
            resp = web.StreamResponse()
            real = self.root / path
            resp.content_length = real.stat().st_size if real.is_file() else 1000    # within any size limit
            await resp.prepare(request)
            await resp.write(b"x")
            await asyncio.sleep(3600)
        file = (self.root / path).resolve()
        if not file.is_file() or self.root.resolve() not in file.parents:
            raise web.HTTPNotFound()
        if self.gzip_when_asked and "gzip" in request.headers.get("Accept-Encoding", ""):
            self.gzipped += 1
            return web.Response(body=gzip.compress(file.read_bytes()), headers={"Content-Encoding": "gzip"})
        return web.FileResponse(file)

    def package_requests(self) -> int:
        return sum(n for p, n in self.counts.items() if p.endswith((".deb", ".rpm")))

    def index_requests(self) -> int:
        return sum(n for p, n in self.counts.items() if "/binary-" in p)



class Pki:
    """A throwaway CA with a server certificate for 127.0.0.1 and a client certificate (PEM texts)."""

    def __init__(self):
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def pem_key(key) -> str:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
              .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))

        def leaf(cn: str, serial: int, san=None):
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                       .public_key(key.public_key()).serial_number(serial).not_valid_before(now)
                       .not_valid_after(now + datetime.timedelta(days=1)))
            if san:
                builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode(), pem_key(key)

        self.ca = ca.public_bytes(serialization.Encoding.PEM).decode()
        self.server_cert, self.server_key = leaf("127.0.0.1", 2, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.client_cert, self.client_key = leaf("depot mirror", 3)

    def server_context(self, folder: Path):
        """TLS for the upstream: its certificate, and a client certificate from this CA required."""
        import ssl

        (folder / "server.pem").write_text(self.server_cert + self.server_key)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(folder / "server.pem")
        ctx.load_verify_locations(cadata=self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
