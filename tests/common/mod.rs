//! Shared harness for the integration tests (`mod common;` in each test file).
//!
//! - [`Broker`]: a real tansu broker on a free 127.0.0.1 port, in its own temporary directory,
//!   started and stopped through `scripts/broker.sh` (the same code a developer runs by hand).
//! - [`write_config`]: an OpenMSIStream-style INI config pointing at a [`Broker`].
//! - [`TopicFixture`]: the usual start of a test: a broker, a fresh topic, a work folder with a
//!   config for them.
//! - [`ChunkSpec`]: hand-made chunk messages (valid, or broken on purpose), built with
//!   openmsi's own encoder; [`produce_values`] puts them on a topic.
//! - [`openmsi`] / [`openmsi_std`]: the `openmsi` binary with a clean environment.
//! - [`reference_python`]: the venv python with OpenMSIStream 1.8.8, the reference peer.
//! - Small helpers: [`unique_topic`], [`write_random_file`], [`sha512_file`], [`wait_for`].
//!
//! Missing tools (tansu, the reference venv) make a test FAIL with the command that installs
//! them: a test that skips silently would let a broken setup look green.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use sha2::{Digest, Sha512};

pub mod cluster;
pub mod s3;

/// `scripts/broker.sh` exit code: tansu is not installed.
const EXIT_NOT_INSTALLED: i32 = 3;
/// `scripts/broker.sh` exit code: the port was taken (between our pick and the broker's bind).
pub(crate) const EXIT_PORT_IN_USE: i32 = 4;

/// Root of the crate, to find `scripts/`.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cache folder shared with the scripts (`OPENMSI_CACHE_DIR`, default `~/.cache/openmsi`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("OPENMSI_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home =
                std::env::var_os("HOME").expect("HOME is not set and OPENMSI_CACHE_DIR neither");
            PathBuf::from(home).join(".cache/openmsi")
        }
    }
}

/// Runs `scripts/broker.sh ARGS`, capturing its output (the broker itself writes to its log
/// file, so this returns as soon as the script does).
pub(crate) fn broker_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/broker.sh"))
        .args(args)
        .output()
        .expect("cannot run bash scripts/broker.sh")
}

/// Panics with the script's stderr; for exit code 3 the message says how to install tansu.
pub(crate) fn broker_sh_failed(what: &str, out: &Output) -> ! {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(EXIT_NOT_INSTALLED) {
        panic!(
            "tansu or s3s-fs is not installed: run `scripts/broker.sh install --s3` (or `scripts/test.sh`, \
             which does it) before the integration tests.\n{stderr}"
        );
    }
    panic!(
        "scripts/broker.sh {what} failed ({}):\n{stderr}",
        out.status
    );
}

/// Which tansu storage engine a [`Broker`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `sqlite://tansu.db` in the broker's directory: correct offsets, survives restarts, slow
    /// (~6 MB/s consume). For correctness and crash tests.
    Sqlite,
    /// `memory://tansu/`: fast but loses everything on restart, and fetches that start inside
    /// a record batch skip the rest of it (so [`write_config`] sets `batch.num.messages=1`).
    Memory,
    /// The quick start's prebuilt tansu (memory storage), which behaves like a stock Kafka where
    /// the source build does not: it auto-creates a topic that a metadata request names (4
    /// partitions), and a new consumer group waits ~5 s for its first assignment.
    Prebuilt,
}

impl Storage {
    /// Whether the broker keeps its records in memory (and so has the mid-batch fetch bug).
    pub fn in_memory(self) -> bool {
        matches!(self, Storage::Memory | Storage::Prebuilt)
    }
}

/// A tansu broker on 127.0.0.1, stopped (and its directory removed) on drop.
pub struct Broker {
    /// The broker's state directory: `tansu.db`, `tansu.log`, `tansu.pid`. Kept across
    /// [`Broker::restart`] so a restarted sqlite broker sees the same data.
    dir: tempfile::TempDir,
    /// Fixed for the broker's life: a restart reuses it so clients can reconnect.
    port: u16,
    storage: Storage,
    /// Whether `stop` still has something to do.
    running: bool,
    /// How it is secured (kept for restarts).
    security: Security,
}

