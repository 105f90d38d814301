#!/usr/bin/env python
"""Generate the wire-format golden vectors in tests/fixtures/golden/ from the REFERENCE itself.

Run with the Python of a venv that has `openmsistream==1.8.8` installed:

    ~/.cache/openmsi/venv-openmsistream-1.8.8/bin/python scripts/gen_golden.py

Nothing in the output is typed by hand:

* "upload" cases write a sample file into a temporary upload root, set its mtime, and let the
  reference's `UploadDataFile` split it into `DataFileChunk`s (exactly as `upload_whole_file` does
  before handing the chunks to its producers). Each chunk's key is `chunk.msg_key` encoded with
  confluent-kafka's `StringSerializer` (the `key.serializer` of every reference producer config),
  and its value is `DataFileChunkSerializer()(chunk)`.
* "constructed" cases are `DataFileChunk` objects built directly and serialized by the reference
  serializer. They exist for inputs the uploader cannot produce here: the empty file (the
  reference uploader never uploads it: it yields zero chunks) and integer-encoding boundaries
  (offsets and indices beyond what a small sample file reaches).
* 9-field values (what OpenMSIStream <= 1.8.6 wrote and accepts): the 1.8.8 serializer always
  writes 10 fields, so the script packs the same first 9 properties in the same order with
  `msgpack.packb(..., use_bin_type=True)`, which is what the <= 1.8.6 `DataFileChunkSerializer`
  did (its body is the 1.8.8 one without the `file_mtime` append). The script checks that the
  result is the 10-field value with the array header 0x9a -> 0x99 and the trailing float removed.

Self-checks (the script fails if any does not hold): every value round-trips through the
reference `DataFileChunkDeserializer`, and every case (9 and 10 fields, including the empty file)
is rebuilt byte for byte by the reference downloader's `DownloadDataFileToDisk.add_chunk`, fed the
chunks in a shuffled (seeded) order.
"""

import hashlib
import json
import os
import pathlib
import random
import shutil
import struct
import sys
import tempfile

import msgpack
from confluent_kafka.serialization import StringSerializer

import openmsistream
from openmsistream.data_file_io.entity.data_file_chunk import DataFileChunk
from openmsistream.data_file_io.entity.upload_data_file import UploadDataFile
from openmsistream.data_file_io.entity.download_data_file import DownloadDataFileToDisk
from openmsistream.data_file_io.config import DATA_FILE_HANDLING_CONST
from openmsistream.kafka_wrapper.serialization import (
    DataFileChunkSerializer,
    DataFileChunkDeserializer,
)

REPO = pathlib.Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "golden"

# A fixed mtime with a fractional part, set in nanoseconds so that st_mtime is a float with
# many significant bits (the Rust side compares the f64 bit pattern, not a decimal string).
MTIME_NS = 1_700_000_000_123_456_789
# For constructed chunks.
CONSTRUCTED_MTIME = 1_712_345_678.5


def content(n, seed):
    """Deterministic, non-repeating-looking bytes (no RNG so the files never change).

    Byte i is (i*131 + seed*17 + (i>>8)*7) mod 256. The manifest records the seed so that the
    Rust tests can regenerate a file that is not stored (the 64 KiB case, kept out to stay small);
    they check the formula against the stored files first.
    """
    return bytes(((i * 131 + seed * 17 + (i >> 8) * 7) & 0xFF) for i in range(n))


# name, relative path under the upload root, size, chunk size, filename_append, capture mtime,
# small (store the file and write 9-field vectors too)
UPLOAD_CASES = [
    ("one_byte", "one byte.txt", 1, 4096, "", True, True),
    # capture_mtime=False: the reference serializer writes file_mtime None as 0.0
    ("no_mtime", "no mtime.txt", 5, 4096, "", False, True),
    ("unicode_1000", "données été ✓.dat", 1000, 4096, "", True, True),
    ("exact_4096", "a/b/exact 4096.raw", 4096, 4096, "", True, True),
    ("three_chunks", "a/b/ünï cödé.bin", 4096 * 2 + 17, 4096, "", True, True),
    ("append", "sub dir/with append.tar.gz", 300, 4096, "_copy", True, True),
    # 64 KiB chunks: data as bin32 and an offset as uint32, like the 512 KiB default does.
    # 10 fields only and the file not stored (regenerated from its seed), to keep the fixtures
    # small.
    ("bin32", "big/bin32.bin", 65536 + 3, 65536, "", True, False),
]

