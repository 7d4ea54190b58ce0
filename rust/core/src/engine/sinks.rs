//! The engine's sinks: which query feeds which sink, and when an epoch closes.
//!
//! A query attached to sinks hands all its results to them instead of to
//! [`Engine::take_output`]. The engine drains those results only at epoch boundaries, where
//! every core has been synchronised (so an epoch holds exactly the results of the inputs before
//! its boundary), and runs the sinks' two-phase commit (see [`crate::sink`]):
//!
//! - **with a state directory**, an epoch is a checkpoint: `checkpoint_at` drains the results
//!   after the barrier into epoch `n` (the id the checkpoint will get), pre-commits every sink,
//!   writes checkpoint `n`, then commits; recovery calls every sink's `recover` with the
//!   checkpoint it loaded, before the log is replayed; `flush` and `close` take a checkpoint so
//!   that the last results are published;
//! - **without one**, the engine closes an epoch itself: at the first input after
//!   `commit_every_ms`, at `flush` and at `close`, running both phases at once.
//!
//! A sink that fails leaves the engine closed: the rows it had taken may be lost to it, and an
//! epoch must never be published without them. With a state directory a new engine on it
//! recovers them from the last checkpoint and the log.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use super::{Engine, Outbox};
use crate::error::{Error, Result};
use crate::sink::{EpochQueue, FileFormat, FileSink, Sink, SinkMetrics};
use crate::time::Timestamp;

/// Where an engine's sinks stand.
#[derive(Default)]
pub(super) struct Sinks {
    entries: Vec<SinkEntry>,
    /// Epochs are checkpoints (the engine has a state directory).
    durable: bool,
    /// Without a state directory: the open epoch, when it opened, and how long it stays open.
    epoch: u64,
    opened_at: Option<Timestamp>,
    every_ms: Option<i64>,
    /// Lineage tag of this engine's sink files without a state directory.
    lineage: Option<String>,
    /// A sink failed: nothing more is written or published.
    failed: bool,
}

struct SinkEntry {
    name: String,
    query: String,
    sink: Box<dyn Sink>,
}

/// One sink, for `metrics()`.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkReport {
    /// The sink's name.
    pub name: String,
    /// The query feeding it.
    pub query: String,
    /// What it writes to (a directory, or "callback").
    pub target: String,
    /// Its counters.
    pub metrics: SinkMetrics,
}

impl Sinks {
    pub fn new(every_ms: Option<i64>) -> Self {
        Sinks {
            epoch: 1,
            every_ms,
            ..Sinks::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn set_durable(&mut self) {
        self.durable = true;
    }

    /// Nothing more is written or published (the engine failed).
    pub fn stop(&mut self) {
        self.failed = true;
    }

    /// The sink fed by `query`, if any.
    pub fn feeding(&self, query: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.query == query)
            .map(|e| e.name.as_str())
    }

    /// Sink names in definition order (saved in checkpoints).
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }
}

