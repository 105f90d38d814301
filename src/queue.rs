//! Work shared by a few threads: one channel, several takers (the download's verify workers,
//! upload-directory's upload workers, upload-file's hashing threads).

use std::sync::mpsc::Receiver;
use std::sync::Mutex;

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
        // A taker that panicked cannot leave the receiver in a bad state: recover the lock.
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
