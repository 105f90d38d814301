//! End-to-end encrypted topics on the real broker: openmsi ↔ openmsi (a producer that has
//! exited, a restarted producer, a consumer node not entitled to the topic, tampered records,
//! kill -9 cycles and nonce reuse, plaintext never on the broker), and openmsi ↔ OpenMSIStream
//! 1.8.8 with the real KafkaCrypto 0.9.11.3 in both directions.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{
    consumer_config, download_until_idle, openmsi, openmsi_std, produce_values, provision_node,
    reference_command, sha512_file, unique_topic, wait_for, write_config, write_random_file,
    Broker, KillOnDrop, Storage,
};
use openmsi::crypto::record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A broker, a topic with its key-exchange topics, and two nodes provisioned by openmsi with
/// the same password-derived root: `up` (producer) and `down` (consumer), each with an openmsi
/// config naming it in `[kafkacrypto]`.
struct Encrypted {
    broker: Broker,
    topic: String,
    work: tempfile::TempDir,
    up: PathBuf,
    down: PathBuf,
}

/// The harness config of `broker` plus `[kafkacrypto] node_id = NODE`, in `dir` (where the
/// node's folder is).
fn node_config(dir: &Path, broker: &Broker, node: &str) -> PathBuf {
    let base = write_config(dir, broker);
    let path = dir.join(format!("{node}.openmsi.config"));
    // The node files simple-provision writes say `security_protocol : SSL`; OpenMSIStream lets
    // the config's [broker] settings win, so the plaintext test broker is named here.
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("[broker]\n", "[broker]\nsecurity.protocol = PLAINTEXT\n")
        + &format!("\n[kafkacrypto]\nnode_id = {node}\n");
    std::fs::write(&path, text).unwrap();
    path
}

impl Encrypted {
    fn new(storage: Storage) -> Encrypted {
        let broker = Broker::start(storage);
        let topic = unique_topic("enc").replace('.', "-");
        for name in [
            topic.clone(),
            format!("{topic}.keys"),
            format!("{topic}.reqs"),
            format!("{topic}.subs"),
        ] {
            broker.create_topic(&name, 1);
        }
        let work = tempfile::tempdir().unwrap();
        provision_node(work.path(), "up", "producer", &topic);
        provision_node(work.path(), "down", "consumer", &topic);
        let up = node_config(work.path(), &broker, "up");
        let down = node_config(work.path(), &broker, "down");
        Encrypted {
            broker,
            topic,
            work,
            up,
            down,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Every raw record value of the topic.
    fn raw_values(&self) -> Vec<Vec<u8>> {
        let consumer: BaseConsumer = consumer_config(&self.broker, &unique_topic("raw"))
            .create()
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let mut values = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (values.len() as i64) < high && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                values.push(m.payload().unwrap_or_default().to_vec());
            }
        }
        assert_eq!(values.len() as i64, high, "could not read the whole topic");
        values
    }
}

