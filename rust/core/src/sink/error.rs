//! Errors of sinks. Every message names the sink's file or directory and what to do.

use std::path::PathBuf;

/// What can go wrong in a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("create", "rename", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The disk is full.
    #[error("the disk holding {} is full: free space, then restart (staged results are committed by recovery)", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Another engine writes to the same sink directory.
    #[error("the sink directory {} is in use by another engine{}: close it first, or use another directory", path.display(), owner_pid.map(|p| format!(" (process {p})")).unwrap_or_default())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The process recorded in the lock file, if readable.
        owner_pid: Option<u32>,
    },
    /// Encoding results into the file format failed.
    #[error("writing {}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// Results of an epoch the engine will produce again are already committed: recovery
    /// started from an older checkpoint than the one that committed them.
    #[error("{} holds results of epoch {committed}, but recovery starts from checkpoint {recovered}: the results of epochs {first}..={committed} would be written twice. Move those files aside (they are produced again) or restore the newer checkpoint", dir.display(), first = recovered + 1)]
    AheadOfCheckpoint {
        /// The sink directory.
        dir: PathBuf,
        /// The newest committed epoch found.
        committed: u64,
        /// The checkpoint recovery starts from (0: none).
        recovered: u64,
    },
    /// A staged or committed epoch file could not be read back.
    #[error("{} is damaged ({reason}); delete it to skip that epoch", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The sink was used out of protocol order (a bug in the caller).
    #[error("sink protocol: {0}")]
    Protocol(String),
}

impl SinkError {
    /// An I/O error on `path`, a full disk recognised as such.
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        let path = path.into();
        if crate::error::is_disk_full(&source) {
            SinkError::DiskFull { path }
        } else {
            SinkError::Io { path, op, source }
        }
    }
}
