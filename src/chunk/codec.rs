//! Encode and decode a chunk's Kafka message value: a MessagePack array of 9 or 10 elements.
//!
//! | idx | field | written as | also accepted when reading |
//! |---|---|---|---|
//! | 0 | filename | str | bin (must be UTF-8) |
//! | 1 | file_hash | bin, 64 bytes | str/raw, 64 bytes |
//! | 2 | chunk_hash | bin, 64 bytes | str/raw, 64 bytes |
//! | 3 | chunk_offset_write | smallest uint | any int encoding, if not negative |
//! | 4 | chunk_i (1-based) | smallest uint | same |
//! | 5 | n_total_chunks | smallest uint | same |
//! | 6 | subdir_str | str | bin (must be UTF-8) |
//! | 7 | filename_append | str | bin (must be UTF-8) |
//! | 8 | data | bin | str/raw |
//! | 9 | file_mtime (10 fields only) | float64 | float32, any int |
//!
//! Writing matches msgpack-python's `packb(..., use_bin_type=True)` byte for byte: smallest
//! length and int encodings, `str` for text, `bin` for bytes, float64 for the mtime.
//!
//! Reading follows what the reference's `DataFileChunkDeserializer` accepts. It unpacks with
//! `raw=True`, so `str` and `bin` both arrive as `bytes`: text fields are `.decode()`d (UTF-8,
//! so a `bin` text field is fine), and hashes and data are used as bytes whatever their family
//! (so a hash packed as raw/str by an old msgpack without `use_bin_type` is accepted). The mtime
//! goes through `float()`, so an int is fine. We are stricter than the reference where it is
//! liberal by accident: it would take `int(b"12")` or `int(3.7)` for an integer field and
//! `float(b"1.5")` for the mtime; no producer writes those and we reject them. Hash lengths are
//! checked here (the reference only notices a bad `file_hash` after the whole file is in).
//!
//! Decoding checks structure only; see the [module docs](super) for what the downloader must
//! still check. It never panics and never allocates: every length is checked against the bytes
//! actually present before anything is sliced, and the result borrows from the input.

use std::convert::Infallible;

use rmp::encode::{ByteBuf, ValueWriteError};
use rmp::Marker;

use super::{Sha512Digest, WireFields, HASH_LEN};

/// Everything in a chunk value except the data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkHeader<'a> {
    /// Bare file name, no folders.
    pub filename: &'a str,
    /// SHA-512 of the whole file.
    pub file_hash: &'a Sha512Digest,
    /// SHA-512 of `data`.
    pub chunk_hash: &'a Sha512Digest,
    /// Byte offset of `data` in the file (`chunk_offset_write`).
    pub offset: u64,
    /// Chunk index, 1-based.
    pub chunk_i: u64,
    /// Number of chunks of this file.
    pub n_total_chunks: u64,
    /// Folder relative to the upload root, `/`-separated, `""` at the top level.
    pub subdir: &'a str,
    /// Appended to the file stem on rebuild; always `""` when we produce.
    pub filename_append: &'a str,
    /// Source file's modification time in Unix seconds; `0.0` when unknown (what the
    /// reference writes for "unknown"). Not written with [`WireFields::Nine`].
    pub file_mtime: f64,
}

/// One field of the chunk array, for error messages. Displays as the reference's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// Index 0.
    Filename,
    /// Index 1.
    FileHash,
    /// Index 2.
    ChunkHash,
    /// Index 3.
    ChunkOffsetWrite,
    /// Index 4.
    ChunkI,
    /// Index 5.
    NTotalChunks,
    /// Index 6.
    SubdirStr,
    /// Index 7.
    FilenameAppend,
    /// Index 8.
    Data,
    /// Index 9.
    FileMtime,
}

impl Field {
    /// The reference's name of the field (`DataFileChunk` attribute).
    pub fn name(self) -> &'static str {
        match self {
            Field::Filename => "filename",
            Field::FileHash => "file_hash",
            Field::ChunkHash => "chunk_hash",
            Field::ChunkOffsetWrite => "chunk_offset_write",
            Field::ChunkI => "chunk_i",
            Field::NTotalChunks => "n_total_chunks",
            Field::SubdirStr => "subdir_str",
            Field::FilenameAppend => "filename_append",
            Field::Data => "data",
            Field::FileMtime => "file_mtime",
        }
    }

    /// The position in the array.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (#{})", self.name(), self.index())
    }
}

/// Why a message value is not a chunk. Each variant names the field and what was wrong, so a
/// log line about a skipped message is enough to understand it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("value is empty: not a data file chunk")]
    Empty,
    /// The first byte is not a msgpack array header.
    #[error(
        "value is not a MessagePack array (its first byte 0x{byte:02x} starts a {found}): not a \
         data file chunk"
    )]
    NotAnArray {
        /// The first byte of the value.
        byte: u8,
        /// The msgpack type that byte starts.
        found: &'static str,
    },
    /// An array, but not of 9 or 10 elements.
    #[error("chunk array has {count} elements, expected 9 or 10")]
    WrongFieldCount {
        /// The element count in the header.
        count: u32,
    },
    /// The value ends before what its headers announce.
    #[error(
        "value is truncated in {at}: {needed} more bytes are needed but only {available} remain"
    )]
    Truncated {
        /// `"array header"` or the field's name.
        at: &'static str,
        /// Bytes the header announces (or the header itself needs).
        needed: u64,
        /// Bytes left in the value.
        available: usize,
    },
    /// A field of the wrong msgpack type.
    #[error("field {field} has type {found}, expected {expected}")]
    WrongType {
        /// Which field.
        field: Field,
        /// The msgpack type found.
        found: &'static str,
        /// What is accepted there.
        expected: &'static str,
    },
    /// A text field that is not UTF-8.
    #[error("field {field} is not valid UTF-8 (first bad byte at {valid_up_to})")]
    InvalidUtf8 {
        /// Which field.
        field: Field,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A hash that is not 64 bytes.
    #[error("field {field} is {len} bytes long, expected a {HASH_LEN}-byte SHA-512 digest")]
    HashLength {
        /// Which field.
        field: Field,
        /// Its actual length.
        len: usize,
    },
    /// A negative integer where a count or offset is expected.
    #[error("field {field} is negative ({value}), expected a non-negative integer")]
    NegativeInt {
        /// Which field.
        field: Field,
        /// The value.
        value: i64,
    },
    /// Bytes after the array (the reference's unpacker rejects these as "extra data").
    #[error("{count} unexpected bytes after the chunk array")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl DecodeError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<Field> {
        match self {
            DecodeError::WrongType { field, .. }
            | DecodeError::InvalidUtf8 { field, .. }
            | DecodeError::HashLength { field, .. }
            | DecodeError::NegativeInt { field, .. } => Some(*field),
            _ => None,
        }
    }
}

