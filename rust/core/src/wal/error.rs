//! The errors of the write-ahead log, and the description of damage found on disk.
//!
//! Every variant of [`WalError`] names something the caller can act on: which file and which
//! operation failed ([`WalError::Io`]), that the disk is full ([`WalError::DiskFull`]), where
//! the log is damaged and why ([`WalError::Corrupt`], with a [`Damage`]), or that the log can
//! no longer be used ([`WalError::Poisoned`], [`WalError::Closed`]). Nothing in the WAL
//! panics on bytes read from a file: such bytes end up in a [`Damage`].

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::Lsn;

/// What is wrong with the bytes at some offset of a segment file.
///
/// Found while scanning a segment (at open, in [`repair`](super::repair), and while reading
/// with [`Wal::read_from`](super::Wal::read_from)), reported in a
/// [`RecoveryReport`](super::RecoveryReport) when recovery truncated the log, and in
/// [`WalError::Corrupt`] when it refused to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a record: a record header with fewer than 8 bytes left, or a length
    /// that runs past the end of the file. The usual sign of a torn (interrupted) write at the
    /// tail of the log, or of a file that was cut short.
    Truncated {
        /// Bytes the record needed (header plus payload, or just the header).
        needed: u64,
        /// Bytes left in the file from the record's offset.
        available: u64,
    },
    /// The record's checksum does not match its length, segment number and payload.
    BadChecksum,
    /// The length field is 0 with a nonzero checksum (an end-of-log marker is 8 zero bytes), or
    /// larger than the maximum record size: garbage where a record header should be.
    BadLength {
        /// The length read.
        len: u32,
        /// The maximum record size the log was opened with.
        max: u32,
    },
    /// A record left over from the segment this file was recycled from: its checksum matches
    /// that older segment number, not this one. It marks the end of what was written here (an
    /// interrupted write that never reached this offset).
    StaleRecord {
        /// The segment number the file had before it was recycled.
        previous_segment: u64,
    },
    /// The segment header (magic, version, segment number, first LSN, checksum) is unreadable.
    BadHeader {
        /// What is wrong with it.
        detail: String,
    },
    /// A preallocated segment is shorter than the size its header records: the file was cut.
    ShortFile {
        /// The file's length.
        len: u64,
        /// The length it was preallocated to.
        expected: u64,
    },
    /// Consecutive segments do not continue each other's LSNs: records are missing between
    /// them (a segment ends early or a file is missing), or they overlap.
    LsnGap {
        /// The LSN the segment should start at (one past the end of the previous segment).
        expected: Lsn,
        /// The first LSN its header records.
        found: Lsn,
    },
}

impl Damage {
    /// Whether this damage can be what an interrupted (torn) write leaves at the tail of the
    /// log. [`RecoveryMode::TolerateCorruptedTail`](super::RecoveryMode) accepts (truncates)
    /// such damage in the last segment; header damage, short preallocated files and LSN gaps
    /// are never the result of an interrupted write in this format.
    pub fn is_tail_kind(&self) -> bool {
        matches!(
            self,
            Damage::Truncated { .. }
                | Damage::BadChecksum
                | Damage::BadLength { .. }
                | Damage::StaleRecord { .. }
        )
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Truncated { needed, available } => write!(
                f,
                "torn or truncated record: it needs {needed} bytes but the file has {available} left"
            ),
            Damage::BadChecksum => write!(f, "bad checksum"),
            Damage::BadLength { len: 0, .. } => {
                write!(f, "garbage record header: length 0 with a nonzero checksum")
            }
            Damage::BadLength { len, max } => write!(
                f,
                "garbage record length {len} (the maximum record size is {max})"
            ),
            Damage::StaleRecord { previous_segment } => write!(
                f,
                "stale record left from segment {previous_segment} (this file was recycled)"
            ),
            Damage::BadHeader { detail } => write!(f, "bad segment header: {detail}"),
            Damage::ShortFile { len, expected } => write!(
                f,
                "preallocated segment file is {len} bytes, shorter than its {expected} bytes: it was cut"
            ),
            Damage::LsnGap { expected, found } => write!(
                f,
                "LSN discontinuity: the segment should start at LSN {expected} but starts at {found}"
            ),
        }
    }
}

/// Everything that can go wrong with the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("write-ahead log: {op} {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("write", "fdatasync", "open", "rename", ...).
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The disk is full (`ENOSPC`, or the `disk_budget` fault injection ran out). Records not
    /// yet durable when this happened are not acknowledged; the log is poisoned, and reopening
    /// it (after freeing space) recovers exactly the durable prefix.
    #[error(
        "write-ahead log: disk full while writing {}; records not yet committed are lost, \
         free space and reopen the log to recover the committed ones",
        path.display()
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// The log is damaged and the recovery mode does not allow truncating it here.
    #[error(
        "write-ahead log segment {segment} ({}) is corrupt at byte {offset}: {reason}; \
         laminar.repair_state_dir(state_dir) (Rust: `wal::repair`, or opening with \
         RecoveryMode::PointInTime) truncates the log to its last valid record before this point",
        path.display()
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Its segment number.
        segment: u64,
        /// Byte offset in the file where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: Damage,
    },
    /// An append larger than `WalConfig::max_record_bytes`.
    #[error(
        "record of {len} bytes exceeds the write-ahead log's maximum record size of {max} \
         bytes (WalConfig::max_record_bytes)"
    )]
    RecordTooLarge {
        /// The payload's length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
    /// An append of an empty payload: a length of 0 is the log's end-of-log marker.
    #[error("empty records cannot be appended to the write-ahead log (length 0 marks its end)")]
    EmptyRecord,
    /// An earlier write or sync failed; the log accepts nothing more. Reopen it to recover
    /// the durable prefix.
    #[error("write-ahead log is poisoned by an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// The log is being closed.
    #[error("write-ahead log is closed")]
    Closed,
    /// `commit` of an LSN that was never appended.
    #[error("LSN {lsn} was never appended to the write-ahead log (its last LSN is {last})")]
    UnknownLsn {
        /// The LSN asked for.
        lsn: Lsn,
        /// The last appended LSN.
        last: Lsn,
    },
    /// `read_from` an LSN that retention (`truncate_before`) already removed.
    #[error(
        "records from LSN {requested} are no longer in the write-ahead log: its first \
         retained LSN is {first} (older segments were removed by truncate_before)"
    )]
    Unavailable {
        /// The LSN asked for.
        requested: Lsn,
        /// The first LSN the log still holds.
        first: Lsn,
    },
    /// A `WalConfig` value out of range.
    #[error("invalid write-ahead log configuration: {0}")]
    Config(String),
}

impl WalError {
    /// Maps an I/O error on `path` during `op`, turning "no space left" into
    /// [`WalError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        let path = path.into();
        if crate::error::is_disk_full(&source) {
            WalError::DiskFull { path }
        } else {
            WalError::Io { path, op, source }
        }
    }
}
