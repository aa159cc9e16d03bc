#!/usr/bin/env bash
# Install the system tools Depot uses, only where missing (Debian/Ubuntu, as root).
#   system-deps.sh run    the service's own (what the Dockerfile installs too)
#   system-deps.sh        those and the tests' (`make test`, bench)
#   gpg            signing (server)          rpmsign/rpmkeys   rpm signing and checks (server; package rpm)
#   xz             (server)                  rpmbuild          test packages (package rpm)
#   dpkg-deb       test packages              apt-get           real-client tests
#   dnf            real-client tests          apt-ftparchive    benchmark reference (apt-utils)
#   createrepo_c   benchmark reference        chromium          dashboard browser tests
#   aptly          benchmark reference (mirrors)
#   dnf reposync   benchmark reference (rpm mirrors; dnf-plugins-core)
#   nginx          benchmark upstream (mirrors; nginx-light)
set -euo pipefail
want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
need gpg gpg
need rpmsign rpm
need rpmkeys rpm
need xz xz-utils
if [ "${1:-}" != run ]; then
    need dpkg-deb dpkg
    need apt-get apt
    need rpmbuild rpm
    need dnf dnf
    need apt-ftparchive apt-utils
    need createrepo_c createrepo-c
    need chromium chromium
    need aptly aptly
    need nginx nginx-light
    [ -e /usr/lib/python3/dist-packages/dnf-plugins/reposync.py ] || want+=(dnf-plugins-core)
fi
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${want[*]} (run as root, or install them yourself)" >&2
    exit 1
fi
mapfile -t uniq < <(printf '%s\n' "${want[@]}" | sort -u)
echo "installing system packages: ${uniq[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run (two checkouts set up at once, unattended upgrades) instead of failing.
apt_wait=(-o DPkg::Lock::Timeout=600)
apt-get "${apt_wait[@]}" update -qq
apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends "${uniq[@]}" >/dev/null
