//! Proves the test harness, and pins down the tansu 0.6.0 behaviour the rest of the suite and the
//! product rely on: persistence across restarts (sqlite), explicit partitions, no topic
//! auto-creation, and what happens to an idempotent producer. If tansu is upgraded, these tests
//! say which assumptions changed.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{consumer_config, producer_config, unique_topic, Broker, Storage};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Collects delivery reports: `Ok((partition, offset))` or the error's text.
#[derive(Default)]
struct Deliveries(Mutex<Vec<Result<(i32, i64), KafkaError>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(msg) => Ok((msg.partition(), msg.offset())),
            Err((err, _)) => Err(err.clone()),
        };
        self.0.lock().unwrap().push(report);
    }
}

/// Produces `(partition, key, value)` records and returns their delivery reports, in order of
/// arrival, after `flush`.
fn produce(
    config: &ClientConfig,
    topic: &str,
    records: &[(Option<i32>, String, String)],
) -> Vec<Result<(i32, i64), KafkaError>> {
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .expect("producer");
    for (partition, key, value) in records {
        let mut record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str());
        if let Some(p) = partition {
            record = record.partition(*p);
        }
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    // flush() reports a timeout as an error; the reports tell the full story either way.
    let _ = producer.flush(TIMEOUT);
    let reports = std::mem::take(&mut *producer.context().0.lock().unwrap());
    reports
}

/// Reads `partition` of `topic` from the beginning until `want` messages arrived (or TIMEOUT):
/// `(offset, key, value)`.
fn read(broker: &Broker, topic: &str, partition: i32, want: usize) -> Vec<(i64, String, String)> {
    let consumer: BaseConsumer = consumer_config(broker, &unique_topic("smoke-group"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while got.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    got
}

fn records(n: usize, tag: &str) -> Vec<(Option<i32>, String, String)> {
    (0..n)
        .map(|i| (None, format!("key-{i}"), format!("{tag}-value-{i}")))
        .collect()
}

#[test]
fn sqlite_broker_keeps_messages_across_restart() {
    let mut broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("smoke");
    broker.create_topic(&topic, 1);

    let reports = produce(&producer_config(&broker), &topic, &records(5, "a"));
    let offsets: Vec<i64> = reports
        .iter()
        .map(|r| r.as_ref().expect("delivered").1)
        .collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);

    let expected: Vec<(i64, String, String)> = (0..5)
        .map(|i| (i, format!("key-{i}"), format!("a-value-{i}")))
        .collect();
    assert_eq!(read(&broker, &topic, 0, 5), expected);

    let started = Instant::now();
    broker.restart();
    eprintln!(
        "tansu restart (stop + start + listening) took {:?}",
        started.elapsed()
    );
    assert_eq!(
        read(&broker, &topic, 0, 5),
        expected,
        "messages after restart"
    );

    // Offsets continue after a restart; they do not start over.
    let reports = produce(&producer_config(&broker), &topic, &records(1, "b"));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].as_ref().expect("delivered after restart").1, 5);

    // A crash (SIGKILL) loses nothing that was acknowledged either.
    broker.kill();
    broker.restart();
    let all = read(&broker, &topic, 0, 6);
    assert_eq!(all.len(), 6, "messages after SIGKILL + restart: {all:?}");
    assert_eq!(all[5], (5, "key-0".into(), "b-value-0".into()));
}

#[test]
fn memory_broker_round_trip() {
    let broker = Broker::start(Storage::Memory);
    let topic = unique_topic("smoke-mem");
    broker.create_topic(&topic, 1);
    let reports = produce(&producer_config(&broker), &topic, &records(3, "m"));
    assert!(reports.iter().all(|r| r.is_ok()), "{reports:?}");
    let got = read(&broker, &topic, 0, 3);
    assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn explicit_partition_of_three() {
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("smoke-p3");
    broker.create_topic(&topic, 3);

    let consumer: BaseConsumer = consumer_config(&broker, "meta").create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 3);

    let recs: Vec<_> = (0..3)
        .flat_map(|p| (0..2).map(move |i| (Some(p), format!("p{p}-k{i}"), format!("p{p}-v{i}"))))
        .collect();
    let reports = produce(&producer_config(&broker), &topic, &recs);
    let mut delivered: Vec<(i32, i64)> =
        reports.into_iter().map(|r| r.expect("delivered")).collect();
    delivered.sort();
    assert_eq!(delivered, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);

    let got = read(&broker, &topic, 2, 2);
    assert_eq!(
        got,
        [
            (0, "p2-k0".into(), "p2-v0".into()),
            (1, "p2-k1".into(), "p2-v1".into())
        ]
    );
    let (low, high) = consumer
        .fetch_watermarks(&topic, 2, TIMEOUT)
        .expect("watermarks");
    assert_eq!((low, high), (0, 2));
}

