//! Errors of checkpoint files and of the state-directory lock.

use std::path::PathBuf;

/// What can go wrong with checkpoint files or the state directory. Every message says which
/// file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O call failed.
    #[error("{op} {}: {source} (check that the state directory exists, is writable and is on a local disk)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The disk is full.
    #[error("the disk holding {} is full: free space, then restart (the last complete checkpoint and the log are intact)", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// A checkpoint or manifest file fails its checks.
    #[error("{} is damaged ({reason}); repair it with laminar.repair_state_dir(state_dir) (Rust: engine::repair_state_dir, or CheckpointStore::fall_back): recovery then starts from the newest older checkpoint that verifies (damaged files are renamed aside, not deleted), or from the whole log if none does", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest names a checkpoint whose file is gone.
    #[error("checkpoint {id} named by the MANIFEST is missing ({}); repair it with laminar.repair_state_dir(state_dir) (Rust: engine::repair_state_dir, or CheckpointStore::fall_back) to recover from an older checkpoint", path.display())]
    Missing {
        /// The checkpoint id.
        id: u64,
        /// Where its file should be.
        path: PathBuf,
    },
    /// Checkpoint files exist but no manifest names one.
    #[error("{} holds checkpoint files but no MANIFEST; {hint}", dir.display())]
    NoManifest {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What to do.
        hint: String,
    },
    /// Another engine holds the state directory.
    #[error("the state directory {} is in use by another engine{}: close it first, or use another state_dir", path.display(), owner_pid.map(|p| format!(" (process {p})")).unwrap_or_default())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The process recorded in the lock file, if readable.
        owner_pid: Option<u32>,
    },
}

impl CheckpointError {
    /// An I/O error on `path`, a full disk recognised as such.
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        let path = path.into();
        if crate::error::is_disk_full(&source) {
            CheckpointError::DiskFull { path }
        } else {
            CheckpointError::Io { path, op, source }
        }
    }
}
