//! File I/O of the write-ahead log: positioned writes, syncs, directory syncs, error mapping,
//! and the disk-budget fault injection.
//!
//! Every byte the WAL writes goes through [`Disk::write_at`], so the fault injection of
//! `WalConfig::disk_budget` sees all of it. The budget models free space: it is consumed by
//! writes that *grow* a file (zero-filling a preallocated segment, appending to a growing one,
//! a new segment's header), not by overwrites inside a file, which need no new blocks on a
//! real disk either. When a write would grow files past the budget, the bytes that still fit
//! are written and the call fails with `ENOSPC`, which is what a real full disk does (a short
//! write, then the error).
//!
//! # Invariants
//!
//! * Every error names the path and the operation; "no space left" becomes
//!   [`WalError::DiskFull`].
//! * `sync_data` is `fdatasync`: enough for a file whose size and blocks do not change
//!   (overwriting a preallocated segment). A file that was created or grew is synced with
//!   `sync_all` (`fsync`) where its size must be durable, and its directory with
//!   [`Disk::sync_dir`] after a create, rename or delete.
//! * With `WalConfig::sync` off, no sync of any kind is made (durability off, for tests and
//!   comparisons), and new segments are sparse instead of preallocated (holes read as
//!   zeros); everything else is the same.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::WalError;
use crate::disk_budget::DiskBudget;

/// Size of the zero buffer used to fill preallocated segments.
pub(crate) const ZERO_CHUNK: usize = 1 << 20;

/// Alignment `O_DIRECT` asks of buffers, offsets and lengths (the largest logical block size
/// in common use).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// [`ZERO_CHUNK`] zeros at an address aligned for `O_DIRECT`, reused for every fill.
#[derive(Debug)]
pub(crate) struct ZeroChunk {
    buf: Vec<u8>,
    start: usize,
}

impl ZeroChunk {
    pub(crate) fn new() -> Self {
        let buf = vec![0u8; ZERO_CHUNK + DIRECT_ALIGN];
        // `align_offset` may (in principle) decline; then the bytes are unaligned and an
        // `O_DIRECT` write of them fails with EINVAL, which falls back to buffered writes.
        let start = match buf.as_ptr().align_offset(DIRECT_ALIGN) {
            k if k <= DIRECT_ALIGN => k,
            _ => 0,
        };
        ZeroChunk { buf, start }
    }

    /// The zeros.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + ZERO_CHUNK]
    }
}

/// The WAL's view of the disk: positioned writes and syncs with error mapping, plus the
/// optional fault-injection budget.
#[derive(Debug)]
pub(crate) struct Disk {
    /// Bytes that may still be written before writes fail with ENOSPC; `None`: unlimited.
    budget: Option<DiskBudget>,
    /// False (`WalConfig::sync` off): every sync is skipped, durability off entirely.
    sync: bool,
}

impl Disk {
    pub(crate) fn new(budget: Option<u64>, sync: bool) -> Self {
        Disk {
            budget: budget.map(DiskBudget::new),
            sync,
        }
    }

    /// Writes all of `buf` at `offset`, or fails naming `path`.
    pub(crate) fn write_at(
        &self,
        file: &File,
        path: &Path,
        buf: &[u8],
        offset: u64,
    ) -> Result<(), WalError> {
        let mut allowed = buf.len();
        if self.budget.is_some() {
            // Only growth of the file takes space (a hole before `offset` takes none).
            let len = file
                .metadata()
                .map_err(|e| WalError::io(path, "stat", e))?
                .len();
            let grows_from = len.max(offset);
            let end = offset + buf.len() as u64;
            let growth = end.saturating_sub(grows_from);
            let granted = DiskBudget::grant(self.budget.as_ref(), growth);
            if granted < growth {
                allowed = (grows_from - offset + granted) as usize;
            }
        }
        let (fits, _) = buf.split_at(allowed.min(buf.len()));
        file.write_all_at(fits, offset)
            .map_err(|e| WalError::io(path, "write", e))?;
        if fits.len() < buf.len() {
            return Err(WalError::io(
                path,
                "write",
                io::Error::from_raw_os_error(28), // ENOSPC, injected by disk_budget
            ));
        }
        Ok(())
    }

