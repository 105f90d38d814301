//! Counters of a download run, shared by every stage and read by `check` and the summary.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::download::verify::RejectKind;
use crate::metrics::{Exposition, Histogram, Kind};
use crate::progress::ActiveTime;

/// Live counters. Relaxed ordering: they are statistics, never used for synchronisation.
#[derive(Debug, Default)]
pub struct DownloadStats {
    /// Messages received from Kafka.
    pub messages_read: AtomicU64,
    /// Message bytes received (key + value).
    pub bytes_read: AtomicU64,
    /// Chunks written to staging files.
    pub chunks_written: AtomicU64,
    /// Chunk data bytes written.
    pub bytes_written: AtomicU64,
    /// Chunks already present (redelivery or duplicate upload), skipped.
    pub duplicate_chunks: AtomicU64,
    /// Messages skipped because the file did not match --download-regex.
    pub skipped_messages: AtomicU64,
    /// Messages addressed to other hosts (`hostname` headers), skipped unwritten.
    pub other_hosts_messages: AtomicU64,
    /// Messages that were not valid chunks (kept aside in .openmsi/rejected).
    pub rejected_messages: AtomicU64,
    /// The same, by [`crate::download::verify::RejectKind::index`].
    pub rejected_by_kind: [AtomicU64; 4],
    /// Messages that could not be opened yet (kept in .openmsi/deferred until they can).
    pub deferred_messages: AtomicU64,
    /// Files verified and renamed into place.
    pub files_completed: AtomicU64,
    /// Files whose whole-file hash did not match (kept aside in .openmsi/failed).
    pub files_failed: AtomicU64,
    /// Verified files the `--validate` command refused (kept aside in .openmsi/failed).
    pub files_refused: AtomicU64,
    /// Verified files that could not be put in place (a folder in the way, permissions).
    pub files_unplaced: AtomicU64,
    /// Files with some but not all chunks staged.
    pub files_in_progress: AtomicU64,
    /// Files in progress whose missing chunks are behind messages already read (reported).
    pub files_missing_chunks: AtomicU64,
    /// `--on-file`/`--on-batch` commands that failed (exit code, timeout, not startable).
    pub hooks_failed: AtomicU64,
    /// `--result-topic` messages acknowledged.
    pub results_sent: AtomicU64,
    /// How long chunks were being written (for a rate that leaves out idle time).
    pub active: ActiveTime,
    /// Per published file: from the first chunk taken to publication.
    pub first_chunk_to_published: Histogram,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub messages_read: u64,
    pub bytes_read: u64,
    pub chunks_written: u64,
    pub bytes_written: u64,
    pub duplicate_chunks: u64,
    pub skipped_messages: u64,
    pub other_hosts_messages: u64,
    pub rejected_messages: u64,
    pub deferred_messages: u64,
    pub files_completed: u64,
    pub files_failed: u64,
    pub files_refused: u64,
    pub files_unplaced: u64,
    pub files_in_progress: u64,
    pub files_missing_chunks: u64,
    pub hooks_failed: u64,
    pub results_sent: u64,
}

impl DownloadStats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            messages_read: get(&self.messages_read),
            bytes_read: get(&self.bytes_read),
            chunks_written: get(&self.chunks_written),
            bytes_written: get(&self.bytes_written),
            duplicate_chunks: get(&self.duplicate_chunks),
            skipped_messages: get(&self.skipped_messages),
            other_hosts_messages: get(&self.other_hosts_messages),
            rejected_messages: get(&self.rejected_messages),
            deferred_messages: get(&self.deferred_messages),
            files_completed: get(&self.files_completed),
            files_failed: get(&self.files_failed),
            files_refused: get(&self.files_refused),
            files_unplaced: get(&self.files_unplaced),
            files_in_progress: get(&self.files_in_progress),
            files_missing_chunks: get(&self.files_missing_chunks),
            hooks_failed: get(&self.hooks_failed),
            results_sent: get(&self.results_sent),
        }
    }
}