/// A decoded chunk, borrowing from the message bytes (the data is not copied).
///
/// Only structure has been checked; see the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodedChunk<'a> {
    /// Bare file name as sent (not yet checked for path safety).
    pub filename: &'a str,
    /// SHA-512 of the whole file, as sent.
    pub file_hash: Sha512Digest,
    /// SHA-512 of `data`, as sent (not yet verified).
    pub chunk_hash: Sha512Digest,
    /// Byte offset of `data` in the file.
    pub offset: u64,
    /// Chunk index as sent (1-based by convention, not yet checked).
    pub chunk_i: u64,
    /// Number of chunks of the file, as sent.
    pub n_total_chunks: u64,
    /// Folder relative to the output root, `/`-separated (not yet checked for path safety).
    pub subdir: &'a str,
    /// Appended to the file stem on rebuild when non-empty; see [`super::rebuilt_file_name`].
    pub filename_append: &'a str,
    /// The chunk's bytes.
    pub data: &'a [u8],
    /// Source file's mtime in Unix seconds. `None` for a 9-field value, and, as in the
    /// reference (`raw_mtime if raw_mtime > 0.0 else None`), when the value is not positive,
    /// which is how "unknown" (`0.0`) is sent. NaN and infinities are `None` too: they are not
    /// times. An int mtime is accepted.
    pub file_mtime: Option<f64>,
    /// Whether the value had 9 or 10 elements.
    pub fields: WireFields,
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Bytes of a msgpack str header for a payload of `len` bytes.
fn str_header_len(len: usize) -> usize {
    match len {
        0..=31 => 1,
        32..=255 => 2,
        256..=65_535 => 3,
        _ => 5,
    }
}

/// Bytes of a msgpack bin header for a payload of `len` bytes.
fn bin_header_len(len: usize) -> usize {
    match len {
        0..=255 => 2,
        256..=65_535 => 3,
        _ => 5,
    }
}

/// Bytes of the smallest msgpack encoding of a non-negative int.
fn uint_len(v: u64) -> usize {
    match v {
        0..=127 => 1,
        128..=255 => 2,
        256..=65_535 => 3,
        65_536..=4_294_967_295 => 5,
        _ => 9,
    }
}

/// The size of the value [`encode_value`] writes for this header and `data_len` bytes of data.
///
/// It is exact (the encoder writes exactly this many bytes), so callers can size buffers and
/// compare with the broker's `message.max.bytes` before reading any data.
pub fn encoded_len(header: &ChunkHeader<'_>, data_len: usize, fields: WireFields) -> usize {
    let mut n = 1; // fixarray header: 9 and 10 are both < 16
    n += str_header_len(header.filename.len()) + header.filename.len();
    n += 2 * (bin_header_len(HASH_LEN) + HASH_LEN);
    n += uint_len(header.offset) + uint_len(header.chunk_i) + uint_len(header.n_total_chunks);
    n += str_header_len(header.subdir.len()) + header.subdir.len();
    n += str_header_len(header.filename_append.len()) + header.filename_append.len();
    n += bin_header_len(data_len) + data_len;
    n + tail_len(fields)
}

/// msgpack lengths are 32-bit. A longer string or chunk cannot be represented at all, and
/// every caller bounds them far below that (ChunkSize <= 2 GiB; names come from file systems),
/// so a longer one is a bug in the caller, not bad input.
fn len_u32(len: usize, what: &str) -> u32 {
    match u32::try_from(len) {
        Ok(n) => n,
        Err(_) => panic!("invariant violated: {what} is {len} bytes, msgpack allows < 4 GiB"),
    }
}

/// Writes one chunk value into `out` (cleared first; its allocation is reused), byte for byte
/// what the reference's `DataFileChunkSerializer` writes for the same inputs (with
/// [`WireFields::Nine`], what OpenMSIStream <= 1.8.6 wrote).
///
/// The header is written in place and `data` is copied once, straight into `out`. To avoid
/// even that copy (read the data straight into the message), use [`value_data_slot`] and
/// [`finish_value`].
///
/// # Panics
///
/// If `data` or a string is 4 GiB or longer, which msgpack cannot represent; [`super::ChunkSize`]
/// keeps data far below that.
pub fn encode_value(header: &ChunkHeader<'_>, data: &[u8], fields: WireFields, out: &mut Vec<u8>) {
    use rmp::encode::RmpWrite;

    let total = encoded_len(header, data.len(), fields);
    // ByteBuf wraps the Vec without copying and makes rmp's writes infallible (its error type
    // is Infallible), so there is no error to unwrap.
    let mut buf = ByteBuf::from_vec(std::mem::take(out));
    buf.as_mut_vec().clear();
    buf.as_mut_vec().reserve(total);
    infallible(write_head(&mut buf, header, data.len(), fields));
    infallible(
        buf.write_bytes(data)
            .map_err(ValueWriteError::InvalidDataWrite),
    );
    infallible(write_tail(&mut buf, header, fields));
    *out = buf.into_vec();
    debug_assert_eq!(out.len(), total, "encoded_len must be exact");
}

