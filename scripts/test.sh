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

Installs tansu (scripts/broker.sh install) and the OpenMSIStream reference venv
(scripts/install-reference.sh) into ${OPENMSI_CACHE_DIR:-~/.cache/openmsi} when missing, runs the
doctests, then `cargo nextest run --no-fail-fast [NEXTEST ARGS...]`.
Examples: scripts/test.sh            all tests
          scripts/test.sh smoke      tests whose name contains "smoke"
USAGE
    exit 0
    ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${OPENMSI_CACHE_DIR:-$HOME/.cache/openmsi}"

echo "==> tansu test broker" >&2
scripts/broker.sh install >/dev/null
echo "==> OpenMSIStream reference" >&2
python=$(scripts/install-reference.sh)
# Tests find the venv on their own; exporting it makes the choice visible and overridable.
export OPENMSI_REFERENCE_PYTHON="${OPENMSI_REFERENCE_PYTHON:-$python}"

# .ci/run installs cargo-nextest into the cache when the machine has none.
if ! cargo nextest --version >/dev/null 2>&1 && [[ -x $cache/cargo-nextest/bin/cargo-nextest ]]; then
    export PATH="$cache/cargo-nextest/bin:$PATH"
fi
cargo nextest --version >/dev/null 2>&1 ||
    { echo "test.sh: cargo-nextest is missing: cargo install cargo-nextest --locked" >&2; exit 1; }

# nextest does not run doctests. They run first (only for a full run) so nextest's summary is
# the last thing printed.
if (($# == 0)); then
    echo "==> doctests" >&2
    cargo test --doc --quiet
fi
echo "==> cargo nextest run" >&2
exec cargo nextest run --no-fail-fast "$@"
