//! SHA-512 of several independent messages at once: the chunk hashes.
//!
//! One SHA-512 stream is a serial chain, so OpenSSL's best single-stream code reaches ~750 MB/s
//! on this project's machines (AMD Zen 3, which has no SHA-512 instructions). Chunk hashes are
//! independent of each other, though: the `openmsi-sha512x4` crate (`crates/sha512x4`, a crate
//! of its own so that debug builds optimise it too) runs four in the four 64-bit lanes of an
//! AVX2 register. The whole-file hash (one stream) stays with [`super::hash`].

use super::hash::sha512;
use super::Sha512Digest;

/// SHA-512 of each message, in order. With AVX2, groups of four (or three) messages are hashed
/// side by side: about 1.5x the bytes per CPU second of hashing them one by one (`cargo run
/// --release --example hash_speed`: 1,136 vs 751 MB/s for 512 KiB chunks). Two or one left
/// over go one by one: two lanes busy out of four would be slower than OpenSSL.
pub fn sha512_each(messages: &[&[u8]]) -> Vec<Sha512Digest> {
    let mut digests = Vec::with_capacity(messages.len());
    for group in messages.chunks(openmsi_sha512x4::LANES) {
        match (group.len() >= 3)
            .then(|| openmsi_sha512x4::digests(group))
            .flatten()
        {
            Some(batch) => digests.extend(batch),
            None => digests.extend(group.iter().map(|m| sha512(m))),
        }
    }
    digests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// The vector kernel is checked against `sha2` in its crate; here, that the grouping
    /// (fours, a three, a pair or one left over) gives OpenSSL's answer for every message.
    #[test]
    fn equals_openssl_one_by_one_for_any_count_and_lengths() {
        let lengths = [
            0, 5, 111, 112, 127, 128, 129, 239, 240, 256, 3000, 70_000, 17,
        ];
        for count in 1..=lengths.len() {
            let messages: Vec<Vec<u8>> = lengths[..count]
                .iter()
                .enumerate()
                .map(|(i, &len)| pattern(len, i as u8))
                .collect();
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let expected: Vec<Sha512Digest> = refs.iter().map(|m| sha512(m)).collect();
            assert_eq!(sha512_each(&refs), expected, "{count} messages");
        }
        assert!(sha512_each(&[]).is_empty());
    }
}
