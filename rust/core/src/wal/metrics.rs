//! Counters of a write-ahead log, read with [`Wal::metrics`](super::Wal::metrics).

use std::time::Duration;

/// Cumulative counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalMetrics {
    /// Records appended.
    pub appends: u64,
    /// Records written to disk (and synced, with `sync`).
    pub records_written: u64,
    /// Payload bytes of the records written.
    pub payload_bytes: u64,
    /// Bytes of the records written including their framing (8 bytes per record).
    pub record_bytes: u64,
    /// Every byte the writer wrote: record frames, end-of-log markers, segment headers.
    pub bytes_written: u64,
    /// Calls to `commit`.
    pub commits: u64,
    /// Groups written (one write plus one sync each, two when a group crosses segments).
    pub groups: u64,
    /// Largest number of records in one group.
    pub max_group_records: u64,
    /// Syncs of segments: `fdatasync` calls, and synchronous direct writes (each makes its
    /// bytes durable by itself).
    pub syncs: u64,
    /// Of those, groups written with one synchronous direct write (`O_DIRECT | O_DSYNC`)
    /// instead of a buffered write and `fdatasync`.
    pub direct_writes: u64,
    /// Time spent in those syncs.
    pub sync_time: Duration,
    /// Times an append waited because the pending buffer was full (the disk fell behind).
    pub append_stalls: u64,
    /// Segments started (spares activated or files created).
    pub segments_created: u64,
    /// Spare files zero-filled ahead of need.
    pub spares_preallocated: u64,
    /// Bytes of zeros written to prepare them.
    pub preallocated_bytes: u64,
    /// Segments released by retention and kept as spares.
    pub segments_recycled: u64,
    /// Segments released by retention and deleted.
    pub segments_deleted: u64,
}

impl WalMetrics {
    /// Average bytes on disk per record (payload plus framing); 0 before the first write.
    pub fn bytes_per_record(&self) -> f64 {
        if self.records_written == 0 {
            0.0
        } else {
            self.record_bytes as f64 / self.records_written as f64
        }
    }
}
