//! Crash-safe replacement of a whole file: write a temporary file beside it, fsync it, rename
//! it over the target, fsync the folder. After a crash at any point the target holds either the
//! old or the new content, never a mix; a leftover temporary file is an unfinished write and is
//! simply ignored (and overwritten by the next one).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::annotate;

/// The temporary file a write of `path` goes through (`NAME.tmp` beside it).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with what `write` produces, atomically (see the module docs). Errors name
/// the file that failed.
pub fn write_with(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    write_file(path, Access::Default, write)
}

/// Replaces `path` with `bytes` atomically, as a file only its owner can read or write (mode
/// 0600 from its creation on Unix, so no secret is ever readable by others, not even while it
/// is written).
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, Access::Mode(0o600), |out| out.write_all(bytes))
}

/// Replaces `path` with `bytes` atomically, created with `mode` and given to `owner` (uid,
/// gid) before it takes the target's name: the files `manage-service` writes for a service's
/// user (its environment file, 0600, owned by that user; its unit, 0644).
#[cfg(unix)]
pub fn write_owned_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    write_file(path, Access::Owned { mode, owner }, |out| {
        out.write_all(bytes)
    })
}

/// Who may read and write a file written through here.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// The process's umask decides.
    Default,
    /// This mode from creation on (Unix; ignored elsewhere).
    Mode(u32),
    /// This mode, and this owner before the file takes its name.
    #[cfg(unix)]
    Owned {
        mode: u32,
        owner: Option<(u32, u32)>,
    },
}

fn write_file(
    path: &Path,
    access: Access,
    write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let file = create_truncated(&tmp, access).map_err(|e| annotate(e, &tmp))?;
        let mut out = io::BufWriter::new(file);
        write(&mut out).map_err(|e| annotate(e, &tmp))?;
        let file = out
            .into_inner()
            .map_err(|e| annotate(e.into_error(), &tmp))?;
        file.sync_all().map_err(|e| annotate(e, &tmp))?;
    }
    #[cfg(unix)]
    if let Access::Owned {
        owner: Some((uid, gid)),
        ..
    } = access
    {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| annotate(e, &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| annotate(e, path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Creates (or truncates) `path` with `access`. With a mode, a leftover file from an earlier
/// crash is removed first, so it cannot keep wider permissions.
fn create_truncated(path: &Path, access: Access) -> io::Result<File> {
    let mode = match access {
        Access::Default => return File::create(path),
        Access::Mode(mode) => mode,
        #[cfg(unix)]
        Access::Owned { mode, .. } => mode,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

/// Puts a copy of `source` at `target` atomically: a hard link to it under a temporary name,
/// renamed over `target`, so `target` is always one whole version and `source` stays where it
/// is. Where hard links are impossible (some network or FAT file systems), a synced copy. Used
/// for `--backup` (the file in place kept as its backup) and `--restore-on-hook-failure` (the
/// backup put back).
pub fn link_over(source: &Path, target: &Path) -> io::Result<()> {
    let temp = tmp_path(target);
    let _ = std::fs::remove_file(&temp);
    if std::fs::hard_link(source, &temp).is_err() {
        std::fs::copy(source, &temp).map_err(|e| annotate(e, &temp))?;
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| annotate(e, &temp))?;
    }
    std::fs::rename(&temp, target).map_err(|e| annotate(e, target))
}

/// Replaces `path` with `bytes`, atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Makes everything written to the filesystem holding `path` durable, with one `syncfs` call:
/// for a batch of many small files, far cheaper than one fsync each. Ok(false) where the
/// platform has no such call (the caller then fsyncs file by file).
pub fn sync_filesystem(path: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let dir = File::open(path).map_err(|e| annotate(e, path))?;
        // SAFETY: the descriptor is valid for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(annotate(io::Error::last_os_error(), path));
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(false)
    }
}

/// fsyncs a folder so renames and creations in it survive power loss (a no-op where the
/// platform has no such thing).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| annotate(e, dir))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.jsonl");
        std::fs::write(&path, "old").unwrap();
        std::fs::write(tmp_path(&path), "half a save from a crash").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert!(!tmp_path(&path).exists());
        assert_eq!(tmp_path(&path), dir.path().join("state.jsonl.tmp"));
    }

    #[test]
    fn an_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no such folder").join("x.jsonl");
        let e = write_atomically(&path, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no such folder"), "{e}");
    }
}