/// First half of encoding a value without copying its data: sizes `out` for a value with
/// `data_len` bytes of data and returns the slot where the data goes, so the caller can read
/// the chunk from the file straight into the message. Fill all of it, then call
/// [`finish_value`] with a header of the same lengths (the hashes, which only [`finish_value`]
/// writes, may be computed from the slot in between). `out`'s allocation is reused; when it
/// already has the right length (every full chunk after the first) nothing is initialised.
///
/// # Panics
///
/// As [`encode_value`].
pub fn value_data_slot<'o>(
    header: &ChunkHeader<'_>,
    data_len: usize,
    fields: WireFields,
    out: &'o mut Vec<u8>,
) -> &'o mut [u8] {
    let total = encoded_len(header, data_len, fields);
    let start = total - data_len - tail_len(fields);
    out.resize(total, 0);
    &mut out[start..start + data_len]
}

/// Second half of [`value_data_slot`]: writes the header fields before the data and the mtime
/// after it. `out` then holds exactly what [`encode_value`] writes for this header and the
/// data in the slot.
///
/// # Panics
///
/// If `out` was not laid out by [`value_data_slot`] for the same lengths (a caller bug).
pub fn finish_value(header: &ChunkHeader<'_>, data_len: usize, fields: WireFields, out: &mut [u8]) {
    let total = encoded_len(header, data_len, fields);
    assert_eq!(
        out.len(),
        total,
        "invariant violated: finish_value needs the layout value_data_slot made for the same lengths"
    );
    let start = total - data_len - tail_len(fields);
    // The header is ~100-300 bytes: assembling it apart and copying it is cheap next to the
    // data it saves copying.
    let mut head = ByteBuf::with_capacity(start);
    infallible(write_head(&mut head, header, data_len, fields));
    out[..start].copy_from_slice(head.as_slice());
    let mut tail = ByteBuf::with_capacity(tail_len(fields));
    infallible(write_tail(&mut tail, header, fields));
    out[start + data_len..].copy_from_slice(tail.as_slice());
}

/// Bytes after the data: the float64 mtime in 10-field values.
fn tail_len(fields: WireFields) -> usize {
    match fields {
        WireFields::Ten => 9, // 0xcb + 8 bytes
        WireFields::Nine => 0,
    }
}

/// rmp's writes into a [`ByteBuf`] cannot fail (the error type is uninhabited).
fn infallible(result: Result<(), ValueWriteError<Infallible>>) {
    match result {
        Ok(()) => {}
        Err(
            ValueWriteError::InvalidMarkerWrite(never) | ValueWriteError::InvalidDataWrite(never),
        ) => match never {},
    }
}

/// Everything before the data's bytes: the array header, fields 0-7 and the data's bin header.
fn write_head(
    buf: &mut ByteBuf,
    header: &ChunkHeader<'_>,
    data_len: usize,
    fields: WireFields,
) -> Result<(), ValueWriteError<Infallible>> {
    use rmp::encode::RmpWrite;
    use rmp::encode::{write_array_len, write_bin_len, write_str_len, write_uint};

    fn write_str(
        buf: &mut ByteBuf,
        s: &str,
        what: &str,
    ) -> Result<(), ValueWriteError<Infallible>> {
        write_str_len(buf, len_u32(s.len(), what))?;
        buf.write_bytes(s.as_bytes())
            .map_err(ValueWriteError::InvalidDataWrite)
    }
    fn write_bin(
        buf: &mut ByteBuf,
        b: &[u8],
        what: &str,
    ) -> Result<(), ValueWriteError<Infallible>> {
        write_bin_len(buf, len_u32(b.len(), what))?;
        buf.write_bytes(b)
            .map_err(ValueWriteError::InvalidDataWrite)
    }

    write_array_len(buf, fields.count())?;
    write_str(buf, header.filename, "filename")?;
    write_bin(buf, header.file_hash, "file_hash")?;
    write_bin(buf, header.chunk_hash, "chunk_hash")?;
    write_uint(buf, header.offset)?;
    write_uint(buf, header.chunk_i)?;
    write_uint(buf, header.n_total_chunks)?;
    write_str(buf, header.subdir, "subdir")?;
    write_str(buf, header.filename_append, "filename_append")?;
    write_bin_len(buf, len_u32(data_len, "data"))?;
    Ok(())
}

/// Everything after the data's bytes.
fn write_tail(
    buf: &mut ByteBuf,
    header: &ChunkHeader<'_>,
    fields: WireFields,
) -> Result<(), ValueWriteError<Infallible>> {
    if fields == WireFields::Ten {
        rmp::encode::write_f64(buf, header.file_mtime)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over the value that checks every length against what is left before slicing.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, or `Truncated` naming `at`. Never allocates and never reads past
    /// the end, whatever `n` a header claims.
    fn take(&mut self, n: u64, at: &'static str) -> Result<&'a [u8], DecodeError> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(len) if len <= available => {
                let start = self.pos;
                self.pos += len;
                Ok(&self.buf[start..start + len])
            }
            _ => Err(DecodeError::Truncated {
                at,
                needed: n,
                available,
            }),
        }
    }

    fn byte(&mut self, at: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, at)?[0])
    }

    fn be<const N: usize>(&mut self, at: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, at)?);
        Ok(out)
    }

    fn u8(&mut self, at: &'static str) -> Result<u8, DecodeError> {
        self.byte(at)
    }
    fn u16(&mut self, at: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.be(at)?))
    }
    fn u32(&mut self, at: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.be(at)?))
    }
    fn u64(&mut self, at: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.be(at)?))
    }
}

/// The msgpack type a marker starts, for error messages.
fn type_name(marker: Marker) -> &'static str {
    match marker {
        Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => "uint",
        Marker::FixNeg(_) | Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => "int",
        Marker::Null => "nil",
        Marker::True | Marker::False => "bool",
        Marker::F32 => "float32",
        Marker::F64 => "float64",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "str",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "bin",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "map",
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => "ext",
        Marker::Reserved => "reserved marker (not MessagePack)",
    }
}

