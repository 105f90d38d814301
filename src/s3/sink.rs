//! s3-transfer's `ChunkSink`: the download side's own sink (`Reassembler`: staging, SHA-512,
//! crash recovery) rebuilds each file into an outbox folder; a flush then puts every file it
//! published into the bucket, confirmed by a HEAD, and only then returns, so the pipeline
//! commits an offset only once the objects of the files before it are complete on the server.
//! A file leaves the outbox once its object is done; one left there by a crash (rebuilt, not
//! yet uploaded, its offsets not committed) is uploaded first at the next start
//! ([`drain_outbox`]), since the stream would not publish it again.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::client::S3Client;
use super::stream::{Finished, Streams};
use super::upload::{Journal, ObjectWriter, UploadError, Uploaded};
use crate::chunk::hash::Sha512Stream;
use crate::contract::{Accepted, ChunkSink, PublishedFile, VerifiedChunk};
use crate::download::hooks::HookLog;
use crate::download::reassembler::Reassembler;
use crate::metrics::exposition::Exposition;

/// What went into the bucket, for `check`, the summary and the metrics.
#[derive(Debug, Default)]
pub struct S3Stats {
    /// Objects written (PUT or multipart).
    pub written: AtomicU64,
    /// Files whose object already held the same bytes.
    pub already_there: AtomicU64,
    /// Files that could not be put (the server refused the key...): kept in the state folder.
    pub failed: AtomicU64,
    /// File bytes written to the bucket.
    pub bytes: AtomicU64,
}

impl S3Stats {
    /// One line for `check`.
    pub fn line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "objects: {} written ({:.1} MB), {} already there, {} failed",
            get(&self.written),
            get(&self.bytes) as f64 / 1e6,
            get(&self.already_there),
            get(&self.failed)
        )
    }

    /// Prometheus samples.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.counter(
            "openmsi_s3_objects_written_total",
            "Files put into the bucket (confirmed by a HEAD).",
            get(&self.written),
        );
        out.counter(
            "openmsi_s3_objects_already_there_total",
            "Files skipped because their object already had the same size and sha512.",
            get(&self.already_there),
        );
        out.counter(
            "openmsi_s3_objects_failed_total",
            "Files the server refused for good (kept in the state folder's failed-uploads).",
            get(&self.failed),
        );
        out.counter(
            "openmsi_s3_bytes_written_total",
            "File bytes put into the bucket.",
            get(&self.bytes),
        );
    }
}

/// Object keys: OpenMSIStream's `<topic>/<subdir>/<filename>`, or `--key-prefix` instead of
/// `<topic>/`.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// `prefix` None: `<topic>/`; Some("") no prefix; Some(p): `p/` (a `/` added if missing).
    pub fn new(topic: &str, prefix: Option<&str>) -> Self {
        let prefix = match prefix {
            None => format!("{topic}/"),
            Some("") => String::new(),
            Some(p) if p.ends_with('/') => p.to_string(),
            Some(p) => format!("{p}/"),
        };
        Self { prefix }
    }

    /// The key of the file at `relative` (`/`-separated).
    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }
}

/// Everything a flush needs to put files into the bucket.
pub struct Uploader {
    pub client: Arc<S3Client>,
    pub journal: Arc<Journal>,
    pub keys: KeyLayout,
    pub part_size: usize,
    pub stats: Arc<S3Stats>,
    /// Where files the server refused for good are kept.
    pub failed_dir: PathBuf,
    pub cancel: CancellationToken,
    /// `--on-file`: a file whose object is confirmed becomes due here (durably, before the
    /// flush returns) and stays in the outbox for the command, whose runner removes it.
    pub hooks: Option<RefCell<HookLog>>,
}

