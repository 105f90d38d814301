//! A provisioned node: what its three files hold, loaded and checked.
//!
//! - `NAME.config` ([`super::nodeconf`]): `[NAME]` names the key and seed files; the allowlist
//!   (roots of trust) in `[NAME-allowlist]`, the denylist in `[NAME-denylist]`, the node's
//!   certificate chain(s) in `[NAME-chains]`, the certificate lifetime (`maxage`) in
//!   `[NAME-crypto]`, and Kafka settings for the key-exchange clients in `[NAME-kafka*]`.
//! - `NAME.crypto`: msgpack `[2, [signing_key...], opaque_key: bin(32), legacy: bool,
//!   [exchange key types...]]`, signing keys in libsodium's 64-byte form.
//! - `NAME.seed`: the producer ratchet ([`super::ratchet`]).

use std::path::{Path, PathBuf};

use rmpv::Value;

use super::chain::{self, Trust};
use super::msgpack;
use super::nodeconf::{decode_bytes, file_value, NodeConf};
use super::primitives::{Secret, SigningKey};

/// A node loaded from its files.
pub struct Node {
    /// The node id (the config file's stem and its sections' prefix).
    pub id: String,
    /// The `.config` file.
    pub config_path: PathBuf,
    /// The parsed config (kept to rewrite it without losing anything).
    pub conf: NodeConf,
    /// The node's signing key.
    pub signing: SigningKey,
    /// The key that wraps secrets stored in the config (`oldkeys`).
    pub opaque_key: Secret,
    /// The ratchet file.
    pub seed_path: PathBuf,
    /// The node's own certificate chains (`[NAME-chains]`), each a msgpack chain.
    pub chains: Vec<Vec<u8>>,
    /// Roots of trust and distrusted keys.
    pub trust: Trust,
    /// Lifetime given to what the node signs, seconds.
    pub max_age: f64,
}