/// A directory name for sink `name` (anything but ASCII letters, digits, `-` and `_` escaped).
fn dir_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Engine {
    /// Sends the results of query `query` to `sink` (named `name`) instead of
    /// [`take_output`](Self::take_output), one exactly-once epoch at a time (see
    /// [`crate::sink`]). Define sinks before the first push, after
    /// [`enable_durability`](Self::enable_durability).
    pub fn add_sink(&mut self, name: &str, query: &str, sink: Box<dyn Sink>) -> Result<()> {
        self.check_open()?;
        self.check_definable("a sink")?;
        if !self.query_ids.contains_key(query) {
            return Err(Error::InvalidPlan(format!(
                "unknown query '{query}': add the query before its sink"
            )));
        }
        if self.sinks.entries.iter().any(|e| e.name == name) {
            return Err(Error::Duplicate {
                kind: "sink",
                name: name.to_string(),
            });
        }
        self.sinks.entries.push(SinkEntry {
            name: name.to_string(),
            query: query.to_string(),
            sink,
        });
        Ok(())
    }

    /// Writes the results of `query` as `format` files into `dir` (see
    /// [`FileSink`]); the sink is named `name`. `disk_budget` is fault injection for tests
    /// ([`FileSink::with_disk_budget`]); `None` in production.
    pub fn add_file_sink(
        &mut self,
        name: &str,
        query: &str,
        dir: &Path,
        format: FileFormat,
        disk_budget: Option<u64>,
    ) -> Result<()> {
        self.check_open()?;
        let sink = FileSink::open(dir, format, &self.lineage())?.with_disk_budget(disk_budget);
        self.add_sink(name, query, Box::new(sink))
    }

    /// Keeps the committed epochs of `query`'s results for a consumer that takes them with
    /// [`sink_next`](Self::sink_next) and [`sink_acknowledge`](Self::sink_acknowledge) (the
    /// Python callback sink). With a state directory they are kept in
    /// `<state_dir>/sinks/<name>` until acknowledged, across restarts.
    pub fn add_delivery_sink(&mut self, name: &str, query: &str) -> Result<()> {
        self.check_open()?;
        let queue = match self.durable.as_ref().map(|d| d.config.state_dir.clone()) {
            Some(state_dir) => {
                let dir: PathBuf = state_dir.join("sinks").join(dir_name(name));
                EpochQueue::in_files(FileSink::open(&dir, FileFormat::ArrowIpc, &self.lineage())?)?
            }
            None => EpochQueue::in_memory(),
        };
        self.add_sink(name, query, Box::new(queue))
    }

    /// The oldest committed epoch of delivery sink `name` not acknowledged yet.
    pub fn sink_next(&mut self, name: &str) -> Result<Option<(u64, Vec<RecordBatch>)>> {
        Ok(self.delivery(name)?.oldest()?)
    }

    /// Acknowledges every epoch of delivery sink `name` up to `epoch`: they are not handed
    /// out again.
    pub fn sink_acknowledge(&mut self, name: &str, epoch: u64) -> Result<()> {
        Ok(self.delivery(name)?.acknowledge(epoch)?)
    }

    /// Counters of every sink.
    pub fn sink_reports(&self) -> Vec<SinkReport> {
        self.sinks
            .entries
            .iter()
            .map(|e| SinkReport {
                name: e.name.clone(),
                query: e.query.clone(),
                target: e.sink.target(),
                metrics: e.sink.metrics(),
            })
            .collect()
    }

    fn delivery(&mut self, name: &str) -> Result<&mut EpochQueue> {
        let entry = self
            .sinks
            .entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::InvalidPlan(format!("unknown sink '{name}'")))?;
        entry.sink.deliveries().ok_or_else(|| {
            Error::InvalidPlan(format!(
                "sink '{name}' writes files; only a callback sink hands out epochs"
            ))
        })
    }

    /// The lineage tag of this engine's sink files: the state directory's, else one of its
    /// own.
    fn lineage(&mut self) -> String {
        if let Some(d) = &self.durable {
            return d.lineage.clone();
        }
        self.sinks
            .lineage
            .get_or_insert_with(crate::sink::epoch_files::new_lineage)
            .clone()
    }

    /// Hands the results of every sink's query gathered so far to the sinks, as epoch `epoch`.
    fn drain_sinks(&mut self, epoch: u64) -> Result<()> {
        for i in 0..self.sinks.entries.len() {
            let query = self.sinks.entries[i].query.clone();
            if self.sinks.entries[..i].iter().any(|e| e.query == query) {
                continue; // drained with the first sink of this query
            }
            let batches = match self.take_rows(&query, Outbox::Results) {
                Ok(Some((_, batches))) => batches,
                // Pending (no rows yet), or failed to start (none ever; its state says why).
                Ok(None) | Err(Error::InvalidPlan(_)) => continue,
                Err(e) => return Err(e),
            };
            for e in self.sinks.entries.iter_mut().filter(|e| e.query == query) {
                e.sink.write(epoch, &batches)?;
            }
        }
        Ok(())
    }

    /// Phase one for epoch `epoch`: its results into every sink, staged durably.
    pub(super) fn pre_commit_sinks(&mut self, epoch: u64) -> Result<()> {
        if self.sinks.is_empty() {
            return Ok(());
        }
        if self.sinks.failed {
            return Err(Error::Closed("a sink failed earlier".into()));
        }
        let staged = self.drain_sinks(epoch).and_then(|()| {
            for e in &mut self.sinks.entries {
                e.sink.pre_commit(epoch)?;
            }
            Ok(())
        });
        staged.map_err(|e| self.sink_failed(e))
    }

    /// Phase two: publishes every staged epoch up to `epoch`.
    pub(super) fn commit_sinks(&mut self, epoch: u64) -> Result<()> {
        let mut result = Ok(());
        for e in &mut self.sinks.entries {
            if let Err(err) = e.sink.commit(epoch) {
                result = result.and(Err(err.into()));
            }
        }
        result.map_err(|e| self.sink_failed(e))
    }

    /// At recovery from `checkpoint`, before the replay.
    pub(super) fn recover_sinks(&mut self, checkpoint: Option<u64>) -> Result<()> {
        for e in &mut self.sinks.entries {
            e.sink.recover(checkpoint)?;
        }
        Ok(())
    }

    /// Without a state directory: closes the open epoch if it is due.
    pub(super) fn close_epoch_if_due(&mut self) -> Result<()> {
        if self.sinks.durable || self.sinks.is_empty() || self.sinks.failed {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let opened = *self.sinks.opened_at.get_or_insert(now);
        match self.sinks.every_ms {
            Some(every) if now.saturating_sub(opened) >= every => self.close_epoch(),
            _ => Ok(()),
        }
    }

    /// Publishes the results so far: a checkpoint with a state directory (one the pipeline
    /// cannot take is skipped and counted), else the open epoch closed at once. For `flush`
    /// and `close`.
    pub(super) fn publish_sinks(&mut self) -> Result<()> {
        if self.sinks.is_empty() || self.sinks.failed {
            return Ok(());
        }
        match &self.durable {
            Some(d) if d.sealed => {
                let now = self.clock.now_ms();
                self.periodic_checkpoint(now)
            }
            Some(_) => Ok(()),
            None if self.sinks.durable => Ok(()),
            None => self.close_epoch(),
        }
    }

    /// Without a state directory: both phases for the open epoch, then a new one opens.
    fn close_epoch(&mut self) -> Result<()> {
        let epoch = self.sinks.epoch;
        self.pre_commit_sinks(epoch)?;
        self.commit_sinks(epoch)?;
        self.sinks.epoch += 1;
        self.sinks.opened_at = Some(self.clock.now_ms());
        Ok(())
    }

    /// At `close`: every sink lets go of its destination.
    pub(super) fn release_sinks(&mut self) {
        for e in &mut self.sinks.entries {
            e.sink.release();
        }
    }

    /// A sink failed: the engine closes (see the module docs) and `e` is returned.
    fn sink_failed(&mut self, e: Error) -> Error {
        self.fail(e)
    }
}

#[cfg(test)]
mod tests {
    use super::dir_name;

    #[test]
    fn sink_directory_names_are_escaped() {
        assert_eq!(dir_name("per_sec-1"), "per_sec-1");
        assert_eq!(dir_name("../x y"), "%2E%2E%2Fx%20y");
    }
}
