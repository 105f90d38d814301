#!/usr/bin/env python
"""Upload files with the REFERENCE uploader (OpenMSIStream 1.8.8), keeping their subfolders.

Used by tests/interop.rs. Run it with the python of the reference venv:

    python tests/interop/upload_files.py --config CFG --topic T --root-dir ROOT \
        [--chunk-size N] [--n-threads N] [--filename-append S] [--logger-file LOG] FILE [FILE ...]

Why a script: the reference's `UploadDataFile` console script always records a file relative to
its own folder (it builds `UploadDataFile(filepath)`, so `rootdir = filepath.parent`) and has no
option for an upload root, so every file it sends lands at the top level of the output folder.
Files in subfolders only come from `DataFileUploadDirectory`, which builds
`UploadDataFile(filepath, rootdir=<watched folder>)` for each file it finds. This script builds
the same object for each FILE with `rootdir=ROOT` and calls `upload_whole_file`, the method the
console script runs: the chunking, keys, serialization and producers are the reference's own.

`--filename-append S`: the `filename_append` argument of the reference's `UploadDataFile`
(field 7 of a chunk), open to code that uses the library but to no console script: a downloader
writes `a.tar.gz` as `a.tar<S>.gz`.

`--logger-file`: by default the reference writes its log file into the uploaded file's folder
(`UploadDataFile.log`), which would add a file to the tree the tests compare; this puts it
elsewhere (the console script's `--logger_file_path` does the same).

Output: one line `uploaded REL` on stdout per file once its producers were flushed. Exit code 0
even when the reference failed to deliver (it only logs "MESSAGE DROPPED" to stderr, as the
console script does): the caller checks stderr and the rebuilt files.
"""

import argparse
import pathlib
import sys

from openmsistream import UploadDataFile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=pathlib.Path)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--root-dir", required=True, type=pathlib.Path)
    # The reference's default (RUN_CONST.DEFAULT_CHUNK_SIZE), stated here so a test reads it.
    parser.add_argument("--chunk-size", type=int, default=524288)
    # The console script's default n_threads for UploadDataFile.
    parser.add_argument("--n-threads", type=int, default=2)
    parser.add_argument("--filename-append", default="")
    parser.add_argument("--logger-file", type=pathlib.Path)
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    args = parser.parse_args()

    root = args.root_dir.resolve()
    # One logger for all files: a new one per file would add its handlers again and print
    # every later line twice.
    logger = None
    for file in args.files:
        path = file.resolve()
        # relative_to raises for a file outside ROOT: a test bug, better loud than a top-level file.
        rel = path.relative_to(root)
        kwargs = {}
        if logger is not None:
            kwargs["logger"] = logger
        elif args.logger_file is not None:
            kwargs["logger_file"] = args.logger_file
        upload = UploadDataFile(
            path, rootdir=root, filename_append=args.filename_append, **kwargs
        )
        logger = upload.logger
        upload.upload_whole_file(
            args.config,
            args.topic,
            n_threads=args.n_threads,
            chunk_size=args.chunk_size,
        )
        print(f"uploaded {rel.as_posix()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
