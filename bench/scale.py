#!/usr/bin/env python3
"""The scale-out benchmark (bench/scale.sh starts the brokers and calls this).

For each broker setup given (one broker; a cluster of brokers over one S3 bucket):

1. A 6-partition topic is loaded once with FILES files of SIZE MiB by `openmsi upload-directory
   --upload-existing` (openmsi's partitioner spreads them over the partitions by path).
2. Aggregate download throughput: for 1, 2 and 3 members of a fresh consumer group (each
   `download-directory` with its own output folder, as on separate machines), started together:
   the bytes of all files over the time from the group's first assignment to the last file
   published, the sum of the members' own rates, and how long the group took to form (see
   `throughput`).
3. Failover: 3 members of a fresh group; the first member seen with a file in progress is
   SIGKILLed at once. Reported: the time from the kill to the first file of one of its partitions
   published by a survivor (the session timeout, 10 s by default, plus the rebalance and the
   rest of that file).

A file's partition is computed as openmsi computes it (Kafka's murmur2 of the relative path,
positive, modulo the partition count). Times come from the members' own log lines (UTC, µs).
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

MIB = 1 << 20
PARTITIONS = 6
PUBLISHED = re.compile(r"^(\S+Z)\s+INFO file rebuilt and verified path=(\S+)")
ASSIGNED = re.compile(r"^(\S+Z)\s+INFO partitions assigned partitions=(.*)$")


def log(msg: str) -> None:
    print(f"scale.py: {msg}", file=sys.stderr, flush=True)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as its default partitioner uses it."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(path: str) -> int:
    return (murmur2(path.encode()) & 0x7FFFFFFF) % PARTITIONS


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def published(log_file: Path) -> list[tuple[float, str]]:
    out = []
    for line in log_file.read_text(errors="replace").splitlines():
        if m := PUBLISHED.match(line):
            out.append((stamp(m[1]), m[2]))
    return out


def last_assignment(log_file: Path) -> set[int]:
    parts: set[int] = set()
    for line in log_file.read_text(errors="replace").splitlines():
        if m := ASSIGNED.match(line):
            parts = {int(p) for p in re.findall(r"\[(\d+)\]", m[2])}
    return parts


class Member:
    def __init__(self, args, cfg: Path, topic: str, group: str, out: Path):
        self.out = out
        self.log = out.with_suffix(".log")
        self.proc = subprocess.Popen(
            [args.openmsi, "download-directory", str(out), "--config", str(cfg),
             "--topic", topic, "--group-id", group],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env={**os.environ, "NO_COLOR": "1"},
        )

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def load_topic(args, cfg: Path, topic: str, work: Path) -> None:
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    for i in range(args.files):
        with open(src / f"file-{i:03d}.bin", "wb") as f:
            for j in range(args.size):
                f.write(bytes([i & 0xFF, j & 0xFF]) + block[2:])
    up = subprocess.Popen(
        [args.openmsi, "upload-directory", str(src), "--config", str(cfg), "--topic", topic,
         "--upload-existing", "--settle-seconds", "0.2"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=(work / "upload.log").open("w"),
    )
    registry = src / ".openmsi" / "uploaded.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:
        if registry.exists() and len(registry.read_text().splitlines()) >= args.files:
            break
        time.sleep(0.2)
    else:
        raise SystemExit("the upload did not finish in 10 minutes")
    up.stdin.write(b"quit\n")
    up.stdin.flush()
    up.wait(60)


def first_assignment(log_file: Path) -> float | None:
    for line in log_file.read_text(errors="replace").splitlines():
        if m := ASSIGNED.match(line):
            return stamp(m[1])
    return None


def throughput(args, cfg: Path, topic: str, work: Path, members: int) -> dict:
    """Runs `members` members of a fresh group until every file is published; returns
    wall: MB/s from the group's first assignment to the last file published (what a user
    waits for), formed: seconds between the first and the last member's first assignment
    (tansu hands a joining member its partitions in steps of ~3 s), and summed: the sum of each
    member's own rate (its files' bytes over its first assignment -> its last file)."""
    group = f"scale-{members}-{time.time_ns()}"
    crew = [Member(args, cfg, topic, group, work / f"{group}-m{i}") for i in range(members)]
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if len({p for m in crew for _, p in published(m.log)}) >= args.files:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{members} member(s): not every file published in 10 minutes")
    finally:
        for m in crew:
            m.quit()
    assigned = [first_assignment(m.log) for m in crew]
    starts = [a for a in assigned if a is not None]
    last = max(t for m in crew for t, _ in published(m.log))
    size = args.size * MIB
    summed = 0.0
    for m, start in zip(crew, assigned):
        files = published(m.log)
        if files and start is not None:
            summed += len(files) * size / max(files[-1][0] - start, 1e-3) / 1e6
    return {
        "wall": args.files * size / max(last - min(starts), 1e-3) / 1e6,
        "formed": max(starts) - min(starts),
        "summed": summed,
    }


def failover(args, cfg: Path, topic: str, work: Path) -> float | None:
    group = f"failover-{time.time_ns()}"
    crew = [Member(args, cfg, topic, group, work / f"{group}-m{i}") for i in range(3)]
    try:
        # The first member seen with a file in progress (a partial file staged) is killed at
        # once: that file, at least, is left for a survivor. (A member publishes what it
        # finished at each flush, so "published" comes too late to aim at.)
        deadline = time.time() + 120
        victim = None
        while time.time() < deadline and victim is None:
            victim = next((m for m in crew if any((m.out / ".openmsi" / "staging").glob("*.part"))), None)
            time.sleep(0.01)
        if victim is None:
            raise SystemExit("failover: no member had a file in progress within 2 minutes")
        crew.remove(victim)
        crew.insert(0, victim)
        owned = last_assignment(victim.log)
        done_by_victim = {p for _, p in published(victim.log)}
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.time()
        victim.proc.wait()
        deadline = killed + 120
        while time.time() < deadline:
            firsts = [
                t for m in crew[1:] for t, p in published(m.log)
                if t >= killed and partition_of(p) in owned and p not in done_by_victim
            ]
            if firsts:
                return min(firsts) - killed
            if sum(len(published(m.log)) for m in crew) >= args.files:
                log("the victim's partitions were finished before the kill; no takeover to time")
                return None
            time.sleep(0.2)
        return None
    finally:
        for m in crew[1:]:
            m.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--openmsi", required=True)
    ap.add_argument("--setup", action="append", required=True,
                    help="NAME=BOOTSTRAP (repeatable), e.g. 'one broker=127.0.0.1:9092'")
    ap.add_argument("--topic-prefix", default="scale")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--size", type=int, default=8, help="MiB per file")
    ap.add_argument("--results", type=Path)
    args = ap.parse_args()

    rows = []
    for setup in args.setup:
        name, bootstrap, topic = setup.split("=", 2)
        work = args.work / re.sub(r"\W+", "-", name)
        work.mkdir(parents=True, exist_ok=True)
        cfg = work / "openmsi.config"
        # One message per batch: tansu's memory and S3 engines skip the rest of a batch when a
        # fetch starts inside it. fetch.wait.max.ms: tansu waits half of it on every fetch.
        cfg.write_text(
            f"[broker]\nbootstrap.servers = {bootstrap}\n\n[producer]\nbatch.num.messages = 1\n\n"
            "[consumer]\nfetch.wait.max.ms = 10\n"
        )
        log(f"{name}: loading {args.files} x {args.size} MiB into {topic}")
        load_topic(args, cfg, topic, work)
        for members in (1, 2, 3):
            r = throughput(args, cfg, topic, work, members)
            row = (name, f"{members} member(s)", f"{r['wall']:.0f} MB/s",
                   f"{r['summed']:.0f} MB/s", f"{r['formed']:.1f} s")
            log(" | ".join(row))
            rows.append(row)
        took = failover(args, cfg, topic, work)
        text = "n/a" if took is None else f"{took:.1f} s"
        log(f"{name}: SIGKILL of a member -> its partitions' next file by a survivor: {text}")
        rows.append((name, "SIGKILL of 1 of 3", f"its partitions' next file after {text}", "", ""))

    table = ["| setup | case | group's first assignment -> last file | sum of members' own rates "
             "| group formed over |",
             "|---|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(table))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(
                f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: "
                f"{args.files} x {args.size} MiB, {PARTITIONS} partitions\n\n"
                + "\n".join(table) + "\n"
            )


if __name__ == "__main__":
    main()
