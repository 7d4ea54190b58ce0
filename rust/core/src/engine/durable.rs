//! Durability of an engine: the write-ahead log of its inputs, its checkpoints, and recovery.
//!
//! With a state directory, every input that changes the engine (a push, a lookup-table change, a
//! processing-time tick, the end of input) becomes one record in the WAL (its payload format is
//! `log_record.rs`) *before* it is applied, and the call that made it returns only once the record
//! is durable (group commit: concurrent callers share one `fdatasync`). A checkpoint saves, at one
//! point of that log (its LSN), the progress of every source and the state of every query on every
//! core (a barrier sent to all cores at once: each core's inbox is FIFO, so all of them save the
//! state after the same inputs). Recovery loads the newest complete checkpoint and replays the
//! records after its LSN through the same code paths as live inputs, with the processing time each
//! record carries, so the engine ends where it was, watermarks and open windows included.
//!
//! Invariants:
//! - a record is appended before its input is applied, and acknowledged only when durable;
//! - the pipeline (sources, queries, tables) is fixed before the first input ("sealing"):
//!   recovery runs then, once, and adding a source or query afterwards is refused, because a
//!   replay could not know when it was added;
//! - replay applies records exactly as the live engine did; an input that failed live (an
//!   operator error after it was logged) fails again the same way and is passed over;
//! - a checkpoint's LSN is durable before the checkpoint is written, and WAL segments are
//!   released only after the checkpoint that covers them is complete (manifest renamed), and
//!   only before the *oldest* retained checkpoint, so that the repair falling back to an
//!   older checkpoint finds the log it needs.
//!
//! This module never decides where results go: exactly-once delivery is the sinks' business.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::checkpoint::lock::StateDirLock;
use crate::checkpoint::store::CheckpointStore;
use crate::error::{Error, Result};
use crate::operator::snapshot::{
    decode, decode_batch, decode_batches, encode, encode_batch, encode_batches,
};
use crate::reactor::{CoreMessage, SourceId};
use crate::time::watermark::GeneratorState;
use crate::time::Timestamp;
use crate::wal::{Lsn, RecordBuf, RecoveryMode, Truncation, Wal, WalConfig};

/// Durability settings of an engine.
#[derive(Debug, Clone)]
pub struct DurabilityConfig {
    /// The state directory (created if missing; one engine at a time: a lock file).
    pub state_dir: PathBuf,
    /// Take a checkpoint when this much processing time has passed since the last one
    /// (checked on every push and poll); `None`: only on demand.
    pub checkpoint_every_ms: Option<i64>,
    /// Complete checkpoints kept.
    pub retain_checkpoints: usize,
    /// `fdatasync` every WAL group (the default). `false` leaves durability to the OS page
    /// cache: a process crash loses nothing, a machine crash may.
    pub sync: bool,
    /// How long a WAL group waits for more records before its sync (0: no wait).
    pub group_commit_delay: Duration,
    /// What to do with a damaged log (see [`RecoveryMode`]).
    pub recovery: RecoveryMode,
    /// Fault injection for tests: the log's writes fail with `ENOSPC` once they have grown
    /// its files by this many bytes (see [`WalConfig::disk_budget`]). `None` in production.
    pub disk_budget: Option<u64>,
}

impl DurabilityConfig {
    /// Defaults for `state_dir`: a checkpoint every second, 3 kept, synced group commit.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        DurabilityConfig {
            state_dir: state_dir.into(),
            checkpoint_every_ms: Some(1000),
            retain_checkpoints: 3,
            sync: true,
            group_commit_delay: Duration::ZERO,
            recovery: RecoveryMode::PointInTime,
            disk_budget: None,
        }
    }
}

/// What a checkpoint saves of one source.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) struct SourceSnapshot {
    pub name: String,
    /// The user schema the first push fixed (an empty IPC stream), if any.
    pub schema: Option<Vec<u8>>,
    pub generator: GeneratorState,
    pub ended: bool,
    pub rows: u64,
    pub batches: u64,
    pub dropped_rows: u64,
    pub last_seq: Option<u64>,
}

impl SourceSnapshot {
    /// The saved schema.
    pub fn schema(&self) -> Result<Option<SchemaRef>> {
        self.schema
            .as_deref()
            .map(|b| decode_batches(b, "source schema").map(|(s, _)| s))
            .transpose()
    }

    /// `schema` as saved in a snapshot.
    pub fn encode_schema(schema: &SchemaRef) -> Result<Vec<u8>> {
        encode_batches(schema, &[])
    }
}

/// One change of a lookup table, as the engine keeps it for queries that start later.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) struct TableChange {
    pub replace: bool,
    pub now: Timestamp,
    /// The rows (an IPC stream).
    pub rows: Vec<u8>,
}

