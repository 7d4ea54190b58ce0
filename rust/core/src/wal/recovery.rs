//! Recovery: scanning the segments of a log directory, deciding by [`RecoveryMode`] what to do
//! with damage, and cutting the log back to its last valid record (the repair).
//!
//! # The scan
//!
//! Segments are scanned in number order. In each, records are read and checked one after
//! the other from the header on, until a clean end (the end-of-log marker, or the end of the
//! file exactly at a record boundary) or damage ([`Damage`]). Between segments, the next
//! segment's first LSN must continue the previous segment's last (else
//! [`Damage::LsnGap`]): this is what catches a segment that ends early or a missing file.
//! The first damage found is *the cut*: the log's consistent prefix ends there.
//!
//! # The modes
//!
//! * [`RecoveryMode::PointInTime`]: cut there; every later segment is deleted.
//! * [`RecoveryMode::TolerateCorruptedTail`]: cut only if the damage is in the last segment,
//!   is of a kind an interrupted write leaves ([`Damage::is_tail_kind`]), and is not followed
//!   by a valid record (a damaged record followed by a valid one is mid-log damage, not a torn
//!   tail); otherwise refuse with [`WalError::Corrupt`].
//! * [`RecoveryMode::AbsoluteConsistency`]: any damage is [`WalError::Corrupt`].
//!
//! # The cut
//!
//! A growing segment is truncated at the cut. A preallocated one is zero-filled from the cut
//! to its end (re-extended first if it was cut short), so that after the repair nothing past
//! the end-of-log marker can be mistaken for a record of this segment should a later write
//! lose its marker. Later segments are deleted; the directory is synced.
//!
//! # Invariants
//!
//! * Only [`RecoveryMode::PointInTime`] and the tolerated tail change data on disk, and only
//!   after the whole directory has been scanned; what they discard is reported
//!   ([`Truncation`]), never silently dropped.
//! * Temporary files (`*.tmp`, never live) are deleted in every mode.
//! * No file content can make the scan panic, loop, or allocate more than the file holds.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::config::{RecoveryMode, WalConfig};
use super::error::{Damage, WalError};
use super::io::{Disk, ZERO_CHUNK};
use super::record::{self, Header, RECORD_HEADER_LEN};
use super::segment::{self, FileKind, SegmentHeader, SegmentInfo, SEGMENT_HEADER_LEN};
use super::Lsn;

/// What [`Wal::open`](super::Wal::open) or [`repair`] found, and what it cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The mode the log was recovered with.
    pub mode: RecoveryMode,
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Valid records in the log after recovery.
    pub records: u64,
    /// LSN of the first record in the log (one past `last_lsn` when it is empty).
    pub first_lsn: Lsn,
    /// LSN of the last valid record (0 for a log that never had one).
    pub last_lsn: Lsn,
    /// Where and why the log was cut, when it was. `None`: the log was clean.
    pub truncation: Option<Truncation>,
    /// Leftover temporary files (interrupted segment creation) that were deleted.
    pub temp_files_removed: usize,
}

impl RecoveryReport {
    /// True when nothing was cut.
    pub fn is_clean(&self) -> bool {
        self.truncation.is_none()
    }
}

/// A cut made by recovery: the log now ends just before `offset` of segment `segment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment where the damage was found.
    pub segment: u64,
    /// Its file.
    pub path: PathBuf,
    /// Byte offset of the damage in that file; 0 when the whole segment was removed (bad
    /// header, LSN gap).
    pub offset: u64,
    /// What the damage was: torn tail ([`Damage::Truncated`]), bad checksum, garbage length,
    /// stale recycled record, bad header, cut file, LSN gap.
    pub reason: Damage,
    /// Bytes after the cut, in the cut segment (for a preallocated segment this includes its
    /// unused, zero-filled space) and in the removed segments.
    pub bytes_discarded: u64,
    /// Later segments deleted because they follow the cut.
    pub segments_removed: Vec<u64>,
    /// Valid records in the removed segments (records lost with them). Valid-looking records
    /// after the damage inside the cut segment itself are not counted.
    pub records_discarded: u64,
}

