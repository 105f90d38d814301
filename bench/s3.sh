#!/usr/bin/env bash
# The s3-transfer benchmark: `openmsi s3-transfer` vs a raw boto3 multipart put of the same
# file to the same local S3 server (s3s-fs), and OpenMSIStream's S3TransferStreamProcessor
# with --reference. How it measures: bench/s3.py's docstring.
#
#   bench/s3.sh                          1 GiB, 3 runs per tool
#   bench/s3.sh --size 4096 --runs 1     4 GiB (peak RSS), 1 run
#   bench/s3.sh --reference              also the reference (it holds the whole file in memory)
#
# Honors CARGO_TARGET_DIR and OPENMSI_CACHE_DIR (tansu, s3s-fs, the reference venv).

# cleanup runs from a trap, which shellcheck does not follow.
# shellcheck disable=SC2317
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly REPO=$PWD

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

size_mib=1024
runs=3
extra=()
while (($#)); do
    case $1 in
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    --size) (($# >= 2)) || die "--size needs MiB"; size_mib=$2; shift 2 ;;
    --runs) (($# >= 2)) || die "--runs needs a value"; runs=$2; shift 2 ;;
    --reference) extra+=(--reference); shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

log "building openmsi (release)"
cargo build --release --locked --bin openmsi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
scripts/broker.sh install --s3 >/dev/null
python=$(scripts/install-reference.sh)

work=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-s3-bench.XXXXXX")
cleanup() {
    local rc=$?
    [[ -f $work/broker/tansu.pid ]] && "$REPO/scripts/broker.sh" stop --dir "$work/broker" 2>/dev/null
    [[ -f $work/s3/s3s.pid ]] && "$REPO/scripts/broker.sh" s3-stop --dir "$work/s3" 2>/dev/null
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
kafka_port=$(free_port)
s3_port=$(free_port)
scripts/broker.sh start --port "$kafka_port" --dir "$work/broker" --memory >/dev/null ||
    die "could not start the broker (see $work/broker/tansu.log)"
scripts/broker.sh s3-start --port "$s3_port" --dir "$work/s3" >/dev/null ||
    die "could not start the S3 server (see $work/s3/s3s.log)"

python3 bench/s3.py \
    --openmsi "$target_dir/release/openmsi" \
    --python "$python" \
    --kafka-port "$kafka_port" \
    --s3-port "$s3_port" \
    --s3-root "$work/s3/data" \
    --work "$work" \
    --size "$size_mib" \
    --runs "$runs" \
    "${extra[@]}"
