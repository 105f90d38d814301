#!/usr/bin/env bash
# The openmsi benchmark, in one command: openmsi vs the Python reference (OpenMSIStream 1.8.8)
# vs a raw librdkafka client (examples/raw_kafka.rs), on one fresh tansu memory-engine broker.
#
#   bench/run.sh                 full: 1 GiB speed case (3 tools) + 4 GiB memory case (openmsi)
#                                + 2,000 x 64 KiB files end to end through the directory
#                                commands (3 tools) + 20,000 x 4 KiB (openmsi, raw) + latency
#                                close -> published and downloader start-up (openmsi,
#                                reference), 3 runs each, medians (~25 minutes on 2 cores)
#   bench/run.sh --quick         64 MiB + 256 MiB + 200 small + 2,000 tiny files + 20 latency
#                                files, 1 run (a few minutes; CI)
#   bench/run.sh --runs 5 --results out/bench.json --results out/bench.md
#
# What it does: builds openmsi and the raw client (cargo build --release), makes sure tansu and
# the reference venv are installed (scripts/broker.sh install, scripts/install-reference.sh:
# no-ops once done), starts one broker on a free 127.0.0.1 port (stopped on exit, whatever
# happens), then bench/bench.py runs every case, verifies every output byte for byte and prints
# one table of medians: MB/s, openmsi/reference and openmsi/raw ratios, peak RSS, CPU s/GiB.
# How each number is measured, and the settings each tool gets: bench/README.md.
#
# Big files (input data, outputs) live in a temporary folder under /tmp (or --work-dir), deleted
# on exit unless --keep-work. Honors CARGO_TARGET_DIR, OPENMSI_CACHE_DIR and
# OPENMSI_REFERENCE_PYTHON.

# stop_bench and cleanup run from traps, which shellcheck does not follow.
# shellcheck disable=SC2317
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly REPO=$PWD
# broker.sh's distinct exit code for "port already in use".
readonly EXIT_PORT_IN_USE=4

usage() {
    cat <<'EOF'
Usage: bench/run.sh [OPTIONS]

Options:
  --quick             Small sizes (64 MiB speed case, 256 MiB memory case, 200 small files),
                      1 run by default.
  --runs N            Runs per case; the table shows the median (default 3, or 1 with --quick).
  --results FILE      Also write the results to FILE: markdown if it ends in .md, else JSON
                      (every run, the medians and the environment). Repeatable.
  --cases LIST        speed,memory,small,tiny,latency,encrypted (default all but encrypted):
                      encrypted = the speed file through openmsi plain and end-to-end
                      encrypted (provision-node, serve-keys for the download); speed = the 1 GiB file
                      through every tool; memory = openmsi's peak RSS on a 4 GiB file; small =
                      2,000 x 64 KiB files end to end through the directory commands
                      (upload-directory + download-directory; the reference's
                      DataFileUploadDirectory + DataFileDownloadDirectory; raw: the same bytes
                      as 2,000 messages); tiny = 20,000 x 4 KiB the same way (openmsi and raw);
                      latency = 100 files of 1 KiB closed one every 0.1 s into running
                      directory commands, close -> published (openmsi and reference), and
                      a downloader's start -> first file on a topic with data.
  --tools LIST        openmsi,reference,raw (default all).
  --file-size SIZE    Size of the speed case (default 1GiB; e.g. 256MiB).
  --memory-size SIZE  Size of the memory case (default 4GiB).
  --small-files N     Files in the small case (default 2000; 200 with --quick).
  --small-kib K       KiB per file in the small case (default 64).
  --latency-files N   Files in the latency case (default 100; 20 with --quick).
  --settle SECS       Before each measured process, wait up to SECS for the machine to be idle
                      (others using < 0.25 core) (default 30; 0 with --quick).
  --work-dir DIR      Where data, outputs, logs and the broker live (default: a new /tmp folder).
  --keep-work         Keep the work folder (logs, config) after the run.
  --openmsi-bin PATH  Benchmark this openmsi binary instead of the one built from this tree
                      (e.g. an older commit's, for a before/after comparison).
  -h, --help          This help.
EOF
}

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

bench_args=()
work=""
keep_work=0
openmsi_bin=""
while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --quick) bench_args+=(--quick); shift ;;
    --runs | --cases | --tools | --file-size | --memory-size | --settle | --small-files | --small-kib | --latency-files)
        (($# >= 2)) || die "$1 needs a value"
        bench_args+=("$1" "$2"); shift 2 ;;
    --results)
        (($# >= 2)) || die "--results needs a value"
        # Absolute, so it does not depend on where bench.py runs.
        mkdir -p "$(dirname "$2")"
        bench_args+=(--results "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    --work-dir) (($# >= 2)) || die "--work-dir needs a value"; work=$2; shift 2 ;;
    --keep-work) keep_work=1; shift ;;
    --openmsi-bin) (($# >= 2)) || die "--openmsi-bin needs a value"; openmsi_bin=$(realpath "$2"); shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

command -v python3 >/dev/null || die "python3 is needed to run bench/bench.py"

log "building openmsi and examples/raw_kafka (release)"
cargo build --release --locked --bin openmsi --example raw_kafka
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
openmsi=${openmsi_bin:-$target_dir/release/openmsi}
raw=$target_dir/release/examples/raw_kafka
[[ -x $openmsi && -x $raw ]] || die "build finished but $openmsi or $raw is missing"

tansu=$(scripts/broker.sh install)
reference_python=${OPENMSI_REFERENCE_PYTHON:-$(scripts/install-reference.sh)}
reference_bin=$(dirname "$reference_python")
[[ -x $reference_bin/UploadDataFile ]] || die "no UploadDataFile next to $reference_python"

if [[ -z $work ]]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-bench.XXXXXX")
else
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
fi
broker_dir=$work/broker

bench_pid=""

# Stops the harness (which kills the tool it is running) if it still runs.
stop_bench() {
    [[ -n $bench_pid ]] || return 0
    kill -TERM "$bench_pid" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$bench_pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$bench_pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    stop_bench
    if [[ -f $broker_dir/tansu.pid ]]; then
        "$REPO/scripts/broker.sh" stop --dir "$broker_dir" 2>/dev/null || true
    fi
    if ((keep_work)); then
        log "kept $work (logs in $work/logs)"
    elif ((rc != 0)); then
        # Keep the logs and the broker's log to look at; only the big files go.
        rm -rf "$work/data" "$work/out"
        log "failed: logs kept in $work/logs and $broker_dir/tansu.log"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port=""
for _ in 1 2 3 4 5; do
    candidate=$(free_port)
    rc=0
    scripts/broker.sh start --port "$candidate" --dir "$broker_dir" --memory >/dev/null || rc=$?
    if ((rc == 0)); then
        port=$candidate
        break
    fi
    ((rc == EXIT_PORT_IN_USE)) || die "could not start the broker (see $broker_dir/tansu.log)"
done
[[ -n $port ]] || die "no free port for the broker after 5 tries"

# In the background, so that a signal runs the traps at once (bash runs them only after a
# foreground child exits); the trap then stops the harness, which stops its tool.
python3 bench/bench.py \
    --port "$port" \
    --broker-pid "$(cat "$broker_dir/tansu.pid")" \
    --broker-sh "$REPO/scripts/broker.sh" \
    --tansu "$tansu" \
    --openmsi "$openmsi" \
    --raw "$raw" \
    --reference-bin "$reference_bin" \
    --work-dir "$work" \
    "${bench_args[@]}" &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=""
exit "$rc"
