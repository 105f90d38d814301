//! End-to-end encryption compatible with KafkaCrypto (the library OpenMSIStream encrypts
//! topics with), written from the format description in `docs/ENCRYPTION.md`: the broker never
//! sees a chunk's bytes or its file's name.
//!
//! - [`primitives`]: the libsodium-equivalent building blocks.
//! - [`msgpack`]: strict msgpack helpers for KafkaCrypto's structures.
//! - [`ratchet`]: the producer's `.seed` ratchet, advanced durably before any key is used.
//! - [`record`]: the encrypted key/value format.
//! - [`chain`]: signed certificates and chain validation (who may do what on which topics).
//! - [`node`]: a provisioned node's files (`.config`, `.crypto`, `.seed`).
//! - [`nodeconf`]: the `.config` file format (Python configparser compatible).
//! - [`provision`]: creating a node (`openmsi provision-node`).
//! - [`exchange`]: the key-exchange messages: request, reply, acceptance (pure).
//! - [`globals`]: the allowlist, denylist and chains topics that change trust at run time.
//! - [`keystore`]: producer keys kept in the node config (`oldkeys`), for `serve-keys`.
//! - [`keyservice`]: the one key-exchange thread of a process (answers, requests, keys).
//! - [`session`]: what the commands use: `Encryption` (the node a config names), which makes
//!   every `Encryptor` (upload envelope), `Decryptor` (download opener) and `KeyServer`.

pub mod chain;
pub mod exchange;
pub mod globals;
pub mod keyservice;
pub mod keystore;
pub mod msgpack;
pub mod node;
pub mod nodeconf;
pub mod primitives;
pub mod provision;
pub mod ratchet;
pub mod record;
pub mod session;
