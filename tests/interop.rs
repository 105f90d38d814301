//! Interoperability with the reference, OpenMSIStream 1.8.8, on a real broker (tansu, sqlite
//! storage): a lab mixes both on one topic, so each direction must rebuild files byte for byte.
//!
//! - reference `UploadDataFile` (and the reference uploader with an upload root, for subfolders)
//!   → `openmsi download-directory`;
//! - `openmsi upload-file` (10 fields, 9 fields, empty files) → reference
//!   `DataFileDownloadDirectory`;
//! - both uploaders on one topic → one `openmsi download-directory`.
//!
//! Driving the reference (what these tests rely on, all read from its 1.8.8 source):
//! - Its config needs the (de)serializer class names (`key.serializer = StringSerializer`,
//!   `value.serializer = DataFileChunkSerializer`, and the deserializers): without them it
//!   builds plain confluent-kafka clients that cannot send or read a `DataFileChunk`.
//!   `openmsi` accepts and ignores these keys, so one file serves both ([`interop_config`]).
//! - `UploadDataFile` has no upload-root option: it records every file relative to its own
//!   folder. Subfolders are sent by `tests/interop/upload_files.py`, which builds the reference's
//!   `UploadDataFile` with `rootdir=` as `DataFileUploadDirectory` does.
//! - The reference uploader exits 0 even when chunks were never delivered (it logs "MESSAGE
//!   DROPPED"): its stderr is checked, and the rebuilt files are the real proof.
//! - `DataFileDownloadDirectory` writes chunks straight into the final path and runs until it
//!   reads `q` on stdin (one character a second). Completion: every expected file has its
//!   expected SHA-512 on disk; then `q`, and its shutdown summary ("N total messages were
//!   consumed, M ... successfully processed, and K files were successfully reconstructed" plus
//!   the list of completed files) must list every file, which means the reference's own
//!   whole-file hash check passed. Its consumers poll with a 5 s timeout, so quitting takes
//!   ~1-6 s.
//! - Its logs go to stderr; its log file would go into the folder it works on (the output folder,
//!   or the uploaded file's folder) unless `--logger_file_path` points elsewhere.
//! - On tansu it needs `fetch.wait.max.ms` small like every client (in the harness config):
//!   with librdkafka's default 500 ms it took 4.4 s instead of 1.6 s to rebuild 3 MB in 6 chunks.
//!
//! Storage: sqlite. The memory engine's mid-batch fetch bug would also need
//! `batch.num.messages = 1` in the reference's producers, and at a few MB per test sqlite's
//! ~6 MB/s is not what takes the time (the reference's start-up and shutdown are).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{
    openmsi, openmsi_std, reference_python, sha512_file, unique_topic, wait_for, write_config,
    write_random_file, Broker, KillOnDrop, Storage,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

/// The reference version these tests are about; another version fails the test.
const REFERENCE_VERSION: &str = "1.8.8";
/// The reference's default chunk size (`RUN_CONST.DEFAULT_CHUNK_SIZE`), also openmsi's.
const DEFAULT_CHUNK: u64 = 524_288;
/// A small chunk size, for files of many chunks at little cost.
const SMALL_CHUNK: u64 = 4096;
/// msgpack header of a 10-element array (the 1.8.7+ wire format, openmsi's default).
const ARRAY_OF_10: u8 = 0x9a;
/// msgpack header of a 9-element array (the <= 1.8.6 wire format, `--wire-fields 9`).
const ARRAY_OF_9: u8 = 0x99;
/// Longest wait for a reference downloader to rebuild everything (a few MB on a broker that
/// serves ~6 MB/s; the margin is for a loaded 2-core machine).
const REFERENCE_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Config and the reference peer
// ---------------------------------------------------------------------------------------------

/// The harness config plus the class names the reference needs to (de)serialize chunks, and
/// `enable.auto.commit = False` (the reference warns without it; both commit offsets themselves).
fn interop_config(dir: &Path, broker: &Broker) -> PathBuf {
    let path = write_config(dir, broker);
    let text = std::fs::read_to_string(&path).unwrap();
    // The reference cannot send or read chunks without its (de)serializer class names, and
    // warns without enable.auto.commit = False; the harness config must keep carrying them.
    for needed in [
        "value.serializer = DataFileChunkSerializer",
        "value.deserializer = DataFileChunkDeserializer",
        "enable.auto.commit = False",
    ] {
        assert!(
            text.contains(needed),
            "write_config no longer writes `{needed}`:\n{text}"
        );
    }
    path
}

/// The reference installation: its python, checked to be OpenMSIStream [`REFERENCE_VERSION`].
struct Reference {
    /// Runs the console scripts' modules and the driver script (the venv's own python, so the
    /// reference's pinned dependencies are the ones used).
    python: PathBuf,
}

