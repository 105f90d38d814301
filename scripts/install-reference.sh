#!/usr/bin/env bash
# Install the reference implementation, the Python package OpenMSIStream 1.8.8, into a venv in the
# cache, and print the venv's python. Interoperability tests run it as the peer of `openmsi`
# (tests/common/mod.rs finds it through OPENMSI_REFERENCE_PYTHON or this venv).
# Idempotent: an existing venv that imports openmsistream 1.8.8 is reused as it is.
set -euo pipefail

readonly VERSION=1.8.8
readonly CACHE_DIR="${OPENMSI_CACHE_DIR:-$HOME/.cache/openmsi}"
readonly VENV="$CACHE_DIR/venv-openmsistream-$VERSION"
readonly PY="$VENV/bin/python"

case ${1:-} in
-h | --help)
    cat <<EOF
Usage: scripts/install-reference.sh

Create the venv $VENV with openmsistream==$VERSION (pip), unless it already works, and print
the path of its python. Set OPENMSI_CACHE_DIR to use another cache folder (default
~/.cache/openmsi). Needs python3 (3.9 or newer) with the venv module.
EOF
    exit 0
    ;;
"") ;;
*) echo "install-reference.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
esac

log() { printf 'install-reference.sh: %s\n' "$*" >&2; }

# True when the venv's python imports the right openmsistream. The import (not just the pip
# metadata) is checked because a half-finished install leaves metadata without a working package.
works() {
    [[ -x $PY ]] && "$PY" - "$VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
import openmsistream  # noqa: F401
from openmsistream import UploadDataFile, DataFileDownloadDirectory  # noqa: F401
sys.exit(0 if version("openmsistream") == sys.argv[1] else 1)
EOF
}

if works; then
    printf '%s\n' "$PY"
    exit 0
fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/venv-openmsistream.lock"
flock 9
if ! works; then
    command -v python3 >/dev/null || { log "error: python3 is needed"; exit 1; }
    log "installing openmsistream==$VERSION into $VENV (a minute or two)"
    # A broken venv from an interrupted run is rebuilt from scratch rather than patched.
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet "openmsistream==$VERSION" >&2
    works || {
        log "error: openmsistream $VERSION installed into $VENV but does not import; try:"
        log "  $PY -c 'import openmsistream'"
        exit 1
    }
fi
printf '%s\n' "$PY"
