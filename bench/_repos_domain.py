"""Domain-level benchmark: Depot's metadata rebuild vs apt-ftparchive and createrepo_c on the
same generated files, measured in one run and printed as ratios. (bench/repos.py runs the
same comparison through the HTTP API and the worker.)

    .venv/bin/python bench/_repos_domain.py [--count 5000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.repos.packages import parse_package
from app.repos.publish import deb_entry, publish_deb, publish_rpm, rpm_entry
from app.repos.signing import Signer
from app.repos.storage import Storage
from tests.pkgfactory import bench_debs, bench_rpms, make_deb, make_rpms


def timed(fn, *a, **kw):
    t = time.perf_counter()
    fn(*a, **kw)
    return time.perf_counter() - t


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, **kw)


def ingest(storage, files, kind):
    out = []
    for f in files:
        inc = storage.receive_file(f)
        out.append(parse_package(inc.path, kind, inc.digests))
        storage.adopt(inc)
    return out


def bench_deb(count, work: Path, storage: Storage, signer: Signer, results):
    src = bench_debs(count, root=str(Path(__file__).parent / "out"))
    files = sorted(src.glob("*.deb"))
    parsed = ingest(storage, files, "deb")
    entries = [deb_entry(p) for p in parsed]
    gpg = f"gpg --batch --yes --homedir {signer.home} -u {signer.fingerprint} --digest-algo SHA512"

    # Reference: apt-ftparchive over the same files, gzip, Release, both signatures.
    ref = work / "ref-deb"
    (ref / "pool").mkdir(parents=True)
    os.symlink(src.resolve(), ref / "pool/main")
    (ref / "dists/bench/main/binary-amd64").mkdir(parents=True)

    def reference(db: str = ""):
        sh(f"apt-ftparchive {db} packages pool/main > dists/bench/main/binary-amd64/Packages", cwd=ref)
        sh("gzip -6 -kf dists/bench/main/binary-amd64/Packages", cwd=ref)
        sh("apt-ftparchive -o APT::FTPArchive::Release::Suite=bench release dists/bench > Release.tmp "
           "&& mv Release.tmp dists/bench/Release", cwd=ref)
        sh(f"{gpg} --clearsign -o dists/bench/InRelease dists/bench/Release && "
           f"{gpg} -abs -o dists/bench/Release.gpg dists/bench/Release", cwd=ref)

    t_ref = timed(reference)
    t_depot = timed(publish_deb, storage, "deb/bench/bench/main/1", "b1", dist="bench", component="main",
                    entries=entries, signer=signer)
    results.append(("deb full rebuild", count, t_depot, t_ref, 0.25))

    # Add one: apt-ftparchive with a warm --db cache vs Depot adding one row and rebuilding.
    reference("--db cache.db")              # warm the cache
    extra = make_deb(work / "extra", "bench-added", "1.0-1", "amd64")
    shutil.copy(extra, src / extra.name)
    try:
        t_ref1 = timed(reference, "--db cache.db")

        def depot_add_one():
            p = ingest(storage, [extra], "deb")[0]
            publish_deb(storage, "deb/bench/bench/main/1", "b1", dist="bench", component="main",
                        entries=entries + [deb_entry(p)], signer=signer)
        t_depot1 = timed(depot_add_one)
    finally:
        (src / extra.name).unlink()
    results.append(("deb add one + rebuild", count, t_depot1, t_ref1, 0.5))


def bench_rpm(count, work: Path, storage: Storage, signer: Signer, results):
    src = bench_rpms(count, root=str(Path(__file__).parent / "out"))
    files = sorted(src.glob("*.rpm"))
    parsed = ingest(storage, files, "rpm")
    entries = [(rpm_entry(p), p.filename) for p in parsed]

    ref = work / "ref-rpm"
    ref.mkdir()
    os.symlink(src.resolve(), ref / "packages")
    t_ref = timed(sh, f"createrepo_c -q --compress-type=gz --general-compress-type=gz {ref}")
    t_depot = timed(publish_rpm, storage, "rpm/bench/9/1", "r1", entries=entries, signer=signer)
    results.append(("rpm full rebuild", count, t_depot, t_ref, 0.25))

    extra = make_rpms(work / "extra-rpm", [("bench-added", "1.0", "1", "noarch")])[0]
    shutil.copy(extra, src / extra.name)
    try:
        t_ref1 = timed(sh, f"createrepo_c -q --update --compress-type=gz --general-compress-type=gz {ref}")

        def depot_add_one():
            p = ingest(storage, [extra], "rpm")[0]
            publish_rpm(storage, "rpm/bench/9/1", "r1", entries=entries + [(rpm_entry(p), p.filename)],
                        signer=signer)
        t_depot1 = timed(depot_add_one)
    finally:
        (src / extra.name).unlink()
    results.append(("rpm add one + rebuild", count, t_depot1, t_ref1, 0.1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="depot-bench-") as tmp:
        work = Path(tmp)
        storage = Storage(work / "storage")
        signer = Signer(work / "gnupg", key_length=3072)
        signer.fingerprint
        results = []
        try:
            bench_deb(args.count, work, storage, signer, results)
            bench_rpm(args.count, work, storage, signer, results)
        finally:
            signer.close()
    print(f"{'case':<24}{'packages':>9}{'depot s':>10}{'reference s':>13}{'ratio':>8}{'target':>8}")
    ok = True
    for name, n, d, r, target in results:
        ratio = d / r
        ok &= ratio <= target
        print(f"{name:<24}{n:>9}{d:>10.3f}{r:>13.3f}{ratio:>8.3f}{'<=' + str(target):>8}"
              f"{'' if ratio <= target else '  MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
