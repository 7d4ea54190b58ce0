//! `FileSink`: a query's results as files in a directory, one or more per epoch, published
//! exactly once (the directory protocol is [`super::epoch_files`]).
//!
//! Formats: Parquet (Snappy-compressed), JSON lines (one object per row), and the Arrow IPC
//! stream format (what the callback sink keeps on disk). A file is written while its epoch
//! is open, closed and fsynced at pre-commit, and renamed into the directory at commit; an
//! epoch without rows leaves no file. Readers see only whole, committed files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_json::LineDelimitedWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::epoch_files::{EpochFiles, EpochRecovery, PartName};
use super::output_file::OutputFile;
use super::{Sink, SinkError, SinkMetrics};
use crate::disk_budget::DiskBudget;

/// The file format of a [`FileSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet, Snappy-compressed (`.parquet`).
    Parquet,
    /// JSON lines: one JSON object per row (`.jsonl`).
    JsonLines,
    /// The Arrow IPC stream format (`.arrows`).
    ArrowIpc,
}

impl FileFormat {
    /// The file-name extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::JsonLines => "jsonl",
            FileFormat::ArrowIpc => "arrows",
        }
    }

    /// The format named `name` ("parquet", "jsonl"/"json", "arrow"/"ipc").
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "parquet" => Some(FileFormat::Parquet),
            "jsonl" | "json" | "ndjson" => Some(FileFormat::JsonLines),
            "arrow" | "ipc" | "arrows" => Some(FileFormat::ArrowIpc),
            _ => None,
        }
    }
}

enum Encoder {
    Parquet(ArrowWriter<BufWriter<OutputFile>>),
    Json(LineDelimitedWriter<BufWriter<OutputFile>>),
    Ipc(StreamWriter<BufWriter<OutputFile>>),
}

/// The file being written for the open epoch.
struct OpenFile {
    name: PartName,
    encoder: Encoder,
    rows: u64,
    /// The file's [`OutputFile::disk_full`] flag.
    disk_full: Arc<AtomicBool>,
}

/// Results written to files in a directory (see the module docs).
pub struct FileSink {
    files: EpochFiles,
    format: FileFormat,
    open: Option<OpenFile>,
    /// Rows of each staged file, by epoch (for the counters at commit).
    staged_rows: BTreeMap<u64, u64>,
    metrics: SinkMetrics,
    /// Fault injection: bytes the sink's files may still take (see [`OutputFile`]).
    budget: Option<Arc<DiskBudget>>,
}

impl FileSink {
    /// A sink writing `format` files into `dir` (created if missing), named with `lineage`
    /// (see [`super::epoch_files::new_lineage`]). Takes the directory's lock.
    pub fn open(dir: &Path, format: FileFormat, lineage: &str) -> Result<Self, SinkError> {
        Ok(FileSink {
            files: EpochFiles::open(dir, lineage, format.extension())?,
            format,
            open: None,
            staged_rows: BTreeMap::new(),
            metrics: SinkMetrics::default(),
            budget: None,
        })
    }

    /// Fault injection for tests: the sink's file writes fail with `ENOSPC` once they total
    /// `bytes` (see [`OutputFile`]). `None` (the default) in production.
    pub fn with_disk_budget(mut self, bytes: Option<u64>) -> Self {
        self.budget = bytes.map(|b| Arc::new(DiskBudget::new(b)));
        self
    }

    /// The format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The sink directory.
    pub fn dir(&self) -> &Path {
        self.files.dir()
    }

    /// Committed files of this sink's lineage, oldest epoch first, with their epochs.
    pub fn committed_files(&self) -> Result<Vec<(u64, PathBuf)>, SinkError> {
        Ok(self
            .files
            .committed()?
            .into_iter()
            .map(|(name, path)| (name.epoch, path))
            .collect())
    }

    /// Deletes committed files up to `epoch` (their reader has them).
    pub fn remove_committed(&self, epoch: u64) -> Result<(), SinkError> {
        self.files.remove_committed(epoch)
    }

    fn start(&mut self, epoch: u64, batch: &RecordBatch) -> Result<OpenFile, SinkError> {
        let (file, name) = self.files.create(epoch)?;
        let path = self.files.dir().join(name.file());
        let file = OutputFile::new(file, self.budget.clone());
        let disk_full = file.disk_full();
        let out = BufWriter::with_capacity(1 << 20, file);
        let schema = batch.schema();
        let encoder = match self.format {
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                Encoder::Parquet(
                    ArrowWriter::try_new(out, schema, Some(props))
                        .map_err(|e| format_error(&path, e))?,
                )
            }
            FileFormat::JsonLines => Encoder::Json(LineDelimitedWriter::new(out)),
            FileFormat::ArrowIpc => Encoder::Ipc(
                StreamWriter::try_new(out, &schema).map_err(|e| format_error(&path, e))?,
            ),
        };
        Ok(OpenFile {
            name,
            encoder,
            rows: 0,
            disk_full,
        })
    }
}

