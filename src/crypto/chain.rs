//! Signed certificates and chains, as KafkaCrypto exchanges them. A chain is a msgpack array of
//! `bin` elements, each `signature(64) ‖ msgpack [max_age, poison, key, extra...]` signed by
//! the key of the element before it; the first is signed by a root of trust from the node's
//! allowlist, and the last (the *leaf*) carries the message itself (a key request, a key
//! reply) in the `key` slot and after it.
//!
//! A *poison* is a `bin` holding msgpack `[[name, value], ...]` restricting what the keys below
//! it may do: `usages` (list of text), `topics` (list of root topics, literal or `^regex`
//! matched at the start as Python's `re.match` does), `pathlen` (how many certificates may
//! follow; -1 for no limit). Restrictions add up along the chain: every declared usage and
//! topic list must admit the request, and the chain expires at its earliest non-zero
//! `max_age` (unix seconds, integer or float; 0 = never).

use regex::Regex;
use rmpv::Value;

use super::msgpack::{self, malformed, WireError};
use super::primitives::{open_signed, SigningKey};

/// What a key may do (`usages` in a poison).
pub mod usage {
    /// Produce: encrypt to a topic and answer key requests.
    pub const KEY_ENCRYPT: &str = "key-encrypt";
    /// Consume directly: request keys from producers.
    pub const KEY_ENCRYPT_REQUEST: &str = "key-encrypt-request";
    /// Consume through a controller: subscribe (the controller re-signs the request).
    pub const KEY_ENCRYPT_SUBSCRIBE: &str = "key-encrypt-subscribe";
    /// Publish allowlist entries.
    pub const KEY_ALLOWLIST: &str = "key-allowlist";
    /// Publish denylist entries.
    pub const KEY_DENYLIST: &str = "key-denylist";
}

/// The restrictions one certificate declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Poison {
    /// Allowed usages, if restricted.
    pub usages: Option<Vec<String>>,
    /// Allowed root topics (literal or `^regex`), if restricted.
    pub topics: Option<Vec<String>>,
    /// How many certificates may follow this one (-1: no limit), if limited.
    pub pathlen: Option<i64>,
}

impl Poison {
    /// The `bin` form: msgpack `[[name, value], ...]` in KafkaCrypto's order (usages, topics,
    /// pathlen), only the declared ones.
    pub fn to_bytes(&self) -> Vec<u8> {
        let list =
            |items: &[String]| Value::Array(items.iter().map(|s| msgpack::text(s)).collect());
        let mut entries = Vec::new();
        if let Some(u) = &self.usages {
            entries.push(Value::Array(vec![msgpack::text("usages"), list(u)]));
        }
        if let Some(t) = &self.topics {
            entries.push(Value::Array(vec![msgpack::text("topics"), list(t)]));
        }
        if let Some(p) = self.pathlen {
            entries.push(Value::Array(vec![msgpack::text("pathlen"), Value::from(p)]));
        }
        msgpack::encode(&Value::Array(entries))
    }

    /// Parses the `bin` form; unknown restriction names are refused (a restriction we do not
    /// understand must not be ignored).
    pub fn from_bytes(bytes: &[u8]) -> Result<Poison, WireError> {
        let value = msgpack::decode(bytes, "poison")?;
        let mut poison = Poison::default();
        for entry in msgpack::array(&value, None, "poison")? {
            let pair = msgpack::array(entry, Some(2), "poison entry")?;
            let strings = |v: &Value, what: &str| -> Result<Vec<String>, WireError> {
                msgpack::array(v, None, what)?
                    .iter()
                    .map(|s| msgpack::string(s, what).map(str::to_owned))
                    .collect()
            };
            match msgpack::string(&pair[0], "poison name")? {
                "usages" => poison.usages = Some(strings(&pair[1], "usages")?),
                "topics" => poison.topics = Some(strings(&pair[1], "topics")?),
                "pathlen" => {
                    let n = pair[1]
                        .as_i64()
                        .ok_or_else(|| malformed("pathlen: expected an integer"))?;
                    poison.pathlen = Some(n);
                }
                other => {
                    return Err(malformed(format!(
                        "unknown restriction '{other}' in a certificate"
                    )))
                }
            }
        }
        Ok(poison)
    }
}