/// What a checkpoint saves of one lookup table on the engine's side (the copies inside the
/// queries are saved with the queries): the changes since its last replacement, which
/// rebuild both its key index and what a query starting later receives.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) struct TableSnapshot {
    pub name: String,
    pub changes: Vec<TableChange>,
}

/// A message that a query waiting for its sources' schemas received before it could start
/// (its backlog, replayed to it when it starts): [`CoreMessage`] with the rows as IPC.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) enum SavedMessage {
    Data {
        source: SourceId,
        rows: Vec<u8>,
    },
    Watermark {
        source: SourceId,
        ts: Timestamp,
    },
    SourceIdle {
        source: SourceId,
    },
    EndOfInput {
        source: SourceId,
    },
    Tick {
        now: Timestamp,
    },
    TableUpdate {
        table: String,
        rows: Vec<u8>,
        replace: bool,
        now: Timestamp,
    },
}

impl SavedMessage {
    /// `msg` as saved.
    pub fn save(msg: &CoreMessage) -> Result<Self> {
        Ok(match msg {
            CoreMessage::Data { source, batch } => SavedMessage::Data {
                source: *source,
                rows: encode_batch(batch)?,
            },
            CoreMessage::Watermark { source, ts } => SavedMessage::Watermark {
                source: *source,
                ts: *ts,
            },
            CoreMessage::SourceIdle { source } => SavedMessage::SourceIdle { source: *source },
            CoreMessage::EndOfInput { source } => SavedMessage::EndOfInput { source: *source },
            CoreMessage::Tick { now } => SavedMessage::Tick { now: *now },
            CoreMessage::TableUpdate {
                table,
                rows,
                replace,
                now,
            } => SavedMessage::TableUpdate {
                table: table.to_string(),
                rows: encode_batch(rows)?,
                replace: *replace,
                now: *now,
            },
        })
    }

    /// The message again. A source's rows get `stream_schema(source)`, the schema its live
    /// batches have (`None`: the source has no schema here, the pipeline changed).
    pub fn load(
        self,
        stream_schema: impl Fn(SourceId) -> Option<SchemaRef>,
    ) -> Result<CoreMessage> {
        Ok(match self {
            SavedMessage::Data { source, rows } => {
                let schema = stream_schema(source).ok_or_else(|| {
                    Error::Snapshot(format!(
                        "a saved batch of source {source}, which has no schema here"
                    ))
                })?;
                let batch = decode_batch(&rows, "waiting batch")?;
                CoreMessage::Data {
                    source,
                    batch: RecordBatch::try_new(schema, batch.columns().to_vec())?,
                }
            }
            SavedMessage::Watermark { source, ts } => CoreMessage::Watermark { source, ts },
            SavedMessage::SourceIdle { source } => CoreMessage::SourceIdle { source },
            SavedMessage::EndOfInput { source } => CoreMessage::EndOfInput { source },
            SavedMessage::Tick { now } => CoreMessage::Tick { now },
            SavedMessage::TableUpdate {
                table,
                rows,
                replace,
                now,
            } => CoreMessage::TableUpdate {
                table: std::sync::Arc::from(table.as_str()),
                rows: decode_batch(&rows, "waiting table change")?,
                replace,
                now,
            },
        })
    }
}

/// The backlog of a query waiting for its sources' schemas (input number, message).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) struct QueryBacklog {
    pub query: String,
    pub messages: Vec<(u32, SavedMessage)>,
}

/// A whole engine at one point of its log.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) struct EngineSnapshot {
    /// Format version of this struct.
    pub version: u32,
    /// Every record up to this LSN is in the state below.
    pub lsn: u64,
    pub sources: Vec<SourceSnapshot>,
    /// Query names, in definition order (must match on restore).
    pub queries: Vec<String>,
    /// Sink names, in definition order (must match on restore).
    pub sinks: Vec<String>,
    /// Lookup tables, by name.
    pub tables: Vec<TableSnapshot>,
    /// Per core, per query: the query's state on that core.
    pub cores: Vec<Vec<Vec<u8>>>,
    /// The backlogs of queries still waiting for a source's first batch.
    pub backlogs: Vec<QueryBacklog>,
}

/// Snapshot format version written by this build (3: pending queries' backlogs).
pub(super) const SNAPSHOT_VERSION: u32 = 3;

