//! Knot Resolver's message layout (`docs/WIRE_FORMAT.md`, "Knot Resolver's format"): the key is
//! the file name, the value is the file's bytes or one part of them, and four headers describe
//! the part: `hostname` (see [`crate::targeting`]), `file-name`, `total-chunks` and
//! `chunk-index` (integers as decimal text). openmsi adds `file-sha512`, the hex SHA-512 of the
//! whole file, which Knot's own client ignores.
//!
//! Pure, like the rest of [`crate::chunk`]: this checks structure (present, single, UTF-8,
//! decimal), not meaning. Whether the index fits the total, whether the total is absurd and
//! whether the name is a safe path are the downloader's checks (`download/validate.rs`).

use super::hash::{from_hex, to_hex};
use super::Sha512Digest;

/// The file name (a relative path with `/` when the file came from a subfolder).
pub const FILE_NAME: &str = "file-name";
/// How many parts the file is split into.
pub const TOTAL_CHUNKS: &str = "total-chunks";
/// Which part this message is: produced 0-based; 0- and 1-based both accepted.
pub const CHUNK_INDEX: &str = "chunk-index";
/// openmsi's addition: the hex SHA-512 of the whole file.
pub const FILE_SHA512: &str = "file-sha512";

/// Longest decimal accepted for a count (u64 has 20 digits).
const MAX_DIGITS: usize = 20;

/// The headers of part `index` (0-based) of `total` of the file at `relative`.
pub fn part_headers(
    relative: &str,
    index: u64,
    total: u64,
    file_hash: &Sha512Digest,
) -> Vec<(String, Vec<u8>)> {
    vec![
        (FILE_NAME.to_string(), relative.as_bytes().to_vec()),
        (TOTAL_CHUNKS.to_string(), total.to_string().into_bytes()),
        (CHUNK_INDEX.to_string(), index.to_string().into_bytes()),
        (FILE_SHA512.to_string(), to_hex(file_hash).into_bytes()),
    ]
}

/// True when a message carries any of Knot's part headers: how `--format auto` tells the two
/// formats apart (openmsi's own chunks carry none of them).
pub fn has_part_headers(headers: &[(String, Vec<u8>)]) -> bool {
    headers
        .iter()
        .any(|(name, _)| name == FILE_NAME || name == TOTAL_CHUNKS || name == CHUNK_INDEX)
}

/// One part as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnotPart {
    /// The `file-name` header (not yet checked for path safety).
    pub file_name: String,
    /// `chunk-index` as sent (0- or 1-based, not yet checked against the total).
    pub index: u64,
    /// `total-chunks` as sent (not yet checked).
    pub total: u64,
    /// `file-sha512`, when the producer sent it.
    pub file_hash: Option<Sha512Digest>,
}

/// Why a message's headers do not describe a part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnotHeaderError {
    #[error("header `{0}` is missing")]
    Missing(&'static str),
    #[error("header `{0}` appears more than once")]
    Repeated(&'static str),
    #[error("header `{0}` is not UTF-8 text")]
    NotText(&'static str),
    #[error("header `{header}` is {value:?}, not a decimal number")]
    NotANumber { header: &'static str, value: String },
    #[error("header `{FILE_SHA512}` is not 128 hex digits")]
    BadHash,
}

/// Reads the part headers of a Knot-format message.
pub fn parse_part_headers(headers: &[(String, Vec<u8>)]) -> Result<KnotPart, KnotHeaderError> {
    let file_name = text(
        single(headers, FILE_NAME)?.ok_or(KnotHeaderError::Missing(FILE_NAME))?,
        FILE_NAME,
    )?;
    let total = number(headers, TOTAL_CHUNKS)?;
    let index = number(headers, CHUNK_INDEX)?;
    let file_hash = match single(headers, FILE_SHA512)? {
        None => None,
        Some(value) => Some(
            std::str::from_utf8(value)
                .ok()
                .and_then(|t| from_hex(t.trim()))
                .ok_or(KnotHeaderError::BadHash)?,
        ),
    };
    Ok(KnotPart {
        file_name: file_name.to_string(),
        index,
        total,
        file_hash,
    })
}

/// The value of header `name`, when it appears exactly once.
fn single<'h>(
    headers: &'h [(String, Vec<u8>)],
    name: &'static str,
) -> Result<Option<&'h [u8]>, KnotHeaderError> {
    let mut found = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(KnotHeaderError::Repeated(name));
    }
    Ok(first.map(Vec::as_slice))
}