/// Reads a str or bin (both families, as the reference's `raw=True` unpacker does) and returns
/// its payload, or `WrongType` with `expected`.
fn read_raw<'a>(
    r: &mut Reader<'a>,
    field: Field,
    expected: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let at = field.name();
    let marker = Marker::from_u8(r.byte(at)?);
    let len: u64 = match marker {
        Marker::FixStr(n) => u64::from(n),
        Marker::Str8 | Marker::Bin8 => u64::from(r.u8(at)?),
        Marker::Str16 | Marker::Bin16 => u64::from(r.u16(at)?),
        Marker::Str32 | Marker::Bin32 => u64::from(r.u32(at)?),
        other => {
            return Err(DecodeError::WrongType {
                field,
                found: type_name(other),
                expected,
            })
        }
    };
    r.take(len, at)
}

fn read_text<'a>(r: &mut Reader<'a>, field: Field) -> Result<&'a str, DecodeError> {
    let bytes = read_raw(r, field, "str")?;
    std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 {
        field,
        valid_up_to: e.valid_up_to(),
    })
}

fn read_hash(r: &mut Reader<'_>, field: Field) -> Result<Sha512Digest, DecodeError> {
    let bytes = read_raw(r, field, "bin (64 bytes)")?;
    Sha512Digest::try_from(bytes).map_err(|_| DecodeError::HashLength {
        field,
        len: bytes.len(),
    })
}

/// An int of any encoding; `Ok(Err(marker))` when it is not an int at all.
fn read_int(r: &mut Reader<'_>, at: &'static str) -> Result<Result<i128, Marker>, DecodeError> {
    let marker = Marker::from_u8(r.byte(at)?);
    let v: i128 = match marker {
        Marker::FixPos(v) => i128::from(v),
        Marker::FixNeg(v) => i128::from(v),
        Marker::U8 => i128::from(r.u8(at)?),
        Marker::U16 => i128::from(r.u16(at)?),
        Marker::U32 => i128::from(r.u32(at)?),
        Marker::U64 => i128::from(r.u64(at)?),
        Marker::I8 => i128::from(r.u8(at)? as i8),
        Marker::I16 => i128::from(r.u16(at)? as i16),
        Marker::I32 => i128::from(r.u32(at)? as i32),
        Marker::I64 => i128::from(r.u64(at)? as i64),
        other => return Ok(Err(other)),
    };
    Ok(Ok(v))
}

fn read_uint(r: &mut Reader<'_>, field: Field) -> Result<u64, DecodeError> {
    match read_int(r, field.name())? {
        Ok(v) => u64::try_from(v).map_err(|_| DecodeError::NegativeInt {
            field,
            // Only negatives fail: every msgpack int is in i64 ∪ u64 and u64 fits.
            value: i64::try_from(v).unwrap_or(i64::MIN),
        }),
        Err(marker) => Err(DecodeError::WrongType {
            field,
            found: type_name(marker),
            expected: "non-negative int",
        }),
    }
}

fn read_mtime(r: &mut Reader<'_>) -> Result<f64, DecodeError> {
    let field = Field::FileMtime;
    let at = field.name();
    // Peek: floats are handled here, ints by read_int.
    let start = r.pos;
    match Marker::from_u8(r.byte(at)?) {
        Marker::F64 => Ok(f64::from_bits(r.u64(at)?)),
        Marker::F32 => Ok(f64::from(f32::from_bits(r.u32(at)?))),
        _ => {
            r.pos = start;
            match read_int(r, at)? {
                // i128 -> f64 rounds like Python's float(int) for these magnitudes.
                Ok(v) => Ok(v as f64),
                Err(marker) => Err(DecodeError::WrongType {
                    field,
                    found: type_name(marker),
                    expected: "float or int",
                }),
            }
        }
    }
}

/// Decodes one chunk value (9 or 10 elements). Never panics, whatever the input; the result
/// borrows `bytes`. Only the structure is checked: see the [module docs](super).
pub fn decode_value(bytes: &[u8]) -> Result<DecodedChunk<'_>, DecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let header = "array header";
    let first = match bytes.first() {
        Some(&b) => b,
        None => return Err(DecodeError::Empty),
    };
    r.pos = 1;
    let count: u32 = match Marker::from_u8(first) {
        Marker::FixArray(n) => u32::from(n),
        Marker::Array16 => u32::from(r.u16(header)?),
        Marker::Array32 => r.u32(header)?,
        other => {
            return Err(DecodeError::NotAnArray {
                byte: first,
                found: type_name(other),
            })
        }
    };
    let fields = match count {
        9 => WireFields::Nine,
        10 => WireFields::Ten,
        _ => return Err(DecodeError::WrongFieldCount { count }),
    };
    let filename = read_text(&mut r, Field::Filename)?;
    let file_hash = read_hash(&mut r, Field::FileHash)?;
    let chunk_hash = read_hash(&mut r, Field::ChunkHash)?;
    let offset = read_uint(&mut r, Field::ChunkOffsetWrite)?;
    let chunk_i = read_uint(&mut r, Field::ChunkI)?;
    let n_total_chunks = read_uint(&mut r, Field::NTotalChunks)?;
    let subdir = read_text(&mut r, Field::SubdirStr)?;
    let filename_append = read_text(&mut r, Field::FilenameAppend)?;
    let data = read_raw(&mut r, Field::Data, "bin")?;
    let file_mtime = match fields {
        WireFields::Nine => None,
        WireFields::Ten => {
            let t = read_mtime(&mut r)?;
            (t.is_finite() && t > 0.0).then_some(t)
        }
    };
    let rest = r.remaining();
    if rest != 0 {
        return Err(DecodeError::TrailingBytes { count: rest });
    }
    Ok(DecodedChunk {
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
    })
}

#[cfg(test)]
mod tests {
    use super::super::{hash::sha512, hash::Sha512Stream, key::message_key};
    use super::*;
    use serde_json::Value;
    use std::path::PathBuf;

    // ---- fixtures -----------------------------------------------------------------------

