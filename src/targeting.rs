//! Host targeting: files addressed to some hosts of a fleet.
//!
//! An uploader given `--to-host NAME` (repeatable) adds one `hostname` header per target to every
//! chunk message ([`HostTargets`], an upload [`Envelope`]). A downloader keeps a message when it
//! has no `hostname` header (meant for everyone) or one equal to its own name, compared without
//! regard to ASCII case ([`ForHost`], a download [`Opener`]); other messages are skipped without
//! being written anywhere, counted, and their offsets committed.
//!
//! One header per target (Kafka headers may repeat) rather than one header listing them: a name
//! never needs quoting or a separator, and a message for a single host carries exactly the
//! `hostname` header Knot Resolver's client compares with its own name.

use crate::contract::MessagePosition;
use crate::contract::{ChunkMessage, Envelope};
use crate::contract::{Opened, Opener, RawMessage};

/// The header that names a target host (Knot Resolver's name for it).
pub const HOSTNAME_HEADER: &str = "hostname";

/// Longest host name accepted (DNS allows 253 characters).
const MAX_HOST_NAME: usize = 253;

/// Why a name given to `--to-host` or `--host` cannot be a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    #[error("a host name must not be empty")]
    Empty,
    #[error("host name of {0} characters is longer than {MAX_HOST_NAME}")]
    TooLong(usize),
    #[error("host name {0:?} contains spaces or control characters")]
    Spaces(String),
}

/// A `--to-host` value that is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--to-host {host:?}: {source}")]
pub struct TargetError {
    /// The value given.
    pub host: String,
    /// What is wrong with it.
    #[source]
    pub source: HostNameError,
}

/// Checks a name given to `--to-host` or `--host`.
pub fn validate_host_name(name: &str) -> Result<(), HostNameError> {
    if name.is_empty() {
        return Err(HostNameError::Empty);
    }
    if name.len() > MAX_HOST_NAME {
        return Err(HostNameError::TooLong(name.len()));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(HostNameError::Spaces(name.to_string()));
    }
    Ok(())
}

/// The upload side: one `hostname` header per target on every chunk message.
#[derive(Debug, Clone)]
pub struct HostTargets {
    hosts: Vec<String>,
}

impl HostTargets {
    /// Targets `hosts` (validated, duplicates ignored); None when there are none.
    pub fn new(hosts: &[String]) -> Result<Option<Self>, TargetError> {
        let mut unique: Vec<String> = Vec::new();
        for h in hosts {
            validate_host_name(h).map_err(|source| TargetError {
                host: h.clone(),
                source,
            })?;
            if !unique.iter().any(|u| u.eq_ignore_ascii_case(h)) {
                unique.push(h.clone());
            }
        }
        Ok((!unique.is_empty()).then_some(Self { hosts: unique }))
    }

    /// The target hosts.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
}

/// Bytes a header costs on the wire beyond its name and value (varint lengths).
const HEADER_FRAMING: usize = 16;

impl Envelope for HostTargets {
    fn seal(&self, message: &mut ChunkMessage) {
        for host in &self.hosts {
            message
                .headers
                .push((HOSTNAME_HEADER.to_string(), host.as_bytes().to_vec()));
        }
    }

    fn overhead(&self) -> usize {
        self.hosts
            .iter()
            .map(|h| HOSTNAME_HEADER.len() + h.len() + HEADER_FRAMING)
            .sum()
    }
}

/// True when a message with `headers` is meant for `host`: no `hostname` header at all, or
/// one equal to `host` (ASCII case-insensitive).
pub fn is_addressed_to(headers: &[(String, Vec<u8>)], host: &str) -> bool {
    let mut targeted = false;
    for (name, value) in headers {
        if name == HOSTNAME_HEADER {
            targeted = true;
            if value.eq_ignore_ascii_case(host.as_bytes()) {
                return true;
            }
        }
    }
    !targeted
}

/// The download side: passes messages meant for `host` to the inner opener, and reports the
/// others as not for us.
pub struct ForHost<O> {
    host: String,
    inner: O,
}

impl<O: Opener> ForHost<O> {
    /// Selects for `host`, then opens with `inner`.
    pub fn new(host: String, inner: O) -> Self {
        Self { host, inner }
    }
}

impl<O: Opener> Opener for ForHost<O> {
    fn open(&self, message: RawMessage, at: MessagePosition) -> Opened {
        if is_addressed_to(&message.headers, &self.host) {
            self.inner.open(message, at)
        } else {
            Opened::NotForUs
        }
    }

    // Set-aside messages were selected when first read (and kept ones have no headers).
    fn open_kept(&self, message: RawMessage, at: MessagePosition) -> Opened {
        self.inner.open_kept(message, at)
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn decrypts(&self) -> bool {
        self.inner.decrypts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Plaintext;

    fn headers(hosts: &[&str]) -> Vec<(String, Vec<u8>)> {
        hosts
            .iter()
            .map(|h| (HOSTNAME_HEADER.to_string(), h.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn untargeted_messages_are_for_everyone_targeted_ones_for_their_hosts() {
        assert!(is_addressed_to(&[], "a"));
        assert!(is_addressed_to(
            &[("other".into(), b"x".to_vec())],
            "resolver-1"
        ));
        assert!(is_addressed_to(&headers(&["Resolver-1"]), "resolver-1"));
        assert!(is_addressed_to(
            &headers(&["r2", "resolver-1"]),
            "RESOLVER-1"
        ));
        assert!(!is_addressed_to(&headers(&["r2"]), "resolver-1"));
        assert!(!is_addressed_to(&headers(&["resolver-10"]), "resolver-1"));
    }

    #[test]
    fn targets_add_one_header_each_within_their_overhead() {
        let t = HostTargets::new(&["a".into(), "bb".into(), "A".into()])
            .unwrap()
            .unwrap();
        assert_eq!(t.hosts(), ["a", "bb"]);
        let mut m = ChunkMessage::default();
        t.seal(&mut m);
        assert_eq!(m.headers, headers(&["a", "bb"]));
        let bytes: usize = m.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes <= t.overhead());
        assert!(HostTargets::new(&[]).unwrap().is_none());
        assert!(HostTargets::new(&["bad host".into()]).is_err());
        assert!(HostTargets::new(&["".into()]).is_err());
    }

    #[test]
    fn for_host_skips_other_hosts_messages() {
        let opener = ForHost::new("me".into(), Plaintext);
        let at = MessagePosition {
            partition: 0,
            offset: 0,
        };
        let mine = RawMessage {
            headers: headers(&["ME"]),
            ..Default::default()
        };
        assert!(matches!(opener.open(mine, at), Opened::Readable(_)));
        let theirs = RawMessage {
            headers: headers(&["you"]),
            ..Default::default()
        };
        assert!(matches!(opener.open(theirs, at), Opened::NotForUs));
    }
}
