//! `DirectWrites`: the writer's synchronous, page-aligned writes to a preallocated segment
//! through an `O_DIRECT | O_DSYNC` handle.
//!
//! A group commit through the page cache is a `pwrite` (the kernel copies the bytes into
//! cached pages, allocating the ones it does not hold) and then an `fdatasync` (it writes
//! those pages back and flushes the device cache). With `O_DIRECT | O_DSYNC`, one `pwrite`
//! goes from our buffer to the device and returns once the data is durable. Measured on this
//! machine's disk (`benches/disk_probe.py`, BENCHMARKS.md "Durable ingest"): 1,000 commits of
//! 240 KB into a fresh zero-filled file took 207-221 ms this way against 402-707 ms through
//! the page cache, whose pages for a new segment must first be allocated and zeroed (this VM
//! hands freed memory back to its host, so fresh pages are slow); at 4 commits per write,
//! 116-121 ms against 416-671 ms.
//!
//! `O_DIRECT` wants the buffer address, the file offset and the length aligned to the
//! logical block size (4 KiB covers every common device). So each write starts at the page
//! holding the write position: the bytes of the segment from that page's start up to the
//! position (the *tail*, kept here from the previous write or read back when the segment was
//! opened) are rewritten unchanged, then the frames, the 8-byte end-of-log marker and zeros
//! up to the next page boundary (nothing reads past the marker). The frames are copied once
//! into a reused aligned buffer.
//!
//! Used only where it is sound and simple: preallocated segments (the file never grows; where
//! its blocks are only reserved, `O_DSYNC` also makes the extent conversion durable), syncs on, no fault-injection budget, and a page-aligned end
//! within the segment's capacity. Anywhere else, or after the first `EINVAL` (a file system
//! that refuses `O_DIRECT` alignment, e.g. tmpfs refuses the flag at open), the caller falls
//! back to buffered writes and `fdatasync`. Reads (recovery) go through the page cache, which
//! the kernel keeps coherent with direct writes.
//!
//! This type never decides what goes into the log; it only writes what the writer gives it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::error::WalError;
use super::record::RECORD_HEADER_LEN;

/// The alignment of direct writes (offset, length and buffer address).
pub(crate) const DIRECT_PAGE: u64 = 4096;

/// The direct handle of one preallocated segment and the bytes it needs to stay aligned.
#[derive(Debug)]
pub(crate) struct DirectWrites {
    file: File,
    /// The segment's bytes from the start of the page holding the write position up to it.
    tail: Vec<u8>,
    /// Storage of the aligned write buffer (over-allocated by one page; reused).
    buf: Vec<u8>,
}

impl DirectWrites {
    /// A direct handle for the segment at `path` whose next byte goes at `offset`, reading
    /// the tail (the bytes before `offset` in its page) through `file`. `None` where the file
    /// system refuses `O_DIRECT` or the read fails: the caller writes through the page cache.
    pub(crate) fn open(path: &Path, file: &File, offset: u64) -> Option<DirectWrites> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .ok()?;
        let page_start = offset - offset % DIRECT_PAGE;
        let mut tail = vec![0u8; (offset - page_start) as usize];
        file.read_exact_at(&mut tail, page_start).ok()?;
        Some(DirectWrites {
            file: direct,
            tail,
            buf: Vec::new(),
        })
    }

    /// Where a write of `len` frame bytes at `offset` ends: after the end-of-log marker,
    /// rounded up to the next page boundary.
    pub(crate) fn end_of(offset: u64, len: u64) -> u64 {
        (offset + len + RECORD_HEADER_LEN as u64).next_multiple_of(DIRECT_PAGE)
    }

    /// Writes `frames`, one after the other, at `offset` (the write position, `tail.len()` bytes into its page),
    /// then the end-of-log marker and zeros up to the next page boundary, durably, and
    /// returns the offset after those zeros. `None`: nothing was written (the boundary lies
    /// beyond `capacity`, or the file system refused the alignment), and the caller must
    /// write this and every later group of the segment through the page cache: the tail
    /// kept here would be stale after a write it did not make.
    pub(crate) fn write(
        &mut self,
        path: &Path,
        offset: u64,
        frames: &[Vec<u8>],
        capacity: u64,
    ) -> Result<Option<u64>, WalError> {
        let page_start = offset - self.tail.len() as u64;
        debug_assert_eq!(page_start % DIRECT_PAGE, 0);
        let len: usize = frames.iter().map(Vec::len).sum();
        let data_end = offset + len as u64;
        let end = Self::end_of(offset, len as u64);
        if end > capacity {
            return Ok(None);
        }
        let n = (end - page_start) as usize;
        let align = DIRECT_PAGE as usize;
        if self.buf.len() < n + align {
            self.buf = vec![0u8; n + align];
        }
        let at = self.buf.as_ptr().align_offset(align);
        if at >= align {
            return Ok(None);
        }
        let out = &mut self.buf[at..at + n];
        let mut filled = self.tail.len();
        out[..filled].copy_from_slice(&self.tail);
        for f in frames {
            out[filled..filled + f.len()].copy_from_slice(f);
            filled += f.len();
        }
        out[filled..].fill(0); // the end marker is 8 zero bytes
        if let Err(e) = self.file.write_all_at(out, page_start) {
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(None);
            }
            return Err(WalError::io(path, "write", e));
        }
        // The next write starts at `data_end`, inside the last page written.
        let last_page = data_end - data_end % DIRECT_PAGE;
        self.tail.clear();
        self.tail.extend_from_slice(
            &out[(last_page - page_start) as usize..(data_end - page_start) as usize],
        );
        Ok(Some(end))
    }
}
