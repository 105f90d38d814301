//! Which files under the watched folder are candidates, and the full scan that is the source of
//! truth (events only make discovery faster).

use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};

use regex::Regex;
use tracing::warn;

use super::open_files::{file_id, FileId};
use crate::upload::source::mtime_seconds;

/// A regular file seen under the watched folder.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path relative to the watched folder, `/`-separated.
    pub relative: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: f64,
    /// (device, inode): which open files are this one.
    pub id: FileId,
}

/// The selection rules: hidden names (a component starting with `.`, which also covers the
/// state folder `.openmsi/`) are skipped; `--upload-regex` filters relative paths.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The watched folder (canonical).
    pub root: PathBuf,
    /// Relative paths must match this, when given.
    pub regex: Option<Regex>,
    /// A top-level folder that is another tool's state (OpenMSIStream's `LOGS/`), not data.
    pub skip_top: Option<String>,
}

impl Filter {
    /// The `/`-separated relative path of `path` when it is selectable: inside the root, no
    /// hidden component, valid UTF-8 (the wire format carries names as text).
    pub fn relative(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut parts = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(part) => {
                    let part = part.to_str()?;
                    if part.starts_with('.') {
                        return None;
                    }
                    parts.push(part);
                }
                _ => return None,
            }
        }
        if parts.is_empty() || parts.len() > 1 && self.skip_top.as_deref() == Some(parts[0]) {
            return None;
        }
        Some(parts.join("/"))
    }

    /// True when a file at `relative` passes `--upload-regex`.
    pub fn wanted(&self, relative: &str) -> bool {
        self.regex.as_ref().is_none_or(|re| re.is_match(relative))
    }

    /// `Seen` for `path` when it is a selectable regular file (symlinks are not followed: their
    /// target may lie outside the folder).
    pub fn inspect(&self, path: &Path, meta: &Metadata) -> Option<Seen> {
        if !meta.file_type().is_file() {
            return None;
        }
        let relative = self.relative(path)?;
        if !self.wanted(&relative) {
            return None;
        }
        Some(Seen {
            relative,
            path: path.to_path_buf(),
            size: meta.len(),
            mtime: mtime_seconds(meta),
            id: file_id(meta),
        })
    }

    /// Every selectable file under `start` (the root or a folder inside it). Unreadable
    /// folders are reported and skipped; the next scan tries them again.
    pub fn scan(&self, start: &Path) -> Vec<Seen> {
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(start)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0
                    || !e.file_name().to_str().is_some_and(|n| {
                        n.starts_with('.')
                            || e.file_type().is_dir()
                                && e.path().parent() == Some(self.root.as_path())
                                && self.skip_top.as_deref() == Some(n)
                    })
            });
        for entry in walker {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    if let Ok(meta) = entry.metadata() {
                        out.extend(self.inspect(entry.path(), &meta));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // A file deleted during the walk is normal; anything else is worth a line.
                    if e.io_error()
                        .is_none_or(|io| io.kind() != std::io::ErrorKind::NotFound)
                    {
                        warn!(error = %e, "cannot read part of the watched folder; skipped, retried at the next scan");
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_hidden_and_state_and_applies_regex() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for p in [
            "a.dat",
            "catalog.csv",
            ".hidden",
            ".openmsi/uploaded.jsonl",
            "sub/.x/y",
            "sub/deep/z.tif",
        ] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let filter = Filter {
            root: root.clone(),
            regex: None,
            skip_top: None,
        };
        let mut found: Vec<String> = filter.scan(&root).into_iter().map(|s| s.relative).collect();
        found.sort();
        assert_eq!(found, ["a.dat", "catalog.csv", "sub/deep/z.tif"]);
        let filter = Filter {
            root: root.clone(),
            regex: Some(Regex::new(r"\.tif$").unwrap()),
            skip_top: None,
        };
        let found: Vec<String> = filter.scan(&root).into_iter().map(|s| s.relative).collect();
        assert_eq!(found, ["sub/deep/z.tif"]);
    }
}
