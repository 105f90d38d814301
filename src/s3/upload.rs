//! Putting one verified file into the bucket: skipped when the object already holds the same
//! bytes, one PUT for a small file, a multipart upload streamed part by part for a large one;
//! every request checked by the server (`Content-MD5`), the returned ETags checked against our
//! own MD5s (a multipart object's ETag is the MD5 of its parts' MD5s), then a HEAD confirms
//! size and `sha512` before the file counts as done. Memory: one part.
//!
//! A multipart upload's id is written to the journal before its first part and removed after
//! it is completed or aborted, so one interrupted by a crash is aborted at the next start
//! instead of leaking its parts on the server.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::hash::MessageDigest;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{Etag, S3Client, S3Error};
use crate::chunk::hash::{to_hex, Sha512Stream};

/// Default part size: 8 MiB, the AWS CLI's, keeps memory small (a streamed file holds three
/// parts at most) and requests few enough (a 4 GiB file is 512 parts; files over ~78 GiB get
/// larger parts, see [`part_size_for`]).
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// S3's most parts per upload: the part size grows for files that would need more.
const MAX_PARTS: u64 = 10_000;

/// A multipart upload logs how far it is this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Waits between attempts of a failing request: 1 s doubling to this.
const RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// The object already had this size and `sha512`.
    AlreadyThere,
    /// Written (one PUT or a multipart upload).
    Written,
}

/// Why a file did not end as its object.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    S3(#[from] S3Error),
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} changed on disk: its SHA-512 is no longer {expected}", path.display())]
    LocalChanged { path: PathBuf, expected: String },
    #[error("stopped before {key} was complete")]
    Cancelled { key: String },
}

impl UploadError {
    /// A problem that another attempt may not have (the server or the network).
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadError::S3(e) if e.is_transient())
    }
}

/// Multipart uploads in flight, one small file each, so a crash cannot leak one.
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal in `dir` (created).
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| crate::state::annotate_create(e, dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn entry(&self, upload_id: &str) -> PathBuf {
        // Upload ids are opaque: keep the file name to safe characters.
        let safe: String = upload_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.dir.join(format!("{safe}.upload"))
    }

    fn record(&self, key: &str, upload_id: &str) -> io::Result<()> {
        crate::state::atomic::write_atomically(
            &self.entry(upload_id),
            format!("{upload_id}\n{key}\n").as_bytes(),
        )
    }

    fn forget(&self, upload_id: &str) {
        let _ = std::fs::remove_file(self.entry(upload_id));
    }

    /// Aborts every upload a previous run left unfinished; those that cannot be aborted now
    /// (server down) stay in the journal for the next start.
    pub fn abort_leftovers(&self, client: &S3Client) -> io::Result<usize> {
        let mut aborted = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = text.lines();
            let (Some(upload_id), Some(key)) = (lines.next(), lines.next()) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            match client.abort_multipart(key, upload_id) {
                Ok(()) => {
                    info!(
                        key,
                        "aborted a multipart upload interrupted by the previous run"
                    );
                    let _ = std::fs::remove_file(&path);
                    aborted += 1;
                }
                Err(e) => {
                    warn!(key, error = %e, "could not abort an interrupted multipart upload; trying again at the next start")
                }
            }
        }
        Ok(aborted)
    }
}

/// Uploads files to one bucket.
pub struct ObjectWriter<'a> {
    pub client: &'a S3Client,
    pub journal: &'a Journal,
    pub part_size: usize,
    pub cancel: &'a CancellationToken,
}

