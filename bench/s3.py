#!/usr/bin/env python3
"""The s3-transfer benchmark (bench/s3.sh starts the broker and the S3 server and calls this):
one file, uploaded once to a topic by `openmsi upload-file`, then put into a bucket of a local
S3 server (s3s-fs) by

- raw: boto3's managed multipart upload of the same file from disk (8 MiB parts, the
  reference venv's boto3): the ceiling, no Kafka at all;
- openmsi: `openmsi s3-transfer` (consume, verify each chunk and the file's SHA-512, rebuild,
  then a multipart upload with Content-MD5 on every part and a HEAD check), until its idle exit;
- reference: OpenMSIStream's `S3TransferStreamProcessor` (one put_object of the whole file read
  into memory, then the object downloaded again to compare), until the object is in place
  (then `q`), with --reference.

The clock runs from the spawn to the moment the object is complete: openmsi is watched through
its /metrics (`openmsi_s3_objects_written_total`) polled every 50 ms, because its idle exit adds
a second. Peak RSS is the process's own (wait4). Every run gets a fresh bucket and consumer
group. Standard library only (boto3 runs inside the reference venv's python).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MIB = 1 << 20
ACCESS, SECRET = "openmsi-test", "openmsi-test-secret"


def log(msg: str) -> None:
    print(f"s3.py: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, kafka_port: int, s3_port: int) -> None:
    path.write_text(
        f"""[broker]
bootstrap.servers = 127.0.0.1:{kafka_port}

[producer]
# tansu's memory engine: a fetch that starts inside a record batch skips the rest of it.
batch.num.messages = 1
key.serializer = StringSerializer
value.serializer = DataFileChunkSerializer

[consumer]
# The reference needs its deserializers named; openmsi ignores these keys.
key.deserializer = StringDeserializer
value.deserializer = DataFileChunkDeserializer
auto.offset.reset = earliest
enable.auto.commit = False
fetch.wait.max.ms = 10

[s3]
endpoint_url = http://127.0.0.1:{s3_port}
access_key_id = {ACCESS}
secret_key_id = {SECRET}
region = us-east-1
"""
    )


RAW_PUT = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, key, path = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="%s",
                  aws_secret_access_key="%s", region_name="us-east-1")
s3.upload_file(path, bucket, key, Config=TransferConfig(multipart_chunksize=8 << 20,
               multipart_threshold=8 << 20))
""" % (ACCESS, SECRET)


def wait4(proc: subprocess.Popen) -> int:
    """Reaps `proc`; returns its peak RSS in MiB."""
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss // 1024


def object_complete(root: Path, bucket: str, key: str, size: int) -> bool:
    path = root / bucket / key
    return path.is_file() and path.stat().st_size == size


def run_raw(args, bucket: str, key: str, source: Path) -> tuple[float, int]:
    start = time.monotonic()
    proc = subprocess.Popen([args.python, "-c", RAW_PUT, args.endpoint, bucket, key, str(source)])
    rss = wait4(proc)
    return time.monotonic() - start, rss


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def run_openmsi(args, bucket: str, topic: str, n: int) -> tuple[float, int]:
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [args.openmsi, "s3-transfer", bucket, "--config", str(args.config), "--topic", topic,
         "--group-id", f"bench-{n}-{time.time_ns()}", "--sole-reader",
         "--state-dir", str(args.work / f"state-{n}"), "--exit-when-idle", "1",
         "--metrics-addr", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(args.work / f"openmsi-{n}.log", "w"))
    done = None
    while True:
        # wait4 without blocking: poll() would reap the process and lose its rusage.
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if done is None and metric(port, "openmsi_s3_objects_written_total") >= 1:
            done = time.monotonic() - start
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"s3-transfer failed; see {args.work}/openmsi-{n}.log")
    if done is None:
        done = time.monotonic() - start
    return done, usage.ru_maxrss // 1024


def run_reference(args, bucket: str, topic: str, key: str, size: int, n: int) -> tuple[float, int]:
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(Path(args.python).parent / "S3TransferStreamProcessor"), bucket, "--config",
         str(args.config), "--topic_name", topic, "--consumer_group_id", f"ref-{n}-{time.time_ns()}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(args.work / f"ref-{n}.log", "w"),
        cwd=args.work)
    while not object_complete(args.root, bucket, key, size):
        if proc.poll() is not None:
            raise SystemExit(f"the reference exited early; see {args.work}/ref-{n}.log")
        time.sleep(0.05)
    took = time.monotonic() - start
    proc.stdin.write(b"q\n")
    proc.stdin.flush()
    return took, wait4(proc)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--openmsi", required=True)
    p.add_argument("--python", required=True, help="the reference venv's python (boto3)")
    p.add_argument("--kafka-port", type=int, required=True)
    p.add_argument("--s3-port", type=int, required=True)
    p.add_argument("--s3-root", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--size", type=int, required=True, help="MiB")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reference", action="store_true")
    args = p.parse_args()
    args.endpoint = f"http://127.0.0.1:{args.s3_port}"
    args.root = args.s3_root
    args.config = args.work / "bench.config"
    write_config(args.config, args.kafka_port, args.s3_port)
    size = args.size * MIB
    source = args.work / "src" / "big.bin"
    source.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "wb") as f:
        block = os.urandom(MIB)
        for i in range(args.size):
            f.write(block[i % 7:] + block[: i % 7])
    topic = f"s3bench-{time.time_ns()}"
    subprocess.run([args.openmsi, "topic", "create", topic, "--config", str(args.config),
                    "--partitions", "1"], check=True, stdout=subprocess.DEVNULL)
    log(f"uploading {args.size} MiB to {topic}")
    subprocess.run([args.openmsi, "upload-file", str(source), "--config", str(args.config),
                    "--topic", topic], check=True, stdout=subprocess.DEVNULL)
    key = f"{topic}/big.bin"
    results: dict[str, list[tuple[float, int]]] = {"raw": [], "openmsi": [], "reference": []}
    for n in range(args.runs):
        for tool in ["raw", "openmsi"] + (["reference"] if args.reference else []):
            bucket = f"b-{tool}-{n}"
            (args.root / bucket).mkdir(parents=True)
            if tool == "raw":
                r = run_raw(args, bucket, key, source)
            elif tool == "openmsi":
                r = run_openmsi(args, bucket, topic, n)
            else:
                r = run_reference(args, bucket, topic, key, size, n)
            if not object_complete(args.root, bucket, key, size):
                raise SystemExit(f"{tool} run {n}: the object is not complete")
            log(f"run {n} {tool:9}: {size / MIB / r[0]:7.1f} MiB/s ({r[0]:.2f} s), peak RSS {r[1]} MiB")
            results[tool].append(r)
            # Free the disk: the objects are large.
            subprocess.run(["rm", "-rf", str(args.root / bucket)], check=True)
    print(f"s3-transfer benchmark: {args.size} MiB, {args.runs} run(s) per tool, medians")
    raw = statistics.median(t for t, _ in results["raw"])
    for tool, rs in results.items():
        if not rs:
            continue
        t = statistics.median(x for x, _ in rs)
        rss = max(m for _, m in rs)
        print(f"  {tool:9} {size / MIB / t:7.1f} MiB/s  {t:6.2f} s  {raw / t:4.2f}x raw  peak RSS {rss} MiB")


if __name__ == "__main__":
    main()
