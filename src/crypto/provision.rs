//! Creating a node: its signing key, its certificate signed by a root of trust (through a
//! provisioner, as KafkaCrypto's `simple-provision` does, or directly by a root key kept in a
//! file), its ratchet seed and its config, written in KafkaCrypto's formats.
//!
//! Two kinds of root of trust:
//! - **Password-derived** (KafkaCrypto's; needed to join existing deployments): the root key
//!   is scrypt(password), the provisioner keys scrypt(provisioning password, salt from role
//!   and root key). Anyone holding the public root key and chain traffic can run a dictionary
//!   attack on the passwords, so they must be long and random.
//! - **Key file** (openmsi's): a random Ed25519 root key in a file kept offline; nodes are
//!   signed with it directly. Python nodes accept them once the root is in their allowlist.

use std::path::{Path, PathBuf};

use super::chain::{allowlist_entry, encode_chain, usage, Certificate, Poison};
use super::msgpack;
use super::node::KeyFile;
use super::nodeconf::{encode_bytes, NodeConf};
use super::primitives::{password_seed, random_secret, sha256, Secret, SigningKey};
use super::ratchet::RatchetKey;
use crate::state::atomic::write_private_atomically;

/// Lifetime of a node certificate: 3660 days, as simple-provision gives.
pub const NODE_CERT_LIFETIME_SECS: f64 = 316_224_000.0;

/// Shortest passwords accepted (KafkaCrypto's own minimums; longer is much better).
pub const MIN_ROT_PASSWORD: usize = 12;
/// See [`MIN_ROT_PASSWORD`].
pub const MIN_PROVISIONING_PASSWORD: usize = 6;

/// What a node may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Encrypts and serves keys (upload).
    Producer,
    /// Requests keys and decrypts (download).
    Consumer,
    /// Both.
    Prodcon,
    /// A consumer that only works through a controller.
    ConsumerLimited,
    /// A producer and limited consumer.
    ProdconLimited,
    /// A controller (re-signs limited consumers' requests).
    Controller,
}

impl Role {
    /// The usages its certificate grants.
    pub fn usages(self) -> &'static [&'static str] {
        use usage::*;
        match self {
            Role::Producer => &[KEY_ENCRYPT],
            Role::Consumer => &[KEY_ENCRYPT_REQUEST, KEY_ENCRYPT_SUBSCRIBE],
            Role::Prodcon => &[KEY_ENCRYPT, KEY_ENCRYPT_REQUEST, KEY_ENCRYPT_SUBSCRIBE],
            Role::ConsumerLimited => &[KEY_ENCRYPT_SUBSCRIBE],
            Role::ProdconLimited => &[KEY_ENCRYPT, KEY_ENCRYPT_SUBSCRIBE],
            Role::Controller => &[KEY_ENCRYPT_REQUEST],
        }
    }

    /// Which of the three password-derived provisioners signs it (as simple-provision does).
    fn provisioner(self) -> Provisioner {
        match self {
            Role::Producer => Provisioner::Producer,
            Role::Consumer | Role::ConsumerLimited | Role::Controller => Provisioner::Consumer,
            Role::Prodcon | Role::ProdconLimited => Provisioner::Prodcon,
        }
    }
}

#[derive(Clone, Copy)]
enum Provisioner {
    Producer,
    Consumer,
    Prodcon,
}

impl Provisioner {
    fn name(self) -> &'static str {
        match self {
            Provisioner::Producer => "producer",
            Provisioner::Consumer => "consumer",
            Provisioner::Prodcon => "prodcon",
        }
    }

    fn usages(self) -> &'static [&'static str] {
        match self {
            Provisioner::Producer => Role::Producer.usages(),
            Provisioner::Consumer => Role::Consumer.usages(),
            Provisioner::Prodcon => Role::Prodcon.usages(),
        }
    }
}

/// Where a node's certificate comes from.
pub enum RootOfTrust {
    /// KafkaCrypto's password-derived root and provisioners.
    Passwords {
        /// The root-of-trust password.
        root: String,
        /// The provisioning password.
        provisioning: String,
    },
    /// A root key kept in a file.
    KeyFile(SigningKey),
}

/// The root key derived from a root-of-trust password.
pub fn password_root(password: &str) -> SigningKey {
    let salt = sha256(&[b"Root of Trust", password.as_bytes()]);
    SigningKey::from_seed(&password_seed(password.as_bytes(), &salt))
}