/// Why a node could not be loaded: the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Content is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// The node config is not a valid INI file (the error names the file and line).
    #[error(transparent)]
    Syntax(#[from] crate::config::ConfigError),
    /// `[kafkacrypto] node_id = NAME` names no node.
    #[error("no node '{node_id}': looked for {looked} (provision it with `openmsi provision-node --node-id {node_id} --output-dir {beside}`)")]
    NotFound {
        /// The name.
        node_id: String,
        /// The paths looked at.
        looked: String,
        /// The folder the config file is in.
        beside: PathBuf,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> NodeError {
    NodeError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|source| NodeError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The `.crypto` file's content.
pub struct KeyFile {
    /// Signing keys (the first is used).
    pub signing: Vec<SigningKey>,
    /// The opaque-value key.
    pub opaque_key: Secret,
}

impl KeyFile {
    /// The file form.
    pub fn to_bytes(&self) -> Vec<u8> {
        msgpack::encode(&Value::Array(vec![
            Value::from(2),
            Value::Array(
                self.signing
                    .iter()
                    .map(|k| msgpack::bin(k.to_libsodium().to_vec()))
                    .collect(),
            ),
            msgpack::bin(self.opaque_key.to_vec()),
            Value::Boolean(false),
            // Only X25519 key exchange (type 1): openmsi has no post-quantum exchange.
            Value::Array(vec![Value::from(1)]),
        ]))
    }

    /// Parses the file form.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyFile, msgpack::WireError> {
        let value = msgpack::decode(bytes, "key file")?;
        let items = msgpack::array(&value, None, "key file")?;
        if items.len() < 3 || items[0].as_u64() != Some(2) {
            return Err(msgpack::malformed(
                "not a KafkaCrypto key file of version 2",
            ));
        }
        let keys = msgpack::array(&items[1], None, "signing keys")?;
        let mut signing = Vec::new();
        for key in keys {
            match key {
                Value::Binary(b) if b.len() == 64 => signing.push(
                    SigningKey::from_libsodium(b).ok_or_else(|| msgpack::malformed("a signing key whose halves do not match"))?,
                ),
                _ => return Err(msgpack::malformed("the node uses a post-quantum (Ed25519+SLH-DSA) signing key, which openmsi does not support; provision a node with key type 1 (Ed25519)")),
            }
        }
        if signing.is_empty() {
            return Err(msgpack::malformed("no signing key"));
        }
        let opaque_key = Secret::new(msgpack::fixed::<32>(&items[2], "opaque key")?);
        Ok(KeyFile {
            signing,
            opaque_key,
        })
    }
}

impl Node {
    /// Loads the node whose config file is `config_path`.
    pub fn load(config_path: &Path) -> Result<Node, NodeError> {
        let text = String::from_utf8(read(config_path)?)
            .map_err(|_| invalid(config_path, "not UTF-8 text"))?;
        let conf = NodeConf::parse(config_path, &text)?;
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let id = conf
            .get("DEFAULT", "node_id")
            .map(str::to_owned)
            .or_else(|| {
                config_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .ok_or_else(|| invalid(config_path, "no node_id"))?;
        let file_setting = |key: &str| -> Result<PathBuf, NodeError> {
            let value = conf.get(&id, key).ok_or_else(|| {
                invalid(config_path, format!("[{id}] has no '{key}' (is this a provisioned node? run `openmsi provision-node`)"))
            })?;
            file_value(value, dir)
                .ok_or_else(|| invalid(config_path, format!("[{id}] {key} must be 'file#NAME'")))
        };
        let key_path = file_setting("cryptokey")?;
        let seed_path = file_setting("ratchet")?;
        let keys = KeyFile::from_bytes(&read(&key_path)?).map_err(|m| invalid(&key_path, m.0))?;
        let mut trust = Trust::default();
        for (key, value) in conf.entries(&format!("{id}-allowlist")) {
            let bytes = decode_bytes(value).ok_or_else(|| {
                invalid(
                    config_path,
                    format!("[{id}-allowlist] {key} is not a base64# value"),
                )
            })?;
            if chain::Certificate::from_bytes(&bytes)
                .is_ok_and(|c| c.key == msgpack::bin(KAFKACRYPTO_TEMPORARY_ROOT.to_vec()))
            {
                return Err(invalid(config_path, format!("[{id}-allowlist] {key} is KafkaCrypto's public temporary root of trust, whose private key is published: anyone could impersonate any node. Remove that entry (provisioning removes it)")));
            }
            trust.allow.push(
                chain::parse_allowlist_entry(&bytes)
                    .map_err(|e| invalid(config_path, format!("[{id}-allowlist] {key}: {e}")))?,
            );
        }
        for (key, value) in conf.entries(&format!("{id}-denylist")) {
            let bytes = decode_bytes(value).ok_or_else(|| {
                invalid(
                    config_path,
                    format!("[{id}-denylist] {key} is not a base64# value"),
                )
            })?;
            trust.deny.push(
                chain::parse_allowlist_entry(&bytes)
                    .map_err(|e| invalid(config_path, format!("[{id}-denylist] {key}: {e}")))?,
            );
        }
        if trust.allow.is_empty() {
            return Err(invalid(config_path, format!("[{id}-allowlist] is empty: the node trusts no root (provision it with `openmsi provision-node`)")));
        }
        let mut chains = Vec::new();
        for (key, value) in conf.entries(&format!("{id}-chains")) {
            chains.push(decode_bytes(value).ok_or_else(|| {
                invalid(
                    config_path,
                    format!("[{id}-chains] {key} is not a base64# value"),
                )
            })?);
        }
        if chains.is_empty() {
            return Err(invalid(
                config_path,
                format!("[{id}-chains] is empty: the node has no certificate (provision it)"),
            ));
        }
        let max_age = conf
            .get(&format!("{id}-crypto"), "maxage")
            .map(|v| {
                v.parse::<f64>().map_err(|_| {
                    invalid(
                        config_path,
                        format!("[{id}-crypto] maxage '{v}' is not a number"),
                    )
                })
            })
            .transpose()?
            .unwrap_or(86_400.0);
        Ok(Node {
            id,
            config_path: config_path.to_owned(),
            conf,
            signing: keys.signing.into_iter().next().expect("checked non-empty"),
            opaque_key: keys.opaque_key,
            seed_path,
            chains,
            trust,
            max_age,
        })
    }

    /// The signing-key id records' key indices are derived from (the concatenated public keys).
    pub fn signing_key_id(&self) -> Vec<u8> {
        self.signing.public().to_vec()
    }

    /// Finds the node config for `[kafkacrypto] node_id = NAME` as OpenMSIStream does: `NAME/NAME.config` beside the
    /// openmsi config file, then under the current folder.
    pub fn find_by_id(node_id: &str, beside: &Path) -> Result<PathBuf, NodeError> {
        let candidates = [
            beside.join(node_id).join(format!("{node_id}.config")),
            PathBuf::from(node_id).join(format!("{node_id}.config")),
        ];
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| NodeError::NotFound {
                node_id: node_id.to_string(),
                looked: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and "),
                beside: beside.to_path_buf(),
            })
    }
}

/// KafkaCrypto's "temporary" root of trust, put in fresh configs; its private seed is in the
/// package's source, so it must never be trusted.
pub const KAFKACRYPTO_TEMPORARY_ROOT: [u8; 32] =
    hex32("1a13b0aecdd6751c7dfa43e43284326ad01dbc20a8a00b1566092ab0a542620f");

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not hex"),
    }
}