/// One certificate's body (verified or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    /// Expiry, unix seconds; 0 = never.
    pub max_age: f64,
    /// Its restrictions.
    pub poison: Poison,
    /// The third element: the certified public key, or the leaf's payload.
    pub key: Value,
    /// Any further elements (the leaf's payload).
    pub extra: Vec<Value>,
}

impl Certificate {
    /// The msgpack body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let max_age = if self.max_age == 0.0 {
            Value::from(0)
        } else {
            Value::F64(self.max_age)
        };
        let mut items = vec![
            max_age,
            msgpack::bin(self.poison.to_bytes()),
            self.key.clone(),
        ];
        items.extend(self.extra.iter().cloned());
        msgpack::encode(&Value::Array(items))
    }

    /// Parses a msgpack body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Certificate, WireError> {
        let value = msgpack::decode(bytes, "certificate")?;
        let items = msgpack::array(&value, None, "certificate")?;
        if items.len() < 3 {
            return Err(malformed("certificate: fewer than 3 elements"));
        }
        Ok(Certificate {
            max_age: msgpack::number(&items[0], "certificate expiry")?,
            poison: Poison::from_bytes(msgpack::bytes(&items[1], "certificate restrictions")?)?,
            key: items[2].clone(),
            extra: items[3..].to_vec(),
        })
    }

    /// Signs the body with `signer`: one chain element.
    pub fn sign(&self, signer: &SigningKey) -> Vec<u8> {
        signer.sign_combined(&self.to_bytes())
    }

    /// The certified Ed25519 key (the `key` slot as 32 bytes).
    pub fn ed25519_key(&self) -> Result<[u8; 32], ChainError> {
        match &self.key {
            Value::Binary(b) if b.len() == 32 => Ok(b.as_slice().try_into().expect("32 bytes")),
            Value::Array(_) => Err(ChainError::UnsupportedKeyType),
            _ => Err(ChainError::Malformed(
                "certified key is not a 32-byte Ed25519 key".into(),
            )),
        }
    }
}

/// An allowlist entry: KafkaCrypto's unsigned `[0, poison(empty), root_public_key]`.
pub fn allowlist_entry(root: &[u8; 32]) -> Vec<u8> {
    Certificate {
        max_age: 0.0,
        poison: Poison::default(),
        key: msgpack::bin(root.to_vec()),
        extra: vec![],
    }
    .to_bytes()
}

/// Reads an allowlist entry's key (entries with restrictions are refused: we do not know how
/// KafkaCrypto would apply them).
pub fn parse_allowlist_entry(bytes: &[u8]) -> Result<[u8; 32], ChainError> {
    let cert = Certificate::from_bytes(bytes).map_err(|e| ChainError::Malformed(e.0))?;
    if cert.poison != Poison::default() || cert.max_age != 0.0 {
        return Err(ChainError::Malformed(
            "restricted allowlist entries are not supported".into(),
        ));
    }
    cert.ed25519_key()
}

/// Packs chain elements into a chain.
pub fn encode_chain(elements: &[Vec<u8>]) -> Vec<u8> {
    msgpack::encode(&Value::Array(
        elements.iter().map(|e| msgpack::bin(e.clone())).collect(),
    ))
}

/// Unpacks a chain into its elements.
pub fn decode_chain(bytes: &[u8]) -> Result<Vec<Vec<u8>>, ChainError> {
    let value = msgpack::decode(bytes, "chain").map_err(|e| ChainError::Malformed(e.0))?;
    let items = msgpack::array(&value, None, "chain").map_err(|e| ChainError::Malformed(e.0))?;
    if items.is_empty() || items.len() > MAX_CHAIN {
        return Err(ChainError::Malformed(format!(
            "chain of {} elements",
            items.len()
        )));
    }
    items
        .iter()
        .map(|v| msgpack::bytes(v, "chain element").map(<[u8]>::to_vec))
        .collect::<Result<_, _>>()
        .map_err(|e| ChainError::Malformed(e.0))
}

