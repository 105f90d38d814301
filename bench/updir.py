#!/usr/bin/env python3
"""upload-directory figures (standard library only).

  python3 bench/updir.py --bin target/release/openmsi [--files 2000] [--file-kib 64]
                         [--latency-files 100] [--settle 3] [--reference-python PY]
                         [--skip latency|openmsi|reference]...
  (one 1 GiB file: --files 1 --file-kib 1048576 --skip latency)

Starts one tansu broker (memory engine) on a free port through scripts/broker.sh, then:
- latency: a running `openmsi download-directory` and `openmsi upload-directory`; files of 1 KiB
  are written (and closed) one every 100 ms; the time from close to the file's appearance in
  the downloader's folder is measured per file; prints the median and p90.
- throughput: N files of K KiB already in a folder, `upload-directory --upload-existing
  --settle-seconds 0`: time from start to the last file recorded as acknowledged in
  .openmsi/uploaded.jsonl (upload acknowledged); and, for it and the reference
  `DataFileUploadDirectory --upload_existing` on the same broker, the time from the uploader's
  start to the last file appearing in a running `openmsi download-directory` (end to end; the
  reference logs nothing per file at its default level and tansu's memory engine reports wrong
  high watermarks, so end to end is the measure both share).
Every rebuilt file is compared with its source.
"""
import argparse, functools, hashlib, os, shutil, socket, subprocess, sys, tempfile, threading, time

print = functools.partial(print, flush=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def broker_sh(*args):
    subprocess.run(["bash", os.path.join(REPO, "scripts/broker.sh"), *args], check=True,
                   stdout=subprocess.DEVNULL)


def config(work, port):
    path = os.path.join(work, "bench.config")
    with open(path, "w") as f:
        f.write(f"[broker]\nbootstrap.servers = 127.0.0.1:{port}\n\n[producer]\n"
                "key.serializer = StringSerializer\nvalue.serializer = DataFileChunkSerializer\n"
                "batch.num.messages = 1\n\n[consumer]\ngroup.id = create_new\n"
                "auto.offset.reset = earliest\nenable.auto.commit = False\nfetch.wait.max.ms = 10\n"
                "key.deserializer = StringDeserializer\nvalue.deserializer = DataFileChunkDeserializer\n")
    return path


def sent_count(folder):
    try:
        with open(os.path.join(folder, ".openmsi/uploaded.jsonl")) as f:
            return sum(1 for l in f if '"state":"sent"' in l)
    except FileNotFoundError:
        return 0


def wait_log(path, text, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if text in open(path, errors="replace").read():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timeout waiting for {text!r} in {path}")


def sha(path):
    return hashlib.sha512(open(path, "rb").read()).hexdigest()


def latency(a, work, cfg, port):
    topic = "lat"
    broker_sh("create-topic", topic, "--port", str(port), "--partitions", "1")
    src, out = os.path.join(work, "lat-src"), os.path.join(work, "lat-out")
    os.makedirs(src)
    dl = subprocess.Popen([a.bin, "download-directory", out, "--config", cfg, "--topic", topic],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(work, "lat-dl.log"), "w"))
    up_log = os.path.join(work, "lat-up.log")
    up = subprocess.Popen([a.bin, "upload-directory", src, "--config", cfg, "--topic", topic,
                           "--settle-seconds", str(a.settle)],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(up_log, "w"))
    wait_log(up_log, "watching")
    time.sleep(3)  # let the downloader join its group
    closed, arrived = {}, {}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for name in list(closed):
                if name not in arrived and os.path.exists(os.path.join(out, name)):
                    arrived[name] = time.time()
            time.sleep(0.002)

    t = threading.Thread(target=poll)
    t.start()
    for i in range(a.latency_files):
        name = f"f{i:03d}.bin"
        with open(os.path.join(src, name), "wb") as f:
            f.write(os.urandom(1024))
        closed[name] = time.time()
        time.sleep(0.1)
    end = time.time() + 60
    while len(arrived) < len(closed) and time.time() < end:
        time.sleep(0.05)
    stop.set()
    t.join()
    for p in (up, dl):
        p.stdin.write(b"quit\n")
        p.stdin.flush()
        p.wait(60)
    lat = sorted(arrived[n] - closed[n] for n in arrived)
    bad = [n for n in arrived if sha(os.path.join(out, n)) != sha(os.path.join(src, n))]
    assert len(lat) == a.latency_files and not bad, (len(lat), bad)
    med, p90 = lat[len(lat) // 2], lat[int(len(lat) * 0.9)]
    print(f"latency close->appears in downloader (settle {a.settle} s, {len(lat)} files): "
          f"median {med:.3f} s, p90 {p90:.3f} s, min {lat[0]:.3f} s, max {lat[-1]:.3f} s")


def make_files(folder, n, kib):
    for i in range(n):
        sub = os.path.join(folder, f"d{i % 20}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
            left = kib * 1024
            while left > 0:
                n = min(left, 4 << 20)
                f.write(os.urandom(n))
                left -= n


def verify(src, out):
    n = 0
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "LOGS"]
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), src)
            assert sha(os.path.join(src, rel)) == sha(os.path.join(out, rel)), rel
            n += 1
    return n