fn text<'v>(value: &'v [u8], name: &'static str) -> Result<&'v str, KnotHeaderError> {
    std::str::from_utf8(value).map_err(|_| KnotHeaderError::NotText(name))
}

/// A decimal count: ASCII digits only (no sign, no spaces inside, at most 20 digits).
fn number(headers: &[(String, Vec<u8>)], name: &'static str) -> Result<u64, KnotHeaderError> {
    let value = single(headers, name)?.ok_or(KnotHeaderError::Missing(name))?;
    let digits = text(value, name)?.trim();
    let not_a_number = || KnotHeaderError::NotANumber {
        header: name,
        value: String::from_utf8_lossy(value).chars().take(40).collect(),
    };
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(not_a_number());
    }
    digits.parse().map_err(|_| not_a_number())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::sha512;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn produced_headers_read_back() {
        let hash = sha512(b"zone");
        let h = part_headers("rpz/block.rpz", 2, 5, &hash);
        assert!(has_part_headers(&h));
        let part = parse_part_headers(&h).unwrap();
        assert_eq!(
            part,
            KnotPart {
                file_name: "rpz/block.rpz".into(),
                index: 2,
                total: 5,
                file_hash: Some(hash),
            }
        );
    }

    #[test]
    fn the_hash_is_optional_everything_else_is_required() {
        let part = parse_part_headers(&headers(&[
            ("file-name", "a.json"),
            ("total-chunks", "1"),
            ("chunk-index", "0"),
            ("hostname", "r1"),
        ]))
        .unwrap();
        assert_eq!(part.file_hash, None);
        assert!(!has_part_headers(&headers(&[("hostname", "r1")])));
        let missing = parse_part_headers(&headers(&[("file-name", "a"), ("total-chunks", "1")]));
        assert_eq!(missing, Err(KnotHeaderError::Missing(CHUNK_INDEX)));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for (total, index) in [
            ("x", "0"),
            ("-1", "0"),
            ("1.5", "0"),
            ("", "0"),
            ("1", "1e3"),
        ] {
            let err = parse_part_headers(&headers(&[
                ("file-name", "a"),
                ("total-chunks", total),
                ("chunk-index", index),
            ]))
            .unwrap_err();
            assert!(matches!(err, KnotHeaderError::NotANumber { .. }), "{err}");
        }
        let huge = "9".repeat(30);
        assert!(parse_part_headers(&headers(&[
            ("file-name", "a"),
            ("total-chunks", &huge),
            ("chunk-index", "0"),
        ]))
        .is_err());
        assert_eq!(
            parse_part_headers(&headers(&[
                ("file-name", "a"),
                ("file-name", "b"),
                ("total-chunks", "1"),
                ("chunk-index", "0"),
            ])),
            Err(KnotHeaderError::Repeated(FILE_NAME))
        );
        assert_eq!(
            parse_part_headers(&headers(&[
                ("file-name", "a"),
                ("total-chunks", "1"),
                ("chunk-index", "0"),
                ("file-sha512", "abc"),
            ])),
            Err(KnotHeaderError::BadHash)
        );
        let not_text = vec![
            ("file-name".to_string(), vec![0xff, 0xfe]),
            ("total-chunks".to_string(), b"1".to_vec()),
            ("chunk-index".to_string(), b"0".to_vec()),
        ];
        assert_eq!(
            parse_part_headers(&not_text),
            Err(KnotHeaderError::NotText(FILE_NAME))
        );
    }
}
