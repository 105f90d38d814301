#!/usr/bin/env python
"""A producer and a consumer of Knot Resolver's Kafka file format, written from its description
(`../shared/KNOT.md` as summarised in docs/WIRE_FORMAT.md) with kafka-python, the client Knot
Resolver's manager uses. Nothing here comes from openmsi's code: it is the independent peer
tests/knot.rs checks openmsi against, both ways.

    python knot_peer.py produce --bootstrap HOST:PORT --topic T [--hostname H] [--part-size N]
        [--one-based] [--reverse] [--sha512] NAME=PATH [NAME=PATH ...]
    python knot_peer.py produce-bad --bootstrap HOST:PORT --topic T
    python knot_peer.py consume --bootstrap HOST:PORT --topic T --hostname H --out DIR
        [--idle-seconds S]

produce: each PATH is sent as file NAME: key = NAME, value = one part of the bytes, headers
`hostname` (when given), `file-name`, `total-chunks` and `chunk-index` as decimal text. Parts are
`--part-size` bytes (the last one shorter), indexed from 0 (or 1 with `--one-based`), sent in
order (or last part first with `--reverse`); `--sha512` adds `file-sha512` (openmsi's extra
header). Prints `sent NAME PARTS` per file.

produce-bad: sends one malformed message per kind of damage (missing and non-numeric headers,
an index beyond the total, an absurd total, path tricks), then one good file `after-bad.txt`.

consume: reads the topic from the start as Knot's client does: drops messages whose `hostname`
header is not H, keeps each file's parts by `chunk-index`, and when `total-chunks` parts are
there joins them in index order into DIR/NAME (via a `.tmp` file). Exits after S seconds without
a message and prints one JSON line: {"files": {NAME: hex sha512}, "keys_match": bool,
"headers": sorted header names seen, "dropped": messages for other hosts}.
"""

import argparse
import hashlib
import json
import os
import sys
import time

from kafka import KafkaConsumer, KafkaProducer


def produce(args):
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    for spec in args.files:
        name, path = spec.split("=", 1)
        with open(path, "rb") as f:
            data = f.read()
        parts = [data[i : i + args.part_size] for i in range(0, len(data), args.part_size)] or [b""]
        base = 1 if args.one_based else 0
        order = list(range(len(parts)))
        if args.reverse:
            order = order[-1:] + order[:-1]
        for i in order:
            headers = []
            if args.hostname:
                headers.append(("hostname", args.hostname.encode()))
            headers += [
                ("file-name", name.encode()),
                ("total-chunks", str(len(parts)).encode()),
                ("chunk-index", str(i + base).encode()),
            ]
            if args.sha512:
                headers.append(("file-sha512", hashlib.sha512(data).hexdigest().encode()))
            producer.send(args.topic, key=name.encode(), value=parts[i], headers=headers)
        print(f"sent {name} {len(parts)}", flush=True)
    producer.flush()
    producer.close()


def produce_bad(args):
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")

    def send(name, headers, value=b"bad"):
        producer.send(
            args.topic,
            key=name.encode(),
            value=value,
            headers=[(k, v.encode()) for k, v in headers],
        )

    send("no-index", [("file-name", "no-index"), ("total-chunks", "1")])
    send("no-total", [("file-name", "no-total"), ("chunk-index", "0")])
    send("no-name", [("total-chunks", "1"), ("chunk-index", "0")])
    send("nan", [("file-name", "nan"), ("total-chunks", "two"), ("chunk-index", "0")])
    send("neg", [("file-name", "neg"), ("total-chunks", "1"), ("chunk-index", "-1")])
    send("beyond", [("file-name", "beyond"), ("total-chunks", "2"), ("chunk-index", "5")])
    send("absurd", [("file-name", "absurd"), ("total-chunks", "99999999999999"), ("chunk-index", "0")])
    send("zero", [("file-name", "zero"), ("total-chunks", "0"), ("chunk-index", "0")])
    send("up", [("file-name", "../escaped"), ("total-chunks", "1"), ("chunk-index", "0")])
    send("abs", [("file-name", "/tmp/escaped"), ("total-chunks", "1"), ("chunk-index", "0")])
    send("state", [("file-name", ".openmsi/completed.jsonl"), ("total-chunks", "1"), ("chunk-index", "0")])
    send("badhash", [("file-name", "badhash"), ("total-chunks", "1"), ("chunk-index", "0"),
                     ("file-sha512", "00" * 64)])
    send("after-bad.txt", [("file-name", "after-bad.txt"), ("total-chunks", "1"), ("chunk-index", "0")],
         b"still fine\n")
    producer.flush()
    producer.close()
    print("sent 13", flush=True)


def consume(args):
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(args.idle_seconds * 1000),
    )
    parts = {}
    files = {}
    header_names = set()
    keys_match = True
    dropped = 0
    for message in consumer:
        headers = {k: v for k, v in message.headers}
        header_names.update(headers)
        if headers.get("hostname", b"").decode() != args.hostname:
            dropped += 1
            continue
        name = headers["file-name"].decode()
        keys_match &= message.key == name.encode()
        total = int(headers["total-chunks"].decode())
        index = int(headers["chunk-index"].decode())
        got = parts.setdefault(name, {})
        got[index] = message.value or b""
        if len(got) == total:
            target = os.path.join(args.out, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target + ".tmp", "wb") as f:
                for i in sorted(got):
                    f.write(got[i])
            os.replace(target + ".tmp", target)
            with open(target, "rb") as f:
                files[name] = hashlib.sha512(f.read()).hexdigest()
            del parts[name]
    consumer.close()
    print(json.dumps({"files": files, "keys_match": keys_match,
                      "headers": sorted(header_names), "dropped": dropped}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--hostname")
    p.add_argument("--part-size", type=int, default=1000)
    p.add_argument("--one-based", action="store_true")
    p.add_argument("--reverse", action="store_true")
    p.add_argument("--sha512", action="store_true")
    p.add_argument("files", nargs="+")
    b = sub.add_parser("produce-bad")
    b.add_argument("--bootstrap", required=True)
    b.add_argument("--topic", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--hostname", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    {"produce": produce, "produce-bad": produce_bad, "consume": consume}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