fn format_error(path: &Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl OpenFile {
    fn write(&mut self, batch: &RecordBatch, dir: &Path) -> Result<(), SinkError> {
        let path = dir.join(self.name.file());
        let full = &self.disk_full;
        let err = |e: &dyn std::fmt::Display| encoder_error(&path, full, e);
        match &mut self.encoder {
            Encoder::Parquet(w) => w.write(batch).map_err(|e| err(&e))?,
            Encoder::Json(w) => w.write(batch).map_err(|e| err(&e))?,
            Encoder::Ipc(w) => w.write(batch).map_err(|e| err(&e))?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the format (footer, end-of-stream marker) and returns the file.
    fn finish(self, dir: &Path) -> Result<(File, PartName, u64), SinkError> {
        let path = dir.join(self.name.file());
        let full = &self.disk_full;
        let err = |e: &dyn std::fmt::Display| encoder_error(&path, full, e);
        let buffered = match self.encoder {
            Encoder::Parquet(w) => w.into_inner().map_err(|e| err(&e))?,
            Encoder::Json(mut w) => {
                w.finish().map_err(|e| err(&e))?;
                w.into_inner()
            }
            Encoder::Ipc(mut w) => {
                w.finish().map_err(|e| err(&e))?;
                w.into_inner().map_err(|e| err(&e))?
            }
        };
        let file = buffered
            .into_inner()
            .map_err(|e| SinkError::io(&path, "write", e.into_error()))?;
        Ok((file.into_file(), self.name, self.rows))
    }
}

/// An encoder's error: [`SinkError::DiskFull`] when the file saw a full disk underneath
/// (the encoders wrap I/O errors in their own types), else [`SinkError::Format`].
fn encoder_error(path: &Path, disk_full: &AtomicBool, e: &dyn std::fmt::Display) -> SinkError {
    if disk_full.load(Ordering::Acquire) {
        SinkError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        format_error(path, e)
    }
}

impl Sink for FileSink {
    fn write(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<(), SinkError> {
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let open = match self.open.take() {
                Some(open) if open.name.epoch == epoch => open,
                Some(open) => {
                    let found = open.name.epoch;
                    self.open = Some(open);
                    return Err(SinkError::Protocol(format!(
                        "rows for epoch {epoch} while epoch {found} is not pre-committed"
                    )));
                }
                None => self.start(epoch, batch)?,
            };
            let open = self.open.insert(open);
            open.write(batch, self.files.dir())?;
            self.metrics.rows_written += batch.num_rows() as u64;
        }
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.name.epoch != epoch {
            let found = open.name.epoch;
            self.open = Some(open);
            return Err(SinkError::Protocol(format!(
                "pre-commit of epoch {epoch} while epoch {found} is open"
            )));
        }
        let (file, name, rows) = open.finish(self.files.dir())?;
        self.files.stage(file, &name)?;
        *self.staged_rows.entry(name.epoch).or_default() += rows;
        Ok(())
    }

    fn commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        let names = self.files.commit(epoch)?;
        self.metrics.files_committed += names.len() as u64;
        let mut last = None;
        for name in &names {
            if last != Some(name.epoch) {
                self.metrics.epochs_committed += 1;
                last = Some(name.epoch);
            }
        }
        if last.is_some() {
            self.metrics.last_committed_epoch = last;
        }
        let later = self.staged_rows.split_off(&(epoch + 1));
        self.metrics.rows_committed += std::mem::replace(&mut self.staged_rows, later)
            .values()
            .sum::<u64>();
        Ok(())
    }

    fn recover(&mut self, checkpoint: Option<u64>) -> Result<EpochRecovery, SinkError> {
        let r = self.files.recover(checkpoint)?;
        self.metrics.recovered_files += r.committed as u64;
        self.metrics.discarded_files += r.discarded as u64;
        self.metrics.files_committed += r.committed as u64;
        Ok(r)
    }

    fn metrics(&self) -> SinkMetrics {
        self.metrics.clone()
    }

    fn target(&self) -> String {
        self.files.dir().display().to_string()
    }

    fn release(&mut self) {
        // An epoch still open was never pre-committed: it is not part of any checkpoint.
        self.open = None;
        self.files.release();
    }
}
