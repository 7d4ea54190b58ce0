//! The write-ahead log of engine inputs.
//!
//! Inputs are appended to the log and made durable *before* they are acknowledged to the
//! caller; after a crash the engine replays the log from the LSN its last checkpoint covers.
//! A [`Wal`] is a directory of segment files written by one writer thread with group commit
//! (one `fdatasync` per group of records, shared by every thread waiting on it).
//!
//! ```
//! use laminar_core::wal::{Wal, WalConfig};
//! # let dir = std::env::temp_dir().join(format!("laminar-wal-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut config = WalConfig::new(&dir);
//! config.segment_bytes = 1 << 20;
//! let (wal, report) = Wal::open(config.clone())?;
//! assert!(report.is_clean());
//! let lsn = wal.append(b"batch 1")?;   // buffered, numbered
//! wal.commit(lsn)?;                     // durable (written + fdatasync)
//! wal.close()?;
//!
//! let (wal, report) = Wal::open(config)?; // recovery scan
//! assert_eq!(report.last_lsn, lsn);
//! let replay: Vec<_> = wal.read_from(1)?.collect::<Result<_, _>>()?;
//! assert_eq!(replay, vec![(lsn, b"batch 1".to_vec())]);
//! # wal.close()?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), laminar_core::wal::WalError>(())
//! ```
//!
//! # What it owns
//!
//! * **Segment files** `{number:020}.wal` in one directory ([`segment`]): a 64-byte header
//!   (magic, version, segment number, first LSN, capacity, CRC) then records. Records are
//!   numbered by their position: LSN = the header's first LSN + records before it, so LSNs
//!   are consecutive across segments (1, 2, 3, ...).
//! * **Records** ([`record`]): `[len u32 LE][crc u32 LE][payload]`, the checksum a masked
//!   crc32c over length ‖ segment number ‖ payload. 8 bytes of framing per record.
//! * **Spares** `{id:020}.spare`: segment-sized files prepared and fsynced ahead of need by a
//!   preallocator thread (blocks reserved with `fallocate`; zero-filled where that is refused
//!   or under the fault-injection budget), or old segments recycled by retention. A segment
//!   that never changes size needs no size update through the journal at a sync: measured on
//!   this machine, 2-4x more group commits per second than a growing file.
//! * **Direct writes** (`direct.rs`): with syncs on, each group goes to a preallocated
//!   segment as one synchronous `O_DIRECT | O_DSYNC` write from an aligned buffer (falling
//!   back to `pwrite` + `fdatasync` where the file system refuses): no copy into, and no
//!   fresh pages of, the page cache, which on this VM cost more than the disk write itself.
//! * **Two threads** per `Wal`: the writer (`writer.rs`: group commit) and the preallocator.
//!
//! # Invariants
//!
//! 1. An LSN returned by [`Wal::commit`] without error is on disk (with `sync`, after an
//!    `fdatasync` that covered it), and will be recovered by every later [`Wal::open`]
//!    unless the storage itself loses or corrupts synced data.
//! 2. The log's end is explicit: a length of 0 (8 zero bytes) is the end-of-log marker,
//!    written after every group and found in a zero-filled preallocated tail; a frame that
//!    is not a valid record for *this* segment (checksum over length and segment number,
//!    length capped by `max_record_bytes`) is damage, never a record. A record left in a
//!    recycled segment fails under the new segment number.
//! 3. Recovery (`recovery.rs`) finds the first damage and, per [`RecoveryMode`], cuts the log
//!    there and reports exactly what it cut ([`RecoveryReport`]), or refuses with
//!    [`WalError::Corrupt`] naming the segment, the offset and the reason. After a cut, the
//!    log continues with the next LSN after the last valid record.
//! 4. The first failed write or sync (a full disk included) poisons the log: nothing after
//!    the last durable LSN is acknowledged, and every later append or commit of a
//!    non-durable LSN fails. Reopening recovers the durable prefix.
//!
//! # What it must never do
//!
//! * Acknowledge a record before its group's `fdatasync` returned (with `sync`).
//! * Return a record that is not byte-for-byte what was appended under that LSN, or skip one
//!   silently: damage is an error or a reported cut.
//! * Panic, loop or allocate without bound on file contents: every length is checked against
//!   the maximum record size and the file's size before it is used.
//! * Hold its lock during I/O, or give a new segment the number of a file that still holds
//!   records.
//!
//! # Costs (see `benches/wal.rs`)
//!
//! Per record: 8 bytes of framing, one crc32c of the payload (about 0.25 µs per 4 KiB) and
//! one joining it with the length and segment number (`crc_combine`, under a microsecond),
//! one copy of the payload ([`Wal::append`]; none with [`Wal::append_buf`], whose buffer is
//! queued as it is). Per group: one copy of its frames into the aligned buffer and one
//! synchronous direct write (~0.2 ms for 240 KB here, with a multi-ms tail), or a `pwrite`
//! and an `fdatasync`. Per segment: a header write, `fdatasync`, rename and directory
//! `fsync`, plus (on the preallocator) reserving its blocks. Opening scans the whole
//! retained log sequentially: keep it short with [`Wal::truncate_before`] after checkpoints.
//!
//! # Limits
//!
//! * One `Wal` per directory (not enforced: no file lock in std at the supported Rust).
//! * With `preallocate` off, a segment file cut exactly at a record boundary in the last
//!   segment is indistinguishable from a clean end (in earlier segments the LSN continuity
//!   check catches it; preallocated segments record their size and catch it).
//! * After a cut, the LSNs of the discarded records are given to new records: compare
//!   [`RecoveryReport::last_lsn`] with the LSN the last checkpoint covers.

mod config;
mod crc_combine;
mod direct;
mod error;
mod io;
mod log;
mod metrics;
mod reader;
pub mod record;
mod record_buf;
mod recovery;
pub mod segment;
mod writer;

pub use config::{RecoveryMode, WalConfig};
pub use error::{Damage, WalError};
pub use log::{CommitHandle, Wal};
pub use metrics::WalMetrics;
pub use reader::WalReader;
pub use record_buf::RecordBuf;
pub use recovery::{repair, repair_with, RecoveryReport, Truncation};

/// Log sequence number: records are numbered 1, 2, 3, ... consecutively across segments.
/// 0 means "no record".
pub type Lsn = u64;
