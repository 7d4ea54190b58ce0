//! Segment files: naming, the segment header, creation (preallocated or growing), spares,
//! activation, recycling and deletion.
//!
//! The log is a directory of segment files, `{number:020}.wal`, so that names sort by
//! number. Each starts with a [`SEGMENT_HEADER_LEN`]-byte header, then records
//! (see [`super::record`]):
//!
//! ```text
//! 0..8    magic "LAMNRWAL"          40..48  capacity u64 (preallocated size, or size limit)
//! 8..12   format version u32 (1)    48..60  zero
//! 12..16  flags u32 (bit 0: preallocated)
//! 16..24  segment number u64        60..64  masked crc32c of bytes 0..60
//! 24..32  first LSN u64
//! 32..40  previous segment number u64 (0: none; set when the file was recycled)
//! ```
//!
//! The LSN of a record is the header's first LSN plus the number of records before it in the
//! file, so LSNs cost no bytes per record.
//!
//! *Spares* (`{id:020}.spare`) are files ready to become the next segment: zero-filled to
//! the segment size and fsynced ahead of need, or old segments recycled by retention. A spare
//! becomes a segment by writing a fresh header plus an end-of-log marker at offset 0,
//! `fdatasync`, rename, directory `fsync` (`activate_spare`). Temporary files (`*.tmp`) are
//! never live: a crash leaves them behind and the next open deletes them.
//!
//! # Invariants
//!
//! * A file named `*.wal` always has a valid, durable header and an end-of-log marker (or
//!   records) after it: both are written and synced *before* the rename that makes the name,
//!   and the directory is synced before any record is written to the new segment (otherwise a
//!   crash could lose the name of a segment holding acknowledged records).
//! * A new segment is numbered above every segment number present in the directory,
//!   including the numbers recycled spares had, so no file holding records of that number
//!   exists: a record's checksum (which covers the segment number) can only match in the
//!   segment it was written to.
//! * A preallocated segment's length equals its header's capacity; a shorter file was cut.
//! * Nothing here panics on file contents: headers decode to a [`Damage`] when unreadable.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Damage, WalError};
use super::io::{Disk, ZeroChunk};
use super::record::{self, END_MARKER, RECORD_HEADER_LEN};
use super::Lsn;

/// Bytes of the segment header at the start of every segment file.
pub const SEGMENT_HEADER_LEN: u64 = 64;

const MAGIC: [u8; 8] = *b"LAMNRWAL";
const VERSION: u32 = 1;
const FLAG_PREALLOCATED: u32 = 1;

/// The file name of segment `segment`: 20 digits, so names sort by number.
pub fn segment_file_name(segment: u64) -> String {
    format!("{segment:020}.wal")
}

pub(crate) fn spare_file_name(id: u64) -> String {
    format!("{id:020}.spare")
}

/// What a directory entry is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Spare(u64),
    Temp,
}

fn parse_number(stem: &str) -> Option<u64> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Classifies a directory entry; `None` for files that are not the WAL's.
pub(crate) fn classify(name: &str) -> Option<FileKind> {
    if name.ends_with(".tmp") {
        return Some(FileKind::Temp);
    }
    if let Some(stem) = name.strip_suffix(".wal") {
        return parse_number(stem).map(FileKind::Segment);
    }
    if let Some(stem) = name.strip_suffix(".spare") {
        return parse_number(stem).map(FileKind::Spare);
    }
    None
}

/// The header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment number (also in the file name and in every record's checksum).
    pub segment: u64,
    /// LSN of the first record in the segment.
    pub first_lsn: Lsn,
    /// The file was zero-filled to `capacity` before use.
    pub preallocated: bool,
    /// Preallocated: the file's length. Growing: the most bytes the writer puts in it.
    pub capacity: u64,
    /// The segment number the file had before it was recycled, if it was.
    pub previous_segment: Option<u64>,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.preallocated {
            FLAG_PREALLOCATED
        } else {
            0
        };
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.previous_segment.unwrap_or(0).to_le_bytes());
        b[40..48].copy_from_slice(&self.capacity.to_le_bytes());
        let crc = record::mask(crc32c::crc32c(&b[..60]));
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header (`bytes` may be shorter than a header: that is damage).
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, Damage> {
        let bad = |detail: String| Damage::BadHeader { detail };
        let Some(b) = bytes.first_chunk::<{ SEGMENT_HEADER_LEN as usize }>() else {
            return Err(bad(format!(
                "the file has {} bytes, fewer than the {SEGMENT_HEADER_LEN}-byte header",
                bytes.len()
            )));
        };
        if b[0..8] != MAGIC {
            return Err(bad("wrong magic (not a laminar WAL segment)".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let stored = u32_at(60);
        if record::mask(crc32c::crc32c(&b[..60])) != stored {
            return Err(bad("header checksum mismatch".into()));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads version {VERSION}"
            )));
        }
        let h = SegmentHeader {
            preallocated: u32_at(12) & FLAG_PREALLOCATED != 0,
            segment: u64_at(16),
            first_lsn: u64_at(24),
            previous_segment: Some(u64_at(32)).filter(|&p| p != 0),
            capacity: u64_at(40),
        };
        if h.segment == 0 || h.first_lsn == 0 {
            return Err(bad("segment number or first LSN is 0".into()));
        }
        Ok(h)
    }
}