impl Reference {
    /// Fails the test when the reference is missing (see [`reference_python`]) or is another
    /// version.
    fn new() -> Reference {
        let python = reference_python();
        let out = Command::new(&python)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('openmsistream'))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && version == REFERENCE_VERSION,
            "{} must have openmsistream=={REFERENCE_VERSION} installed (found {version:?}):\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Reference { python }
    }

    /// A python command with a predictable environment: UTF-8 for arguments, file names and
    /// output whatever the locale, and unbuffered output so a log file is current when read.
    fn python(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.env("PYTHONUTF8", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("PYTHONPATH");
        cmd
    }

    /// One of the reference's console scripts. Runs exactly what the generated script does
    /// (`from MODULE import main; sys.exit(main())`, entry points of openmsistream 1.8.8), so it
    /// works whatever folder the scripts were installed to.
    fn console_script(&self, name: &str) -> Command {
        let module = match name {
            "UploadDataFile" => "openmsistream.data_file_io.entity.upload_data_file",
            "DataFileDownloadDirectory" => {
                "openmsistream.data_file_io.actor.data_file_download_directory"
            }
            "DataFileUploadDirectory" => {
                "openmsistream.data_file_io.actor.data_file_upload_directory"
            }
            other => panic!("no console script {other} known to these tests"),
        };
        let mut cmd = self.python();
        cmd.arg("-c")
            .arg(format!(
                "import sys; sys.argv[0] = {name:?}; from {module} import main; sys.exit(main())"
            ))
            .stdin(Stdio::null());
        cmd
    }
}

/// Runs a reference upload to completion and fails the test (showing its output) unless it
/// exited 0 and logged no error.
fn run_reference_upload(what: &str, cmd: Command) -> String {
    let output = assert_cmd::Command::from_std(cmd)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let shown = format!(
        "{what}: {}\n--- reference stdout ---\n{stdout}\n--- reference stderr ---\n{stderr}",
        output.status
    );
    assert!(output.status.success(), "{shown}");
    // The reference exits 0 even when it dropped messages; its stderr tells.
    for bad in ["ERROR", "Traceback", "MESSAGE DROPPED"] {
        assert!(!stderr.contains(bad), "{what} logged {bad:?}:\n{shown}");
    }
    assert!(
        stderr.contains("Done uploading"),
        "{what} did not finish:\n{shown}"
    );
    stdout
}

/// The reference's `UploadDataFile` console script: `file` lands at the top level of the
/// output. `chunk_size` None uses the reference's default.
fn reference_upload_cli(
    reference: &Reference,
    cfg: &Path,
    topic: &str,
    file: &Path,
    chunk_size: Option<u64>,
    log: &Path,
) {
    let mut cmd = reference.console_script("UploadDataFile");
    cmd.arg(file)
        .arg("--config")
        .arg(cfg)
        .args(["--topic_name", topic])
        .arg("--logger_file_path")
        .arg(log);
    if let Some(size) = chunk_size {
        cmd.args(["--chunk_size", &size.to_string()]);
    }
    run_reference_upload(&format!("UploadDataFile {}", file.display()), cmd);
}

/// How the reference uploader with an upload root sends files.
struct TreeUpload<'a> {
    /// Bytes per chunk (the reference does not require a power of two; we only use those).
    chunk_size: u64,
    /// The reference's `filename_append` (field 7): `a.tar.gz` is rebuilt as `a.tar<S>.gz`.
    filename_append: &'a str,
}

/// The reference uploader with an upload root (`tests/interop/upload_files.py`): each of
/// `rels` (relative to `root`) keeps its subfolder.
fn reference_upload_tree(
    reference: &Reference,
    cfg: &Path,
    topic: &str,
    root: &Path,
    rels: &[&str],
    how: TreeUpload,
    log: &Path,
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/upload_files.py");
    let mut cmd = reference.python();
    cmd.arg(&script)
        .arg("--config")
        .arg(cfg)
        .args([
            "--topic",
            topic,
            "--chunk-size",
            &how.chunk_size.to_string(),
        ])
        .args(["--filename-append", how.filename_append])
        .arg("--root-dir")
        .arg(root)
        .arg("--logger-file")
        .arg(log)
        .args(rels.iter().map(|rel| root.join(rel)))
        .stdin(Stdio::null());
    let what = format!("upload_files.py {rels:?}");
    let stdout = run_reference_upload(&what, cmd);
    for rel in rels {
        assert!(
            stdout.lines().any(|l| l == format!("uploaded {rel}")),
            "{what} did not report {rel}:\n{stdout}"
        );
    }
}

fn default_chunks() -> TreeUpload<'static> {
    TreeUpload {
        chunk_size: DEFAULT_CHUNK,
        filename_append: "",
    }
}

fn small_chunks() -> TreeUpload<'static> {
    TreeUpload {
        chunk_size: SMALL_CHUNK,
        filename_append: "",
    }
}