/// Longer chains are refused outright (real ones have 2 to 4 elements).
const MAX_CHAIN: usize = 16;

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// Not a chain.
    #[error("malformed chain: {0}")]
    Malformed(String),
    /// Post-quantum or other non-Ed25519 keys.
    #[error("the chain uses a key type openmsi does not support (only Ed25519)")]
    UnsupportedKeyType,
    /// No element is signed by a trusted root.
    #[error("the chain does not lead to a trusted root of trust (is the node provisioned by the same root?)")]
    Untrusted,
    /// An element's signature does not verify.
    #[error("certificate {0} of the chain has a bad signature")]
    BadSignature(usize),
    /// A key in it is denylisted.
    #[error("the chain contains a denylisted key")]
    Denylisted,
    /// Expired.
    #[error("the chain expired at unix time {0}")]
    Expired(f64),
    /// Too long for a pathlen restriction.
    #[error("the chain is longer than its certificates allow (pathlen)")]
    PathTooLong,
    /// The usage is not granted.
    #[error("the chain does not grant '{0}'")]
    UsageNotGranted(String),
    /// The topic is not granted.
    #[error("the chain does not grant the topic '{0}'")]
    TopicNotGranted(String),
}

/// The keys a node trusts and distrusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Roots of trust (and any key trusted outright).
    pub allow: Vec<[u8; 32]>,
    /// Keys refused wherever they appear (unless also allowlisted).
    pub deny: Vec<[u8; 32]>,
}

/// Validates `chain` for `usage` on `topic` (a root topic) at unix time `now`; returns the
/// leaf's body on success. An empty `usage` or `topic` is not checked (allow/deny list
/// entries name no topic; a replacement chain for a node is checked for no usage). The walk starts at the last element signed by an allowlisted key
/// (so a trusted intermediate overrides a distrusted parent) and follows signatures to the
/// leaf, adding up every certificate's restrictions.
pub fn validate(
    chain: &[u8],
    trust: &Trust,
    usage: &str,
    topic: &str,
    now: f64,
) -> Result<Certificate, ChainError> {
    let elements = decode_chain(chain)?;
    // Find where trust begins: the last element that an allowlisted key signed.
    let mut start = None;
    for (i, element) in elements.iter().enumerate() {
        if let Some(root) = trust
            .allow
            .iter()
            .find(|k| open_signed(k, element).is_some())
        {
            start = Some((i, *root));
        }
    }
    let (start, mut signer) = start.ok_or(ChainError::Untrusted)?;
    let mut usages: Vec<Vec<String>> = Vec::new();
    let mut topics: Vec<Vec<String>> = Vec::new();
    let mut expiry = f64::INFINITY;
    let mut remaining: Option<i64> = None;
    let mut leaf = None;
    for (i, element) in elements.iter().enumerate().skip(start) {
        let body = open_signed(&signer, element).ok_or(ChainError::BadSignature(i))?;
        let cert = Certificate::from_bytes(body).map_err(|e| ChainError::Malformed(e.0))?;
        if i > start {
            match remaining {
                Some(0) => return Err(ChainError::PathTooLong),
                Some(n) => remaining = Some(n - 1),
                None => {}
            }
        }
        if let Some(p) = cert.poison.pathlen.filter(|p| *p >= 0) {
            remaining = Some(remaining.map_or(p, |r| r.min(p)));
        }
        if cert.max_age != 0.0 {
            expiry = expiry.min(cert.max_age);
        }
        if let Some(u) = &cert.poison.usages {
            // Allow- and denylist publishers may not delegate (KafkaCrypto: pathlen 0).
            if u.iter()
                .any(|u| u == usage::KEY_ALLOWLIST || u == usage::KEY_DENYLIST)
            {
                remaining = Some(remaining.map_or(0, |r| r.min(0)));
            }
            usages.push(u.clone());
        }
        if let Some(t) = &cert.poison.topics {
            topics.push(t.clone());
        }
        let last = i + 1 == elements.len();
        if !last {
            let key = cert.ed25519_key()?;
            if trust.deny.contains(&key) && !trust.allow.contains(&key) {
                return Err(ChainError::Denylisted);
            }
            signer = key;
        } else {
            leaf = Some(cert);
        }
    }
    if trust.deny.contains(&signer) && !trust.allow.contains(&signer) {
        return Err(ChainError::Denylisted);
    }
    if expiry < now {
        return Err(ChainError::Expired(expiry));
    }
    if !usage.is_empty() && !usages.iter().all(|set| set.iter().any(|u| u == usage)) {
        return Err(ChainError::UsageNotGranted(usage.to_owned()));
    }
    if !topic.is_empty()
        && !topics
            .iter()
            .all(|set| set.iter().any(|t| topic_matches(t, topic)))
    {
        return Err(ChainError::TopicNotGranted(topic.to_owned()));
    }
    leaf.ok_or_else(|| ChainError::Malformed("empty chain".into()))
}

