#!/usr/bin/env bash
# The Debian packages the build and the tests need, in one list that `scripts/test.sh` and
# `.ci/run` both use: the missing ones are installed (as root; `apt-get update` first), or, for
# another user, named with the command that installs them.
#
# Usage: scripts/install-packages.sh [--windows]
#   --windows  also the MinGW cross compiler, cmake and Wine (scripts/windows-check.sh)
set -euo pipefail

# Why each is here:
#   pkg-config libssl-dev zlib1g-dev make gcc g++  rdkafka's librdkafka and openssl-sys builds
#   python3-venv             the OpenMSIStream reference venv (scripts/install-reference.sh)
#   stunnel4 openssl         the TLS front end of the secured-broker tests, test certificates
#   systemd systemd-container  the service tests boot a throw-away systemd (systemd-nspawn)
#   libsodium23              the real KafkaCrypto's pysodium loads it (encryption interop)
#   util-linux               setpriv/runuser: tests run the tool as an unprivileged user
#   prometheus               a real Prometheus scrapes /metrics in the tests; promtool checks it
PACKAGES=(pkg-config libssl-dev zlib1g-dev make gcc g++ python3 python3-venv stunnel4 openssl
    systemd systemd-container libsodium23 util-linux prometheus)
# Cross-building and running the Windows binary (PLATFORMS.md): with recommends, as measured.
WINDOWS_PACKAGES=(gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64 cmake wine wine64)

wanted=("${PACKAGES[@]}")
recommends=(--no-install-recommends)
if [[ ${1:-} == --windows ]]; then
    wanted=("${WINDOWS_PACKAGES[@]}")
    recommends=()
elif [[ $# -gt 0 ]]; then
    echo "install-packages.sh: unknown argument '$1' (see the head of this script)" >&2
    exit 2
fi

# Installed means "install ok installed": `dpkg -s` also succeeds for a package that was
# removed but left its configuration files behind (state "rc"), which is not there at all.
installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    echo "install-packages.sh: all ${#wanted[@]} Debian packages present" >&2
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "install-packages.sh: missing Debian packages: ${missing[*]}. Install them as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "install-packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q "${recommends[@]}" "${missing[@]}" </dev/null >&2
# Debian's prometheus enables a system service; the tests start their own servers, and the
# throw-away systemd of the service tests must not start one.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    systemctl disable prometheus.service >/dev/null 2>&1 || rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service
fi