impl Uploader {
    /// Puts one rebuilt file (at `path`, relative path `relative`) into the bucket and removes
    /// it from the outbox. A stop request gives `Interrupted` (the file stays for next time).
    pub fn deliver(
        &self,
        outbox: &Path,
        path: &Path,
        relative: &str,
        size: u64,
        sha512: &str,
    ) -> io::Result<()> {
        let key = self.keys.key(relative);
        let writer = ObjectWriter {
            client: &self.client,
            journal: &self.journal,
            part_size: self.part_size,
            cancel: &self.cancel,
        };
        match writer.put_file(path, &key, size, sha512) {
            Ok(outcome) => {
                match outcome {
                    Uploaded::AlreadyThere => {
                        self.stats.already_there.fetch_add(1, Ordering::Relaxed);
                        info!(
                            key,
                            "already in the bucket with the same size and sha512; skipped"
                        );
                    }
                    Uploaded::Written => {
                        self.stats.written.fetch_add(1, Ordering::Relaxed);
                        self.stats.bytes.fetch_add(size, Ordering::Relaxed);
                        info!(
                            key,
                            bucket = self.client.bucket(),
                            size,
                            "object written and confirmed"
                        );
                    }
                }
                self.object_done(outbox, path, relative, size, sha512)
            }
            Err(UploadError::Cancelled { key }) => Err(io::Error::new(
                io::ErrorKind::Interrupted,
                format!("stopped before {key} was complete; it is uploaded at the next start"),
            )),
            Err(e) => {
                // Refused for good (a key the server will not take, access denied for this
                // key, the file changed on disk): kept, counted, and the stream goes on.
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let kept = self.failed_dir.join(relative.replace('/', "_"));
                std::fs::create_dir_all(&self.failed_dir)?;
                std::fs::rename(path, &kept)?;
                error!(key, error = %e, kept = %kept.display(), "the file could NOT be put into the bucket; it is kept here: fix the cause and upload it again");
                Ok(())
            }
        }
    }
}

impl Uploader {
    /// A file whose parts were streamed and whose object was completed: a HEAD confirms it,
    /// then it leaves the outbox. If the HEAD does not confirm it, it is uploaded the usual
    /// way.
    fn confirm_streamed(&self, outbox: &Path, file: &PublishedFile) -> io::Result<()> {
        let key = self.keys.key(&file.relative);
        let writer = ObjectWriter {
            client: &self.client,
            journal: &self.journal,
            part_size: self.part_size,
            cancel: &self.cancel,
        };
        match writer.confirm(&key, file.size, &file.file_hash) {
            Ok(()) => {
                self.stats.written.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes.fetch_add(file.size, Ordering::Relaxed);
                info!(
                    key,
                    bucket = self.client.bucket(),
                    size = file.size,
                    "object written and confirmed"
                );
                self.object_done(
                    outbox,
                    &file.path,
                    &file.relative,
                    file.size,
                    &file.file_hash,
                )
            }
            Err(e) => {
                error!(key, error = %e, "the streamed object is not as it should be; uploading the file again");
                self.deliver(
                    outbox,
                    &file.path,
                    &file.relative,
                    file.size,
                    &file.file_hash,
                )
            }
        }
    }
}

impl Uploader {
    /// The object of the file at `path` is confirmed: its `--on-file` command becomes due
    /// (the file stays for it), or, without one, the file leaves the outbox.
    fn object_done(
        &self,
        outbox: &Path,
        path: &Path,
        relative: &str,
        size: u64,
        sha512: &str,
    ) -> io::Result<()> {
        let Some(hooks) = &self.hooks else {
            return remove_from_outbox(outbox, path);
        };
        let mut hooks = hooks.borrow_mut();
        let due = hooks.mark_due(&[(relative.to_string(), size, sha512.to_string())])?;
        hooks.release(due);
        Ok(())
    }

    /// A file whose command was due when this run started: the runner has it (and removes
    /// it); its object was confirmed before the command became due.
    fn is_with_the_runner(&self, relative: &str, sha512: &str) -> bool {
        self.hooks
            .as_ref()
            .is_some_and(|h| h.borrow().was_due_at_open(relative, sha512))
    }
}