#[test]
fn missing_topic_is_not_auto_created() {
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("smoke-missing");
    let consumer: BaseConsumer = consumer_config(&broker, "meta")
        .set("allow.auto.create.topics", "true")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .expect("metadata request");
    let topics = metadata.topics();
    assert_eq!(topics.len(), 1);
    // Observed: Some(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART), no partitions.
    let error = topics[0].error().map(RDKafkaErrorCode::from);
    assert_eq!(error, Some(RDKafkaErrorCode::UnknownTopicOrPartition));
    assert!(topics[0].partitions().is_empty());
    // Asking again still finds nothing: the request above did not create it.
    let again = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .expect("metadata request");
    assert!(again.topics()[0].partitions().is_empty());

    // A producer learns it only after topic.metadata.propagation.max.ms (default 30 s, and
    // message.timeout.ms may expire first): lower it to fail fast with the broker's error,
    // "Message production error: UnknownTopicOrPartition (Broker: Unknown topic or partition)".
    let mut config = producer_config(&broker);
    config.set("topic.metadata.propagation.max.ms", "1000");
    let started = Instant::now();
    let reports = produce(&config, &topic, &records(1, "x"));
    assert!(
        matches!(
            reports.as_slice(),
            [Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition
            ))]
        ),
        "{reports:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// tansu 0.6.0 grants producer ids (InitProducerId), so `enable.idempotence=true` works, and on
/// sqlite the producer state survives a broker restart: the same producer keeps going.
/// (On the memory engine a restart forgets producer ids: the producer then loops on
/// UnknownProducerId until message.timeout.ms. Nothing restarts memory brokers in tests.)
#[test]
fn idempotent_producer_works_and_survives_restart() {
    let mut broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("smoke-idem");
    broker.create_topic(&topic, 1);
    let producer: BaseProducer<Deliveries> = producer_config(&broker)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(Deliveries::default())
        .expect("idempotent producer");
    let send = |tag: &str| {
        for i in 0..3 {
            let (key, value) = (format!("key-{i}"), format!("{tag}-value-{i}"));
            producer
                .send(BaseRecord::to(&topic).key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .expect("enqueue");
        }
        producer.flush(TIMEOUT).expect("flush");
    };
    send("before");
    broker.restart();
    send("after");

    let reports = std::mem::take(&mut *producer.context().0.lock().unwrap());
    let offsets: Vec<i64> = reports
        .iter()
        .map(|r| r.as_ref().expect("delivered").1)
        .collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4, 5]);
    assert!(producer.client().fatal_error().is_none());
    let got = read(&broker, &topic, 0, 6);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[3].2, "after-value-0");
}

/// Consumer groups work on sqlite: committed offsets are kept, also across a restart, so a
/// restarted consumer resumes where it committed.
#[test]
fn committed_offsets_survive_restart() {
    let mut broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("smoke-group");
    broker.create_topic(&topic, 1);
    produce(&producer_config(&broker), &topic, &records(10, "g"));
    let group = unique_topic("smoke-group");

    // Reads `n` messages as a member of `group`, committing each one; returns their offsets.
    let read_and_commit = |broker: &Broker, n: usize| -> Vec<i64> {
        let consumer: BaseConsumer = consumer_config(broker, &group).create().expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut offsets = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while offsets.len() < n && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    offsets.push(m.offset());
                    consumer
                        .commit_message(&m, CommitMode::Sync)
                        .expect("commit");
                }
                Some(Err(e)) => panic!("consume error: {e}"),
                None => {}
            }
        }
        offsets
    };
    assert_eq!(read_and_commit(&broker, 4), [0, 1, 2, 3]);
    broker.restart();
    assert_eq!(read_and_commit(&broker, 6), [4, 5, 6, 7, 8, 9]);
}

