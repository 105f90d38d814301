//! The S3 requests s3-transfer makes, signed by `rusty-s3` (SigV4, no I/O of its own) and sent
//! by `ureq` (blocking, on the native TLS stack: OpenSSL here, SChannel on Windows), so the
//! data path stays on plain threads like the rest of openmsi. ARCHITECTURE.md says why these.

use std::io::Read;
use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::Agent;

use super::settings::S3Settings;

/// How long a signed request stays valid (it is sent at once; this only absorbs clock skew).
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// User metadata key of the file's SHA-512 (`x-amz-meta-sha512`, lowercase hex).
pub const SHA512_META: &str = "x-amz-meta-sha512";

/// An object's facts, from a HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// `sha512` user metadata, when the object has it.
    pub sha512: Option<String>,
    /// The ETag, without quotes.
    pub etag: String,
}

/// What went wrong with one request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum S3Error {
    /// No answer: refused, reset, timed out, TLS failed.
    #[error("{endpoint} did not answer {what}: {reason}")]
    Transport {
        what: String,
        endpoint: String,
        reason: String,
    },
    /// An answer with an error status (and, but for HEAD, S3's error code).
    #[error("{what} refused by the S3 server: HTTP {status}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        what: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// An answer that breaks S3's contract (a part's ETag that is not its MD5...).
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl S3Error {
    /// Worth trying again: no answer, a server error, throttling, or data damaged on the way.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Transport { .. } | S3Error::Invalid { .. } => true,
            S3Error::Refused { status, code, .. } => {
                *status >= 500
                    || *status == 408
                    || *status == 429
                    || matches!(
                        code.as_deref(),
                        Some("SlowDown" | "RequestTimeout" | "BadDigest" | "InternalError")
                    )
            }
        }
    }

    /// S3's error code, when the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            S3Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer with a success status.
struct Reply {
    headers: ureq::http::HeaderMap,
    body: String,
}

/// An ETag as the server gave it, and whether it can be checked against the MD5 of what was
/// sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag {
    pub value: String,
    /// False when the server encrypts the object with a KMS key or the customer's key: S3's
    /// ETag is then not the MD5 of the content (Content-MD5 is still checked by the server).
    pub is_content_md5: bool,
}

impl Etag {
    fn of(reply: &Reply, value: String) -> Self {
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        };
        let kms = header("x-amz-server-side-encryption").is_some_and(|v| v.starts_with("aws:kms"));
        let customer_key = header("x-amz-server-side-encryption-customer-algorithm").is_some();
        Etag {
            value,
            is_content_md5: !kms && !customer_key,
        }
    }
}

/// One bucket on one server, with credentials.
pub struct S3Client {
    bucket: Bucket,
    credentials: Credentials,
    agent: Agent,
    endpoint: String,
}

