//! The benchmark's "raw" baseline (see `bench/README.md`): librdkafka alone, through the same
//! rdkafka crate openmsi uses, moving a file's bytes as plain fixed-size messages — no chunk
//! format, no key, no hashing, no staging or fsync. What openmsi does on top of this is its
//! overhead; the ratio openmsi/raw says how close it gets to librdkafka's ceiling.
//!
//! ```text
//! raw_kafka produce FILE --brokers B --topic T [--chunk-size N] [-X key=value]...
//! raw_kafka consume OUT  --brokers B --topic T --group G --bytes N [-X key=value]...
//! raw_kafka relay --brokers B --topic T --group G --to-brokers B2 --to-topic T2 --messages N
//! ```
//!
//! `produce` exits once the broker acknowledged every message. `consume` subscribes in a
//! consumer group (as openmsi does, so both pay for the group join), writes the payloads in
//! partition order to OUT (the topic must have one partition) and exits after `--bytes` bytes.
//! `relay` consumes in a group and produces every message (key, value, headers) to the same
//! partition of another topic, on another cluster, with the producer settings openmsi uses,
//! and exits once N messages are acknowledged: the ceiling for `openmsi relay`
//! (`bench/relay.sh`). All print one summary line; the benchmarks time them from outside.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Plain librdkafka producer/consumer for the benchmark baseline.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send FILE as consecutive messages of --chunk-size bytes.
    Produce(ProduceArgs),
    /// Receive --bytes bytes of messages and write them to OUT in order.
    Consume(ConsumeArgs),
    /// Consume and produce every message to another topic until --messages are acknowledged.
    Relay(RelayArgs),
}

#[derive(Debug, Args)]
struct RelayArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    group: String,
    /// bootstrap.servers of the destination.
    #[arg(long)]
    to_brokers: String,
    #[arg(long)]
    to_topic: String,
    /// Stop once this many messages are acknowledged by the destination.
    #[arg(long)]
    messages: u64,
}

