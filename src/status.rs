//! `openmsi status`: a deployment seen from any machine that reaches the cluster.
//!
//! - per topic: its consumer groups, their lag per partition and when they last committed
//!   (openmsi stamps each commit's metadata; other programs' commits show no time);
//! - per program id on the heartbeat topic (openmsi's and OpenMSIStream's): its last
//!   heartbeat and the counts it reported, stale when older than a few of its intervals;
//! - the openmsi services installed on this machine (`manage-service list`).
//!
//! A table on a terminal, `--json` for scripts; exit code 1 when something is stale or a group
//! lags beyond `--max-lag`, so it can be a cron or monitoring check.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::admin::topic::{self, GroupReport};
use crate::admin::Admin;
use crate::cli::StatusArgs;
use crate::kafka::telemetry::parse_iso8601;

/// Heartbeats read back per partition: enough to see every program of a lab several times.
const HEARTBEATS_PER_PARTITION: i64 = 2000;
/// Without two heartbeats of a program to measure its interval: three of openmsi's default
/// intervals (900 s).
const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2700);
/// A program is stale after this many of its intervals without a heartbeat.
const STALE_INTERVALS: u32 = 3;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Status {
    /// When it was taken (Unix seconds).
    pub at: u64,
    pub topics: Vec<TopicStatus>,
    /// None when no heartbeat topic was given.
    pub heartbeat_topic: Option<String>,
    pub programs: Vec<ProgramStatus>,
    pub services: Vec<ServiceStatus>,
    /// What made the exit code 1 (empty: all well).
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TopicStatus {
    pub topic: String,
    /// Messages stored (end offset minus start offset, over all partitions).
    pub messages: i64,
    pub groups: Vec<GroupReport>,
    /// Why groups could not be listed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups_unavailable: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ProgramStatus {
    pub program_id: String,
    /// Last heartbeat (Unix seconds).
    pub last_heartbeat: f64,
    /// Seconds since then.
    pub age_seconds: f64,
    /// Seconds between its last two heartbeats, when two were seen.
    pub interval_seconds: Option<f64>,
    pub stale: bool,
    /// The counts of its last heartbeat (messages and bytes since the one before).
    pub counts: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub scope: String,
    pub state: String,
    pub running: bool,
    pub description: String,
}

/// `openmsi status`.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config::LoadedConfig::load(&args.admin.config)?;
    let admin = Admin::connect(config, Duration::from_secs(args.admin.connect_timeout))?;
    let status = gather(&admin, &args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(if status.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn gather(admin: &Admin, args: &StatusArgs) -> anyhow::Result<Status> {
    let now = SystemTime::now();
    let names = if args.topics.is_empty() {
        topic::list(admin)?
            .into_iter()
            .map(|t| t.name)
            .filter(|n| is_data_topic(n) && Some(n) != args.heartbeat_topic.as_ref())
            .collect()
    } else {
        args.topics.clone()
    };
    let mut topics = Vec::new();
    let mut problems = Vec::new();
    for name in names {
        let (partitions, groups) = topic::offsets_and_groups(admin, &name)?;
        let (groups, groups_unavailable) = topic::split_groups(groups);
        let messages = partitions
            .iter()
            .map(|p| p.end_offset - p.start_offset)
            .sum();
        if let Some(max) = args.max_lag {
            for g in groups.iter().filter(|g| g.total_lag > max) {
                problems.push(format!(
                    "group {} lags {} messages behind on topic {name} (more than --max-lag {max})",
                    g.group, g.total_lag
                ));
            }
        }
        topics.push(TopicStatus {
            topic: name,
            messages,
            groups,
            groups_unavailable,
        });
    }
    let programs = match &args.heartbeat_topic {
        Some(t) => programs(admin, t, now, args.stale_after)?,
        None => Vec::new(),
    };
    for p in programs.iter().filter(|p| p.stale) {
        problems.push(format!(
            "program {} last sent a heartbeat {:.0} s ago",
            p.program_id, p.age_seconds
        ));
    }
    let services = crate::manage::installed(false)
        .into_iter()
        .map(|(name, scope, state)| ServiceStatus {
            name,
            scope: scope.to_string(),
            state: state.state,
            running: state.running,
            description: state.description,
        })
        .collect();
    Ok(Status {
        at: unix(now) as u64,
        topics,
        heartbeat_topic: args.heartbeat_topic.clone(),
        programs,
        services,
        problems,
    })
}

/// Not a key-exchange topic (`R.keys`, `R.reqs`, `R.subs`) nor a broker-internal one.
fn is_data_topic(name: &str) -> bool {
    !name.starts_with("__")
        && ![".keys", ".reqs", ".subs"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What one program's heartbeats say.
#[derive(Default)]
struct Heard {
    last: f64,
    previous: Option<f64>,
    counts: BTreeMap<String, serde_json::Value>,
}

/// Reads the recent heartbeats on `topic` (keys `<program_id>_heartbeat`, JSON values with an
/// ISO-8601 `timestamp`, as openmsi and OpenMSIStream send them).
fn programs(
    admin: &Admin,
    topic_name: &str,
    now: SystemTime,
    stale_after: Option<f64>,
) -> anyhow::Result<Vec<ProgramStatus>> {
    let metadata = admin.metadata(Some(topic_name))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic_name && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        anyhow::bail!(
            "heartbeat topic `{topic_name}` does not exist on {} (`openmsi topic list` shows the topics)",
            admin.brokers
        );
    }
    let reader = topic::reader(admin, None)?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = reader
            .fetch_watermarks(topic_name, p, admin.timeout)
            .with_context(|| format!("reading the offsets of {topic_name}[{p}]"))?;
        if high > low {
            let from = (high - HEARTBEATS_PER_PARTITION).max(low);
            assignment.add_partition_offset(topic_name, p, Offset::Offset(from))?;
            ends.insert(p, high);
        }
    }
    let mut heard: BTreeMap<String, Heard> = BTreeMap::new();
    if !ends.is_empty() {
        reader.assign(&assignment)?;
        let deadline = Instant::now() + admin.timeout;
        while !ends.is_empty() && Instant::now() < deadline {
            let Some(message) = reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            let Ok(message) = message else { continue };
            if ends
                .get(&message.partition())
                .is_some_and(|&end| message.offset() + 1 >= end)
            {
                ends.remove(&message.partition());
            }
            let key = message.key().map(String::from_utf8_lossy);
            let Some(id) = key.as_deref().and_then(|k| k.strip_suffix("_heartbeat")) else {
                continue;
            };
            let Some(value) = message
                .payload()
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            else {
                continue;
            };
            let Some(at) = value
                .get("timestamp")
                .and_then(|t| t.as_str())
                .and_then(parse_iso8601)
            else {
                continue;
            };
            let at = unix(at);
            let entry = heard.entry(id.to_string()).or_default();
            if at >= entry.last {
                if entry.last > 0.0 {
                    entry.previous = Some(entry.last);
                }
                entry.last = at;
                entry.counts = value
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| k.as_str() != "timestamp")
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
    }
    let now = unix(now);
    Ok(heard
        .into_iter()
        .map(|(program_id, h)| {
            let interval = h.previous.map(|p| h.last - p).filter(|i| *i > 0.0);
            let limit = stale_after.unwrap_or_else(|| {
                interval.map_or(DEFAULT_STALE_AFTER.as_secs_f64(), |i| {
                    i * f64::from(STALE_INTERVALS)
                })
            });
            let age = (now - h.last).max(0.0);
            ProgramStatus {
                program_id,
                last_heartbeat: h.last,
                age_seconds: age,
                interval_seconds: interval,
                stale: age > limit,
                counts: h.counts,
            }
        })
        .collect())
}

/// "12 s ago", "3.2 min ago", "5.0 h ago".
fn ago(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s ago")
    } else if seconds < 7200.0 {
        format!("{:.1} min ago", seconds / 60.0)
    } else {
        format!("{:.1} h ago", seconds / 3600.0)
    }
}

/// The report as text.
pub fn render(status: &Status) -> String {
    let now = status.at as f64;
    let mut out = String::new();
    for t in &status.topics {
        out.push_str(&format!(
            "topic {} ({} messages stored)\n",
            t.topic, t.messages
        ));
        if let Some(why) = &t.groups_unavailable {
            out.push_str(&format!("  consumer groups could not be listed: {why}\n"));
        } else if t.groups.is_empty() {
            out.push_str("  no consumer group has committed on it\n");
        }
        for g in &t.groups {
            let committed = g.last_commit.map_or_else(
                || "last commit time unknown".to_string(),
                |at| format!("last commit {}", ago(now - at as f64)),
            );
            let per: Vec<String> = g
                .partitions
                .iter()
                .map(|p| format!("[{}] {}", p.partition, p.lag))
                .collect();
            out.push_str(&format!(
                "  group {:<30} lag {:>8}  ({})  {committed}\n",
                g.group,
                g.total_lag,
                per.join(" ")
            ));
        }
    }
    if let Some(topic) = &status.heartbeat_topic {
        out.push_str(&format!("\nprograms on {topic}\n"));
        if status.programs.is_empty() {
            out.push_str("  no heartbeats\n");
        }
        for p in &status.programs {
            let counts: Vec<String> = p.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!(
                "  {:<30} {:<6} last heartbeat {}  {}\n",
                p.program_id,
                if p.stale { "STALE" } else { "ok" },
                ago(p.age_seconds),
                counts.join(" ")
            ));
        }
    }
    out.push_str("\nservices on this machine\n");
    if status.services.is_empty() {
        out.push_str("  none\n");
    }
    for s in &status.services {
        out.push_str(&format!(
            "  {:<24} {:<6} {:<10} {}\n",
            s.name, s.scope, s.state, s.description
        ));
    }
    if status.problems.is_empty() {
        out.push_str("\nall well\n");
    } else {
        out.push_str("\nproblems:\n");
        for p in &status.problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_exchange_and_internal_topics_are_not_data_topics() {
        assert!(is_data_topic("lab"));
        assert!(!is_data_topic("lab.keys"));
        assert!(!is_data_topic("lab.reqs"));
        assert!(!is_data_topic("lab.subs"));
        assert!(!is_data_topic("__consumer_offsets"));
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(5.2), "5 s ago");
        assert_eq!(ago(600.0), "10.0 min ago");
        assert_eq!(ago(18_000.0), "5.0 h ago");
    }
}
