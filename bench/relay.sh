#!/usr/bin/env bash
# The relay benchmark: `openmsi relay` vs a raw librdkafka consume-and-produce loop
# (examples/raw_kafka.rs `relay`) moving the same messages between two local tansu brokers
# (memory engine), in alternating runs. How it measures: bench/relay.py's docstring.
#
#   bench/relay.sh                              1 GiB, 3 runs per tool
#   bench/relay.sh --size 256 --runs 1          256 MiB, 1 run
#   bench/relay.sh --results bench/results/relay.md
#
# Honors CARGO_TARGET_DIR and OPENMSI_CACHE_DIR (tansu).

# cleanup runs from a trap, which shellcheck does not follow.
# shellcheck disable=SC2317
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly REPO=$PWD

log() { printf 'relay.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

size_mib=1024
runs=3
results=()
while (($#)); do
    case $1 in
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    --size) (($# >= 2)) || die "--size needs MiB"; size_mib=$2; shift 2 ;;
    --runs) (($# >= 2)) || die "--runs needs a value"; runs=$2; shift 2 ;;
    --results) (($# >= 2)) || die "--results needs a file"; results=(--results "$(realpath -m "$2")"); shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

log "building openmsi and examples/raw_kafka (release)"
cargo build --release --locked --bin openmsi --example raw_kafka
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
scripts/broker.sh install >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-relay-bench.XXXXXX")
cleanup() {
    local rc=$?
    for side in source destination; do
        [[ -f $work/$side/tansu.pid ]] && "$REPO/scripts/broker.sh" stop --dir "$work/$side" 2>/dev/null
    done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
declare -A ports
for side in source destination; do
    ports[$side]=$(free_port)
    scripts/broker.sh start --port "${ports[$side]}" --dir "$work/$side" --memory >/dev/null ||
        die "could not start the $side broker (see $work/$side/tansu.log)"
done

python3 bench/relay.py \
    --openmsi "$target_dir/release/openmsi" \
    --raw "$target_dir/release/examples/raw_kafka" \
    --source-port "${ports[source]}" \
    --destination-port "${ports[destination]}" \
    --work "$work" \
    --size $((size_mib << 20)) \
    --runs "$runs" \
    "${results[@]}"
