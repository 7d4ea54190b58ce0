//! `EpochQueue`: committed epochs waiting for a consumer that takes them itself (the Python
//! callback sink).
//!
//! The consumer calls [`EpochQueue::oldest`] for the oldest committed epoch it has not
//! acknowledged, applies it, then [`EpochQueue::acknowledge`]s it. With a directory the epochs
//! are Arrow IPC files kept by a [`FileSink`] (staged, then committed with their checkpoint);
//! an acknowledged epoch's files are deleted. An epoch committed but not acknowledged when the
//! process dies is handed out again after recovery, with the same id and the same rows: the
//! consumer makes its effect idempotent by remembering the ids it applied. Without a
//! directory (no state directory) the epochs are kept in memory and die with the process, like
//! everything else in such an engine.

use std::collections::{BTreeMap, VecDeque};

use arrow_array::RecordBatch;

use super::epoch_files::EpochRecovery;
use super::{FileFormat, FileSink, Sink, SinkError, SinkMetrics};
use crate::operator::snapshot::decode_batches;

enum Store {
    /// Committed epochs are IPC files in a directory. `maybe_ready` is false once a listing
    /// found none and nothing was committed since: the consumer asks after every call into the
    /// engine, and the directory is not listed each time.
    Files {
        sink: Box<FileSink>,
        maybe_ready: bool,
    },
    /// In memory: the open epoch's rows, staged epochs, committed epochs.
    Memory {
        open: Vec<RecordBatch>,
        staged: BTreeMap<u64, Vec<RecordBatch>>,
        committed: VecDeque<(u64, Vec<RecordBatch>)>,
        metrics: SinkMetrics,
    },
}

/// Committed epochs for a consumer (see the module docs).
pub struct EpochQueue {
    store: Store,
}

impl EpochQueue {
    /// Epochs kept in files by `files` (an [`FileFormat::ArrowIpc`] sink).
    pub fn in_files(files: FileSink) -> Result<Self, SinkError> {
        if files.format() != FileFormat::ArrowIpc {
            return Err(SinkError::Protocol(
                "an epoch queue keeps Arrow IPC files".into(),
            ));
        }
        Ok(EpochQueue {
            store: Store::Files {
                sink: Box::new(files),
                maybe_ready: true,
            },
        })
    }

    /// Epochs kept in memory.
    pub fn in_memory() -> Self {
        EpochQueue {
            store: Store::Memory {
                open: Vec::new(),
                staged: BTreeMap::new(),
                committed: VecDeque::new(),
                metrics: SinkMetrics::default(),
            },
        }
    }

    /// The oldest committed epoch not acknowledged yet: its id and rows.
    pub fn oldest(&mut self) -> Result<Option<(u64, Vec<RecordBatch>)>, SinkError> {
        match &mut self.store {
            Store::Memory { committed, .. } => Ok(committed.front().cloned()),
            Store::Files { maybe_ready, .. } if !*maybe_ready => Ok(None),
            Store::Files { sink, maybe_ready } => {
                let committed = sink.committed_files()?;
                let Some(&(epoch, _)) = committed.first() else {
                    *maybe_ready = false;
                    return Ok(None);
                };
                let mut rows = Vec::new();
                for (_, path) in committed.iter().take_while(|(e, _)| *e == epoch) {
                    let bytes = std::fs::read(path).map_err(|e| SinkError::io(path, "read", e))?;
                    let (_, batches) =
                        decode_batches(&bytes, "a committed epoch").map_err(|e| {
                            SinkError::Corrupt {
                                path: path.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                    rows.extend(batches);
                }
                Ok(Some((epoch, rows)))
            }
        }
    }

    /// Forgets every committed epoch up to `epoch` (the consumer applied them).
    pub fn acknowledge(&mut self, epoch: u64) -> Result<(), SinkError> {
        match &mut self.store {
            Store::Memory { committed, .. } => {
                while committed.front().is_some_and(|(e, _)| *e <= epoch) {
                    committed.pop_front();
                }
                Ok(())
            }
            Store::Files { sink, .. } => sink.remove_committed(epoch),
        }
    }
}

impl Sink for EpochQueue {
    fn write(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<(), SinkError> {
        match &mut self.store {
            Store::Files { sink, .. } => sink.write(epoch, batches),
            Store::Memory { open, metrics, .. } => {
                for b in batches.iter().filter(|b| b.num_rows() > 0) {
                    metrics.rows_written += b.num_rows() as u64;
                    open.push(b.clone());
                }
                Ok(())
            }
        }
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        match &mut self.store {
            Store::Files { sink, .. } => sink.pre_commit(epoch),
            Store::Memory { open, staged, .. } => {
                if !open.is_empty() {
                    staged.entry(epoch).or_default().append(open);
                }
                Ok(())
            }
        }
    }

    fn commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        match &mut self.store {
            Store::Files { sink, maybe_ready } => {
                *maybe_ready = true;
                sink.commit(epoch)
            }
            Store::Memory {
                staged,
                committed,
                metrics,
                ..
            } => {
                let later = staged.split_off(&(epoch + 1));
                for (e, rows) in std::mem::replace(staged, later) {
                    metrics.epochs_committed += 1;
                    metrics.last_committed_epoch = Some(e);
                    metrics.rows_committed += rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                    committed.push_back((e, rows));
                }
                Ok(())
            }
        }
    }

    fn recover(&mut self, checkpoint: Option<u64>) -> Result<EpochRecovery, SinkError> {
        match &mut self.store {
            Store::Files { sink, maybe_ready } => {
                *maybe_ready = true;
                sink.recover(checkpoint)
            }
            Store::Memory { .. } => Ok(EpochRecovery::default()),
        }
    }

    fn metrics(&self) -> SinkMetrics {
        match &self.store {
            Store::Files { sink, .. } => sink.metrics(),
            Store::Memory { metrics, .. } => metrics.clone(),
        }
    }

    fn target(&self) -> String {
        "callback".into()
    }

    fn release(&mut self) {
        if let Store::Files { sink, .. } = &mut self.store {
            sink.release();
        }
    }

    fn deliveries(&mut self) -> Option<&mut EpochQueue> {
        Some(self)
    }
}