impl DownloadStats {
    /// The families of a metrics scrape (see [`crate::metrics`]).
    pub fn write_metrics(&self, out: &mut Exposition) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.counter(
            "openmsi_files_downloaded_total",
            "Files rebuilt, verified and put in place.",
            get(&self.files_completed),
        );
        out.counter(
            "openmsi_bytes_downloaded_total",
            "File bytes written (chunk data, duplicates not counted).",
            get(&self.bytes_written),
        );
        out.counter(
            "openmsi_messages_read_total",
            "Messages received from Kafka.",
            get(&self.messages_read),
        );
        out.family(
            "openmsi_messages_rejected_total",
            "Messages that were not valid chunks, kept aside in .openmsi/rejected, by reason.",
            Kind::Counter,
        );
        for kind in RejectKind::ALL {
            out.sample(
                "openmsi_messages_rejected_total",
                &[("reason", kind.label())],
                get(&self.rejected_by_kind[kind.index()]) as f64,
            );
        }
        out.counter(
            "openmsi_files_failed_verification_total",
            "Complete files whose SHA-512 did not match (kept aside in .openmsi/failed).",
            get(&self.files_failed),
        );
        out.counter(
            "openmsi_files_refused_total",
            "Verified files the --validate command refused.",
            get(&self.files_refused),
        );
        out.counter(
            "openmsi_files_unplaced_total",
            "Verified files that could not be put in place (a folder in the way, permissions).",
            get(&self.files_unplaced),
        );
        out.counter(
            "openmsi_hooks_failed_total",
            "--on-file/--on-batch commands that failed.",
            get(&self.hooks_failed),
        );
        out.counter(
            "openmsi_results_sent_total",
            "--result-topic messages the broker acknowledged.",
            get(&self.results_sent),
        );
        out.counter(
            "openmsi_duplicate_chunks_total",
            "Chunks received again (redelivery or a repeated upload) and skipped.",
            get(&self.duplicate_chunks),
        );
        let rejected = get(&self.rejected_messages);
        crate::metrics::write_failures(
            out,
            &[
                ("verification", get(&self.files_failed)),
                ("rejected", rejected),
                ("refused", get(&self.files_refused)),
                ("unplaced", get(&self.files_unplaced)),
                ("hook", get(&self.hooks_failed)),
            ],
        );
        out.gauge(
            "openmsi_files_in_progress",
            "Files with some but not all chunks staged.",
            get(&self.files_in_progress) as f64,
        );
        out.gauge(
            "openmsi_files_missing_chunks",
            "Files in progress whose missing chunks are behind messages already read (lost by the broker, or never sent): upload them again.",
            get(&self.files_missing_chunks) as f64,
        );
        out.gauge(
            "openmsi_messages_waiting_for_keys",
            "Encrypted messages kept until their key arrives.",
            get(&self.deferred_messages) as f64,
        );
        self.first_chunk_to_published.write(
            out,
            "openmsi_download_first_chunk_to_published_seconds",
            "Per file: seconds from its first chunk taken by this process to its publication.",
        );
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages read {}, files completed {}, files in progress {}, chunks written {} ({:.1} MB), \
             duplicates {}, skipped {}, errors: {} rejected messages, {} files failed verification",
            self.messages_read,
            self.files_completed,
            self.files_in_progress,
            self.chunks_written,
            self.bytes_written as f64 / 1e6,
            self.duplicate_chunks,
            self.skipped_messages,
            self.rejected_messages,
            self.files_failed,
        )?;
        if self.files_refused > 0 {
            write!(f, "; {} refused by --validate", self.files_refused)?;
        }
        if self.files_unplaced > 0 {
            write!(f, "; {} could not be put in place", self.files_unplaced)?;
        }
        if self.files_missing_chunks > 0 {
            write!(
                f,
                "; {} files missing chunks the broker does not have (upload them again)",
                self.files_missing_chunks
            )?;
        }
        if self.hooks_failed > 0 {
            write!(f, "; {} hooks failed", self.hooks_failed)?;
        }
        if self.results_sent > 0 {
            write!(f, "; {} results sent", self.results_sent)?;
        }
        if self.other_hosts_messages > 0 {
            write!(
                f,
                "; {} messages for other hosts skipped",
                self.other_hosts_messages
            )?;
        }
        if self.deferred_messages > 0 {
            write!(
                f,
                "; {} messages waiting to be opened",
                self.deferred_messages
            )?;
        }
        Ok(())
    }
}

impl StatsSnapshot {
    /// Files that ended badly in any way (the exit code of a run that stops by itself).
    pub fn files_not_delivered(&self) -> u64 {
        self.files_failed + self.files_refused + self.files_unplaced
    }
}
