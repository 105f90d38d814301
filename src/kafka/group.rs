//! A member's side of its consumer group, beside the consumer that joins it: rejoining when
//! the group left it without partitions ([`Rejoin`]), which partitions it owns and from where
//! ([`Ownership`]), and storing and committing the offsets the caller found durable
//! ([`store_offsets`]). The download pipeline uses these; a relay or any other consumer that
//! commits after its own work is done would use them the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::context::ConsumerLogContext;

/// A member with no partition for longer than a session leaves and rejoins the group, or
/// (the pipeline's choice when it can) replaces its client with a new one.
///
/// A downloader restarted right after a crash joins while its dead predecessor is still a
/// member; the rebalance hands the partitions to the dead member, and a broker that does not
/// rebalance again when that member's session expires (tansu 0.6.0; measured: nothing assigned
/// for minutes) leaves them unread. The same broker sometimes revokes every partition from the
/// survivor when a killed member expires and never assigns them again (seen once in the
/// killed-member takeover test). The new rebalance a rejoin starts no longer sees the dead
/// member. A member that is idle because the group has more members than partitions would
/// rejoin for nothing, so the wait doubles after each rejoin (up to [`REJOIN_MAX_WAIT`]) and
/// returns to one session once partitions are assigned.
///
/// A rejoin with the same client cannot help when the group's coordinator is on a broker that
/// is gone but whose id a live broker now answers for: librdkafka keeps the coordinator's old
/// address as long as its id does not change (tansu's brokers over shared storage all call
/// themselves node 111; measured: a downloader unassigned for minutes after the coordinator's
/// broker was killed, its rejoins unanswered). A new client asks `bootstrap.servers` afresh.
pub struct Rejoin {
    /// How long to be without partitions before rejoining.
    first_wait: Duration,
    wait: Duration,
    /// Since when no partition is assigned (None: some are).
    unassigned_since: Option<Instant>,
    /// When the assignment was last looked at (it is looked at once a second).
    looked_at: Instant,
}

/// The longest an unassigned member waits between rejoins.
pub const REJOIN_MAX_WAIT: Duration = Duration::from_secs(600);

impl Rejoin {
    /// Rejoins after `delay` without partitions (then doubling).
    pub fn after(delay: Duration) -> Self {
        let now = Instant::now();
        Self {
            first_wait: delay,
            wait: delay,
            unassigned_since: Some(now),
            looked_at: now,
        }
    }

    /// Whether to act now: no partition has been assigned for the current wait. The caller
    /// rejoins ([`rejoin_group`]) or connects again with a new client; the next wait is longer.
    pub fn due(&mut self, consumer: &BaseConsumer<ConsumerLogContext>) -> bool {
        let now = Instant::now();
        if now.duration_since(self.looked_at) < Duration::from_secs(1) {
            return false;
        }
        self.looked_at = now;
        let unassigned = consumer
            .assignment()
            .map(|list| list.count() == 0)
            .unwrap_or(false);
        if !unassigned {
            self.unassigned_since = None;
            self.wait = self.first_wait;
            return false;
        }
        let since = *self.unassigned_since.get_or_insert(now);
        if now.duration_since(since) < self.wait {
            return false;
        }
        debug!(
            waited_s = self.wait.as_secs(),
            "no partition assigned for the whole wait"
        );
        self.unassigned_since = Some(now);
        self.wait = (self.wait * 2).min(REJOIN_MAX_WAIT);
        true
    }
}

/// Leaves and rejoins the group with the same client.
pub fn rejoin_group(consumer: &BaseConsumer<ConsumerLogContext>, topic: &str) {
    info!(topic, "no partition assigned for longer than a session (a crashed member may still hold them, or the group has more members than partitions); leaving and rejoining the group");
    consumer.unsubscribe();
    if let Err(e) = consumer.subscribe(&[topic]) {
        warn!(topic, error = %e, "rejoining the consumer group failed");
    }
}

/// Where this member started reading each partition it owns now. With the cooperative
/// assignor a partition can be revoked and later come back, after another member read (and
/// committed) past where we stopped; the offsets our writer computes for it may still reflect
/// pins from before. Committing those would move the group's offset backwards, so a partition's
/// commit never goes below where the current ownership started reading, and a partition no
/// longer owned is not committed at all (its new owner does that).
#[derive(Debug, Default)]
pub struct Ownership {
    /// Partition → first offset read since it was (last) assigned.
    read_from: HashMap<i32, i64>,
}

impl Ownership {
    /// A message of `partition` at `offset` was read.
    pub fn reading(&mut self, partition: i32, offset: i64) {
        self.read_from.entry(partition).or_insert(offset);
    }

    /// Forgets the partitions revoked since the last call.
    pub fn forget_revoked(&mut self, consumer: &BaseConsumer<ConsumerLogContext>) {
        for partition in consumer.context().take_revoked() {
            self.read_from.remove(&partition);
        }
    }

    /// The offsets of `offsets` this member may commit, raised to where its ownership began.
    pub fn clamp(&self, offsets: &HashMap<i32, i64>) -> HashMap<i32, i64> {
        offsets
            .iter()
            .filter_map(|(p, &next)| Some((*p, next.max(*self.read_from.get(p)?))))
            .collect()
    }
}

/// Stores the next offset to read for each partition and commits asynchronously. A partition
/// that was revoked meanwhile refuses the store; its new owner re-reads those chunks, which is
/// harmless (they are duplicates).
pub fn store_offsets(
    consumer: &BaseConsumer<ConsumerLogContext>,
    topic: &str,
    offsets: &HashMap<i32, i64>,
) {
    if offsets.is_empty() {
        return;
    }
    // Each commit carries when it was made, so `openmsi status` can say how long ago a group
    // last moved (Kafka keeps a commit's metadata string with its offset).
    let stamp = commit_stamp(std::time::SystemTime::now());
    let mut list = TopicPartitionList::new();
    for (&partition, &next) in offsets {
        let mut element = list.add_partition(topic, partition);
        if element.set_offset(Offset::Offset(next)).is_ok() {
            element.set_metadata(&stamp);
        }
    }
    if let Err(e) = consumer.store_offsets(&list) {
        debug!(error = %e, "offsets not stored (partitions no longer assigned?)");
    }
    match consumer.commit_consumer_state(CommitMode::Async) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!(error = %e, "offset commit failed; will retry at the next flush"),
    }
}

/// The metadata string of a commit made at `at`.
pub fn commit_stamp(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{COMMIT_STAMP}{secs}")
}

/// When a commit with this metadata was made (None: not stamped by openmsi).
pub fn commit_time(metadata: &str) -> Option<std::time::SystemTime> {
    let secs: u64 = metadata.strip_prefix(COMMIT_STAMP)?.parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// How openmsi's commit metadata starts.
const COMMIT_STAMP: &str = "openmsi committed_at=";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_never_go_below_where_the_current_ownership_started_nor_to_partitions_not_owned() {
        let mut owned = Ownership::default();
        owned.reading(0, 100);
        owned.reading(0, 101);
        owned.reading(1, 7);
        // Partition 0 came back after another member committed 100; a pin from before (40)
        // must not move the group's offset back. Partition 2 is not ours.
        let offsets = HashMap::from([(0, 40), (1, 9), (2, 55)]);
        let clamped = owned.clamp(&offsets);
        assert_eq!(clamped, HashMap::from([(0, 100), (1, 9)]));
        owned.read_from.remove(&1);
        assert_eq!(owned.clamp(&offsets), HashMap::from([(0, 100)]));
    }
}