/// A long-running `openmsi serve-keys` (stdin open for `quit`, stdout piped; stderr to `log` if
/// given).
fn serve_keys_in_background(
    cfg: &Path,
    topic: &str,
    log: Option<&Path>,
    extra: &[&str],
) -> KillOnDrop {
    let stderr = match log {
        Some(log) => Stdio::from(std::fs::File::create(log).unwrap()),
        None => Stdio::null(),
    };
    KillOnDrop(
        openmsi_std()
            .args(["serve-keys", "--config"])
            .arg(cfg)
            .args(["--topic", topic])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// A long-running `download-directory` (stdin open for `quit`; stderr to `log` if given).
fn download_in_background(
    cfg: &Path,
    topic: &str,
    out: &Path,
    group: &str,
    log: Option<&Path>,
) -> KillOnDrop {
    let stderr = match log {
        Some(log) => Stdio::from(std::fs::File::create(log).unwrap()),
        None => Stdio::null(),
    };
    KillOnDrop(
        openmsi_std()
            .arg("download-directory")
            .arg(out)
            .arg("--config")
            .arg(cfg)
            .args(["--topic", topic, "--group-id", group])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

fn upload_file(cfg: &Path, topic: &str, file: &Path) {
    openmsi()
        .arg("upload-file")
        .arg(file)
        .arg("--config")
        .arg(cfg)
        .args(["--topic", topic, "--chunk-size", "65536"])
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
}

/// A long-running `upload-directory` of `dir` (serving the node's keys), quit on drop.
fn upload_directory(cfg: &Path, topic: &str, dir: &Path) -> KillOnDrop {
    std::fs::create_dir_all(dir).unwrap();
    let child = openmsi_std()
        .arg("upload-directory")
        .arg(dir)
        .arg("--config")
        .arg(cfg)
        .args(["--topic", topic, "--chunk-size", "65536"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// A producer's `upload-file` has exited: a downloader started afterwards waits (nothing is
/// lost), and gets the key as soon as any process of the producer node runs (here its
/// `upload-directory`, restarted and idle: it never encrypted anything to this topic).
#[test]
fn files_from_an_exited_producer_decrypt_once_its_node_serves_keys_again() {
    let e = Encrypted::new(Storage::Memory);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("scan-001.raw"), 300_000, 1);
    upload_file(&e.up, &e.topic, &src.join("scan-001.raw"));

    // Nobody serves the key: the downloader keeps waiting instead of skipping the file.
    let out = e.path("out");
    let mut down = download_in_background(&e.down, &e.topic, &out, "g1", None);
    std::thread::sleep(Duration::from_secs(5));
    assert!(!out.join("scan-001.raw").exists());

    // The producer node's drop box starts (another process, nothing produced yet): it serves
    // the earlier key from the node's key store.
    let _serving = upload_directory(&e.up, &e.topic, &e.path("watched"));
    assert!(
        wait_for(Duration::from_secs(40), || out
            .join("scan-001.raw")
            .exists()),
        "the file never arrived"
    );
    assert_eq!(
        sha512_file(&out.join("scan-001.raw")),
        sha512_file(&src.join("scan-001.raw"))
    );
    assert!(common::quit_and_wait(&mut down, Duration::from_secs(30)).success());

    // The broker never saw the file's bytes or its name.
    let content = std::fs::read(src.join("scan-001.raw")).unwrap();
    for value in e.raw_values() {
        assert_eq!(value[0], record::FORMAT_VERSION);
        assert!(
            !value.windows(9).any(|w| w == b"scan-001."),
            "file name in the clear"
        );
        assert!(
            !value.windows(64).any(|w| w == &content[1000..1064]),
            "file bytes in the clear"
        );
    }
}

/// A consumer node whose certificate does not grant the topic is refused at start, saying why;
/// a producer node likewise.
#[test]
fn nodes_not_entitled_to_the_topic_are_told_at_start() {
    let e = Encrypted::new(Storage::Memory);
    provision_node(e.work.path(), "stranger", "consumer", "elsewhere");
    let cfg = node_config(e.work.path(), &e.broker, "stranger");
    openmsi()
        .arg("download-directory")
        .arg(e.path("out"))
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", &e.topic, "--exit-when-idle", "2"])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(
            predicates::str::contains("cannot request keys of (consumer) topic")
                .and(predicates::str::contains("does not grant the topic")),
        );
    // The consumer node may not encrypt.
    std::fs::write(e.path("f.txt"), b"x").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(e.path("f.txt"))
        .arg("--config")
        .arg(&e.down)
        .args(["--topic", &e.topic])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(predicates::str::contains("does not grant 'key-encrypt'"));
    // A topic whose exchange topics are missing: named, with how to create them.
    let bare = unique_topic("bare");
    e.broker.create_topic(&bare, 1);
    provision_node(e.work.path(), "anywhere", "producer", "all");
    let anywhere = node_config(e.work.path(), &e.broker, "anywhere");
    openmsi()
        .arg("upload-file")
        .arg(e.path("f.txt"))
        .arg("--config")
        .arg(&anywhere)
        .args(["--topic", &bare])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(predicates::str::contains(format!(
            "`{bare}.keys` does not exist"
        )));
}

use predicates::prelude::PredicateBooleanExt;

/// Tampered records (a flipped bit, a plaintext chunk) are refused and kept aside; a record
/// under a key no producer serves (an outsider's) waits in `.openmsi/deferred` without holding
/// anything up; the other files arrive.
#[test]
fn tampered_and_foreign_records_are_refused_and_the_stream_goes_on() {
    let e = Encrypted::new(Storage::Memory);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("good.bin"), 200_000, 2);
    upload_file(&e.up, &e.topic, &src.join("good.bin"));
    let genuine = e.raw_values();
    // A copy of a genuine record with one bit flipped in its ciphertext.
    let mut flipped = genuine[0].clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x01;
    // A record sealed with a key no producer of the deployment made (an outsider's key id).
    let outsider_sealer =
        record::Sealer::new([0x55; 32], openmsi::crypto::primitives::random_secret());
    let outsider = (
        outsider_sealer.seal(record::RecordPart::Key, b"forged"),
        outsider_sealer.seal(record::RecordPart::Value, b"forged"),
    );
    // A plaintext chunk (anyone with write access could send it).
    let plaintext = b"\x99plain".to_vec();
    produce_values(&e.broker, &e.topic, &[flipped, plaintext]);
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = common::producer_config(&e.broker).create().unwrap();
        producer
            .send(
                BaseRecord::to(&e.topic)
                    .partition(0)
                    .key(&outsider.0)
                    .payload(&outsider.1),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }
    write_random_file(&src.join("after.bin"), 100_000, 3);
    upload_file(&e.up, &e.topic, &src.join("after.bin"));
    let _serving = upload_directory(&e.up, &e.topic, &e.path("watched"));
    let out = e.path("out");
    download_until_idle(&e.down, &e.topic, &out, "g1").code(1);
    for name in ["good.bin", "after.bin"] {
        assert_eq!(
            sha512_file(&out.join(name)),
            sha512_file(&src.join(name)),
            "{name}"
        );
    }
    let rejected = std::fs::read_dir(out.join(".openmsi/rejected"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|d| d.path().extension().is_some_and(|x| x == "txt"))
        .count();
    assert_eq!(rejected, 2);
    let deferred = std::fs::read_dir(out.join(".openmsi/deferred"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|d| d.path().extension().is_some_and(|x| x == "txt"))
        .count();
    assert_eq!(deferred, 1);
}

/// Copies a node provisioned by KafkaCrypto's simple-provision (tests/fixtures) into `dir`.
fn python_node(dir: &Path, name: &str) {
    let from = common::repo_root()
        .join("tests/fixtures/kafkacrypto-nodes")
        .join(name);
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A running reference command with its output in files, killed on drop.
fn spawn_reference(name: &str, args: &[&std::ffi::OsStr], log: &Path) -> KillOnDrop {
    let child = reference_command(name)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(log.with_extension("stdout")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// openmsi encrypts (upload-file, whose process exits, and upload-directory, which also
/// serves the keys); OpenMSIStream's encrypted DataFileDownloadDirectory, with the real
/// KafkaCrypto and a node provisioned by openmsi, rebuilds every file.
#[test]
fn openmsi_encrypted_uploads_are_read_by_openmsistream() {
    let e = Encrypted::new(Storage::Sqlite);
    provision_node(e.work.path(), "pyreader", "consumer", &e.topic);
    let reader_cfg = node_config(e.work.path(), &e.broker, "pyreader");
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("one-shot.dat"), 1_200_000, 7);
    upload_file(&e.up, &e.topic, &src.join("one-shot.dat"));
    let watched = e.path("watched");
    let mut serving = upload_directory(&e.up, &e.topic, &watched);
    std::thread::sleep(Duration::from_secs(2));
    write_random_file(&watched.join("dropped.dat"), 700_000, 8);

    let out = e.path("py-out");
    let log = e.path("reference-download.stderr");
    let group = unique_topic("pygroup");
    let mut reference = spawn_reference(
        "DataFileDownloadDirectory",
        &[
            out.as_os_str(),
            "--config".as_ref(),
            reader_cfg.as_os_str(),
            "--topic_name".as_ref(),
            e.topic.as_ref(),
            "--consumer_group_id".as_ref(),
            group.as_ref(),
        ],
        &log,
    );
    // Complete files only (the reference writes chunks straight into the final path).
    let expected = [
        ("one-shot.dat", src.join("one-shot.dat")),
        ("dropped.dat", watched.join("dropped.dat")),
    ];
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let arrived = wait_for(Duration::from_secs(90), || {
        expected.iter().all(|(name, original)| {
            size(&out.join(name)).is_some() && size(&out.join(name)) == size(original)
        })
    });
    let _ = reference.0.kill();
    assert!(
        arrived,
        "OpenMSIStream did not rebuild the files:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        sha512_file(&out.join("one-shot.dat")),
        sha512_file(&src.join("one-shot.dat"))
    );
    assert_eq!(
        sha512_file(&out.join("dropped.dat")),
        sha512_file(&watched.join("dropped.dat"))
    );
    assert!(common::quit_and_wait(&mut serving, Duration::from_secs(30)).success());
}

/// OpenMSIStream's encrypted DataFileUploadDirectory (the real KafkaCrypto, a node provisioned
/// by KafkaCrypto's simple-provision) → openmsi download-directory, also on a node
/// simple-provision made.
#[test]
fn openmsistream_encrypted_uploads_are_read_by_openmsi() {
    let e = Encrypted::new(Storage::Sqlite);
    python_node(e.work.path(), "p");
    python_node(e.work.path(), "c");
    let producer_cfg = node_config(e.work.path(), &e.broker, "p");
    let consumer_cfg = node_config(e.work.path(), &e.broker, "c");
    // The files are there before the reference starts (`--upload_existing`): a file written
    // just as its folder watcher starts can be missed by it (seen once under load).
    let watched = e.path("py-watched");
    std::fs::create_dir_all(&watched).unwrap();
    write_random_file(&watched.join("spectrum-a.dat"), 900_000, 9);
    write_random_file(&watched.join("spectrum-b.dat"), 1_100_000, 10);
    let log = e.path("reference-upload.stderr");
    let _uploader = spawn_reference(
        "DataFileUploadDirectory",
        &[
            watched.as_os_str(),
            "--config".as_ref(),
            producer_cfg.as_os_str(),
            "--topic_name".as_ref(),
            e.topic.as_ref(),
            "--upload_existing".as_ref(),
        ],
        &log,
    );
    assert!(
        wait_for(Duration::from_secs(60), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Will upload files")),
        "DataFileUploadDirectory did not start:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let out = e.path("out");
    let mut down = download_in_background(
        &consumer_cfg,
        &e.topic,
        &out,
        "g1",
        Some(&e.path("openmsi-download.stderr")),
    );
    let arrived = wait_for(Duration::from_secs(90), || {
        ["spectrum-a.dat", "spectrum-b.dat"]
            .iter()
            .all(|n| out.join(n).is_file())
    });
    assert!(
        arrived,
        "openmsi did not rebuild the files:\n{}\n--- reference ---\n{}",
        std::fs::read_to_string(e.path("openmsi-download.stderr")).unwrap_or_default(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for n in ["spectrum-a.dat", "spectrum-b.dat"] {
        assert_eq!(
            sha512_file(&out.join(n)),
            sha512_file(&watched.join(n)),
            "{n}"
        );
    }
    assert!(common::quit_and_wait(&mut down, Duration::from_secs(30)).success());
}

/// `kill -9` at random moments of many encrypted uploads: every run takes a fresh key index
/// (the ratchet is advanced durably before use), so no (key index, counter) pair ever repeats
/// on the topic, and every completed upload still decrypts.
#[test]
fn no_key_and_nonce_pair_repeats_across_kill_9_and_restarts() {
    let e = Encrypted::new(Storage::Memory);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("big.bin"), 6_000_000, 11);
    // A little jitter source that needs no crate: the clock's nanoseconds.
    let jitter = || {
        u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        ) % 400
    };
    let watermark = || {
        let consumer: BaseConsumer = consumer_config(&e.broker, &unique_topic("len"))
            .create()
            .unwrap();
        consumer
            .fetch_watermarks(&e.topic, 0, Duration::from_secs(10))
            .unwrap()
            .1
    };
    // Even runs are killed at a random moment (often before anything is sent: right after the
    // ratchet moved, or while it moves); odd runs once they have sent something.
    for run in 0..12 {
        let before = watermark();
        let mut child = KillOnDrop(
            openmsi_std()
                .arg("upload-file")
                .arg(src.join("big.bin"))
                .arg("--config")
                .arg(&e.up)
                .args(["--topic", &e.topic, "--chunk-size", "65536"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        if run % 2 == 1 {
            assert!(
                wait_for(Duration::from_secs(30), || watermark() > before),
                "run {run} sent nothing"
            );
        }
        std::thread::sleep(Duration::from_millis(jitter()));
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    upload_file(&e.up, &e.topic, &src.join("big.bin"));
    let mut seen = HashSet::new();
    let values = e.raw_values();
    // The complete upload's 92 chunks, and at least one from each odd run.
    assert!(values.len() >= 98, "too few records ({})", values.len());
    for value in &values {
        let parsed = record::parse(value).unwrap();
        assert!(
            seen.insert((parsed.key_id, parsed.salt)),
            "a (key index, counter) pair was used twice"
        );
    }
    let key_ids: HashSet<[u8; 32]> = values
        .iter()
        .map(|v| record::parse(v).unwrap().key_id)
        .collect();
    assert!(
        key_ids.len() >= 7,
        "every run must use its own key index ({} seen)",
        key_ids.len()
    );
    let _serving = upload_directory(&e.up, &e.topic, &e.path("watched"));
    let out = e.path("out");
    download_until_idle(&e.down, &e.topic, &out, "g1").success();
    assert_eq!(
        sha512_file(&out.join("big.bin")),
        sha512_file(&src.join("big.bin"))
    );
}

/// `openmsi serve-keys` on the producer node answers for an upload whose process has exited;
/// `quit` stops it with exit 0.
#[test]
fn serve_keys_answers_for_exited_uploads() {
    let e = Encrypted::new(Storage::Memory);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 150_000, 21);
    upload_file(&e.up, &e.topic, &src.join("a.bin"));
    let metrics_port = common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut server =
        serve_keys_in_background(&e.up, &e.topic, None, &["--metrics-addr", &metrics_addr]);
    let out = e.path("out");
    download_until_idle(&e.down, &e.topic, &out, "g1").success();
    assert_eq!(
        sha512_file(&out.join("a.bin")),
        sha512_file(&src.join("a.bin"))
    );
    // Its metrics count the key requests it answered.
    let scrape = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&metrics_addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let answered: u64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("openmsi_key_requests_answered_total "))
        .unwrap_or_else(|| panic!("no key-request counter: {scrape}"))
        .parse()
        .unwrap();
    assert!(answered >= 1, "{scrape}");
    assert!(common::quit_and_wait(&mut server, Duration::from_secs(30)).success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(server.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("serving keys of node up"), "{stdout}");
    assert!(
        stdout.contains(&format!("stopped; {answered} key replies")),
        "{stdout}"
    );
}

type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The (key, value) pairs of `topic` (raw bytes) read from its start, for up to 30 s or until
/// `enough` says so.
fn raw_records(broker: &Broker, topic: &str, enough: impl Fn(&Records) -> bool) -> Records {
    let consumer: BaseConsumer = consumer_config(broker, &unique_topic("raw"))
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !enough(&got) && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    got
}

/// With encryption on, heartbeats and log lines are encrypted like the data (OpenMSIStream
/// sends them through its encrypting producer); they decrypt with the node's keys, and the
/// uploaded file's name is not in the clear on the log topic.
#[test]
fn heartbeats_and_logs_are_encrypted_too() {
    let e = Encrypted::new(Storage::Memory);
    for name in [
        "hb", "hb.keys", "hb.reqs", "hb.subs", "lg", "lg.keys", "lg.reqs", "lg.subs",
    ] {
        e.broker.create_topic(name, 1);
    }
    provision_node(
        e.work.path(),
        "station",
        "producer",
        &format!("{} hb lg", e.topic),
    );
    let cfg = node_config(e.work.path(), &e.broker, "station");
    let watched = e.path("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let mut up = KillOnDrop(
        openmsi_std()
            .arg("upload-directory")
            .arg(&watched)
            .arg("--config")
            .arg(&cfg)
            .args([
                "--topic",
                &e.topic,
                "--heartbeat-topic",
                "hb",
                "--log-topic",
                "lg",
            ])
            .args(["--heartbeat-interval", "1", "--program-id", "lab1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    write_random_file(&watched.join("secret-sample-name.bin"), 10_000, 31);
    std::thread::sleep(Duration::from_secs(6));
    assert!(common::quit_and_wait(&mut up, Duration::from_secs(30)).success());

    let node =
        openmsi::crypto::node::Node::load(&e.work.path().join("station/station.config")).unwrap();
    let keys = openmsi::crypto::keystore::load(&node).unwrap();
    let open = |root: &str, bytes: &[u8], part: record::RecordPart| -> Vec<u8> {
        let parsed = record::parse(bytes).expect("an encrypted record");
        let key = keys
            .iter()
            .find(|k| k.root == root && k.key_id == parsed.key_id)
            .expect("its key is in the node's store");
        record::open(&parsed, part, &key.secret).unwrap()
    };
    let beats = raw_records(&e.broker, "hb", |got| got.len() >= 2);
    assert!(!beats.is_empty(), "no heartbeat sent");
    for (key, value) in &beats {
        assert_eq!(open("hb", key, record::RecordPart::Key), b"lab1_heartbeat");
        let json: serde_json::Value =
            serde_json::from_slice(&open("hb", value, record::RecordPart::Value)).unwrap();
        assert!(json["n_messages_produced"].is_u64(), "{json}");
    }
    let names_the_file = |value: &[u8]| {
        String::from_utf8_lossy(&open("lg", value, record::RecordPart::Value))
            .contains("secret-sample-name")
    };
    let logs = raw_records(&e.broker, "lg", |got| {
        got.iter().any(|(_, v)| names_the_file(v))
    });
    assert!(
        logs.iter().any(|(_, v)| names_the_file(v)),
        "the log lines (decrypted) should name the uploaded file"
    );
    for (_, value) in &logs {
        assert!(
            !value.windows(18).any(|w| w == b"secret-sample-name"),
            "a file name in the clear"
        );
    }
}

/// A long-running producer moves to the next key every `crypto_ratchet_interval` (KafkaCrypto's
/// node setting, 24 h by default; 2 s here): files on either side of the change decrypt.
#[test]
fn long_running_producers_move_to_new_keys() {
    let e = Encrypted::new(Storage::Memory);
    let node_config = e.work.path().join("up/up.config");
    let text = std::fs::read_to_string(&node_config).unwrap();
    std::fs::write(
        &node_config,
        text.replace("[up]\n", "[up]\ncrypto_ratchet_interval : 2\n"),
    )
    .unwrap();
    let watched = e.path("watched");
    let mut up = upload_directory(&e.up, &e.topic, &watched);
    std::thread::sleep(Duration::from_secs(1));
    write_random_file(&watched.join("before.bin"), 50_000, 41);
    std::thread::sleep(Duration::from_secs(6));
    write_random_file(&watched.join("after.bin"), 50_000, 42);
    let out = e.path("out");
    let mut down = download_in_background(&e.down, &e.topic, &out, "g1", None);
    assert!(
        wait_for(Duration::from_secs(60), || out.join("before.bin").exists()
            && out.join("after.bin").exists()),
        "files did not arrive"
    );
    for name in ["before.bin", "after.bin"] {
        assert_eq!(
            sha512_file(&out.join(name)),
            sha512_file(&watched.join(name))
        );
    }
    assert!(common::quit_and_wait(&mut down, Duration::from_secs(30)).success());
    assert!(common::quit_and_wait(&mut up, Duration::from_secs(30)).success());
    let key_ids: HashSet<[u8; 32]> = e
        .raw_values()
        .iter()
        .map(|v| record::parse(v).unwrap().key_id)
        .collect();
    assert!(
        key_ids.len() >= 2,
        "the two files should be under different keys"
    );
}

/// A one-certificate allow- or denylist message: `key` with its allowlist entry, signed by
/// `signer` and granted `usage`.
fn list_message(
    signer: &openmsi::crypto::primitives::SigningKey,
    key: &[u8; 32],
    usage: &str,
) -> Vec<u8> {
    use openmsi::crypto::chain::{allowlist_entry, encode_chain, Certificate, Poison};
    use openmsi::crypto::msgpack::bin;
    let leaf = Certificate {
        max_age: 0.0,
        poison: Poison {
            usages: Some(vec![usage.to_string()]),
            topics: None,
            pathlen: None,
        },
        key: bin(key.to_vec()),
        extra: vec![bin(allowlist_entry(key))],
    };
    encode_chain(&[leaf.sign(signer)])
}

/// The global `allowlist` and `denylist` topics change whom running nodes trust: a consumer
/// signed by another root gets keys once each side's root allowlists the other's (and the
/// change is recorded in the node's config); a denylisted consumer gets none.
#[test]
fn allowlist_and_denylist_topics_change_trust_at_run_time() {
    use openmsi::crypto::node::Node;
    let e = Encrypted::new(Storage::Memory);
    for name in ["chains", "allowlist", "denylist"] {
        e.broker.create_topic(name, 1);
    }
    let root_key = e.path("other-root.key");
    openmsi()
        .args([
            "provision-node",
            "--node-id",
            "outsider",
            "--role",
            "consumer",
            "--topics",
            &e.topic,
            "--output-dir",
        ])
        .arg(e.work.path())
        .arg("--new-root-key")
        .arg(&root_key)
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    let outsider_cfg = node_config(e.work.path(), &e.broker, "outsider");
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("shared.bin"), 80_000, 51);
    upload_file(&e.up, &e.topic, &src.join("shared.bin"));
    let mut server =
        serve_keys_in_background(&e.up, &e.topic, Some(&e.path("serve-keys.log")), &[]);
    let downloader = |cfg: &Path, out: &Path, group: &str| {
        download_in_background(cfg, &e.topic, out, group, None)
    };
    let outsider_out = e.path("outsider-out");
    let mut outsider = downloader(&outsider_cfg, &outsider_out, "g-outsider");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !outsider_out.join("shared.bin").exists(),
        "an untrusted consumer got the key"
    );

    // Each root allowlists the other's.
    let password_root = openmsi::crypto::provision::password_root("rotpassword1234");
    let other_root = openmsi::crypto::provision::read_root_key(&root_key).unwrap();
    let allow = [
        list_message(&password_root, &other_root.public(), "key-allowlist"),
        list_message(&other_root, &password_root.public(), "key-allowlist"),
    ];
    produce_values(&e.broker, "allowlist", &allow);
    assert!(
        wait_for(Duration::from_secs(40), || outsider_out
            .join("shared.bin")
            .exists()),
        "the allowlisted consumer did not get the key:\n{}",
        std::fs::read_to_string(e.path("serve-keys.log")).unwrap_or_default()
    );
    assert_eq!(
        sha512_file(&outsider_out.join("shared.bin")),
        sha512_file(&src.join("shared.bin"))
    );
    assert!(common::quit_and_wait(&mut outsider, Duration::from_secs(30)).success());

    // The consumer node `down` is denylisted: it gets no key for a new file.
    let down_key = Node::load(&e.work.path().join("down/down.config"))
        .unwrap()
        .signing
        .public();
    produce_values(
        &e.broker,
        "denylist",
        &[list_message(&password_root, &down_key, "key-denylist")],
    );
    std::thread::sleep(Duration::from_secs(2));
    write_random_file(&src.join("later.bin"), 60_000, 52);
    upload_file(&e.up, &e.topic, &src.join("later.bin"));
    let down_out = e.path("down-out");
    let mut down = downloader(&e.down, &down_out, "g-down");
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        !down_out.join("later.bin").exists(),
        "a denylisted consumer got a key"
    );
    assert!(common::quit_and_wait(&mut down, Duration::from_secs(30)).success());
    assert!(common::quit_and_wait(&mut server, Duration::from_secs(30)).success());
    let log = std::fs::read_to_string(e.path("serve-keys.log")).unwrap();
    assert!(log.contains("denylisted"), "{log}");
    // Both changes were recorded in the producer node's config.
    let up = Node::load(&e.work.path().join("up/up.config")).unwrap();
    assert!(up.trust.allow.contains(&other_root.public()));
    assert!(up.trust.deny.contains(&down_key));
}

/// Forged and replayed key replies on the topic are refused: a reply signed by a node not
/// granted `key-encrypt` (carrying a wrong key), and old genuine replies re-sent by the broker;
/// the downloader takes only the genuine answer to its own request.
#[test]
fn forged_and_replayed_key_replies_are_refused() {
    use openmsi::crypto::exchange;
    use openmsi::crypto::node::Node;
    let e = Encrypted::new(Storage::Memory);
    provision_node(e.work.path(), "rogue", "consumer", &e.topic);
    let rogue = Node::load(&e.work.path().join("rogue/rogue.config")).unwrap();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("first.bin"), 40_000, 61);
    upload_file(&e.up, &e.topic, &src.join("first.bin"));
    // A first genuine exchange, whose replies the broker will replay later.
    let server = |log: &str| serve_keys_in_background(&e.up, &e.topic, Some(&e.path(log)), &[]);
    let mut first_server = server("serve-1.log");
    download_until_idle(&e.down, &e.topic, &e.path("out-1"), "g1").success();
    assert!(common::quit_and_wait(&mut first_server, Duration::from_secs(30)).success());
    let old_replies = raw_records(&e.broker, &format!("{}.keys", e.topic), |got| {
        !got.is_empty()
    });
    assert!(!old_replies.is_empty());

    // A second file and a new downloader, with no key server running yet.
    write_random_file(&src.join("second.bin"), 40_000, 62);
    upload_file(&e.up, &e.topic, &src.join("second.bin"));
    let out = e.path("out-2");
    let log = e.path("download-2.log");
    let mut down = download_in_background(&e.down, &e.topic, &out, "g2", Some(&log));
    // Its request, answered by the rogue node with a made-up key; then the old replies again.
    let reqs = format!("{}.reqs", e.topic);
    let before = {
        let consumer: BaseConsumer = consumer_config(&e.broker, &unique_topic("len"))
            .create()
            .unwrap();
        consumer
            .fetch_watermarks(&reqs, 0, Duration::from_secs(10))
            .unwrap()
            .1 as usize
    };
    let requests = raw_records(&e.broker, &reqs, |got| got.len() > before);
    let (key, value) = requests.last().unwrap().clone();
    let fake = |_: &[u8; 32]| Some(openmsi::crypto::primitives::random_secret());
    let (reply_key, forged) = exchange::answer_request(
        &rogue.identity(),
        &e.topic,
        &key,
        &value,
        &fake,
        1.8e9 - 1.0e8,
    )
    .unwrap()
    .unwrap();
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = common::producer_config(&e.broker).create().unwrap();
        let keys_topic = format!("{}.keys", e.topic);
        producer
            .send(
                BaseRecord::to(&keys_topic)
                    .partition(0)
                    .key(&reply_key)
                    .payload(&forged),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        for (k, v) in &old_replies {
            producer
                .send(BaseRecord::to(&keys_topic).partition(0).key(k).payload(v))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(!out.join("second.bin").exists());
    // The genuine server answers; the file arrives intact (a forged key would have failed it).
    let mut second_server = server("serve-2.log");
    assert!(
        wait_for(Duration::from_secs(40), || out.join("second.bin").exists()),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        sha512_file(&out.join("second.bin")),
        sha512_file(&src.join("second.bin"))
    );
    assert!(common::quit_and_wait(&mut down, Duration::from_secs(30)).success());
    assert!(common::quit_and_wait(&mut second_server, Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refused a key reply") && text.contains("does not grant 'key-encrypt'"),
        "{text}"
    );
    assert!(
        !out.join(".openmsi/rejected")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "nothing may be rejected"
    );
}

/// `openmsi relay` between encrypted topics: a prodcon node decrypts the source (as a consumer
/// node), checks every chunk, and encrypts again for the destination topic (as a producer
/// node, serving that topic's keys while it runs); the destination never holds plaintext.
#[test]
fn a_relay_node_decrypts_and_encrypts_again_for_the_destination() {
    let e = Encrypted::new(Storage::Sqlite);
    let destination = format!("{}-relayed", e.topic);
    for name in [
        destination.clone(),
        format!("{destination}.keys"),
        format!("{destination}.reqs"),
        format!("{destination}.subs"),
    ] {
        e.broker.create_topic(&name, 1);
    }
    provision_node(
        e.work.path(),
        "relay",
        "prodcon",
        &format!("{} {destination}", e.topic),
    );
    provision_node(e.work.path(), "far", "consumer", &destination);
    let relay_cfg = node_config(e.work.path(), &e.broker, "relay");
    let far_cfg = node_config(e.work.path(), &e.broker, "far");

    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("scan-7.raw"), 300_000, 7);
    upload_file(&e.up, &e.topic, &src.join("scan-7.raw"));
    // The uploader has exited: its node serves the source key.
    let _keys = serve_keys_in_background(&e.up, &e.topic, None, &[]);

    let log = e.path("relay.log");
    let mut relay = KillOnDrop(
        openmsi_std()
            .args(["relay", "--config"])
            .arg(&relay_cfg)
            .args(["--topic", &e.topic, "--to-topic", &destination])
            .args(["--group-id", "relay", "--state-dir"])
            .arg(e.path("relay-state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let out = e.path("out");
    let mut far = download_in_background(&far_cfg, &destination, &out, "far", None);
    assert!(
        wait_for(Duration::from_secs(60), || out.join("scan-7.raw").exists()),
        "the relayed file never arrived:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        sha512_file(&out.join("scan-7.raw")),
        sha512_file(&src.join("scan-7.raw"))
    );
    assert!(common::quit_and_wait(&mut far, Duration::from_secs(30)).success());
    assert!(common::quit_and_wait(&mut relay, Duration::from_secs(30)).success());

    // The destination holds ciphertext only.
    let content = std::fs::read(src.join("scan-7.raw")).unwrap();
    let records = raw_records(&e.broker, &destination, |r| r.len() >= 5);
    assert_eq!(records.len(), 5);
    for (_, value) in records {
        assert_eq!(value[0], record::FORMAT_VERSION);
        assert!(
            !value.windows(7).any(|w| w == b"scan-7."),
            "file name in the clear"
        );
        assert!(
            !value.windows(64).any(|w| w == &content[1000..1064]),
            "file bytes in the clear"
        );
    }
}

/// s3-transfer is a consumer node like download-directory (the same opener): an encrypted
/// topic's file ends in the bucket as its plaintext.
#[test]
fn s3_transfer_decrypts_into_the_bucket() {
    let e = Encrypted::new(Storage::Memory);
    let server = common::s3::S3Server::start("sealed");
    server.add_to_config(&e.down, common::s3::SECRET_KEY);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("spectrum.h5");
    write_random_file(&file, 400_000, 21);
    upload_file(&e.up, &e.topic, &file);
    let _keys = serve_keys_in_background(&e.up, &e.topic, None, &[]);
    openmsi()
        .args(["s3-transfer", "sealed", "--config"])
        .arg(&e.down)
        .args([
            "--topic",
            &e.topic,
            "--group-id",
            "create_new",
            "--exit-when-idle",
            "5",
        ])
        .arg("--state-dir")
        .arg(e.path("s3-state"))
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let object = server.object("sealed", &format!("{}/spectrum.h5", e.topic));
    assert_eq!(sha512_file(&object), sha512_file(&file));
}