/// Options every client takes.
#[derive(Debug, Args)]
struct Common {
    /// bootstrap.servers
    #[arg(long)]
    brokers: String,
    /// Topic to use (one partition for `consume`).
    #[arg(long)]
    topic: String,
    /// Extra librdkafka properties, applied last (the benchmark passes the config file's).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Give up after this many seconds without progress (the broker may have lost messages).
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    file: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Bytes per message (openmsi's default chunk size).
    #[arg(long, default_value_t = 512 * 1024)]
    chunk_size: usize,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    out: PathBuf,
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    group: String,
    /// Stop after this many payload bytes.
    #[arg(long)]
    bytes: u64,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Produce(args) => produce(&args),
        Cmd::Consume(args) => consume(&args),
        Cmd::Relay(args) => relay(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw_kafka: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn config(common: &Common, defaults: &[(&str, String)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &common.brokers);
    for (k, v) in defaults {
        cfg.set(*k, v);
    }
    for (k, v) in &common.properties {
        cfg.set(k, v);
    }
    cfg
}

/// Counts acknowledgements; the first failure is kept to report.
#[derive(Default)]
struct DeliveryCounter {
    /// Messages the broker acknowledged.
    acked: AtomicU64,
    /// Messages that failed for good.
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acked.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                eprintln!("raw_kafka: delivery failed: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The producer settings openmsi picks by default (`kafka::producer::producer_defaults`), so
/// the ratio measures openmsi's own work and not a different librdkafka setup.
fn producer_defaults(max_message: usize) -> [(&'static str, String); 5] {
    let max_message = max_message.max(1_000_000).to_string();
    [
        ("acks", "all".to_string()),
        ("enable.idempotence", "true".to_string()),
        ("queue.buffering.max.kbytes", (32 * 1024).to_string()),
        ("message.max.bytes", max_message.clone()),
        ("batch.size", max_message),
    ]
}

fn produce(args: &ProduceArgs) -> BoxResult<()> {
    let started = Instant::now();
    let defaults = producer_defaults(args.chunk_size + 1024);
    let producer: BaseProducer<DeliveryCounter> =
        config(&args.common, &defaults).create_with_context(DeliveryCounter::default())?;
    let mut file = File::open(&args.file)?;
    let mut buf = vec![0u8; args.chunk_size];
    let stall = Duration::from_secs(args.common.stall_timeout);
    let (mut sent, mut bytes) = (0u64, 0u64);
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut record = BaseRecord::<(), [u8]>::to(&args.common.topic).payload(&buf[..n]);
        let mut waiting_since = Instant::now();
        let mut acked_before = producer.context().acked.load(Ordering::Relaxed);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                    let acked = producer.context().acked.load(Ordering::Relaxed);
                    if acked > acked_before {
                        acked_before = acked;
                        waiting_since = Instant::now();
                    } else if waiting_since.elapsed() > stall {
                        return Err("the producer queue stayed full: no acknowledgements".into());
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        sent += 1;
        bytes += n as u64;
        if n < buf.len() {
            break;
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let ctx = producer.context();
    let (acked, failed) = (
        ctx.acked.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if acked != sent || failed > 0 {
        return Err(format!("{acked} of {sent} messages acknowledged, {failed} failed").into());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {bytes} bytes in {sent} messages in {secs:.2} s ({:.1} MB/s)",
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Says on stderr when the group gave this consumer its partitions: the benchmark's end-to-end
/// case starts the producer only once the consumer is ready, as it does for the other tools.
struct AssignLogger;

impl ClientContext for AssignLogger {}

impl ConsumerContext for AssignLogger {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            eprintln!("raw_kafka: partitions assigned");
        }
    }
}

fn consume(args: &ConsumeArgs) -> BoxResult<()> {
    let started = Instant::now();
    // openmsi's consumer defaults (src/download/mod.rs) and the benchmark's fetch wait.
    let defaults = [
        ("group.id", args.group.clone()),
        ("auto.offset.reset", "earliest".to_string()),
        ("enable.auto.commit", "false".to_string()),
        ("max.partition.fetch.bytes", (16u32 << 20).to_string()),
    ];
    let consumer: BaseConsumer<AssignLogger> =
        config(&args.common, &defaults).create_with_context(AssignLogger)?;
    consumer.subscribe(&[&args.common.topic])?;
    let mut out = File::create(&args.out)?;
    let stall = Duration::from_secs(args.common.stall_timeout);
    let (mut bytes, mut messages) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while bytes < args.bytes {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let payload = msg.payload().unwrap_or_default();
                out.write_all(payload)?;
                bytes += payload.len() as u64;
                messages += 1;
                last_progress = Instant::now();
            }
            Some(Err(e)) => eprintln!("raw_kafka: consumer error: {e}"),
            None if last_progress.elapsed() > stall => {
                return Err(format!(
                    "no message for {} s after {bytes} of {} bytes",
                    stall.as_secs(),
                    args.bytes
                )
                .into());
            }
            None => {}
        }
    }
    out.flush()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "consumed {bytes} bytes in {messages} messages in {secs:.2} s ({:.1} MB/s)",
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}

fn relay(args: &RelayArgs) -> BoxResult<()> {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    let started = Instant::now();
    let consumer_defaults = [
        ("group.id", args.group.clone()),
        ("auto.offset.reset", "earliest".to_string()),
        ("enable.auto.commit", "false".to_string()),
        ("max.partition.fetch.bytes", (16u32 << 20).to_string()),
    ];
    let consumer: BaseConsumer<AssignLogger> =
        config(&args.common, &consumer_defaults).create_with_context(AssignLogger)?;
    consumer.subscribe(&[&args.common.topic])?;
    let mut to = ClientConfig::new();
    to.set("bootstrap.servers", &args.to_brokers);
    for (k, v) in producer_defaults(16 << 20) {
        to.set(k, v);
    }
    for (k, v) in &args.common.properties {
        to.set(k, v);
    }
    let producer: BaseProducer<DeliveryCounter> =
        to.create_with_context(DeliveryCounter::default())?;
    let stall = Duration::from_secs(args.common.stall_timeout);
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while sent < args.messages {
        producer.poll(Duration::ZERO);
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            if last_progress.elapsed() > stall {
                return Err(format!("no message for {} s after {sent}", stall.as_secs()).into());
            }
            continue;
        };
        let msg = match polled {
            Ok(msg) => msg,
            Err(e) => {
                eprintln!("raw_kafka: consumer error: {e}");
                continue;
            }
        };
        last_progress = Instant::now();
        let payload = msg.payload().unwrap_or_default();
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.to_topic)
            .partition(msg.partition())
            .payload(payload);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(headers) = msg.headers() {
            let owned = headers.iter().fold(OwnedHeaders::new(), |h, header| {
                h.insert(Header {
                    key: header.key,
                    value: header.value,
                })
            });
            record = record.headers(owned);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
        bytes += payload.len() as u64;
    }
    producer.flush(Duration::from_secs(300))?;
    let ctx = producer.context();
    let (acked, failed) = (
        ctx.acked.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if acked != sent || failed > 0 {
        return Err(format!("{acked} of {sent} messages acknowledged, {failed} failed").into());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "relayed {bytes} bytes in {sent} messages in {secs:.2} s ({:.1} MB/s)",
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}