LONG_SUBDIR = "/".join(["x" * 100, "y" * 100, "z" * 100])  # > 255 bytes: str16

# name, subdir, filename, offset, chunk_i, n_total_chunks, data, filename_append
CONSTRUCTED_CASES = [
    ("ints_fix", "", "i.dat", 127, 1, 127, b"abc", ""),
    ("ints_u8", "", "i.dat", 128, 128, 255, b"abc", ""),
    ("ints_u16", "d", "i.dat", 256, 255, 256, b"abc", ""),
    ("ints_u16_max", "d", "i.dat", 65535, 65535, 65535, b"", ""),
    ("ints_u32", "d/e", "i.dat", 65536, 65536, 65536, b"x" * 31, ""),
    ("ints_u32_max", "d/e", "i.dat", 2**32 - 1, 2**32 - 1, 2**32 - 1, b"x" * 32, ""),
    ("ints_u64", "d/e", "i.dat", 2**32, 2**32, 2**32, b"y" * 255, ""),
    ("ints_u64_max", "d/e", "i.dat", 2**64 - 1, 2**64 - 1, 2**64 - 1, b"y" * 256, ""),
    ("long_names", LONG_SUBDIR, "n" * 40 + ".dat", 0, 1, 1, b"z", "a" * 32),
]


def hexd(b):
    return b.hex()


def f64_bits(x):
    return "%016x" % struct.unpack(">Q", struct.pack(">d", x))[0]


def nine_fields(chunk):
    """The first 9 properties exactly as DataFileChunkSerializer orders them."""
    return msgpack.packb(
        [
            str(chunk.filename),
            chunk.file_hash,
            chunk.chunk_hash,
            chunk.chunk_offset_write,
            chunk.chunk_i,
            chunk.n_total_chunks,
            chunk.subdir_str,
            chunk.filename_append,
            chunk.data,
        ],
        use_bin_type=True,
    )


def check_nine_vs_ten(v9, v10):
    # fixarray 10 -> fixarray 9, and drop the trailing float64 (0xcb + 8 bytes)
    assert v10[0] == 0x9A and v9[0] == 0x99, "unexpected array headers"
    assert v10[-9] == 0xCB, "mtime is not a float64"
    assert v9[1:] == v10[1:-9], "9-field value is not the 10-field prefix"


def rebuild_with_reference(values, outdir, expected, label, logdir):
    """Feed deserialized values to DownloadDataFileToDisk as DataFileDownloadDirectory does."""
    des = DataFileChunkDeserializer()
    order = list(range(len(values)))
    random.Random(label).shuffle(order)
    datafile = None
    codes = []
    for idx in order:
        dfc = des(values[idx])
        dfc.rootdir = outdir  # what DataFileChunkHandler._process_message does
        if datafile is None:
            datafile = DownloadDataFileToDisk(dfc.filepath, logger_file=logdir)
        codes.append(datafile.add_chunk(dfc))
    assert codes[-1] == DATA_FILE_HANDLING_CONST.FILE_SUCCESSFULLY_RECONSTRUCTED_CODE, (
        label,
        codes,
    )
    assert all(c == DATA_FILE_HANDLING_CONST.FILE_IN_PROGRESS for c in codes[:-1]), codes
    rebuilt = datafile.full_filepath.read_bytes()
    assert rebuilt == expected, f"{label}: rebuilt bytes differ"
    return datafile.full_filepath


def record_chunk(case_id, chunk, value10, write_nine, manifest_chunks, key_ser):
    key = chunk.msg_key
    key_bytes = key_ser(key)
    assert key_bytes == key.encode("utf-8")
    stem = f"{case_id}_{chunk.chunk_i}_of_{chunk.n_total_chunks}"
    (OUT / "values" / f"{stem}.v10.bin").write_bytes(value10)
    entry = {
        "chunk_i": chunk.chunk_i,
        "n_total_chunks": chunk.n_total_chunks,
        "offset": chunk.chunk_offset_write,
        "len": len(chunk.data),
        "chunk_hash": hexd(chunk.chunk_hash),
        "key": key,
        "value10": f"values/{stem}.v10.bin",
        "value9": None,
    }
    values9 = None
    if write_nine:
        value9 = nine_fields(chunk)
        check_nine_vs_ten(value9, value10)
        (OUT / "values" / f"{stem}.v9.bin").write_bytes(value9)
        entry["value9"] = f"values/{stem}.v9.bin"
        values9 = value9
    manifest_chunks.append(entry)
    return values9


