//! `StateDirLock`: one engine per state directory.
//!
//! The lock is an exclusive, non-blocking OS lock (`flock` through `File::try_lock`) on
//! `<state_dir>/LOCK`, held for the engine's lifetime. The OS drops it when the process dies,
//! so a crashed engine never leaves the directory locked; the pid written into the file only
//! makes the error message helpful. It must never be taken by waiting: a second engine gets
//! an error at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::CheckpointError;

/// Held while an engine uses a state directory; released on drop.
#[derive(Debug)]
pub struct StateDirLock {
    file: File,
    path: PathBuf,
}

impl StateDirLock {
    /// Creates `state_dir` if needed and locks it, or fails with
    /// [`CheckpointError::Locked`] if another engine (in this process or another) holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateDirLock, CheckpointError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| CheckpointError::io(state_dir, "create directory", e))?;
        let path = state_dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CheckpointError::io(&path, "open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(CheckpointError::Locked {
                    path,
                    owner_pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(CheckpointError::io(&path, "lock", e)),
        }
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(pid.as_bytes()));
        written.map_err(|e| CheckpointError::io(&path, "write", e))?;
        Ok(StateDirLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateDirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("laminar-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = StateDirLock::acquire(&dir).unwrap();
        match StateDirLock::acquire(&dir) {
            Err(CheckpointError::Locked { owner_pid, .. }) => {
                assert_eq!(owner_pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = StateDirLock::acquire(&dir).unwrap_err().to_string();
        assert!(msg.contains("in use by another engine"), "{msg}");
        drop(first);
        let again = StateDirLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
