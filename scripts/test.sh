#!/usr/bin/env bash
# The one test command: make sure the test broker (tansu) and the reference implementation
# (OpenMSIStream 1.8.8) are installed, then run every test. Extra arguments go to
# `cargo nextest run` (a filter, `--profile ci`, ...).
#
# The first run builds tansu (~15 minutes on 2 cores) into ~/.cache/openmsi; later runs reuse it.
set -euo pipefail

case ${1:-} in
-h | --help)
    cat <<'USAGE'
Usage: scripts/test.sh [NEXTEST ARGS...]

Installs the Debian packages the tests need (scripts/install-packages.sh; as root, else it
names them), tansu and the S3 server s3s-fs (scripts/broker.sh install --with-prebuilt --s3) and the OpenMSIStream
reference venv (scripts/install-reference.sh) into ${OPENMSI_CACHE_DIR:-~/.cache/openmsi}
when missing; cargo-nextest when missing; for a
full run (no arguments) checks the Windows build under Wine (scripts/windows-check.sh; skip with
OPENMSI_SKIP_WINDOWS=1) and runs the doctests; then `cargo nextest run --workspace --no-fail-fast [NEXTEST
ARGS...]`. The service tests boot a throw-away systemd (scripts/systemd-sandbox.sh: root and
systemd-nspawn).
Examples: scripts/test.sh            all tests
          scripts/test.sh smoke      tests whose name contains "smoke"
USAGE
    exit 0
    ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${OPENMSI_CACHE_DIR:-$HOME/.cache/openmsi}"

echo "==> Debian packages" >&2
scripts/install-packages.sh
echo "==> tansu test broker (built from source, and the prebuilt one that auto-creates topics)" >&2
scripts/broker.sh install --with-prebuilt --s3 >/dev/null
echo "==> OpenMSIStream reference" >&2
python=$(scripts/install-reference.sh)
# Tests find the venv on their own; exporting it makes the choice visible and overridable.
export OPENMSI_REFERENCE_PYTHON="${OPENMSI_REFERENCE_PYTHON:-$python}"
# The encryption interop tests run the real KafkaCrypto, whose pysodium loads the system's
# libsodium: say so plainly instead of letting those tests fail with a traceback.
if ! "$OPENMSI_REFERENCE_PYTHON" -c 'import pysodium' 2>/dev/null; then
    echo "test.sh: the reference venv cannot load libsodium (KafkaCrypto needs it): apt-get install libsodium23" >&2
    exit 1
fi

# cargo-nextest: the machine's, else one built once into the cache.
if ! cargo nextest --version >/dev/null 2>&1; then
    nextest_root="$cache/cargo-nextest"
    if [[ ! -x $nextest_root/bin/cargo-nextest ]]; then
        echo "==> cargo-nextest (built once into $nextest_root)" >&2
        CARGO_TARGET_DIR="$cache/cargo-nextest-build" \
            cargo install cargo-nextest --locked --root "$nextest_root"
    fi
    export PATH="$nextest_root/bin:$PATH"
fi

# A full run also checks the Windows build under Wine (scripts/windows-check.sh; the first run
# installs MinGW and Wine as root and builds for ~10 minutes). OPENMSI_SKIP_WINDOWS=1 leaves it
# out, saying so. A failure there is reported loudly, the Linux tests still run, and the exit
# status is 1.
windows_status=0
if (($# == 0)); then
    if [[ ${OPENMSI_SKIP_WINDOWS:-} == 1 ]]; then
        echo "==> WINDOWS CHECK SKIPPED (OPENMSI_SKIP_WINDOWS=1)" >&2
    else
        echo "==> Windows: build, lint, run under Wine (scripts/windows-check.sh)" >&2
        scripts/windows-check.sh || windows_status=$?
        if ((windows_status != 0)); then
            echo "test.sh: THE WINDOWS CHECK FAILED (exit $windows_status, see above); the Linux tests run anyway" >&2
        fi
    fi
fi

# Every test's scratch folder (tempfile honours TMPDIR) goes under one folder that is removed at
# the end: a test that nextest kills on a timeout never drops its TempDir, and those leftovers
# (100+ MB each) once filled a CI machine's disk.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-tests.XXXXXX")
# Like /tmp itself: some tests run the tool as another user, who must reach their folders.
chmod 1777 "$scratch"
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"

# nextest does not run doctests. They run first (only for a full run) so nextest's summary is
# (nearly) the last thing printed.
if (($# == 0)); then
    echo "==> doctests" >&2
    cargo test --doc --quiet
fi
echo "==> cargo nextest run" >&2
status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
if ((windows_status != 0)); then
    echo "test.sh: FAILED: the Windows check (scripts/windows-check.sh) failed" >&2
    exit 1
fi
exit "$status"