/// A live segment, as the catalogue knows it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub segment: u64,
    pub first_lsn: Lsn,
    pub path: PathBuf,
    pub capacity: u64,
    pub preallocated: bool,
}

pub(crate) fn open_rw(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| WalError::io(path, "open", e))
}

fn create_new(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| WalError::io(path, "create", e))
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), WalError> {
    fs::rename(from, to).map_err(|e| WalError::io(from, "rename", e))
}

pub(crate) fn remove(path: &Path) -> Result<(), WalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WalError::io(path, "delete", e)),
    }
}

/// Creates spare `id` of `len` bytes: zero-filled through a temporary file, fsynced, renamed
/// into place, directory synced. `stop` is polled between chunks; when it says so, the
/// temporary file is deleted and `Ok(None)` returned.
pub(crate) fn prepare_spare(
    disk: &Disk,
    dir: &Path,
    id: u64,
    len: u64,
    zeros: &ZeroChunk,
    stop: &dyn Fn() -> bool,
) -> Result<Option<PathBuf>, WalError> {
    let tmp = dir.join(format!("{}.tmp", spare_file_name(id)));
    let result = (|| {
        let f = create_new(&tmp)?;
        if !disk.fill_new_file(&f, &tmp, zeros, len, stop)? {
            return Ok(None);
        }
        disk.sync_all(&f, &tmp)?;
        let path = dir.join(spare_file_name(id));
        rename(&tmp, &path)?;
        disk.sync_dir(dir)?;
        Ok(Some(path))
    })();
    if !matches!(result, Ok(Some(_))) {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Length of a file.
pub(crate) fn file_len(path: &Path) -> Result<u64, WalError> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| WalError::io(path, "stat", e))
}

/// Makes spare `spare` segment `segment` starting at `first_lsn`: header plus end marker at
/// offset 0, `fdatasync`, rename to the segment name, directory `fsync`.
pub(crate) fn activate_spare(
    disk: &Disk,
    dir: &Path,
    spare: &Path,
    segment: u64,
    first_lsn: Lsn,
) -> Result<(File, SegmentInfo), WalError> {
    let f = open_rw(spare)?;
    let capacity = f
        .metadata()
        .map_err(|e| WalError::io(spare, "stat", e))?
        .len();
    // The number this file had before (if it is a recycled segment), so that its leftover
    // records can be reported as stale rather than as damage.
    let mut old = [0u8; SEGMENT_HEADER_LEN as usize];
    let previous_segment = match f.read_exact_at(&mut old, 0) {
        Ok(()) => SegmentHeader::decode(&old).ok().map(|h| h.segment),
        Err(_) => None,
    };
    let header = SegmentHeader {
        segment,
        first_lsn,
        preallocated: true,
        capacity,
        previous_segment,
    };
    let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN as usize + RECORD_HEADER_LEN);
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(&END_MARKER);
    disk.write_at(&f, spare, &head, 0)?;
    disk.sync_data(&f, spare)?;
    let path = dir.join(segment_file_name(segment));
    rename(spare, &path)?;
    disk.sync_dir(dir)?;
    Ok((
        f,
        SegmentInfo {
            segment,
            first_lsn,
            path,
            capacity,
            preallocated: true,
        },
    ))
}

/// Creates segment `segment` as a growing file (not preallocated) that the writer fills up
/// to `capacity` bytes: header plus end marker through a temporary file, fsync, rename,
/// directory fsync.
pub(crate) fn create_growing(
    disk: &Disk,
    dir: &Path,
    segment: u64,
    first_lsn: Lsn,
    capacity: u64,
) -> Result<(File, SegmentInfo), WalError> {
    let path = dir.join(segment_file_name(segment));
    let tmp = dir.join(format!("{}.tmp", segment_file_name(segment)));
    let header = SegmentHeader {
        segment,
        first_lsn,
        preallocated: false,
        capacity,
        previous_segment: None,
    };
    let result = (|| {
        let f = create_new(&tmp)?;
        let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN as usize + RECORD_HEADER_LEN);
        head.extend_from_slice(&header.encode());
        head.extend_from_slice(&END_MARKER);
        disk.write_at(&f, &tmp, &head, 0)?;
        disk.sync_all(&f, &tmp)?;
        rename(&tmp, &path)?;
        disk.sync_dir(dir)?;
        Ok(f)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok((
        result?,
        SegmentInfo {
            segment,
            first_lsn,
            path,
            capacity,
            preallocated: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_number_and_classify() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(
            classify("00000000000000000042.wal"),
            Some(FileKind::Segment(42))
        );
        assert_eq!(
            classify("00000000000000000007.spare"),
            Some(FileKind::Spare(7))
        );
        assert_eq!(
            classify("00000000000000000007.spare.tmp"),
            Some(FileKind::Temp)
        );
        assert_eq!(classify("42.wal"), None);
        assert_eq!(classify("notes.txt"), None);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            segment: 42,
            first_lsn: 1000,
            preallocated: true,
            capacity: 1 << 26,
            previous_segment: Some(7),
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..b.len() * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            // Bytes 48..60 are reserved zeros but still under the checksum.
            assert!(
                SegmentHeader::decode(&c).is_err(),
                "flip of bit {i} accepted"
            );
        }
        assert!(SegmentHeader::decode(&b[..63]).is_err());
        assert!(SegmentHeader::decode(&[0u8; 64]).is_err());
    }
}
