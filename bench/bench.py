#!/usr/bin/env python3
"""The benchmark harness behind bench/run.sh (read bench/README.md first).

run.sh builds the binaries and starts one memory-engine tansu broker; this script does the
rest: generates the data, runs every tool N times per case, measures each process, verifies
every output byte for byte, and prints (and optionally writes) the table of medians.

Measurements, per process:
- wall time: uploads from spawn to exit; downloads from spawn to the moment the harness sees the
  complete output (polled every 10 ms): openmsi's file at its final path (it appears there by
  an atomic rename only after its SHA-512 was verified), the raw consumer's file at full size
  (written in order), the reference's "successfully reconstructed" log line (it writes the file
  in place, so a full-size file is not yet a complete one; the line comes after its own hash
  check). Idle time and shutdown after that point are excluded from MB/s.
- CPU (user + sys) and peak RSS from wait4(2)'s rusage: the same numbers /usr/bin/time -v
  prints, for the whole process life (start-up and shutdown included).
- the broker's CPU over the same interval (from /proc/PID/stat), to show contention: the broker
  shares the machine's cores with the client.

Only the standard library is used, so any python3 >= 3.9 runs it.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

# The small-files data set and its checks are updir.py's (bench/ is on sys.path: this script's
# folder), so both benchmarks build and verify the same tree.
from updir import count_files, make_files, verify as verify_tree

CHUNK_SIZE = 512 * 1024
MIB = 1 << 20
GIB = 1 << 30
POLL_SECS = 0.01
# openmsi download-directory exits by itself this long after the topic went quiet; the harness
# measures to the file's appearance, so this only bounds how long each run lingers.
OPENMSI_IDLE_SECS = 1.0
# Keys of the shared config file that only the Python reference understands (class names of its
# (de)serializers); openmsi ignores them too, the raw client must not pass them to librdkafka.
PYTHON_ONLY_KEYS = {"key.serializer", "value.serializer", "key.deserializer", "value.deserializer"}
REFERENCE_DONE = re.compile(r"File (.+) successfully reconstructed from stream")
REFERENCE_BAD = re.compile(r"hashes for file .* not matched|Traceback|ERROR")
# Each small-files downloader says when its consumer group gave it the partition; the uploader
# starts only then (see Bench.run_small). The reference logs nothing then: READY_SECS after its
# first log line instead (its group join on tansu takes ~1-3 s).
READY_LINE = {"openmsi": "partitions assigned", "raw": "raw_kafka: partitions assigned"}
REFERENCE_READY_SECS = 5.0
# How often the small-files case looks at the output (a walk of 2,000 files costs ~3 ms).
SMALL_POLL_SECS = 0.02
# The latency case: files written and closed one every LATENCY_PERIOD_SECS (a steady rate), each
# timed from its close to its appearance in the running downloader's folder.
LATENCY_PERIOD_SECS = 0.1
LATENCY_POLL_SECS = 0.002
# An uploader is ready once it logs this (openmsi) or LATENCY_REFERENCE_READY_SECS after its
# first log line (the reference logs nothing when it starts watching).
UPLOADER_READY_LINE = "watching"


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A run that failed: the message says which and where its log is."""


@dataclass
class Case:
    """A data size and the tools that run on it."""

    name: str
    size: int
    tools: list[str]
    # Non-zero for the small-files and latency cases: `files` files of `file_kib` KiB each
    # (size is the total), moved end to end through the directory commands.
    files: int = 0
    file_kib: int = 0
    # "transfer" (speed, memory, small files) or "latency".
    kind: str = "transfer"


@dataclass
class Measurement:
    """One process of one run."""

    case: str
    tool: str
    step: str  # upload | download
    run: int
    bytes: int
    wall_s: float  # what MB/s is computed from (see the module doc)
    cpu_s: float
    max_rss_kib: int
    broker_cpu_s: float
    process_wall_s: float  # spawn to exit, including idle time and shutdown
    # CPU seconds used by every other process on the machine (not this process, not the
    # broker) during `wall_s`: how much the run had to share the cores.
    others_cpu_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def others_cores(self) -> float:
        return self.others_cpu_s / self.wall_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s


# ---------------------------------------------------------------------------------------------
# Processes


class BrokerCpu:
    """CPU seconds the broker process has used so far."""

    def __init__(self, pid: int):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return float("nan")
        fields = stat.rpartition(")")[2].split()
        # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / self.tick

    def rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used (busy time of every core)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, threshold_cores: float = 0.25) -> float:
    """Waits (up to `max_wait` s) until the machine is nearly idle for half a second, so one
    run does not fight someone else's build; returns the CPU (in cores) still in use."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_busy_s()
        time.sleep(0.5)
        cores = (machine_busy_s() - b0) / 0.5
        if cores <= threshold_cores or time.monotonic() >= deadline:
            return cores


@dataclass
class Finished:
    """How a process ended and what it used."""

    returncode: int
    cpu_s: float
    max_rss_kib: int
    ended: float  # time.monotonic()


def reap(proc: subprocess.Popen, deadline: float, what: str, logpath: Path) -> Finished:
    """Waits for `proc` with wait4(2) (for its rusage), killing it at `deadline`."""
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            ended = time.monotonic()
            proc.returncode = os.waitstatus_to_exitcode(status)
            return Finished(proc.returncode, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, ended)
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError(f"{what} did not finish in time and was killed; see {logpath}")
        time.sleep(0.005)


def try_reap(proc: subprocess.Popen) -> Finished | None:
    """Finished if `proc` has exited (reaped with its rusage), None if it still runs. Unlike
    Popen.poll(), which reaps without keeping the rusage, so it must not be used on a process
    that is measured."""
    pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
    if not pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(proc.returncode, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, time.monotonic())


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def check_exit(fin: Finished, what: str, logpath: Path) -> None:
    if fin.returncode != 0:
        raise BenchError(
            f"{what} exited with {fin.returncode}; last lines of {logpath}:\n{tail(logpath)}"
        )


# ---------------------------------------------------------------------------------------------
# The bench


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work_dir)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker = BrokerCpu(args.broker_pid)
        self.bootstrap = f"127.0.0.1:{args.port}"
        self.config = self.work / "bench.config"
        self.write_config()
        self.producer_props, self.consumer_props = self.raw_properties()
        self.reference_bin = Path(args.reference_bin)
        self.measurements: list[Measurement] = []
        # Trees of many files, deleted only at the end: on ext4, creating files soon after
        # thousands were deleted is several times slower (the inode allocator skips recently
        # freed inodes one by one), which would slow the next run's downloader.
        self.trash: list[Path] = []
        # Latency case: per tool, every file's close -> published seconds, all runs.
        self.latencies: dict[str, list[float]] = {}
        # Start-up case: per tool, seconds from a downloader's start to its first file.
        self.startups: dict[str, list[float]] = {}
        self.children: set[subprocess.Popen] = set()

    # -- setup --------------------------------------------------------------------------------

    def write_config(self) -> None:
        """The one config file every tool reads (the raw client gets its librdkafka keys)."""
        self.config.write_text(
            f"""# Written by bench/bench.py for a tansu memory-engine broker.
