//! A producer node's topic keys, kept so they can be served after the process that made them
//! has exited (KafkaCrypto keeps them only for the process's lifetime in practice). Stored
//! where KafkaCrypto stores its own: the `oldkeys` value of the node config's `[NODE-crypto]`
//! section, `base64#(nonce ‖ secretbox(msgpack {"pgens": [[root, key_id, secret, birth],
//! ...]}, opaque key))`, so a Python process of the same node serves openmsi's keys and the
//! other way round. Keys older than [`MAX_KEY_AGE_SECS`] are pruned, as KafkaCrypto prunes.
//!
//! Writers take an exclusive lock on `NODE.config.lock` around read-modify-write, so two
//! openmsi processes of one node (an `upload-file` while an `upload-directory` runs) never lose
//! each other's keys; the config is replaced atomically.

use crate::state::lock::WaitLock;
use std::path::{Path, PathBuf};

use rmpv::Value;

use super::msgpack;
use super::node::Node;
use super::nodeconf::{decode_bytes, encode_bytes, NodeConf};
use super::primitives::{random_bytes, secretbox_open, secretbox_seal, Secret};
use crate::state::atomic::write_private_atomically;

/// Keys are served for a week after they were first used (KafkaCrypto's `CRYPTO_MAX_PGEN_AGE`).
pub const MAX_KEY_AGE_SECS: f64 = 604_800.0;

/// One stored producer key.
#[derive(Clone)]
pub struct StoredKey {
    /// Root topic.
    pub root: String,
    /// Key id.
    pub key_id: [u8; 32],
    /// Topic secret.
    pub secret: Secret,
    /// First use, unix seconds.
    pub birth: f64,
}

/// Why the key store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct KeyStoreError {
    /// The node config.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn section(node_id: &str) -> String {
    format!("{node_id}-crypto")
}

/// Reads the stored keys of the node whose config is `config_path` (re-read from disk).
pub fn load(node: &Node) -> Result<Vec<StoredKey>, KeyStoreError> {
    let conf = read_conf(&node.config_path)?;
    decode(&conf, node)
}

/// Adds `key` durably (the config is fsynced before this returns), pruning expired keys.
pub fn add(node: &Node, key: StoredKey, now: f64) -> Result<(), KeyStoreError> {
    update_conf(node, |conf| {
        let mut keys = decode(conf, node)?;
        keys.retain(|k| {
            now - k.birth < MAX_KEY_AGE_SECS && !(k.root == key.root && k.key_id == key.key_id)
        });
        keys.push(key);
        conf.set(
            &section(&node.id),
            "oldkeys",
            encode_bytes(&wrap(node, &keys)),
        );
        Ok(())
    })
}

/// Changes the node's config file under its lock: re-read, `change`, replaced atomically
/// (mode 0600). Every writer of the file goes through here.
pub fn update_conf(
    node: &Node,
    change: impl FnOnce(&mut NodeConf) -> Result<(), KeyStoreError>,
) -> Result<(), KeyStoreError> {
    let err = |message: String| KeyStoreError {
        path: node.config_path.clone(),
        message,
    };
    let _lock = WaitLock::beside(&node.config_path).map_err(|e| err(e.to_string()))?;
    let mut conf = read_conf(&node.config_path)?;
    change(&mut conf)?;
    write_private_atomically(&node.config_path, conf.to_text().as_bytes())
        .map_err(|e| err(e.to_string()))
}

fn read_conf(path: &Path) -> Result<NodeConf, KeyStoreError> {
    let err = |message: String| KeyStoreError {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    NodeConf::parse(path, &text).map_err(|e| err(e.to_string()))
}

fn decode(conf: &NodeConf, node: &Node) -> Result<Vec<StoredKey>, KeyStoreError> {
    let err = |message: &str| KeyStoreError {
        path: node.config_path.clone(),
        message: format!("[{}] oldkeys: {message}", section(&node.id)),
    };
    let Some(value) = conf.get(&section(&node.id), "oldkeys") else {
        return Ok(Vec::new());
    };
    let boxed = decode_bytes(value).ok_or_else(|| err("not a base64# value"))?;
    if boxed.len() < 24 {
        return Err(err("too short"));
    }
    let (nonce, sealed) = boxed.split_at(24);
    let plain = secretbox_open(
        &node.opaque_key,
        nonce.try_into().expect("24 bytes"),
        sealed,
    )
    .ok_or_else(|| err("does not decrypt with the node's key file (a different .crypto file?)"))?;
    let map = msgpack::decode(&plain, "oldkeys").map_err(|e| err(&e.0))?;
    let entries = map
        .as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_str() == Some("pgens") || k.as_slice() == Some(b"pgens"))
        })
        .map(|(_, v)| v);
    let Some(entries) = entries else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for entry in msgpack::array(entries, None, "pgens").map_err(|e| err(&e.0))? {
        let items = msgpack::array(entry, Some(4), "pgen").map_err(|e| err(&e.0))?;
        let root = match &items[0] {
            Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
            Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err(err("root is not text")),
        };
        let key_id = msgpack::fixed::<32>(&items[1], "key id").map_err(|e| err(&e.0))?;
        let secret = Secret::new(msgpack::fixed::<32>(&items[2], "secret").map_err(|e| err(&e.0))?);
        let birth = msgpack::number(&items[3], "birth").map_err(|e| err(&e.0))?;
        keys.push(StoredKey {
            root,
            key_id,
            secret,
            birth,
        });
    }
    Ok(keys)
}

fn wrap(node: &Node, keys: &[StoredKey]) -> Vec<u8> {
    let entries = keys
        .iter()
        .map(|k| {
            Value::Array(vec![
                msgpack::text(&k.root),
                msgpack::bin(k.key_id.to_vec()),
                msgpack::bin(k.secret.to_vec()),
                Value::F64(k.birth),
            ])
        })
        .collect();
    let plain = msgpack::encode(&Value::Map(vec![(
        msgpack::text("pgens"),
        Value::Array(entries),
    )]));
    let nonce = random_bytes::<24>();
    let mut out = nonce.to_vec();
    out.extend(secretbox_seal(&node.opaque_key, &nonce, &plain));
    out
}
