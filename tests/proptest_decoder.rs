//! Property tests of the chunk decoder (`openmsi::chunk::decode_value`), the first code that
//! touches bytes from the network: arbitrary bytes and mutated valid encodings never panic,
//! and every valid encoding decodes back to what was encoded.
//!
//! CI runs a bounded number of cases (a few seconds); `PROPTEST_CASES=100000` runs more.

use openmsi::chunk::{decode_value, encode_value, ChunkHeader, DecodedChunk, WireFields};
use proptest::prelude::*;

/// Cases per property: `PROPTEST_CASES` when set, else `default` (sized for CI).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Owned inputs of one chunk value.
#[derive(Debug, Clone)]
struct Chunk {
    filename: String,
    file_hash: [u8; 64],
    chunk_hash: [u8; 64],
    offset: u64,
    chunk_i: u64,
    n_total_chunks: u64,
    subdir: String,
    filename_append: String,
    data: Vec<u8>,
    file_mtime: f64,
    fields: WireFields,
}

impl Chunk {
    fn header(&self) -> ChunkHeader<'_> {
        ChunkHeader {
            filename: &self.filename,
            file_hash: &self.file_hash,
            chunk_hash: &self.chunk_hash,
            offset: self.offset,
            chunk_i: self.chunk_i,
            n_total_chunks: self.n_total_chunks,
            subdir: &self.subdir,
            filename_append: &self.filename_append,
            file_mtime: self.file_mtime,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(&self.header(), &self.data, self.fields, &mut out);
        out
    }
}

/// Integers around msgpack's encoding boundaries (fixint, u8, u16, u32, u64) and anywhere.
fn wire_int() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..300,
        prop::sample::select(vec![
            127u64,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

/// Strings whose lengths cross msgpack's str header sizes (31/32, 255/256).
fn wire_str() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z]{250,300}", any::<String>()]
}

fn hash() -> impl Strategy<Value = [u8; 64]> {
    prop::collection::vec(any::<u8>(), 64).prop_map(|v| v.try_into().expect("64 bytes"))
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        (
            wire_str(),
            hash(),
            hash(),
            wire_int(),
            wire_int(),
            wire_int(),
        ),
        (
            wire_str(),
            wire_str(),
            prop_oneof![
                8 => prop::collection::vec(any::<u8>(), 0..300),
                1 => prop::collection::vec(any::<u8>(), 65_530..65_540),
            ],
            prop_oneof![
                Just(0.0f64),
                any::<f64>(),
                0.0f64..4_000_000_000.0,
                Just(f64::NAN),
                Just(-1.5),
            ],
            prop_oneof![Just(WireFields::Nine), Just(WireFields::Ten)],
        ),
    )
        .prop_map(
            |(
                (filename, file_hash, chunk_hash, offset, chunk_i, n_total_chunks),
                (subdir, filename_append, data, file_mtime, fields),
            )| Chunk {
                filename,
                file_hash,
                chunk_hash,
                offset,
                chunk_i,
                n_total_chunks,
                subdir,
                filename_append,
                data,
                file_mtime,
                fields,
            },
        )
}

/// The mtime the decoder reports for what was sent: only positive finite times in 10 fields.
fn expected_mtime(chunk: &Chunk) -> Option<f64> {
    (chunk.fields == WireFields::Ten && chunk.file_mtime.is_finite() && chunk.file_mtime > 0.0)
        .then_some(chunk.file_mtime)
}

/// One change to an encoded value.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at (index mod len).
    Set(usize, u8),
    /// Flip one bit.
    Flip(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Cut the value short.
    Truncate(usize),
    /// Append garbage.
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::Set(i, b) => bytes[i % n] = *b,
        Mutation::Flip(i, bit) => bytes[i % n] ^= 1 << bit,
        Mutation::Insert(i, b) => bytes.insert(i % (n + 1), *b),
        Mutation::Remove(i) => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::Append(extra) => bytes.extend_from_slice(extra),
    }
}

/// Whatever the decoder accepts, it accepts again after our encoder rewrote it, with the same
/// meaning (the decoder may accept non-canonical encodings; the encoder writes canonical ones).
fn reencode_is_stable(decoded: &DecodedChunk<'_>) -> Result<(), TestCaseError> {
    let header = ChunkHeader {
        filename: decoded.filename,
        file_hash: &decoded.file_hash,
        chunk_hash: &decoded.chunk_hash,
        offset: decoded.offset,
        chunk_i: decoded.chunk_i,
        n_total_chunks: decoded.n_total_chunks,
        subdir: decoded.subdir,
        filename_append: decoded.filename_append,
        file_mtime: decoded.file_mtime.unwrap_or(0.0),
    };
    let mut out = Vec::new();
    encode_value(&header, decoded.data, decoded.fields, &mut out);
    let again = decode_value(&out)
        .map_err(|e| TestCaseError::fail(format!("re-encoded value rejected: {e}")))?;
    prop_assert_eq!(&again, decoded);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2_000)))]

    /// Valid encodings (9 and 10 fields, every header size) decode to exactly what was encoded.
    #[test]
    fn valid_encodings_round_trip(c in chunk()) {
        let bytes = c.encode();
        let d = decode_value(&bytes)
            .map_err(|e| TestCaseError::fail(format!("valid encoding rejected: {e}")))?;
        prop_assert_eq!(d.filename, c.filename.as_str());
        prop_assert_eq!(d.file_hash, c.file_hash);
        prop_assert_eq!(d.chunk_hash, c.chunk_hash);
        prop_assert_eq!(d.offset, c.offset);
        prop_assert_eq!(d.chunk_i, c.chunk_i);
        prop_assert_eq!(d.n_total_chunks, c.n_total_chunks);
        prop_assert_eq!(d.subdir, c.subdir.as_str());
        prop_assert_eq!(d.filename_append, c.filename_append.as_str());
        prop_assert_eq!(d.data, c.data.as_slice());
        prop_assert_eq!(d.fields, c.fields);
        prop_assert_eq!(d.file_mtime, expected_mtime(&c));
        // And the encoder is a function of the decoded value: encoding it again gives the
        // same bytes (when the mtime survives the trip; "unknown" is re-sent as 0.0).
        if c.fields == WireFields::Nine || expected_mtime(&c).is_some() || c.file_mtime.to_bits() == 0 {
            let mut again = Vec::new();
            let header = ChunkHeader { file_mtime: d.file_mtime.unwrap_or(0.0), ..c.header() };
            encode_value(&header, d.data, d.fields, &mut again);
            prop_assert_eq!(again, bytes);
        }
    }

    /// Valid encodings with a few bytes changed, inserted, removed, or cut off: an error or a
    /// chunk, never a panic; an accepted one re-encodes stably.
    #[test]
    fn mutated_encodings_never_panic(
        c in chunk(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = c.encode();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Ok(d) = decode_value(&bytes) {
            reencode_is_stable(&d)?;
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(20_000)))]

    /// Arbitrary bytes, mostly starting like a chunk array so the decoder gets past the first
    /// byte: an error or a chunk, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        first in prop_oneof![Just(0x99u8), Just(0x9au8), any::<u8>()],
        rest in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![first];
        bytes.extend_from_slice(&rest);
        if let Ok(d) = decode_value(&bytes) {
            reencode_is_stable(&d)?;
        }
        let _ = decode_value(&rest);
    }
}