/// The result of scanning one segment.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    pub header: SegmentHeader,
    pub file_len: u64,
    /// Valid records before the stop.
    pub records: u64,
    /// Offset just past the last valid record.
    pub end: u64,
    /// `None`: clean end; else the damage at `end`.
    pub damage: Option<Damage>,
    /// The damaged record had a plausible length and a valid record follows it.
    pub followed_by_valid: bool,
}

/// Scans segment file `path`, which by its name is segment `segment`. `Ok(Err(d))`: its
/// header is unreadable. I/O errors are errors.
pub(crate) fn scan_segment(
    path: &Path,
    segment: u64,
    max_len: u32,
) -> Result<Result<Scan, Damage>, WalError> {
    let file = File::open(path).map_err(|e| WalError::io(path, "open", e))?;
    let file_len = file
        .metadata()
        .map_err(|e| WalError::io(path, "stat", e))?
        .len();
    let mut head = vec![0u8; SEGMENT_HEADER_LEN.min(file_len) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| WalError::io(path, "read", e))?;
    let header = match SegmentHeader::decode(&head) {
        Ok(h) => h,
        Err(d) => return Ok(Err(d)),
    };
    if header.segment != segment {
        return Ok(Err(Damage::BadHeader {
            detail: format!(
                "the header says segment {} but the file is named as segment {segment}",
                header.segment
            ),
        }));
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    r.seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
        .map_err(|e| WalError::io(path, "seek", e))?;
    let mut off = SEGMENT_HEADER_LEN;
    let mut records = 0u64;
    let mut payload = Vec::new();
    let read = |r: &mut BufReader<File>, buf: &mut [u8]| {
        r.read_exact(buf).map_err(|e| WalError::io(path, "read", e))
    };
    let (damage, followed_by_valid) = loop {
        let left = file_len - off;
        if left == 0 {
            if header.preallocated && file_len < header.capacity {
                break (
                    Some(Damage::ShortFile {
                        len: file_len,
                        expected: header.capacity,
                    }),
                    false,
                );
            }
            break (None, false);
        }
        if left < RECORD_HEADER_LEN as u64 {
            break (
                Some(Damage::Truncated {
                    needed: RECORD_HEADER_LEN as u64,
                    available: left,
                }),
                false,
            );
        }
        let mut h = [0u8; RECORD_HEADER_LEN];
        read(&mut r, &mut h)?;
        let (len, crc) = match record::parse_header(h, max_len) {
            Ok(Header::End) => break (None, false),
            Ok(Header::Record { len, crc }) => (len, crc),
            Err(d) => break (Some(d), false),
        };
        let frame = RECORD_HEADER_LEN as u64 + u64::from(len);
        if frame > left {
            break (
                Some(Damage::Truncated {
                    needed: frame,
                    available: left,
                }),
                false,
            );
        }
        payload.resize(len as usize, 0);
        read(&mut r, &mut payload)?;
        match record::verify(segment, crc, &payload, header.previous_segment) {
            Ok(()) => {
                records += 1;
                off += frame;
            }
            Err(d) => {
                // Is the next frame a valid record? Then this is mid-log damage.
                let next = off + frame;
                let valid_next = probe_record(&mut r, file_len - next, segment, max_len, path)?;
                break (Some(d), valid_next);
            }
        }
    };
    Ok(Ok(Scan {
        header,
        file_len,
        records,
        end: off,
        damage,
        followed_by_valid,
    }))
}

/// Whether a valid record of segment `segment` starts at the reader's position.
fn probe_record(
    r: &mut BufReader<File>,
    left: u64,
    segment: u64,
    max_len: u32,
    path: &Path,
) -> Result<bool, WalError> {
    if left < RECORD_HEADER_LEN as u64 {
        return Ok(false);
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    r.read_exact(&mut h)
        .map_err(|e| WalError::io(path, "read", e))?;
    let Ok(Header::Record { len, crc }) = record::parse_header(h, max_len) else {
        return Ok(false);
    };
    if RECORD_HEADER_LEN as u64 + u64::from(len) > left {
        return Ok(false);
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(|e| WalError::io(path, "read", e))?;
    Ok(record::verify(segment, crc, &payload, None).is_ok())
}

/// The log directory after recovery, ready for a writer.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub report: RecoveryReport,
    /// Live segments, in order; the last is where appends continue.
    pub segments: Vec<SegmentInfo>,
    /// Offset just past the last valid record of the last segment.
    pub tail_offset: u64,
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// Highest segment number seen anywhere (segments, removed segments, spares' headers).
    pub max_segment: u64,
    /// Spare files: (id, path, length).
    pub spares: Vec<(u64, PathBuf, u64)>,
}

struct Cut {
    index: usize,
    offset: u64,
    damage: Damage,
}

/// Scans `dir` and recovers it with `mode` (see the module docs). The directory must exist.
pub(crate) fn recover(
    dir: &Path,
    mode: RecoveryMode,
    max_len: u32,
    disk: &Disk,
) -> Result<Recovered, WalError> {
    let mut segs: Vec<(u64, PathBuf)> = Vec::new();
    let mut spares = Vec::new();
    let mut temp_files_removed = 0;
    let entries = fs::read_dir(dir).map_err(|e| WalError::io(dir, "list directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io(dir, "list directory", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match segment::classify(name) {
            Some(FileKind::Segment(n)) => segs.push((n, entry.path())),
            Some(FileKind::Spare(id)) => spares.push((id, entry.path())),
            Some(FileKind::Temp) => {
                segment::remove(&entry.path())?;
                temp_files_removed += 1;
            }
            None => {}
        }
    }
    segs.sort_unstable_by_key(|s| s.0);
    spares.sort_unstable_by_key(|s| s.0);

    let mut max_segment = segs.last().map_or(0, |s| s.0);
    let mut spare_info = Vec::with_capacity(spares.len());
    for (id, path) in spares {
        // A recycled spare still holds records of its old segment number: new segments must
        // be numbered above it.
        let f = File::open(&path).map_err(|e| WalError::io(&path, "open", e))?;
        let len = f
            .metadata()
            .map_err(|e| WalError::io(&path, "stat", e))?
            .len();
        let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
        if f.read_exact_at(&mut head, 0).is_ok() {
            if let Ok(h) = SegmentHeader::decode(&head) {
                max_segment = max_segment.max(h.segment);
            }
        }
        spare_info.push((id, path, len));
    }

    // Scan until the first damage.
    let mut scans: Vec<Scan> = Vec::with_capacity(segs.len());
    let mut cut: Option<Cut> = None;
    let mut expected: Option<Lsn> = None;
    let mut lowest_known_lsn: Option<Lsn> = None;
    for (i, (n, path)) in segs.iter().enumerate() {
        let scan = match scan_segment(path, *n, max_len)? {
            Ok(s) => s,
            Err(damage) => {
                cut = Some(Cut {
                    index: i,
                    offset: 0,
                    damage,
                });
                break;
            }
        };
        lowest_known_lsn.get_or_insert(scan.header.first_lsn);
        if let Some(exp) = expected {
            if scan.header.first_lsn != exp {
                cut = Some(Cut {
                    index: i,
                    offset: 0,
                    damage: Damage::LsnGap {
                        expected: exp,
                        found: scan.header.first_lsn,
                    },
                });
                break;
            }
        }
        expected = Some(scan.header.first_lsn + scan.records);
        if let Some(damage) = scan.damage.clone() {
            cut = Some(Cut {
                index: i,
                offset: scan.end,
                damage,
            });
            scans.push(scan);
            break;
        }
        scans.push(scan);
    }
    let segments_scanned = scans.len() + usize::from(cut.as_ref().is_some_and(|c| c.offset == 0));

    let mut truncation = None;
    if let Some(c) = cut {
        let (segment, path) = segs[c.index].clone();
        let last = c.index + 1 == segs.len();
        let followed = c.offset > 0 && scans.get(c.index).is_some_and(|s| s.followed_by_valid);
        let allowed = match mode {
            RecoveryMode::PointInTime => true,
            RecoveryMode::TolerateCorruptedTail => {
                last && c.offset > 0 && c.damage.is_tail_kind() && !followed
            }
            RecoveryMode::AbsoluteConsistency => false,
        };
        if !allowed {
            return Err(WalError::Corrupt {
                path,
                segment,
                offset: c.offset,
                reason: c.damage,
            });
        }
        let mut t = Truncation {
            segment,
            path: path.clone(),
            offset: c.offset,
            reason: c.damage,
            bytes_discarded: 0,
            segments_removed: Vec::new(),
            records_discarded: 0,
        };
        // Count what the removed segments held, for the report, before deleting them.
        let first_removed = if c.offset == 0 { c.index } else { c.index + 1 };
        for (n, p) in &segs[first_removed..] {
            t.bytes_discarded += segment::file_len(p)?;
            if let Ok(s) = scan_segment(p, *n, max_len)? {
                t.records_discarded += s.records;
            }
        }
        if c.offset > 0 {
            let s = &scans[c.index];
            t.bytes_discarded += cut_segment(disk, &path, s, c.offset)?;
        } else {
            scans.truncate(c.index);
        }
        // Newest first: a crash in the middle leaves no gap, and the next open finishes it.
        for (n, p) in segs[first_removed..].iter().rev() {
            segment::remove(p)?;
            t.segments_removed.push(*n);
        }
        t.segments_removed.reverse();
        disk.sync_dir(dir)?;
        truncation = Some(t);
    }

    let segments: Vec<SegmentInfo> = scans
        .iter()
        .zip(&segs)
        .map(|(s, (n, p))| SegmentInfo {
            segment: *n,
            first_lsn: s.header.first_lsn,
            path: p.clone(),
            capacity: s.header.capacity,
            preallocated: s.header.preallocated,
        })
        .collect();
    let (tail_offset, next_lsn) = match scans.last() {
        Some(s) => (s.end, s.header.first_lsn + s.records),
        // Everything was removed (or the log is new): continue from the first LSN the log
        // was known to start at, else 1.
        None => (SEGMENT_HEADER_LEN, lowest_known_lsn.unwrap_or(1)),
    };
    let records: u64 = scans.iter().map(|s| s.records).sum();
    let first_lsn = segments.first().map_or(next_lsn, |s| s.first_lsn);
    Ok(Recovered {
        report: RecoveryReport {
            mode,
            segments_scanned,
            records,
            first_lsn,
            last_lsn: next_lsn - 1,
            truncation,
            temp_files_removed,
        },
        segments,
        tail_offset,
        next_lsn,
        max_segment,
        spares: spare_info,
    })
}

/// Cuts segment `path` at `offset` (see the module docs); returns the bytes discarded.
fn cut_segment(disk: &Disk, path: &Path, scan: &Scan, offset: u64) -> Result<u64, WalError> {
    let f = segment::open_rw(path)?;
    let discarded = scan.file_len.saturating_sub(offset);
    if scan.header.preallocated {
        let end = scan.file_len.max(scan.header.capacity);
        if scan.file_len < end {
            f.set_len(end)
                .map_err(|e| WalError::io(path, "extend", e))?;
        }
        let zeros = vec![0u8; ZERO_CHUNK];
        disk.zero_fill(&f, path, &zeros, offset, end)?;
    } else {
        f.set_len(offset)
            .map_err(|e| WalError::io(path, "truncate", e))?;
    }
    disk.sync_all(&f, path)?;
    Ok(discarded)
}

/// Offline repair of the log in `dir` with the default maximum record size: cuts it to its
/// last valid record exactly as [`RecoveryMode::PointInTime`] does at open (damaged tail cut,
/// later segments deleted), and reports what it cut. The documented way out of a
/// [`WalError::Corrupt`] refusal. A clean log is left as it is.
pub fn repair(dir: &Path) -> Result<RecoveryReport, WalError> {
    repair_with(&WalConfig::new(dir))
}

/// [`repair`] of `config.dir` with `config.max_record_bytes` (the mode is always
/// point-in-time; the other fields are not used).
pub fn repair_with(config: &WalConfig) -> Result<RecoveryReport, WalError> {
    config.validate()?;
    if !config.dir.is_dir() {
        return Err(WalError::io(
            &config.dir,
            "open directory",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let disk = Disk::new(None, true);
    recover(
        &config.dir,
        RecoveryMode::PointInTime,
        config.max_record_bytes,
        &disk,
    )
    .map(|r| r.report)
}