def main():
    print(f"openmsistream {openmsistream.__file__}, msgpack {msgpack.version}", file=sys.stderr)
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "files").mkdir(parents=True)
    (OUT / "values").mkdir()
    ser = DataFileChunkSerializer()
    des = DataFileChunkDeserializer()
    key_ser = StringSerializer()
    cases = []
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        root = tmp / "upload_root"
        root.mkdir()
        for seed, (case_id, relpath, size, chunk_size, append, cap_mtime, small) in enumerate(
            UPLOAD_CASES
        ):
            nine = small
            data = content(size, seed)
            path = root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, ns=(MTIME_NS, MTIME_NS))
            if small:
                (OUT / "files" / f"{case_id}.bin").write_bytes(data)
            udf = UploadDataFile(path, rootdir=root, filename_append=append, logger_file=tmp)
            udf.add_chunks_to_upload(chunk_size=chunk_size, capture_mtime=cap_mtime)
            chunks = list(udf.chunks_to_upload)
            mtime = path.stat().st_mtime if cap_mtime else 0.0
            entry = {
                "name": case_id,
                "kind": "upload",
                "relpath": relpath,
                "filename": path.name,
                "subdir": chunks[0].subdir_str,
                "filename_append": append,
                "chunk_size": chunk_size,
                "file": f"files/{case_id}.bin" if small else None,
                "content_seed": seed,
                "file_size": size,
                "file_hash": hexd(hashlib.sha512(data).digest()),
                "mtime_bits": f64_bits(mtime),
                "mtime": mtime,
                "chunks": [],
            }
            values10, values9 = [], []
            for chunk in chunks:
                value10 = ser(chunk)  # populates chunk.data from the file
                assert chunk.file_hash == hashlib.sha512(data).digest()
                back = des(value10)
                assert back.data == chunk.data and back.chunk_i == chunk.chunk_i
                assert back.file_mtime == (mtime if mtime > 0 else None)
                values10.append(value10)
                v9 = record_chunk(case_id, chunk, value10, nine, entry["chunks"], key_ser)
                if v9 is not None:
                    values9.append(v9)
            expected_name = path.name
            if append:
                expected_name = path.stem + append + path.suffix
            for fields, vals in (("10", values10), ("9", values9)):
                if not vals:
                    continue
                out = tmp / f"out{fields}_{case_id}"
                rebuilt = rebuild_with_reference(vals, out, data, f"{case_id}/{fields}", tmp)
                assert rebuilt.relative_to(out) == pathlib.Path(relpath).with_name(
                    expected_name
                ), rebuilt
                print(
                    f"check: {case_id}: {len(vals)} {fields}-field chunk(s) rebuilt by the "
                    f"reference downloader as {rebuilt.relative_to(out).as_posix()!r}",
                    file=sys.stderr,
                )
            cases.append(entry)

        # --- the empty file -------------------------------------------------------------
        empty = root / "empty.bin"
        empty.write_bytes(b"")
        os.utime(empty, ns=(MTIME_NS, MTIME_NS))
        udf = UploadDataFile(empty, rootdir=root, logger_file=tmp)
        udf.add_chunks_to_upload(chunk_size=4096)
        assert udf.chunks_to_upload == [], "reference now uploads empty files?"
        notes.append(
            "empty: the reference UploadDataFile yields 0 chunks for an empty file (never "
            "uploaded); this vector is a DataFileChunk constructed by the script (chunk 1 of 1, "
            "offset 0, empty data, both hashes SHA-512 of b'') and serialized by the reference "
            "DataFileChunkSerializer; the reference DownloadDataFileToDisk rebuilds it as an "
            "empty file (checked by the script)."
        )
        empty_hash = hashlib.sha512(b"").digest()
        mtime = empty.stat().st_mtime
        chunk = DataFileChunk(
            empty, "empty.bin", empty_hash, empty_hash, 0, 0, 0, 1, 1,
            rootdir=root, filename_append="", data=b"", file_mtime=mtime,
        )  # fmt: skip
        (OUT / "files" / "empty.bin").write_bytes(b"")
        entry = {
            "name": "empty",
            "kind": "constructed_empty",
            "relpath": "empty.bin",
            "filename": "empty.bin",
            "subdir": "",
            "filename_append": "",
            "chunk_size": 4096,
            "file": "files/empty.bin",
            "file_size": 0,
            "file_hash": hexd(empty_hash),
            "mtime_bits": f64_bits(mtime),
            "mtime": mtime,
            "chunks": [],
        }
        value10 = ser(chunk)
        value9 = record_chunk("empty", chunk, value10, True, entry["chunks"], key_ser)
        for fields, val in (("10", value10), ("9", value9)):
            out = tmp / f"out{fields}_empty"
            rebuilt = rebuild_with_reference([val], out, b"", f"empty/{fields}", tmp)
            assert rebuilt == out / "empty.bin" and rebuilt.stat().st_size == 0
            print(
                f"check: reference DownloadDataFileToDisk rebuilt the empty file from the "
                f"{fields}-field chunk 1 of 1 (FILE_SUCCESSFULLY_RECONSTRUCTED, 0 bytes)",
                file=sys.stderr,
            )
        cases.append(entry)

        # What the reference downloader would do with n_total_chunks = 0 instead (not a
        # golden vector, a recorded finding): the file is created empty but never reported
        # as reconstructed, because len(offsets) == 1 never equals 0.
        chunk0 = DataFileChunk(
            empty, "empty.bin", empty_hash, empty_hash, 0, 0, 0, 1, 0,
            rootdir=root, data=b"", file_mtime=mtime,
        )  # fmt: skip
        dfc = des(ser(chunk0))
        out = tmp / "out_empty_n0"
        dfc.rootdir = out
        code = DownloadDataFileToDisk(dfc.filepath, logger_file=tmp).add_chunk(dfc)
        assert code == DATA_FILE_HANDLING_CONST.FILE_IN_PROGRESS, code
        print(
            "check: with n_total_chunks=0 the reference downloader answers FILE_IN_PROGRESS "
            f"(file exists: {(out / 'empty.bin').exists()}) and never finishes",
            file=sys.stderr,
        )
        notes.append(
            "empty with n_total_chunks=0 (not used): the reference downloader writes an empty "
            "file but returns FILE_IN_PROGRESS forever, so chunk 1 of 1 is the right encoding."
        )

        # --- integer / length encoding boundaries -----------------------------------------
        file_hash = hashlib.sha512(b"some other file").digest()
        for case_id, subdir, filename, offset, chunk_i, n_total, data, append in CONSTRUCTED_CASES:
            path = pathlib.Path(subdir) / filename if subdir else pathlib.Path(filename)
            chunk = DataFileChunk(
                path, filename, file_hash, hashlib.sha512(data).digest(), offset, offset,
                len(data), chunk_i, n_total, rootdir=None, filename_append=append, data=data,
                file_mtime=CONSTRUCTED_MTIME,
            )  # fmt: skip
            assert chunk.subdir_str == subdir, (chunk.subdir_str, subdir)
            entry = {
                "name": case_id,
                "kind": "constructed",
                "relpath": str(path.as_posix()),
                "filename": filename,
                "subdir": subdir,
                "filename_append": append,
                "chunk_size": None,
                "file": None,
                "file_size": None,
                "file_hash": hexd(file_hash),
                "mtime_bits": f64_bits(CONSTRUCTED_MTIME),
                "mtime": CONSTRUCTED_MTIME,
                "data_hex": hexd(data),
                "chunks": [],
            }
            value10 = ser(chunk)
            back = des(value10)
            assert back.chunk_offset_write == offset and back.n_total_chunks == n_total
            record_chunk(case_id, chunk, value10, True, entry["chunks"], key_ser)
            cases.append(entry)

    manifest = {
        "generated_by": "scripts/gen_golden.py",
        "reference": "openmsistream 1.8.8 (UploadDataFile, DataFileChunk, "
        "DataFileChunkSerializer, DataFileChunkDeserializer, DownloadDataFileToDisk)",
        "msgpack_python": ".".join(map(str, msgpack.version)),
        "notes": notes
        + [
            "key: chunk.msg_key encoded by confluent_kafka StringSerializer (UTF-8)",
            "value10: DataFileChunkSerializer()(chunk) (1.8.8)",
            "value9: msgpack.packb(first 9 properties, use_bin_type=True) as the <= 1.8.6 "
            "serializer did; the 1.8.8 serializer cannot write 9 fields",
            "mtime_bits: the IEEE-754 bits of file_mtime as 16 hex digits (mtime is the same "
            "value in decimal, for humans)",
        ],
        "cases": cases,
    }
    (OUT / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(cases)} cases to {OUT} ({total} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
