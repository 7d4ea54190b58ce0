//! `TempDir`: a fresh directory under the system temp dir, removed on drop. Shared by the
//! storage test crates (`wal.rs`, `state_store.rs`, `checkpoint_store.rs`) with `#[path]`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh, empty directory named after `tag`, the process and a counter.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "laminar-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to a new file of its own (rewriting one file over and over makes ext4
    /// flush it on every close: slow on a busy disk).
    pub fn write_new(&self, bytes: &[u8]) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = self
            .0
            .join(format!("f{}.img", N.fetch_add(1, Ordering::Relaxed)));
        fs::write(&p, bytes).expect("write a temporary file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