/// Durability counters, for `metrics()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurabilityMetrics {
    /// Records appended to the WAL by this engine.
    pub records: u64,
    /// Bytes written to the WAL (framing included).
    pub wal_bytes: u64,
    /// WAL syncs (`fdatasync` calls or synchronous direct writes): one per group commit.
    pub wal_syncs: u64,
    /// Of those, synchronous direct writes (`O_DIRECT | O_DSYNC`, see `wal::direct`).
    pub wal_direct_writes: u64,
    /// Last durable LSN.
    pub durable_lsn: u64,
    /// Checkpoints written by this engine.
    pub checkpoints: u64,
    /// Id of the newest complete checkpoint (`None`: none yet).
    pub last_checkpoint: Option<u64>,
    /// How long the last checkpoint took, in seconds.
    pub last_checkpoint_s: f64,
    /// Periodic checkpoints that could not be taken, and why the last one was not.
    pub checkpoints_skipped: u64,
    /// Why the last periodic checkpoint was skipped.
    pub skip_reason: Option<String>,
    /// Checkpoint recovery started from (`None`: none, or not recovered yet).
    pub recovered_checkpoint: Option<u64>,
    /// Records replayed by recovery.
    pub replayed_records: u64,
    /// Replayed records whose input had failed live and failed again (passed over).
    pub replay_failures: u64,
    /// Recovery time in seconds.
    pub recovery_s: f64,
    /// What opening the log cut off (a torn or damaged tail: records never acknowledged, in
    /// the default recovery mode), if anything.
    pub log_cut: Option<String>,
}

/// An engine's log, checkpoints and state-directory lock.
pub(super) struct Durable {
    pub config: DurabilityConfig,
    _lock: StateDirLock,
    pub wal: Wal,
    pub checkpoints: CheckpointStore,
    /// The pipeline is fixed and recovery has run.
    pub sealed: bool,
    /// Processing time of the last checkpoint (or of sealing).
    pub last_checkpoint_at: Timestamp,
    pub next_checkpoint_id: u64,
    /// The tag of this state directory's sink files (see [`crate::sink::epoch_files`]).
    pub lineage: String,
    /// LSNs of the retained checkpoints, oldest first: the log is kept from the oldest.
    retained: std::collections::VecDeque<u64>,
    pub metrics: DurabilityMetrics,
    /// The next record is encoded here (see [`RecordBuf`]: its allocation is reused).
    record: RecordBuf,
}

impl Durable {
    /// Locks `config.state_dir` and opens its log and checkpoint store (nothing is read into
    /// the engine until [`sealed`](Self::sealed)).
    pub fn open(config: DurabilityConfig) -> Result<Self> {
        let lock = StateDirLock::acquire(&config.state_dir)?;
        let wal_config = WalConfig {
            sync: config.sync,
            group_commit_delay: config.group_commit_delay,
            recovery: config.recovery,
            disk_budget: config.disk_budget,
            ..WalConfig::new(config.state_dir.join("wal"))
        };
        let (wal, report) = Wal::open(wal_config)?;
        let log_cut = report.truncation.as_ref().map(describe_cut);
        let checkpoints = CheckpointStore::open(&config.state_dir, config.retain_checkpoints)?;
        let ids = checkpoints.list()?;
        let next_checkpoint_id = ids.last().map_or(1, |id| id + 1);
        let retained = ids
            .iter()
            .filter_map(|&id| checkpoints.read(id).ok())
            .filter_map(|bytes| checkpoint_lsn(&bytes))
            .collect();
        let lineage = lineage(&config.state_dir)?;
        Ok(Durable {
            config,
            _lock: lock,
            wal,
            checkpoints,
            sealed: false,
            last_checkpoint_at: 0,
            next_checkpoint_id,
            lineage,
            retained,
            metrics: DurabilityMetrics {
                log_cut,
                ..DurabilityMetrics::default()
            },
            record: RecordBuf::new(),
        })
    }

    /// Appends the record `encode` writes (into a buffer reused from record to record);
    /// returns its LSN (not yet durable).
    pub fn log(&mut self, encode: impl FnOnce(&mut RecordBuf) -> Result<()>) -> Result<Lsn> {
        encode(&mut self.record)?;
        let lsn = self.wal.append_buf(&mut self.record)?;
        self.metrics.records += 1;
        Ok(lsn)
    }

