//! The engine's side of durability: logging each input before applying it, checkpoints, and
//! recovery (the mechanism and its invariants are described in [`super::durable`]).
//!
//! Every input method of the engine is split in two: the public method validates, logs
//! ([`Engine::begin_input`]), applies (an `apply_*` method) and waits for the log
//! ([`Engine::end_input`]); a replay calls the `apply_*` method directly with the logged
//! processing time. Nothing here runs on the per-row path: one log record per call.

use std::time::Instant;

use super::durable::{
    DurabilityConfig, DurabilityMetrics, Durable, EngineSnapshot, QueryBacklog, SavedMessage,
    SourceSnapshot, TableChange, TableSnapshot, SNAPSHOT_VERSION,
};
use super::log_record::{decode_logged, LogRecord, Logged};
use super::{Engine, QueryState};
use crate::crash_point::crash_point;
use crate::error::{Error, Result};
use crate::operator::snapshot::{decode_batches, encode_batch};
use crate::reactor::CoreMessage;
use crate::reactor::SourceId;
use crate::time::Timestamp;
use crate::wal::{Lsn, RecordBuf};

/// What recovery did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryReport {
    /// The checkpoint the state was loaded from (`None`: none; the whole log was replayed).
    pub checkpoint: Option<u64>,
    /// Log records replayed after it.
    pub replayed_records: u64,
    /// Replayed inputs that had failed live and failed again (passed over, as live).
    pub replay_failures: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// What opening the log cut off as torn or damaged, if anything (see
    /// [`DurabilityMetrics::log_cut`]).
    pub log_cut: Option<String>,
}

/// Where a source stands: what a restarted producer needs to know to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    /// Rows applied.
    pub rows: u64,
    /// Batches applied.
    pub batches: u64,
    /// Highest sequence number pushed with (`None`: no push carried one).
    pub last_seq: Option<u64>,
}

impl Engine {
    /// Makes the engine durable in `config.state_dir`: locks it, opens its write-ahead log and
    /// checkpoints. Call it right after creating the engine; the state is read back (recovery)
    /// when the pipeline is complete, at the first push, poll, flush or checkpoint, or at
    /// [`recover`](Self::recover).
    pub fn enable_durability(&mut self, config: DurabilityConfig) -> Result<()> {
        if self.durable.is_some() {
            return Err(Error::InvalidPlan("durability is already enabled".into()));
        }
        if self.sources.iter().any(|s| s.rows > 0 || s.ended) {
            return Err(Error::InvalidPlan(
                "enable durability before pushing any data".into(),
            ));
        }
        if !self.sinks.is_empty() {
            return Err(Error::InvalidPlan(
                "enable durability before adding sinks".into(),
            ));
        }
        self.durable = Some(Box::new(Durable::open(config)?));
        self.sinks.set_durable();
        Ok(())
    }

    /// Whether sources and queries may still be added.
    pub(super) fn check_definable(&self, what: &str) -> Result<()> {
        match &self.durable {
            Some(d) if d.sealed => Err(Error::InvalidPlan(format!(
                "cannot add {what} after data was pushed or polled with a state_dir: define every source, query and table first (a restart replays the log into the same pipeline)"
            ))),
            _ => Ok(()),
        }
    }

    /// Recovers now (if not done yet): loads the newest checkpoint and replays the log after
    /// it. Runs by itself at the first push, poll, flush or checkpoint; call it to learn the
    /// sources' positions before pushing. Without a state directory it does nothing.
    pub fn recover(&mut self) -> Result<RecoveryReport> {
        self.check_open()?;
        self.seal()?;
        let m = self.durability_metrics().unwrap_or_default();
        Ok(RecoveryReport {
            checkpoint: m.recovered_checkpoint,
            replayed_records: m.replayed_records,
            replay_failures: m.replay_failures,
            seconds: m.recovery_s,
            log_cut: m.log_cut,
        })
    }

