//! `openmsi topic create|list|describe|delete`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail, Context};
use rdkafka::admin::{NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::MetadataTopic;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::Admin;
use crate::kafka::client::{client_config, create_client};
use crate::kafka::ConsumerLogContext;
use crate::upload::send::max_message_bytes;

/// The key-exchange sub-topics of an encrypted topic (KafkaCrypto's layout): `.keys` carries
/// producers' wrapped topic keys, `.reqs` consumers' key requests, `.subs` their subscriptions.
pub const ENCRYPTION_SUBTOPICS: [&str; 3] = ["keys", "reqs", "subs"];

/// Room an encrypted chunk message needs beyond a plaintext one (nonce, MAC, key index and
/// msgpack framing take well under 1 KiB).
const ENCRYPTION_MARGIN: usize = 4096;

/// What `topic create` asks for.
pub struct CreateRequest {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `KEY=VALUE` topic settings from the command line.
    pub settings: Vec<(String, String)>,
    /// Also create the key-exchange sub-topics.
    pub encrypted: bool,
    /// The chunk size uploads will use: `max.message.bytes` must fit a chunk message.
    pub chunk_size: usize,
}

/// The topic settings to create `request.name` with: the user's, plus `max.message.bytes`
/// large enough for a chunk message unless the user set a value at least that large.
pub fn topic_settings(request: &CreateRequest) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings = request.settings.clone();
    let needed = max_message_bytes(request.chunk_size, None)
        + if request.encrypted {
            ENCRYPTION_MARGIN
        } else {
            0
        };
    match settings.iter().find(|(k, _)| k == "max.message.bytes") {
        Some((_, v)) => {
            let given: usize = v
                .parse()
                .map_err(|_| anyhow!("--config max.message.bytes={v}: not a number of bytes"))?;
            if given < needed {
                bail!(
                    "--config max.message.bytes={given} is too small for chunks of {} bytes: a chunk message can be {needed} bytes. Raise it, or use a smaller --chunk-size",
                    request.chunk_size
                );
            }
        }
        None => settings.push(("max.message.bytes".into(), needed.to_string())),
    }
    Ok(settings)
}

/// Creates the topic (and the sub-topics of an encrypted one). A topic that already exists
/// with the same partitions and settings is fine; with other ones, the differences are the
/// error.
pub async fn create(admin: &Admin, request: &CreateRequest) -> anyhow::Result<()> {
    let settings = topic_settings(request)?;
    ensure_topic(
        admin,
        &request.name,
        request.partitions,
        request.replication_factor,
        &settings,
    )
    .await?;
    if request.encrypted {
        let compacted = vec![("cleanup.policy".to_string(), "compact".to_string())];
        for sub in ENCRYPTION_SUBTOPICS {
            let name = format!("{}.{sub}", request.name);
            ensure_topic(admin, &name, 1, request.replication_factor, &compacted).await?;
        }
    }
    Ok(())
}

/// Creates one topic, or checks that the existing one matches.
async fn ensure_topic(
    admin: &Admin,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    settings: &[(String, String)],
) -> anyhow::Result<()> {
    let mut new = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let results = admin
        .client
        .create_topics([&new], &admin.options())
        .await
        .with_context(|| format!("creating topic {name} on {}", admin.brokers))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            println!(
                "created topic {name}: {partitions} partition(s), replication factor {replication_factor}{}",
                describe_settings(settings)
            );
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
            let differences = compare_existing(admin, name, partitions, settings).await?;
            if differences.is_empty() {
                println!("topic {name} already exists with these settings; nothing to do");
                Ok(())
            } else {
                bail!(
                    "topic {name} already exists with other settings: {}. Delete it first (`openmsi topic delete {name}`) or change it on the broker",
                    differences.join("; ")
                )
            }
        }
        Some(Err((_, code))) => bail!(
            "the broker {} refused to create topic {name}: {code}",
            admin.brokers
        ),
        None => bail!(
            "the broker {} gave no answer for topic {name}",
            admin.brokers
        ),
    }
}

fn describe_settings(settings: &[(String, String)]) -> String {
    if settings.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(", {}", parts.join(", "))
}

/// How an existing topic differs from what was asked (empty: it matches).
async fn compare_existing(
    admin: &Admin,
    name: &str,
    partitions: i32,
    settings: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let metadata = admin.metadata(Some(name))?;
    let mut differences = Vec::new();
    if let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) {
        let have = topic.partitions().len() as i32;
        if have != partitions {
            differences.push(format!("it has {have} partition(s), not {partitions}"));
        }
    }
    let configs = topic_configs(admin, name).await?;
    for (k, v) in settings {
        match configs.get(k) {
            Some(have) if have == v => {}
            Some(have) => differences.push(format!("{k} is {have}, not {v}")),
            // Some brokers (tansu) describe only settings given explicitly.
            None => differences.push(format!("{k} is not set (wanted {v})")),
        }
    }
    Ok(differences)
}