/// A running reference `DataFileDownloadDirectory`; its stdout and stderr go to files so they
/// can be read while it runs and shown when a test fails.
struct ReferenceDownload {
    /// Killed on drop, so a failing test leaves no reference process behind.
    child: KillOnDrop,
    /// The output folder: polled for the rebuilt files.
    out: PathBuf,
    /// Its stdout (empty in 1.8.8: it logs to stderr), kept for failure messages.
    stdout: PathBuf,
    /// Its log lines, including the shutdown summary [`Self::finish`] parses.
    stderr: PathBuf,
    /// Its log file (warnings and errors only), moved out of the output folder.
    log: PathBuf,
}

/// What the reference said when it shut down.
#[derive(Debug)]
struct ReferenceSummary {
    /// "N total messages were consumed".
    read: u64,
    /// "M messages were successfully processed" (written, or a harmless duplicate).
    processed: u64,
    /// "K files were successfully reconstructed": files whose whole-file SHA-512 matched.
    files: u64,
    /// The "Most recent completed files" list (relative paths, `/`-separated).
    completed: BTreeSet<String>,
}

impl ReferenceDownload {
    fn start(
        reference: &Reference,
        cfg: &Path,
        topic: &str,
        out: &Path,
        work: &Path,
    ) -> ReferenceDownload {
        let stdout = work.join("reference-download.stdout");
        let stderr = work.join("reference-download.stderr");
        let log = work.join("reference-download.log");
        let group = unique_topic("reference-group");
        let mut cmd = reference.console_script("DataFileDownloadDirectory");
        cmd.arg(out)
            .arg("--config")
            .arg(cfg)
            .args(["--topic_name", topic, "--consumer_group_id", &group])
            .arg("--logger_file_path")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("cannot start DataFileDownloadDirectory");
        ReferenceDownload {
            child: KillOnDrop(child),
            out: out.to_path_buf(),
            stdout,
            stderr,
            log,
        }
    }

    /// Everything the reference printed so far, for failure messages.
    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- reference DataFileDownloadDirectory stdout ---\n{}\n\
             --- reference DataFileDownloadDirectory stderr ---\n{}\n\
             --- reference log file ---\n{}",
            read(&self.stdout),
            read(&self.stderr),
            read(&self.log)
        )
    }

    /// Waits until every `expected` file is in the output folder with its bytes, tells the reference to quit, and returns its summary. Fails the test (with the
    /// reference's output) on a timeout, a crash, a logged error, or a summary that does not
    /// list every file as reconstructed.
    fn finish(mut self, expected: &Tree) -> ReferenceSummary {
        let mut exited_early = None;
        // The reference writes chunks in place, so a file is only done when its bytes hash
        // right. Hash only files of the right size, and each file until it matched once (the
        // tests run in debug builds on 2 cores, where hashing is not free).
        let mut verified = BTreeSet::new();
        let complete = wait_for(REFERENCE_DOWNLOAD_TIMEOUT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited_early = Some(status);
                return true;
            }
            for (rel, want) in expected {
                if verified.contains(rel) {
                    continue;
                }
                let path = self.out.join(rel);
                let len = std::fs::metadata(&path).map(|m| m.len()).ok();
                if len == Some(want.len) && sha512_file(&path) == want.sha512 {
                    verified.insert(rel.clone());
                }
            }
            verified.len() == expected.len()
        });
        if let Some(status) = exited_early {
            panic!(
                "the reference downloader exited by itself ({status}):\n{}",
                self.output()
            );
        }

        // `q`, whether or not the files are complete: its summary helps explain a failure.
        let started = Instant::now();
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"q\n");
            let _ = stdin.flush();
        }
        let mut status = None;
        wait_for(Duration::from_secs(30), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let Some(status) = status else {
            panic!(
                "the reference downloader did not quit within 30 s of `q`:\n{}",
                self.output()
            );
        };
        eprintln!(
            "reference downloader quit in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if !complete {
            let got = tree(&self.out);
            panic!(
                "the reference downloader did not rebuild every file within {:?}\n\
                 expected: {expected:#?}\ngot: {got:#?}\n{}",
                REFERENCE_DOWNLOAD_TIMEOUT,
                self.output()
            );
        }
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            status.success(),
            "reference exit {status}:\n{}",
            self.output()
        );
        for bad in [
            "ERROR",
            "Traceback",
            // a file whose whole-file hash did not match
            "not matched after reconstruction",
            // a worker thread that crashed (e.g. on a message it could not deserialize)
            "raised an Exception",
        ] {
            assert!(
                !stderr.contains(bad),
                "the reference downloader logged {bad:?}:\n{}",
                self.output()
            );
        }
        let summary = parse_reference_summary(&stderr).unwrap_or_else(|| {
            panic!("no shutdown summary from the reference:\n{}", self.output())
        });
        let want: BTreeSet<String> = expected.keys().cloned().collect();
        assert_eq!(
            summary.completed,
            want,
            "the reference did not report every file as reconstructed:\n{}",
            self.output()
        );
        // Duplicates (redelivery after a rebalance) may count a file twice, never less.
        assert!(
            summary.files >= want.len() as u64,
            "{summary:?}\n{}",
            self.output()
        );
        assert_eq!(
            summary.processed,
            summary.read,
            "the reference failed to process some messages:\n{}",
            self.output()
        );
        summary
    }
}