    /// Fixes the pipeline and runs recovery, once.
    pub(super) fn seal(&mut self) -> Result<()> {
        if self.durable.as_ref().is_none_or(|d| d.sealed) {
            return Ok(());
        }
        let Some(mut d) = self.durable.take() else {
            return Ok(());
        };
        d.sealed = true;
        // While `durable` is out, the replayed inputs are applied without being logged again.
        let result = self.recover_from(&mut d);
        d.last_checkpoint_at = self.clock.now_ms();
        self.durable = Some(d);
        // A state that failed to load must not be built on: refuse everything.
        result.map_err(|e| self.fail(e))
    }

    fn recover_from(&mut self, d: &mut Durable) -> Result<()> {
        let started = Instant::now();
        let mut from: Lsn = 1;
        let mut loaded = None;
        if let Some((id, snap)) = d.latest_checkpoint()? {
            if d.wal.last_lsn() < snap.lsn {
                // The checkpoint was written only after its LSN was synced: a log that ends
                // before it lost synced records, and new ones would reuse their numbers.
                return Err(Error::Snapshot(format!(
                    "the write-ahead log ends at record {} but checkpoint {id} covers up to {}: synced log records were lost (disk damage?); move the state_dir aside and start a new one",
                    d.wal.last_lsn(),
                    snap.lsn
                )));
            }
            from = snap.lsn + 1;
            self.restore_snapshot(snap)?;
            d.metrics.recovered_checkpoint = Some(id);
            loaded = Some(id);
        }
        // Epochs up to the checkpoint are published, later ones discarded: the replay below
        // produces their results again.
        self.recover_sinks(loaded)?;
        let (mut replayed, mut failed) = (0u64, 0u64);
        for record in d.wal.read_from(from)? {
            let (_lsn, bytes) = record?;
            let record = decode_logged(&bytes)?;
            if self.replay(record).is_err() {
                failed += 1;
            }
            replayed += 1;
        }
        self.op_now = None;
        d.metrics.replayed_records = replayed;
        d.metrics.replay_failures = failed;
        d.metrics.recovery_s = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Applies one logged input as the live engine did.
    fn replay(&mut self, record: Logged<'_>) -> Result<()> {
        self.op_now = Some(record.now());
        let record = match record {
            Logged::Push(p) => {
                let batches = p.batches()?;
                return self.push_seq(p.source, &batches, p.seq).map(|_| ());
            }
            Logged::Other(r) => r,
        };
        match record {
            LogRecord::Table {
                name,
                replace,
                data,
                ..
            } => {
                let rows = LogRecord::table_rows(&data)?;
                self.apply_table_update(&name, rows, replace)
            }
            LogRecord::Tick { .. } => self.tick().and_then(|()| self.mark_idle_sources()),
            LogRecord::Idle { .. } => self.mark_idle_sources(),
            LogRecord::Flush { .. } => self.apply_flush(),
        }
    }

    /// Starts an input: freezes processing time for it and, with a state directory, appends
    /// `record(now)` to the log. Returns the record's LSN (`None`: nothing logged).
    pub(super) fn begin_input(
        &mut self,
        record: impl FnOnce(Timestamp, &mut RecordBuf) -> Result<()>,
    ) -> Result<Option<Lsn>> {
        let Some(d) = &mut self.durable else {
            // Live without a log, or a replay (the logged time is already frozen).
            return Ok(None);
        };
        let now = self.clock.now_ms();
        match d.log(|buf| record(now, buf)) {
            Ok(lsn) => {
                self.op_now = Some(now);
                Ok(Some(lsn))
            }
            // The log is poisoned: nothing can be acknowledged any more.
            Err(e @ Error::Wal(_)) => Err(self.fail(e)),
            Err(e) => Err(e),
        }
    }

    /// Ends an input begun with [`begin_input`](Self::begin_input): with `commit`, waits until
    /// its record is durable (it is logged whether or not applying it succeeded: a replay
    /// fails the same way), then takes a checkpoint if one is due. Returns `applied`'s error
    /// first.
    pub(super) fn end_input(
        &mut self,
        lsn: Option<Lsn>,
        commit: bool,
        applied: Result<()>,
    ) -> Result<()> {
        let Some(d) = &self.durable else {
            // No log (sinks may close an epoch), or a replay (which leaves the logged time
            // frozen for the next record).
            applied?;
            return self.close_epoch_if_due();
        };
        let now = self.now();
        self.op_now = None;
        let committed = match lsn {
            Some(lsn) if commit => d.commit(lsn),
            _ => Ok(()),
        };
        let due = d.checkpoint_due(now);
        if let Err(e) = committed {
            // Applied but not durable: the state is ahead of the log (a retry with the same
            // `seq` would be taken as applied), so nothing more may be acknowledged.
            return Err(self.fail(e));
        }
        applied?;
        if due {
            self.periodic_checkpoint(now)?;
        }
        Ok(())
    }

    /// Moves processing time on a poll (periodic emits, idle sources), logged when some
    /// operator or source reads processing time.
    pub(super) fn poll_time(&mut self) -> Result<()> {
        let reads_time = self.ticking
            || self
                .sources
                .iter()
                .any(|s| s.config.idle_timeout_ms.is_some());
        let lsn = if reads_time {
            self.begin_input(|now, buf| LogRecord::Tick { now }.encode_into(buf))?
        } else {
            None
        };
        let applied = self.tick().and_then(|()| self.mark_idle_sources());
        self.end_input(lsn, false, applied)
    }

    /// A due periodic checkpoint. One the pipeline cannot take yet is skipped and counted
    /// (nothing is lost: the log keeps everything since the last one).
    pub(super) fn periodic_checkpoint(&mut self, now: Timestamp) -> Result<()> {
        match self.checkpoint_at(now) {
            Ok(_) => Ok(()),
            Err(Error::Snapshot(reason)) => {
                if let Some(d) = &mut self.durable {
                    d.metrics.checkpoints_skipped += 1;
                    d.metrics.skip_reason = Some(reason);
                    d.last_checkpoint_at = now;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes a checkpoint now: every source's progress and every query's state on every core,
    /// after everything pushed so far. Returns its id. Needs a state directory.
    pub fn checkpoint(&mut self) -> Result<u64> {
        self.check_open()?;
        self.seal()?;
        let now = self.clock.now_ms();
        self.checkpoint_at(now)
    }

    fn checkpoint_at(&mut self, now: Timestamp) -> Result<u64> {
        let Some(d) = &self.durable else {
            return Err(Error::InvalidPlan(
                "checkpoint() needs a state_dir: create the engine with one".into(),
            ));
        };
        let lsn = d.wal.last_lsn();
        let epoch = d.next_checkpoint_id;
        let snapshot = self.take_snapshot(lsn)?;
        // Two-phase commit of the sinks around the checkpoint (see `sinks`): the results
        // before the barrier are staged as epoch `epoch`, published once the checkpoint that
        // covers them is complete.
        self.pre_commit_sinks(epoch)?;
        crash_point("checkpoint.sinks_staged");
        let id = match &mut self.durable {
            Some(d) => d.write_checkpoint(&snapshot, now)?,
            None => return Err(Error::InvalidPlan("checkpoint() needs a state_dir".into())),
        };
        debug_assert_eq!(id, epoch);
        crash_point("checkpoint.written");
        self.commit_sinks(id)?;
        crash_point("checkpoint.sinks_committed");
        Ok(id)
    }

    /// The engine's state after every input up to `lsn`.
    fn take_snapshot(&mut self, lsn: Lsn) -> Result<EngineSnapshot> {
        let mut running: Vec<(u32, String)> = Vec::new();
        let mut backlogs = Vec::new();
        for q in &self.queries {
            match &q.state {
                QueryState::Running { id, .. } => running.push((*id, q.name.clone())),
                // Nothing reached it yet: it has no state, and it is pending again after a
                // restore (its sources' schemas are restored with them).
                QueryState::Pending { backlog } if backlog.is_empty() => {}
                // It waits for another source's first batch: what it received meanwhile is
                // saved, and it waits with it again after a restore.
                QueryState::Pending { backlog } => backlogs.push(QueryBacklog {
                    query: q.name.clone(),
                    messages: backlog
                        .iter()
                        .map(|(input, msg)| Ok((*input as u32, SavedMessage::save(msg)?)))
                        .collect::<Result<_>>()?,
                }),
                QueryState::Failed(_) => {}
            }
        }
        running.sort_unstable();
        let cores = self.cores.snapshot()?;
        let sources = self
            .sources
            .iter()
            .map(|s| {
                Ok(SourceSnapshot {
                    name: s.config.name.clone(),
                    schema: s
                        .bound
                        .as_ref()
                        .map(|b| SourceSnapshot::encode_schema(&b.user))
                        .transpose()?,
                    generator: s.generator.save(),
                    ended: s.ended,
                    rows: s.rows,
                    batches: s.batches,
                    dropped_rows: s.dropped_rows,
                    last_seq: s.last_seq,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EngineSnapshot {
            version: SNAPSHOT_VERSION,
            lsn,
            sources,
            queries: running.into_iter().map(|(_, n)| n).collect(),
            sinks: self.sinks.names(),
            tables: self.save_tables()?,
            cores,
            backlogs,
        })
    }

    /// Loads `snap` into this engine (freshly defined with the same pipeline).
    fn restore_snapshot(&mut self, snap: EngineSnapshot) -> Result<()> {
        let changed = |what: String| {
            Error::Snapshot(format!(
                "{what}: the state_dir was written by a different pipeline; use a new state_dir or the original pipeline"
            ))
        };
        if snap.sources.len() != self.sources.len() {
            return Err(changed(format!(
                "the checkpoint has {} sources, the pipeline {}",
                snap.sources.len(),
                self.sources.len()
            )));
        }
        for (sid, saved) in snap.sources.iter().enumerate() {
            if saved.name != self.sources[sid].config.name {
                return Err(changed(format!(
                    "source {sid} is '{}' in the checkpoint and '{}' here",
                    saved.name, self.sources[sid].config.name
                )));
            }
            let src = &mut self.sources[sid];
            src.generator.load(saved.generator);
            src.ended = saved.ended;
            src.rows = saved.rows;
            src.batches = saved.batches;
            src.dropped_rows = saved.dropped_rows;
            src.last_seq = saved.last_seq;
            if let Some(schema) = saved.schema()? {
                let bound = self.sources[sid].bind(&schema)?;
                self.bind_source(sid as SourceId, bound)?;
            }
        }
        self.restore_tables(snap.tables).map_err(|e| match e {
            Error::InvalidPlan(m) => changed(m),
            other => other,
        })?;
        if snap.sinks != self.sinks.names() {
            return Err(changed(format!(
                "the checkpoint has sinks {:?}, the pipeline {:?}",
                snap.sinks,
                self.sinks.names()
            )));
        }
        // Queries started as their sources were bound above, maybe in another order than in
        // the run that saved them: match them by name.
        let mut ids = Vec::with_capacity(snap.queries.len());
        for name in &snap.queries {
            let id = self
                .query_ids
                .get(name)
                .and_then(|&q| match &self.queries[q].state {
                    QueryState::Running { id, .. } => Some(*id as usize),
                    _ => None,
                })
                .ok_or_else(|| changed(format!("query '{name}' is not running here")))?;
            ids.push(id);
        }
        let running = self
            .queries
            .iter()
            .filter(|q| matches!(q.state, QueryState::Running { .. }))
            .count();
        if running != ids.len() {
            return Err(changed(format!(
                "{running} queries run here, {} were saved",
                ids.len()
            )));
        }
        let mut cores = Vec::with_capacity(snap.cores.len());
        for saved in snap.cores {
            if saved.len() != ids.len() {
                return Err(changed("a core holds another number of queries".into()));
            }
            let mut by_id = vec![Vec::new(); ids.len()];
            for (state, &id) in saved.into_iter().zip(&ids) {
                match by_id.get_mut(id) {
                    Some(slot) => *slot = state,
                    None => return Err(changed("more queries run than were saved".into())),
                }
            }
            cores.push(by_id);
        }
        self.cores.restore(cores)?;
        for saved in snap.backlogs {
            let q = self.query_ids.get(&saved.query).copied();
            let sources = &self.sources;
            let stream = |sid: SourceId| {
                sources
                    .get(sid as usize)
                    .and_then(|s| s.bound.as_ref())
                    .map(|b| b.stream.clone())
            };
            let messages = saved
                .messages
                .into_iter()
                .map(|(input, m)| Ok((input as usize, m.load(stream)?)))
                .collect::<Result<Vec<_>>>()?;
            match q.map(|q| &mut self.queries[q].state) {
                Some(QueryState::Pending { backlog }) => *backlog = messages,
                _ => {
                    return Err(changed(format!(
                        "query '{}' waited for a source's first batch when the checkpoint was taken, but not here",
                        saved.query
                    )))
                }
            }
        }
        Ok(())
    }

    /// Durability counters (`None` without a state directory).
    pub fn durability_metrics(&self) -> Option<DurabilityMetrics> {
        match &self.durable {
            Some(d) => Some(d.metrics()),
            None => self.final_durability.clone(),
        }
    }

    /// Where source `name` stands (after recovery, where the previous run left it).
    pub fn source_position(&mut self, name: &str) -> Result<SourcePosition> {
        self.seal()?;
        let sid = self.source_id(name)?;
        let s = &self.sources[sid as usize];
        Ok(SourcePosition {
            rows: s.rows,
            batches: s.batches,
            last_seq: s.last_seq,
        })
    }

    /// The engine's side of every lookup table (by name).
    fn save_tables(&self) -> Result<Vec<TableSnapshot>> {
        let mut names: Vec<&String> = self.mirrors.keys().collect();
        names.sort_unstable();
        names
            .into_iter()
            .map(|name| {
                let changes = self.mirrors[name]
                    .log
                    .iter()
                    .filter_map(|m| match m {
                        CoreMessage::TableUpdate {
                            rows, replace, now, ..
                        } => Some((rows, *replace, *now)),
                        _ => None,
                    })
                    .map(|(rows, replace, now)| {
                        Ok(TableChange {
                            replace,
                            now,
                            rows: encode_batch(rows)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(TableSnapshot {
                    name: name.clone(),
                    changes,
                })
            })
            .collect()
    }

    /// Rebuilds every lookup table's key index and change log from a checkpoint (the queries'
    /// copies come back with the queries). An `InvalidPlan` error means another pipeline.
    fn restore_tables(&mut self, saved: Vec<TableSnapshot>) -> Result<()> {
        if saved.len() != self.mirrors.len() {
            return Err(Error::InvalidPlan(format!(
                "the checkpoint has {} lookup tables, the pipeline {}",
                saved.len(),
                self.mirrors.len()
            )));
        }
        for table in saved {
            let mirror = self.mirrors.get_mut(&table.name).ok_or_else(|| {
                Error::InvalidPlan(format!("lookup table '{}' is not defined here", table.name))
            })?;
            mirror.index.clear();
            mirror.log.clear();
            for change in table.changes {
                let (_, batches) = decode_batches(&change.rows, "a saved lookup-table change")?;
                let rows = arrow_select::concat::concat_batches(&mirror.def.schema, &batches)
                    .map_err(|_| {
                        Error::InvalidPlan(format!(
                            "lookup table '{}' has another schema than when it was saved",
                            table.name
                        ))
                    })?;
                mirror.record(rows, change.replace, change.now)?;
            }
        }
        Ok(())
    }
}
