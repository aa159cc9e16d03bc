"""`make bench`, repositories: Depot's rebuilds and uploads beside the reference tools, one run.

Cases (5,000 generated packages by default, cached under bench/out/):
  deb full rebuild of a fresh snapshot copy   vs apt-ftparchive packages + gzip + release + gpg  (target <= 1/4)
  deb add one package + rebuild               vs apt-ftparchive --db (warm cache), same steps    (target <= 1/2)
  rpm full rebuild of a fresh snapshot copy   vs createrepo_c + gpg repomd.xml.asc              (target <= 1/4)
  rpm add one package + rebuild               vs createrepo_c --update + gpg                     (target <= 1/10)
  upload of large packages over HTTP          vs sha256sum of the same bytes; server peak RSS per size
Depot's times are the real rebuild (rows from PostgreSQL, render, sign, atomic publish), i.e. what
the `rebuild` worker task runs. Upload parsing happens at upload time and is not in rebuild times.

    .venv/bin/python bench/repos.py [--count 5000] [--upload-sizes 64,256,1024]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import db, embedded
from app.repos import model
from app.repos.rebuild import rebuild_snapshot
from app.repos.signing import Signer
from app.repos.storage import Storage
from app.repos.upload import Outcome, add_file
from app.settings import Settings
from tests.pkgfactory import bench_debs, bench_rpms, make_deb, make_rpms

OUT = ROOT / "bench" / "out"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, **kw)


# CPU seconds next to wall seconds: the machine may be shared, and wall time then measures the neighbours too.
# Depot's CPU is this process (all threads) plus its PostgreSQL server (every process of it, as rendering and
# fetching run there); the reference's is that of the child processes it ran (apt-ftparchive, gzip, gpg, ...).
CPU = {"depot": [], "reference": []}
_PG_PIDS: list[int] = []


def _pg_cpu() -> float:
    import psutil

    total = 0.0
    for pid in _PG_PIDS:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _own_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_sync(fn):
    c = _children_cpu()
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    CPU["reference"].append(_children_cpu() - c)
    return wall


async def timed(coro):
    c = _own_cpu() + _pg_cpu()
    t = time.perf_counter()
    await coro
    wall = time.perf_counter() - t
    CPU["depot"].append(_own_cpu() + _pg_cpu() - c)
    return wall


async def _report(coro):
    result = await coro
    print(f"  rebuild of snapshot {result['snapshot']}: {result['seconds']}s {result.get('timings')}", flush=True)
    return result


async def ingest(pool, storage, snap_id, kind, files, signer=None):
    async def one(f):
        inc = storage.receive_file(f)
        r = await add_file(pool, storage, snap_id, kind, inc, f.name, signer=signer)
        assert r.outcome == Outcome.uploaded, (f, r)
    for i in range(0, len(files), 16):
        await asyncio.gather(*(one(f) for f in files[i:i + 16]))


async def bench_deb(pool, storage, signer, work, count, results):
    src = bench_debs(count, root=str(OUT))
    files = sorted(src.glob("*.deb"))
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="bench", type="deb", dist="bench", section="main")
        base = await model.create_snapshot(conn, repo.id)
    await ingest(pool, storage, base.id, "deb", files)
    async with pool.acquire() as conn:
        fresh = await model.create_snapshot(conn, repo.id, base.id)      # a copy never built before

    gpg = f"gpg --batch --yes --homedir {signer.home} -u {signer.fingerprint} --digest-algo SHA512"
    ref = work / "ref-deb"
    (ref / "pool").mkdir(parents=True)
    os.symlink(src.resolve(), ref / "pool/main")
    (ref / "dists/bench/main/binary-amd64").mkdir(parents=True)

    def reference(db_opt=""):
        sh(f"apt-ftparchive {db_opt} packages pool/main > dists/bench/main/binary-amd64/Packages", cwd=ref)
        sh("gzip -6 -kf dists/bench/main/binary-amd64/Packages", cwd=ref)
        sh("apt-ftparchive release dists/bench > Release.tmp && mv Release.tmp dists/bench/Release", cwd=ref)
        sh(f"{gpg} --clearsign -o dists/bench/InRelease dists/bench/Release && "
           f"{gpg} -abs -o dists/bench/Release.gpg dists/bench/Release", cwd=ref)

    t_ref = timed_sync(reference)
    t_depot = await timed(_report(rebuild_snapshot(pool, storage, signer, fresh.id, sign=True)))
    results.append(("deb full rebuild", count, t_depot, t_ref, 0.25, CPU["depot"][-1], CPU["reference"][-1]))

    reference("--db cache.db")                                        # warm apt-ftparchive's cache
    extra = make_deb(work / "extra", "bench-added", "1.0-1", "amd64")
    shutil.copy(extra, src / extra.name)
    try:
        t_ref1 = timed_sync(lambda: reference("--db cache.db"))
    finally:
        (src / extra.name).unlink()
    await ingest(pool, storage, fresh.id, "deb", [extra])
    t_depot1 = await timed(_report(rebuild_snapshot(pool, storage, signer, fresh.id, sign=True)))
    results.append(("deb add one + rebuild", count, t_depot1, t_ref1, 0.5, CPU["depot"][-1], CPU["reference"][-1]))


async def bench_rpm(pool, storage, signer, work, count, results):
    src = bench_rpms(count, root=str(OUT))
    files = sorted(src.glob("*.rpm"))
    async with pool.acquire() as conn:
        repo = await model.create_repo(conn, name="bench", type="rpm", releasever="9")
        base = await model.create_snapshot(conn, repo.id)
    await ingest(pool, storage, base.id, "rpm", files)
    # Packages are signed once, at the first signed build (not measured: the reference signs none).
    t_sign = await timed(rebuild_snapshot(pool, storage, signer, base.id, sign=True))
    print(f"  (first signed build of {count} rpms, signing every package once: {t_sign:.1f}s)")
    async with pool.acquire() as conn:
        fresh = await model.create_snapshot(conn, repo.id, base.id)

    gpg = f"gpg --batch --yes --homedir {signer.home} -u {signer.fingerprint} --digest-algo SHA512"
    ref = work / "ref-rpm"
    ref.mkdir()
    os.symlink(src.resolve(), ref / "packages")

    def reference(update=""):
        sh(f"createrepo_c -q {update} --compress-type=gz --general-compress-type=gz {ref}")
        sh(f"{gpg} -abs -o {ref}/repodata/repomd.xml.asc {ref}/repodata/repomd.xml")

    t_ref = timed_sync(reference)
    t_depot = await timed(_report(rebuild_snapshot(pool, storage, signer, fresh.id, sign=True)))
    results.append(("rpm full rebuild", count, t_depot, t_ref, 0.25, CPU["depot"][-1], CPU["reference"][-1]))

    extra = make_rpms(work / "extra-rpm", [("bench-added", "1.0", "1", "noarch")])[0]
    shutil.copy(extra, src / extra.name)
    try:
        t_ref1 = timed_sync(lambda: reference("--update"))
    finally:
        (src / extra.name).unlink()
    # As the upload endpoint does: an rpm is signed once when it arrives.
    await ingest(pool, storage, fresh.id, "rpm", [extra], signer=signer)
    t_depot1 = await timed(_report(rebuild_snapshot(pool, storage, signer, fresh.id, sign=True)))
    results.append(("rpm add one + rebuild", count, t_depot1, t_ref1, 0.1, CPU["depot"][-1], CPU["reference"][-1]))


def bench_upload(settings, sizes_mib, work):
    """Large debs POSTed by curl to a `depot serve` process; its peak RSS sampled with psutil."""
    import psutil

    from tests.pkgfactory import _tar_gz, ar_archive, control_text

    rows = []
    port = 18000 + os.getpid() % 1000
    env = dict(os.environ, DEPOT_DATABASE_URL=settings.database_url, DEPOT_REDIS_URL=settings.redis_url,
               DEPOT_STORAGE_DIR=str(settings.storage_dir), DEPOT_PORT=str(port),
               DEPOT_MAX_UPLOAD_BYTES=str(4 << 30), DEPOT_LOG_LEVEL="WARNING")
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        key = None
        for line in server.stdout:
            if line.startswith("ak_"):
                key = line.strip()
            if "serving on" in line:
                break
        if key is None:
            key = subprocess.run([sys.executable, "-m", "app.cli", "apikey", "create", "admin"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
        proc = psutil.Process(server.pid)
        url = f"http://127.0.0.1:{port}"
        auth = f"Authorization: Bearer {key}"
        repo_id = subprocess.run(
            ["curl", "-s", "-H", auth, "-d", '{"name":"big","type":"deb","dist":"big","section":"main"}',
             f"{url}/api/v2/repo/"], capture_output=True, text=True).stdout
        import json
        repo_id = json.loads(repo_id)["results"]["Id"]
        snap = json.loads(subprocess.run(["curl", "-s", "-H", auth, "-d", "{}", f"{url}/api/v2/repo/{repo_id}/snapshot"],
                                         capture_output=True, text=True).stdout)["results"]["Id"]
        for mib in sizes_mib:
            path = work / f"big{mib}.deb"
            # Payload stored uncompressed in data.tar: a large, valid package built fast.
            blob = os.urandom(1 << 20) * mib
            data_tar = _tar_gz({"./usr/share/big/blob": blob}, level=0)
            path.write_bytes(ar_archive([("debian-binary", b"2.0\n"),
                                         ("control.tar.gz", _tar_gz({"./control": control_text(f"big{mib}", "1.0", "amd64").encode()})),
                                         ("data.tar.gz", data_tar)]))
            del blob, data_tar
            sh(f"cat {path} > /dev/null")                                 # same page-cache state for both
            t_sha = timed_sync(lambda: sh(f"sha256sum {path}"))
            peak = [proc.memory_info().rss]
            t = time.perf_counter()
            curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", auth,
                                     "-F", f"file=@{path}", f"{url}/api/v2/snapshot/{snap}/upload"],
                                    stdout=subprocess.PIPE, text=True)
            while curl.poll() is None:
                peak.append(proc.memory_info().rss)
                time.sleep(0.01)
            t_up = time.perf_counter() - t
            code = curl.stdout.read()
            rows.append((mib, t_up, t_sha, max(peak) / (1 << 20), code))
            path.unlink()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


async def main_async(args):
    base = Settings.from_env()
    database_url = embedded.own_database(base, "depot_bench")
    await db.migrate_empty(database_url)
    work = Path(tempfile.mkdtemp(prefix="depot-bench-"))
    settings = replace(base, database_url=database_url, storage_dir=work / "storage",
                       redis_url=base.redis_url or embedded.redis_url(base.var_dir))
    storage = Storage(settings.storage_dir)
    signer = Signer(settings.storage_dir / "gnupg", key_length=3072)
    signer.fingerprint
    pool = await db.create_pool(settings, min_size=2, max_size=20)
    data_dir = await pool.fetchval("SHOW data_directory")
    try:
        _PG_PIDS.append(int((Path(data_dir) / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        print("  (PostgreSQL runs elsewhere: Depot CPU counts this process only)")
    results = []
    try:
        if args.only in (None, "deb"):
            await bench_deb(pool, storage, signer, work, args.count, results)
        if args.only in (None, "rpm"):
            await bench_rpm(pool, storage, signer, work, args.count, results)
    finally:
        await pool.close()
        signer.close()
    uploads = bench_upload(settings, [int(x) for x in args.upload_sizes.split(",") if x], work) \
        if args.upload_sizes else []
    shutil.rmtree(work, ignore_errors=True)
    return results, uploads


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--only", choices=["deb", "rpm"], help="one package type only")
    ap.add_argument("--upload-sizes", default="64,256,1024", help="MiB, comma separated ('' to skip)")
    # Run by `python -m bench` (argv holds bench names then): defaults.
    args = ap.parse_args(argv if argv is not None else (sys.argv[1:] if __name__ == "__main__" else []))
    results, uploads = asyncio.run(main_async(args))
    print(f"\n{'case':<24}{'packages':>9}{'depot s':>10}{'reference s':>13}{'ratio':>8}{'target':>9}")
    ok = True
    for name, n, d, r, target, _, _ in results:
        ratio = d / r
        ok &= ratio <= target
        print(f"{name:<24}{n:>9}{d:>10.3f}{r:>13.3f}{ratio:>8.3f}{'<= ' + str(target):>9}"
              f"{'' if ratio <= target else '  MISSED'}")
    if results:
        print(f"\n{'CPU seconds':<24}{'depot':>9}{'reference':>13}{'ratio':>8}   (Depot: process + its PostgreSQL)")
        for name, _, _, _, _, cd, cr in results:
            print(f"{name:<24}{cd:>9.3f}{cr:>13.3f}{(cd / cr if cr else float('nan')):>8.3f}")
    if uploads:
        print(f"\n{'upload MiB':>10}{'depot s':>10}{'MiB/s':>8}{'sha256sum s':>13}{'ratio':>8}{'server peak RSS MiB':>21}")
        for mib, t_up, t_sha, rss, code in uploads:
            print(f"{mib:>10}{t_up:>10.2f}{mib / t_up:>8.0f}{t_sha:>13.2f}{t_up / t_sha:>8.2f}{rss:>21.0f}"
                  f"{'' if code == '200' else '  HTTP ' + code}")
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