def count_files(out):
    n = 0
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += len(files)
    return n


def start_downloader(a, work, cfg, topic):
    out = os.path.join(work, f"{topic}-out")
    dl = subprocess.Popen([a.bin, "download-directory", out, "--config", cfg, "--topic", topic],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(work, f"{topic}-dl.log"), "w"))
    time.sleep(3)  # let it join its group
    return dl, out


def stop(p, word):
    p.stdin.write(word)
    p.stdin.flush()
    p.wait(120)


def throughput(a, work, cfg, port, which):
    topic = f"tp-{which}"
    broker_sh("create-topic", topic, "--port", str(port), "--partitions", "1")
    src = os.path.join(work, f"tp-src-{which}")
    make_files(src, a.files, a.file_kib)
    log = os.path.join(work, f"tp-{which}.log")
    dl, out = start_downloader(a, work, cfg, topic)
    if which == "openmsi":
        cmd = [a.bin, "upload-directory", src, "--config", cfg, "--topic", topic,
               "--upload-existing", "--settle-seconds", "0"]
        quit_word = b"quit\n"
    else:
        code = ("import sys; sys.argv[0] = 'DataFileUploadDirectory'; from "
                "openmsistream.data_file_io.actor.data_file_upload_directory import main; "
                "sys.exit(main())")
        cmd = [a.reference_python, "-c", code, src, "--config", cfg, "--topic_name", topic,
               "--upload_existing"]
        quit_word = b"q\n"
    t0 = time.time()
    up = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=open(log, "w"))
    acked = None
    end = time.time() + 900
    while time.time() < end:
        if acked is None and which == "openmsi" and sent_count(src) >= a.files:
            acked = time.time() - t0
        if count_files(out) >= a.files:
            break
        if up.poll() is not None:
            raise SystemExit(open(log).read()[-3000:])
        time.sleep(0.05)
    e2e = time.time() - t0
    stop(up, quit_word)
    stop(dl, b"quit\n")
    if acked is not None:
        report(f"{which} upload-directory, all acknowledged", a, acked)
    report(f"{which} upload-directory -> openmsi download-directory, end to end", a, e2e)
    n = verify(src, out)
    assert n == a.files, n
    print(f"  verified {n} files byte for byte")


def report(what, a, dt):
    mb = a.files * a.file_kib * 1024 / 1e6
    print(f"throughput {what}: {a.files} x {a.file_kib} KiB in {dt:.2f} s = "
          f"{a.files / dt:.0f} files/s, {mb / dt:.1f} MB/s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--file-kib", type=int, default=64)
    p.add_argument("--latency-files", type=int, default=100)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--reference-python", default=os.path.expanduser(
        "~/.cache/openmsi/venv-openmsistream-1.8.8/bin/python"))
    p.add_argument("--skip", action="append", default=[], help="latency|openmsi|reference")
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="openmsi-updir-bench-")
    port = free_port()
    bdir = os.path.join(work, "broker")
    broker_sh("start", "--port", str(port), "--dir", bdir, "--memory")
    try:
        cfg = config(work, port)
        if "latency" not in a.skip:
            latency(a, work, cfg, port)
        for which in ("openmsi", "reference"):
            if which not in a.skip:
                throughput(a, work, cfg, port, which)
    finally:
        broker_sh("stop", "--dir", bdir)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
