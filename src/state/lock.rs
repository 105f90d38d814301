//! One process per folder: `download-directory` and `upload-directory` keep state in
//! `FOLDER/.openmsi/` (staging files, the completed log, the upload registry) that two processes
//! would corrupt between them. Each takes an exclusive advisory lock (`flock`) on
//! `FOLDER/.openmsi/lock` at start and holds it until it exits. The kernel releases the lock
//! when the process dies, however it dies (`kill -9` included), so a stale lock file never
//! blocks a restart; its content (pid, host, command) only explains who holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a state folder.
pub const LOCK_FILE: &str = "lock";

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the folder {folder} is already in use by another openmsi process ({holder}); two \
         processes must not share one folder: stop that one first, or use another folder \
         (lock file: {lock})"
    )]
    Busy {
        /// The folder the state belongs to.
        folder: PathBuf,
        /// What the holder wrote into the lock file, e.g. `download-directory, pid 1234 on lab-pc`.
        holder: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file could not be created, read or locked.
    #[error("cannot lock {lock} (for the folder {folder}): {source}")]
    Io {
        /// The folder the state belongs to.
        folder: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// An exclusive lock on a folder's state, held until dropped (or the process exits).
#[derive(Debug)]
pub struct FolderLock {
    /// Open for the lock's lifetime: closing it releases the lock.
    _file: File,
    /// The lock file, for logs.
    path: PathBuf,
}

impl FolderLock {
    /// Locks `state_dir/lock` (the state folder must exist) for `folder`, recording `command`,
    /// this pid and the host name in it. Fails at once with [`LockError::Busy`], naming the
    /// holder, when another process holds it.
    pub fn acquire(state_dir: &Path, folder: &Path, command: &str) -> Result<Self, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            folder: folder.to_path_buf(),
            lock: path.clone(),
            source,
        };
        // No truncation before the lock is ours: the content names the current holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match try_lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Busy {
                    folder: folder.to_path_buf(),
                    holder: if holder.is_empty() {
                        "it is starting up and has not written its pid yet".to_string()
                    } else {
                        holder.to_string()
                    },
                    lock: path,
                });
            }
            Err(e) => return Err(io_error(e)),
        }
        let text = format!(
            "{command}, pid {} on {}\n",
            std::process::id(),
            crate::host::id_safe_name()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(io_error)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A short exclusive lock on `PATH.lock` that waits for its holder: for a file that several
/// processes read, change and replace, each briefly (a node's key store is written by every
/// process of the node, and by KafkaCrypto's own). Released when dropped, and by the system
/// when the holder dies.
pub struct WaitLock {
    _file: File,
}

impl WaitLock {
    /// Takes the lock of `path` (the file `PATH.lock` beside it, created when missing),
    /// waiting while another process holds it.
    pub fn beside(path: &Path) -> io::Result<WaitLock> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock_path = path.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| super::annotate(e, &lock_path))?;
        file.lock().map_err(|e| super::annotate(e, &lock_path))?;
        Ok(WaitLock { _file: file })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another open file holds the lock.
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: the descriptor is valid for the duration of the call (we borrow the File).
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// `LockFileEx(EXCLUSIVE | FAIL_IMMEDIATELY)` on one byte far beyond the end of the file:
/// Windows byte-range locks are mandatory, so locking the text itself would stop the next
/// process from reading who holds the folder. Ok(false) when another handle holds it; the
/// lock goes with the handle, like flock's.
#[cfg(windows)]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{ERROR_IO_PENDING, ERROR_LOCK_VIOLATION, HANDLE};
    use windows_sys::Win32::Storage::FileSystem::{
        LockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;
    // SAFETY: OVERLAPPED is plain data; all-zero is its documented initial state.
    let mut at: OVERLAPPED = unsafe { std::mem::zeroed() };
    at.Anonymous.Anonymous.OffsetHigh = 0x7FFF_FFFF;
    // SAFETY: the handle is valid while `file` is borrowed, and `at` outlives the call (a
    // FAIL_IMMEDIATELY lock on a synchronous handle completes before returning).
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle() as HANDLE,
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut at,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error().map(|c| c as u32) {
        Some(ERROR_LOCK_VIOLATION) | Some(ERROR_IO_PENDING) => Ok(false),
        _ => Err(e),
    }
}

/// Elsewhere (neither Unix nor Windows) the folder is not protected.
#[cfg(not(any(unix, windows)))]
fn try_lock_exclusive(_file: &File) -> io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_folder_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("out");
        let state = folder.join(".openmsi");
        std::fs::create_dir_all(&state).unwrap();
        let first = FolderLock::acquire(&state, &folder, "download-directory").unwrap();
        let content = std::fs::read_to_string(first.path()).unwrap();
        assert!(
            content.contains(&format!("pid {}", std::process::id())),
            "{content}"
        );

        // flock locks belong to the open file, so a second open in this process conflicts
        // exactly as another process would.
        let e = FolderLock::acquire(&state, &folder, "download-directory").unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, LockError::Busy { .. }), "{message}");
        assert!(message.contains(&folder.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );

        drop(first);
        FolderLock::acquire(&state, &folder, "download-directory").unwrap();
    }
}
