//! Encryption as the commands use it: which node a config names (`[kafkacrypto]`), the upload
//! side's [`Encryptor`] (an [`Envelope`]) and the download side's [`Decryptor`] (an
//! [`Opener`]), both on one [`KeyService`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::chain::{self, usage};
use super::keyservice::{unix_now, KeyService};
use super::keystore::{self, StoredKey};
use super::node::Node;
use super::primitives::Secret;
use super::ratchet;
use super::record::{self, RecordError, RecordPart, Sealer, SEAL_OVERHEAD};
use crate::config::LoadedConfig;
use crate::contract::MessagePosition;
use crate::contract::{ChunkMessage, Envelope};
use crate::contract::{Opened, Opener, RawMessage};

/// The section of an openmsi (and OpenMSIStream) config that turns encryption on.
pub const SECTION: &str = "kafkacrypto";

/// Why encryption could not be set up: the file or setting at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `config_file = PATH` names no file.
    #[error("[{SECTION}] config_file = {file} (in {config}): no such file")]
    NoConfigFile { file: String, config: PathBuf },
    /// The section names no node.
    #[error("[{SECTION}] in {0} needs node_id = NAME or config_file = PATH")]
    NoNodeNamed(PathBuf),
    /// A value of the section could not be read (an unset `$VARIABLE`).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node's files could not be loaded.
    #[error(transparent)]
    Node(#[from] super::node::NodeError),
    /// The node's own certificate chain is unreadable.
    #[error("the node's certificate chain: {0}")]
    Chain(#[from] chain::ChainError),
    /// The node is not entitled to what the command does with the topic.
    #[error("node {node} ({path}) cannot {role} topic {root}: {source}; provision a node whose --topics include {root} and whose --role allows it")]
    NotGranted {
        node: String,
        path: PathBuf,
        role: &'static str,
        root: String,
        source: chain::ChainError,
    },
    /// `crypto_ratchet_interval` is not a number of seconds.
    #[error("{path}: crypto_ratchet_interval '{value}' must be a number of seconds, at least 1")]
    RatchetInterval { path: PathBuf, value: String },
    /// The ratchet (`NODE.seed`) could not be advanced.
    #[error("advancing the ratchet {path}: {source}")]
    Ratchet {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key could not be recorded in the node's key store.
    #[error(transparent)]
    KeyStore(#[from] keystore::KeyStoreError),
    /// The key exchange could not start (missing exchange topics, Kafka unreachable).
    #[error(transparent)]
    KeyService(#[from] super::keyservice::KeyServiceError),
}

/// The node config a `[kafkacrypto]` section names: `config_file = PATH` (relative to the
/// config file's folder), or `node_id = NAME` (`NAME/NAME.config` beside the config file or
/// under the current folder, as OpenMSIStream looks). None without the section.
pub fn node_config_path(config: &LoadedConfig) -> Result<Option<PathBuf>, SessionError> {
    let Some(section) = config.section(SECTION) else {
        return Ok(None);
    };
    let beside = config.path().parent().unwrap_or(Path::new("."));
    if let Some(file) = section.try_get("config_file")? {
        let path = Path::new(file);
        let path = if path.is_relative() && beside.join(path).is_file() {
            beside.join(path)
        } else {
            path.to_owned()
        };
        if !path.is_file() {
            return Err(SessionError::NoConfigFile {
                file: file.to_string(),
                config: config.path().to_path_buf(),
            });
        }
        return Ok(Some(path));
    }
    if let Some(id) = section.try_get("node_id")? {
        return Ok(Some(Node::find_by_id(id, beside)?));
    }
    Err(SessionError::NoNodeNamed(config.path().to_path_buf()))
}

/// The node a config names, and the one place everything built on it is made: the upload
/// side's [`Encryptor`], the download side's [`Decryptor`], `serve-keys`' [`KeyServer`]. The
/// command layer (`app.rs`) builds one per run and hands what it made to the commands.
pub struct Encryption {
    config: LoadedConfig,
    node_path: PathBuf,
    /// Bound on the key exchange's first answer from the broker.
    timeout: Duration,
}

impl Encryption {
    /// The node of `config`'s `[kafkacrypto]` section; None without the section (plaintext).
    pub fn of(config: &LoadedConfig, timeout: Duration) -> Result<Option<Self>, SessionError> {
        Ok(node_config_path(config)?.map(|node_path| Encryption {
            config: config.clone(),
            node_path,
            timeout,
        }))
    }

    /// An encryptor for `topic` (a new key, served at once).
    pub fn encryptor(&self, topic: &str) -> Result<Arc<Encryptor>, SessionError> {
        Encryptor::start(&self.config, &self.node_path, topic, self.timeout)
    }

    /// A decryptor for `topic` (the key exchange starts, asking for keys as they are needed).
    pub fn decryptor(&self, topic: &str) -> Result<Decryptor, SessionError> {
        Decryptor::start(&self.config, &self.node_path, topic, self.timeout)
    }

    /// A key server for the roots of `topics`.
    pub fn key_server(&self, topics: &[String]) -> Result<KeyServer, SessionError> {
        KeyServer::start(&self.config, &self.node_path, topics, self.timeout)
    }
}

fn load_node(path: &Path) -> Result<Node, SessionError> {
    Ok(Node::load(path)?)
}

/// Fails unless the node's own certificate grants `usage` on `root` (checked against its own
/// allowlist, as its peers will check it), so a node provisioned for other topics or another
/// role is told so at start instead of waiting for keys no producer will send it.
fn check_own_grant(
    node: &Node,
    usage: &str,
    root: &str,
    role: &'static str,
) -> Result<(), SessionError> {
    let leaf = chain::Certificate {
        max_age: 0.0,
        poison: chain::Poison::default(),
        key: super::msgpack::bin(Vec::new()),
        extra: vec![],
    };
    let mut elements = chain::decode_chain(&node.chains[0])?;
    elements.push(leaf.sign(&node.signing));
    chain::validate(
        &chain::encode_chain(&elements),
        &node.trust,
        usage,
        root,
        unix_now(),
    )
    .map_err(|source| SessionError::NotGranted {
        node: node.id.clone(),
        path: node.config_path.clone(),
        role,
        root: root.to_string(),
        source,
    })?;
    Ok(())
}

/// Encrypts every chunk message of one topic with this process's key for its root.
pub struct Encryptor {
    /// The key in use (replaced by [`Encryptor::rotate_if_due`]).
    current: std::sync::RwLock<Arc<Sealer>>,
    root: String,
    /// When to move to the next key; how long a key is used (`crypto_ratchet_interval` in the
    /// node's section, KafkaCrypto's setting; 24 h by default).
    next_key_at: std::sync::Mutex<std::time::Instant>,
    interval: Duration,
    service: Arc<KeyService>,
}

/// How long a producer uses one key unless the node config says otherwise (KafkaCrypto's).
pub const RATCHET_INTERVAL: Duration = Duration::from_secs(86_400);

/// Takes the node's next ratchet position for `root` (durable before any use) and records the
/// key in the node's key store (so it can be served after this process exits).
fn take_key(node: &Node, root: &str) -> Result<([u8; 32], Secret, u64), SessionError> {
    let position = ratchet::take_next(&node.seed_path).map_err(|source| SessionError::Ratchet {
        path: node.seed_path.clone(),
        source,
    })?;
    let key_id = position.key_id(&node.signing_key_id());
    let secret: Secret = position.root_secret(root);
    let stored = StoredKey {
        root: root.to_owned(),
        key_id,
        secret: secret.clone(),
        birth: unix_now(),
    };
    keystore::add(node, stored, unix_now())?;
    Ok((key_id, secret, position.index))
}

impl Encryptor {
    /// Takes a new key (see [`take_key`]) and starts serving it.
    fn start(
        config: &LoadedConfig,
        node_path: &Path,
        topic: &str,
        timeout: Duration,
    ) -> Result<Arc<Encryptor>, SessionError> {
        let node = load_node(node_path)?;
        let root = record::topic_root(topic).to_owned();
        check_own_grant(&node, usage::KEY_ENCRYPT, &root, "encrypt to (producer)")?;
        let interval = match node.conf.get(&node.id, "crypto_ratchet_interval") {
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s >= 1.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| SessionError::RatchetInterval {
                    path: node.config_path.clone(),
                    value: v.to_string(),
                })?,
            None => RATCHET_INTERVAL,
        };
        let (key_id, secret, index) = take_key(&node, &root)?;
        info!(node = %node.id, root, key_index = index, "encrypting with a new key (end-to-end, KafkaCrypto format)");
        let service = KeyService::start(node, config, std::slice::from_ref(&root), timeout)?;
        service.serve(&root, Some((key_id, secret.clone())));
        Ok(Arc::new(Encryptor {
            current: std::sync::RwLock::new(Arc::new(Sealer::new(key_id, secret))),
            root,
            next_key_at: std::sync::Mutex::new(std::time::Instant::now() + interval),
            interval,
            service,
        }))
    }

    /// Stops the key exchange (flushing replies in flight).
    pub fn stop(&self) {
        self.service.stop();
    }

    /// The key to use now; a long-running producer moves to the next ratchet position once its
    /// key is `interval` old (the old key stays in the store and is still served). If the next
    /// key cannot be taken (the seed cannot be written), the current one stays in use (its
    /// counters go on, so nothing repeats) and taking a new one is retried a minute later.
    fn sealer(&self) -> Arc<Sealer> {
        let now = std::time::Instant::now();
        let due = self.next_key_at.lock().map(|t| now >= *t).unwrap_or(false);
        if due {
            let mut next_key_at = crate::sync::lock(&self.next_key_at);
            if now >= *next_key_at {
                match take_key(self.service.node(), &self.root) {
                    Ok((key_id, secret, index)) => {
                        info!(root = %self.root, key_index = index, "moved to the next key (ratchet interval)");
                        self.service
                            .serve(&self.root, Some((key_id, secret.clone())));
                        *crate::sync::write(&self.current) = Arc::new(Sealer::new(key_id, secret));
                        *next_key_at = now + self.interval;
                    }
                    Err(e) => {
                        warn!(root = %self.root, error = %e, "cannot take the next key; the current one stays in use");
                        *next_key_at = now + Duration::from_secs(60);
                    }
                }
            }
        }
        Arc::clone(&crate::sync::read(&self.current))
    }
}

/// The last user of an encryptor stops its key exchange (flushing replies in flight).
impl Drop for Encryptor {
    fn drop(&mut self) {
        self.service.stop();
    }
}

impl Envelope for Encryptor {
    fn seal(&self, message: &mut ChunkMessage) {
        // One key for both halves of a message.
        let sealer = self.sealer();
        message.key = sealer.seal(RecordPart::Key, &message.key);
        message.value = sealer.seal(RecordPart::Value, &message.value);
    }

    fn overhead(&self) -> usize {
        2 * SEAL_OVERHEAD
    }
}

/// `openmsi serve-keys`: the key exchange of a producer node, answering requests for the keys
/// in its key store.
pub struct KeyServer {
    service: Arc<KeyService>,
}

impl KeyServer {
    /// Starts serving the roots of `topics` as the node at `node_path`.
    fn start(
        config: &LoadedConfig,
        node_path: &Path,
        topics: &[String],
        timeout: Duration,
    ) -> Result<KeyServer, SessionError> {
        let node = load_node(node_path)?;
        let mut roots: Vec<String> = topics
            .iter()
            .map(|t| record::topic_root(t).to_owned())
            .collect();
        roots.dedup();
        for root in &roots {
            check_own_grant(&node, usage::KEY_ENCRYPT, root, "serve keys of (producer)")?;
        }
        let service = KeyService::start(node, config, &roots, timeout)?;
        for root in &roots {
            service.serve(root, None);
        }
        Ok(KeyServer { service })
    }

    /// Key replies sent so far.
    pub fn replies_sent(&self) -> u64 {
        self.service.replies_sent()
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.service.node().id
    }

    /// Stops, flushing replies in flight.
    pub fn stop(&self) {
        self.service.stop();
    }
}

/// Decrypts messages of one topic, fetching keys through the key exchange.
pub struct Decryptor {
    service: Arc<KeyService>,
    root: String,
}

impl Decryptor {
    /// Starts the key exchange for `topic`'s root as the node at `node_path`.
    fn start(
        config: &LoadedConfig,
        node_path: &Path,
        topic: &str,
        timeout: Duration,
    ) -> Result<Decryptor, SessionError> {
        let node = load_node(node_path)?;
        let root = record::topic_root(topic).to_owned();
        check_own_grant(
            &node,
            usage::KEY_ENCRYPT_REQUEST,
            &root,
            "request keys of (consumer)",
        )?;
        info!(node = %node.id, root, "decrypting (end-to-end, KafkaCrypto format)");
        let service = KeyService::start(node, config, std::slice::from_ref(&root), timeout)?;
        Ok(Decryptor { service, root })
    }
}

impl Opener for Decryptor {
    fn open(&self, message: RawMessage, _at: MessagePosition) -> Opened {
        self.decrypt(message)
    }

    fn generation(&self) -> u64 {
        self.service.generation()
    }

    fn decrypts(&self) -> bool {
        true
    }
}

impl Decryptor {
    /// Decrypts key and value, or says why not (never waits).
    fn decrypt(&self, message: RawMessage) -> Opened {
        let unreadable =
            |reason: String, message: RawMessage| Opened::Unreadable { reason, message };
        let Some(value) = message.value.as_deref() else {
            return unreadable(
                "a message without a value on an encrypted topic".into(),
                message,
            );
        };
        let value_record = match record::parse(value) {
            Ok(r) => r,
            Err(RecordError::NotEncrypted(_)) => return unreadable("a plaintext message on an encrypted topic (refused: anyone who can write to the topic could have sent it)".into(), message),
            Err(e) => return unreadable(e.to_string(), message),
        };
        let key_record = match message.key.as_deref().map(record::parse).transpose() {
            Ok(r) => r,
            Err(e) => return unreadable(format!("message key: {e}"), message),
        };
        let id = value_record.key_id;
        // A missing key is asked for, and the message handed back at once: the writer holds
        // it (and the rest of the stream goes on) until the key arrives (download/replay.rs).
        let Some(secret) = self.service.key(&self.root, &id) else {
            self.service.want(&self.root, &id);
            return Opened::NotYet {
                reason: format!(
                    "its decryption key ({}...) has not arrived from any producer yet",
                    super::provision::hex(&id[..8])
                ),
                message,
            };
        };
        let value = match record::open(&value_record, RecordPart::Value, &secret) {
            Ok(v) => v,
            Err(e) => return unreadable(e.to_string(), message),
        };
        let key = match key_record {
            None => None,
            Some(k) => {
                let Some(secret) = (if k.key_id == id {
                    Some(secret.clone())
                } else {
                    self.service.key(&self.root, &k.key_id)
                }) else {
                    return unreadable(
                        "the message key is sealed with a key other than the value's".into(),
                        message,
                    );
                };
                match record::open(&k, RecordPart::Key, &secret) {
                    Ok(k) => Some(k),
                    Err(e) => return unreadable(format!("message key: {e}"), message),
                }
            }
        };
        Opened::Readable(RawMessage {
            key,
            value: Some(value),
            headers: message.headers,
        })
    }
}

impl Drop for Decryptor {
    fn drop(&mut self) {
        self.service.stop();
    }
}
