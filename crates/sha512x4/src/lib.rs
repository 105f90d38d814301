//! SHA-512 of up to four independent messages at once, with AVX2: the four 64-bit lanes of a
//! 256-bit register each run one message's compression, so one instruction advances four
//! hashes. A single SHA-512 stream is a serial chain and cannot use the lanes; independent
//! messages (openmsi's chunk hashes) can. Written from FIPS 180-4.
//!
//! Messages of different lengths share a batch: a lane whose message has no block left keeps
//! its state while the others go on, and a lane left alone finishes with the single-stream
//! compression (`sha2::compress512`). [`digests`] answers None where AVX2 is missing; the
//! caller then hashes one by one.

/// A SHA-512 digest.
pub type Sha512Digest = [u8; 64];

/// Messages per batch.
pub const LANES: usize = 4;

/// SHA-512 of each of `messages` (1 to [`LANES`]), in order; None when this CPU has no AVX2
/// (or is not x86-64).
pub fn digests(messages: &[&[u8]]) -> Option<Vec<Sha512Digest>> {
    assert!(
        (1..=LANES).contains(&messages.len()),
        "1 to {LANES} messages, not {}",
        messages.len()
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return Some(unsafe { avx2::sha512_group(messages) });
    }
    None
}

/// SHA-512 block size in bytes.
const BLOCK: usize = 128;

/// The initial hash value (FIPS 180-4, 5.3.5).
const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// The final one or two blocks of a message: its last partial block, the 0x80 marker, zeros
/// and the message length in bits (FIPS 180-4, 5.1.2).
struct Tail {
    bytes: [u8; 2 * BLOCK],
    blocks: usize,
}

impl Tail {
    fn of(message: &[u8]) -> Self {
        let full = message.len() / BLOCK * BLOCK;
        let rest = &message[full..];
        let mut bytes = [0u8; 2 * BLOCK];
        bytes[..rest.len()].copy_from_slice(rest);
        bytes[rest.len()] = 0x80;
        // The length field is 16 bytes; a message length fits in the low 8.
        let blocks = if rest.len() + 1 + 16 <= BLOCK { 1 } else { 2 };
        let bits = (message.len() as u64).wrapping_mul(8);
        bytes[blocks * BLOCK - 8..blocks * BLOCK].copy_from_slice(&bits.to_be_bytes());
        Self { bytes, blocks }
    }
}

/// A message seen as its sequence of 128-byte blocks, padding included.
struct Blocks<'a> {
    full: &'a [u8],
    tail: Tail,
}

impl<'a> Blocks<'a> {
    fn of(message: &'a [u8]) -> Self {
        Self {
            full: &message[..message.len() / BLOCK * BLOCK],
            tail: Tail::of(message),
        }
    }

    fn count(&self) -> usize {
        self.full.len() / BLOCK + self.tail.blocks
    }

    /// Block `i` (`i < count()`).
    fn get(&self, i: usize) -> &[u8] {
        let in_full = self.full.len() / BLOCK;
        if i < in_full {
            &self.full[i * BLOCK..(i + 1) * BLOCK]
        } else {
            let j = i - in_full;
            &self.tail.bytes[j * BLOCK..(j + 1) * BLOCK]
        }
    }
}

