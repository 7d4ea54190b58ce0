//! Exactly-once sinks: where a query's results go, one checkpoint epoch at a time.
//!
//! An **epoch** is the run of results between two checkpoints: epoch `n` holds every result
//! produced before checkpoint `n`'s barrier and after checkpoint `n - 1`'s. The engine hands a
//! sink each epoch's rows ([`Sink::write`]) and then runs a two-phase commit around the
//! checkpoint:
//!
//! 1. [`Sink::pre_commit`]`(n)` — after the barrier, before checkpoint `n` is written: the
//!    sink makes epoch `n`'s rows durable where they can later be published, but publishes
//!    nothing;
//! 2. checkpoint `n` is written (its manifest renamed): from here on epoch `n` *is* committed,
//!    whatever happens;
//! 3. [`Sink::commit`]`(n)` — publishes epoch `n` (and any earlier epoch still staged).
//!
//! After a crash, recovery loads checkpoint `c` and calls [`Sink::recover`]`(c)` before it
//! replays the log: epochs up to `c` that were staged but not published are published now;
//! later ones are discarded, because replaying the log after `c` produces their rows again.
//! So every result reaches the published output once: no duplicate, no gap.
//!
//! Without a state directory there is no checkpoint and no recovery: the engine closes an
//! epoch on its own (periodically, at `flush` and at `close`) and runs both phases at once.
//!
//! Sinks here:
//! - [`file::FileSink`] — Parquet, JSON lines or Arrow IPC files in a directory, staged and
//!   renamed into place ([`epoch_files`] owns the directory protocol);
//! - [`delivery::EpochQueue`] — committed epochs kept (on disk with a state directory) until
//!   a consumer takes them and acknowledges them: the Python callback sink. An epoch not yet
//!   acknowledged when the process dies is handed out again after recovery, with the same
//!   epoch id and the same rows, so a consumer that records the ids it has applied is
//!   exactly-once.
//!
//! Sinks never see processing order across queries and never call back into the engine; they
//! run on the engine's thread at epoch boundaries, not on the per-row path.

pub mod delivery;
pub mod epoch_files;
pub mod error;
pub mod file;
pub mod output_file;

use arrow_array::RecordBatch;

pub use delivery::EpochQueue;
pub use epoch_files::EpochRecovery;
pub use error::SinkError;
pub use file::{FileFormat, FileSink};

/// Counters of one sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkMetrics {
    /// Rows handed to the sink.
    pub rows_written: u64,
    /// Rows published (committed epochs) by this engine.
    pub rows_committed: u64,
    /// Epochs with rows published by this engine (recovery included).
    pub epochs_committed: u64,
    /// Files published by this engine (recovery included).
    pub files_committed: u64,
    /// The newest epoch published (`None`: none yet).
    pub last_committed_epoch: Option<u64>,
    /// Staged files recovery published (their checkpoint was complete).
    pub recovered_files: u64,
    /// Staged files recovery discarded (their rows are produced again by the replay).
    pub discarded_files: u64,
}

/// A destination of one query's results with exactly-once epochs (see the module docs).
/// The engine calls, for each epoch `n` in increasing order: `write(n, ..)` any number of
/// times, `pre_commit(n)`, then `commit(n)` once checkpoint `n` is complete. A failed
/// checkpoint leaves `n` staged; the next attempt writes more rows for the same `n`.
pub trait Sink: Send {
    /// Adds rows to epoch `epoch` (not visible to readers yet).
    fn write(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<(), SinkError>;
    /// Phase one: makes epoch `epoch`'s rows durable, ready to publish.
    fn pre_commit(&mut self, epoch: u64) -> Result<(), SinkError>;
    /// Phase two: publishes every staged epoch up to `epoch`. Idempotent.
    fn commit(&mut self, epoch: u64) -> Result<(), SinkError>;
    /// At recovery from checkpoint `checkpoint` (`None`: none), before the log is replayed:
    /// publishes staged epochs up to it and discards later ones.
    fn recover(&mut self, checkpoint: Option<u64>) -> Result<EpochRecovery, SinkError>;
    /// Counters now.
    fn metrics(&self) -> SinkMetrics;
    /// What it writes to: a directory, or "callback".
    fn target(&self) -> String;
    /// The engine closed: release the destination (a directory lock) for another engine.
    /// Committed epochs of a delivery sink stay readable.
    fn release(&mut self) {}
    /// The queue of committed epochs, for a sink whose consumer takes them itself.
    fn deliveries(&mut self) -> Option<&mut EpochQueue> {
        None
    }
}
