//! `OutputFile`: the file a file sink writes through its format encoder. It remembers whether
//! the disk was full, so that an encoder's error (which wraps the I/O error in its own type and
//! message) is still reported as [`SinkError::DiskFull`](super::SinkError::DiskFull), and it
//! carries the fault injection of a full disk for tests: a byte budget shared by every file
//! of a sink, after which writes fail with `ENOSPC` (the bytes that still fit are written
//! first, as a real full disk does). Without a budget it is a `File` and one flag.
//!
//! It never syncs, renames or names files: that is the directory protocol's business.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::disk_budget::DiskBudget;

/// A sink's output file (see the module docs).
#[derive(Debug)]
pub struct OutputFile {
    file: File,
    budget: Option<Arc<DiskBudget>>,
    disk_full: Arc<AtomicBool>,
}

impl OutputFile {
    /// Wraps `file`; writes take from `budget` when there is one.
    pub fn new(file: File, budget: Option<Arc<DiskBudget>>) -> Self {
        OutputFile {
            file,
            budget,
            disk_full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once a write failed because the disk is full (readable after the file moved into
    /// an encoder).
    pub fn disk_full(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.disk_full)
    }

    /// The file.
    pub fn into_file(self) -> File {
        self.file
    }

    fn full(&self) -> io::Error {
        self.disk_full.store(true, Ordering::Release);
        io::Error::from_raw_os_error(libc::ENOSPC)
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let allowed = DiskBudget::grant(self.budget.as_deref(), buf.len() as u64) as usize;
        if allowed == 0 && !buf.is_empty() {
            return Err(self.full());
        }
        match self.file.write(&buf[..allowed]) {
            Err(e) if crate::error::is_disk_full(&e) => {
                self.disk_full.store(true, Ordering::Release);
                Err(e)
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_writes_what_fits_then_fails_as_a_full_disk() {
        let dir = std::env::temp_dir().join(format!("laminar-output-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let budget = Arc::new(DiskBudget::new(10));
        let mut f = OutputFile::new(File::create(&path).unwrap(), Some(Arc::clone(&budget)));
        let flag = f.disk_full();
        f.write_all(b"abcdef").unwrap();
        assert!(!flag.load(Ordering::Acquire));
        let e = f.write_all(b"ghijkl").unwrap_err();
        assert!(crate::error::is_disk_full(&e), "{e}");
        assert!(flag.load(Ordering::Acquire));
        drop(f.into_file());
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefghij");
        // Without a budget nothing is counted.
        let mut g = OutputFile::new(File::create(&path).unwrap(), None);
        g.write_all(&[7u8; 100_000]).unwrap();
        assert!(!g.disk_full().load(Ordering::Acquire));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