/// The digest bytes of a final state.
fn digest_of(state: &[u64; 8]) -> Sha512Digest {
    let mut out = [0u8; 64];
    for (bytes, word) in out.chunks_exact_mut(8).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Single-stream compression of blocks `from..` of a message into `state` (a lane left alone).
fn finish_alone(state: &mut [u64; 8], blocks: &Blocks<'_>, from: usize) {
    use sha2::digest::generic_array::GenericArray;
    for i in from..blocks.count() {
        sha2::compress512(state, &[*GenericArray::from_slice(blocks.get(i))]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Sha512Digest;
    use super::{digest_of, finish_alone, Blocks, BLOCK, IV};

    /// Messages per batch: 64-bit lanes in a 256-bit register.
    pub const LANES: usize = 4;
    const _: () = assert!(LANES == 4, "the lane arrays below are written out for 4");

    /// The round constants (FIPS 180-4, 4.2.3).
    const K: [u64; 80] = [
        0x428a2f98d728ae22,
        0x7137449123ef65cd,
        0xb5c0fbcfec4d3b2f,
        0xe9b5dba58189dbbc,
        0x3956c25bf348b538,
        0x59f111f1b605d019,
        0x923f82a4af194f9b,
        0xab1c5ed5da6d8118,
        0xd807aa98a3030242,
        0x12835b0145706fbe,
        0x243185be4ee4b28c,
        0x550c7dc3d5ffb4e2,
        0x72be5d74f27b896f,
        0x80deb1fe3b1696b1,
        0x9bdc06a725c71235,
        0xc19bf174cf692694,
        0xe49b69c19ef14ad2,
        0xefbe4786384f25e3,
        0x0fc19dc68b8cd5b5,
        0x240ca1cc77ac9c65,
        0x2de92c6f592b0275,
        0x4a7484aa6ea6e483,
        0x5cb0a9dcbd41fbd4,
        0x76f988da831153b5,
        0x983e5152ee66dfab,
        0xa831c66d2db43210,
        0xb00327c898fb213f,
        0xbf597fc7beef0ee4,
        0xc6e00bf33da88fc2,
        0xd5a79147930aa725,
        0x06ca6351e003826f,
        0x142929670a0e6e70,
        0x27b70a8546d22ffc,
        0x2e1b21385c26c926,
        0x4d2c6dfc5ac42aed,
        0x53380d139d95b3df,
        0x650a73548baf63de,
        0x766a0abb3c77b2a8,
        0x81c2c92e47edaee6,
        0x92722c851482353b,
        0xa2bfe8a14cf10364,
        0xa81a664bbc423001,
        0xc24b8b70d0f89791,
        0xc76c51a30654be30,
        0xd192e819d6ef5218,
        0xd69906245565a910,
        0xf40e35855771202a,
        0x106aa07032bbd1b8,
        0x19a4c116b8d2d0c8,
        0x1e376c085141ab53,
        0x2748774cdf8eeb99,
        0x34b0bcb5e19b48a8,
        0x391c0cb3c5c95a63,
        0x4ed8aa4ae3418acb,
        0x5b9cca4f7763e373,
        0x682e6ff3d6b2b8a3,
        0x748f82ee5defb2fc,
        0x78a5636f43172f60,
        0x84c87814a1f0ab72,
        0x8cc702081a6439ec,
        0x90befffa23631e28,
        0xa4506cebde82bde9,
        0xbef9a3f7b2c67915,
        0xc67178f2e372532b,
        0xca273eceea26619c,
        0xd186b8c721c0c207,
        0xeada7dd6cde0eb1e,
        0xf57d4f7fee6ed178,
        0x06f067aa72176fba,
        0x0a637dc5a2c898a6,
        0x113f9804bef90dae,
        0x1b710b35131c471b,
        0x28db77f523047d84,
        0x32caab7b40c72493,
        0x3c9ebe0a15c9bebc,
        0x431d67c49c100d4c,
        0x4cc5d4becb3e42b6,
        0x597f299cfc657e2a,
        0x5fcb6fab3ad6faec,
        0x6c44198c4a475817,
    ];

    /// Rotates each 64-bit lane right by `N` bits.
    macro_rules! rotr {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_srli_epi64::<$n>($x),
                _mm256_slli_epi64::<{ 64 - $n }>($x),
            )
        };
    }

    /// Rotates each 64-bit lane right by 8 bits: one byte shuffle instead of two shifts.
    #[inline(always)]
    unsafe fn rotr8(x: __m256i) -> __m256i {
        let order = _mm256_set_epi8(
            8, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1, 8, 15, 14, 13, 12, 11, 10, 9, 0,
            7, 6, 5, 4, 3, 2, 1,
        );
        _mm256_shuffle_epi8(x, order)
    }

    #[inline(always)]
    unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi64(a, b)
    }

    #[inline(always)]
    unsafe fn xor3(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_xor_si256(a, b), c)
    }

    /// The 16 words of the four lanes' blocks, word `t` of lane `l` in lane `l` of `w[t]`,
    /// big-endian as SHA-512 reads them: four words of each block are loaded at once, and
    /// each group of four is transposed from one-block-per-register to one-word-per-register.
    #[inline(always)]
    unsafe fn load_words(blocks: &[&[u8]; LANES], w: &mut [__m256i; 16]) {
        let swap = _mm256_set_epi8(
            8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0,
            1, 2, 3, 4, 5, 6, 7,
        );
        for group in 0..4 {
            let row = |lane: usize| {
                let bytes = &blocks[lane][group * 32..group * 32 + 32];
                _mm256_shuffle_epi8(_mm256_loadu_si256(bytes.as_ptr().cast()), swap)
            };
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let (lo01, hi01) = (_mm256_unpacklo_epi64(r0, r1), _mm256_unpackhi_epi64(r0, r1));
            let (lo23, hi23) = (_mm256_unpacklo_epi64(r2, r3), _mm256_unpackhi_epi64(r2, r3));
            w[group * 4] = _mm256_permute2x128_si256::<0x20>(lo01, lo23);
            w[group * 4 + 1] = _mm256_permute2x128_si256::<0x20>(hi01, hi23);
            w[group * 4 + 2] = _mm256_permute2x128_si256::<0x31>(lo01, lo23);
            w[group * 4 + 3] = _mm256_permute2x128_si256::<0x31>(hi01, hi23);
        }
    }

    /// One round: `d` and `h` take their new values; the caller renames the eight words for
    /// the next round instead of moving them (FIPS 180-4, 6.4.2, step 3).
    macro_rules! round {
        ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $kw:expr) => {
            let big_s1 = xor3(rotr!($e, 14), rotr!($e, 18), rotr!($e, 41));
            let ch = _mm256_xor_si256(_mm256_and_si256($e, $f), _mm256_andnot_si256($e, $g));
            let t1 = add(add($h, big_s1), add(ch, $kw));
            let big_s0 = xor3(rotr!($a, 28), rotr!($a, 34), rotr!($a, 39));
            let maj = _mm256_or_si256(
                _mm256_and_si256($a, $b),
                _mm256_and_si256($c, _mm256_or_si256($a, $b)),
            );
            $d = add($d, t1);
            $h = add(t1, add(big_s0, maj));
        };
    }

    /// One compression of one block in each lane (FIPS 180-4, 6.4.2).
    #[target_feature(enable = "avx2")]
    unsafe fn compress(state: &mut [__m256i; 8], blocks: &[&[u8]; LANES]) {
        // The message schedule, 16 words at a time: word t is computed at round t.
        let mut w = [_mm256_setzero_si256(); 16];
        load_words(blocks, &mut w);
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for t in (0..80).step_by(16) {
            if t > 0 {
                for i in 0..16 {
                    let (w15, w2) = (w[(i + 1) & 15], w[(i + 14) & 15]);
                    let s0 = xor3(rotr!(w15, 1), rotr8(w15), _mm256_srli_epi64::<7>(w15));
                    let s1 = xor3(rotr!(w2, 19), rotr!(w2, 61), _mm256_srli_epi64::<6>(w2));
                    w[i] = add(add(w[i], s0), add(w[(i + 9) & 15], s1));
                }
            }
            let kw = |i: usize| add(w[i], _mm256_set1_epi64x(K[t + i] as i64));
            round!(a, b, c, d, e, f, g, h, kw(0));
            round!(h, a, b, c, d, e, f, g, kw(1));
            round!(g, h, a, b, c, d, e, f, kw(2));
            round!(f, g, h, a, b, c, d, e, kw(3));
            round!(e, f, g, h, a, b, c, d, kw(4));
            round!(d, e, f, g, h, a, b, c, kw(5));
            round!(c, d, e, f, g, h, a, b, kw(6));
            round!(b, c, d, e, f, g, h, a, kw(7));
            round!(a, b, c, d, e, f, g, h, kw(8));
            round!(h, a, b, c, d, e, f, g, kw(9));
            round!(g, h, a, b, c, d, e, f, kw(10));
            round!(f, g, h, a, b, c, d, e, kw(11));
            round!(e, f, g, h, a, b, c, d, kw(12));
            round!(d, e, f, g, h, a, b, c, kw(13));
            round!(c, d, e, f, g, h, a, b, kw(14));
            round!(b, c, d, e, f, g, h, a, kw(15));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = add(*s, v);
        }
    }

    /// Lane `lane` of each state word.
    unsafe fn lane_state(state: &[__m256i; 8], lane: usize) -> [u64; 8] {
        let mut out = [0u64; 8];
        for (word, v) in out.iter_mut().zip(state) {
            let mut lanes = [0u64; LANES];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *v);
            *word = lanes[lane];
        }
        out
    }

    /// SHA-512 of up to [`LANES`] messages, one per lane.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sha512_group(messages: &[&[u8]]) -> Vec<Sha512Digest> {
        debug_assert!(!messages.is_empty() && messages.len() <= LANES);
        let blocks: Vec<Blocks<'_>> = messages.iter().map(|m| Blocks::of(m)).collect();
        let counts: Vec<usize> = blocks.iter().map(Blocks::count).collect();
        let mut state = IV.map(|word| _mm256_set1_epi64x(word as i64));
        // A lane without a message is fed this block; its result is never read.
        let idle = [0u8; BLOCK];
        let block_of = |lane: usize, i: usize| -> &[u8] {
            if lane < messages.len() && i < counts[lane] {
                blocks[lane].get(i)
            } else {
                &idle
            }
        };
        // Every message has these blocks: all lanes advance together.
        let common = counts.iter().copied().min().unwrap_or(0);
        for i in 0..common {
            compress(&mut state, &[0, 1, 2, 3].map(|lane| block_of(lane, i)));
        }
        // Then, while at least two lanes have blocks left, a lane whose message is done keeps
        // its state.
        let mut i = common;
        loop {
            let active = counts.iter().filter(|&&n| i < n).count();
            if active < 2 {
                break;
            }
            let before = state;
            compress(&mut state, &[0, 1, 2, 3].map(|lane| block_of(lane, i)));
            let keep = [0, 1, 2, 3].map(|lane| {
                if lane < messages.len() && i >= counts[lane] {
                    -1i64
                } else {
                    0
                }
            });
            let mask = _mm256_loadu_si256(keep.as_ptr().cast());
            for (now, was) in state.iter_mut().zip(before) {
                *now = _mm256_blendv_epi8(*now, was, mask);
            }
            i += 1;
        }
        (0..messages.len())
            .map(|lane| {
                let mut lane_words = lane_state(&state, lane);
                finish_alone(&mut lane_words, &blocks[lane], i.min(counts[lane]));
                digest_of(&lane_words)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn one(m: &[u8]) -> Sha512Digest {
        sha2::Sha512::digest(m).into()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn check(messages: &[Vec<u8>]) {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let expected: Vec<Sha512Digest> = refs.iter().map(|m| one(m)).collect();
        match digests(&refs) {
            Some(got) => assert_eq!(
                got,
                expected,
                "lengths {:?}",
                refs.iter().map(|m| m.len()).collect::<Vec<_>>()
            ),
            None => eprintln!("no AVX2 here: nothing to compare"),
        }
    }

    #[test]
    fn equals_one_by_one_for_every_length_around_the_block_boundaries() {
        for len in (0..=300).chain([1000, 4096, 65_536, 65_537]) {
            check(&(0..4).map(|s| pattern(len, s)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn equals_one_by_one_for_uneven_lanes_and_fewer_messages() {
        for lengths in [
            [0, 0, 0, 0],
            [1, 2000, 129, 70_000],
            [70_000, 5, 112, 113],
            [256, 255, 257, 0],
            [111, 112, 127, 128],
        ] {
            let messages: Vec<Vec<u8>> =
                lengths.iter().map(|&len| pattern(len, len as u8)).collect();
            for n in 1..=4 {
                check(&messages[..n]);
            }
        }
    }

    #[test]
    fn known_answer() {
        // FIPS 180-4's example "abc", in a batch with other messages.
        let Some(d) = digests(&[b"abc", b"", b"abc", b"x"]) else {
            return;
        };
        let hex: String = d[0].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(d[0], d[2]);
    }
}