/// A TLS front end and/or SASL authentication for a [`Broker`] (see `scripts/broker.sh start`).
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// `--tls-port` (chosen at start), `--tls-cert`, `--tls-key`, and `--tls-client-ca` for
    /// mutual TLS.
    pub tls: Option<Tls>,
    /// SCRAM users (name, password, `scram256`/`scram512`) created before authentication is
    /// turned on with `--authentication`. Empty: no authentication.
    pub users: Vec<(String, String, String)>,
    /// Topics (name, partitions) created before authentication is turned on (tansu's own
    /// client, which broker.sh uses, cannot authenticate).
    pub topics: Vec<(String, i32)>,
}

/// The TLS front end's certificate files.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// Chosen by [`Broker::start_secured`].
    pub port: u16,
}

impl Security {
    /// The extra `broker.sh start` arguments.
    fn start_args(&self, authentication: bool) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(tls) = &self.tls {
            args.extend([
                "--tls-port".to_string(),
                tls.port.to_string(),
                "--tls-cert".into(),
                tls.cert.to_string_lossy().into_owned(),
                "--tls-key".into(),
                tls.key.to_string_lossy().into_owned(),
            ]);
            if let Some(ca) = &tls.client_ca {
                args.extend(["--tls-client-ca".into(), ca.to_string_lossy().into_owned()]);
            }
        }
        if authentication {
            args.push("--authentication".into());
        }
        args
    }
}

impl Broker {
    /// Starts a broker on a free port. Fails the test (with the install hint) when tansu is
    /// missing.
    pub fn start(storage: Storage) -> Broker {
        Self::start_secured(storage, Security::default())
    }