impl S3Client {
    /// A client for `bucket`; `connect_timeout` bounds each connection attempt.
    pub fn new(
        settings: &S3Settings,
        bucket: &str,
        connect_timeout: Duration,
    ) -> Result<Self, S3Error> {
        let invalid = |reason: String| S3Error::Invalid {
            what: format!("bucket {bucket:?}"),
            reason,
        };
        // Path style: works with every server (MinIO, Ceph, s3s-fs, AWS) and with IP endpoints.
        let bucket_ref = Bucket::new(
            settings.endpoint.clone(),
            UrlStyle::Path,
            bucket.to_string(),
            settings.region.clone(),
        )
        .map_err(|e| invalid(e.to_string()))?;
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            // A part is at most a few tens of MiB: minutes without progress is a dead server.
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self {
            bucket: bucket_ref,
            credentials: Credentials::new(
                settings.access_key_id.clone(),
                settings.secret_key.clone(),
            ),
            agent,
            endpoint: settings.endpoint.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// Lists at most one key: proves the server answers, the bucket exists and the
    /// credentials are accepted (a HEAD would carry no error code to tell these apart).
    pub fn check_bucket(&self) -> Result<(), S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
        action.with_max_keys(1);
        self.send("GET", action, &[], None, "listing the bucket")
            .map(|_| ())
    }

    /// The object's size, `sha512` metadata and ETag; None when there is no such object.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let action = self.bucket.head_object(Some(&self.credentials), key);
        match self.send("HEAD", action, &[], None, &format!("HEAD {key}")) {
            Ok(reply) => {
                let header = |name: &str| {
                    reply
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                Ok(Some(ObjectInfo {
                    size: header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    sha512: header(SHA512_META).map(|v| v.to_ascii_lowercase()),
                    etag: header("etag").map(|e| unquote(&e)).unwrap_or_default(),
                }))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One PUT of the whole object, its MD5 checked by the server (`Content-MD5`) and its
    /// SHA-512 set as metadata in the same request. Returns the ETag.
    pub fn put(
        &self,
        key: &str,
        body: &[u8],
        md5: &[u8; 16],
        sha512: &str,
    ) -> Result<Etag, S3Error> {
        let action = self.bucket.put_object(Some(&self.credentials), key);
        let headers = [
            ("content-md5", base64_of(md5)),
            (SHA512_META, sha512.to_string()),
        ];
        let reply = self.send("PUT", action, &headers, Some(body), &format!("PUT {key}"))?;
        Ok(Etag::of(&reply, etag_of(&reply)))
    }

    /// Starts a multipart upload with the file's SHA-512 as metadata; returns its id.
    pub fn create_multipart(&self, key: &str, sha512: &str) -> Result<String, S3Error> {
        let action = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
        let what = format!("starting a multipart upload of {key}");
        let headers = [(SHA512_META, sha512.to_string())];
        let reply = self.send("POST", action, &headers, Some(&[]), &what)?;
        CreateMultipartUpload::parse_response(&reply.body)
            .map(|r| r.upload_id().to_string())
            .map_err(|e| S3Error::Invalid {
                what,
                reason: format!("unreadable answer: {e}"),
            })
    }

    /// Uploads part `number` (1-based), its MD5 checked by the server; returns its ETag.
    pub fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: &[u8],
        md5: &[u8; 16],
    ) -> Result<Etag, S3Error> {
        let action = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload_id);
        let what = format!("part {number} of {key}");
        let headers = [("content-md5", base64_of(md5))];
        let reply = self.send("PUT", action, &headers, Some(body), &what)?;
        Ok(Etag::of(&reply, etag_of(&reply)))
    }

    /// Completes a multipart upload from its parts' ETags, in order; returns the object's ETag.
    pub fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<Etag, S3Error> {
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        )
        .body();
        let what = format!("completing the multipart upload of {key}");
        let reply = self.send_url("POST", url, &[], Some(body.as_bytes()), &what)?;
        // S3 may answer 200 and report the failure in the body.
        if let Some(refused) = error_in(&reply.body, 200, &what) {
            return Err(refused);
        }
        let etag = between(&reply.body, "<ETag>", "</ETag>")
            .map(|e| unquote(&e.replace("&quot;", "\"")))
            .unwrap_or_default();
        Ok(Etag::of(&reply, etag))
    }

    /// Aborts a multipart upload; its parts are deleted. An upload already gone is fine.
    pub fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let action = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id);
        let what = format!("aborting the multipart upload of {key}");
        match self.send("DELETE", action, &[], None, &what) {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Signs `action` with `headers` among its signed headers and sends it with them.
    fn send<'a>(
        &self,
        method: &str,
        mut action: impl S3Action<'a>,
        headers: &[(&'static str, String)],
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Reply, S3Error> {
        for (name, value) in headers {
            action.headers_mut().insert(*name, value.clone());
        }
        let url = action.sign(SIGNED_FOR);
        self.send_url(method, url, headers, body, what)
    }

    fn send_url(
        &self,
        method: &str,
        url: url::Url,
        headers: &[(&'static str, String)],
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Reply, S3Error> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str());
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let transport = |reason: String| S3Error::Transport {
            what: what.to_string(),
            endpoint: self.endpoint.clone(),
            reason,
        };
        let result = match body {
            Some(body) => self
                .agent
                .run(request.body(body).map_err(|e| transport(e.to_string()))?),
            None => self
                .agent
                .run(request.body(()).map_err(|e| transport(e.to_string()))?),
        };
        let mut response = result.map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        let mut text = String::new();
        if method != "HEAD" {
            // Error bodies and XML answers are small; a GET of data is never made here.
            let _ = response
                .body_mut()
                .as_reader()
                .take(1 << 20)
                .read_to_string(&mut text);
        }
        if !(200..300).contains(&status) {
            return Err(error_in(&text, status, what).unwrap_or(S3Error::Refused {
                what: what.to_string(),
                status,
                code: None,
                message: None,
            }));
        }
        Ok(Reply {
            headers: response.headers().clone(),
            body: text,
        })
    }
}

/// S3's `<Error><Code>..</Code><Message>..</Message></Error>` body as an error.
fn error_in(body: &str, status: u16, what: &str) -> Option<S3Error> {
    if !body.contains("<Error>") {
        return None;
    }
    Some(S3Error::Refused {
        what: what.to_string(),
        status: if status < 300 { 500 } else { status },
        code: between(body, "<Code>", "</Code>"),
        message: between(body, "<Message>", "</Message>"),
    })
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_string())
}

fn etag_of(reply: &Reply) -> String {
    reply
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(unquote)
        .unwrap_or_default()
}

fn unquote(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(headers: &[(&'static str, &str)]) -> Reply {
        let mut map = ureq::http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        Reply {
            headers: map,
            body: String::new(),
        }
    }

    #[test]
    fn an_etag_is_the_contents_md5_unless_the_server_encrypts_with_its_own_or_the_customers_key() {
        let md5 =
            |headers: &[(&'static str, &str)]| Etag::of(&reply(headers), "e".into()).is_content_md5;
        assert!(md5(&[]));
        assert!(md5(&[("x-amz-server-side-encryption", "AES256")]));
        assert!(!md5(&[("x-amz-server-side-encryption", "aws:kms")]));
        assert!(!md5(&[("x-amz-server-side-encryption", "aws:kms:dsse")]));
        assert!(!md5(&[(
            "x-amz-server-side-encryption-customer-algorithm",
            "AES256"
        )]));
    }
}