/// The topic's settings as the broker describes them.
async fn topic_configs(admin: &Admin, name: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let results = admin
        .client
        .describe_configs([&ResourceSpecifier::Topic(name)], &admin.options())
        .await
        .with_context(|| format!("describing the settings of topic {name}"))?;
    let mut configs = BTreeMap::new();
    for result in results {
        let resource = result.map_err(|code| anyhow!("describing topic {name}: {code}"))?;
        for entry in resource.entries {
            if let Some(value) = entry.value {
                configs.insert(entry.name, value);
            }
        }
    }
    Ok(configs)
}

/// One topic in `topic list`.
#[derive(Debug, Serialize)]
pub struct ListedTopic {
    pub name: String,
    pub partitions: usize,
}

/// Every topic in the cluster, sorted by name.
pub fn list(admin: &Admin) -> anyhow::Result<Vec<ListedTopic>> {
    let metadata = admin.metadata(None)?;
    let mut topics: Vec<ListedTopic> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| ListedTopic {
            name: t.name().to_string(),
            partitions: t.partitions().len(),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// `topic describe`'s report.
#[derive(Debug, Serialize)]
pub struct TopicReport {
    pub name: String,
    pub partitions: Vec<PartitionReport>,
    /// Settings as the broker describes them.
    pub configs: BTreeMap<String, String>,
    /// Consumer groups with committed offsets on this topic.
    pub groups: Vec<GroupReport>,
    /// Why groups could not be listed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups_unavailable: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync: Vec<i32>,
    /// First offset still stored.
    pub start_offset: i64,
    /// Offset the next message will get.
    pub end_offset: i64,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// Per partition of the topic: committed offset and lag.
    pub partitions: Vec<GroupPartition>,
    /// Messages not yet read by the group, over all partitions.
    pub total_lag: i64,
    /// When the group last committed on this topic (Unix seconds; None: not known, e.g. an
    /// OpenMSIStream group: only openmsi stamps its commits).
    pub last_commit: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct GroupPartition {
    pub partition: i32,
    /// None: the group has not committed on this partition yet.
    pub committed: Option<i64>,
    pub lag: i64,
    /// When that commit was made (Unix seconds), when openmsi made it.
    pub committed_at: Option<u64>,
}

/// Partitions, leaders, replicas, settings, offsets and the groups reading `name`.
pub async fn describe(admin: &Admin, name: &str) -> anyhow::Result<TopicReport> {
    let (partitions, groups) = offsets_and_groups(admin, name)?;
    let configs = topic_configs(admin, name).await?;
    let (groups, groups_unavailable) = split_groups(groups);
    Ok(TopicReport {
        name: name.to_string(),
        partitions,
        configs,
        groups,
        groups_unavailable,
    })
}

/// The partitions of `name` with their offsets, and the groups reading it (or why they could
/// not be listed): what `openmsi status` reports, without the settings.
pub fn offsets_and_groups(
    admin: &Admin,
    name: &str,
) -> anyhow::Result<(Vec<PartitionReport>, anyhow::Result<Vec<GroupReport>>)> {
    let metadata = admin.metadata(Some(name))?;
    let topic = find_topic(metadata.topics(), name, &admin.brokers)?;
    let reader = reader(admin, None)?;
    let mut partitions = Vec::new();
    for p in topic.partitions() {
        let (start_offset, end_offset) = reader
            .fetch_watermarks(name, p.id(), admin.timeout)
            .with_context(|| format!("reading the offsets of {name}[{}]", p.id()))?;
        partitions.push(PartitionReport {
            id: p.id(),
            leader: p.leader(),
            replicas: p.replicas().to_vec(),
            in_sync: p.isr().to_vec(),
            start_offset,
            end_offset,
        });
    }
    let groups = group_lags(admin, name, &partitions);
    Ok((partitions, groups))
}

/// Groups, or none and why.
pub fn split_groups(
    groups: anyhow::Result<Vec<GroupReport>>,
) -> (Vec<GroupReport>, Option<String>) {
    match groups {
        Ok(groups) => (groups, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    }
}

fn find_topic<'a>(
    topics: &'a [MetadataTopic],
    name: &str,
    brokers: &str,
) -> anyhow::Result<&'a MetadataTopic> {
    topics
        .iter()
        .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| anyhow!("topic `{name}` does not exist on {brokers} (`openmsi topic list` shows the topics)"))
}

/// A consumer that never joins a group: for watermarks, and (with `group`) for reading that
/// group's committed offsets.
pub(crate) fn reader(
    admin: &Admin,
    group: Option<&str>,
) -> anyhow::Result<BaseConsumer<ConsumerLogContext>> {
    let group = group.unwrap_or("openmsi-topic-describe");
    let props = admin.config.consumer_properties(Some(group), true);
    let cfg = client_config(&props, &[], &[]);
    Ok(create_client(
        &cfg,
        ConsumerLogContext::default(),
        &admin.config,
        "consumer",
    )?)
}

/// The committed offsets and lag of every group that has committed on `name`.
fn group_lags(
    admin: &Admin,
    name: &str,
    partitions: &[PartitionReport],
) -> anyhow::Result<Vec<GroupReport>> {
    let groups = super::native::list_groups(admin.client.inner(), admin.timeout)
        .context("listing consumer groups")?;
    let mut reports = Vec::new();
    for group in &groups {
        let consumer = reader(admin, Some(group))?;
        let mut wanted = TopicPartitionList::new();
        for p in partitions {
            wanted.add_partition(name, p.id);
        }
        let committed = consumer
            .committed_offsets(wanted, admin.timeout)
            .with_context(|| format!("reading the offsets of group {group}"))?;
        let mut rows = Vec::new();
        for element in committed.elements() {
            let Some(p) = partitions.iter().find(|p| p.id == element.partition()) else {
                continue;
            };
            let at = match element.offset() {
                Offset::Offset(at) => Some(at),
                _ => None,
            };
            let committed_at = crate::kafka::group::commit_time(element.metadata())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            rows.push(GroupPartition {
                partition: p.id,
                committed: at,
                committed_at,
                // Without a commit the group starts at the oldest stored message (openmsi's
                // auto.offset.reset); everything stored is still to read.
                lag: (p.end_offset - at.unwrap_or(p.start_offset)).max(0),
            });
        }
        // Only groups that read this topic: at least one partition committed.
        if rows.iter().all(|r| r.committed.is_none()) {
            rows.clear();
        }
        if !rows.is_empty() {
            reports.push(GroupReport {
                group: group.clone(),
                total_lag: rows.iter().map(|r| r.lag).sum(),
                last_commit: rows.iter().filter_map(|r| r.committed_at).max(),
                partitions: rows,
            });
        }
    }
    Ok(reports)
}

/// The report as aligned text.
pub fn render(report: &TopicReport) -> String {
    let mut out = format!("topic {}\n\n", report.name);
    out.push_str("partition  leader  replicas  in-sync  start offset  end offset\n");
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for p in &report.partitions {
        out.push_str(&format!(
            "{:>9}  {:>6}  {:>8}  {:>7}  {:>12}  {:>10}\n",
            p.id,
            p.leader,
            ids(&p.replicas),
            ids(&p.in_sync),
            p.start_offset,
            p.end_offset
        ));
    }
    out.push_str("\nsettings");
    if report.configs.is_empty() {
        out.push_str(": none set explicitly (the broker's defaults apply)\n");
    } else {
        out.push('\n');
        for (k, v) in &report.configs {
            out.push_str(&format!("  {k} = {v}\n"));
        }
    }
    out.push_str("\nconsumer groups");
    if let Some(why) = &report.groups_unavailable {
        out.push_str(&format!(": could not be listed ({why})\n"));
    } else if report.groups.is_empty() {
        out.push_str(": none has committed offsets on this topic\n");
    } else {
        out.push('\n');
        for g in &report.groups {
            let per: Vec<String> = g
                .partitions
                .iter()
                .map(|p| match p.committed {
                    Some(at) => format!("[{}] at {at} lag {}", p.partition, p.lag),
                    None => format!("[{}] not read yet, lag {}", p.partition, p.lag),
                })
                .collect();
            out.push_str(&format!(
                "  {}: lag {} ({})\n",
                g.group,
                g.total_lag,
                per.join(", ")
            ));
        }
    }
    out
}

/// Deletes `name` after confirmation: `yes`, or the topic name typed on a terminal. Without
/// a terminal and without `--yes` it refuses rather than guess.
pub async fn delete(admin: &Admin, name: &str, yes: bool) -> anyhow::Result<()> {
    let metadata = admin.metadata(Some(name))?;
    let topic = find_topic(metadata.topics(), name, &admin.brokers)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not deleting topic {name} without confirmation: pass --yes (standard input is not a terminal, so openmsi cannot ask)");
        }
        eprint!(
            "Delete topic {name} ({} partition(s)) and every message in it from {}? Type the topic name to confirm: ",
            topic.partitions().len(),
            admin.brokers
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != name {
            bail!("not deleted: the name typed did not match");
        }
    }
    let results = admin
        .client
        .delete_topics(&[name], &admin.options())
        .await
        .with_context(|| format!("deleting topic {name}"))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            println!("deleted topic {name}");
            Ok(())
        }
        Some(Err((_, code))) => bail!("the broker refused to delete topic {name}: {code}"),
        None => bail!("the broker gave no answer for topic {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(settings: &[(&str, &str)], encrypted: bool) -> CreateRequest {
        CreateRequest {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            encrypted,
            chunk_size: 1 << 20,
        }
    }

    #[test]
    fn max_message_bytes_fits_a_chunk_message() {
        let s = topic_settings(&request(&[("retention.ms", "1000")], false)).unwrap();
        let set: usize = s
            .iter()
            .find(|(k, _)| k == "max.message.bytes")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert!(set >= (1 << 20) + 1024);
        let enc = topic_settings(&request(&[], true)).unwrap();
        assert_ne!(s.last(), enc.last());
        let err = topic_settings(&request(&[("max.message.bytes", "1000")], false)).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
        let big = topic_settings(&request(&[("max.message.bytes", "99999999")], false)).unwrap();
        assert_eq!(big.len(), 1);
    }
}