fn password_provisioner(password: &str, which: Provisioner, root_public: &[u8; 32]) -> SigningKey {
    let salt = sha256(&[which.name().as_bytes(), root_public]);
    SigningKey::from_seed(&password_seed(password.as_bytes(), &salt))
}

/// Everything `provision-node` was asked.
pub struct Request {
    /// The node id (folder and file names).
    pub node_id: String,
    /// Its role.
    pub role: Role,
    /// Root topics it may use; empty = all (`^.*$`).
    pub topics: Vec<String>,
    /// Certificates that may follow the node's (-1: no limit).
    pub pathlen: i64,
    /// The root of trust.
    pub root: RootOfTrust,
    /// `DIR/NODE/` receives the files.
    pub output_dir: PathBuf,
    /// Replace an existing node.
    pub force: bool,
}

/// What was written.
pub struct Provisioned {
    /// The node's folder.
    pub dir: PathBuf,
    /// Its `.config`.
    pub config_path: PathBuf,
    /// The root of trust's public key.
    pub root_public: [u8; 32],
    /// The node's public key.
    pub node_public: [u8; 32],
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A bad answer.
    #[error("{0}")]
    Invalid(String),
    /// A node id that cannot name files and config sections.
    #[error("node id '{0}' must be 1-64 letters, digits, '_', '-' or '.' (not first)")]
    BadNodeId(String),
    /// A root key file that cannot be used.
    #[error("{path}: {problem}")]
    RootKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The node exists.
    #[error("{0} already exists; pass --force to replace the node (its old keys are lost)")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Node ids name files and config sections: letters, digits, `_`, `-`, `.` (not first).
pub fn check_node_id(id: &str) -> Result<(), ProvisionError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::BadNodeId(id.to_string()))
    }
}

/// The root topics of a list: each name up to its first `.`, duplicates removed; `^regex`
/// entries kept as they are.
pub fn root_topics(topics: &[String]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for t in topics {
        let root = if t.starts_with('^') {
            t.as_str()
        } else {
            super::record::topic_root(t)
        };
        if !root.is_empty() && !roots.iter().any(|r| r == root) {
            roots.push(root.to_owned());
        }
    }
    roots
}

