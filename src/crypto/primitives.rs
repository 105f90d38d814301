//! The cryptographic primitives KafkaCrypto's formats are built from, each a thin wrapper over
//! a RustCrypto or dalek crate with the exact parameters and byte layouts libsodium uses (so
//! records, chains and node files are byte-compatible with the Python package):
//!
//! | here | libsodium | crate |
//! |---|---|---|
//! | [`blake2b_keyed`] | `crypto_generichash_blake2b_salt_personal` | `blake2` |
//! | [`blake2b_256`] | `crypto_generichash` (unkeyed, 32 bytes) | `blake2` |
//! | [`secretbox_seal`]/[`secretbox_open`] | `crypto_secretbox_easy` (tag ‖ ciphertext) | `crypto_secretbox` |
//! | [`SigningKey`] | `crypto_sign` / `crypto_sign_open` (combined mode: sig ‖ msg) | `ed25519-dalek` |
//! | [`x25519`] | `crypto_scalarmult_curve25519` | `x25519-dalek` |
//! | [`password_seed`] | `crypto_pwhash_scryptsalsa208sha256`, "interactive" limits | `scrypt` |

use blake2::digest::consts::{U32, U56};
use blake2::digest::{Mac, Update, VariableOutput};
use blake2::Blake2bMac;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use ed25519_dalek::Signer;
use sha2::Digest;
use zeroize::Zeroizing;

/// Bytes of a secret key, a topic secret or a ratchet secret.
pub const SECRET_BYTES: usize = 32;
/// Bytes of an XSalsa20 nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes of a Poly1305 tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// A 32-byte secret that is wiped from memory when dropped.
pub type Secret = Zeroizing<[u8; SECRET_BYTES]>;

/// libsodium's keyed BLAKE2b with a 16-byte salt and a 16-byte personalisation, over an empty
/// message, with 32 or 56 bytes of output (the only sizes KafkaCrypto asks for).
pub fn blake2b_keyed(key: &[u8], salt: &[u8; 16], personal: &[u8; 16], out: &mut [u8]) {
    // blake2's MAC takes a key of at most 64 bytes; ours are always 32.
    match out.len() {
        32 => {
            let mac = Blake2bMac::<U32>::new_with_salt_and_personal(key, salt, personal)
                .expect("BLAKE2b key, salt and personal within limits");
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        56 => {
            let mac = Blake2bMac::<U56>::new_with_salt_and_personal(key, salt, personal)
                .expect("BLAKE2b key, salt and personal within limits");
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        n => panic!("blake2b_keyed: unsupported output size {n}"),
    }
}

/// libsodium's default `crypto_generichash`: unkeyed BLAKE2b with 32 bytes of output.
pub fn blake2b_256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake2::Blake2bVar::new(32).expect("32 is a valid BLAKE2b size");
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0u8; 32];
    hasher
        .finalize_variable(&mut out)
        .expect("output buffer of the requested size");
    out
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        Digest::update(&mut hasher, part);
    }
    hasher.finalize().into()
}

/// `crypto_secretbox_easy`: XSalsa20-Poly1305, output tag(16) ‖ ciphertext.
pub fn secretbox_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XSalsa20Poly1305::new(key.into());
    cipher
        .encrypt(nonce.into(), plaintext)
        .expect("XSalsa20-Poly1305 encryption of an in-memory buffer cannot fail")
}

/// Opens a [`secretbox_seal`] box; `None` when the tag does not match (tampered, wrong key).
pub fn secretbox_open(key: &[u8; 32], nonce: &[u8; 24], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < TAG_BYTES {
        return None;
    }
    XSalsa20Poly1305::new(key.into())
        .decrypt(nonce.into(), sealed)
        .ok()
}

/// Fills a buffer from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).expect("the operating system's random source is unavailable");
    out
}

/// A random 32-byte secret.
pub fn random_secret() -> Secret {
    Zeroizing::new(random_bytes::<SECRET_BYTES>())
}

