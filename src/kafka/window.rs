//! How much the chunk producer lets wait in librdkafka's queue: no more than librdkafka can
//! have in flight.
//!
//! An idempotent producer sends at most 5 requests per partition at a time. A full batch that
//! cannot be sent yet because 5 are in flight makes librdkafka's broker thread spin (it asks to
//! be woken at once, again and again, until a response arrives): measured, half of the
//! uploader's CPU during a burst of small files, taken from the broker and the downloader on
//! the same machine. So the producer queues a message only while fewer than (requests in
//! flight × batch) messages and bytes are unacknowledged; it then waits for a delivery report
//! instead of spinning. Throughput is unchanged: librdkafka would not send the extra messages
//! any sooner.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use tokio_util::sync::CancellationToken;

/// Requests an idempotent producer keeps in flight per partition (librdkafka's limit).
const IDEMPOTENT_MAX_IN_FLIGHT: u64 = 5;

/// The unacknowledged messages and bytes a producer allows.
#[derive(Debug)]
pub struct Window {
    /// Most messages unacknowledged at once, per partition of the topic.
    messages_per_partition: u64,
    /// Most message bytes unacknowledged at once, per partition (a larger message still goes
    /// alone).
    bytes_per_partition: u64,
    /// What is unacknowledged now, and the topic's partitions.
    state: Mutex<State>,
    /// Signalled by every delivery report.
    freed: Condvar,
}

#[derive(Debug)]
struct State {
    messages: u64,
    bytes: u64,
    partitions: u64,
}

impl Window {
    /// The window for a producer with `cfg` writing to a topic of `partitions` partitions.
    pub fn for_config(cfg: &ClientConfig, partitions: i32) -> Self {
        let number = |key: &str, default: u64| {
            cfg.get(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        let idempotent = cfg
            .get("enable.idempotence")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let max_in_flight = number("max.in.flight.requests.per.connection", 1_000_000);
        if !idempotent && max_in_flight > IDEMPOTENT_MAX_IN_FLIGHT {
            // librdkafka sends whatever is queued: nothing waits blocked.
            return Self::unlimited();
        }
        let requests = max_in_flight.min(IDEMPOTENT_MAX_IN_FLIGHT);
        let batch_messages = number("batch.num.messages", 10_000).max(1);
        let batch_bytes = number("batch.size", 1_000_000).max(1);
        let me = Self::new(
            requests.saturating_mul(batch_messages),
            requests.saturating_mul(batch_bytes),
        );
        me.set_partitions(partitions);
        me
    }

    fn new(messages_per_partition: u64, bytes_per_partition: u64) -> Self {
        Self {
            messages_per_partition,
            bytes_per_partition,
            state: Mutex::new(State {
                messages: 0,
                bytes: 0,
                partitions: 1,
            }),
            freed: Condvar::new(),
        }
    }

    fn unlimited() -> Self {
        Self::new(u64::MAX, u64::MAX)
    }

    /// The topic has `partitions` partitions (each has its own requests in flight).
    pub fn set_partitions(&self, partitions: i32) {
        self.lock().partitions = u64::try_from(partitions).unwrap_or(1).max(1);
    }

    /// (messages, bytes) the window holds at most.
    fn limits(&self, state: &State) -> (u64, u64) {
        (
            self.messages_per_partition.saturating_mul(state.partitions),
            self.bytes_per_partition.saturating_mul(state.partitions),
        )
    }

    /// Takes room for one message of `bytes`, waiting for delivery reports while the window is
    /// full. False when `cancel` fired while waiting.
    pub fn acquire(&self, bytes: u64, cancel: &CancellationToken) -> bool {
        let mut state = self.lock();
        loop {
            let (max_messages, max_bytes) = self.limits(&state);
            // An empty window always takes one message, however large.
            let fits = state.messages == 0
                || (state.messages < max_messages
                    && state.bytes.saturating_add(bytes) <= max_bytes);
            if fits {
                state.messages += 1;
                state.bytes += bytes;
                return true;
            }
            if cancel.is_cancelled() {
                return false;
            }
            state = self
                .freed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Gives back the room of one message of `bytes` (acknowledged, failed, or never queued).
    pub fn release(&self, bytes: u64) {
        let mut state = self.lock();
        state.messages = state.messages.saturating_sub(1);
        state.bytes = state.bytes.saturating_sub(bytes);
        drop(state);
        self.freed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn config(pairs: &[(&str, &str)]) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        for (k, v) in pairs {
            cfg.set(*k, *v);
        }
        cfg
    }

    #[test]
    fn the_window_is_what_librdkafka_can_have_in_flight() {
        let w = Window::for_config(
            &config(&[("enable.idempotence", "true"), ("batch.num.messages", "1")]),
            2,
        );
        assert_eq!(w.limits(&w.lock()), (10, 10_000_000));
        let w = Window::for_config(
            &config(&[("enable.idempotence", "true"), ("batch.size", "2000000")]),
            1,
        );
        assert_eq!(w.limits(&w.lock()), (50_000, 10_000_000));
        w.set_partitions(3);
        assert_eq!(w.limits(&w.lock()), (150_000, 30_000_000));
        // Not idempotent: librdkafka sends everything queued.
        let w = Window::for_config(&config(&[("enable.idempotence", "false")]), 1);
        assert_eq!(w.limits(&w.lock()).0, u64::MAX);
    }

    #[test]
    fn a_full_window_waits_for_a_release_and_a_stop_ends_the_wait() {
        let w = Arc::new(Window::new(2, 100));
        let cancel = CancellationToken::new();
        assert!(w.acquire(10, &cancel));
        assert!(w.acquire(10, &cancel));
        let waiter = {
            let (w, cancel) = (Arc::clone(&w), cancel.clone());
            std::thread::spawn(move || w.acquire(10, &cancel))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "took room in a full window");
        w.release(10);
        assert!(waiter.join().unwrap());
        // Too many bytes waits too, unless the window is empty.
        let cancel_now = CancellationToken::new();
        cancel_now.cancel();
        assert!(!w.acquire(95, &cancel_now));
        let empty = Window::new(2, 100);
        assert!(empty.acquire(500, &cancel_now));
    }
}
