//! The "closed" half of readiness: a file is uploaded only when no process holds it open for
//! writing (and it was unchanged for the settle time, see [`super::settle`]). An instrument
//! that pauses between writes longer than the settle time, without closing the file, is not
//! sent a truncated copy.
//!
//! On Linux, one pass over `/proc/*/fd` per settle round (not per file: a burst of 10,000
//! files costs one pass) collects the (device, inode) of every file under the watched folder
//! that some process has open with write access (`flags:` in `/proc/PID/fdinfo/FD`, access
//! mode not `O_RDONLY`). Entries we cannot read (other users' processes when not root,
//! processes that just exited) are skipped. Only descriptors whose target path lies under the
//! watched folder are examined, so sockets, pipes and unrelated files cost one `readlink`;
//! a process in another mount namespace that sees the folder under a different path is not
//! detected. Elsewhere (Windows, macOS) only the settle rule applies.

use std::collections::HashSet;
use std::fs::Metadata;
use std::path::Path;

/// A file's identity: (device, inode) on Unix; `(0, 0)` where the platform has none.
pub type FileId = (u64, u64);

/// The identity of the file `meta` describes.
pub fn file_id(meta: &Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

/// Files under `root` that some process holds open for writing. Empty where the platform
/// offers no way to tell.
pub fn open_for_writing(root: &Path) -> HashSet<FileId> {
    #[cfg(target_os = "linux")]
    {
        linux::open_for_writing(root)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        HashSet::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{file_id, FileId};
    use std::collections::HashSet;
    use std::path::Path;

    pub fn open_for_writing(root: &Path) -> HashSet<FileId> {
        let mut out = HashSet::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return out;
        };
        for proc_entry in procs.filter_map(Result::ok) {
            let name = proc_entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd_entry in fds.filter_map(Result::ok) {
                let fd_path = fd_entry.path();
                let Ok(target) = std::fs::read_link(&fd_path) else {
                    continue;
                };
                if !target.starts_with(root) {
                    continue;
                }
                let fd = fd_entry.file_name();
                let Some(fd) = fd.to_str() else { continue };
                if !writable(pid, fd) {
                    continue;
                }
                // Through the /proc link: the open file itself, even if renamed or deleted.
                if let Ok(meta) = std::fs::metadata(&fd_path) {
                    out.insert(file_id(&meta));
                }
            }
        }
        out
    }

    /// True when descriptor `fd` of process `pid` was opened with write access.
    fn writable(pid: &str, fd: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .and_then(|info| access_mode_writes(&info))
            .unwrap_or(false)
    }

    /// From the text of an fdinfo file: whether its `flags:` (octal) allow writing.
    pub(super) fn access_mode_writes(fdinfo: &str) -> Option<bool> {
        let flags = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))?
            .trim();
        let flags = u32::from_str_radix(flags, 8).ok()?;
        Some(flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};

    #[test]
    fn finds_files_this_process_holds_open_for_writing_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (w, r, closed) = (root.join("w"), root.join("r"), root.join("closed"));
        for p in [&w, &r, &closed] {
            std::fs::write(p, b"x").unwrap();
        }
        let _writer = OpenOptions::new().append(true).open(&w).unwrap();
        let _reader = File::open(&r).unwrap();
        let busy = open_for_writing(&root);
        let id = |p: &Path| file_id(&std::fs::metadata(p).unwrap());
        assert!(busy.contains(&id(&w)));
        assert!(!busy.contains(&id(&r)));
        assert!(!busy.contains(&id(&closed)));
    }

    #[test]
    fn reads_the_access_mode_from_fdinfo() {
        let parse = linux::access_mode_writes;
        assert_eq!(parse("pos:\t0\nflags:\t0100000\nmnt_id:\t1\n"), Some(false));
        assert_eq!(parse("pos:\t0\nflags:\t0102001\n"), Some(true));
        assert_eq!(parse("pos:\t0\nflags:\t02\n"), Some(true));
        assert_eq!(parse("pos:\t0\n"), None);
    }
}
