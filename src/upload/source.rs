//! A file about to be uploaded: its name as the wire format carries it (bare file name plus the
//! `/`-separated folder relative to the upload root), its size and its mtime.

use std::fs::{File, Metadata};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Why a file cannot be uploaded.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is not inside --root-dir {root}")]
    OutsideRoot { path: PathBuf, root: PathBuf },
    #[error("the name {path} is not valid UTF-8; the chunk format carries names as UTF-8 text, so rename the file")]
    NotUtf8 { path: PathBuf },
}

/// An open source file with everything the chunk header needs.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as given, for messages.
    pub path: PathBuf,
    /// The open file (kept open so a rename during upload does not matter).
    pub file: File,
    /// Bare file name.
    pub filename: String,
    /// Folder relative to the upload root, `/`-separated, `""` at top level.
    pub subdir: String,
    /// Size in bytes when opened.
    pub size: u64,
    /// Modification time in Unix seconds, 0.0 when the platform cannot tell.
    pub mtime: f64,
}

impl SourceFile {
    /// Opens `path` and names it relative to `root` (default: its own folder).
    pub fn open(path: &Path, root: Option<&Path>) -> Result<Self, SourceError> {
        let open_err = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(SourceError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let filename = path
            .file_name()
            .ok_or_else(|| SourceError::NotAFile {
                path: path.to_path_buf(),
            })?
            .to_str()
            .ok_or_else(|| SourceError::NotUtf8 {
                path: path.to_path_buf(),
            })?
            .to_string();
        let subdir = match root {
            None => String::new(),
            Some(root) => relative_subdir(path, root)?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            filename,
            subdir,
            size: meta.len(),
            mtime: mtime_seconds(&meta),
        })
    }

    /// The path relative to the upload root, `/`-separated: what partitioning hashes.
    pub fn relative_path(&self) -> String {
        if self.subdir.is_empty() {
            self.filename.clone()
        } else {
            format!("{}/{}", self.subdir, self.filename)
        }
    }

    /// True when size and mtime still match what was seen at open.
    pub fn unchanged(&self) -> std::io::Result<bool> {
        let meta = std::fs::metadata(&self.path)?;
        Ok(meta.len() == self.size && mtime_seconds(&meta) == self.mtime)
    }
}

/// The file's mtime as Unix seconds (what OpenMSIStream's `os.path.getmtime` gives).
pub fn mtime_seconds(meta: &Metadata) -> f64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `/`-joined folder of `path` relative to `root`. Both are canonicalised so `./data` and
/// `data` or a symlinked root name the same place.
fn relative_subdir(path: &Path, root: &Path) -> Result<String, SourceError> {
    let canon = |p: &Path| {
        p.canonicalize().map_err(|source| SourceError::Open {
            path: p.to_path_buf(),
            source,
        })
    };
    let (full, root_full) = (canon(path)?, canon(root)?);
    let outside = || SourceError::OutsideRoot {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    };
    let relative = full.strip_prefix(&root_full).map_err(|_| outside())?;
    let parent = relative.parent().unwrap_or(Path::new(""));
    let mut parts = Vec::new();
    for component in parent.components() {
        match component {
            Component::Normal(part) => {
                parts.push(part.to_str().ok_or_else(|| SourceError::NotUtf8 {
                    path: path.to_path_buf(),
                })?)
            }
            _ => return Err(outside()),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_relative_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b c");
        std::fs::create_dir_all(&nested).unwrap();
        let path = nested.join("x ü.dat");
        std::fs::write(&path, b"hello").unwrap();
        let source = SourceFile::open(&path, Some(dir.path())).unwrap();
        assert_eq!(source.subdir, "a/b c");
        assert_eq!(source.filename, "x ü.dat");
        assert_eq!(source.relative_path(), "a/b c/x ü.dat");
        assert_eq!(source.size, 5);
        assert!(source.mtime > 0.0);
        let top = SourceFile::open(&path, None).unwrap();
        assert_eq!(top.subdir, "");
    }

    #[test]
    fn rejects_outside_root_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"").unwrap();
        let err = SourceFile::open(&path, Some(other.path())).unwrap_err();
        assert!(
            err.to_string().contains("is not inside --root-dir"),
            "{err}"
        );
        let err = SourceFile::open(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = SourceFile::open(&dir.path().join("missing"), None).unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
    }
}
