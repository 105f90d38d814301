#!/usr/bin/env bash
# A real, throw-away systemd for the service tests: the machine's own root filesystem under a
# copy-on-write overlay (writes land in a tmpfs), booted with systemd-nspawn. The host's PID 1
# is never contacted, and nothing outside the work folder changes.
#
#   scripts/systemd-sandbox.sh up WORK      boot; WORK/root is the sandbox's / seen from the host
#   scripts/systemd-sandbox.sh run WORK CMD...   run CMD inside (as root, all namespaces)
#   scripts/systemd-sandbox.sh down WORK    stop it and remove every mount, cgroup and file
#   scripts/systemd-sandbox.sh check        exit 0 when this machine can boot one (root,
#                                           systemd-nspawn, systemd), else say why (exit 1)
#
# Needs root and `systemd-container` (systemd-nspawn); .ci/run installs it. The sandbox shares
# the host's network, so a broker on the host's 127.0.0.1 is reachable from services inside.
set -euo pipefail

die() { echo "systemd-sandbox: $*" >&2; exit 1; }

check() {
    [[ $(id -u) == 0 ]] || die "needs root"
    command -v systemd-nspawn >/dev/null || die "systemd-nspawn is missing: apt-get install systemd-container"
    [[ -x /lib/systemd/systemd ]] || die "/lib/systemd/systemd is missing: apt-get install systemd"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "no overlay filesystem"
}

# The cgroup hierarchies the sandbox's launcher is moved into (hybrid or unified).
cgroup_dirs() {
    if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
        echo /sys/fs/cgroup
    else
        [[ -d /sys/fs/cgroup/unified ]] && echo /sys/fs/cgroup/unified
        [[ -d /sys/fs/cgroup/systemd ]] && echo /sys/fs/cgroup/systemd
    fi
    return 0
}

inside() {
    local work=$1; shift
    nsenter -t "$(cat "$work/pid1")" -a -r -w "$@"
}

up() {
    local work=$1
    check
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
    local root=$work/root cgname
    cgname=openmsi-sandbox-$(basename "$work")
    echo "$cgname" >"$work/cgroup"
    mkdir -p "$work/tmpfs" "$root"
    mount -t tmpfs -o size=8G openmsi-sandbox "$work/tmpfs"
    mkdir "$work/tmpfs/upper" "$work/tmpfs/work"
    mount -t overlay openmsi-sandbox-root \
        -o "lowerdir=/,upperdir=$work/tmpfs/upper,workdir=$work/tmpfs/work" "$root"
    # Boot none of the host's enabled services, and no login prompt.
    rm -rf "$root"/etc/systemd/system/*.wants
    ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
    systemd-id128 new >"$root/etc/machine-id"
    for d in $(cgroup_dirs); do mkdir -p "$d/$cgname"; done
    (
        for d in $(cgroup_dirs); do echo "$BASHPID" >"$d/$cgname/cgroup.procs"; done
        exec setsid systemd-nspawn -q -D "$root" --boot --register=no --keep-unit \
            --link-journal=no -M openmsi-sandbox --pipe
    ) </dev/null >"$work/console.log" 2>&1 &
    echo $! >"$work/launcher"
    local pid1=
    for _ in $(seq 200); do
        pid1=$(pgrep -P "$(cat "$work/launcher")" -x systemd || true)
        [[ -n $pid1 ]] && break
        sleep 0.05
    done
    [[ -n $pid1 ]] || { cat "$work/console.log" >&2; down "$work"; die "systemd did not come up"; }
    echo "$pid1" >"$work/pid1"
    for _ in $(seq 400); do inside "$work" test -S /run/systemd/private && break; sleep 0.05; done
    local state
    state=$(inside "$work" systemctl is-system-running --wait 2>/dev/null || true)
    # nspawn copies the host's device modes; this machine's /dev/null is not world-writable,
    # which breaks every unprivileged service. Fix the sandbox's copy only.
    inside "$work" chmod 666 /dev/null
    echo "sandbox up: systemd pid $pid1 (host), state $state"
}

down() {
    local work=$1
    [[ -d $work ]] || return 0
    set +e
    if [[ -f $work/launcher ]]; then
        local launcher
        launcher=$(cat "$work/launcher")
        if kill -0 "$launcher" 2>/dev/null; then
            kill -TERM "$launcher"
            for _ in $(seq 100); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$launcher" 2>/dev/null; then
                [[ -f $work/pid1 ]] && kill -KILL "$(cat "$work/pid1")"
                kill -KILL "$launcher"
                sleep 0.5
            fi
        fi
    fi
    umount -R "$work/root" 2>/dev/null
    umount "$work/tmpfs" 2>/dev/null
    if [[ -f $work/cgroup ]]; then
        local cgname d
        cgname=$(cat "$work/cgroup")
        for d in $(cgroup_dirs); do
            [[ -d $d/$cgname ]] && find "$d/$cgname" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    fi
    rm -rf "$work"
    return 0
}

case ${1:-} in
    check) check ;;
    up) [[ $# == 2 ]] || die "usage: $0 up WORK"; up "$2" ;;
    run) [[ $# -ge 3 ]] || die "usage: $0 run WORK CMD..."; w=$2; shift 2; inside "$w" "$@" ;;
    down) [[ $# == 2 ]] || die "usage: $0 down WORK"; down "$2" ;;
    *) die "usage: $0 check | up WORK | run WORK CMD... | down WORK" ;;
esac