[broker]
bootstrap.servers = {self.bootstrap}

[producer]
# tansu's memory engine: a fetch that starts inside a record batch skips the rest of it, and
# its high watermark is wrong; one message per batch avoids both.
batch.num.messages = 1
# The reference needs its serializer classes named; openmsi ignores these keys.
key.serializer = StringSerializer
value.serializer = DataFileChunkSerializer

[consumer]
auto.offset.reset = earliest
enable.auto.commit = False
# tansu waits at least half of fetch.wait.max.ms on every fetch (librdkafka's default 500 ms
# would make every download crawl).
fetch.wait.max.ms = 10
key.deserializer = StringDeserializer
value.deserializer = DataFileChunkDeserializer
"""
        )

    def raw_properties(self) -> tuple[list[str], list[str]]:
        parser = configparser.ConfigParser()
        parser.optionxform = str  # librdkafka keys are case-sensitive
        parser.read(self.config)

        def props(section: str) -> list[str]:
            out = []
            for key, value in [*parser["broker"].items(), *parser[section].items()]:
                if key in PYTHON_ONLY_KEYS or key == "bootstrap.servers":
                    continue
                out += ["-X", f"{key}={value.lower() if value in ('True', 'False') else value}"]
            return out

        return props("producer"), props("consumer")

    def generate(self, size: int) -> Path:
        """Incompressible data (AES-128-CTR keystream, the same bytes for the same size)."""
        path = self.work / "data" / f"data-{size // MIB}MiB.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size == size:
            return path
        started = time.monotonic()
        if shutil.which("openssl"):
            zero = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
            subprocess.run(
                ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pbkdf2",
                 "-pass", "pass:openmsi-bench", "-out", str(path)],
                stdin=zero.stdout, check=True,
            )
            zero.stdout.close()
            zero.wait()
        else:
            with open(path, "wb") as f:
                left = size
                while left:
                    n = min(left, 8 * MIB)
                    f.write(os.urandom(n))
                    left -= n
        if path.stat().st_size != size:
            raise BenchError(f"generating {path} gave {path.stat().st_size} bytes, not {size}")
        log(f"generated {path.name} ({size / GIB:.3g} GiB) in {time.monotonic() - started:.1f} s")
        return path

    # -- broker topics ------------------------------------------------------------------------

    def create_topic(self, name: str) -> None:
        subprocess.run(
            [str(self.args.broker_sh), "create-topic", name, "--port", str(self.args.port)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )

    def delete_topic(self, name: str) -> None:
        # The memory engine frees (and later reuses) a deleted topic's memory: one broker holds
        # at most one copy of the data at a time.
        try:
            subprocess.run(
                [str(self.args.tansu), "topic", "delete", name,
                 "--broker", f"tcp://{self.bootstrap}"],
                env={**os.environ, "RUST_LOG": "error"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60,
            )
        except subprocess.TimeoutExpired:
            log(f"could not delete topic {name} (broker not answering)")

    # -- running one process ------------------------------------------------------------------

    def settle(self) -> None:
        if self.args.settle > 0:
            busy = wait_quiet(self.args.settle)
            if busy > 0.25:
                log(f"the machine is busy ({busy:.1f} cores used by others): this run will share them")

    def timeout_for(self, size: int) -> float:
        # Generous: 5 MB/s plus start-up; a hang is reported rather than waited on forever.
        return 120 + size / 5e6

    def spawn(self, cmd: list[str], logpath: Path, stdin=subprocess.DEVNULL, stderr=None):
        out = open(logpath, "wb")
        proc = subprocess.Popen(
            cmd, stdin=stdin, stdout=out, stderr=stderr if stderr is not None else out,
            # No RUST_LOG or OPENMSI_* settings of the caller leak in: every run is the same.
            env={k: v for k, v in os.environ.items()
                 if k != "RUST_LOG" and not k.startswith("OPENMSI_")},
        )
        out.close()
        self.children.add(proc)
        return proc

    def measure_upload(self, case: Case, tool: str, run: int, cmd: list[str], size: int) -> Measurement:
        logpath = self.logs / f"{case.name}-{tool}-upload-{run}.log"
        self.settle()
        broker0, machine0 = self.broker.seconds(), machine_busy_s()
        started = time.monotonic()
        proc = self.spawn(cmd, logpath)
        fin = reap(proc, started + self.timeout_for(size), f"{tool} upload", logpath)
        self.children.discard(proc)
        broker1, machine1 = self.broker.seconds(), machine_busy_s()
        check_exit(fin, f"{tool} upload", logpath)
        text = logpath.read_text(errors="replace")
        extra: dict = {}
        if tool == "reference" and (REFERENCE_BAD.search(text) or "Done uploading" not in text):
            # UploadDataFile exits 0 even when every produce call raised.
            raise BenchError(f"reference upload failed; last lines of {logpath}:\n{tail(logpath)}")
        m = re.search(r"in ([0-9.]+) s \(([0-9.]+) MB/s\)", text)
        if m:
            extra["self_reported_s"] = float(m.group(1))
        wall = fin.ended - started
        others = machine1 - machine0 - fin.cpu_s - (broker1 - broker0)
        return Measurement(case.name, tool, "upload", run, size, wall, fin.cpu_s, fin.max_rss_kib,
                           broker1 - broker0, wall, max(others, 0.0), extra)

    def measure_download(self, case: Case, tool: str, run: int, cmd: list[str], size: int,
                         output: Path) -> Measurement:
        """Runs a downloader until its output is complete (see the module doc), then stops it."""
        logpath = self.logs / f"{case.name}-{tool}-download-{run}.log"
        deadline_secs = self.timeout_for(size)
        self.settle()
        broker0, machine0 = self.broker.seconds(), machine_busy_s()
        started = time.monotonic()
        done_at: list[float] = []
        failed: list[str] = []
        if tool == "reference":
            proc = self.spawn(cmd, logpath, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            # Its log lines are read as they come, timestamped, and copied to the log file.
            def on_line(line: str, now: float) -> None:
                if REFERENCE_DONE.search(line) and not done_at:
                    done_at.append(now)
                elif REFERENCE_BAD.search(line):
                    failed.append(line.strip())

            self.follow_reference(proc, logpath, on_line)
        else:
            # stdin at end of file, as under a script or service. (With stdin an open pipe or a
            # terminal, openmsi prints its summary but does not exit until a line arrives: the
            # tokio runtime waits for its blocked stdin read.)
            proc = self.spawn(cmd, logpath)
        deadline = started + deadline_secs
        fin = None
        while not done_at:
            now = time.monotonic()
            if tool != "reference":
                try:
                    if output.stat().st_size == size:
                        done_at.append(now)
                        break
                except FileNotFoundError:
                    pass
            if failed:
                break
            if proc.poll() is not None:
                fin = Finished(proc.returncode, float("nan"), 0, now)
                break
            if now > deadline:
                break
            time.sleep(POLL_SECS)
        broker1, machine1 = self.broker.seconds(), machine_busy_s()
        if not done_at:
            proc.kill()
            proc.wait()
            self.children.discard(proc)
            why = (f"exited with {fin.returncode}" if fin else
                   "reported: " + failed[0] if failed else f"did not finish in {deadline_secs:.0f} s")
            raise BenchError(f"{tool} download {why}; last lines of {logpath}:\n{tail(logpath)}")
        # Complete: now let it go. openmsi leaves by itself (--exit-when-idle), the raw consumer
        # after its last byte, the reference only on `q`.
        if tool == "reference":
            proc.stdin.write(b"q\n")
            proc.stdin.flush()
        fin = reap(proc, time.monotonic() + 60, f"{tool} download shutdown", logpath)
        self.children.discard(proc)
        check_exit(fin, f"{tool} download", logpath)
        extra: dict = {}
        if tool == "openmsi":
            extra["exit_when_idle_s"] = OPENMSI_IDLE_SECS
            m = re.search(r"MB written in ([0-9.]+) s", logpath.read_text(errors="replace"))
            if m:
                extra["self_reported_s_incl_idle"] = float(m.group(1))
        wall = done_at[0] - started
        # The process's CPU after `done_at` (idle polling, shutdown) is small; counting all of
        # it here makes `others` an underestimate, never an overestimate.
        others = machine1 - machine0 - fin.cpu_s - (broker1 - broker0)
        return Measurement(case.name, tool, "download", run, size, wall, fin.cpu_s,
                           fin.max_rss_kib, broker1 - broker0, fin.ended - started,
                           max(others, 0.0), extra)

    # -- one tool, one run --------------------------------------------------------------------

    def encryption_configs(self) -> tuple[Path, Path]:
        """A producer and a consumer node (provision-node, password-derived root), and a config
        for each naming it in [kafkacrypto]; made once per benchmark."""
        up, down = self.work / "bench-up.config", self.work / "bench-down.config"
        if up.exists() and down.exists():
            return up, down
        env = {**os.environ, "OPENMSI_ROT_PASSWORD": "bench-root-password",
               "OPENMSI_PROVISIONING_PASSWORD": "bench-provisioning"}
        for node, role, cfg in (("benchup", "producer", up), ("benchdown", "consumer", down)):
            subprocess.run([self.args.openmsi, "provision-node", "--node-id", node, "--role", role,
                            "--topics", "all", "--output-dir", str(self.work), "--force"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            cfg.write_text(self.config.read_text() + f"\n[kafkacrypto]\nnode_id = {node}\n")
        return up, down

    def run_tool(self, case: Case, tool: str, run: int, data: Path) -> None:
        size = data.stat().st_size
        tag = f"{case.name}-{tool}-{run}-{uuid.uuid4().hex[:8]}".replace(" ", "")
        topic = f"bench-{tag}"
        out_dir = self.work / "out" / tag
        self.create_topic(topic)
        interrupted = False
        key_server = None
        try:
            if tool == "openmsi-encrypted":
                up_cfg, down_cfg = self.encryption_configs()
                for suffix in (".keys", ".reqs", ".subs"):
                    self.create_topic(topic + suffix)
                up = [self.args.openmsi, "upload-file", str(data), "--config", str(up_cfg),
                      "--topic", topic, "--chunk-size", str(CHUNK_SIZE)]
                down = [self.args.openmsi, "download-directory", str(out_dir), "--config",
                        str(down_cfg), "--topic", topic, "--group-id", f"g-{tag}",
                        "--exit-when-idle", str(OPENMSI_IDLE_SECS)]
                output = out_dir / data.name
            elif tool == "openmsi":
                up = [self.args.openmsi, "upload-file", str(data), "--config", str(self.config),
                      "--topic", topic, "--chunk-size", str(CHUNK_SIZE)]
                down = [self.args.openmsi, "download-directory", str(out_dir), "--config",
                        str(self.config), "--topic", topic, "--group-id", f"g-{tag}",
                        "--exit-when-idle", str(OPENMSI_IDLE_SECS)]
                output = out_dir / data.name
            elif tool == "reference":
                up = [str(self.reference_bin / "UploadDataFile"), str(data), "--config",
                      str(self.config), "--topic_name", topic, "--chunk_size", str(CHUNK_SIZE)]
                # debug level only adds the per-file completion line this harness waits for.
                down = [str(self.reference_bin / "DataFileDownloadDirectory"), str(out_dir),
                        "--config", str(self.config), "--topic_name", topic,
                        "--consumer_group_id", f"g-{tag}", "--logger_stream_level", "debug"]
                output = out_dir / data.name
            elif tool == "raw":
                out_dir.mkdir(parents=True)
                output = out_dir / data.name
                up = [self.args.raw, "produce", str(data), "--brokers", self.bootstrap,
                      "--topic", topic, "--chunk-size", str(CHUNK_SIZE), *self.producer_props]
                down = [self.args.raw, "consume", str(output), "--brokers", self.bootstrap,
                        "--topic", topic, "--group", f"g-{tag}", "--bytes", str(size),
                        *self.consumer_props]
            else:
                raise BenchError(f"unknown tool {tool}")
            for step, measure in (("upload", lambda: self.measure_upload(case, tool, run, up, size)),
                                  ("download", lambda: self.measure_download(
                                      case, tool, run, down, size, output))):
                if step == "download" and tool == "openmsi-encrypted":
                    # upload-file has exited: the producer node's key server answers the
                    # downloader's key request (as it would run as a service).
                    key_server = self.spawn([self.args.openmsi, "serve-keys", "--config",
                                             str(up_cfg), "--topic", topic],
                                            self.logs / f"{tag}-serve-keys.log",
                                            stdin=subprocess.PIPE)
                m = measure()
                self.measurements.append(m)
                log(f"{case.name} run {run} {tool:9} {step:8}: {m.mb_per_s:7.1f} MB/s "
                    f"({m.wall_s:.2f} s), CPU {m.cpu_s:.2f} s, peak RSS "
                    f"{m.max_rss_kib / 1024:.0f} MiB, broker CPU {m.broker_cpu_s:.2f} s, "
                    f"others {m.others_cores:.2f} cores")
            if not same_bytes(data, output):
                raise BenchError(f"{tool}: {output} differs from {data}")
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if key_server is not None:
                key_server.kill()
            self.kill_children()
            shutil.rmtree(out_dir, ignore_errors=True)
            # On Ctrl-C the broker is going away (it may already be gone): no topic to tidy.
            if not interrupted:
                self.delete_topic(topic)
                # Let the broker release the topic before the next timing starts.
                time.sleep(0.5)

    # -- the small-files case -----------------------------------------------------------------

    def generate_small(self, case: Case) -> tuple[Path, Path]:
        """The tree of small files (updir.py's layout: 20 folders d0..d19) and, for the raw
        client, the same bytes concatenated in the order it sends them."""
        src = self.work / "data" / f"small-src-{case.files}x{case.file_kib}"
        concat = self.work / "data" / f"small-concat-{case.files}x{case.file_kib}.bin"
        shutil.rmtree(src, ignore_errors=True)
        started = time.monotonic()
        make_files(str(src), case.files, case.file_kib)
        with open(concat, "wb") as out:
            for rel in small_paths(case.files):
                out.write((src / rel).read_bytes())
        if concat.stat().st_size != case.size:
            raise BenchError(f"generating {src} gave {concat.stat().st_size} bytes, not {case.size}")
        log(f"generated {case.files} files of {case.file_kib} KiB in "
            f"{time.monotonic() - started:.1f} s")
        return src, concat

    def small_commands(self, case: Case, tool: str, tag: str, topic: str, src: Path,
                       concat: Path, out_dir: Path) -> tuple[list[str], list[str]]:
        """(uploader, downloader) for one tool. Both directory tools get the files already in
        the folder at start (--upload-existing / --upload_existing), which the reference uploads
        at once; openmsi gets --settle-seconds 0 for the same (its default waits 3 s for a file
        to stop changing, which these complete files need not)."""
        chunk = str(CHUNK_SIZE)
        if tool == "openmsi":
            up = [self.args.openmsi, "upload-directory", str(src), "--config", str(self.config),
                  "--topic", topic, "--upload-existing", "--settle-seconds", "0",
                  "--chunk-size", chunk]
            down = [self.args.openmsi, "download-directory", str(out_dir), "--config",
                    str(self.config), "--topic", topic, "--group-id", f"g-{tag}"]
        elif tool == "reference":
            up = [str(self.reference_bin / "DataFileUploadDirectory"), str(src), "--config",
                  str(self.config), "--topic_name", topic, "--upload_existing",
                  "--chunk_size", chunk]
            down = [str(self.reference_bin / "DataFileDownloadDirectory"), str(out_dir),
                    "--config", str(self.config), "--topic_name", topic,
                    "--consumer_group_id", f"g-{tag}", "--logger_stream_level", "debug"]
        elif tool == "raw":
            out_dir.mkdir(parents=True)
            up = [self.args.raw, "produce", str(concat), "--brokers", self.bootstrap,
                  "--topic", topic, "--chunk-size", str(case.file_kib * 1024),
                  *self.producer_props]
            down = [self.args.raw, "consume", str(out_dir / concat.name), "--brokers",
                    self.bootstrap, "--topic", topic, "--group", f"g-{tag}",
                    "--bytes", str(case.size), *self.consumer_props]
        else:
            raise BenchError(f"unknown tool {tool}")
        return up, down

    def run_small(self, case: Case, tool: str, run: int, src: Path, concat: Path) -> None:
        """End to end: the downloader runs and has its partition; then the uploader starts with
        the files already in its folder (t0) and the clock stops when the last file is rebuilt
        (openmsi: the last of the files has appeared under its final name, which happens only
        after its SHA-512 matched; reference: its last 'successfully reconstructed' line, which
        comes after its own hash check; raw: all bytes consumed). Then both are stopped and
        every file is compared with its source."""
        tag = f"small-{tool}-{run}-{uuid.uuid4().hex[:8]}"
        topic = f"bench-{tag}"
        out_dir = self.work / "out" / tag
        up_log = self.logs / f"small-{tool}-upload-{run}.log"
        down_log = self.logs / f"small-{tool}-download-{run}.log"
        up_cmd, down_cmd = self.small_commands(case, tool, tag, topic, src, concat, out_dir)
        deadline_secs = 120 + case.files * 0.25 + case.size / 5e6
        self.create_topic(topic)
        interrupted = False
        try:
            self.settle()
            done: list[float] = []  # the reference's completion lines, timestamped
            failed: list[str] = []
            first_line: list[float] = []
            piped = subprocess.PIPE if tool != "raw" else subprocess.DEVNULL
            if tool == "reference":
                down = self.spawn(down_cmd, down_log, stdin=piped, stderr=subprocess.PIPE)

                def on_line(line: str, now: float) -> None:
                    first_line[:] = first_line or [now]
                    if REFERENCE_DONE.search(line):
                        done.append(now)
                    elif REFERENCE_BAD.search(line):
                        failed.append(line.strip())

                self.follow_reference(down, down_log, on_line)
            else:
                down = self.spawn(down_cmd, down_log, stdin=piped)
            # Wait until the downloader is ready, so the clock measures the transfer and not
            # its start-up and group join.
            ready_by = time.monotonic() + 120
            while True:
                if try_reap(down):
                    raise BenchError(f"{tool} downloader exited with {down.returncode} before it "
                                     f"was ready; last lines of {down_log}:\n{tail(down_log)}")
                if time.monotonic() > ready_by:
                    raise BenchError(f"{tool} downloader not ready after 120 s; see {down_log}")
                if tool == "reference":
                    if first_line and time.monotonic() - first_line[0] >= REFERENCE_READY_SECS:
                        break
                elif READY_LINE[tool] in down_log.read_text(errors="replace"):
                    break
                time.sleep(0.05)
            down_cpu0 = proc_cpu_s(down.pid)
            broker0, machine0 = self.broker.seconds(), machine_busy_s()
            started = time.monotonic()
            up = self.spawn(up_cmd, up_log, stdin=piped)
            up_fin: Finished | None = None
            down_fin: Finished | None = None
            raw_out = out_dir / concat.name

            def complete() -> bool:
                if tool == "reference":
                    return len(done) >= case.files
                if tool == "openmsi":
                    return count_files(str(out_dir)) >= case.files
                return raw_out.exists() and raw_out.stat().st_size >= case.size

            while True:
                now = time.monotonic()
                if down_fin is None:
                    # The raw consumer leaves by itself after its last byte; the others only
                    # on quit. Reaped here (keeping its rusage), checked after `complete`.
                    down_fin = try_reap(down)
                if complete():
                    finished_at = done[-1] if tool == "reference" else now
                    if down_fin is not None and tool == "raw":
                        finished_at = min(finished_at, down_fin.ended)
                    break
                if failed:
                    raise BenchError(f"reference download reported: {failed[0]}; see {down_log}")
                if down_fin is not None:
                    raise BenchError(f"{tool} downloader exited with {down_fin.returncode} "
                                     f"before the last file; last lines of {down_log}:\n"
                                     f"{tail(down_log)}")
                if up_fin is None:
                    up_fin = try_reap(up)
                    if up_fin is not None:
                        # Only the raw producer leaves by itself (after every acknowledgement).
                        check_exit(up_fin, f"{tool} uploader", up_log)
                        if tool != "raw":
                            raise BenchError(f"{tool} uploader exited early; see {up_log}")
                if now > started + deadline_secs:
                    have = (len(done) if tool == "reference" else
                            count_files(str(out_dir)) if tool == "openmsi" else
                            raw_out.stat().st_size if raw_out.exists() else 0)
                    raise BenchError(f"{tool}: only {have} of {case.files} files (raw: bytes) "
                                     f"after {deadline_secs:.0f} s; see {up_log}, {down_log}")
                time.sleep(SMALL_POLL_SECS)
            broker1, machine1 = self.broker.seconds(), machine_busy_s()
            # Now let both go: the directory tools on a quit command (the reference reads
            # `q`), the raw consumer after its last byte.
            quit_word = b"q\n" if tool == "reference" else b"quit\n"
            for proc in (up, down):
                if proc.stdin and proc.returncode is None:
                    try:
                        proc.stdin.write(quit_word)
                        proc.stdin.flush()
                    except BrokenPipeError:
                        pass
            if up_fin is None:
                up_fin = reap(up, time.monotonic() + 60, f"{tool} uploader shutdown", up_log)
            if down_fin is None:
                down_fin = reap(down, time.monotonic() + 60, f"{tool} downloader shutdown",
                                down_log)
            self.children.discard(up)
            self.children.discard(down)
            check_exit(up_fin, f"{tool} uploader", up_log)
            check_exit(down_fin, f"{tool} downloader", down_log)
            if tool == "reference":
                text = up_log.read_text(errors="replace")
                if REFERENCE_BAD.search(text):
                    raise BenchError(f"reference uploader logged an error; see {up_log}")
            wall = finished_at - started
            down_during = max(down_fin.cpu_s - down_cpu0, 0.0) if down_cpu0 == down_cpu0 else 0.0
            others = machine1 - machine0 - up_fin.cpu_s - down_during - (broker1 - broker0)
            for step, fin in (("e2e: uploader", up_fin), ("e2e: downloader", down_fin)):
                m = Measurement(case.name, tool, step, run, case.size, wall, fin.cpu_s,
                                fin.max_rss_kib, broker1 - broker0, fin.ended - started,
                                max(others, 0.0), {"end_to_end": True, "files": case.files})
                self.measurements.append(m)
            log(f"{case.name} run {run} {tool:9} end to end: {case.size / 1e6 / wall:7.1f} MB/s "
                f"({wall:.2f} s, {case.files / wall:.0f} files/s), CPU up {up_fin.cpu_s:.2f} s "
                f"down {down_fin.cpu_s:.2f} s, peak RSS up {up_fin.max_rss_kib / 1024:.0f} MiB "
                f"down {down_fin.max_rss_kib / 1024:.0f} MiB, broker CPU "
                f"{broker1 - broker0:.2f} s, others {max(others, 0.0) / wall:.2f} cores")
            self.verify_small(case, tool, src, concat, out_dir)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            self.kill_children()
            self.trash.append(out_dir)
            # The uploaders' state (openmsi's .openmsi/, the reference's LOGS/) goes, so the
            # next run starts from the same folder as this one did.
            shutil.rmtree(src / ".openmsi", ignore_errors=True)
            shutil.rmtree(src / "LOGS", ignore_errors=True)
            for stray in src.glob("*.log"):
                stray.unlink()
            if not interrupted:
                self.delete_topic(topic)
                time.sleep(0.5)

    def verify_small(self, case: Case, tool: str, src: Path, concat: Path, out_dir: Path) -> None:
        if tool == "raw":
            if not same_bytes(concat, out_dir / concat.name):
                raise BenchError(f"raw: {out_dir / concat.name} differs from {concat}")
            return
        try:
            n = verify_tree(str(src), str(out_dir))
        except (AssertionError, FileNotFoundError) as e:
            raise BenchError(f"{tool}: rebuilt file differs from or missing in {out_dir}: {e}")
        got = rebuilt_files(out_dir)
        expected = set(small_paths(case.files))
        if n != case.files or got != expected:
            raise BenchError(
                f"{tool}: {n} source files verified, {len(got)} files in {out_dir}, expected "
                f"{case.files}; unexpected: {sorted(got - expected)[:5]}, missing: "
                f"{sorted(expected - got)[:5]}")

    @staticmethod
    def follow_reference(down: subprocess.Popen, down_log: Path,
                         on_line: Callable[[str, float], None]) -> None:
        """Copies the reference downloader's stderr to `down_log` on a thread, calling
        `on_line(line, when)` for each line (it logs completions there, not in files)."""
        def follow() -> None:
            with open(down_log, "ab") as out:
                for raw in down.stderr:
                    now = time.monotonic()
                    out.write(raw)
                    out.flush()
                    on_line(raw.decode(errors="replace"), now)

        threading.Thread(target=follow, daemon=True).start()

    def run_latency(self, case: Case, tool: str, run: int) -> None:
        """Both directory commands of `tool` running with their defaults (openmsi's settle time
        and close detection, the reference's), the downloader assigned; then `case.files`
        files of `case.file_kib` KiB are written and closed one every LATENCY_PERIOD_SECS, and
        each is timed from its close to its publication: openmsi, the file under its final
        name (renamed there after its SHA-512 matched); reference, its 'successfully
        reconstructed' line (it writes in place). Every file is then compared with its
        source."""
        tag = f"latency-{tool}-{run}-{uuid.uuid4().hex[:8]}"
        topic = f"bench-{tag}"
        src = self.work / "data" / tag
        out_dir = self.work / "out" / tag
        src.mkdir(parents=True)
        up_log = self.logs / f"latency-{tool}-upload-{run}.log"
        down_log = self.logs / f"latency-{tool}-download-{run}.log"
        if tool == "openmsi":
            up_cmd = [self.args.openmsi, "upload-directory", str(src), "--config",
                      str(self.config), "--topic", topic]
            down_cmd = [self.args.openmsi, "download-directory", str(out_dir), "--config",
                        str(self.config), "--topic", topic, "--group-id", f"g-{tag}"]
        else:
            up_cmd = [str(self.reference_bin / "DataFileUploadDirectory"), str(src), "--config",
                      str(self.config), "--topic_name", topic]
            down_cmd = [str(self.reference_bin / "DataFileDownloadDirectory"), str(out_dir),
                        "--config", str(self.config), "--topic_name", topic,
                        "--consumer_group_id", f"g-{tag}", "--logger_stream_level", "debug"]
        self.create_topic(topic)
        published: dict[str, float] = {}
        closed: dict[str, float] = {}
        stop = threading.Event()
        interrupted = False
        try:
            self.settle()
            first_line: list[float] = []
            if tool == "reference":
                down = self.spawn(down_cmd, down_log, stdin=subprocess.PIPE,
                                  stderr=subprocess.PIPE)

                def on_line(line: str, now: float) -> None:
                    first_line[:] = first_line or [now]
                    m = REFERENCE_DONE.search(line)
                    if m:
                        published.setdefault(Path(m.group(1)).name, now)

                self.follow_reference(down, down_log, on_line)
            else:
                down = self.spawn(down_cmd, down_log, stdin=subprocess.PIPE)
            up = self.spawn(up_cmd, up_log, stdin=subprocess.PIPE)
            ready_by = time.monotonic() + 120
            while True:
                for proc, what, logpath in ((down, "downloader", down_log),
                                            (up, "uploader", up_log)):
                    if try_reap(proc):
                        raise BenchError(f"{tool} {what} exited with {proc.returncode} before "
                                         f"it was ready; last lines:\n{tail(logpath)}")
                if time.monotonic() > ready_by:
                    raise BenchError(f"{tool} not ready after 120 s; see {up_log}, {down_log}")
                if tool == "reference":
                    up_started = up_log.exists() and up_log.stat().st_size > 0
                    if (up_started and first_line
                            and time.monotonic() - first_line[0] >= REFERENCE_READY_SECS):
                        break
                elif (READY_LINE["openmsi"] in down_log.read_text(errors="replace")
                      and UPLOADER_READY_LINE in up_log.read_text(errors="replace")):
                    break
                time.sleep(0.05)

            def poll_openmsi() -> None:
                while not stop.is_set():
                    for name in list(closed):
                        if name not in published and (out_dir / name).exists():
                            published[name] = time.monotonic()
                    time.sleep(LATENCY_POLL_SECS)

            if tool == "openmsi":
                threading.Thread(target=poll_openmsi, daemon=True).start()
            next_at = time.monotonic()
            for i in range(case.files):
                name = f"lat{i:04d}.bin"
                with open(src / name, "wb") as f:
                    f.write(os.urandom(case.file_kib * 1024))
                closed[name] = time.monotonic()
                next_at += LATENCY_PERIOD_SECS
                time.sleep(max(0.0, next_at - time.monotonic()))
            deadline = time.monotonic() + 60
            while len(published.keys() & closed.keys()) < len(closed):
                if time.monotonic() > deadline:
                    missing = sorted(closed.keys() - published.keys())
                    raise BenchError(f"{tool}: {len(missing)} of {len(closed)} files not "
                                     f"published 60 s after the last write (first: "
                                     f"{missing[:3]}); see {up_log}, {down_log}")
                time.sleep(0.05)
            stop.set()
            quit_word = b"q\n" if tool == "reference" else b"quit\n"
            for proc in (up, down):
                try:
                    proc.stdin.write(quit_word)
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
            for proc, what, logpath in ((up, "uploader", up_log), (down, "downloader", down_log)):
                fin = reap(proc, time.monotonic() + 60, f"{tool} {what} shutdown", logpath)
                self.children.discard(proc)
                check_exit(fin, f"{tool} {what}", logpath)
            for name in closed:
                if not same_bytes(src / name, out_dir / name):
                    raise BenchError(f"{tool}: {out_dir / name} differs from its source")
            lat = sorted(published[n] - closed[n] for n in closed)
            self.latencies.setdefault(tool, []).extend(lat)
            log(f"latency run {run} {tool:9}: {len(lat)} files, median {percentile(lat, 50):.3f} s, "
                f"p90 {percentile(lat, 90):.3f} s, p99 {percentile(lat, 99):.3f} s, "
                f"max {lat[-1]:.3f} s")
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            stop.set()
            self.kill_children()
            self.trash += [out_dir, src]
            if not interrupted:
                self.delete_topic(topic)

    def run_startup(self, case: Case, tool: str, run: int) -> None:
        """A topic already holds `case.files` small files (sent by openmsi upload-file); a
        downloader with a new consumer group starts, and the clock runs from its spawn to its
        first file published (openmsi: under its final name; reference: its first
        'successfully reconstructed' line)."""
        tag = f"startup-{tool}-{run}-{uuid.uuid4().hex[:8]}"
        topic = f"bench-{tag}"
        src = self.work / "data" / tag
        out_dir = self.work / "out" / tag
        src.mkdir(parents=True)
        down_log = self.logs / f"startup-{tool}-{run}.log"
        self.create_topic(topic)
        first: list[float] = []
        interrupted = False
        try:
            for i in range(case.files):
                path = src / f"s{i:03d}.bin"
                path.write_bytes(os.urandom(case.file_kib * 1024))
                subprocess.run([self.args.openmsi, "upload-file", str(path), "--config",
                                str(self.config), "--topic", topic], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            self.settle()
            if tool == "openmsi":
                cmd = [self.args.openmsi, "download-directory", str(out_dir), "--config",
                       str(self.config), "--topic", topic, "--group-id", f"g-{tag}"]
            else:
                cmd = [str(self.reference_bin / "DataFileDownloadDirectory"), str(out_dir),
                       "--config", str(self.config), "--topic_name", topic,
                       "--consumer_group_id", f"g-{tag}", "--logger_stream_level", "debug"]
            started = time.monotonic()
            if tool == "reference":
                down = self.spawn(cmd, down_log, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

                def on_line(line: str, now: float) -> None:
                    if REFERENCE_DONE.search(line) and not first:
                        first.append(now)

                self.follow_reference(down, down_log, on_line)
            else:
                down = self.spawn(cmd, down_log, stdin=subprocess.PIPE)
            deadline = started + 120
            while not first:
                if tool == "openmsi" and count_files(str(out_dir)) > 0:
                    first.append(time.monotonic())
                    break
                if try_reap(down):
                    raise BenchError(f"{tool} downloader exited early; see {down_log}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{tool}: no file 120 s after start; see {down_log}")
                time.sleep(LATENCY_POLL_SECS)
            seconds = first[0] - started
            self.startups.setdefault(tool, []).append(seconds)
            log(f"startup run {run} {tool:9}: first file {seconds:.3f} s after the start")
            down.stdin.write(b"q\n" if tool == "reference" else b"quit\n")
            down.stdin.flush()
            fin = reap(down, time.monotonic() + 60, f"{tool} downloader shutdown", down_log)
            self.children.discard(down)
            check_exit(fin, f"{tool} downloader", down_log)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            self.kill_children()
            self.trash += [out_dir, src]
            if not interrupted:
                self.delete_topic(topic)

    def run(self) -> None:
        for case in self.cases():
            if case.kind == "startup":
                for run in range(1, self.args.runs + 1):
                    for tool in case.tools:
                        self.run_startup(case, tool, run)
                continue
            if case.kind == "latency":
                for run in range(1, self.args.runs + 1):
                    for tool in case.tools:
                        self.run_latency(case, tool, run)
                continue
            if case.files:
                src, concat = self.generate_small(case)
                for run in range(1, self.args.runs + 1):
                    for tool in case.tools:
                        self.run_small(case, tool, run, src, concat)
                if not self.args.keep_data:
                    self.trash.append(src)
                    concat.unlink()
                continue
            data = self.generate(case.size)
            for run in range(1, self.args.runs + 1):
                for tool in case.tools:
                    self.run_tool(case, tool, run, data)
            if not self.args.keep_data:
                data.unlink()

    def cases(self) -> list[Case]:
        small, big = (64 * MIB, 256 * MIB) if self.args.quick else (GIB, 4 * GIB)
        if self.args.file_size:
            small = self.args.file_size
        if self.args.memory_size:
            big = self.args.memory_size
        tools = [t for t in ("openmsi", "reference", "raw") if t in self.args.tools]
        out = []
        if "speed" in self.args.cases:
            out.append(Case(size_name(small), small, tools))
        if "encrypted" in self.args.cases and "openmsi" in tools:
            # The same file plain and end-to-end encrypted (KafkaCrypto format), same broker.
            out.append(Case(f"{size_name(small)} encrypted", small, ["openmsi", "openmsi-encrypted"]))
        if "memory" in self.args.cases and "openmsi" in tools:
            out.append(Case(size_name(big), big, ["openmsi"]))
        if "small" in self.args.cases:
            n = self.args.small_files or (200 if self.args.quick else 2000)
            kib = self.args.small_kib
            out.append(Case(f"{n} x {kib} KiB", n * kib * 1024, tools, n, kib))
        if "tiny" in self.args.cases:
            # Many tiny files: what a tool pays per file. The reference would take hours.
            n = 2000 if self.args.quick else 20000
            tiny_tools = [t for t in tools if t != "reference"]
            out.append(Case(f"{n} x 4 KiB", n * 4096, tiny_tools, n, 4))
        if "latency" in self.args.cases:
            n = 20 if self.args.quick else self.args.latency_files
            lat_tools = [t for t in tools if t != "raw"]
            out.append(Case(f"latency {n} x 1 KiB", n * 1024, lat_tools, n, 1, "latency"))
            out.append(Case("start-up, 10 x 64 KiB waiting", 10 * 65536, lat_tools, 10, 64,
                            "startup"))
        return out

    def empty_trash(self) -> None:
        for tree in self.trash:
            shutil.rmtree(tree, ignore_errors=True)
        self.trash.clear()

    def kill_children(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of already sorted values."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[min(int(rank), len(sorted_values)) - 1]


def seconds_table(samples: dict[str, list[float]], what: str) -> str:
    """Median, p90, p99 and max of each tool's samples (seconds), under the sentence `what`."""
    if not samples:
        return ""
    lines = ["| tool | samples | median s | p90 s | p99 s | max s |", "|---|---|---|---|---|---|"]
    for tool, values in samples.items():
        v = sorted(values)
        lines.append(f"| {tool} | {len(v)} | {percentile(v, 50):.3f} | {percentile(v, 90):.3f} "
                     f"| {percentile(v, 99):.3f} | {v[-1]:.3f} |")
    return f"\n{what}\n\n" + "\n".join(lines) + "\n"


LATENCY_WHAT = (
    f"Latency: files of 1 KiB written and closed one every {LATENCY_PERIOD_SECS:g} s into a "
    "running uploader (default settings), timed from close to publication by a running "
    "downloader (openmsi: under its final name after its SHA-512 matched; reference: its "
    "'successfully reconstructed' line), all runs pooled.")
STARTUP_WHAT = (
    "Start-up: a downloader with a new consumer group started on a topic already holding 10 "
    "files of 64 KiB, from its spawn to its first file published; one sample per run.")


def small_paths(n: int) -> list[str]:
    """The relative paths updir.make_files writes, in the order it writes them."""
    return [f"d{i % 20}/f{i:05d}.bin" for i in range(n)]


def rebuilt_files(out: Path) -> set[str]:
    """Relative paths of the files a downloader rebuilt under `out`: its own state (openmsi's
    .openmsi/, the reference's LOGS/ folder and DataFileDownloadDirectory.log) is not counted."""
    found = set()
    for root, dirs, files in os.walk(out):
        top = Path(root) == out
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (top and d == "LOGS")]
        found.update(os.path.relpath(os.path.join(root, f), out) for f in files
                     if not (top and f == "DataFileDownloadDirectory.log"))
    return found


def proc_cpu_s(pid: int) -> float:
    """user + sys a running process has used so far (nan once it is gone)."""
    return BrokerCpu(pid).seconds()


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(8 * MIB)
            if x != fb.read(8 * MIB):
                return False
            if not x:
                return True


def size_name(size: int) -> str:
    if size % GIB == 0:
        return f"{size // GIB} GiB"
    return f"{size // MIB} MiB"


# ---------------------------------------------------------------------------------------------
# Report


def summarize(measurements: list[Measurement], runs: int) -> list[dict]:
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.case, m.tool, m.step), []).append(m)
    rows = []
    for (case, tool, step), ms in groups.items():
        rates = [m.mb_per_s for m in ms]
        rows.append({
            "case": case, "tool": tool, "step": step, "runs": len(ms),
            "mb_per_s": statistics.median(rates),
            "mb_per_s_min": min(rates), "mb_per_s_max": max(rates),
            "peak_rss_mib": statistics.median(m.max_rss_kib / 1024 for m in ms),
            "cpu_s_per_gib": statistics.median(m.cpu_s / (m.bytes / GIB) for m in ms),
            "broker_cpu_s_per_gib": statistics.median(m.broker_cpu_s / (m.bytes / GIB) for m in ms),
            "others_cores_max": max(m.others_cores for m in ms),
        })
    for row in rows:
        if row["tool"] != "openmsi":
            continue
        for other in ("reference", "raw"):
            peer = next((r for r in rows if r["case"] == row["case"] and r["step"] == row["step"]
                         and r["tool"] == other), None)
            row[f"vs_{other}"] = row["mb_per_s"] / peer["mb_per_s"] if peer else None
    return rows


