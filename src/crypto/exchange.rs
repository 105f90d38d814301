//! The key exchange messages, as KafkaCrypto sends them on `<root>.subs`, `<root>.reqs` and
//! `<root>.keys` (pure functions; [`super::keyservice`] moves them through Kafka).
//!
//! - **Request** (consumer → producers): message key msgpack `[key_id, ...]` (the key ids it
//!   needs); value the consumer's chain plus a leaf `[expiry, poison(topics = [root], usages =
//!   [key-encrypt-request, key-encrypt-subscribe]), [ephemeral X25519 public key], random0]`.
//! - **Reply** (producer → consumer): message key msgpack `[key_id, ...]` (those included);
//!   value the producer's chain plus a leaf `[expiry, poison(topics = [root], usages =
//!   [key-encrypt]), [producer's ephemeral public key], [random0, random1], nonce ‖
//!   secretbox(msgpack [key_id, secret, key_id, secret, ...], shared))`, with shared =
//!   SHA-256(root ‖ random0 ‖ random1 ‖ X25519(ephemeral secret, peer's ephemeral public))[..32].
//!
//! A reply is accepted only for a request still pending here (its random0), once: a replayed
//! reply finds its random0 gone. Both sides check the other's chain: the requester must be
//! granted `key-encrypt-request` on the root, the replier `key-encrypt`.

use rmpv::Value;

use super::chain::{self, usage, Certificate, ChainError, Poison, Trust};
use super::msgpack::{self, WireError};
use super::node::Node;
use super::primitives::{
    random_bytes, secretbox_open, secretbox_seal, sha256, x25519, x25519_keypair, Secret,
    SigningKey,
};

/// A message to produce: (key, value).
pub type KafkaMessage = (Vec<u8>, Vec<u8>);

/// A request sent and not yet answered: what is needed to open its reply.
pub struct PendingRequest {
    /// The root it asked keys for.
    pub root: String,
    /// The key ids asked for.
    pub wanted: Vec<[u8; 32]>,
    random0: [u8; 32],
    ephemeral: Secret,
}

/// Why an exchange message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The sender's chain does not entitle it.
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// Malformed.
    #[error("malformed key exchange message: {0}")]
    Malformed(String),
    /// A reply to no request of ours (another consumer's, or a replay of one already used).
    #[error("a key reply to a request this process did not make or already answered (replayed?)")]
    NotOurs,
    /// The reply's box does not open.
    #[error("the key reply does not decrypt (tampered with, or not for us)")]
    Undecryptable,
}

impl From<WireError> for ExchangeError {
    fn from(e: WireError) -> Self {
        ExchangeError::Malformed(e.0)
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Who this process is in the exchange: its signing key and certificate chain, whom it
/// trusts, and how long what it signs is valid. The chain and the trust can change at run time
/// (the global `chains`, `allowlist` and `denylist` topics), so they are borrowed per call.
#[derive(Clone, Copy)]
pub struct Identity<'a> {
    /// The node's signing key.
    pub signing: &'a SigningKey,
    /// The node's certificate chain.
    pub chain: &'a [u8],
    /// Roots of trust and distrusted keys.
    pub trust: &'a Trust,
    /// Lifetime of what it signs, seconds.
    pub max_age: f64,
}

impl Node {
    /// The node's identity as loaded from its files.
    pub fn identity(&self) -> Identity<'_> {
        Identity {
            signing: &self.signing,
            chain: &self.chains[0],
            trust: &self.trust,
            max_age: self.max_age,
        }
    }
}

/// The node's chain with `leaf` (signed by the node) appended.
fn signed_chain(me: &Identity<'_>, leaf: &Certificate) -> Result<Vec<u8>, ExchangeError> {
    let mut elements = chain::decode_chain(me.chain)?;
    elements.push(leaf.sign(me.signing));
    Ok(chain::encode_chain(&elements))
}

/// msgpack `[key_id, ...]`.
pub fn key_id_list(ids: &[[u8; 32]]) -> Vec<u8> {
    msgpack::encode(&Value::Array(
        ids.iter().map(|k| msgpack::bin(k.to_vec())).collect(),
    ))
}