impl ObjectWriter<'_> {
    /// Makes `key` hold the file at `path` (`size` bytes, SHA-512 `sha512`), retrying what
    /// fails for a transient reason (with back-off, until it works or a stop is requested).
    pub fn put_file(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        sha512: &str,
    ) -> Result<Uploaded, UploadError> {
        self.retrying(
            key,
            "upload to S3 failed; trying again (nothing is committed before it is done)",
            || self.try_put_file(path, key, size, sha512),
        )
    }

    /// Runs `attempt` until it succeeds or fails for good, waiting between transient failures
    /// (1 s doubling to [`RETRY_MAX_WAIT`]; each logged as `failed`) unless a stop is
    /// requested.
    fn retrying<T, E: Into<UploadError>>(
        &self,
        key: &str,
        failed: &str,
        mut attempt: impl FnMut() -> Result<T, E>,
    ) -> Result<T, UploadError> {
        let mut wait = Duration::from_secs(1);
        loop {
            match attempt().map_err(Into::into) {
                Err(e) if e.is_transient() && !self.cancel.is_cancelled() => {
                    warn!(key, error = %e, retry_in_s = wait.as_secs(), "{failed}");
                    if self.sleep(wait) {
                        return Err(UploadError::Cancelled { key: key.into() });
                    }
                    wait = (wait * 2).min(RETRY_MAX_WAIT);
                }
                other => return other,
            }
        }
    }

    /// Sleeps `d` unless a stop comes first (then true).
    fn sleep(&self, d: Duration) -> bool {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            if self.cancel.is_cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.cancel.is_cancelled()
    }

    fn try_put_file(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        sha512: &str,
    ) -> Result<Uploaded, UploadError> {
        if let Some(there) = self.client.head(key)? {
            if there.size == size && there.sha512.as_deref() == Some(sha512) {
                return Ok(Uploaded::AlreadyThere);
            }
        }
        let part_size = part_size_for(size, self.part_size);
        let mut file = File::open(path).map_err(|source| UploadError::Read {
            path: path.into(),
            source,
        })?;
        let mut whole = Sha512Stream::new();
        if size <= part_size as u64 {
            let mut body = Vec::with_capacity(size as usize);
            read_up_to(&mut file, &mut body, part_size, path)?;
            whole.update(&body);
            self.check_local(&mut whole, path, sha512)?;
            let md5 = md5_of(&body);
            let etag = self.client.put(key, &body, &md5, sha512)?;
            expect_etag(&etag, &to_hex(&md5), key)?;
        } else {
            self.multipart(&mut file, path, key, sha512, part_size, &mut whole)?;
        }
        self.confirm(key, size, sha512)?;
        Ok(Uploaded::Written)
    }

    fn multipart(
        &self,
        file: &mut File,
        path: &Path,
        key: &str,
        sha512: &str,
        part_size: usize,
        whole: &mut Sha512Stream,
    ) -> Result<(), UploadError> {
        let upload_id = self.start_multipart(key, sha512)?;
        let result = self.send_parts(file, path, key, sha512, part_size, whole, &upload_id);
        if result.is_err() {
            self.abort(key, &upload_id);
        }
        result
    }

    /// Starts a multipart upload with the file's SHA-512 as metadata and journals it before
    /// any part is sent. Returns its id.
    pub fn start_multipart(&self, key: &str, sha512: &str) -> Result<String, UploadError> {
        let upload_id = self.client.create_multipart(key, sha512)?;
        self.journal
            .record(key, &upload_id)
            .map_err(|source| UploadError::Read {
                path: self.journal.dir.clone(),
                source,
            })?;
        Ok(upload_id)
    }

    /// Aborts a multipart upload (its parts would otherwise stay on the server, billed, for
    /// ever); it leaves the journal once the server confirmed, else the next start aborts it.
    pub fn abort(&self, key: &str, upload_id: &str) {
        if self.client.abort_multipart(key, upload_id).is_ok() {
            self.journal.forget(upload_id);
        }
    }

    /// Sends part `number`, tried again on its own when it fails transiently, and checks its
    /// ETag against its MD5. Returns the ETag.
    pub fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: &[u8],
        md5: &[u8; 16],
    ) -> Result<String, UploadError> {
        let etag = self.part_with_retries(key, upload_id, number, body, md5)?;
        expect_etag(&etag, &to_hex(md5), key)?;
        Ok(etag.value)
    }

    /// Completes a multipart upload (retried while it fails transiently), checks the object's
    /// ETag against `expected` and takes the upload out of the journal.
    pub fn complete(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
        expected: &str,
    ) -> Result<(), UploadError> {
        let etag = self.retrying(key, "completing the upload failed; trying again", || {
            self.client.complete_multipart(key, upload_id, etags)
        })?;
        self.journal.forget(upload_id);
        expect_etag(&etag, expected, key)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_parts(
        &self,
        file: &mut File,
        path: &Path,
        key: &str,
        sha512: &str,
        part_size: usize,
        whole: &mut Sha512Stream,
        upload_id: &str,
    ) -> Result<(), UploadError> {
        let mut body = Vec::with_capacity(part_size);
        let mut etags = Vec::new();
        let mut md5s = Vec::new();
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let started = std::time::Instant::now();
        let mut last_progress = started;
        let mut sent = 0u64;
        for number in 1u16.. {
            // A large object takes a while: say how far it is, as downloads do.
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = std::time::Instant::now();
                info!(
                    key,
                    percent = format!("{:.1}", 100.0 * sent as f64 / size.max(1) as f64),
                    done_mb = format!("{:.1}", sent as f64 / 1e6),
                    mb_per_s =
                        format!("{:.1}", sent as f64 / 1e6 / started.elapsed().as_secs_f64()),
                    "uploading"
                );
            }
            if self.cancel.is_cancelled() {
                return Err(UploadError::Cancelled { key: key.into() });
            }
            body.clear();
            read_up_to(file, &mut body, part_size, path)?;
            if body.is_empty() {
                break;
            }
            whole.update(&body);
            let md5 = md5_of(&body);
            etags.push(self.send_part(key, upload_id, number, &body, &md5)?);
            md5s.extend_from_slice(&md5);
            sent += body.len() as u64;
        }
        self.check_local(whole, path, sha512)?;
        // S3's multipart ETag: the MD5 of the parts' MD5s, then the part count.
        let expected = format!("{}-{}", to_hex(&md5_of(&md5s)), etags.len());
        self.complete(key, upload_id, &etags, &expected)
    }

    /// One part, tried again on its own when it fails transiently (the parts before it stay).
    fn part_with_retries(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: &[u8],
        md5: &[u8; 16],
    ) -> Result<Etag, UploadError> {
        self.retrying(key, "a part failed; sending it again", || {
            self.client.upload_part(key, upload_id, number, body, md5)
        })
    }

    /// The bytes read are the verified file's: a file changed on disk since is not uploaded.
    fn check_local(
        &self,
        whole: &mut Sha512Stream,
        path: &Path,
        sha512: &str,
    ) -> Result<(), UploadError> {
        let got = to_hex(&std::mem::take(whole).finalize());
        if got != sha512 {
            return Err(UploadError::LocalChanged {
                path: path.into(),
                expected: sha512.into(),
            });
        }
        Ok(())
    }

    /// A HEAD after the upload: the object has the file's size and SHA-512.
    pub fn confirm(&self, key: &str, size: u64, sha512: &str) -> Result<(), UploadError> {
        let invalid = |reason: String| {
            UploadError::S3(S3Error::Invalid {
                what: format!("{key} after its upload"),
                reason,
            })
        };
        match self.client.head(key)? {
            None => Err(invalid("the object is not there".into())),
            Some(info) if info.size != size => Err(invalid(format!(
                "the object has {} bytes, the file {size}",
                info.size
            ))),
            Some(info) if info.sha512.as_deref() != Some(sha512) => Err(invalid(format!(
                "its sha512 metadata is {:?}, the file's {sha512}",
                info.sha512
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// The part size for a file of `size` bytes: `wanted`, or larger where `wanted` would need
/// more parts than S3 allows.
pub fn part_size_for(size: u64, wanted: usize) -> usize {
    let at_least = size.div_ceil(MAX_PARTS) as usize;
    wanted.max(at_least).max(MIN_PART_SIZE)
}

/// Appends up to `limit` bytes of `file` to `body` (fewer only at its end).
fn read_up_to(
    file: &mut File,
    body: &mut Vec<u8>,
    limit: usize,
    path: &Path,
) -> Result<(), UploadError> {
    file.by_ref()
        .take(limit as u64)
        .read_to_end(body)
        .map(|_| ())
        .map_err(|source| UploadError::Read {
            path: path.into(),
            source,
        })
}

/// The MD5 of `bytes` (what `Content-MD5` and S3's ETags are made of).
pub fn md5_of(bytes: &[u8]) -> [u8; 16] {
    let digest = openssl::hash::hash(MessageDigest::md5(), bytes).expect("OpenSSL has MD5");
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest);
    out
}

/// The server's ETag must be the one its checksum gives: anything else means the bytes it
/// stored are not the bytes sent. A server that encrypts with a KMS key or the customer's key
/// says so, and its ETags are not MD5s; one that gives ETags that are not MD5-shaped at all is
/// not checked either. Either way the server checked Content-MD5, and the HEAD check holds.
fn expect_etag(got: &Etag, expected: &str, key: &str) -> Result<(), UploadError> {
    let md5_shaped = |e: &str| {
        let hex = e.split('-').next().unwrap_or("");
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let value = &got.value;
    if !got.is_content_md5 || value.eq_ignore_ascii_case(expected) || !md5_shaped(value) {
        return Ok(());
    }
    Err(UploadError::S3(S3Error::Invalid {
        what: key.to_string(),
        reason: format!("the server's ETag {value} is not the {expected} of the bytes sent"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_only_for_files_that_would_need_more_than_ten_thousand() {
        assert_eq!(part_size_for(1 << 30, DEFAULT_PART_SIZE), DEFAULT_PART_SIZE);
        assert_eq!(part_size_for(10, 1), MIN_PART_SIZE);
        let huge = 500u64 << 30;
        let part = part_size_for(huge, DEFAULT_PART_SIZE) as u64;
        assert!(part * MAX_PARTS >= huge && part > DEFAULT_PART_SIZE as u64);
    }

    #[test]
    fn an_etag_that_is_not_the_md5_of_the_bytes_sent_is_an_error() {
        let etag = |value: &str| Etag {
            value: value.to_string(),
            is_content_md5: true,
        };
        let md5 = to_hex(&md5_of(b"abc"));
        assert!(expect_etag(&etag(&md5), &md5, "k").is_ok());
        assert!(expect_etag(&etag(&md5.to_uppercase()), &md5, "k").is_ok());
        assert!(expect_etag(&etag(&"0".repeat(32)), &md5, "k").is_err());
        let three_parts = format!("{}-3", "0".repeat(32));
        assert!(expect_etag(&etag(&three_parts), &format!("{md5}-3"), "k").is_err());
        // Not MD5-shaped: left to the HEAD check.
        assert!(expect_etag(&etag("opaque"), &md5, "k").is_ok());
        // Encrypted with a KMS key: the ETag is not the MD5 (the server checked Content-MD5).
        let kms = Etag {
            value: "0".repeat(32),
            is_content_md5: false,
        };
        assert!(expect_etag(&kms, &md5, "k").is_ok());
    }
}
