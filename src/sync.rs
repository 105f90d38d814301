//! What threads share, in one place: the policy for poisoned locks ([`lock()`], [`read()`],
//! [`write()`]) and a work queue with several takers ([`SharedReceiver`]: the download's verify
//! workers, upload-directory's upload workers, upload-file's hashing threads).
//!
//! A poisoned lock is recovered everywhere: a thread that panicked while holding it was doing
//! bookkeeping (counters, maps of keys or files) that stays usable, and the alternative, a
//! second panic in every other thread, would stop a transfer that can still finish. The panic
//! itself is reported where it happened.

use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, recovering it if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `rwlock`, recovering it if a writer panicked.
pub fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `rwlock`, recovering it if a writer panicked.
pub fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(|p| p.into_inner())
}

/// The receiving end of a channel, shared by the threads that take its work.
pub struct SharedReceiver<T>(Mutex<Receiver<T>>);

impl<T> SharedReceiver<T> {
    /// Shares `rx`.
    pub fn new(rx: Receiver<T>) -> Self {
        Self(Mutex::new(rx))
    }

    /// The next item, waiting for one; None once every sender is gone. One taker waits on the
    /// channel at a time while the others wait for the lock, and an item goes to exactly one.
    pub fn next(&self) -> Option<T> {
        // A taker that panicked cannot leave the receiver in a bad state.
        lock(&self.0).recv().ok()
    }

    /// The next item as [`SharedReceiver::next`] does, and up to `max - 1` more that are
    /// already waiting (never waits for them). Empty once every sender is gone.
    pub fn next_batch(&self, max: usize) -> Vec<T> {
        let rx = lock(&self.0);
        let Ok(first) = rx.recv() else {
            return Vec::new();
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_what_is_waiting_up_to_its_size_and_never_waits_for_more() {
        let (tx, rx) = std::sync::mpsc::channel();
        let queue = SharedReceiver::new(rx);
        for n in 0..6 {
            tx.send(n).unwrap();
        }
        assert_eq!(queue.next_batch(4), vec![0, 1, 2, 3]);
        assert_eq!(queue.next_batch(4), vec![4, 5]);
        tx.send(6).unwrap();
        assert_eq!(queue.next_batch(4), vec![6]);
        drop(tx);
        assert!(queue.next_batch(4).is_empty());
    }

    #[test]
    fn every_item_goes_to_exactly_one_taker_and_takers_end_with_the_senders() {
        let (tx, rx) = std::sync::mpsc::channel();
        let queue = SharedReceiver::new(rx);
        let taken = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while let Some(n) = queue.next() {
                        taken.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
            for n in 1..=100u64 {
                tx.send(n).unwrap();
            }
            drop(tx);
        });
        assert_eq!(taken.into_inner(), 5050);
    }
}