/// Creates the node's three files in `OUTPUT/NODE/`.
pub fn provision(request: &Request, now: f64) -> Result<Provisioned, ProvisionError> {
    check_node_id(&request.node_id)?;
    if request.pathlen < -1 {
        return Err(ProvisionError::Invalid(
            "--pathlen must be -1 (no limit) or more".into(),
        ));
    }
    let dir = request.output_dir.join(&request.node_id);
    let config_path = dir.join(format!("{}.config", request.node_id));
    let key_path = dir.join(format!("{}.crypto", request.node_id));
    let seed_path = dir.join(format!("{}.seed", request.node_id));
    if !request.force {
        if let Some(existing) = [&config_path, &key_path, &seed_path]
            .into_iter()
            .find(|p| p.exists())
        {
            return Err(ProvisionError::Exists(existing.clone()));
        }
    }
    let node_key = SigningKey::generate();
    let topics = root_topics(&request.topics);
    let node_poison = Poison {
        usages: Some(
            request
                .role
                .usages()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        topics: Some(if topics.is_empty() {
            vec!["^.*$".to_owned()]
        } else {
            topics
        }),
        pathlen: (request.pathlen >= 0).then_some(request.pathlen),
    };
    let node_cert = Certificate {
        max_age: now + NODE_CERT_LIFETIME_SECS,
        poison: node_poison,
        key: msgpack::bin(node_key.public().to_vec()),
        extra: vec![],
    };
    let (root_public, chain) = match &request.root {
        RootOfTrust::Passwords { root, provisioning } => {
            if root.chars().count() < MIN_ROT_PASSWORD {
                return Err(ProvisionError::Invalid(format!(
                    "the root-of-trust password must have at least {MIN_ROT_PASSWORD} characters"
                )));
            }
            if provisioning.chars().count() < MIN_PROVISIONING_PASSWORD {
                return Err(ProvisionError::Invalid(format!("the provisioning password must have at least {MIN_PROVISIONING_PASSWORD} characters")));
            }
            let root_key = password_root(root);
            let which = request.role.provisioner();
            let provisioner = password_provisioner(provisioning, which, &root_key.public());
            let provisioner_cert = Certificate {
                max_age: 0.0,
                poison: Poison {
                    usages: Some(which.usages().iter().map(|s| s.to_string()).collect()),
                    topics: None,
                    pathlen: None,
                },
                key: msgpack::bin(provisioner.public().to_vec()),
                extra: vec![],
            };
            (
                root_key.public(),
                encode_chain(&[
                    provisioner_cert.sign(&root_key),
                    node_cert.sign(&provisioner),
                ]),
            )
        }
        RootOfTrust::KeyFile(root_key) => {
            (root_key.public(), encode_chain(&[node_cert.sign(root_key)]))
        }
    };
    let keys = KeyFile {
        signing: vec![node_key],
        opaque_key: random_secret(),
    };
    let seed = RatchetKey::new(0, random_secret());
    let conf = node_config(&request.node_id, &root_public, &chain);
    create_private_dir(&dir)?;
    let write = |path: &Path, bytes: &[u8]| {
        write_private_atomically(path, bytes).map_err(|source| ProvisionError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(&key_path, &keys.to_bytes())?;
    write(&seed_path, &seed.to_file_bytes())?;
    // The config last: a node folder with a config is a complete node.
    write(&config_path, conf.to_text().as_bytes())?;
    Ok(Provisioned {
        dir,
        config_path,
        root_public,
        node_public: keys.signing[0].public(),
    })
}

/// The config simple-provision writes, less its TLS defaults (the openmsi config's `[broker]`
/// settings apply), plus `auto_offset_reset : earliest` for the key-exchange consumer (without
/// it, KafkaCrypto's consumer can miss a key reply written before it has its position).
fn node_config(id: &str, root_public: &[u8; 32], chain: &[u8]) -> NodeConf {
    let mut conf = NodeConf::default();
    conf.set("DEFAULT", "node_id", id);
    conf.set(id, "mgmt_long_keyindex", "True");
    conf.set(id, "cryptokey", format!("file#{id}.crypto"));
    conf.set(id, "ratchet", format!("file#{id}.seed"));
    conf.set(
        &format!("{id}-allowlist"),
        "rot0",
        encode_bytes(&allowlist_entry(root_public)),
    );
    conf.ensure_section(&format!("{id}-denylist"));
    conf.set(
        &format!("{id}-crypto"),
        "maxage",
        format!("{}", NODE_CERT_LIFETIME_SECS as u64),
    );
    conf.set(&format!("{id}-kafka"), "bootstrap_servers", "");
    for suffix in ["kafka-consumer", "kafka-producer", "kafka-crypto"] {
        conf.ensure_section(&format!("{id}-{suffix}"));
    }
    conf.set(
        &format!("{id}-kafka-crypto-consumer"),
        "auto_offset_reset",
        "earliest",
    );
    conf.ensure_section(&format!("{id}-kafka-crypto-producer"));
    conf.set(&format!("{id}-chains"), "chain0", encode_bytes(chain));
    conf
}

fn create_private_dir(dir: &Path) -> Result<(), ProvisionError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| ProvisionError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// A root key file: one line, `openmsi-root-key-v1 HEX(seed)`.
pub fn write_root_key(path: &Path, force: bool) -> Result<SigningKey, ProvisionError> {
    if path.exists() && !force {
        return Err(ProvisionError::Exists(path.to_owned()));
    }
    let seed: Secret = random_secret();
    let text = format!("openmsi-root-key-v1 {}\n", hex(seed.as_ref()));
    write_private_atomically(path, text.as_bytes()).map_err(|source| ProvisionError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(SigningKey::from_seed(&seed))
}

/// Reads a root key file written by [`write_root_key`].
pub fn read_root_key(path: &Path) -> Result<SigningKey, ProvisionError> {
    let problem = |problem: String| ProvisionError::RootKey {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(format!("cannot read the root key: {e}")))?;
    let hex_seed = text
        .trim()
        .strip_prefix("openmsi-root-key-v1 ")
        .ok_or_else(|| problem("not an openmsi root key file".into()))?;
    let bytes = unhex(hex_seed)
        .filter(|b| b.len() == 32)
        .ok_or_else(|| problem("malformed key".into()))?;
    Ok(SigningKey::from_seed(&bytes.try_into().expect("32 bytes")))
}

/// The allowlist line for a root, to paste into another node's `[NODE-allowlist]` section.
pub fn allowlist_line(name: &str, root_public: &[u8; 32]) -> String {
    format!("{name} : {}", encode_bytes(&allowlist_entry(root_public)))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::chain::{validate, Trust};
    use crate::crypto::node::Node;

    fn request(dir: &Path, root: RootOfTrust, role: Role) -> Request {
        Request {
            node_id: "n1".into(),
            role,
            topics: vec!["xrd".into(), "xrd.keys".into(), "other".into()],
            pathlen: 1,
            root,
            output_dir: dir.to_owned(),
            force: false,
        }
    }

    #[test]
    fn password_provisioned_node_loads_and_its_chain_validates() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootOfTrust::Passwords {
            root: "rotpassword1234".into(),
            provisioning: "provpass99".into(),
        };
        let done = provision(&request(dir.path(), root, Role::Prodcon), 1.7e9).unwrap();
        assert_eq!(
            hex(&done.root_public),
            "1a3eeac1d9cc6f6abfd5c8eb01cc5fcb74577389f3917a3e9cdfaba28111d742"
        );
        let node = Node::load(&done.config_path).unwrap();
        assert_eq!(node.id, "n1");
        assert_eq!(node.signing.public(), done.node_public);
        // The node signs a leaf under its chain; it validates for the granted usages and roots.
        let mut elements = crate::crypto::chain::decode_chain(&node.chains[0]).unwrap();
        let leaf = Certificate {
            max_age: 2e9,
            poison: Poison::default(),
            key: msgpack::bin(vec![]),
            extra: vec![],
        };
        elements.push(leaf.sign(&node.signing));
        let chain = encode_chain(&elements);
        let trust = Trust {
            allow: vec![done.root_public],
            deny: vec![],
        };
        assert!(validate(&chain, &trust, usage::KEY_ENCRYPT, "xrd", 1.8e9).is_ok());
        assert!(validate(&chain, &trust, usage::KEY_ENCRYPT_REQUEST, "other", 1.8e9).is_ok());
        assert!(validate(&chain, &trust, usage::KEY_ENCRYPT, "third", 1.8e9).is_err());
        // Existing node: refused without force.
        let again = provision(
            &request(
                dir.path(),
                RootOfTrust::Passwords {
                    root: "rotpassword1234".into(),
                    provisioning: "provpass99".into(),
                },
                Role::Prodcon,
            ),
            1.7e9,
        );
        assert!(matches!(again, Err(ProvisionError::Exists(_))));
        #[cfg(unix)]
        for name in ["n1.config", "n1.crypto", "n1.seed"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(done.dir.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn key_file_root_signs_nodes_directly() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root.key");
        let root = write_root_key(&root_path, false).unwrap();
        assert!(write_root_key(&root_path, false).is_err());
        let reread = read_root_key(&root_path).unwrap();
        assert_eq!(reread.public(), root.public());
        let done = provision(
            &request(dir.path(), RootOfTrust::KeyFile(reread), Role::Consumer),
            1.7e9,
        )
        .unwrap();
        let node = Node::load(&done.config_path).unwrap();
        let mut elements = crate::crypto::chain::decode_chain(&node.chains[0]).unwrap();
        assert_eq!(elements.len(), 1);
        elements.push(
            Certificate {
                max_age: 0.0,
                poison: Poison::default(),
                key: msgpack::bin(vec![]),
                extra: vec![],
            }
            .sign(&node.signing),
        );
        let trust = Trust {
            allow: vec![root.public()],
            deny: vec![],
        };
        assert!(validate(
            &encode_chain(&elements),
            &trust,
            usage::KEY_ENCRYPT_REQUEST,
            "xrd",
            1.8e9
        )
        .is_ok());
        assert!(validate(
            &encode_chain(&elements),
            &trust,
            usage::KEY_ENCRYPT,
            "xrd",
            1.8e9
        )
        .is_err());
    }

    #[test]
    fn weak_passwords_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let weak = RootOfTrust::Passwords {
            root: "short".into(),
            provisioning: "provpass99".into(),
        };
        assert!(matches!(
            provision(&request(dir.path(), weak, Role::Producer), 1.7e9),
            Err(ProvisionError::Invalid(_))
        ));
        assert!(check_node_id("../x").is_err());
        assert!(check_node_id("lab-1.a").is_ok());
        assert_eq!(
            root_topics(&["a.b".into(), "a".into(), "^x.*".into()]),
            vec!["a", "^x.*"]
        );
    }
}
