"""Drive the real apt-get and dnf against a served repository, isolated from the host's config."""
from __future__ import annotations

import subprocess
from pathlib import Path


class AptRoot:
    """An apt configuration of its own: sources, state, cache, no host apt.conf.d or keyrings."""

    def __init__(self, root: Path, arch: str = "amd64"):
        self.root = Path(root)
        for d in ("state/lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d",
                  "etc/trusted.gpg.d", "dl"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "state/status").write_text("")
        self.sources = self.root / "etc/sources.list"
        self.arch = arch

    def set_source(self, url: str, dist: str, component: str, key_file: Path | None) -> None:
        opt = f"[signed-by={key_file}] " if key_file else ""
        self.sources.write_text(f"deb {opt}{url} {dist} {component}\n")

    def opts(self) -> list[str]:
        r = self.root
        pairs = {
            "Dir::State": r / "state", "Dir::State::status": r / "state/status", "Dir::Cache": r / "cache",
            "Dir::Etc::SourceList": self.sources, "Dir::Etc::SourceParts": r / "etc/sources.list.d",
            "Dir::Etc::Parts": r / "etc/apt.conf.d", "Dir::Etc::Preferences": r / "etc/preferences",
            "Dir::Etc::PreferencesParts": r / "etc/preferences.d", "Dir::Etc::Trusted": r / "etc/trusted.gpg",
            "Dir::Etc::TrustedParts": r / "etc/trusted.gpg.d", "APT::Architecture": self.arch,
            "APT::Architectures::": self.arch, "APT::Sandbox::User": "root", "Debug::NoLocking": "1",
            "Acquire::Languages": "none", "Acquire::Retries": "0", "Acquire::http::Timeout": "10",
        }
        out = []
        for k, v in pairs.items():
            out += ["-o", f"{k}={v}"]
        return out

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "-q", *self.opts(), *args], capture_output=True, text=True,
                              cwd=cwd or self.root / "dl", timeout=120)

    def update(self):
        return self.run("update")

    def download(self, *pkgs: str):
        return self.run("download", *pkgs)

    def policy(self, pkg: str) -> str:
        return subprocess.run(["apt-cache", *self.opts(), "policy", pkg], capture_output=True,
                              text=True, timeout=60).stdout


def dnf_install(root: Path, url: str, key_url: str, *pkgs: str, gpg: bool = True) -> subprocess.CompletedProcess:
    """Install into an empty --installroot from one repository given on the command line."""
    return dnf(root, url, key_url, "install", *pkgs, gpg=gpg)


def dnf(root: Path, url: str, key_url: str, *args: str, gpg: bool = True) -> subprocess.CompletedProcess:
    """`dnf ARGS` in --installroot `root`, with one repository given on the command line."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    conf = root.parent / f"{root.name}.dnf.conf"
    conf.write_text("[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=True\n"
                    "best=True\nskip_if_unavailable=False\n")
    check = "1" if gpg else "0"
    cmd = ["dnf", "-y", "-q", "--config", str(conf), "--installroot", str(root), "--releasever", "9",
           "--setopt=reposdir=/dev/null", "--setopt=cachedir=" + str(root.parent / f"{root.name}.cache"),
           "--setopt=install_weak_deps=False", "--nodocs", "--noplugins", "--disablerepo=*",
           f"--repofrompath=depot,{url}", "--enablerepo=depot",
           f"--setopt=depot.gpgcheck={check}", f"--setopt=depot.repo_gpgcheck={check}",
           f"--setopt=depot.gpgkey={key_url}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def rpm_installed(root: Path) -> list[str]:
    out = subprocess.run(["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\\n"],
                         capture_output=True, text=True)
    return sorted(line for line in out.stdout.splitlines() if not line.startswith("gpg-pubkey"))


def rpm_keyring(db: Path, *armored: str) -> Path:
    """An rpm database at `db` that trusts these ASCII-armored public keys (rpmkeys --import)."""
    db = Path(db)
    db.mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(armored):
        path = db.parent / f"{db.name}-{i}.asc"
        path.write_text(key)
        subprocess.run(["rpmkeys", "--dbpath", str(db), "--import", str(path)], check=True)
    return db


def rpm_checksig(db: Path, path: Path, *options: str) -> subprocess.CompletedProcess:
    """`rpmkeys --checksig` of the file at `path` against the keys of `db` (rpm_keyring), with these options."""
    return subprocess.run(["rpmkeys", "--dbpath", str(db), "--checksig", *options, str(path)],
                          capture_output=True, text=True)
