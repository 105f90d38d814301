//! The deployment-wide topics KafkaCrypto nodes read besides the per-root exchange topics:
//! `allowlist` and `denylist` (a trusted key adds or revokes a key at run time) and `chains`
//! (a node's renewed certificate chain, keyed by the node's public key). Pure checks here; the
//! key service applies the results and records them in the node's config.
//!
//! - An allowlist (denylist) message is a chain whose leaf, granted `key-allowlist`
//!   (`key-denylist`) by a trusted key, carries a key in its key slot and, after it, the
//!   allowlist entry `[0, poison, key]` for the same key.
//! - A chain message replaces the node's chain only if it is valid, ends in the node's own key,
//!   and expires later than the current one (KafkaCrypto means to check this but compares the
//!   wrong field, so there an old chain replayed by the broker can replace a newer one).

use super::chain::{self, usage, ChainError, Trust};
use super::msgpack;
use super::primitives::SIGNATURE_BYTES;

/// A key added to (or revoked from) the trust by an allow- or denylist message, and the entry
/// to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUpdate {
    /// The key.
    pub key: [u8; 32],
    /// The allowlist-entry bytes (what the node config records).
    pub entry: Vec<u8>,
}

/// Checks an `allowlist` (`deny` false) or `denylist` (`deny` true) message.
pub fn list_update(
    value: &[u8],
    trust: &Trust,
    deny: bool,
    now: f64,
) -> Result<ListUpdate, ChainError> {
    let wanted = if deny {
        usage::KEY_DENYLIST
    } else {
        usage::KEY_ALLOWLIST
    };
    let leaf = chain::validate(value, trust, wanted, "", now)?;
    let key = leaf.ed25519_key()?;
    let entry = leaf
        .extra
        .first()
        .and_then(|v| msgpack::bytes(v, "entry").ok())
        .ok_or_else(|| ChainError::Malformed("a list message without its entry".into()))?
        .to_vec();
    let entry_key = chain::parse_allowlist_entry(&entry)?;
    if entry_key != key {
        return Err(ChainError::Malformed(
            "the list entry names another key than the message".into(),
        ));
    }
    Ok(ListUpdate { key, entry })
}

/// The earliest expiry of a chain's certificates (0 = never is ignored; +inf if none expires).
/// Signatures are not checked here: only for chains already validated or our own.
pub fn earliest_expiry(chain_bytes: &[u8]) -> f64 {
    let Ok(elements) = chain::decode_chain(chain_bytes) else {
        return 0.0;
    };
    elements
        .iter()
        .filter_map(|e| e.get(SIGNATURE_BYTES..))
        .filter_map(|body| chain::Certificate::from_bytes(body).ok())
        .map(|c| c.max_age)
        .filter(|m| *m != 0.0)
        .fold(f64::INFINITY, f64::min)
}

/// Checks a `chains` message for the node with public key `own`: Some(new chain) when it is
/// valid, ends in `own`, and expires later than `current`.
pub fn chain_update(
    value: &[u8],
    own: &[u8; 32],
    current: &[u8],
    trust: &Trust,
    now: f64,
) -> Result<Option<Vec<u8>>, ChainError> {
    let last = chain::validate(value, trust, "", "", now)?;
    if last.ed25519_key()? != *own {
        return Err(ChainError::Malformed(
            "the chain does not end in this node's key".into(),
        ));
    }
    Ok((earliest_expiry(value) > earliest_expiry(current)).then(|| value.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::chain::{allowlist_entry, encode_chain, Certificate, Poison};
    use crate::crypto::primitives::SigningKey;

    fn list_message(signer: &SigningKey, key: &[u8; 32], usage: &str) -> Vec<u8> {
        let leaf = Certificate {
            max_age: 0.0,
            poison: Poison {
                usages: Some(vec![usage.into()]),
                topics: None,
                pathlen: None,
            },
            key: msgpack::bin(key.to_vec()),
            extra: vec![msgpack::bin(allowlist_entry(key))],
        };
        encode_chain(&[leaf.sign(signer)])
    }

    #[test]
    fn list_messages_need_a_trusted_signer_granted_the_usage() {
        let root = SigningKey::generate();
        let other = SigningKey::generate();
        let new_key = SigningKey::generate().public();
        let trust = Trust {
            allow: vec![root.public()],
            deny: vec![],
        };
        let update = list_update(
            &list_message(&root, &new_key, usage::KEY_ALLOWLIST),
            &trust,
            false,
            1.8e9,
        )
        .unwrap();
        assert_eq!(update.key, new_key);
        let accepted = |signer, usage, denylist_ok| {
            list_update(
                &list_message(signer, &new_key, usage),
                &trust,
                denylist_ok,
                1.8e9,
            )
            .is_ok()
        };
        assert!(!accepted(&other, usage::KEY_ALLOWLIST, false));
        assert!(!accepted(&root, usage::KEY_DENYLIST, false));
        assert!(accepted(&root, usage::KEY_DENYLIST, true));
    }

    #[test]
    fn a_chain_is_replaced_only_by_a_valid_later_one_ending_in_our_key() {
        let root = SigningKey::generate();
        let node = SigningKey::generate();
        let trust = Trust {
            allow: vec![root.public()],
            deny: vec![],
        };
        let cert = |max_age: f64, key: &SigningKey| {
            encode_chain(&[Certificate {
                max_age,
                poison: Poison::default(),
                key: msgpack::bin(key.public().to_vec()),
                extra: vec![],
            }
            .sign(&root)])
        };
        let current = cert(2.0e9, &node);
        assert_eq!(
            chain_update(&cert(2.5e9, &node), &node.public(), &current, &trust, 1.8e9).unwrap(),
            Some(cert(2.5e9, &node))
        );
        // An older chain (a replay) does not replace a newer one.
        assert_eq!(
            chain_update(&cert(1.9e9, &node), &node.public(), &current, &trust, 1.8e9).unwrap(),
            None
        );
        // Another node's chain, or one from an untrusted signer: refused.
        assert!(chain_update(
            &cert(2.5e9, &SigningKey::generate()),
            &node.public(),
            &current,
            &trust,
            1.8e9
        )
        .is_err());
        let foreign = Trust {
            allow: vec![SigningKey::generate().public()],
            deny: vec![],
        };
        assert!(chain_update(
            &cert(2.5e9, &node),
            &node.public(),
            &current,
            &foreign,
            1.8e9
        )
        .is_err());
    }
}