/// Removes a delivered file and the folders it leaves empty (up to the outbox).
fn remove_from_outbox(outbox: &Path, path: &Path) -> io::Result<()> {
    crate::state::remove_with_empty_parents(outbox, path)
}

/// Uploads what a previous run rebuilt but did not finish putting into the bucket.
pub fn drain_outbox(outbox: &Path, uploader: &Uploader) -> anyhow::Result<usize> {
    let mut delivered = 0;
    for entry in walkdir::WalkDir::new(outbox).min_depth(1) {
        let entry = match entry {
            Ok(entry) => entry,
            // The hook runner removes the files it is done with meanwhile.
            Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let relative: Vec<String> = path
            .strip_prefix(outbox)?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let relative = relative.join("/");
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let (size, sha512) = Sha512Stream::of_reader(file)?;
        let sha512 = crate::chunk::hash::to_hex(&sha512);
        if uploader.is_with_the_runner(&relative, &sha512) {
            continue;
        }
        info!(path = %relative, "uploading a file the previous run rebuilt but did not finish uploading");
        uploader.deliver(outbox, path, &relative, size, &sha512)?;
        delivered += 1;
    }
    Ok(delivered)
}

/// The outbox's reassembler, with every file it publishes put into the bucket (large files'
/// parts streamed while they arrive).
pub struct S3Sink {
    pub inner: Reassembler,
    pub outbox: PathBuf,
    pub uploader: Uploader,
    pub streams: Streams,
}

impl ChunkSink for S3Sink {
    const DESTINATION: &'static str = "the S3 bucket";

    fn accept(&mut self, chunk: &mut VerifiedChunk) -> io::Result<Accepted> {
        let accepted = self.inner.accept(chunk)?;
        let version = &chunk.version;
        match accepted {
            Accepted::Written | Accepted::Completed => {
                let keys = &self.uploader.keys;
                self.streams.take(chunk, || keys.key(&version.relative));
            }
            Accepted::HashMismatch | Accepted::Superseded => {
                self.streams.forget(&version.relative, &version.file_hash)
            }
            _ => {}
        }
        Ok(accepted)
    }

    fn is_in_progress(&self, id: &str) -> bool {
        self.inner.is_in_progress(id)
    }

    fn unflushed_bytes(&self) -> u64 {
        self.inner.unflushed_bytes()
    }

    fn missing_chunks(&self, id: &str) -> Option<String> {
        self.inner.missing_chunks(id)
    }

    fn flush(&mut self) -> io::Result<Vec<PublishedFile>> {
        let published = self.inner.flush()?;
        for (i, file) in published.iter().enumerate() {
            // Two versions of one file in one flush: the later one replaced the earlier in
            // the outbox, and only it goes to the bucket (as only it stays in a folder).
            if published[i + 1..]
                .iter()
                .any(|later| later.path == file.path)
            {
                self.streams.forget(&file.relative, &file.file_hash);
                continue;
            }
            match self.streams.finish(file) {
                Ok(Finished::Completed) => self.uploader.confirm_streamed(&self.outbox, file)?,
                Ok(Finished::NotStreamed) => self.uploader.deliver(
                    &self.outbox,
                    &file.path,
                    &file.relative,
                    file.size,
                    &file.file_hash,
                )?,
                Err(e) => {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, e.to_string()));
                }
            }
        }
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_openmsistreams_layout_or_the_prefix_given() {
        let topic = KeyLayout::new("xrd", None);
        assert_eq!(topic.key("run1/a.tif"), "xrd/run1/a.tif");
        assert_eq!(topic.key("a.tif"), "xrd/a.tif");
        assert_eq!(KeyLayout::new("xrd", Some("lab/raw")).key("a"), "lab/raw/a");
        assert_eq!(KeyLayout::new("xrd", Some("lab/")).key("a"), "lab/a");
        assert_eq!(KeyLayout::new("xrd", Some("")).key("a/b"), "a/b");
    }
}
