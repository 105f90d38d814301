//! `openmsi relay` between two clusters (two separate tansu brokers, each with its own config):
//! routes, `--match`, host selection and addressing, the destination partition rule, corrupt
//! chunks held back, kill -9 of the relay mid-file, the destination broker down for 20 s, and
//! the start-up refusals (missing destination topic, bad route). OpenMSIStream's downloader on
//! the far side is in `tests/interop.rs`.
//!
//! Storage: sqlite (the kill and outage tests restart brokers and need offsets that survive;
//! the memory engine's mid-batch fetch bug would also drop messages the relay produces in
//! batches).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    files_under, openmsi, openmsi_std, sha512_file, unique_topic, wait_for, write_config,
    write_random_file, Broker, ChunkSpec, KillOnDrop, Storage,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

/// Two clusters, a topic on each side, and a work folder with one config per cluster.
struct TwoClusters {
    source: Broker,
    destination: Broker,
    work: tempfile::TempDir,
    source_cfg: PathBuf,
    destination_cfg: PathBuf,
}

impl TwoClusters {
    fn start() -> Self {
        let source = Broker::start(Storage::Sqlite);
        let destination = Broker::start(Storage::Sqlite);
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.path().join("src-cfg")).unwrap();
        std::fs::create_dir_all(work.path().join("dst-cfg")).unwrap();
        let source_cfg = write_config(&work.path().join("src-cfg"), &source);
        let destination_cfg = write_config(&work.path().join("dst-cfg"), &destination);
        TwoClusters {
            source,
            destination,
            work,
            source_cfg,
            destination_cfg,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `openmsi relay` from `topic` on the source to the destination cluster, with a state
    /// folder and group of its own, plus `extra`.
    fn relay_command(&self, topic: &str, extra: &[&str]) -> std::process::Command {
        let mut cmd = openmsi_std();
        cmd.arg("relay")
            .arg("--config")
            .arg(&self.source_cfg)
            .args(["--topic", topic])
            .arg("--to-config")
            .arg(&self.destination_cfg)
            .arg("--state-dir")
            .arg(self.path("relay-state"))
            .args(["--group-id", "relay-group"])
            .args(extra);
        cmd
    }

    /// Runs the relay until the source is idle for 2 s.
    fn relay_until_idle(&self, topic: &str, extra: &[&str]) -> Output {
        let mut cmd = self.relay_command(topic, extra);
        cmd.args(["--exit-when-idle", "2"]).stdin(Stdio::null());
        let out = cmd.output().unwrap();
        assert!(out.status.code().is_some(), "{out:?}");
        out
    }

    /// A downloader of the destination `topic` until idle; returns the output folder.
    fn download(&self, topic: &str, name: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(name);
        let (ok, log) = common::download_idle_with(
            &self.destination_cfg,
            topic,
            &out,
            &format!("reader-{name}"),
            extra,
        );
        assert!(ok, "{log}");
        out
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Uploads `rel` (written under `src` with `len` random bytes) to `topic`, addressed to `hosts`.
fn upload(cfg: &Path, topic: &str, src: &Path, rel: &str, len: u64, hosts: &[&str]) {
    let path = src.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_random_file(&path, len, len ^ rel.len() as u64);
    let mut cmd = openmsi();
    cmd.arg("upload-file")
        .arg(&path)
        .arg("--config")
        .arg(cfg)
        .arg("--root-dir")
        .arg(src)
        .args(["--topic", topic, "--chunk-size", "65536"]);
    for h in hosts {
        cmd.args(["--to-host", h]);
    }
    cmd.timeout(Duration::from_secs(120)).assert().success();
}

/// A message read back: its partition, key and headers (as text).
type Peeked = (i32, String, Vec<(String, String)>);

/// Every message of `topic`.
fn messages(broker: &Broker, topic: &str) -> Vec<Peeked> {
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = common::consumer_config(broker, &unique_topic("peek"))
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut total = 0;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        total += high - low;
        list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            });
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((m.partition(), key, headers));
        }
    }
    assert_eq!(out.len() as i64, total, "could not read all of {topic}");
    out
}