    /// Writes zeros over `[from, to)` of the file, in chunks of [`ZERO_CHUNK`].
    pub(crate) fn zero_fill(
        &self,
        file: &File,
        path: &Path,
        zeros: &[u8],
        from: u64,
        to: u64,
    ) -> Result<(), WalError> {
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(zeros.len());
            self.write_at(file, path, &zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Whether the log may write with `O_DIRECT` (not under the fault-injection budget, which
    /// counts and cuts buffered writes).
    pub(crate) fn allows_direct(&self) -> bool {
        self.budget.is_none()
    }

    /// Prepares the new file `file` (at `path`) as a preallocated segment of `len` bytes;
    /// returns false if `stop` said stop (polled between chunks of a fill).
    ///
    /// Where the file system can, its blocks are only reserved (`fallocate`): such a segment
    /// is written with synchronous direct writes (see `wal::direct`), and on this machine's
    /// disk (`benches/disk_probe.py`: 1,000 commits of 240 KB) a reserved 256 MiB file took
    /// 176-182 ms at 4 commits per write against 116-121 ms for a zero-filled one *plus*
    /// 130-142 ms of disk time to fill it, which the log pays beside its own writes while it
    /// runs (one commit per write: 359-368 ms against 207-221 + 115-133 ms, about even).
    /// Under the fault-injection budget, or where `fallocate` is refused, it is zero-filled.
    ///
    /// The fill's chunks go through a second, `O_DIRECT` handle where the file system takes one:
    /// the disk is written straight from the one zero buffer, so the fill costs no CPU copy
    /// into the page cache (at a high log rate, filling 64 MiB segments through the page
    /// cache took about a quarter of the CPU beside the pushing thread) and evicts nothing.
    /// Where `O_DIRECT` is refused (EINVAL: tmpfs, some FUSE mounts), for a last chunk that is
    /// not block-aligned, and under the fault-injection budget (whose short writes are not
    /// aligned), the bytes go through `file` as ordinary writes. Durability is the caller's
    /// `sync_all` either way: `fsync` covers writes made through any handle of the inode.
    pub(crate) fn fill_new_file(
        &self,
        file: &File,
        path: &Path,
        zeros: &ZeroChunk,
        len: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, WalError> {
        if !self.sync && self.budget.is_none() {
            // The fill exists to make `fdatasync` a pure data flush; without syncs it would
            // only double the bytes written. A sparse file reads as zeros all the same.
            file.set_len(len)
                .map_err(|e| WalError::io(path, "extend", e))?;
            return Ok(true);
        }
        if self.budget.is_none() && reserve_blocks(file, path, len)? {
            return Ok(true);
        }
        let mut direct = if self.budget.is_none() {
            open_direct(path)
        } else {
            None
        };
        let mut at = 0;
        while at < len {
            if stop() {
                return Ok(false);
            }
            let n = ((len - at) as usize).min(ZERO_CHUNK);
            let chunk = &zeros.bytes()[..n];
            let mut done = false;
            if let Some(d) = direct.as_ref().filter(|_| n.is_multiple_of(DIRECT_ALIGN)) {
                match d.write_all_at(chunk, at) {
                    Ok(()) => done = true,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => direct = None,
                    Err(e) => return Err(WalError::io(path, "write", e)),
                }
            }
            if !done {
                self.write_at(file, path, chunk, at)?;
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// `fdatasync`.
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<(), WalError> {
        if !self.sync {
            return Ok(());
        }
        file.sync_data()
            .map_err(|e| WalError::io(path, "fdatasync", e))
    }

    /// `fsync` (data and metadata, including the size).
    pub(crate) fn sync_all(&self, file: &File, path: &Path) -> Result<(), WalError> {
        if !self.sync {
            return Ok(());
        }
        file.sync_all().map_err(|e| WalError::io(path, "fsync", e))
    }

    /// `fsync` of a directory, making creates, renames and deletes in it durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<(), WalError> {
        if !self.sync {
            return Ok(());
        }
        let d = File::open(dir).map_err(|e| WalError::io(dir, "open directory", e))?;
        d.sync_all()
            .map_err(|e| WalError::io(dir, "fsync directory", e))
    }
}

/// Reserves `len` bytes of blocks for the new, empty file `file` (`fallocate`): they read as
/// zeros, and a full disk shows here rather than at a later write. Returns false where the
/// file system cannot (the caller zero-fills instead).
fn reserve_blocks(file: &File, path: &Path, len: u64) -> Result<bool, WalError> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return Ok(false);
    };
    loop {
        // SAFETY: `posix_fallocate` takes no pointers; the descriptor is open for as long as
        // `file` is borrowed, and the call only changes that file's size and block allocation.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        return match r {
            0 => Ok(true),
            // A signal arrived (tmpfs stops for any pending one): try again.
            libc::EINTR => continue,
            libc::EOPNOTSUPP | libc::EINVAL => Ok(false),
            e => Err(WalError::io(
                path,
                "reserve blocks",
                io::Error::from_raw_os_error(e),
            )),
        };
    }
}

/// A second, `O_DIRECT` write handle of `path`, if the file system allows one.
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_writes_the_part_that_fits_then_fails_with_disk_full() {
        let dir = std::env::temp_dir().join(format!("laminar-wal-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let disk = Disk::new(Some(10), true);
        disk.write_at(&f, &path, b"abcdef", 0).unwrap();
        let e = disk.write_at(&f, &path, b"ghijkl", 6).unwrap_err();
        assert!(matches!(e, WalError::DiskFull { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefghij");
        let e = disk.write_at(&f, &path, b"x", 10).unwrap_err();
        assert!(matches!(e, WalError::DiskFull { .. }));
        // Overwriting takes no space.
        disk.write_at(&f, &path, b"XYZ", 2).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abXYZfghij");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