/// Parses the summary `DataFileDownloadDirectory` logs when it shuts down.
fn parse_reference_summary(stderr: &str) -> Option<ReferenceSummary> {
    let counts = regex::Regex::new(
        r"(\d+) total messages were consumed(?:, (\d+) messages were successfully processed, and (\d+) files? (?:was|were) successfully reconstructed| and (\d+) messages were successfully processed)",
    )
    .unwrap();
    let caps = counts.captures(stderr)?;
    let num = |i: usize| caps.get(i).map(|m| m.as_str().parse::<u64>().unwrap());
    let read = num(1)?;
    let (processed, files) = match num(2) {
        Some(processed) => (processed, num(3)?),
        None => (num(4)?, 0),
    };
    let completed = stderr
        .lines()
        .skip_while(|l| !l.starts_with("Most recent completed files"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .map(|l| l.trim_start_matches('\t').to_string())
        .collect();
    Some(ReferenceSummary {
        read,
        processed,
        files,
        completed,
    })
}

// ---------------------------------------------------------------------------------------------
// openmsi and files
// ---------------------------------------------------------------------------------------------

/// `openmsi upload-file` of `root/rel`, recorded relative to `root`.
fn openmsi_upload(
    cfg: &Path,
    topic: &str,
    root: &Path,
    rel: &str,
    chunk_size: u64,
    wire_fields: u8,
) {
    openmsi()
        .arg("upload-file")
        .arg(root.join(rel))
        .arg("--root-dir")
        .arg(root)
        .arg("--config")
        .arg(cfg)
        .args([
            "--topic",
            topic,
            "--chunk-size",
            &chunk_size.to_string(),
            "--wire-fields",
            &wire_fields.to_string(),
        ])
        .timeout(Duration::from_secs(120))
        .assert()
        .success()
        .stdout(predicates::str::contains("uploaded"));
}

/// `openmsi download-directory` until the topic is idle; asserts it rebuilt `n_files` files
/// and rejected nothing. Returns its stdout.
fn openmsi_download(cfg: &Path, topic: &str, out: &Path, n_files: usize) -> String {
    let output = openmsi()
        .arg("download-directory")
        .arg(out)
        .arg("--config")
        .arg(cfg)
        .args([
            "--topic",
            topic,
            "--group-id",
            &unique_topic("openmsi-group"),
            "--exit-when-idle",
            "2",
        ])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let shown = format!(
        "openmsi download-directory: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");
    let files = if n_files == 1 { "file" } else { "files" };
    let want = format!(
        "downloaded: {n_files} {files} completed, 0 in progress, 0 failed verification, \
         0 messages rejected"
    );
    assert!(stdout.contains(&want), "expected {want:?}:\n{shown}");
    stdout
}

/// What a test knows of a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    len: u64,
    /// Lower-case hex.
    sha512: String,
}

/// Files by relative `/`-separated path.
type Tree = BTreeMap<String, Content>;

/// Every regular file under `dir`, without openmsi's state folder.
fn tree(dir: &Path) -> Tree {
    fn walk(base: &Path, dir: &Path, out: &mut Tree) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == ".openmsi" {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let content = Content {
                    len: std::fs::metadata(&path).unwrap().len(),
                    sha512: sha512_file(&path),
                };
                out.insert(rel, content);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes `len` random bytes at `root/rel` with a fixed, fractional mtime (so a rebuilt file's
/// mtime shows whether the uploader's field 9 was applied).
fn write_source(root: &Path, rel: &str, len: u64, seed: u64) {
    let path = root.join(rel);
    write_random_file(&path, len, seed);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(source_mtime(seed))
        .unwrap();
}

fn source_mtime(seed: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_nanos(1_600_000_000_250_000_000 + seed * 1_000_003_000)
}

/// Number of chunks an uploader makes of `len` bytes (at least one: openmsi sends empty files).
fn chunks(len: u64, chunk_size: u64) -> usize {
    len.div_ceil(chunk_size).max(1) as usize
}

/// The first byte of every message value in `topic` (the msgpack array header: how many fields
/// the producer wrote). Reads until `count` messages arrived.
fn value_headers(broker: &Broker, topic: &str, count: usize) -> Vec<u8> {
    let consumer: BaseConsumer = common::consumer_config(broker, &unique_topic("inspect"))
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut headers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while headers.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            headers.push(m.payload().and_then(|p| p.first().copied()).unwrap_or(0));
        }
    }
    headers
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_upload_is_rebuilt_by_openmsi_download() {
    let reference = Reference::new();
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("ref-to-openmsi");
    broker.create_topic(&topic, 3);
    let work = tempfile::tempdir().unwrap();
    let cfg = interop_config(work.path(), &broker);
    let log = work.path().join("reference-upload.log");
    let src = work.path().join("src");

    // Top level, through the console script: (name, size, chunk size; None = its default).
    let top: [(&str, u64, Option<u64>); 4] = [
        ("exactly one chunk.bin", DEFAULT_CHUNK, None),
        ("données été – chunk+1.bin", DEFAULT_CHUNK + 1, None),
        (
            "名前 with spaces.tif",
            3 * SMALL_CHUNK + 17,
            Some(SMALL_CHUNK),
        ),
        // Looks like a key's suffix: consumers must not parse keys.
        ("weird_chunk_1_of_1.dat", SMALL_CHUNK - 1, Some(SMALL_CHUNK)),
    ];
    // In subfolders, through the reference uploader with an upload root.
    let nested_default: [(&str, u64); 2] = [
        ("run 1/ünïcödé/chunk minus one.bin", DEFAULT_CHUNK - 1),
        ("a/b/c/1 MB.raw", 1_100_000),
    ];
    let nested_small: [(&str, u64); 2] = [("run 1/tiny.txt", 1), ("a/b/4097.bin", SMALL_CHUNK + 1)];

    // Sent with a `filename_append` (field 7): rebuilt as "sub/scan.tar_copy.gz".
    let appended = ("sub/scan.tar.gz", 10_000, "sub/scan.tar_copy.gz");

    let mut seed = 0;
    for (rel, len, _) in &top {
        seed += 1;
        write_source(&src, rel, *len, seed);
    }
    for (rel, len) in nested_default.iter().chain(&nested_small) {
        seed += 1;
        write_source(&src, rel, *len, seed);
    }
    write_source(&src, appended.0, appended.1, seed + 1);
    let mut expected = tree(&src);
    let hash = expected.remove(appended.0).unwrap();
    expected.insert(appended.2.to_string(), hash);

    for (rel, _, chunk_size) in &top {
        reference_upload_cli(&reference, &cfg, &topic, &src.join(rel), *chunk_size, &log);
    }
    let rels: Vec<&str> = nested_default.iter().map(|(rel, _)| *rel).collect();
    reference_upload_tree(
        &reference,
        &cfg,
        &topic,
        &src,
        &rels,
        default_chunks(),
        &log,
    );
    let rels: Vec<&str> = nested_small.iter().map(|(rel, _)| *rel).collect();
    reference_upload_tree(&reference, &cfg, &topic, &src, &rels, small_chunks(), &log);
    let how = TreeUpload {
        chunk_size: SMALL_CHUNK,
        filename_append: "_copy",
    };
    reference_upload_tree(&reference, &cfg, &topic, &src, &[appended.0], how, &log);

    let out = work.path().join("out");
    openmsi_download(&cfg, &topic, &out, expected.len());
    assert_eq!(tree(&out), expected);

    // The reference sends the source's st_mtime (field 9, a float); openmsi applies it.
    for rel in expected.keys() {
        let source = if rel == appended.2 { appended.0 } else { rel };
        let want = std::fs::metadata(src.join(source))
            .unwrap()
            .modified()
            .unwrap();
        let got = std::fs::metadata(out.join(rel))
            .unwrap()
            .modified()
            .unwrap();
        let diff = got
            .duration_since(want)
            .or_else(|_| want.duration_since(got))
            .unwrap();
        assert!(
            diff < Duration::from_millis(1),
            "{rel}: mtime {got:?}, source {want:?}"
        );
    }
}

/// `openmsi upload-file` with `--wire-fields wire_fields` of `files` (relative path, length,
/// chunk size) to a topic of `partitions` partitions: every message has that many fields, and
/// the reference's `DataFileDownloadDirectory` rebuilds every file byte for byte.
fn openmsi_upload_is_rebuilt_by_reference_download(
    wire_fields: u8,
    partitions: i32,
    files: &[(&str, u64, u64)],
) {
    let reference = Reference::new();
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic(&format!("openmsi-to-ref-{wire_fields}"));
    broker.create_topic(&topic, partitions);
    let work = tempfile::tempdir().unwrap();
    let cfg = interop_config(work.path(), &broker);
    let src = work.path().join("src");

    for (i, (rel, len, _)) in files.iter().enumerate() {
        write_source(&src, rel, *len, i as u64 + 100 * u64::from(wire_fields));
    }
    let expected = tree(&src);
    for (rel, _, chunk_size) in files {
        openmsi_upload(&cfg, &topic, &src, rel, *chunk_size, wire_fields);
    }
    let n_chunks: usize = files.iter().map(|(_, len, cs)| chunks(*len, *cs)).sum();
    let header = if wire_fields == 9 {
        ARRAY_OF_9
    } else {
        ARRAY_OF_10
    };
    assert_eq!(
        value_headers(&broker, &topic, n_chunks),
        vec![header; n_chunks],
        "--wire-fields {wire_fields} must write {wire_fields} fields"
    );

    let out = work.path().join("out");
    let download = ReferenceDownload::start(&reference, &cfg, &topic, &out, work.path());
    let summary = download.finish(&expected);
    // More only if a rebalance between its two consumers redelivered some.
    assert!(summary.read as usize >= n_chunks, "{summary:?}");
    assert_eq!(tree(&out), expected);
}

/// The default, 10 fields (OpenMSIStream >= 1.8.7), with names and sizes at the edges.
#[test]
fn openmsi_upload_is_rebuilt_by_reference_download_ten_fields() {
    openmsi_upload_is_rebuilt_by_reference_download(
        10,
        3,
        &[
            ("exactly one chunk.bin", DEFAULT_CHUNK, DEFAULT_CHUNK),
            ("a/b/c/chunk plus one.bin", DEFAULT_CHUNK + 1, DEFAULT_CHUNK),
            ("données été/1 MB.raw", 1_100_000, DEFAULT_CHUNK),
            ("one byte.txt", 1, SMALL_CHUNK),
            ("run 1/ünïcödé 名前.tif", 3 * SMALL_CHUNK + 17, SMALL_CHUNK),
            ("run 1/4095.bin", SMALL_CHUNK - 1, SMALL_CHUNK),
            ("weird_chunk_1_of_1.dat", SMALL_CHUNK, SMALL_CHUNK),
        ],
    );
}

/// `--wire-fields 9`, for consumers running OpenMSIStream 1.8.6 or older.
#[test]
fn openmsi_upload_is_rebuilt_by_reference_download_nine_fields() {
    openmsi_upload_is_rebuilt_by_reference_download(
        9,
        2,
        &[
            ("nine fields.bin", DEFAULT_CHUNK + 1, DEFAULT_CHUNK),
            (
                "old consumer/ünï 9/scan.dat",
                3 * SMALL_CHUNK + 1,
                SMALL_CHUNK,
            ),
            ("4096.bin", SMALL_CHUNK, SMALL_CHUNK),
        ],
    );
}

#[test]
fn openmsi_empty_file_is_rebuilt_by_reference_download() {
    let reference = Reference::new();
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("empty");
    broker.create_topic(&topic, 1);
    let work = tempfile::tempdir().unwrap();
    let cfg = interop_config(work.path(), &broker);
    let src = work.path().join("src");

    // The reference never uploads an empty file; openmsi sends one empty chunk, in both
    // formats.
    let files: [(&str, u8); 2] = [("empty.dat", 10), ("nested dir/vide ☐.txt", 9)];
    for (i, (rel, _)) in files.iter().enumerate() {
        write_source(&src, rel, 0, i as u64 + 300);
    }
    let expected = tree(&src);
    for (rel, wire_fields) in &files {
        openmsi_upload(&cfg, &topic, &src, rel, DEFAULT_CHUNK, *wire_fields);
    }

    let out = work.path().join("out");
    let download = ReferenceDownload::start(&reference, &cfg, &topic, &out, work.path());
    let summary = download.finish(&expected);
    assert!(summary.read >= 2, "{summary:?}");
    assert_eq!(tree(&out), expected);
    for (rel, _) in &files {
        assert_eq!(std::fs::metadata(out.join(rel)).unwrap().len(), 0, "{rel}");
    }
}

#[test]
fn mixed_reference_and_openmsi_uploads_on_one_topic_are_all_rebuilt() {
    let reference = Reference::new();
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("mixed");
    broker.create_topic(&topic, 3);
    let work = tempfile::tempdir().unwrap();
    let cfg = interop_config(work.path(), &broker);
    let log = work.path().join("reference-upload.log");
    let src = work.path().join("src");

    let reference_top = "reference top.bin";
    let reference_default: [(&str, u64); 2] = [
        ("reference/big.raw", 1_000_000),
        ("shared/same name.bin", 70_000),
    ];
    let reference_small: [(&str, u64); 1] = [("reference/sub dir/ünï.dat", 30_000)];
    // (path, size, chunk size, wire fields)
    let openmsi_files: [(&str, u64, u64, u8); 5] = [
        ("openmsi top.bin", 600_000, DEFAULT_CHUNK, 10),
        ("openmsi/ünï 名前.tif", 30_000, SMALL_CHUNK, 10),
        // Same file name as a reference upload, another folder: different keys and paths.
        ("shared/other/same name.bin", 70_000, SMALL_CHUNK, 10),
        ("openmsi/nine/nine.dat", 5_000, SMALL_CHUNK, 9),
        ("openmsi/empty.dat", 0, DEFAULT_CHUNK, 10),
    ];
    let mut seed = 400;
    write_source(&src, reference_top, 600_000, seed);
    for (rel, len) in reference_default.iter().chain(&reference_small) {
        seed += 1;
        write_source(&src, rel, *len, seed);
    }
    for (rel, len, _, _) in &openmsi_files {
        seed += 1;
        write_source(&src, rel, *len, seed);
    }
    let expected = tree(&src);

    // Both uploaders at once, so their chunks interleave in the partitions.
    std::thread::scope(|s| {
        let reference_uploads = s.spawn(|| {
            reference_upload_cli(
                &reference,
                &cfg,
                &topic,
                &src.join(reference_top),
                None,
                &log,
            );
            let rels: Vec<&str> = reference_default.iter().map(|(rel, _)| *rel).collect();
            reference_upload_tree(
                &reference,
                &cfg,
                &topic,
                &src,
                &rels,
                default_chunks(),
                &log,
            );
            let rels: Vec<&str> = reference_small.iter().map(|(rel, _)| *rel).collect();
            reference_upload_tree(&reference, &cfg, &topic, &src, &rels, small_chunks(), &log);
        });
        for (rel, _, chunk_size, wire_fields) in &openmsi_files {
            openmsi_upload(&cfg, &topic, &src, rel, *chunk_size, *wire_fields);
        }
        if let Err(panic) = reference_uploads.join() {
            std::panic::resume_unwind(panic);
        }
    });

    let out = work.path().join("out");
    openmsi_download(&cfg, &topic, &out, expected.len());
    assert_eq!(tree(&out), expected);
}

// ---------------------------------------------------------------------------------------------
// upload-directory
// ---------------------------------------------------------------------------------------------

/// Messages on `topic` (sum of high - low watermarks; exact on tansu's sqlite engine).
fn message_count(broker: &Broker, topic: &str) -> i64 {
    let consumer: BaseConsumer = common::consumer_config(broker, "count").create().unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    (0..partitions)
        .map(|p| {
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            hi - lo
        })
        .sum()
}

/// Runs `openmsi upload-directory DIR --upload-existing` until `done(stderr so far)` holds,
/// then `quit`; asserts a clean exit and returns stdout.
fn openmsi_upload_directory(
    cfg: &Path,
    topic: &str,
    dir: &Path,
    work: &Path,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let log = work.join(format!("upload-directory-{}.log", unique_topic("run")));
    let mut child = KillOnDrop(
        openmsi_std()
            .arg("upload-directory")
            .arg(dir)
            .arg("--config")
            .arg(cfg)
            .args([
                "--topic",
                topic,
                "--upload-existing",
                "--settle-seconds",
                "1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || done(&read_log())),
        "upload-directory did not get there:\n{}",
        read_log()
    );
    child
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"quit\n")
        .unwrap();
    let output = child.0.wait_with_output_ref();
    assert!(output.0.success(), "{:?}\n{}", output.0, read_log());
    output.1
}

/// `wait_with_output` for a child behind [`KillOnDrop`] (which must keep ownership).
trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut stdout = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        (self.wait().unwrap(), stdout)
    }
}

#[test]
fn openmsi_upload_directory_is_rebuilt_by_reference_download() {
    let reference = Reference::new();
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("updir-to-ref");
    broker.create_topic(&topic, 2);
    let work = tempfile::tempdir().unwrap();
    let cfg = interop_config(work.path(), &broker);
    let src = work.path().join("src");
    let files: [(&str, u64); 4] = [
        ("top.bin", 700_000),
        ("a/b/nested.bin", 1000),
        ("run 1/ünïcödé.tif", 5000),
        ("catalog.csv", 10),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        write_source(&src, rel, *len, i as u64 + 300);
    }
    let expected = tree(&src);
    openmsi_upload_directory(&cfg, &topic, &src, work.path(), |log| {
        log.matches(" uploaded ").count() >= files.len()
    });
    let out = work.path().join("out");
    let download = ReferenceDownload::start(&reference, &cfg, &topic, &out, work.path());
    download.finish(&expected);
    assert_eq!(tree(&out), expected);
}

#[test]
fn reference_upload_directory_is_rebuilt_by_openmsi_and_not_resent_after_switching() {
    let reference = Reference::new();
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("ref-updir");
    broker.create_topic(&topic, 2);
    let work = tempfile::tempdir().unwrap();
    let cfg = interop_config(work.path(), &broker);
    let src = work.path().join("src");
    // Names the reference's default regex accepts (no "<char>log", no leading dot).
    let files: [(&str, u64); 3] = [
        ("top.bin", 600_000),
        ("a/b/nested.bin", 1000),
        ("run 1/données.dat", 5000),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        write_source(&src, rel, *len, i as u64 + 400);
    }
    let expected = tree(&src);
    let n_chunks: i64 = files
        .iter()
        .map(|(_, len)| chunks(*len, DEFAULT_CHUNK) as i64)
        .sum();

    let stderr = work.path().join("reference-upload.stderr");
    let mut cmd = reference.console_script("DataFileUploadDirectory");
    cmd.arg(&src)
        .arg("--config")
        .arg(&cfg)
        .args(["--topic_name", &topic, "--upload_existing"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).unwrap());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let registry = src.join(format!("LOGS/uploaded_to_{topic}.csv"));
    let listed = |p: &Path| {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        files
            .iter()
            .all(|(rel, _)| text.contains(&format!("'{rel}'")))
    };
    assert!(
        wait_for(Duration::from_secs(90), || message_count(&broker, &topic)
            >= n_chunks),
        "the reference did not upload everything:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    // It writes its registry every few seconds and when it stops.
    wait_for(Duration::from_secs(15), || listed(&registry));
    child.0.stdin.as_mut().unwrap().write_all(b"q\n").unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || child
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "the reference uploader did not quit"
    );
    assert!(
        listed(&registry),
        "{}",
        std::fs::read_to_string(&registry).unwrap_or_default()
    );

    let out = work.path().join("out");
    openmsi_download(&cfg, &topic, &out, files.len());
    assert_eq!(tree(&out), expected);

    // Switching: openmsi (with --upload-existing) on the same folder sends nothing again,
    // neither the files nor the reference's LOGS/ folder.
    let before = message_count(&broker, &topic);
    // Runs a few settle times, so anything it would (wrongly) send is sent.
    let started = Instant::now();
    let stdout = openmsi_upload_directory(&cfg, &topic, &src, work.path(), |log| {
        started.elapsed() > Duration::from_secs(5)
            && log.contains("imported OpenMSIStream's registry")
            && log.contains("watching")
    });
    assert!(stdout.contains(" 0 files uploaded"), "{stdout}");
    assert_eq!(message_count(&broker, &topic), before);
}

/// OpenMSIStream on both ends of `openmsi relay`: the reference uploads to one cluster, the
/// relay takes the `.bin` files to a topic on another cluster (its own config), and the
/// reference downloader there rebuilds exactly those, byte for byte: the relayed messages are
/// the ones the reference produced, unchanged.
#[test]
fn reference_uploads_relayed_to_another_cluster_are_rebuilt_by_reference_download() {
    let reference = Reference::new();
    let (source, destination) = (
        Broker::start(Storage::Sqlite),
        Broker::start(Storage::Sqlite),
    );
    let (topic, relayed) = (unique_topic("ref-relay-src"), unique_topic("ref-relay-dst"));
    source.create_topic(&topic, 2);
    destination.create_topic(&relayed, 3);
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("a")).unwrap();
    std::fs::create_dir_all(work.path().join("b")).unwrap();
    let source_cfg = interop_config(&work.path().join("a"), &source);
    let destination_cfg = interop_config(&work.path().join("b"), &destination);
    let src = work.path().join("src");
    let files: [(&str, u64); 4] = [
        ("run 1/scan.bin", 3 * SMALL_CHUNK + 5),
        ("run 1/notes.txt", 100),
        ("élan/deep/x.bin", SMALL_CHUNK),
        ("top.bin", 7),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        write_source(&src, rel, *len, 900 + i as u64);
    }
    let rels: Vec<&str> = files.iter().map(|(rel, _)| *rel).collect();
    reference_upload_tree(
        &reference,
        &source_cfg,
        &topic,
        &src,
        &rels,
        small_chunks(),
        &work.path().join("reference-upload.log"),
    );

    let relay = openmsi()
        .args(["relay", "--config"])
        .arg(&source_cfg)
        .args([
            "--topic",
            &topic,
            "--to-topic",
            &relayed,
            "--match",
            r"\.bin$",
        ])
        .arg("--to-config")
        .arg(&destination_cfg)
        .arg("--state-dir")
        .arg(work.path().join("relay-state"))
        .args(["--group-id", "relay", "--exit-when-idle", "2"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let relay_log = format!(
        "{}{}",
        String::from_utf8_lossy(&relay.stdout),
        String::from_utf8_lossy(&relay.stderr)
    );
    assert!(relay.status.success(), "{relay_log}");
    assert!(
        relay_log.contains("1 skipped (not selected)"),
        "{relay_log}"
    );

    let mut expected = tree(&src);
    expected.remove("run 1/notes.txt");
    let out = work.path().join("out");
    let download =
        ReferenceDownload::start(&reference, &destination_cfg, &relayed, &out, work.path());
    download.finish(&expected);
    assert_eq!(tree(&out), expected);
}