/// The partition each file's chunks went to (by key prefix `<file>_chunk_`); fails when a
/// file's chunks are spread over several partitions.
fn partition_per_file(messages: &[Peeked]) -> BTreeMap<String, i32> {
    let mut seen: BTreeMap<String, i32> = BTreeMap::new();
    for (partition, key, _) in messages {
        let file = key.rsplit_once("_chunk_").map_or(key.as_str(), |(f, _)| f);
        let previous = seen.insert(file.to_string(), *partition);
        assert!(
            previous.is_none_or(|p| p == *partition),
            "chunks of {file} in partitions {previous:?} and {partition}"
        );
    }
    seen
}

/// The `.txt` notes of messages kept in `dir` (one per message).
fn kept_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
            .count()
    })
}

#[test]
fn routes_match_and_hosts_select_what_reaches_each_destination_topic() {
    let clusters = TwoClusters::start();
    let source_topic = unique_topic("relay-src");
    clusters.source.create_topic(&source_topic, 2);
    let (images, lab1) = (unique_topic("fink_images"), unique_topic("fink_lab1"));
    clusters.destination.create_topic(&images, 3);
    clusters.destination.create_topic(&lab1, 1);
    let src = clusters.path("src");
    let files: [(&str, u64, &[&str]); 6] = [
        ("lab1/a.tif", 300_000, &[]),
        ("lab1/notes.txt", 1_000, &[]),
        ("lab2/b.tif", 200_000, &[]),
        ("lab2/run.log", 5_000, &[]),
        ("lab1/for-beta.tif", 70_000, &["beta"]),
        ("lab2/for-alpha.tif", 70_000, &["ALPHA"]),
    ];
    for (rel, len, hosts) in files {
        upload(&clusters.source_cfg, &source_topic, &src, rel, len, hosts);
    }
    // A chunk that fails its SHA-512 check: held back, never redistributed.
    let mut corrupt = ChunkSpec::single("lab1", "corrupt.tif", b"payload");
    corrupt.data = b"tampered";
    common::produce_values(&clusters.source, &source_topic, &[corrupt.encode()]);

    let out = clusters.relay_until_idle(
        &source_topic,
        &[
            "--route",
            &format!("\\.tif$={images}"),
            "--route",
            &format!("^lab1/={lab1}"),
            "--host",
            "alpha",
        ],
    );
    let log = text(&out);
    // Exit 1 (idle exit with a rejected message), every count in the summary line.
    assert_eq!(out.status.code(), Some(1), "{log}");
    // a.tif (5 chunks) + b.tif (4) + for-alpha.tif (2) to images; a.tif (5) + notes.txt (1)
    // to lab1; run.log (1) skipped by the routes; for-beta.tif (2) for another host.
    assert!(
        log.contains(&format!("11 messages (570.0 kB) to {images}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("6 messages (301.0 kB) to {lab1}")),
        "{log}"
    );
    assert!(
        log.contains("1 skipped (not selected), 2 for other hosts, 1 rejected"),
        "{log}"
    );
    assert_eq!(
        kept_files(&clusters.path("relay-state/rejected")),
        1,
        "{log}"
    );

    let got_images = clusters.download(&images, "images", &["--host", "alpha"]);
    assert_eq!(
        files_under(&got_images),
        ["lab1/a.tif", "lab2/b.tif", "lab2/for-alpha.tif"]
    );
    let got_lab1 = clusters.download(&lab1, "lab1", &[]);
    assert_eq!(files_under(&got_lab1), ["lab1/a.tif", "lab1/notes.txt"]);
    for (dir, rel) in [
        (&got_images, "lab1/a.tif"),
        (&got_images, "lab2/b.tif"),
        (&got_images, "lab2/for-alpha.tif"),
        (&got_lab1, "lab1/a.tif"),
        (&got_lab1, "lab1/notes.txt"),
    ] {
        assert_eq!(
            sha512_file(&dir.join(rel)),
            sha512_file(&src.join(rel)),
            "{rel}"
        );
    }
    // Unchanged messages: the addressing came along.
    let relayed = messages(&clusters.destination, &images);
    let for_alpha: Vec<_> = relayed
        .iter()
        .filter(|(_, key, _)| key.contains("for-alpha"))
        .collect();
    assert_eq!(for_alpha.len(), 2);
    assert!(for_alpha
        .iter()
        .all(|(_, _, h)| h == &[("hostname".to_string(), "ALPHA".to_string())]));
    // All chunks of a file in one partition, the one an upload would choose.
    let partitions = partition_per_file(&relayed);
    let expected: BTreeMap<String, i32> = ["lab1/a.tif", "lab2/b.tif", "lab2/for-alpha.tif"]
        .iter()
        .map(|rel| {
            (
                rel.replace('/', "_"),
                openmsi::kafka::partition_for_path(rel, 3),
            )
        })
        .collect();
    assert_eq!(partitions, expected);
}

/// The messages in every partition of `topic` (the high watermarks summed).
fn message_count(broker: &Broker, topic: &str) -> i64 {
    let consumer: BaseConsumer = common::consumer_config(broker, &unique_topic("count"))
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return -1;
    };
    let partitions = metadata.topics()[0].partitions().len() as i32;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// Copies the messages at `offsets` of partition 0 of `from` to partition 0 of `to` on the same
/// broker, key, payload and headers unchanged.
fn copy_messages(broker: &Broker, from: &str, to: &str, offsets: std::ops::Range<i64>) {
    use rdkafka::message::Headers;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = common::consumer_config(broker, &unique_topic("copy"))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(from, 0, Offset::Offset(offsets.start))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> =
        common::producer_config(broker).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = offsets.start;
    while next < offsets.end {
        assert!(Instant::now() < deadline, "copied only up to offset {next}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        assert_eq!(message.offset(), next, "a gap in {from}");
        let mut headers = rdkafka::message::OwnedHeaders::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers = headers.insert(header);
            }
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(to)
            .partition(0)
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        next += 1;
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// A long-running relay (stdin piped for `quit`), its log in `log`.
fn relay_in_background(
    clusters: &TwoClusters,
    topic: &str,
    extra: &[&str],
    log: &Path,
) -> KillOnDrop {
    KillOnDrop(
        clusters
            .relay_command(topic, extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(
                std::fs::File::create(log.with_extension("out")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_relay_killed_mid_file_resumes_and_every_file_arrives_whole() {
    let clusters = TwoClusters::start();
    let (source_topic, destination_topic) = (unique_topic("kill-src"), unique_topic("kill-dst"));
    clusters.source.create_topic(&source_topic, 1);
    clusters.destination.create_topic(&destination_topic, 2);
    let src = clusters.path("src");
    // 24 MiB in 64 KiB chunks: 384 messages. They go to a staging topic first and only the
    // first 200 are copied into the relay's source topic before the kill, so the relay is
    // killed in the middle of the big file however fast it runs (it relays 24 MiB in well
    // under the time one count of the destination takes, so a kill timed on the count alone
    // could land after the end).
    let staging_topic = unique_topic("kill-staging");
    clusters.source.create_topic(&staging_topic, 1);
    let files = [
        ("big/run-1.raw", 24u64 << 20),
        ("small/a.json", 3_000),
        ("small/b.json", 90_000),
    ];
    for (rel, len) in files {
        upload(&clusters.source_cfg, &staging_topic, &src, rel, len, &[]);
    }
    let total = message_count(&clusters.source, &staging_topic);
    assert_eq!(total, 384 + 1 + 2);
    let before_kill = 200;
    copy_messages(
        &clusters.source,
        &staging_topic,
        &source_topic,
        0..before_kill,
    );

    let log = clusters.path("relay-1.log");
    let mut relay = relay_in_background(
        &clusters,
        &source_topic,
        &["--to-topic", &destination_topic],
        &log,
    );
    assert!(
        wait_for(Duration::from_secs(60), || message_count(
            &clusters.destination,
            &destination_topic
        ) >= 40),
        "nothing relayed:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    let at_kill = message_count(&clusters.destination, &destination_topic);
    assert!(
        at_kill < total,
        "the relay finished before it was killed ({at_kill} of {total})"
    );

    copy_messages(
        &clusters.source,
        &staging_topic,
        &source_topic,
        before_kill..total,
    );
    let out = clusters.relay_until_idle(&source_topic, &["--to-topic", &destination_topic]);
    assert!(out.status.success(), "{}", text(&out));
    // Everything from the last commit on was relayed again: duplicates, nothing missing.
    assert!(message_count(&clusters.destination, &destination_topic) >= total);
    let got = clusters.download(&destination_topic, "out", &[]);
    assert_eq!(
        files_under(&got),
        ["big/run-1.raw", "small/a.json", "small/b.json"]
    );
    for (rel, _) in files {
        assert_eq!(
            sha512_file(&got.join(rel)),
            sha512_file(&src.join(rel)),
            "{rel}"
        );
    }
    assert_eq!(common::rejected_kept(&got), 0);
}

#[test]
fn a_destination_down_for_20_s_delays_the_relay_and_loses_nothing() {
    let mut clusters = TwoClusters::start();
    let (source_topic, destination_topic) = (unique_topic("down-src"), unique_topic("down-dst"));
    clusters.source.create_topic(&source_topic, 1);
    clusters.destination.create_topic(&destination_topic, 1);
    let src = clusters.path("src");
    upload(
        &clusters.source_cfg,
        &source_topic,
        &src,
        "before/a.dat",
        500_000,
        &[],
    );
    let log = clusters.path("relay.log");
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let mut relay = relay_in_background(
        &clusters,
        &source_topic,
        &[
            "--to-topic",
            &destination_topic,
            "--metrics-addr",
            &metrics_addr,
        ],
        &log,
    );
    assert!(
        wait_for(Duration::from_secs(60), || message_count(
            &clusters.destination,
            &destination_topic
        ) >= 8),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    clusters.destination.stop();
    for (i, rel) in ["during/b.dat", "during/c.dat"].iter().enumerate() {
        upload(
            &clusters.source_cfg,
            &source_topic,
            &src,
            rel,
            300_000 + i as u64,
            &[],
        );
    }
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        relay.0.try_wait().unwrap().is_none(),
        "the relay exited while the destination was down:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let back = Instant::now();
    clusters.destination.restart();
    let expected = 8 + 5 + 5;
    assert!(
        wait_for(Duration::from_secs(90), || message_count(
            &clusters.destination,
            &destination_topic
        ) >= expected),
        "the relay did not catch up after the destination came back:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!(
        "caught up {:.1} s after the destination came back",
        back.elapsed().as_secs_f64()
    );
    // What the destination acknowledged, in the metrics and in `check`. The count above can
    // reach `expected` before the relay has the last acknowledgements (a batch stored just
    // before the outage and sent again counts twice there): the metric is waited for.
    let relayed_line =
        format!("openmsi_messages_relayed_total{{topic=\"{destination_topic}\"}} {expected}");
    let mut last_scrape = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            last_scrape = scrape(&metrics_addr);
            last_scrape.contains(&relayed_line)
        }),
        "{last_scrape}"
    );
    {
        use std::io::Write;
        let stdin = relay.0.stdin.as_mut().unwrap();
        stdin.write_all(b"check\n").unwrap();
        stdin.flush().unwrap();
    }
    let status = common::quit_and_wait(&mut relay, Duration::from_secs(30));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log_text}");
    let stdout = std::fs::read_to_string(log.with_extension("out")).unwrap();
    assert!(
        stdout.contains(&format!(
            "relayed {expected} messages to {destination_topic}"
        )),
        "`check` line missing: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "relayed: {expected} messages (1.1 MB) to {destination_topic}"
        )),
        "{stdout}"
    );

    let got = clusters.download(&destination_topic, "out", &[]);
    assert_eq!(
        files_under(&got),
        ["before/a.dat", "during/b.dat", "during/c.dat"]
    );
    for rel in ["before/a.dat", "during/b.dat", "during/c.dat"] {
        assert_eq!(
            sha512_file(&got.join(rel)),
            sha512_file(&src.join(rel)),
            "{rel}"
        );
    }
}

/// The body of `GET /metrics` at `addr`.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn to_host_readdresses_what_is_relayed() {
    let clusters = TwoClusters::start();
    let (source_topic, destination_topic) = (unique_topic("addr-src"), unique_topic("addr-dst"));
    clusters.source.create_topic(&source_topic, 1);
    clusters.destination.create_topic(&destination_topic, 1);
    let src = clusters.path("src");
    upload(
        &clusters.source_cfg,
        &source_topic,
        &src,
        "zones/a.rpz",
        100_000,
        &["old-host"],
    );
    let out = clusters.relay_until_idle(
        &source_topic,
        &[
            "--to-topic",
            &destination_topic,
            "--to-host",
            "gamma",
            "--to-host",
            "delta",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    for (_, _, headers) in messages(&clusters.destination, &destination_topic) {
        assert_eq!(
            headers,
            [
                ("hostname".to_string(), "gamma".to_string()),
                ("hostname".to_string(), "delta".to_string())
            ]
        );
    }
    let gamma = clusters.download(&destination_topic, "gamma", &["--host", "gamma"]);
    assert_eq!(files_under(&gamma), ["zones/a.rpz"]);
    let old = clusters.download(&destination_topic, "old", &["--host", "old-host"]);
    assert!(files_under(&old).is_empty());
}

#[test]
fn start_up_refusals_are_one_line_each() {
    let clusters = TwoClusters::start();
    let source_topic = unique_topic("refuse-src");
    clusters.source.create_topic(&source_topic, 1);
    let one_line = |out: &Output, needles: &[&str]| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        eprintln!("{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        for needle in needles {
            assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
        }
    };

    let started = Instant::now();
    let out = clusters.relay_until_idle(
        &source_topic,
        &["--to-topic", "no-such-topic", "--connect-timeout", "5"],
    );
    one_line(&out, &["no-such-topic", "create it there", "--to-topic"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let out = clusters.relay_until_idle(&source_topic, &["--route", "(unclosed=t"]);
    one_line(&out, &["--route", "(unclosed=t", "unclosed"]);
    let out = clusters.relay_until_idle(&source_topic, &["--route", "no-topic-here"]);
    one_line(&out, &["REGEX=TOPIC"]);

    // An encrypted source never goes out in the clear.
    let node_cfg = clusters.path("node.config");
    std::fs::write(
        &node_cfg,
        std::fs::read_to_string(&clusters.source_cfg).unwrap()
            + "\n[kafkacrypto]\nnode_id = relay\n",
    )
    .unwrap();
    common::provision_node(clusters.work.path(), "relay", "prodcon", &source_topic);
    let out = openmsi_std()
        .current_dir(clusters.work.path())
        .args(["relay", "--config"])
        .arg(&node_cfg)
        .args([
            "--topic",
            &source_topic,
            "--to-topic",
            "elsewhere",
            "--to-config",
        ])
        .arg(&clusters.destination_cfg)
        .output()
        .unwrap();
    one_line(&out, &["[kafkacrypto]", "in the clear"]);
}