    /// Waits until `lsn` is durable.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        Ok(self.wal.commit(lsn)?)
    }

    /// Whether a periodic checkpoint is due at processing time `now`.
    pub fn checkpoint_due(&self, now: Timestamp) -> bool {
        self.sealed
            && self
                .config
                .checkpoint_every_ms
                .is_some_and(|every| now.saturating_sub(self.last_checkpoint_at) >= every)
    }

    /// Writes `snapshot` as the next checkpoint (its LSN made durable first), then releases
    /// the log before it. Returns the checkpoint id.
    pub fn write_checkpoint(&mut self, snapshot: &EngineSnapshot, now: Timestamp) -> Result<u64> {
        let started = Instant::now();
        self.wal.commit(snapshot.lsn)?;
        let bytes = encode(snapshot)?;
        let id = self.next_checkpoint_id;
        self.checkpoints.write(id, &bytes)?;
        self.next_checkpoint_id += 1;
        self.retained.push_back(snapshot.lsn);
        while self.retained.len() > self.config.retain_checkpoints.max(1) {
            self.retained.pop_front();
        }
        let oldest = self.retained.front().copied().unwrap_or(snapshot.lsn);
        self.wal.truncate_before(oldest + 1)?;
        self.last_checkpoint_at = now;
        self.metrics.checkpoints += 1;
        self.metrics.last_checkpoint = Some(id);
        self.metrics.last_checkpoint_s = started.elapsed().as_secs_f64();
        Ok(id)
    }

    /// The newest complete checkpoint, decoded.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, EngineSnapshot)>> {
        let Some((id, bytes)) = self.checkpoints.latest()? else {
            return Ok(None);
        };
        let snap: EngineSnapshot = decode(&bytes, &format!("checkpoint {id}"))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(Error::Snapshot(format!(
                "checkpoint {id} has format version {}, this build reads {SNAPSHOT_VERSION}",
                snap.version
            )));
        }
        Ok(Some((id, snap)))
    }

    /// Makes everything logged durable, stops the log's threads and releases the state
    /// directory (the lock goes with `self`).
    pub fn close(self) -> Result<()> {
        Ok(self.wal.close()?)
    }

    /// Counters now.
    pub fn metrics(&self) -> DurabilityMetrics {
        let wal = self.wal.metrics();
        DurabilityMetrics {
            wal_bytes: wal.bytes_written,
            wal_syncs: wal.syncs,
            wal_direct_writes: wal.direct_writes,
            durable_lsn: self.wal.durable_lsn(),
            ..self.metrics.clone()
        }
    }
}

/// The lineage tag of the state directory (`<state_dir>/LINEAGE`, created on first use).
fn lineage(state_dir: &std::path::Path) -> Result<String> {
    let path = state_dir.join("LINEAGE");
    match std::fs::read_to_string(&path) {
        Ok(text) if crate::sink::epoch_files::is_lineage(text.trim()) => Ok(text.trim().to_string()),
        Ok(_) => Err(Error::Snapshot(format!(
            "{} is damaged: it must hold the 16 hex digits that name this state directory's sink files",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tag = crate::sink::epoch_files::new_lineage();
            crate::checkpoint::write_atomically(state_dir, "LINEAGE", tag.as_bytes())?;
            Ok(tag)
        }
        Err(e) => Err(crate::checkpoint::CheckpointError::io(&path, "read", e).into()),
    }
}

/// A cut of the log, in words.
fn describe_cut(t: &Truncation) -> String {
    format!(
        "log cut at segment {} offset {} ({}): that record and {} valid records after it discarded{}",
        t.segment,
        t.offset,
        t.reason,
        t.records_discarded,
        if t.segments_removed.is_empty() {
            String::new()
        } else {
            format!("; later segments removed: {:?}", t.segments_removed)
        }
    )
}

/// What [`repair_state_dir`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct StateDirRepair {
    /// What the log lost (its damaged tail, cut), if anything.
    pub log_cut: Option<String>,
    /// Records left in the log.
    pub log_records: u64,
    /// The checkpoint recovery starts from now (`None`: none; the whole log is replayed).
    pub checkpoint: Option<u64>,
    /// The newest checkpoint (or the manifest) was damaged or missing and was set aside
    /// (renamed `*.damaged-<secs>`, not deleted).
    pub fell_back: bool,
}

/// The documented repair of a state directory an engine refuses to open: cuts the
/// write-ahead log after its last valid record, and if the newest checkpoint (or the
/// manifest) is damaged or missing, falls back to the newest older one that verifies. Run
/// it only after reading the error that asked for it: what it cuts is lost. The directory
/// must not be in use.
pub fn repair_state_dir(state_dir: &std::path::Path) -> Result<StateDirRepair> {
    let _lock = StateDirLock::acquire(state_dir)?;
    let report = crate::wal::repair(&state_dir.join("wal"))?;
    let mut checkpoints = CheckpointStore::open(state_dir, usize::MAX)?;
    let (checkpoint, fell_back) = match checkpoints.latest() {
        Ok(latest) => (latest.map(|(id, _)| id), false),
        Err(_) => (checkpoints.fall_back()?, true),
    };
    Ok(StateDirRepair {
        log_cut: report.truncation.as_ref().map(describe_cut),
        log_records: report.records,
        checkpoint,
        fell_back,
    })
}

/// The LSN a checkpoint covers, read without deserialising its state (`None`: damaged).
fn checkpoint_lsn(bytes: &[u8]) -> Option<u64> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::access::<ArchivedEngineSnapshot, rkyv::rancor::Error>(&aligned)
        .ok()
        .map(|s| s.lsn.to_native())
}