def table(rows: list[dict], meta: dict) -> str:
    head = ("| case | tool | step | MB/s (median) | MB/s min-max | openmsi/ref | openmsi/raw "
            "| peak RSS MiB | CPU s/GiB | broker CPU s/GiB | others' cores (max) |")
    lines = [head, "|" + "---|" * 11]

    def ratio(v):
        return f"{v:.2f}x" if v else "-"

    for r in rows:
        lines.append(
            f"| {r['case']} | {r['tool']} | {r['step']} | {r['mb_per_s']:.1f} "
            f"| {r['mb_per_s_min']:.0f}-{r['mb_per_s_max']:.0f} "
            f"| {ratio(r.get('vs_reference'))} | {ratio(r.get('vs_raw'))} "
            f"| {r['peak_rss_mib']:.0f} | {r['cpu_s_per_gib']:.2f} | {r['broker_cpu_s_per_gib']:.2f} "
            f"| {r['others_cores_max']:.2f} |"
        )
    notes = (
        f"\nMedian of N={meta['runs']} run(s) per row; MB/s = 10^6 bytes/s; chunk/message size "
        f"512 KiB; one tansu {meta['tansu']} memory-engine broker on 127.0.0.1 sharing "
        f"{meta['cpus']} cores with the clients.\n"
        "Upload: spawn to exit. Download: spawn to complete output (openmsi: file renamed into "
        "place after SHA-512 check; reference: its 'successfully reconstructed' line; raw: "
        "all bytes written), excluding idle/shutdown time. CPU = user+sys of the whole process.\n"
        "others' cores = CPU used by other processes on the machine during the run (0 = the "
        "machine was ours); a row with a high value is noise, not the tool.\n"
        "Small-files case (N x K KiB, one message per file): end to end, both rows of a tool "
        "share one MB/s: from the uploader's start (files already in its folder; openmsi "
        "upload-directory --upload-existing --settle-seconds 0, reference "
        "DataFileUploadDirectory --upload_existing; raw: the same bytes as N messages) to the last "
        "file rebuilt by the already running, already assigned downloader (openmsi "
        "download-directory, reference DataFileDownloadDirectory, raw consumer); CPU and peak "
        "RSS are each process's own, whole life.\n"
    )
    return "\n".join(lines) + "\n" + notes


