//! The one error type of the engine core.
//!
//! Every fallible public function in `laminar-core` returns [`Result<T>`]. Each variant names
//! what went wrong in terms the user can act on (the column, the source, the expected type);
//! the Python bindings map each [`ErrorKind`] onto a specific exception class. Nothing in the
//! core panics on input a user or a file can influence: such input ends up here.

use arrow_schema::ArrowError;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A column named by the user (in a query, a key, the time column) does not exist.
    #[error("column '{column}' not found{context}; available columns: [{available}]")]
    ColumnNotFound {
        /// The missing column.
        column: String,
        /// Where it was referenced, e.g. " in source 'trades'".
        context: String,
        /// Comma-separated names of the columns that do exist.
        available: String,
    },
    /// A column exists but has a type the operation cannot use.
    #[error("column '{column}' has type {found}, but {expected}")]
    ColumnType {
        /// The offending column.
        column: String,
        /// What was needed, phrased as a requirement (e.g. "the time column must be int64 ...").
        expected: String,
        /// The Arrow type found.
        found: String,
    },
    /// The event-time column cannot be used as it is (nulls, out-of-range values).
    #[error("time column '{column}' of source '{source_name}': {problem}")]
    TimeColumn {
        /// Source the batch was pushed to.
        source_name: String,
        /// The time column.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A pushed batch does not have the schema the source was declared with / first saw.
    #[error("schema of data pushed to source '{source_name}' does not match its schema: {detail}")]
    SchemaMismatch {
        /// The source.
        source_name: String,
        /// Which field differs and how.
        detail: String,
    },
    /// A source name that the engine does not know.
    #[error("unknown source '{0}'")]
    UnknownSource(String),
    /// A source or query name that is already taken.
    #[error("{kind} '{name}' already exists")]
    Duplicate {
        /// "source" or "query".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The query description is not valid (unknown aggregate, missing window, ...).
    #[error("invalid query: {0}")]
    InvalidPlan(String),
    /// The engine or source no longer accepts input (closed, or flushed at end of input).
    #[error("{0}")]
    Closed(String),
    /// An input queue is full and the overflow policy is to refuse.
    #[error("backpressure: {0}")]
    Backpressure(String),
    /// An aggregate overflowed its result type (e.g. an int64 sum); results would be wrong.
    #[error("arithmetic overflow: {0}")]
    Overflow(String),
    /// A core thread of the runtime failed (it panicked, or could not be started).
    #[error("engine runtime: {0}")]
    Runtime(String),
    /// The write-ahead log failed or holds damage it cannot repair in its recovery mode.
    #[error("{0}")]
    Wal(#[from] crate::wal::WalError),
    /// A checkpoint file, the manifest or the state-directory lock.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Operator state could not be saved to or restored from a checkpoint (damaged bytes, a
    /// snapshot of a different pipeline, or an operator that cannot be checkpointed yet).
    #[error("checkpoint state: {0}")]
    Snapshot(String),
    /// A sink could not write, stage or publish results.
    #[error("sink: {0}")]
    Sink(#[from] crate::sink::SinkError),
    /// An error from an Arrow kernel.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),
}

/// Whether an I/O error means the disk (or the user's quota) is full: `ENOSPC` (raw OS error
/// 28 on Linux), `StorageFull` or `QuotaExceeded`. Every store of the engine (log,
/// checkpoints, state, sinks) reports those as its own "disk full" error.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

/// Coarse classification of an [`Error`], used to pick the exception class in Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// [`Error::ColumnNotFound`].
    ColumnNotFound,
    /// [`Error::ColumnType`].
    ColumnType,
    /// [`Error::TimeColumn`].
    TimeColumn,
    /// [`Error::SchemaMismatch`].
    SchemaMismatch,
    /// [`Error::UnknownSource`] and [`Error::Duplicate`].
    Name,
    /// [`Error::InvalidPlan`].
    InvalidPlan,
    /// [`Error::Closed`].
    Closed,
    /// [`Error::Backpressure`].
    Backpressure,
    /// [`Error::Overflow`].
    Overflow,
    /// [`Error::Runtime`].
    Runtime,
    /// [`Error::Snapshot`], [`Error::Wal`], [`Error::Checkpoint`].
    Durability,
    /// [`Error::Sink`].
    Sink,
    /// [`Error::Arrow`].
    Arrow,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ColumnNotFound { .. } => ErrorKind::ColumnNotFound,
            Error::ColumnType { .. } => ErrorKind::ColumnType,
            Error::TimeColumn { .. } => ErrorKind::TimeColumn,
            Error::SchemaMismatch { .. } => ErrorKind::SchemaMismatch,
            Error::UnknownSource(_) | Error::Duplicate { .. } => ErrorKind::Name,
            Error::InvalidPlan(_) => ErrorKind::InvalidPlan,
            Error::Closed(_) => ErrorKind::Closed,
            Error::Backpressure(_) => ErrorKind::Backpressure,
            Error::Overflow(_) => ErrorKind::Overflow,
            Error::Runtime(_) => ErrorKind::Runtime,
            Error::Snapshot(_) | Error::Wal(_) | Error::Checkpoint(_) => ErrorKind::Durability,
            Error::Sink(_) => ErrorKind::Sink,
            Error::Arrow(_) => ErrorKind::Arrow,
        }
    }

    /// A [`Error::ColumnNotFound`] for `column` in `schema`, listing the columns that exist
    /// (hidden engine columns excluded).
    pub fn column_not_found(column: &str, context: &str, schema: &arrow_schema::Schema) -> Self {
        let available = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !crate::engine::is_hidden_column(n))
            .collect::<Vec<_>>()
            .join(", ");
        Error::ColumnNotFound {
            column: column.to_string(),
            context: context.to_string(),
            available,
        }
    }
}