/// Whether a granted topic entry admits `topic`: equal, or for `^regex` a match at the start
/// (Python's `re.match`). An invalid pattern admits nothing.
pub fn topic_matches(granted: &str, topic: &str) -> bool {
    if granted.starts_with('^') {
        Regex::new(granted).is_ok_and(|re| re.is_match(topic))
    } else {
        granted == topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        root: SigningKey,
        provisioner: SigningKey,
        node: SigningKey,
    }

    fn poison(usages: &[&str], topics: Option<&[&str]>, pathlen: Option<i64>) -> Poison {
        Poison {
            usages: Some(usages.iter().map(|s| s.to_string()).collect()),
            topics: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            pathlen,
        }
    }

    fn cert(max_age: f64, poison: Poison, key: &SigningKey) -> Certificate {
        Certificate {
            max_age,
            poison,
            key: msgpack::bin(key.public().to_vec()),
            extra: vec![],
        }
    }

    fn pki() -> Pki {
        Pki {
            root: SigningKey::generate(),
            provisioner: SigningKey::generate(),
            node: SigningKey::generate(),
        }
    }

    /// [provisioner cert by root, node cert by provisioner, leaf by node].
    fn chain(p: &Pki, node_poison: Poison, leaf_poison: Poison, node_expiry: f64) -> Vec<u8> {
        let prov = cert(
            0.0,
            poison(
                &[usage::KEY_ENCRYPT, usage::KEY_ENCRYPT_REQUEST],
                None,
                None,
            ),
            &p.provisioner,
        )
        .sign(&p.root);
        let node = cert(node_expiry, node_poison, &p.node).sign(&p.provisioner);
        let leaf = Certificate {
            max_age: 2e9,
            poison: leaf_poison,
            key: msgpack::bin(vec![1, 2]),
            extra: vec![Value::from(7)],
        }
        .sign(&p.node);
        encode_chain(&[prov, node, leaf])
    }

    fn trust(p: &Pki) -> Trust {
        Trust {
            allow: vec![p.root.public()],
            deny: vec![],
        }
    }

    #[test]
    fn a_proper_chain_validates_and_returns_its_leaf() {
        let p = pki();
        let c = chain(
            &p,
            poison(&[usage::KEY_ENCRYPT], Some(&["xrd", "^lab-.*"]), Some(1)),
            poison(&[usage::KEY_ENCRYPT], Some(&["xrd"]), None),
            2e9,
        );
        let leaf = validate(&c, &trust(&p), usage::KEY_ENCRYPT, "xrd", 1.7e9).unwrap();
        assert_eq!(leaf.key, msgpack::bin(vec![1, 2]));
        assert_eq!(leaf.extra, vec![Value::from(7)]);
    }

    #[test]
    fn every_restriction_is_enforced() {
        let p = pki();
        let t = trust(&p);
        let node = || poison(&[usage::KEY_ENCRYPT], Some(&["xrd", "^lab-.*"]), Some(1));
        let leaf = || {
            poison(
                &[usage::KEY_ENCRYPT, usage::KEY_ENCRYPT_REQUEST],
                None,
                None,
            )
        };
        let c = chain(&p, node(), leaf(), 2e9);
        assert_eq!(
            validate(&c, &t, usage::KEY_ENCRYPT_REQUEST, "xrd", 1.7e9),
            Err(ChainError::UsageNotGranted("key-encrypt-request".into()))
        );
        assert_eq!(
            validate(&c, &t, usage::KEY_ENCRYPT, "other", 1.7e9),
            Err(ChainError::TopicNotGranted("other".into()))
        );
        assert!(validate(&c, &t, usage::KEY_ENCRYPT, "lab-7", 1.7e9).is_ok());
        assert!(matches!(
            validate(&c, &t, usage::KEY_ENCRYPT, "xrd", 2.1e9),
            Err(ChainError::Expired(_))
        ));
        let short = chain(
            &p,
            poison(&[usage::KEY_ENCRYPT], None, Some(0)),
            leaf(),
            0.0,
        );
        assert_eq!(
            validate(&short, &t, usage::KEY_ENCRYPT, "xrd", 1.7e9),
            Err(ChainError::PathTooLong)
        );
        let other_root = Trust {
            allow: vec![SigningKey::generate().public()],
            deny: vec![],
        };
        let verdict = |trust: &Trust| validate(&c, trust, usage::KEY_ENCRYPT, "xrd", 1.7e9);
        assert_eq!(verdict(&other_root), Err(ChainError::Untrusted));
        let denying = |key: &SigningKey| Trust {
            allow: vec![p.root.public()],
            deny: vec![key.public()],
        };
        assert_eq!(
            verdict(&denying(&p.provisioner)),
            Err(ChainError::Denylisted)
        );
        assert_eq!(verdict(&denying(&p.node)), Err(ChainError::Denylisted));
    }

    #[test]
    fn a_tampered_element_breaks_the_chain() {
        let p = pki();
        let c = chain(
            &p,
            poison(&[usage::KEY_ENCRYPT], None, None),
            poison(&[usage::KEY_ENCRYPT], None, None),
            0.0,
        );
        let verdict = |elements: &[Vec<u8>]| {
            validate(
                &encode_chain(elements),
                &trust(&p),
                usage::KEY_ENCRYPT,
                "xrd",
                1.7e9,
            )
        };
        let mut elements = decode_chain(&c).unwrap();
        let last = elements.last_mut().unwrap();
        let n = last.len();
        last[n - 1] ^= 1;
        assert_eq!(verdict(&elements), Err(ChainError::BadSignature(2)));
        // A leaf signed by a key the chain does not certify.
        let mut elements = decode_chain(&c).unwrap();
        *elements.last_mut().unwrap() = Certificate {
            max_age: 0.0,
            poison: Poison::default(),
            key: msgpack::bin(vec![]),
            extra: vec![],
        }
        .sign(&SigningKey::generate());
        assert_eq!(verdict(&elements), Err(ChainError::BadSignature(2)));
    }

    #[test]
    fn poison_round_trips_in_kafkacrypto_s_byte_form() {
        // From a chain written by KafkaCrypto's simple-provision (node certificate poison).
        let python = [
            0x93, 0x92, 0xa6, b'u', b's', b'a', b'g', b'e', b's', 0x91, 0xab, b'k', b'e', b'y',
            b'-', b'e', b'n', b'c', b'r', b'y', b'p', b't', 0x92, 0xa6, b't', b'o', b'p', b'i',
            b'c', b's', 0x92, 0xa3, b'x', b'r', b'd', 0xa5, b'o', b't', b'h', b'e', b'r', 0x92,
            0xa7, b'p', b'a', b't', b'h', b'l', b'e', b'n', 0x01,
        ];
        let parsed = Poison::from_bytes(&python).unwrap();
        assert_eq!(
            parsed,
            poison(&["key-encrypt"], Some(&["xrd", "other"]), Some(1))
        );
        assert_eq!(parsed.to_bytes(), python);
        assert!(
            Poison::from_bytes(&msgpack::encode(&Value::Array(vec![Value::Array(vec![
                msgpack::text("colour"),
                Value::from(1)
            ])])))
            .is_err()
        );
    }
}