/// Reads a msgpack `[key_id, ...]` (ids that are not 32 bytes are ignored: the legacy short
/// form, which openmsi does not produce).
pub fn parse_key_id_list(bytes: &[u8]) -> Result<Vec<[u8; 32]>, ExchangeError> {
    let value = msgpack::decode(bytes, "key id list")?;
    Ok(msgpack::array(&value, None, "key id list")?
        .iter()
        .filter_map(|v| msgpack::fixed::<32>(v, "key id").ok())
        .collect())
}

/// A key request for `wanted` on `root`: (message key, message value, pending state).
pub fn make_request(
    me: &Identity<'_>,
    root: &str,
    wanted: &[[u8; 32]],
    now: f64,
) -> Result<(Vec<u8>, Vec<u8>, PendingRequest), ExchangeError> {
    let (ephemeral, public) = x25519_keypair();
    let random0 = random_bytes::<32>();
    let leaf = Certificate {
        max_age: now + me.max_age,
        poison: Poison {
            topics: Some(vec![root.to_owned()]),
            usages: Some(strings(&[
                usage::KEY_ENCRYPT_REQUEST,
                usage::KEY_ENCRYPT_SUBSCRIBE,
            ])),
            pathlen: None,
        },
        key: Value::Array(vec![msgpack::bin(public.to_vec())]),
        extra: vec![msgpack::bin(random0.to_vec())],
    };
    let value = signed_chain(me, &leaf)?;
    Ok((
        key_id_list(wanted),
        value,
        PendingRequest {
            root: root.to_owned(),
            wanted: wanted.to_vec(),
            random0,
            ephemeral,
        },
    ))
}

