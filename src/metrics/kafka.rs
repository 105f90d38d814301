//! Broker connection state and consumer lag, from librdkafka's statistics: every Kafka client
//! reports them every [`STATISTICS_INTERVAL_MS`] while metrics are on, and a scrape shows the
//! latest report of each client.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use rdkafka::statistics::Statistics;

use super::exposition::{Exposition, Kind};

/// How often librdkafka reports (`statistics.interval.ms`) when metrics are on: Prometheus
/// scrapes every 15 s by default, so lag is at most this much older than the scrape.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// The latest report of one client.
#[derive(Debug, Default, Clone)]
struct ClientReport {
    /// "producer" or "consumer".
    kind: String,
    /// Broker (host:port/id) → connected.
    brokers: BTreeMap<String, bool>,
    /// (topic, partition) → messages behind the end, for the partitions this consumer reads.
    lag: BTreeMap<(String, i32), i64>,
}

fn reports() -> &'static Mutex<BTreeMap<String, ClientReport>> {
    static REPORTS: OnceLock<Mutex<BTreeMap<String, ClientReport>>> = OnceLock::new();
    REPORTS.get_or_init(Default::default)
}

/// Keeps a client's report (called from the client contexts' statistics callback).
pub fn record(statistics: &Statistics) {
    let brokers = statistics
        .brokers
        .values()
        // Bootstrap entries (node id -1) stand for the configured addresses, not brokers.
        .filter(|b| b.nodeid >= 0)
        .map(|b| (b.nodename.clone(), b.state == "UP"))
        .collect();
    let mut lag = BTreeMap::new();
    for (topic, t) in &statistics.topics {
        for p in t.partitions.values() {
            // Partition -1 is librdkafka's internal queue; only partitions read are reported.
            if p.partition >= 0 && p.desired && p.consumer_lag >= 0 {
                lag.insert((topic.clone(), p.partition), p.consumer_lag);
            }
        }
    }
    let report = ClientReport {
        kind: statistics.client_type.clone(),
        brokers,
        lag,
    };
    crate::sync::lock(reports()).insert(statistics.name.clone(), report);
}

/// Writes the Kafka families.
pub fn write(out: &mut Exposition) {
    let reports = crate::sync::lock(reports()).clone();
    out.family(
        "openmsi_broker_connected",
        "1 while this process's Kafka client of this kind is connected to the broker, 0 while \
         it is not (reported every 5 s).",
        Kind::Gauge,
    );
    // Several clients of one kind (a key exchange's and the data's) reach the same brokers: a
    // broker counts as connected when any of them is.
    let mut connected: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for report in reports.values() {
        for (broker, up) in &report.brokers {
            *connected
                .entry((report.kind.as_str(), broker.as_str()))
                .or_default() |= *up;
        }
    }
    for ((client, broker), up) in connected {
        out.sample(
            "openmsi_broker_connected",
            &[("client", client), ("broker", broker)],
            f64::from(u8::from(up)),
        );
    }
    out.family(
        "openmsi_consumer_lag_messages",
        "Messages on the partition after the group's committed offset (0 once caught up; \
         reported every 5 s).",
        Kind::Gauge,
    );
    let mut lag: BTreeMap<&(String, i32), i64> = BTreeMap::new();
    for report in reports.values() {
        for (at, behind) in &report.lag {
            lag.insert(at, *behind);
        }
    }
    for ((topic, partition), behind) in lag {
        out.sample(
            "openmsi_consumer_lag_messages",
            &[("topic", topic), ("partition", &partition.to_string())],
            behind as f64,
        );
    }
}
