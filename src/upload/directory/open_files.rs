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
//! detected.
//!
//! One file at a time ([`is_open_for_writing`], used when a file's last writer just closed it,
//! so it can go at once): on Linux a read lease (`F_SETLEASE`, `F_RDLCK`), which the kernel
//! grants only while no process has the file open for writing, taken and released at once;
//! where a lease is not allowed (a file this user does not own) or not supported, the `/proc`
//! pass restricted to that one path. On Windows, opening the file while denying write sharing
//! succeeds only when no handle has it open for writing. Elsewhere (macOS) only the settle rule
//! applies.

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

/// Files under `root` that some process holds open for writing, or None where the platform
/// cannot list them all at once (then ask [`is_open_for_writing`] file by file).
pub fn open_for_writing(root: &Path) -> Option<HashSet<FileId>> {
    #[cfg(target_os = "linux")]
    {
        Some(linux::open_for_writing(root))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        None
    }
}

/// True when some process holds the file at `path` (identity `id`) open for writing.
pub fn is_open_for_writing(path: &Path, id: FileId) -> bool {
    #[cfg(target_os = "linux")]
    {
        match linux::no_writer_by_lease(path) {
            Some(free) => !free,
            None => linux::open_for_writing(path).contains(&id),
        }
    }
    #[cfg(windows)]
    {
        let _ = id;
        windows::denies_shared_write(path)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = (path, id);
        false
    }
}

#[cfg(windows)]
mod windows {
    use std::os::windows::fs::OpenOptionsExt;
    use std::path::Path;

    /// `FILE_SHARE_READ | FILE_SHARE_DELETE`: others may read or delete, not write.
    const SHARE_READ_DELETE: u32 = 0x1 | 0x4;
    /// `ERROR_SHARING_VIOLATION`.
    const SHARING_VIOLATION: i32 = 32;

    /// True when the file cannot be opened with write sharing denied: someone writes to it.
    pub fn denies_shared_write(path: &Path) -> bool {
        match std::fs::OpenOptions::new()
            .read(true)
            .share_mode(SHARE_READ_DELETE)
            .open(path)
        {
            Ok(_) => false,
            Err(e) => e.raw_os_error() == Some(SHARING_VIOLATION),
        }
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

    /// Some(true) when no process has `path` open for writing, Some(false) when one has, None
    /// when a lease cannot tell (not the file's owner, a filesystem without leases, gone).
    pub fn no_writer_by_lease(path: &Path) -> Option<bool> {
        use std::os::unix::io::AsRawFd;
        ignore_lease_breaks();
        let file = std::fs::File::open(path).ok()?;
        let fd = file.as_raw_fd();
        // SAFETY: `fd` is a valid open descriptor for the duration of both calls.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
        if rc == 0 {
            // Released at once: a writer opening the file meanwhile waits microseconds.
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
            return Some(true);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(false),
            _ => None,
        }
    }

    /// A writer that opens the file during our brief lease makes the kernel signal us with
    /// SIGIO, whose default action ends the process: ignore it (nothing else here uses it).
    fn ignore_lease_breaks() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
            unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        });
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
        let busy = open_for_writing(&root).unwrap();
        let id = |p: &Path| file_id(&std::fs::metadata(p).unwrap());
        assert!(busy.contains(&id(&w)));
        assert!(!busy.contains(&id(&r)));
        assert!(!busy.contains(&id(&closed)));
    }

    #[test]
    fn one_file_is_open_for_writing_only_while_a_writer_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let path = root.join("scan.tif");
        std::fs::write(&path, b"x").unwrap();
        let id = file_id(&std::fs::metadata(&path).unwrap());
        let reader = File::open(&path).unwrap();
        assert!(!is_open_for_writing(&path, id), "a reader is not a writer");
        assert_eq!(linux::no_writer_by_lease(&path), Some(true));
        let writer = OpenOptions::new().append(true).open(&path).unwrap();
        assert!(is_open_for_writing(&path, id));
        assert_eq!(linux::no_writer_by_lease(&path), Some(false));
        // The /proc fallback (used where a lease is not allowed) agrees.
        assert!(linux::open_for_writing(&path).contains(&id));
        drop(writer);
        assert!(!is_open_for_writing(&path, id));
        assert!(!linux::open_for_writing(&path).contains(&id));
        drop(reader);
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