/// Answers a request read from `<root>.reqs` with those of its key ids `lookup` holds:
/// `Ok(None)` when it asks for none we hold.
pub fn answer_request(
    me: &Identity<'_>,
    root: &str,
    key: &[u8],
    value: &[u8],
    lookup: &dyn Fn(&[u8; 32]) -> Option<Secret>,
    now: f64,
) -> Result<Option<KafkaMessage>, ExchangeError> {
    let wanted = parse_key_id_list(key)?;
    let leaf = chain::validate(value, me.trust, usage::KEY_ENCRYPT_REQUEST, root, now)?;
    let held: Vec<([u8; 32], Secret)> = wanted
        .iter()
        .filter_map(|id| lookup(id).map(|s| (*id, s)))
        .collect();
    if held.is_empty() {
        return Ok(None);
    }
    // Their ephemeral keys, in their order of preference: the first X25519 one (a bare 32-byte
    // key; post-quantum hybrids are `[version, [...]]` and skipped).
    let offered = match &leaf.key {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    let their_public = offered
        .iter()
        .find_map(|v| msgpack::fixed::<32>(v, "ephemeral key").ok())
        .ok_or_else(|| {
            ExchangeError::Malformed("the request offers no X25519 key (post-quantum only?)".into())
        })?;
    let random0 = leaf
        .extra
        .first()
        .ok_or_else(|| ExchangeError::Malformed("request without random0".into()))?;
    let random0 = msgpack::bytes(random0, "random0")?.to_vec();
    let (ephemeral, public) = x25519_keypair();
    let dh = x25519(&ephemeral, &their_public)
        .ok_or_else(|| ExchangeError::Malformed("a weak ephemeral key".into()))?;
    let random1 = random_bytes::<32>();
    let shared = sha256(&[root.as_bytes(), &random0, &random1, dh.as_ref()]);
    let mut payload = Vec::new();
    for (id, secret) in &held {
        payload.push(msgpack::bin(id.to_vec()));
        payload.push(msgpack::bin(secret.to_vec()));
    }
    let nonce = random_bytes::<24>();
    let mut boxed = nonce.to_vec();
    boxed.extend(secretbox_seal(
        &shared,
        &nonce,
        &msgpack::encode(&Value::Array(payload)),
    ));
    let leaf = Certificate {
        max_age: now + me.max_age,
        poison: Poison {
            topics: Some(vec![root.to_owned()]),
            usages: Some(strings(&[usage::KEY_ENCRYPT])),
            pathlen: None,
        },
        key: Value::Array(vec![msgpack::bin(public.to_vec())]),
        extra: vec![
            Value::Array(vec![msgpack::bin(random0), msgpack::bin(random1.to_vec())]),
            msgpack::bin(boxed),
        ],
    };
    let ids: Vec<[u8; 32]> = held.iter().map(|(id, _)| *id).collect();
    Ok(Some((key_id_list(&ids), signed_chain(me, &leaf)?)))
}

/// Opens a reply read from `<root>.keys` if it answers one of `pending` (which is then
/// removed): the key ids and their topic secrets.
pub fn accept_reply(
    me: &Identity<'_>,
    root: &str,
    value: &[u8],
    pending: &mut Vec<PendingRequest>,
    now: f64,
) -> Result<Vec<([u8; 32], Secret)>, ExchangeError> {
    let leaf = chain::validate(value, me.trust, usage::KEY_ENCRYPT, root, now)?;
    let randoms = leaf
        .extra
        .first()
        .ok_or_else(|| ExchangeError::Malformed("reply without randoms".into()))?;
    let randoms = msgpack::array(randoms, Some(2), "reply randoms")?;
    let random0 = msgpack::bytes(&randoms[0], "random0")?;
    let random1 = msgpack::bytes(&randoms[1], "random1")?;
    let at = pending
        .iter()
        .position(|p| p.root == root && p.random0.as_slice() == random0)
        .ok_or(ExchangeError::NotOurs)?;
    let boxed = leaf
        .extra
        .get(1)
        .ok_or_else(|| ExchangeError::Malformed("reply without keys".into()))?;
    let boxed = msgpack::bytes(boxed, "reply keys")?;
    if boxed.len() < 24 {
        return Err(ExchangeError::Malformed("reply keys too short".into()));
    }
    let (nonce, sealed) = boxed.split_at(24);
    let offered = match &leaf.key {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    for their_public in offered
        .iter()
        .filter_map(|v| msgpack::fixed::<32>(v, "ephemeral key").ok())
    {
        let Some(dh) = x25519(&pending[at].ephemeral, &their_public) else {
            continue;
        };
        let shared = sha256(&[root.as_bytes(), random0, random1, dh.as_ref()]);
        let Some(plain) = secretbox_open(&shared, nonce.try_into().expect("24 bytes"), sealed)
        else {
            continue;
        };
        let value = msgpack::decode(&plain, "reply keys")?;
        let items = msgpack::array(&value, None, "reply keys")?;
        if items.is_empty() || items.len() % 2 != 0 {
            return Err(ExchangeError::Malformed(
                "reply keys are not id/secret pairs".into(),
            ));
        }
        let mut keys = Vec::new();
        for pair in items.chunks(2) {
            keys.push((
                msgpack::fixed::<32>(&pair[0], "key id")?,
                Secret::new(msgpack::fixed::<32>(&pair[1], "topic secret")?),
            ));
        }
        pending.remove(at);
        return Ok(keys);
    }
    Err(ExchangeError::Undecryptable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keystore::{self, StoredKey};
    use crate::crypto::provision::{provision, Request, Role, RootOfTrust};

    fn node(dir: &std::path::Path, id: &str, role: Role, topics: &[&str]) -> Node {
        let done = provision(
            &Request {
                node_id: id.into(),
                role,
                topics: topics.iter().map(|s| s.to_string()).collect(),
                pathlen: 1,
                root: RootOfTrust::Passwords {
                    root: "rotpassword1234".into(),
                    provisioning: "provpass99".into(),
                },
                output_dir: dir.to_owned(),
                force: false,
            },
            1.7e9,
        )
        .unwrap();
        Node::load(&done.config_path).unwrap()
    }

    const NOW: f64 = 1.8e9;

    #[test]
    fn request_reply_accept_and_no_replay() {
        let dir = tempfile::tempdir().unwrap();
        let producer = node(dir.path(), "p", Role::Producer, &["xrd"]);
        let consumer = node(dir.path(), "c", Role::Consumer, &["xrd"]);
        let id = [7u8; 32];
        let secret = Secret::new([9u8; 32]);
        let (key, value, pending) =
            make_request(&consumer.identity(), "xrd", &[id, [8u8; 32]], NOW).unwrap();
        let lookup = |k: &[u8; 32]| (*k == id).then(|| secret.clone());
        let (reply_key, reply) =
            answer_request(&producer.identity(), "xrd", &key, &value, &lookup, NOW)
                .unwrap()
                .unwrap();
        assert_eq!(parse_key_id_list(&reply_key).unwrap(), vec![id]);
        let mut pending = vec![pending];
        let keys = accept_reply(&consumer.identity(), "xrd", &reply, &mut pending, NOW).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].0, *keys[0].1), (id, *secret));
        assert!(pending.is_empty());
        // The same reply again: its request is answered already.
        assert!(matches!(
            accept_reply(&consumer.identity(), "xrd", &reply, &mut pending, NOW),
            Err(ExchangeError::NotOurs)
        ));
        // A request for nothing held: no reply.
        let (key, value, _) = make_request(&consumer.identity(), "xrd", &[[1u8; 32]], NOW).unwrap();
        assert!(
            answer_request(&producer.identity(), "xrd", &key, &value, &lookup, NOW)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn entitlements_and_tampering_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let producer = node(dir.path(), "p", Role::Producer, &["xrd"]);
        let consumer = node(dir.path(), "c", Role::Consumer, &["xrd"]);
        let elsewhere = node(dir.path(), "e", Role::Consumer, &["other"]);
        let id = [7u8; 32];
        let lookup = |_: &[u8; 32]| Some(Secret::new([9u8; 32]));
        // A consumer not granted the root gets nothing.
        let (key, value, _) = make_request(&elsewhere.identity(), "xrd", &[id], NOW).unwrap();
        assert!(matches!(
            answer_request(&producer.identity(), "xrd", &key, &value, &lookup, NOW),
            Err(ExchangeError::Chain(ChainError::TopicNotGranted(_)))
        ));
        // A reply signed by a consumer (no key-encrypt) is refused.
        let (key, value, pending) = make_request(&consumer.identity(), "xrd", &[id], NOW).unwrap();
        let (_, forged) = answer_request(&consumer.identity(), "xrd", &key, &value, &lookup, NOW)
            .unwrap()
            .unwrap();
        let mut pending = vec![pending];
        assert!(matches!(
            accept_reply(&consumer.identity(), "xrd", &forged, &mut pending, NOW),
            Err(ExchangeError::Chain(ChainError::UsageNotGranted(_)))
        ));
        // A flipped bit anywhere in a genuine reply: refused, and the request stays pending.
        let (_, reply) = answer_request(&producer.identity(), "xrd", &key, &value, &lookup, NOW)
            .unwrap()
            .unwrap();
        for at in [reply.len() - 1, reply.len() - 40, reply.len() / 2] {
            let mut bad = reply.clone();
            bad[at] ^= 1;
            assert!(
                accept_reply(&consumer.identity(), "xrd", &bad, &mut pending, NOW).is_err(),
                "flip at {at}"
            );
        }
        assert_eq!(pending.len(), 1);
        assert!(accept_reply(&consumer.identity(), "xrd", &reply, &mut pending, NOW).is_ok());
    }

    #[test]
    fn keystore_keeps_keys_across_processes_and_prunes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let producer = node(dir.path(), "p", Role::Producer, &["xrd"]);
        let stored = |id: u8, birth: f64| StoredKey {
            root: "xrd".into(),
            key_id: [id; 32],
            secret: Secret::new([id; 32]),
            birth,
        };
        keystore::add(&producer, stored(1, NOW - 700_000.0), NOW - 700_000.0).unwrap();
        keystore::add(&producer, stored(2, NOW), NOW).unwrap();
        keystore::add(&producer, stored(3, NOW), NOW).unwrap();
        // Another process of the node (loaded afresh) sees them; the week-old one is pruned.
        let again = Node::load(&producer.config_path).unwrap();
        let ids: Vec<u8> = keystore::load(&again)
            .unwrap()
            .iter()
            .map(|k| k.key_id[0])
            .collect();
        assert_eq!(ids, vec![2, 3]);
    }
}