    /// Starts a broker behind the TLS front end and/or with the SCRAM users of `security`
    /// (users are created through the plaintext port, then the broker restarts with
    /// authentication required, as tansu needs).
    pub fn start_secured(storage: Storage, mut security: Security) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("openmsi-tansu-")
            .tempdir()
            .expect("cannot create a temporary directory for the broker");
        // A port we just saw free can be taken before tansu binds it (tests run in parallel);
        // broker.sh reports that with its own exit code, and we try another port.
        for _ in 0..5 {
            let port = free_port();
            if let Some(tls) = &mut security.tls {
                tls.port = free_port();
            }
            match start_broker(dir.path(), port, storage, &security.start_args(false)) {
                Ok(()) => {
                    let mut broker = Broker {
                        dir,
                        port,
                        storage,
                        running: true,
                        security,
                    };
                    for (topic, partitions) in &broker.security.topics {
                        broker.create_topic(topic, *partitions);
                    }
                    if !broker.security.users.is_empty() {
                        for (name, password, mechanism) in &broker.security.users {
                            let port = port.to_string();
                            let out = broker_sh(&[
                                "user-create",
                                name,
                                password,
                                "--port",
                                &port,
                                "--mechanism",
                                mechanism,
                            ]);
                            if !out.status.success() {
                                broker_sh_failed("user-create", &out);
                            }
                        }
                        broker.restart();
                    }
                    return broker;
                }
                Err(out) if out.status.code() == Some(EXIT_PORT_IN_USE) => continue,
                Err(out) => broker_sh_failed("start", &out),
            }
        }
        panic!("no free port for tansu after 5 tries");
    }

    /// `bootstrap.servers` for clients: `127.0.0.1:PORT` (the TLS port when there is one).
    pub fn bootstrap(&self) -> String {
        match &self.security.tls {
            Some(tls) => format!("127.0.0.1:{}", tls.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's state directory (holds `tansu.log`, worth reading when a test fails).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Creates a topic (tansu never auto-creates topics). An existing topic is not an error.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let port = self.port.to_string();
        let partitions = partitions.to_string();
        let out = broker_sh(&[
            "create-topic",
            name,
            "--port",
            &port,
            "--partitions",
            &partitions,
        ]);
        if !out.status.success() {
            broker_sh_failed("create-topic", &out);
        }
    }

    /// Stops the broker gracefully (SIGTERM, then SIGKILL after 10 s). Idempotent.
    pub fn stop(&mut self) {
        self.stop_with(&[]);
    }

    /// Kills the broker with SIGKILL, as a crash would. Idempotent.
    pub fn kill(&mut self) {
        self.stop_with(&["--kill"]);
    }

    fn stop_with(&mut self, extra: &[&str]) {
        if !self.running {
            return;
        }
        let dir = self
            .dir
            .path()
            .to_str()
            .expect("temporary directory path is not UTF-8");
        let mut args = vec!["stop", "--dir", dir];
        args.extend_from_slice(extra);
        let out = broker_sh(&args);
        if !out.status.success() {
            broker_sh_failed("stop", &out);
        }
        self.running = false;
    }

    /// Stops (if running) and starts the broker again on the same port with the same
    /// directory: a sqlite broker keeps its topics and messages, a memory broker loses them.
    pub fn restart(&mut self) {
        self.stop();
        let args = self.security.start_args(!self.security.users.is_empty());
        if let Err(out) = start_broker(self.dir.path(), self.port, self.storage, &args) {
            broker_sh_failed("start (restart)", &out);
        }
        self.running = true;
    }

    /// The broker's log so far (tansu logs warnings and errors; see `OPENMSI_TANSU_LOG`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: the broker's view is often the explanation.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of {}/tansu.log ---", self.dir().display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        // Never panic in drop (that would abort a test that is already unwinding).
        if self.running {
            let dir = self.dir.path().to_string_lossy().into_owned();
            let out = broker_sh(&["stop", "--dir", &dir]);
            if !out.status.success() {
                eprintln!(
                    "stopping tansu failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `scripts/broker.sh start` for `dir` on `port`; the script's output on failure.
fn start_broker(dir: &Path, port: u16, storage: Storage, extra: &[String]) -> Result<(), Output> {
    let port = port.to_string();
    let dir = dir.to_str().expect("temporary directory path is not UTF-8");
    // --owner: the broker dies with this test process even if the test aborts before `Drop`.
    let owner = std::process::id().to_string();
    let mut args = vec!["start", "--port", &port, "--dir", dir, "--owner", &owner];
    match storage {
        Storage::Memory => args.push("--memory"),
        Storage::Prebuilt => args.push("--prebuilt"),
        Storage::Sqlite => {}
    }
    args.extend(extra.iter().map(String::as_str));
    let out = broker_sh(&args);
    if out.status.success() {
        Ok(())
    } else {
        Err(out)
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener.local_addr().expect("no local address").port()
}

/// Writes `DIR/openmsi.config`, an OpenMSIStream-style config for `broker`, and returns its path.
/// Both `openmsi` and the Python reference read it: it follows the reference's own
/// `local_broker_test.config`, whose (de)serializer class names the reference needs (without
/// them its producer fails on every chunk and still exits 0) and `openmsi` ignores.
pub fn write_config(dir: &Path, broker: &Broker) -> PathBuf {
    write_config_for(dir, &broker.bootstrap(), broker.storage().in_memory())
}

/// [`write_config`] for `bootstrap.servers = BOOTSTRAP`; `one_message_per_batch` works around
/// the mid-batch fetch bug of tansu's memory and S3 engines.
pub fn write_config_for(dir: &Path, bootstrap: &str, one_message_per_batch: bool) -> PathBuf {
    let mut text = format!(
        "[broker]\n\
         bootstrap.servers = {}\n\
         \n\
         [producer]\n\
         key.serializer = StringSerializer\n\
         value.serializer = DataFileChunkSerializer\n",
        bootstrap
    );
    if one_message_per_batch {
        // One message per batch avoids the memory engine's mid-batch fetch bug.
        text.push_str("batch.num.messages = 1\n");
    }
    // tansu waits at least half of fetch.wait.max.ms on every fetch: the default 500 ms would
    // make every test crawl.
    text.push_str(
        "\n\
         [consumer]\n\
         group.id = create_new\n\
         auto.offset.reset = earliest\n\
         enable.auto.commit = False\n\
         fetch.wait.max.ms = 10\n\
         key.deserializer = StringDeserializer\n\
         value.deserializer = DataFileChunkDeserializer\n",
    );
    let path = dir.join("openmsi.config");
    std::fs::write(&path, text).expect("cannot write the test config");
    path
}

/// The setup most tests start with: a broker, a fresh topic on it, and a work folder holding a
/// config file for them ([`write_config`]).
pub struct TopicFixture {
    /// The broker.
    pub broker: Broker,
    /// A topic created for this test.
    pub topic: String,
    /// A temporary folder for the test's files; holds the config.
    pub work: tempfile::TempDir,
    /// The config file (`work/openmsi.config`).
    pub cfg: PathBuf,
}

impl TopicFixture {
    /// Starts a broker with `storage`, creates a topic named after `prefix` with `partitions`
    /// partitions, and writes a config for them.
    pub fn new(storage: Storage, prefix: &str, partitions: i32) -> Self {
        let broker = Broker::start(storage);
        let topic = unique_topic(prefix);
        broker.create_topic(&topic, partitions);
        let work = tempfile::tempdir().expect("cannot create a temporary folder");
        let cfg = write_config(work.path(), &broker);
        Self {
            broker,
            topic,
            work,
            cfg,
        }
    }
}

/// A hand-made chunk message: every field of the wire format, valid by default (see
/// [`ChunkSpec::single`] and [`ChunkSpec::of_file`]) and open to being broken on purpose.
#[derive(Clone)]
pub struct ChunkSpec<'a> {
    pub subdir: &'a str,
    pub filename: &'a str,
    pub file_hash: [u8; 64],
    pub chunk_hash: [u8; 64],
    pub offset: u64,
    pub chunk_i: u64,
    pub n_total_chunks: u64,
    pub data: &'a [u8],
    pub file_mtime: f64,
}

impl<'a> ChunkSpec<'a> {
    /// A whole file of one chunk: `data` at `subdir/filename`.
    pub fn single(subdir: &'a str, filename: &'a str, data: &'a [u8]) -> Self {
        let hash = openmsi::chunk::hash::sha512(data);
        Self {
            subdir,
            filename,
            file_hash: hash,
            chunk_hash: hash,
            offset: 0,
            chunk_i: 1,
            n_total_chunks: 1,
            data,
            file_mtime: 0.0,
        }
    }

    /// Chunk `i` (0-based) of `content` cut in `chunk_size` pieces, as `relative`
    /// (`/`-separated) in the output folder.
    pub fn of_file(relative: &'a str, content: &'a [u8], chunk_size: usize, i: usize) -> Self {
        let (subdir, filename) = relative.rsplit_once('/').unwrap_or(("", relative));
        let data = &content[i * chunk_size..((i + 1) * chunk_size).min(content.len())];
        Self {
            subdir,
            filename,
            file_hash: openmsi::chunk::hash::sha512(content),
            chunk_hash: openmsi::chunk::hash::sha512(data),
            offset: (i * chunk_size) as u64,
            chunk_i: i as u64 + 1,
            n_total_chunks: content.len().div_ceil(chunk_size).max(1) as u64,
            data,
            file_mtime: 0.0,
        }
    }

    /// The message value (10 fields), by openmsi's own encoder.
    pub fn encode(&self) -> Vec<u8> {
        use openmsi::chunk::{encode_value, ChunkHeader, WireFields};
        let header = ChunkHeader {
            filename: self.filename,
            file_hash: &self.file_hash,
            chunk_hash: &self.chunk_hash,
            offset: self.offset,
            chunk_i: self.chunk_i,
            n_total_chunks: self.n_total_chunks,
            subdir: self.subdir,
            filename_append: "",
            file_mtime: self.file_mtime,
        };
        let mut out = Vec::new();
        encode_value(&header, self.data, WireFields::Ten, &mut out);
        out
    }
}

/// Sends `values` (key `k`) to partition 0 of `topic` and waits until the broker acknowledged
/// them all.
pub fn produce_values(broker: &Broker, topic: &str, values: &[Vec<u8>]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = producer_config(broker)
        .create()
        .expect("cannot create a producer");
    for value in values {
        producer
            .send(BaseRecord::to(topic).partition(0).key("k").payload(value))
            .map_err(|(e, _)| e)
            .expect("cannot queue a message");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the broker did not acknowledge the messages");
    assert_eq!(producer.in_flight_count(), 0);
}

/// rdkafka producer settings for `broker` (for tests that talk to Kafka directly).
pub fn producer_config(broker: &Broker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.timeout.ms", "30000");
    if broker.storage().in_memory() {
        config.set("batch.num.messages", "1");
    }
    config
}

/// rdkafka consumer settings for `broker`: earliest offsets, short fetch waits, no auto-commit.
pub fn consumer_config(broker: &Broker, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    config
}

/// Applies the environment every `openmsi` run in a test gets: none of the user's `OPENMSI_*`
/// settings or `RUST_LOG` leak in, so tests behave the same on every machine.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OPENMSI_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_LOG");
}

/// `openmsi` as an `std::process::Command`, for long-running children (spawn, then kill or
/// send `quit` on stdin). Wrap the child in [`KillOnDrop`] so a failing test does not leak it.
pub fn openmsi_std() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openmsi"));
    clean_env(&mut cmd);
    cmd
}

/// `openmsi` started through `wrapper` (a program and its arguments, such as `setpriv
/// --reuid=65534 ...` to run it as another user), with the same clean environment.
pub fn openmsi_std_through(wrapper: &[&str]) -> Command {
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..]).arg(env!("CARGO_BIN_EXE_openmsi"));
    clean_env(&mut cmd);
    cmd
}

/// `openmsi` as a user that file permissions apply to: `nobody` (uid 65534, through util-linux's
/// `setpriv`) when the tests run as root, whom permissions do not stop; else the current user.
/// The folders it uses must let that user in.
pub fn openmsi_unprivileged() -> Command {
    if unsafe { libc::geteuid() } == 0 {
        openmsi_std_through(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
    } else {
        openmsi_std()
    }
}

/// Runs `openmsi ARGS` to its end (at most a minute) and returns what it printed.
pub fn run_openmsi(args: &[&str]) -> Output {
    openmsi()
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("cannot run openmsi")
}

/// The topics `openmsi topic list --json` shows with the config at `cfg` (a list of all topics:
/// it creates none).
pub fn topics_listed(cfg: &str) -> Vec<String> {
    let out = run_openmsi(&["topic", "list", "--json", "--config", cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// `openmsi` as an `assert_cmd::Command`, for runs that finish: `.assert().success()`.
pub fn openmsi() -> assert_cmd::Command {
    assert_cmd::Command::from_std(openmsi_std())
}

/// Waits (polling) until `child` exits; fails the test after `timeout`.
pub fn wait_exit(child: &mut KillOnDrop, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Types `quit` on an openmsi command's stdin (it must be piped) and waits for it to exit;
/// fails the test after `timeout`.
pub fn quit_and_wait(child: &mut KillOnDrop, timeout: Duration) -> std::process::ExitStatus {
    use std::io::Write;
    let stdin = child.0.stdin.as_mut().expect("stdin is not piped");
    stdin.write_all(b"quit\n").unwrap();
    stdin.flush().unwrap();
    wait_exit(child, timeout)
}

/// A child process that is killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The python of the OpenMSIStream 1.8.8 venv: `OPENMSI_REFERENCE_PYTHON`, else the venv that
/// `scripts/install-reference.sh` creates in the cache. Fails the test when neither exists.
pub fn reference_python() -> PathBuf {
    if let Some(python) = std::env::var_os("OPENMSI_REFERENCE_PYTHON") {
        let python = PathBuf::from(python);
        assert!(
            python.exists(),
            "OPENMSI_REFERENCE_PYTHON={} does not exist",
            python.display()
        );
        return python;
    }
    let python = cache_dir().join("venv-openmsistream-1.8.8/bin/python");
    assert!(
        python.exists(),
        "the OpenMSIStream reference is not installed ({} is missing): run \
         `scripts/install-reference.sh` (or `scripts/test.sh`, which does it), or set \
         OPENMSI_REFERENCE_PYTHON",
        python.display()
    );
    python
}

/// One of the reference's commands (`UploadDataFile`, `DataFileUploadDirectory`,
/// `DataFileDownloadDirectory`, ...) from the venv of [`reference_python`], with `RUST_LOG` and
/// `OPENMSI_*` removed like for `openmsi`. `DataFileDownloadDirectory` runs until it reads `q` on
/// stdin (it reads one character a second).
pub fn reference_command(name: &str) -> Command {
    let python = reference_python();
    let bin = python
        .parent()
        .expect("the venv python has a parent folder")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing from the reference venv",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    clean_env(&mut cmd);
    cmd
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn unique_topic(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Writes `len` pseudo-random bytes to `path`; the same `seed` always gives the same bytes.
/// (splitmix64: incompressible enough for transfer tests, and no extra dependency.)
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("cannot create the parent folder");
    }
    let mut out = BufWriter::new(File::create(path).expect("cannot create the file"));
    let mut state = seed;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n]).expect("cannot write the file");
        left -= n as u64;
    }
    out.flush().expect("cannot write the file");
}

/// SHA-512 of a file's bytes, lower-case hex.
pub fn sha512_file(path: &Path) -> String {
    let mut file =
        File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).expect("cannot read the file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `openmsi upload-file FILE --config CFG --topic T --chunk-size N [--root-dir ROOT]`, asserting
/// that every chunk was acknowledged.
pub fn upload(cfg: &Path, topic: &str, root: Option<&Path>, file: &Path, chunk_size: usize) {
    let mut cmd = openmsi();
    cmd.arg("upload-file").arg(file).arg("--config").arg(cfg);
    if let Some(root) = root {
        cmd.arg("--root-dir").arg(root);
    }
    cmd.args(["--topic", topic, "--chunk-size", &chunk_size.to_string()])
        .timeout(Duration::from_secs(120))
        .assert()
        .success()
        .stdout(predicates::str::contains("uploaded"));
}

/// `openmsi download-directory OUT --config CFG --topic T --group-id G --exit-when-idle 2`:
/// runs until the topic is read and idle; the caller asserts on the outcome.
pub fn download_until_idle(
    cfg: &Path,
    topic: &str,
    out: &Path,
    group: &str,
) -> assert_cmd::assert::Assert {
    download_idle_command(cfg, topic, out, group).assert()
}

/// The command both download-until-idle helpers run.
fn download_idle_command(cfg: &Path, topic: &str, out: &Path, group: &str) -> assert_cmd::Command {
    let mut cmd = openmsi();
    cmd.arg("download-directory")
        .arg(out)
        .arg("--config")
        .arg(cfg)
        .args([
            "--topic",
            topic,
            "--group-id",
            group,
            "--exit-when-idle",
            "2",
        ])
        .timeout(Duration::from_secs(180));
    cmd
}

/// `openmsi download-directory OUT --group-id GROUP --exit-when-idle 2 EXTRA...` run in the
/// folder above OUT (where a command injected by a hostile file name would write): returns
/// (exit status success, stdout followed by stderr).
pub fn download_idle_with(
    cfg: &Path,
    topic: &str,
    out: &Path,
    group: &str,
    extra: &[&str],
) -> (bool, String) {
    let output = download_idle_command(cfg, topic, out, group)
        .current_dir(out.parent().expect("the output folder has a parent"))
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Bytes the downloader has staged or published under `out`: file data only, not its chunk
/// records, its completed log, rejected messages or failed files. Grows as a download advances.
pub fn progress_bytes(out: &Path) -> u64 {
    fn size_under(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    if path.ends_with("rejected") || path.ends_with("failed") {
                        0
                    } else {
                        size_under(&path)
                    }
                } else if path
                    .extension()
                    .is_some_and(|x| x == "chunks" || x == "jsonl")
                {
                    0
                } else {
                    e.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    }
    size_under(out)
}

/// Messages the downloader kept aside in `out/.openmsi/rejected` (one `.txt` each).
pub fn rejected_kept(out: &Path) -> usize {
    std::fs::read_dir(out.join(".openmsi/rejected"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
                .count()
        })
        .unwrap_or(0)
}

/// Files that failed verification, kept in `out/.openmsi/failed`.
pub fn failed_kept(out: &Path) -> usize {
    std::fs::read_dir(out.join(".openmsi/failed")).map_or(0, |entries| entries.count())
}

/// Files under `dir` other than openmsi's state (`.openmsi/`), as sorted relative paths.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".openmsi")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

/// Runs `openmsi upload-directory WATCHED --upload-existing --settle-seconds 0.2 EXTRA...`
/// until its registry lists `file_name`, then `quit`s it and asserts a clean exit.
pub fn upload_existing_until(
    cfg: &Path,
    topic: &str,
    watched: &Path,
    extra: &[&str],
    file_name: &str,
) {
    let mut up = KillOnDrop(
        openmsi_std()
            .arg("upload-directory")
            .arg(watched)
            .arg("--config")
            .arg(cfg)
            .args([
                "--topic",
                topic,
                "--upload-existing",
                "--settle-seconds",
                "0.2",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let registry = watched.join(".openmsi/uploaded.jsonl");
    assert!(
        wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&registry).is_ok_and(|t| t.contains(file_name))
        }),
        "upload-directory did not upload {file_name}"
    );
    assert!(quit_and_wait(&mut up, Duration::from_secs(30)).success());
}

/// Test passwords of the password-derived root of trust every provisioned test node shares.
pub const TEST_ROT_PASSWORD: &str = "rotpassword1234";
/// See [`TEST_ROT_PASSWORD`].
pub const TEST_PROVISIONING_PASSWORD: &str = "provpass99";

/// `openmsi provision-node --node-id NODE --role ROLE --topics TOPICS --output-dir DIR` with the
/// test passwords; returns the node's config file (`DIR/NODE/NODE.config`).
pub fn provision_node(dir: &Path, node: &str, role: &str, topics: &str) -> PathBuf {
    openmsi()
        .args([
            "provision-node",
            "--node-id",
            node,
            "--role",
            role,
            "--topics",
            topics,
            "--output-dir",
        ])
        .arg(dir)
        .env("OPENMSI_ROT_PASSWORD", TEST_ROT_PASSWORD)
        .env("OPENMSI_PROVISIONING_PASSWORD", TEST_PROVISIONING_PASSWORD)
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    dir.join(node).join(format!("{node}.config"))
}
