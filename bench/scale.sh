#!/usr/bin/env bash
# The scale-out benchmark: aggregate download throughput with 1, 2 and 3 members of one
# consumer group on a 6-partition topic, and the time from a member's SIGKILL to the next file
# of its partitions published by a survivor; on one broker (memory engine) and on a cluster of
# two brokers over one S3 bucket (scripts/broker.sh cluster-start). How: bench/scale.py.
#
#   bench/scale.sh                           48 files x 8 MiB, both setups
#   bench/scale.sh --files 24 --size 4       smaller
#   bench/scale.sh --results bench/results/scale.md
#
# Honors CARGO_TARGET_DIR and OPENMSI_CACHE_DIR (tansu, s3s-fs).

# cleanup runs from a trap, which shellcheck does not follow.
# shellcheck disable=SC2317
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly REPO=$PWD

log() { printf 'scale.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

extra=()
while (($#)); do
    case $1 in
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    --files | --size) (($# >= 2)) || die "$1 needs a value"; extra+=("$1" "$2"); shift 2 ;;
    --results) (($# >= 2)) || die "--results needs a file"; extra+=(--results "$(realpath -m "$2")"); shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

log "building openmsi (release)"
cargo build --release --locked --bin openmsi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
scripts/broker.sh install --s3 >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-scale-bench.XXXXXX")
cleanup() {
    local rc=$?
    [[ -f $work/single/tansu.pid ]] && "$REPO/scripts/broker.sh" stop --dir "$work/single" 2>/dev/null
    [[ -d $work/cluster ]] && "$REPO/scripts/broker.sh" cluster-stop --dir "$work/cluster" 2>/dev/null
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
single=$(free_port)
scripts/broker.sh start --port "$single" --dir "$work/single" --memory >/dev/null ||
    die "could not start the broker (see $work/single/tansu.log)"
scripts/broker.sh create-topic scale-single --port "$single" --partitions 6 2>/dev/null
# Two brokers and the S3 server on three consecutive ports.
base=$(python3 -c '
import socket
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    try:
        for q in (p + 1, p + 2):
            t = socket.socket(); t.bind(("127.0.0.1", q)); t.close()
        print(p); break
    except OSError:
        pass')
scripts/broker.sh cluster-start --brokers 2 --s3-port "$base" --port $((base + 1)) --dir "$work/cluster" >/dev/null ||
    die "could not start the cluster (see $work/cluster)"
scripts/broker.sh create-topic scale-cluster --port $((base + 1)) --partitions 6 2>/dev/null

python3 bench/scale.py --openmsi "$target_dir/release/openmsi" --work "$work" \
    --setup "one broker (memory engine)=127.0.0.1:$single=scale-single" \
    --setup "2 brokers over S3=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))=scale-cluster" \
    "${extra[@]}"
