//! Stable choice of a partition for a file (`docs/WIRE_FORMAT.md`, "Partitioning"): every chunk of one file goes to
//! one partition, so a consumer group spread over several processes still sees whole files.

/// Kafka's murmur2 (the Java client's default key hash), so the choice is stable across runs,
/// machines and versions, and matches what other Kafka tooling would compute for the same bytes.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition for a file, from its path relative to the upload root (`/`-separated).
/// Same rule as Kafka's default partitioner: `(murmur2(bytes) & 0x7fffffff) % partitions`.
pub fn partition_for_path(relative_path: &str, partitions: i32) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    ((murmur2(relative_path.as_bytes()) & 0x7fff_ffff) % partitions as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_values() {
        // Values from Apache Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        for n in 1..20 {
            let p = partition_for_path("a/b/x.dat", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for_path("a/b/x.dat", n));
        }
        assert_eq!(partition_for_path("anything", 0), 0);
    }
}
