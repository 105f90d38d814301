//! The state a long-running command keeps in `FOLDER/.openmsi/` (or `--state-dir`), and every
//! durable write of the program, in one place: the folder's layout ([`StateDir`]), the
//! one-process-per-folder lock and the short waiting lock of a shared file ([`lock`]),
//! crash-safe whole-file writes and link-over replacements ([`atomic`]), the append-only and
//! "latest entry per key" JSONL logs the upload registry, the resume state, the completed log
//! and the hook log are built on ([`jsonl`]), and I/O errors that name the path they happened
//! on ([`PathError`], [`annotate`]).
//!
//! See `docs/ARCHITECTURE.md` for what each file in the folder is for.

pub mod atomic;
pub mod jsonl;
pub mod lock;

use std::io;
use std::path::{Path, PathBuf};

pub use atomic::{sync_dir, sync_filesystem, write_atomically};
pub use jsonl::{Keyed, LatestLog};
pub use lock::{FolderLock, LockError};

/// Name of the state folder inside a watched or output folder. Hidden, so upload-directory
/// never uploads it, and download-directory refuses chunks that would write into it.
pub const STATE_DIR_NAME: &str = ".openmsi";

/// The user's cache folder (`$XDG_CACHE_HOME`, `~/.cache`, or `%LOCALAPPDATA%` on Windows),
/// where commands without a folder of their own (relay, s3-transfer) keep their state.
pub fn user_cache_dir() -> Option<PathBuf> {
    if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
    } else {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
    }
}

/// The layout of one folder's `.openmsi/`: every file and sub-folder name is spelled here and
/// nowhere else.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// `FOLDER/.openmsi`.
    root: PathBuf,
}

impl StateDir {
    /// The default state folder of `folder` (not created): `folder/.openmsi`.
    pub fn of(folder: &Path) -> Self {
        Self {
            root: folder.join(STATE_DIR_NAME),
        }
    }

    /// The state folder of `folder`: `chosen` (`--state-dir`) when given, else the default.
    pub fn located(folder: &Path, chosen: Option<&Path>) -> Self {
        match chosen {
            Some(root) => Self {
                root: root.to_path_buf(),
            },
            None => Self::of(folder),
        }
    }

    /// Creates the default state folder (and `folder` itself) when missing.
    pub fn create(folder: &Path) -> io::Result<Self> {
        Self::of(folder).ensure()
    }

    /// Creates this state folder when missing. A permission error names the folder that
    /// refused (the nearest existing ancestor), not the path that could not be made inside it.
    pub fn ensure(self) -> io::Result<Self> {
        std::fs::create_dir_all(&self.root).map_err(|e| annotate_create(e, &self.root))?;
        Ok(self)
    }

    /// The folder itself (`--state-dir`, or `FOLDER/.openmsi`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the folder's lock for `command` (see [`lock`]); `folder` is named in errors.
    pub fn lock(&self, folder: &Path, command: &str) -> Result<FolderLock, LockError> {
        FolderLock::acquire(&self.root, folder, command)
    }

    /// upload-directory: file versions the broker fully acknowledged.
    pub fn upload_registry(&self) -> PathBuf {
        self.root.join("uploaded.jsonl")
    }

    /// upload-directory: acknowledged chunks of unfinished files (the resume state).
    pub fn upload_progress(&self) -> PathBuf {
        self.root.join("in_progress.jsonl")
    }

    /// The long-running command's own log file (`upload-directory.log`, ...).
    pub fn log_file(&self, command: &str) -> PathBuf {
        self.root.join(format!("{command}.log"))
    }

    /// download-directory: partial files and their durable chunk records.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// download-directory: files that failed verification or could not be put in place.
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }

    /// download-directory: bad messages kept for inspection.
    pub fn rejected(&self) -> PathBuf {
        self.root.join("rejected")
    }

    /// download-directory: messages that cannot be opened yet (e.g. their decryption key has
    /// not arrived), kept until they can.
    pub fn deferred(&self) -> PathBuf {
        self.root.join("deferred")
    }

    /// download-directory: `--on-file` hooks due and done.
    pub fn hook_log(&self) -> PathBuf {
        self.root.join("hooks.jsonl")
    }

    /// download-directory: files published, latest version per path.
    pub fn completed_log(&self) -> PathBuf {
        self.root.join("completed.jsonl")
    }
}

/// An I/O error with the path it happened on, so a message a user reads says which file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PathError {
    /// The file or folder.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: io::Error,
}

/// `e` as an `io::Error` of the same kind whose message starts with `path` (callers that keep
/// `io::Result` use this; the kind survives, so "disk full" is still recognised).
pub fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        PathError {
            path: path.to_path_buf(),
            source: e,
        },
    )
}

/// `e`, from creating `path` (and its missing parents), annotated with the folder at fault: for
/// a permission error that is the nearest existing ancestor, which this user cannot write.
pub fn annotate_create(e: io::Error, path: &Path) -> io::Error {
    let why = match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied",
        io::ErrorKind::ReadOnlyFilesystem => "a read-only filesystem",
        _ => return annotate(e, path),
    };
    let Some(blocking) = path.ancestors().skip(1).find(|a| a.is_dir()) else {
        return annotate(e, path);
    };
    io::Error::new(
        e.kind(),
        format!(
            "cannot create {}: this user may not write in {} ({why})",
            path.display(),
            blocking.display(),
        ),
    )
}

/// Whether `e` means "this place cannot be written" (permissions, a read-only filesystem).
pub fn is_unwritable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Refuses a `--state-dir` inside `folder` (what it names in the error): the watcher would
/// upload the state files, a downloader could be sent files that overwrite them.
pub fn refuse_inside(state_dir: &Path, folder: &Path, what: &str) -> io::Result<()> {
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .map(|p| p.canonicalize().unwrap_or(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let (state, folder_abs) = (absolute(state_dir), absolute(folder));
    if state.starts_with(&folder_abs) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--state-dir {} is inside {what} {}: choose a folder outside it",
                state_dir.display(),
                folder.display()
            ),
        ));
    }
    Ok(())
}

/// Whether `a` and `b` (both existing) are on one filesystem, so a rename between them works.
/// Always true where the platform does not say (a failed rename is still reported then).
pub fn same_filesystem(a: &Path, b: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let device = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.dev())
                .map_err(|e| annotate(e, p))
        };
        Ok(device(a)? == device(b)?)
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        Ok(true)
    }
}

/// Disk-full errors stop a command (nothing can progress); most other per-file errors do not.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

/// Removes the file at `path`, then the folders it leaves empty, up to (not including) `root`.
pub fn remove_with_empty_parents(root: &Path, path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}