/// An Ed25519 signing key, kept as libsodium keeps it: 64 bytes, seed ‖ public key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// The key whose seed is `seed` (`crypto_sign_seed_keypair`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// A new random key.
    pub fn generate() -> Self {
        Self::from_seed(&random_secret())
    }

    /// libsodium's 64-byte secret key (seed ‖ public key); refused when the public half does
    /// not belong to the seed.
    pub fn from_libsodium(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 64] = bytes.try_into().ok()?;
        ed25519_dalek::SigningKey::from_keypair_bytes(bytes)
            .ok()
            .map(SigningKey)
    }

    /// The 64-byte form libsodium stores (seed ‖ public key).
    pub fn to_libsodium(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.0.to_keypair_bytes())
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// `crypto_sign` combined mode: signature(64) ‖ message.
    pub fn sign_combined(&self, message: &[u8]) -> Vec<u8> {
        let signature = self.0.sign(message);
        let mut out = Vec::with_capacity(SIGNATURE_BYTES + message.len());
        out.extend_from_slice(&signature.to_bytes());
        out.extend_from_slice(message);
        out
    }
}

/// `crypto_sign_open`: the message of a combined signature(64) ‖ message by `public`, or
/// `None` when the signature does not verify (or the key is not a valid point).
pub fn open_signed<'a>(public: &[u8; 32], signed: &'a [u8]) -> Option<&'a [u8]> {
    if signed.len() < SIGNATURE_BYTES {
        return None;
    }
    let (signature, message) = signed.split_at(SIGNATURE_BYTES);
    let key = ed25519_dalek::VerifyingKey::from_bytes(public).ok()?;
    let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
    // Strict verification, as libsodium: no small-order keys, canonical S.
    key.verify_strict(message, &signature).ok()?;
    Some(message)
}

/// A random X25519 secret scalar and its public key (`crypto_scalarmult_curve25519_base`).
pub fn x25519_keypair() -> (Secret, [u8; 32]) {
    let secret = random_secret();
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret));
    (secret, public.to_bytes())
}

/// `crypto_scalarmult_curve25519(secret, public)`; `None` for an all-zero result (a
/// small-order public key), which libsodium refuses too.
pub fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Option<Secret> {
    let shared = x25519_dalek::StaticSecret::from(*secret)
        .diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return None;
    }
    Some(Zeroizing::new(shared.to_bytes()))
}

/// KafkaCrypto's password-to-seed derivation: scrypt with N = 2^14, r = 8, p = 1, 32 bytes
/// (libsodium's scryptsalsa208sha256 with its "interactive" limits).
pub fn password_seed(password: &[u8], salt: &[u8; 32]) -> Secret {
    let params = scrypt::Params::new(14, 8, 1, 32).expect("valid scrypt parameters");
    let mut out = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, out.as_mut()).expect("32-byte scrypt output");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn password_derived_root_of_trust_matches_kafkacrypto() {
        // Vector from running KafkaCrypto's simple-provision with this password (the allowlist
        // entry it wrote holds this public key).
        let password = b"rotpassword1234";
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&sha256(&[b"Root of Trust", password]));
        let seed = password_seed(password, &salt);
        let key = SigningKey::from_seed(&seed);
        assert_eq!(
            hex(&key.public()),
            "1a3eeac1d9cc6f6abfd5c8eb01cc5fcb74577389f3917a3e9cdfaba28111d742"
        );
    }

    #[test]
    fn signatures_round_trip_and_refuse_tampering() {
        let key = SigningKey::generate();
        let signed = key.sign_combined(b"hello");
        assert_eq!(open_signed(&key.public(), &signed), Some(&b"hello"[..]));
        let mut bad = signed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(open_signed(&key.public(), &bad), None);
        assert_eq!(open_signed(&SigningKey::generate().public(), &signed), None);
        let round = SigningKey::from_libsodium(key.to_libsodium().as_ref()).unwrap();
        assert_eq!(round.public(), key.public());
    }

    #[test]
    fn secretbox_layout_is_tag_then_ciphertext() {
        let key = [7u8; 32];
        let nonce = [9u8; 24];
        let sealed = secretbox_seal(&key, &nonce, b"abc");
        assert_eq!(sealed.len(), 3 + TAG_BYTES);
        assert_eq!(secretbox_open(&key, &nonce, &sealed).unwrap(), b"abc");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(secretbox_open(&key, &nonce, &bad).is_none());
        assert!(secretbox_open(&key, &nonce, &sealed[..10]).is_none());
    }

    #[test]
    fn x25519_agrees_and_refuses_small_order_points() {
        let (a, a_pub) = x25519_keypair();
        let (b, b_pub) = x25519_keypair();
        assert_eq!(*x25519(&a, &b_pub).unwrap(), *x25519(&b, &a_pub).unwrap());
        assert!(x25519(&a, &[0u8; 32]).is_none());
    }
}
