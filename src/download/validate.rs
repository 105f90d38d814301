//! Semantic checks on a decoded chunk before any byte touches the disk (`docs/ARCHITECTURE.md`, "Bad input"):
//! indices and sizes must be sane, and the path it names must stay inside the output folder.
//! The codec only checks structure; everything a hostile producer could abuse is checked here.

use std::path::PathBuf;

use crate::chunk::knot::KnotPart;
use crate::chunk::{rebuilt_file_name, DecodedChunk};

/// More chunks than this per file is treated as hostile: 16 Mi chunks of 512 KiB is 8 TiB.
/// The in-memory state per file grows with received chunks, so this also bounds memory.
pub const MAX_TOTAL_CHUNKS: u64 = 1 << 24;
/// No chunk may end beyond this offset (4 TiB): stops sparse-file tricks that claim absurd sizes.
pub const MAX_FILE_BYTES: u64 = 1 << 42;
/// Longest file or folder name accepted (the common filesystem limit).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest relative path accepted.
pub const MAX_PATH_BYTES: usize = 4096;
/// openmsi's own state folder inside the output folder; no message may write into it.
pub use crate::state::STATE_DIR_NAME;

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("chunk index {chunk_i} is outside 1..={n_total_chunks}")]
    BadIndex { chunk_i: u64, n_total_chunks: u64 },
    #[error("chunk-index {index} is outside 0..={total} (0-based or 1-based parts of {total})")]
    BadKnotIndex { index: u64, total: u64 },
    #[error("declared chunk count {0} is zero or absurd (limit {MAX_TOTAL_CHUNKS})")]
    BadCount(u64),
    #[error(
        "chunk at offset {offset} with {len} bytes ends beyond the {MAX_FILE_BYTES}-byte limit"
    )]
    TooFar { offset: u64, len: u64 },
    #[error("empty chunk data is only valid for an empty file (1 chunk at offset 0)")]
    EmptyData,
    #[error("unsafe {what} {value:?}: {why}")]
    UnsafePath {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

/// Where a valid chunk's file goes, relative to the output folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `/`-separated relative path of the rebuilt file (filename_append applied).
    pub relative: String,
    /// The same as a native relative path.
    pub path: PathBuf,
}

/// Checks everything but the hashes; returns where the file will be rebuilt.
pub fn validate(chunk: &DecodedChunk<'_>) -> Result<Destination, Invalid> {
    let n = chunk.n_total_chunks;
    if n == 0 || n > MAX_TOTAL_CHUNKS {
        return Err(Invalid::BadCount(n));
    }
    if chunk.chunk_i == 0 || chunk.chunk_i > n {
        return Err(Invalid::BadIndex {
            chunk_i: chunk.chunk_i,
            n_total_chunks: n,
        });
    }
    let len = chunk.data.len() as u64;
    match chunk.offset.checked_add(len) {
        Some(end) if end <= MAX_FILE_BYTES => {}
        _ => {
            return Err(Invalid::TooFar {
                offset: chunk.offset,
                len,
            })
        }
    }
    if len == 0 && !(n == 1 && chunk.offset == 0) {
        return Err(Invalid::EmptyData);
    }
    destination(chunk.subdir, chunk.filename, chunk.filename_append)
}

/// Where a file named `filename` in `subdir` (`/`-separated, relative) is rebuilt, with
/// `filename_append` applied; refuses every path that could leave the output folder.
fn destination(
    subdir: &str,
    filename: &str,
    filename_append: &str,
) -> Result<Destination, Invalid> {
    check_name("file name", filename)?;
    if !filename_append.is_empty() {
        check_name("filename_append", filename_append)?;
    }
    let mut parts: Vec<&str> = Vec::new();
    if !subdir.is_empty() {
        if subdir.starts_with('/') {
            return Err(unsafe_path("subdir", subdir, "absolute path"));
        }
        for part in subdir.split('/') {
            check_name("subdir", part).map_err(|_| {
                unsafe_path(
                    "subdir",
                    subdir,
                    "empty, `.`, `..`, too long, or contains NUL or `\\`",
                )
            })?;
            parts.push(part);
        }
        if parts.first() == Some(&STATE_DIR_NAME) {
            return Err(unsafe_path(
                "subdir",
                subdir,
                "writes into openmsi's state folder",
            ));
        }
        if parts.first().is_some_and(|p| is_drive(p)) {
            return Err(unsafe_path("subdir", subdir, "names a drive"));
        }
    }
    let file_name = rebuilt_file_name(filename, filename_append);
    if file_name.len() > MAX_NAME_BYTES {
        return Err(unsafe_path("file name", &file_name, "too long"));
    }
    if parts.is_empty() && file_name == STATE_DIR_NAME {
        return Err(unsafe_path(
            "file name",
            &file_name,
            "is openmsi's state folder",
        ));
    }
    parts.push(&file_name);
    let relative = parts.join("/");
    if relative.len() > MAX_PATH_BYTES {
        return Err(unsafe_path("path", &relative, "too long"));
    }
    let path = parts.iter().collect();
    Ok(Destination { relative, path })
}