def environment(args: argparse.Namespace) -> dict:
    def cmd(*c: str) -> str:
        try:
            return subprocess.run(c, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    repo = Path(__file__).resolve().parent.parent
    return {
        "runs": args.runs,
        "quick": args.quick,
        "chunk_size": CHUNK_SIZE,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "openmsi_commit": cmd("git", "-C", str(repo), "rev-parse", "--short", "HEAD")
        + ("+dirty" if cmd("git", "-C", str(repo), "status", "--porcelain", "--", "src") else ""),
        "openmsi_librdkafka": rdkafka_sys_version(repo / "Cargo.lock"),
        "tansu": cmd(str(args.tansu), "--version").split()[-1] if args.tansu else "?",
        "reference": cmd(str(Path(args.reference_bin) / "python"), "-c",
                         "import importlib.metadata as m, confluent_kafka as c; "
                         "print('openmsistream', m.version('openmsistream'), "
                         "'librdkafka', c.libversion()[0])"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def rdkafka_sys_version(lock: Path) -> str:
    """librdkafka's version as bundled by rdkafka-sys ("4.10.0+2.12.1" -> "2.12.1")."""
    m = re.search(r'name = "rdkafka-sys"\nversion = "[^+"]*\+([^"]+)"', lock.read_text())
    return m.group(1) if m else "?"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(KiB|MiB|GiB|)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64MiB, 1GiB)")
    return int(m.group(1)) * {"KiB": 1024, "MiB": MIB, "GiB": GIB, "": 1}[m.group(2)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--broker-pid", type=int, required=True)
    p.add_argument("--broker-sh", type=Path, required=True)
    p.add_argument("--tansu", type=Path, required=True)
    p.add_argument("--openmsi", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--reference-bin", required=True, help="the reference venv's bin/ folder")
    p.add_argument("--work-dir", required=True)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", default="speed,memory,small,tiny,latency")
    p.add_argument("--small-files", type=int, default=None,
                   help="files in the small-files case (default 2000, 200 with --quick)")
    p.add_argument("--small-kib", type=int, default=64, help="KiB per small file (default 64)")
    p.add_argument("--latency-files", type=int, default=100,
                   help="files in the latency case (default 100, 20 with --quick)")
    p.add_argument("--tools", default="openmsi,reference,raw")
    p.add_argument("--file-size", type=parse_size)
    p.add_argument("--memory-size", type=parse_size)
    p.add_argument("--results", action="append", default=[], type=Path)
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("--settle", type=float, default=None,
                   help="before each process, wait up to this many seconds for the machine to "
                        "be idle (default 30, 0 with --quick)")
    args = p.parse_args()
    if not __debug__:
        # updir.verify (the small case's byte-for-byte check) is written with assert.
        p.error("run without python -O: the output checks would be skipped")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.settle is None:
        args.settle = 0.0 if args.quick else 30.0
    if args.runs < 1:
        p.error("--runs must be at least 1")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # run.sh forwards Ctrl-C as SIGTERM; both end in the same cleanup (kill the running tool).
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    bench = Bench(args)
    meta = environment(args)
    try:
        bench.run()
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.kill_children()
        bench.empty_trash()
    rows = summarize(bench.measurements, args.runs)
    text = ((table(rows, meta) if rows else "") + seconds_table(bench.latencies, LATENCY_WHAT)
            + seconds_table(bench.startups, STARTUP_WHAT))
    print()
    print(text)
    for path in args.results:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md":
            path.write_text(f"# openmsi benchmark {meta['date']}\n\n{text}\n"
                            f"```\n{json.dumps(meta, indent=2)}\n```\n")
        else:
            path.write_text(json.dumps({
                "meta": meta, "table": rows,
                "runs": [{**asdict(m), "mb_per_s": m.mb_per_s} for m in bench.measurements],
                "latency_s": bench.latencies,
                "startup_s": bench.startups,
                "markdown": text,
            }, indent=2) + "\n")
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
