//! Durable replacement of a state file: write a temporary file beside it, fsync it, rename it
//! over the target, fsync the directory.
//!
//! Invariant: at every instant the target path holds either the complete old file or the
//! complete new one; a crash can leave only the temporary `<name>.tmp`, which
//! [`remove_stale_tmp`] deletes when the store is opened again. The state layer sits below
//! `checkpoint`, so it has its own copy of this small routine (streaming, for large images).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::StateError;

/// The temporary file used while replacing `path`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the directory `dir`, so that a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io(Some(dir), "fsync directory", e))
}

/// Deletes a temporary file left by an interrupted replacement of `path`.
pub(crate) fn remove_stale_tmp(path: &Path) -> Result<(), StateError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::io(Some(&tmp), "remove stale temporary file", e)),
    }
}

/// Replaces `path` durably with what `fill` writes (see the module doc). On error the
/// temporary file is removed and `path` is untouched.
pub(crate) fn replace_file<F>(path: &Path, fill: F) -> Result<u64, StateError>
where
    F: FnOnce(&mut dyn Write) -> Result<u64, StateError>,
{
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StateError::io(Some(&tmp), "create", e))?;
        let n = fill(&mut f).map_err(|e| match e {
            StateError::Io {
                path: None,
                op,
                source,
            } => StateError::io(Some(&tmp), op, source),
            other => other,
        })?;
        f.sync_all()
            .map_err(|e| StateError::io(Some(&tmp), "fsync", e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| StateError::io(Some(path), "rename", e))?;
        Ok(n)
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a failed cleanup.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(parent_dir(path))?;
    result
}