/// Checks a Knot-format part: a sane total, an index that fits it (0- or 1-based), and a
/// `file-name` that is a safe relative path (`/` separates folders); returns where the file
/// will be rebuilt.
pub fn validate_knot(part: &KnotPart) -> Result<Destination, Invalid> {
    let n = part.total;
    if n == 0 || n > MAX_TOTAL_CHUNKS {
        return Err(Invalid::BadCount(n));
    }
    if part.index > n {
        return Err(Invalid::BadKnotIndex {
            index: part.index,
            total: n,
        });
    }
    let (subdir, filename) = part
        .file_name
        .rsplit_once('/')
        .unwrap_or(("", &part.file_name));
    if part.file_name.starts_with('/') {
        return Err(unsafe_path("file-name", &part.file_name, "absolute path"));
    }
    destination(subdir, filename, "")
}

fn unsafe_path(what: &'static str, value: &str, why: &'static str) -> Invalid {
    Invalid::UnsafePath {
        what,
        value: value.chars().take(200).collect(),
        why,
    }
}

/// One path component: not empty, not `.`/`..`, no separators of any platform, no NUL.
fn check_name(what: &'static str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(unsafe_path(what, name, "empty, `.` or `..`"));
    }
    if name.contains(['/', '\\', '\0']) {
        return Err(unsafe_path(what, name, "contains `/`, `\\` or NUL"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(unsafe_path(what, name, "too long"));
    }
    Ok(())
}

/// `C:`-style components would be absolute on Windows.
fn is_drive(part: &str) -> bool {
    let b = part.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk<'a>(subdir: &'a str, filename: &'a str, data: &'a [u8]) -> DecodedChunk<'a> {
        DecodedChunk {
            filename,
            file_hash: [0; 64],
            chunk_hash: [0; 64],
            offset: 0,
            chunk_i: 1,
            n_total_chunks: 1,
            subdir,
            filename_append: "",
            data,
            file_mtime: None,
            fields: crate::chunk::WireFields::Ten,
        }
    }

    #[test]
    fn accepts_nested_unicode_paths() {
        let d = validate(&chunk("a/b c/ü", "x y.dat", b"1")).unwrap();
        assert_eq!(d.relative, "a/b c/ü/x y.dat");
        assert_eq!(
            d.path,
            PathBuf::from("a").join("b c").join("ü").join("x y.dat")
        );
        assert_eq!(validate(&chunk("", "top", b"")).unwrap().relative, "top");
    }

    #[test]
    fn rejects_escapes_and_hostile_names() {
        for (subdir, name) in [
            ("..", "x"),
            ("a/../..", "x"),
            ("/etc", "x"),
            ("a//b", "x"),
            ("a/", "x"),
            ("a\0b", "x"),
            ("a\\..\\b", "x"),
            ("C:", "x"),
            (".openmsi/staging", "x"),
            ("", ".."),
            ("", "."),
            ("", ""),
            ("", "a/b"),
            ("", "a\0"),
            ("", ".openmsi"),
        ] {
            let err = validate(&chunk(subdir, name, b"1")).unwrap_err();
            assert!(
                matches!(err, Invalid::UnsafePath { .. }),
                "{subdir:?} {name:?}: {err}"
            );
        }
        let long = "x".repeat(300);
        assert!(validate(&chunk("", &long, b"1")).is_err());
        let deep = vec!["d"; 3000].join("/");
        assert!(validate(&chunk(&deep, "x", b"1")).is_err());
    }

    #[test]
    fn rejects_absurd_indices_and_sizes() {
        let mut c = chunk("", "x", b"1");
        c.chunk_i = 2;
        assert!(matches!(validate(&c), Err(Invalid::BadIndex { .. })));
        c.chunk_i = 0;
        assert!(matches!(validate(&c), Err(Invalid::BadIndex { .. })));
        c.chunk_i = 1;
        c.n_total_chunks = 0;
        assert!(matches!(validate(&c), Err(Invalid::BadCount(0))));
        c.n_total_chunks = u64::MAX;
        assert!(matches!(validate(&c), Err(Invalid::BadCount(_))));
        c.n_total_chunks = 1;
        c.offset = u64::MAX;
        assert!(matches!(validate(&c), Err(Invalid::TooFar { .. })));
        let mut e = chunk("", "x", b"");
        e.n_total_chunks = 2;
        assert_eq!(validate(&e), Err(Invalid::EmptyData));
    }
}
