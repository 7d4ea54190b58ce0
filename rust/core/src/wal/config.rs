//! Configuration of a write-ahead log: [`WalConfig`] and [`RecoveryMode`].

use std::path::PathBuf;
use std::time::Duration;

use super::error::WalError;
use super::record::RECORD_HEADER_LEN;
use super::segment::SEGMENT_HEADER_LEN;

/// What [`Wal::open`](super::Wal::open) does when it finds damage, modelled on RocksDB's
/// `WALRecoveryMode`. In every mode a clean end (an end-of-log marker, a zero-filled
/// preallocated tail, or the end of a file exactly at a record boundary) is not damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Stop at the first invalid record anywhere and open the log at that consistent prefix:
    /// the damaged segment is cut there and every later segment is deleted, all of it listed
    /// in the [`RecoveryReport`](super::RecoveryReport). The default; right for disks with
    /// volatile caches, where any unsynced tail may be torn.
    #[default]
    PointInTime,
    /// Accept (and cut) a torn or garbled tail of the **last** segment only, the damage an
    /// interrupted write leaves; refuse to open, naming segment and offset, on any damage
    /// elsewhere, on a bad segment header, a cut preallocated file or an LSN gap.
    TolerateCorruptedTail,
    /// Refuse to open on any invalid byte in the log, even a torn tail. For tests and for
    /// logs whose every write is known to have completed. Changes nothing on disk.
    AbsoluteConsistency,
}

/// Configuration of a [`Wal`](super::Wal).
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory of the segment files; created if missing. One `Wal` per directory: two
    /// handles on one directory would corrupt it (not enforced).
    pub dir: PathBuf,
    /// Size of a segment file (default 64 MiB). A record larger than a segment gets a segment
    /// of its own size. At least 1 KiB.
    pub segment_bytes: u64,
    /// Largest payload accepted (default 256 MiB): larger appends are refused with
    /// [`WalError::RecordTooLarge`], larger lengths on disk are damage.
    pub max_record_bytes: u32,
    /// Default true: new segments are zero-filled and fsynced ahead of need by a background
    /// preallocator thread, and segments released by retention are recycled as future
    /// segments, so that `fdatasync` never has to update the file's size or block map.
    /// False: each segment is a file that grows with every write.
    pub preallocate: bool,
    /// Default 0: a group is whatever queued while the previous write and sync ran. Above 0,
    /// the writer waits up to this long after the first record of a group for more (or until
    /// 1 MiB is pending) before writing it.
    pub group_commit_delay: Duration,
    /// Default true: one `fdatasync` per group. False: durability off, no sync of any kind
    /// (groups, new segments, directories, recovery's cuts); the OS flushes when it likes.
    /// For tests and "durability off" measurements. Commits then return once the group is
    /// written.
    pub sync: bool,
    /// How damage found at open is handled (default [`RecoveryMode::PointInTime`]).
    pub recovery: RecoveryMode,
    /// Fault injection for tests: the free space of a simulated disk. Once this handle's
    /// files have grown by this many bytes (zero-fill of preallocated segments, appends to
    /// growing ones, headers of new files), writes that would grow a file further fail with
    /// `ENOSPC` after writing what fits, as on a full disk; overwrites inside a file still
    /// work, as they do on a real one. `None` (the default): no limit.
    #[doc(hidden)]
    pub disk_budget: Option<u64>,
}

impl WalConfig {
    /// The defaults, logging into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_record_bytes: 256 << 20,
            preallocate: true,
            group_commit_delay: Duration::ZERO,
            sync: true,
            recovery: RecoveryMode::PointInTime,
            disk_budget: None,
        }
    }

    /// Checks the values; an error names the field.
    pub(crate) fn validate(&self) -> Result<(), WalError> {
        if self.segment_bytes < 1024 {
            return Err(WalError::Config(format!(
                "segment_bytes is {}, it must be at least 1024",
                self.segment_bytes
            )));
        }
        if self.max_record_bytes == 0 {
            return Err(WalError::Config(
                "max_record_bytes is 0, it must be at least 1".into(),
            ));
        }
        if self.max_record_bytes
            > u32::MAX - 2 * RECORD_HEADER_LEN as u32 - SEGMENT_HEADER_LEN as u32
        {
            return Err(WalError::Config(format!(
                "max_record_bytes is {}, at most {} is supported",
                self.max_record_bytes,
                u32::MAX - 2 * RECORD_HEADER_LEN as u32 - SEGMENT_HEADER_LEN as u32
            )));
        }
        Ok(())
    }
}

impl Default for WalConfig {
    /// The defaults, logging into `./wal`.
    fn default() -> Self {
        WalConfig::new("wal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = WalConfig::new("/tmp/x");
        assert_eq!(c.segment_bytes, 64 << 20);
        assert_eq!(c.max_record_bytes, 256 << 20);
        assert!(c.preallocate && c.sync && c.group_commit_delay.is_zero());
        assert_eq!(c.recovery, RecoveryMode::PointInTime);
        assert!(c.disk_budget.is_none());
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.segment_bytes = 1023;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("segment_bytes"));
        let mut bad = c.clone();
        bad.max_record_bytes = u32::MAX;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_record_bytes"));
    }
}