/// Reference configs often set `compression.type`; these codecs work on sqlite. (snappy does
/// not: produce is acknowledged but fetching it drops the connection; zstd is not compiled
/// into our librdkafka.)
#[test]
fn gzip_and_lz4_work_on_sqlite() {
    let broker = Broker::start(Storage::Sqlite);
    for codec in ["gzip", "lz4"] {
        let topic = unique_topic(codec);
        broker.create_topic(&topic, 1);
        let mut config = producer_config(&broker);
        config.set("compression.type", codec);
        // Compressible values, or librdkafka would send them uncompressed.
        let recs: Vec<_> = (0..3)
            .map(|i| (None, format!("k{i}"), "z".repeat(20_000)))
            .collect();
        let reports = produce(&config, &topic, &recs);
        assert!(reports.iter().all(|r| r.is_ok()), "{codec}: {reports:?}");
        let got = read(&broker, &topic, 0, 3);
        assert_eq!(got.len(), 3, "{codec}");
        assert!(got.iter().all(|m| m.2.len() == 20_000), "{codec}");
    }
}

#[test]
fn broker_script_refuses_a_port_in_use_and_topics_are_idempotent() {
    let broker = Broker::start(Storage::Memory);
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker.sh"))
        .args(["start", "--memory", "--port", &broker.port().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");

    let topic = unique_topic("smoke-twice");
    broker.create_topic(&topic, 2);
    broker.create_topic(&topic, 2); // would panic if the second call failed
}

/// The reference peer works against tansu with the harness's config: its uploader's chunks are
/// rebuilt by its downloader, byte for byte. Interoperability tests build on exactly this.
#[test]
fn reference_round_trip_through_tansu() {
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("smoke-ref");
    broker.create_topic(&topic, 1);
    let work = tempfile::tempdir().unwrap();
    let config = common::write_config(work.path(), &broker);
    let source = work.path().join("source/sample.bin");
    // Three chunks of the default 512 KiB.
    common::write_random_file(&source, 1_300_000, 7);

    let upload = common::reference_command("UploadDataFile")
        .arg(&source)
        .arg("--config")
        .arg(&config)
        .args(["--topic_name", &topic])
        .current_dir(work.path())
        .output()
        .expect("run UploadDataFile");
    let upload_log = String::from_utf8_lossy(&upload.stdout).into_owned()
        + &String::from_utf8_lossy(&upload.stderr);
    // The reference exits 0 even when chunks failed, so its output is checked too.
    assert!(
        upload.status.success() && !upload_log.contains("Traceback"),
        "{upload_log}"
    );

    let out = work.path().join("out");
    let mut download = common::KillOnDrop(
        common::reference_command("DataFileDownloadDirectory")
            .arg(&out)
            .arg("--config")
            .arg(&config)
            .args(["--topic_name", &topic])
            .current_dir(work.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run DataFileDownloadDirectory"),
    );
    let rebuilt = out.join("sample.bin");
    let expected = common::sha512_file(&source);
    let done = common::wait_for(Duration::from_secs(60), || {
        rebuilt.exists() && common::sha512_file(&rebuilt) == expected
    });
    use std::io::Write as _;
    let _ = download.stdin.take().unwrap().write_all(b"q\n");
    assert!(
        done,
        "the reference downloader did not rebuild {}",
        rebuilt.display()
    );
}

/// The harness's own helpers: deterministic content and the hash every test compares.
#[test]
fn harness_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("sub/b"),
        dir.path().join("c"),
    );
    common::write_random_file(&a, 100_003, 1);
    common::write_random_file(&b, 100_003, 1);
    common::write_random_file(&c, 100_003, 2);
    assert_eq!(std::fs::metadata(&a).unwrap().len(), 100_003);
    assert_eq!(common::sha512_file(&a), common::sha512_file(&b));
    assert_ne!(common::sha512_file(&a), common::sha512_file(&c));
    let empty = dir.path().join("empty");
    common::write_random_file(&empty, 0, 1);
    assert!(common::sha512_file(&empty).starts_with("cf83e1357eefb8bdf1542850d66d8007"));
    assert_ne!(unique_topic("t"), unique_topic("t"));
    assert!(common::wait_for(Duration::from_secs(1), || true));
    assert!(!common::wait_for(Duration::from_millis(50), || false));
}
