//! The producer's key ratchet: the node's `.seed` file holds `[index, secret]` (msgpack). Each
//! time a process starts using keys (and every `ratchet_interval`), it takes the pair in the
//! file and, before using it, replaces the file with `[index + 1, step(secret)]`, durably. So a
//! key index is used by one process at most, even across `kill -9` and restarts, and the
//! per-message nonce counters (which start at 0 for every key index) never repeat a (key,
//! nonce) pair. The step is one-way: a stolen `.seed` does not reveal earlier keys.
//!
//! Compatible with KafkaCrypto's ratchet files: same layout, same step, same key derivations.

use std::io;
use std::path::Path;

use rmpv::Value;

use super::msgpack::{self, WireError};
use super::primitives::{blake2b_256, blake2b_keyed, sha256, Secret};
use crate::state::atomic::write_private_atomically;

/// The personalisation of a ratchet step.
const STEP_PERSONAL: [u8; 16] = *b"ratchet\0\0\0\0\0\0\0\0\0";

/// One ratchet position: the key index and its secret.
pub struct RatchetKey {
    /// Which position (0 for a fresh node).
    pub index: u64,
    secret: Secret,
}

impl RatchetKey {
    /// A position (for a fresh node file, or tests).
    pub fn new(index: u64, secret: Secret) -> Self {
        RatchetKey { index, secret }
    }

    /// The next position: `[index + 1, BLAKE2b(key = secret, personal = "ratchet")]`.
    pub fn next(&self) -> RatchetKey {
        let mut next = Secret::default();
        blake2b_keyed(
            self.secret.as_ref(),
            &[0; 16],
            &STEP_PERSONAL,
            next.as_mut(),
        );
        RatchetKey {
            index: self.index + 1,
            secret: next,
        }
    }

    /// The secret for topics under `root`: BLAKE2b keyed with the ratchet secret, salt and
    /// personalisation the two halves of SHA-256(root).
    pub fn root_secret(&self, root: &str) -> Secret {
        let hash = sha256(&[root.as_bytes()]);
        let (salt, personal) = hash.split_at(16);
        let mut out = Secret::default();
        blake2b_keyed(
            self.secret.as_ref(),
            salt.try_into().expect("16 bytes"),
            personal.try_into().expect("16 bytes"),
            out.as_mut(),
        );
        out
    }

    /// The key index records carry (KafkaCrypto's "long" form): BLAKE2b-256 of the producer's
    /// signing-key id and the index as 16 big-endian bytes.
    pub fn key_id(&self, signing_key_id: &[u8]) -> [u8; 32] {
        key_id(signing_key_id, self.index)
    }

    /// The file form: msgpack `[index, secret]`.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        msgpack::encode(&Value::Array(vec![
            Value::from(self.index),
            msgpack::bin(self.secret.to_vec()),
        ]))
    }

    /// Reads the file form.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<RatchetKey, WireError> {
        let value = msgpack::decode(bytes, "ratchet seed")?;
        let items = msgpack::array(&value, Some(2), "ratchet seed")?;
        let index = msgpack::uint(&items[0], "ratchet seed index")?;
        let secret = msgpack::fixed::<32>(&items[1], "ratchet seed secret")?;
        Ok(RatchetKey {
            index,
            secret: Secret::new(secret),
        })
    }
}

/// The key index of position `index` of a producer with signing-key id `signing_key_id`.
pub fn key_id(signing_key_id: &[u8], index: u64) -> [u8; 32] {
    blake2b_256(&[signing_key_id, &u128::from(index).to_be_bytes()])
}

/// Takes the position stored in the `.seed` file at `path` for use, after durably replacing
/// it with the next one (see the module docs). Fails, using nothing, if the file cannot be read
/// or rewritten.
pub fn take_next(path: &Path) -> io::Result<RatchetKey> {
    let bytes = std::fs::read(path)?;
    let current = RatchetKey::from_file_bytes(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    write_private_atomically(path, &current.next().to_file_bytes())?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn take_next_advances_the_file_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.seed");
        std::fs::write(
            &path,
            RatchetKey::new(4, Secret::new([1; 32])).to_file_bytes(),
        )
        .unwrap();
        let first = take_next(&path).unwrap();
        let second = take_next(&path).unwrap();
        assert_eq!((first.index, second.index), (4, 5));
        assert_ne!(first.root_secret("t")[..], second.root_secret("t")[..]);
        assert_eq!(
            RatchetKey::from_file_bytes(&std::fs::read(&path).unwrap())
                .unwrap()
                .index,
            6
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn seed_file_layout_is_kafkacrypto_s() {
        let key = RatchetKey::new(0, Secret::new([0xab; 32]));
        let bytes = key.to_file_bytes();
        assert_eq!(bytes.len(), 36);
        assert_eq!(&bytes[..4], &[0x92, 0x00, 0xc4, 0x20]);
        assert!(RatchetKey::from_file_bytes(&bytes[..35]).is_err());
        // Derivations are pinned by the vectors from the real package in tests/kafkacrypto.rs;
        // here only that they are deterministic and differ per root.
        assert_eq!(
            hex(&key.root_secret("a")[..]),
            hex(&key.root_secret("a")[..])
        );
        assert_ne!(
            hex(&key.root_secret("a")[..]),
            hex(&key.root_secret("b")[..])
        );
    }
}