    fn golden_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
    }

    fn manifest() -> Value {
        let text = std::fs::read_to_string(golden_dir().join("manifest.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn read_fixture(rel: &str) -> Vec<u8> {
        std::fs::read(golden_dir().join(rel)).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        assert_eq!(s.len() % 2, 0);
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn digest(s: &str) -> Sha512Digest {
        Sha512Digest::try_from(unhex(s).as_slice()).unwrap()
    }

    fn s<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} not a string in {v}"))
    }

    fn u(v: &Value, k: &str) -> u64 {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} not a u64 in {v}"))
    }

    /// The sample-file generator of scripts/gen_golden.py (`content`).
    fn content(n: usize, seed: u64) -> Vec<u8> {
        (0..n as u64)
            .map(|i| ((i * 131 + seed * 17 + (i >> 8) * 7) & 0xff) as u8)
            .collect()
    }

    /// File bytes of an upload case: stored, or regenerated from its seed.
    fn case_file(case: &Value) -> Option<Vec<u8>> {
        let size = case["file_size"].as_u64()? as usize;
        let generated = case["content_seed"]
            .as_u64()
            .map(|seed| content(size, seed));
        match case["file"].as_str() {
            Some(rel) => {
                let stored = read_fixture(rel);
                if let Some(g) = &generated {
                    assert_eq!(&stored, g, "content formula disagrees with {rel}");
                }
                Some(stored)
            }
            None => Some(generated.expect("an upload case without a file has a seed")),
        }
    }

    fn a_golden_value() -> Vec<u8> {
        read_fixture("values/three_chunks_2_of_3.v10.bin")
    }

    fn all_golden_values() -> Vec<(String, Vec<u8>)> {
        let m = manifest();
        let mut out = Vec::new();
        for case in m["cases"].as_array().unwrap() {
            for chunk in case["chunks"].as_array().unwrap() {
                for k in ["value10", "value9"] {
                    if let Some(rel) = chunk[k].as_str() {
                        out.push((rel.to_owned(), read_fixture(rel)));
                    }
                }
            }
        }
        out
    }

    // ---- golden equality ------------------------------------------------------------------

    #[test]
    fn chunk_golden_encode_key_decode_and_hashes_match_reference() {
        let m = manifest();
        let cases = m["cases"].as_array().unwrap();
        assert!(cases.len() >= 10, "manifest has too few cases");
        let (mut n10, mut n9) = (0, 0);
        let mut out = Vec::new();
        for case in cases {
            let name = s(case, "name");
            let filename = s(case, "filename");
            let subdir = s(case, "subdir");
            let append = s(case, "filename_append");
            let mtime = f64::from_bits(u64::from_str_radix(s(case, "mtime_bits"), 16).unwrap());
            assert_eq!(
                mtime,
                case["mtime"].as_f64().unwrap(),
                "{name}: mtime bits vs decimal"
            );
            let file_hash = digest(s(case, "file_hash"));
            let chunks = case["chunks"].as_array().unwrap();

            // Where the case is a whole file, chunk it ourselves: our offsets, counts and
            // hashes must be the reference's.
            let file = case_file(case);
            if let Some(file) = &file {
                assert_eq!(sha512(file), file_hash, "{name}: file hash");
                let mut stream = Sha512Stream::new();
                for part in file.chunks(1000) {
                    stream.update(part);
                }
                assert_eq!(stream.finalize(), file_hash, "{name}: streamed file hash");
                let cs = u(case, "chunk_size") as usize;
                let n_expected = file.len().div_ceil(cs).max(1);
                assert_eq!(chunks.len(), n_expected, "{name}: chunk count");
                let rel = s(case, "relpath");
                let joined = if subdir.is_empty() {
                    filename.to_owned()
                } else {
                    format!("{subdir}/{filename}")
                };
                assert_eq!(rel, joined, "{name}: relpath = subdir/filename");
            }

            for (idx, chunk) in chunks.iter().enumerate() {
                let chunk_i = u(chunk, "chunk_i");
                let n_total = u(chunk, "n_total_chunks");
                let offset = u(chunk, "offset");
                let data: Vec<u8> = match &file {
                    Some(file) => {
                        let cs = u(case, "chunk_size");
                        assert_eq!(chunk_i, idx as u64 + 1, "{name}: chunk order");
                        assert_eq!(n_total, chunks.len() as u64, "{name}: n_total");
                        assert_eq!(offset, (chunk_i - 1) * cs, "{name}: offset");
                        let start = offset as usize;
                        let end = (start + cs as usize).min(file.len());
                        file[start..end].to_vec()
                    }
                    None => unhex(s(case, "data_hex")),
                };
                assert_eq!(data.len() as u64, u(chunk, "len"), "{name}: chunk len");
                let chunk_hash = sha512(&data);
                assert_eq!(
                    chunk_hash,
                    digest(s(chunk, "chunk_hash")),
                    "{name}: chunk hash"
                );

                let header = ChunkHeader {
                    filename,
                    file_hash: &file_hash,
                    chunk_hash: &chunk_hash,
                    offset,
                    chunk_i,
                    n_total_chunks: n_total,
                    subdir,
                    filename_append: append,
                    file_mtime: mtime,
                };
                assert_eq!(
                    message_key(subdir, filename, chunk_i, n_total),
                    s(chunk, "key"),
                    "{name}: key"
                );

                for (key, fields) in [("value10", WireFields::Ten), ("value9", WireFields::Nine)] {
                    let Some(rel) = chunk[key].as_str() else {
                        continue;
                    };
                    let golden = read_fixture(rel);
                    encode_value(&header, &data, fields, &mut out);
                    assert!(out == golden, "{name}: encode != golden {rel}");
                    // The copy-free path (data read straight into the message) too, into a
                    // buffer holding the previous value's bytes.
                    value_data_slot(&header, data.len(), fields, &mut out).copy_from_slice(&data);
                    finish_value(&header, data.len(), fields, &mut out);
                    assert!(out == golden, "{name}: in-place encode != golden {rel}");
                    assert_eq!(
                        encoded_len(&header, data.len(), fields),
                        golden.len(),
                        "{rel}"
                    );

                    let d = decode_value(&golden).unwrap_or_else(|e| panic!("{rel}: {e}"));
                    assert_eq!(d.filename, filename);
                    assert_eq!(d.file_hash, file_hash);
                    assert_eq!(d.chunk_hash, chunk_hash);
                    assert_eq!(d.offset, offset);
                    assert_eq!(d.chunk_i, chunk_i);
                    assert_eq!(d.n_total_chunks, n_total);
                    assert_eq!(d.subdir, subdir);
                    assert_eq!(d.filename_append, append);
                    assert_eq!(d.data, data.as_slice());
                    assert_eq!(d.fields, fields);
                    let want_mtime = match fields {
                        WireFields::Nine => None,
                        WireFields::Ten => (mtime > 0.0).then_some(mtime),
                    };
                    assert_eq!(d.file_mtime.map(f64::to_bits), want_mtime.map(f64::to_bits));
                    match fields {
                        WireFields::Ten => n10 += 1,
                        WireFields::Nine => n9 += 1,
                    }
                }
            }
        }
        // Guard against a manifest that silently lost its vectors.
        assert!(
            n10 >= 20 && n9 >= 15,
            "only {n10} ten-field and {n9} nine-field vectors"
        );
    }

    #[test]
    fn chunk_golden_empty_file_is_one_chunk_of_nothing() {
        let golden = read_fixture("values/empty_1_of_1.v10.bin");
        let d = decode_value(&golden).unwrap();
        let empty = sha512(b"");
        assert_eq!((d.chunk_i, d.n_total_chunks, d.offset), (1, 1, 0));
        assert_eq!(d.data, b"");
        assert_eq!((d.file_hash, d.chunk_hash), (empty, empty));
    }

    #[test]
    fn chunk_encode_reuses_the_buffer() {
        let golden = a_golden_value();
        let d = decode_value(&golden).unwrap();
        let header = ChunkHeader {
            filename: d.filename,
            file_hash: &d.file_hash,
            chunk_hash: &d.chunk_hash,
            offset: d.offset,
            chunk_i: d.chunk_i,
            n_total_chunks: d.n_total_chunks,
            subdir: d.subdir,
            filename_append: d.filename_append,
            file_mtime: d.file_mtime.unwrap_or(0.0),
        };
        let mut out = Vec::with_capacity(golden.len() + 100);
        out.extend_from_slice(b"stale bytes that must go");
        let ptr = out.as_ptr();
        encode_value(&header, d.data, WireFields::Ten, &mut out);
        assert_eq!(out, golden);
        assert_eq!(out.as_ptr(), ptr, "allocation was not reused");
    }

    #[test]
    fn chunk_encode_in_place_equals_encode_value_at_every_length_boundary() {
        let file_hash = sha512(b"file");
        let mut value = Vec::new();
        let mut expected = Vec::new();
        // bin8 / bin16 / bin32 boundaries, and shrinking and growing between calls.
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 70_000, 3, 524_288, 100] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let chunk_hash = sha512(&data);
            let header = ChunkHeader {
                filename: "f.dat",
                file_hash: &file_hash,
                chunk_hash: &chunk_hash,
                offset: len as u64 * 3,
                chunk_i: 2,
                n_total_chunks: 300,
                subdir: "a/b",
                filename_append: "",
                file_mtime: 1_700_000_000.25,
            };
            for fields in [WireFields::Ten, WireFields::Nine] {
                encode_value(&header, &data, fields, &mut expected);
                value_data_slot(&header, len, fields, &mut value).copy_from_slice(&data);
                finish_value(&header, len, fields, &mut value);
                assert!(value == expected, "len {len}, {fields:?}");
            }
        }
    }

    // ---- decode errors --------------------------------------------------------------------

    /// A msgpack element for hand-built values (to craft wrong types and odd encodings).
    #[derive(Clone, Debug)]
    enum E {
        Str(&'static str),
        StrBytes(Vec<u8>),
        Bin(Vec<u8>),
        U(u64),
        I(i64),
        F64(f64),
        F32(f32),
        Nil,
        Bool(bool),
        Raw(Vec<u8>),
    }

    fn pack(elems: &[E]) -> Vec<u8> {
        let mut v = Vec::new();
        rmp::encode::write_array_len(&mut v, elems.len() as u32).unwrap();
        for e in elems {
            match e {
                E::Str(x) => rmp::encode::write_str(&mut v, x).unwrap(),
                E::StrBytes(b) => {
                    rmp::encode::write_str_len(&mut v, b.len() as u32).unwrap();
                    v.extend_from_slice(b);
                }
                E::Bin(b) => rmp::encode::write_bin(&mut v, b).unwrap(),
                E::U(x) => {
                    rmp::encode::write_uint(&mut v, *x).unwrap();
                }
                E::I(x) => {
                    rmp::encode::write_sint(&mut v, *x).unwrap();
                }
                E::F64(x) => rmp::encode::write_f64(&mut v, *x).unwrap(),
                E::F32(x) => rmp::encode::write_f32(&mut v, *x).unwrap(),
                E::Nil => rmp::encode::write_nil(&mut v).unwrap(),
                E::Bool(b) => rmp::encode::write_bool(&mut v, *b).unwrap(),
                E::Raw(b) => v.extend_from_slice(b),
            }
        }
        v
    }

    fn good_elems() -> Vec<E> {
        let data = b"hello".to_vec();
        vec![
            E::Str("f.dat"),
            E::Bin(sha512(b"file").to_vec()),
            E::Bin(sha512(&data).to_vec()),
            E::U(0),
            E::U(1),
            E::U(1),
            E::Str("a/b"),
            E::Str(""),
            E::Bin(data),
            E::F64(1_700_000_000.5),
        ]
    }

    fn with(i: usize, e: E) -> Vec<u8> {
        let mut elems = good_elems();
        elems[i] = e;
        pack(&elems)
    }

    #[test]
    fn chunk_decode_hand_built_value_ok() {
        let v = pack(&good_elems());
        let d = decode_value(&v).unwrap();
        assert_eq!(d.filename, "f.dat");
        assert_eq!(d.subdir, "a/b");
        assert_eq!(d.data, b"hello");
        assert_eq!(d.file_mtime, Some(1_700_000_000.5));
    }

    #[test]
    fn chunk_decode_rejects_garbage() {
        assert_eq!(decode_value(b""), Err(DecodeError::Empty));
        // Text such as a heartbeat's JSON starts with a byte that msgpack reads as an int.
        assert_eq!(
            decode_value(br#"{"timestamp": "x"}"#),
            Err(DecodeError::NotAnArray {
                byte: b'{',
                found: "uint"
            })
        );
        assert_eq!(
            decode_value(&[0xc1, 0, 0]).unwrap_err().to_string(),
            "value is not a MessagePack array (its first byte 0xc1 starts a reserved marker (not \
             MessagePack)): not a data file chunk"
        );
        assert!(matches!(
            decode_value(&[0x81, 0xa1, b'k', 0x01]),
            Err(DecodeError::NotAnArray { found: "map", .. })
        ));
        assert!(matches!(
            decode_value(&[0xa3, b'a', b'b', b'c']),
            Err(DecodeError::NotAnArray { found: "str", .. })
        ));
        assert_eq!(
            decode_value(&[0xc0]).unwrap_err().to_string(),
            "value is not a MessagePack array (its first byte 0xc0 starts a nil): not a data file \
             chunk"
        );
    }

    #[test]
    fn chunk_decode_every_truncation_of_golden_errors() {
        for (rel, golden) in all_golden_values() {
            for len in 0..golden.len() {
                match decode_value(&golden[..len]) {
                    Err(DecodeError::Empty) => assert_eq!(len, 0, "{rel}"),
                    Err(DecodeError::Truncated {
                        available, needed, ..
                    }) => {
                        assert!(needed > available as u64, "{rel}[..{len}]");
                    }
                    other => panic!("{rel}[..{len}]: expected truncated, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn chunk_decode_truncated_message_names_the_field() {
        let golden = a_golden_value();
        // Cut inside the data bin.
        let e = decode_value(&golden[..golden.len() - 20]).unwrap_err();
        assert!(
            e.to_string().starts_with("value is truncated in data: "),
            "{e}"
        );
    }

    #[test]
    fn chunk_decode_wrong_field_count() {
        for n in [0usize, 1, 8, 11, 15] {
            let mut elems = good_elems();
            elems.resize(n, E::U(0));
            let e = decode_value(&pack(&elems)).unwrap_err();
            assert_eq!(e, DecodeError::WrongFieldCount { count: n as u32 });
        }
        assert_eq!(
            DecodeError::WrongFieldCount { count: 11 }.to_string(),
            "chunk array has 11 elements, expected 9 or 10"
        );
        // array32 claiming ~4 billion elements on a 5-byte input: rejected, nothing allocated.
        assert_eq!(
            decode_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::WrongFieldCount { count: u32::MAX })
        );
        // array16 with 10 elements (non-minimal header) is still a chunk.
        let mut v = pack(&good_elems());
        v.splice(0..1, [0xdc, 0x00, 0x0a]);
        assert!(decode_value(&v).is_ok());
    }

    #[test]
    fn chunk_decode_wrong_types_name_the_field() {
        let fields = [
            Field::Filename,
            Field::FileHash,
            Field::ChunkHash,
            Field::ChunkOffsetWrite,
            Field::ChunkI,
            Field::NTotalChunks,
            Field::SubdirStr,
            Field::FilenameAppend,
            Field::Data,
            Field::FileMtime,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            assert_eq!(field.index(), i);
            // Nothing accepts nil, a bool or a nested array.
            for bad in [E::Nil, E::Bool(true), E::Raw(vec![0x90])] {
                let e = decode_value(&with(i, bad.clone())).unwrap_err();
                assert!(
                    matches!(e, DecodeError::WrongType { field: f, .. } if f == field),
                    "{field} with {bad:?}: {e:?}"
                );
            }
        }
        // Ints where text/bytes are expected, and text/floats where ints are expected.
        for i in [0, 1, 2, 6, 7, 8] {
            assert!(matches!(
                decode_value(&with(i, E::U(7))),
                Err(DecodeError::WrongType { found: "uint", .. })
            ));
        }
        for i in [3, 4, 5] {
            assert!(matches!(
                decode_value(&with(i, E::Str("12"))),
                Err(DecodeError::WrongType { found: "str", .. })
            ));
            assert!(matches!(
                decode_value(&with(i, E::F64(3.0))),
                Err(DecodeError::WrongType {
                    found: "float64",
                    ..
                })
            ));
        }
        assert_eq!(
            decode_value(&with(9, E::Str("1.5")))
                .unwrap_err()
                .to_string(),
            "field file_mtime (#9) has type str, expected float or int"
        );
        assert_eq!(
            decode_value(&with(4, E::Nil)).unwrap_err().to_string(),
            "field chunk_i (#4) has type nil, expected non-negative int"
        );
    }

    #[test]
    fn chunk_decode_hash_length_and_utf8() {
        let e = decode_value(&with(1, E::Bin(vec![0; 63]))).unwrap_err();
        assert_eq!(
            e,
            DecodeError::HashLength {
                field: Field::FileHash,
                len: 63
            }
        );
        assert_eq!(
            e.to_string(),
            "field file_hash (#1) is 63 bytes long, expected a 64-byte SHA-512 digest"
        );
        assert!(matches!(
            decode_value(&with(2, E::Bin(vec![0; 65]))),
            Err(DecodeError::HashLength {
                field: Field::ChunkHash,
                len: 65
            })
        ));
        assert!(matches!(
            decode_value(&with(0, E::StrBytes(vec![b'a', 0xff]))),
            Err(DecodeError::InvalidUtf8 {
                field: Field::Filename,
                valid_up_to: 1
            })
        ));
        assert!(matches!(
            decode_value(&with(6, E::Bin(vec![0xc3]))),
            Err(DecodeError::InvalidUtf8 {
                field: Field::SubdirStr,
                ..
            })
        ));
    }

    #[test]
    fn chunk_decode_negative_ints() {
        for i in [3, 4, 5] {
            let e = decode_value(&with(i, E::I(-1))).unwrap_err();
            assert!(
                matches!(e, DecodeError::NegativeInt { value: -1, .. }),
                "{e:?}"
            );
        }
        assert_eq!(
            decode_value(&with(3, E::I(i64::MIN)))
                .unwrap_err()
                .to_string(),
            "field chunk_offset_write (#3) is negative (-9223372036854775808), expected a \
             non-negative integer"
        );
    }

    #[test]
    fn chunk_decode_trailing_bytes() {
        let mut v = a_golden_value();
        v.push(0x00);
        assert_eq!(
            decode_value(&v),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // A second complete value after the first is also trailing data.
        let mut two = a_golden_value();
        two.extend(a_golden_value());
        assert!(matches!(
            decode_value(&two),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn chunk_decode_huge_claimed_length_fails_cleanly() {
        // A 10-element array whose filename is a str32 claiming 4 GiB, on 10 bytes of input.
        let v = [0x9a, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c', b'd'];
        assert_eq!(
            decode_value(&v),
            Err(DecodeError::Truncated {
                at: "filename",
                needed: u64::from(u32::MAX),
                available: 4
            })
        );
        // Same for a bin32 data field claiming 4 GiB after a valid start.
        let mut elems = good_elems();
        elems.truncate(8);
        let mut v = pack(&elems);
        v[0] = 0x9a;
        v.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        let e = decode_value(&v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "value is truncated in data: 4294967295 more bytes are needed but only 3 remain"
        );
    }

    // ---- liberal where the reference is ----------------------------------------------------

    #[test]
    fn chunk_decode_accepts_int_and_float32_mtime() {
        let v = with(9, E::U(1_700_000_000));
        let d = decode_value(&v).unwrap();
        assert_eq!(d.file_mtime, Some(1_700_000_000.0));
        let v = with(9, E::F32(2.5));
        let d = decode_value(&v).unwrap();
        assert_eq!(d.file_mtime, Some(2.5));
        // 0 / negative / NaN mean "unknown", as in the reference (> 0.0 or None).
        for unknown in [
            E::U(0),
            E::I(-5),
            E::F64(0.0),
            E::F64(-1.0),
            E::F64(f64::NAN),
        ] {
            let v = with(9, unknown.clone());
            let d = decode_value(&v).unwrap();
            assert_eq!(d.file_mtime, None, "{unknown:?}");
            assert_eq!(d.fields, WireFields::Ten);
        }
        // Golden value with its float64 mtime replaced by an int.
        let mut v = a_golden_value();
        let len = v.len();
        v.truncate(len - 9);
        v.extend_from_slice(&[0xce, 0x65, 0x53, 0xf1, 0x00]); // uint32 1700000000
        assert_eq!(decode_value(&v).unwrap().file_mtime, Some(1_700_000_000.0));
    }

    #[test]
    fn chunk_decode_accepts_other_int_encodings_and_raw_bytes() {
        // Non-negative values in signed or oversized encodings are fine.
        let mut elems = good_elems();
        elems[3] = E::Raw(vec![0xd3, 0, 0, 0, 0, 0, 0, 0x10, 0]); // int64 4096
        elems[4] = E::Raw(vec![0xd0, 0x02]); // int8 2
        elems[5] = E::Raw(vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 3]); // uint64 3
        let v = pack(&elems);
        let d = decode_value(&v).unwrap();
        assert_eq!((d.offset, d.chunk_i, d.n_total_chunks), (4096, 2, 3));
        assert_eq!(
            decode_value(&with(5, E::U(u64::MAX)))
                .unwrap()
                .n_total_chunks,
            u64::MAX
        );
        // Hashes and data as str/raw (msgpack without use_bin_type), text as bin.
        let mut elems = good_elems();
        elems[1] = E::StrBytes(sha512(b"file").to_vec());
        elems[2] = E::StrBytes(sha512(b"hello").to_vec());
        elems[8] = E::StrBytes(b"hello".to_vec());
        elems[0] = E::Bin(b"f.dat".to_vec());
        elems[7] = E::Bin(b"_x".to_vec());
        let v = pack(&elems);
        let d = decode_value(&v).unwrap();
        assert_eq!(d.file_hash, sha512(b"file"));
        assert_eq!(d.data, b"hello");
        assert_eq!(d.filename, "f.dat");
        assert_eq!(d.filename_append, "_x");
    }

    #[test]
    fn chunk_decode_nine_fields() {
        let mut elems = good_elems();
        elems.pop();
        let v = pack(&elems);
        let d = decode_value(&v).unwrap();
        assert_eq!(d.fields, WireFields::Nine);
        assert_eq!(d.file_mtime, None);
    }

    // ---- never panics ---------------------------------------------------------------------

    /// xorshift64*: tiny, seeded, good enough to pick mutation sites.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn chunk_decode_never_panics_on_mutations() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = all_golden_values()
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.len() < 10_000)
            .collect();
        let (mut ok, mut err) = (0u32, 0u32);
        for round in 0..40_000 {
            let mut v = seeds[round % seeds.len()].clone();
            for _ in 0..=rng.below(4) {
                if v.is_empty() {
                    v.push(rng.next() as u8);
                    continue;
                }
                let at = rng.below(v.len());
                match rng.below(6) {
                    0 => v[at] ^= 1 << rng.below(8),
                    1 => v[at] = rng.next() as u8,
                    // Header bytes are where lengths and types live: hit them often.
                    2 => {
                        let i = rng.below(v.len().min(200));
                        v[i] = [0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xff][rng.below(9)]
                    }
                    3 => v.truncate(at),
                    4 => v.insert(at, rng.next() as u8),
                    _ => {
                        v.remove(at);
                    }
                }
            }
            match decode_value(&v) {
                Ok(d) => {
                    ok += 1;
                    // Whatever decodes borrows within the input.
                    assert!(d.data.len() <= v.len());
                }
                Err(e) => {
                    err += 1;
                    let _ = e.to_string();
                }
            }
        }
        assert!(
            err > 0 && ok > 0,
            "mutations too weak or too strong: ok={ok} err={err}"
        );
    }

    #[test]
    fn chunk_decode_never_panics_on_random_bytes() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(300);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(first) = v.first_mut() {
                // Mostly start like a chunk so the fields get exercised.
                if rng.below(4) != 0 {
                    *first = 0x9a;
                }
            }
            let _ = decode_value(&v);
        }
    }
}
