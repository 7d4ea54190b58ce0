//! The error type of the state layer.
//!
//! Every fallible operation of [`crate::state`] returns [`StateError`]. Each message names the
//! file (or says that the input was an in-memory snapshot) and what the user can do about it.
//! Nothing a file or a snapshot contains can make the state layer panic: malformed input ends
//! up here as [`StateError::Corrupt`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in a state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O call failed.
    #[error("state store: {op} {} failed: {source}", Where(path))]
    Io {
        /// The file or directory involved; `None` for a caller-supplied writer.
        path: Option<PathBuf>,
        /// What was being done ("create", "write", "fsync", "rename", "map", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The disk (or the user's quota) is full.
    #[error(
        "state store: no space left while writing {}; free disk space (or raise the quota) and \
         retry: the previous state file is still intact",
        path.display()
    )]
    DiskFull {
        /// The file that could not be written.
        path: PathBuf,
    },
    /// A state file or snapshot failed validation (checksum, structure, truncation).
    #[error(
        "state store: {} is corrupt: {reason}; it cannot be used. Restore the state from an \
         older checkpoint, or delete the file to start with empty state",
        Where(path)
    )]
    Corrupt {
        /// The file; `None` for snapshot bytes handed to `restore`.
        path: Option<PathBuf>,
        /// What the validation found.
        reason: String,
    },
    /// A key, a value or the whole image exceeds what the snapshot format can hold.
    #[error("state store: {what} is {len} bytes, more than the maximum of {max} bytes")]
    TooLarge {
        /// What is too large ("a key", "a value", "the hash index", ...).
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Records handed to a bulk build were not in strictly increasing key order.
    #[error(
        "state store: records for a bulk build must be in strictly increasing key order ({0})"
    )]
    Unsorted(String),
}

/// Formats an optional path as "file /x/y" or "the in-memory snapshot".
struct Where<'a>(&'a Option<PathBuf>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "file {}", p.display()),
            None => f.write_str("the in-memory snapshot"),
        }
    }
}

impl StateError {
    /// An I/O error on `path`, with a full disk or quota mapped to [`StateError::DiskFull`].
    pub(crate) fn io(path: Option<&Path>, op: &'static str, source: io::Error) -> Self {
        if crate::error::is_disk_full(&source) {
            if let Some(p) = path {
                return StateError::DiskFull {
                    path: p.to_path_buf(),
                };
            }
        }
        StateError::Io {
            path: path.map(Path::to_path_buf),
            op,
            source,
        }
    }

    /// A corruption finding for `path` (or for in-memory bytes).
    pub(crate) fn corrupt(path: Option<&Path>, reason: impl Into<String>) -> Self {
        StateError::Corrupt {
            path: path.map(Path::to_path_buf),
            reason: reason.into(),
        }
    }
}
