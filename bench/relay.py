#!/usr/bin/env python3
"""The relay benchmark (bench/relay.sh starts the brokers and calls this): one file, uploaded
once to a source broker by `openmsi upload-file`, then relayed to a destination broker, in
alternating runs, by

- openmsi: `openmsi relay --to-config DEST --to-topic T --exit-when-idle 1` (every chunk
  opened, decoded and SHA-512-checked, produced with acks=all, source offsets committed after
  the destination acknowledged);
- raw: `raw_kafka relay` (examples/raw_kafka.rs): a librdkafka consume-and-produce loop of the
  same messages with the same producer settings, no checks and no commits: the ceiling.

The clock runs from the spawn to the moment the destination has every message: raw exits then;
openmsi is watched through its /metrics (`openmsi_messages_relayed_total`, counted at each
flush, after the acknowledgements), polled every 20 ms, because its idle exit adds a second.
CPU seconds and peak RSS are the process's own (wait4). Every run gets a fresh destination
topic and consumer group. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30


def log(msg: str) -> None:
    print(f"relay.py: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, port: int) -> None:
    path.write_text(
        f"""[broker]
bootstrap.servers = 127.0.0.1:{port}

[producer]
# tansu's memory engine: a fetch that starts inside a record batch skips the rest of it.
batch.num.messages = 1

[consumer]
auto.offset.reset = earliest
enable.auto.commit = False
fetch.wait.max.ms = 10
"""
    )


def generate(path: Path, size: int) -> None:
    """Incompressible data (AES-128-CTR keystream), as bench.py makes it."""
    zero = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    subprocess.run(
        ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pbkdf2", "-pass", "pass:openmsi-bench",
         "-out", str(path)],
        stdin=zero.stdout, check=True,
    )
    zero.stdout.close()
    zero.wait()


class Run:
    def __init__(self, tool: str, seconds: float, cpu: float, rss_mib: float, size: int):
        self.tool, self.seconds, self.cpu, self.rss_mib, self.size = tool, seconds, cpu, rss_mib, size

    @property
    def mb_s(self) -> float:
        return self.size / 1e6 / self.seconds


def wait4(proc: subprocess.Popen) -> tuple[int, float, float]:
    """Exit status, CPU seconds (user + sys) and peak RSS (MiB) of a finished child."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def relayed_total(metrics_url: str) -> float:
    try:
        with urllib.request.urlopen(metrics_url, timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("openmsi_messages_relayed_total{")
    )


def topic(openmsi: str, cfg: Path, name: str) -> None:
    subprocess.run([openmsi, "topic", "create", name, "--config", str(cfg), "--partitions", "1"],
                   check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--openmsi", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--source-port", type=int, required=True)
    p.add_argument("--destination-port", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--size", type=int, default=GIB)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--results", type=Path)
    args = p.parse_args()

    work = args.work
    src_cfg, dst_cfg = work / "source.config", work / "destination.config"
    write_config(src_cfg, args.source_port)
    write_config(dst_cfg, args.destination_port)
    data = work / "data.bin"
    generate(data, args.size)
    chunk = 512 * 1024
    messages = (args.size + chunk - 1) // chunk
    topic(args.openmsi, src_cfg, "relay-source")
    started = time.monotonic()
    subprocess.run([args.openmsi, "upload-file", str(data), "--config", str(src_cfg),
                    "--topic", "relay-source"], check=True, stdout=subprocess.DEVNULL)
    log(f"uploaded {args.size / GIB:.3g} GiB ({messages} messages) in "
        f"{time.monotonic() - started:.1f} s")

    runs: list[Run] = []
    for i in range(args.runs):
        for tool in ("openmsi", "raw"):
            dest = f"relayed-{tool}-{i}"
            topic(args.openmsi, dst_cfg, dest)
            if tool == "raw":
                cmd = [args.raw, "relay", "--brokers", f"127.0.0.1:{args.source_port}",
                       "--topic", "relay-source", "--group", f"raw-{i}",
                       "--to-brokers", f"127.0.0.1:{args.destination_port}", "--to-topic", dest,
                       "--messages", str(messages),
                       "-X", "fetch.wait.max.ms=10", "-X", "batch.num.messages=1"]
                t0 = time.monotonic()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                code, cpu, rss = wait4(proc)
                seconds = time.monotonic() - t0
            else:
                port = free_port()
                cmd = [args.openmsi, "relay", "--config", str(src_cfg), "--topic", "relay-source",
                       "--to-config", str(dst_cfg), "--to-topic", dest, "--group-id", f"o-{i}",
                       "--state-dir", str(work / f"state-{i}"), "--exit-when-idle", "1",
                       "--metrics-addr", f"127.0.0.1:{port}"]
                url = f"http://127.0.0.1:{port}/metrics"
                t0 = time.monotonic()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                seconds = float("nan")
                while proc.poll() is None:
                    if relayed_total(url) >= messages:
                        seconds = time.monotonic() - t0
                        break
                    time.sleep(0.02)
                code, cpu, rss = wait4(proc)
            if code != 0:
                raise SystemExit(f"{tool} run {i} exited with {code}")
            runs.append(Run(tool, seconds, cpu, rss, args.size))
            log(f"run {i} {tool}: {seconds:.2f} s, {args.size / 1e6 / seconds:.0f} MB/s, "
                f"CPU {cpu:.2f} s, peak RSS {rss:.0f} MiB")
            subprocess.run([args.openmsi, "topic", "delete", dest, "--config", str(dst_cfg),
                            "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def med(tool: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.tool == tool)

    o, r = med("openmsi", "mb_s"), med("raw", "mb_s")
    lines = [
        f"relay of {args.size / GIB:.3g} GiB ({messages} messages of 512 KiB) between two local "
        f"tansu memory brokers, {args.runs} interleaved run(s) per tool, medians:",
        "",
        "| tool | MB/s | CPU s | peak RSS MiB |",
        "|---|---|---|---|",
        f"| openmsi relay | {o:.0f} | {med('openmsi', 'cpu'):.2f} | {med('openmsi', 'rss_mib'):.0f} |",
        f"| raw consume-produce loop | {r:.0f} | {med('raw', 'cpu'):.2f} | {med('raw', 'rss_mib'):.0f} |",
        "",
        f"openmsi/raw = {o / r:.2f}",
    ]
    print("\n".join(lines))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        if args.results.suffix == ".md":
            args.results.write_text("\n".join(lines) + "\n")
        else:
            args.results.write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
