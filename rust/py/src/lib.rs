//! `laminar._laminar`: the Python bindings of the engine. Thin by design: convert Arrow data
//! through the C data interface (zero-copy), release the GIL while the engine works, and map
//! engine errors onto the exception classes of `laminar.errors`. No engine logic lives here.
//!
//! The engine sits behind a mutex so that several Python threads may call it; the lock is
//! only ever taken with the GIL released, so a thread waiting for the engine never blocks
//! other Python threads. A Rust panic inside the engine is caught and raised as
//! `laminar.errors.LaminarError`; the engine is then unusable (its mutex is poisoned) and says so.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use laminar_core::engine::service::EngineService;
use laminar_core::engine::{
    CreditConfig, DurabilityConfig, Engine, EngineConfig, Outbox, Overflow, Partitioning,
    PendingCommit, QueryPlan, SourceConfig, TableDef,
};
use laminar_core::net::server::{Server, ServerConfig, ServerHandle};
use laminar_core::reactor::Budget;
use laminar_core::sink::FileFormat;
use laminar_core::time::clock::SystemClock;
use laminar_core::time::watermark::WatermarkStrategy;
use laminar_core::wal::RecoveryMode;
use laminar_core::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::{PySchema, PyTable};

/// Name of the `laminar.errors` class for an engine error.
fn exception_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ColumnNotFound => "ColumnNotFoundError",
        ErrorKind::ColumnType => "ColumnTypeError",
        ErrorKind::TimeColumn => "TimeColumnError",
        ErrorKind::SchemaMismatch => "SchemaMismatchError",
        ErrorKind::Name => "NameConflictError",
        ErrorKind::InvalidPlan => "QueryError",
        ErrorKind::Closed => "EngineClosedError",
        ErrorKind::Backpressure => "BackpressureError",
        ErrorKind::Overflow => "AggregateOverflowError",
        ErrorKind::Runtime => "EngineRuntimeError",
        ErrorKind::Durability => "DurabilityError",
        ErrorKind::Sink => "SinkError",
        ErrorKind::Arrow => "LaminarError",
    }
}

fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    let cls = py
        .import("laminar.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match cls {
        Ok(cls) => PyErr::from_type(cls, message),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// A `QueryError` for an option given a value outside its choices.
fn bad_choice(py: Python<'_>, option: &str, choices: &str, got: &str) -> PyErr {
    raise(
        py,
        "QueryError",
        format!("{option} must be {choices}, got '{got}'"),
    )
}

fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    raise(py, exception_name(e.kind()), e.to_string())
}

/// Why an engine call could not run at all.
enum CallError {
    Engine(Error),
    Panicked(String),
    Poisoned,
}

/// The engine, shared between Python threads.
#[pyclass(name = "Engine", module = "laminar._laminar")]
struct PyEngine {
    /// Shared with the wire-protocol server when the engine is served (`serve`).
    inner: Arc<Mutex<Engine>>,
    /// Set when a call panicked: every later call fails.
    broken: Arc<AtomicBool>,
}

impl PyEngine {
    /// Runs `f` on the engine with the GIL released, catching panics.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Engine) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        call_engine(py, &self.inner, &self.broken, f)
    }
}

/// Runs `f` on the engine behind `inner` with the GIL released, catching panics (a panic
/// sets `broken`, after which every call fails).
fn call_engine<T: Send>(
    py: Python<'_>,
    inner: &Mutex<Engine>,
    broken: &AtomicBool,
    f: impl FnOnce(&mut Engine) -> Result<T, Error> + Send,
) -> PyResult<T> {
    let result = py.detach(move || {
        if broken.load(Ordering::Acquire) {
            return Err(CallError::Poisoned);
        }
        let mut guard = match inner.lock() {
            Ok(g) => g,
            Err(_) => return Err(CallError::Poisoned),
        };
        match catch_unwind(AssertUnwindSafe(|| f(&mut guard))) {
            Ok(r) => r.map_err(CallError::Engine),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                // The engine's state is not trustworthy any more.
                broken.store(true, Ordering::Release);
                Err(CallError::Panicked(msg))
            }
        }
    });
    result.map_err(|e| match e {
        CallError::Engine(e) => to_pyerr(py, e),
        CallError::Panicked(m) => raise(
            py,
            "LaminarError",
            format!("internal error in the engine (please report it): {m}; this engine can no longer be used"),
        ),
        CallError::Poisoned => raise(
            py,
            "EngineClosedError",
            "this engine hit an internal error earlier and can no longer be used; create a new Engine".into(),
        ),
    })
}

/// Waits (GIL released, engine not locked) until `pending`'s log record is durable. A failed
/// wait stops the engine, if it still exists (see `Engine::finish_commit`), and raises its
/// error.
fn wait_commit(
    py: Python<'_>,
    engine: Option<&Mutex<Engine>>,
    broken: &AtomicBool,
    pending: &PendingCommit,
) -> PyResult<()> {
    match (py.detach(|| pending.wait()), engine) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(inner)) => {
            call_engine(py, inner, broken, move |eng| eng.finish_commit(Err(e)))
        }
        // The engine was dropped: nothing is left to stop; the error is the answer.
        (Err(e), None) => Err(to_pyerr(py, e)),
    }
}

/// Reads pushed Arrow data into batches (an empty input gives one empty batch: it still
/// tells the source its schema).
fn read_batches(py: Python<'_>, data: AnyRecordBatch) -> PyResult<Vec<RecordBatch>> {
    let reader = data.into_reader()?;
    let schema = reader.schema();
    let mut batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(|e| {
        raise(
            py,
            "LaminarError",
            format!("could not read the pushed data: {e}"),
        )
    })?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// A push whose log record may not be durable yet (`Engine.submit`, `Engine.pending_all`).
#[pyclass(name = "PendingCommit", module = "laminar._laminar")]
struct PyPendingCommit {
    /// None: nothing to wait for (no state directory).
    pending: Option<PendingCommit>,
    /// Weak: a receipt kept by the caller must not keep a dropped engine (its threads, its
    /// state directory's lock) alive; waiting needs only the log's handle.
    engine: Weak<Mutex<Engine>>,
    broken: Arc<AtomicBool>,
}

#[pymethods]
impl PyPendingCommit {
    /// Blocks, with the GIL released, until the record is durable; raises the log's error
    /// (the engine is then stopped) if it cannot become durable.
    fn wait(&self, py: Python<'_>) -> PyResult<()> {
        match &self.pending {
            Some(p) => wait_commit(py, self.engine.upgrade().as_deref(), &self.broken, p),
            None => Ok(()),
        }
    }

    /// Whether `wait` would return (or raise) at once.
    fn done(&self) -> bool {
        self.pending.as_ref().is_none_or(PendingCommit::is_done)
    }
}

impl PyEngine {
    /// Wraps `pending` for Python.
    fn pending_commit(&self, pending: Option<PendingCommit>) -> PyPendingCommit {
        PyPendingCommit {
            pending,
            engine: Arc::downgrade(&self.inner),
            broken: Arc::clone(&self.broken),
        }
    }
}

impl PyEngine {
    fn take<'py>(
        &self,
        py: Python<'py>,
        query: String,
        outbox: Outbox,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let taken = self.call(py, move |e| e.take(&query, outbox))?;
        taken
            .map(|(schema, batches)| table(py, batches, schema))
            .transpose()
    }
}

/// One record batch from pushed Arrow data (an empty batch carrying the schema if none).
fn one_batch(py: Python<'_>, data: AnyRecordBatch) -> PyResult<RecordBatch> {
    let reader = data.into_reader()?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| raise(py, "LaminarError", format!("could not read the data: {e}")))?;
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    arrow_select::concat::concat_batches(&schema, &batches)
        .map_err(|e| raise(py, "LaminarError", format!("could not read the data: {e}")))
}

fn table<'py>(
    py: Python<'py>,
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
) -> PyResult<Bound<'py, PyAny>> {
    PyTable::try_new(batches, schema)?.into_pyarrow(py)
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (inbox_capacity = 1024, poll_budget = 64, cores = 1, backpressure = "block", credits = 32, floating_credits = 32, low_watermark = None, pin = true, state_dir = None, checkpoint_every_ms = Some(1000), retain_checkpoints = 3, fsync = true, recovery = "point_in_time", wal_disk_budget = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        inbox_capacity: usize,
        poll_budget: usize,
        cores: usize,
        backpressure: &str,
        credits: u64,
        floating_credits: u64,
        low_watermark: Option<u64>,
        pin: bool,
        state_dir: Option<String>,
        checkpoint_every_ms: Option<i64>,
        retain_checkpoints: usize,
        fsync: bool,
        recovery: &str,
        wal_disk_budget: Option<u64>,
    ) -> PyResult<Self> {
        let recovery = match recovery {
            "point_in_time" => RecoveryMode::PointInTime,
            "tolerate_corrupted_tail" => RecoveryMode::TolerateCorruptedTail,
            "absolute_consistency" => RecoveryMode::AbsoluteConsistency,
            other => {
                return Err(bad_choice(
                    py,
                    "recovery",
                    "'point_in_time', 'tolerate_corrupted_tail' or 'absolute_consistency'",
                    other,
                ))
            }
        };
        let overflow = Overflow::parse(backpressure).ok_or_else(|| {
            bad_choice(
                py,
                "backpressure",
                "'block', 'drop' or 'error'",
                backpressure,
            )
        })?;
        let config = EngineConfig {
            inbox_capacity: inbox_capacity.max(1),
            budget: Budget {
                messages: poll_budget.max(1),
            },
            cores,
            credits: CreditConfig {
                exclusive: credits.max(1),
                floating: floating_credits,
                low_watermark: low_watermark.unwrap_or(credits / 2),
                overflow,
            },
            pin,
            sink_commit_every_ms: checkpoint_every_ms,
        };
        let durability = state_dir.map(|dir| DurabilityConfig {
            checkpoint_every_ms,
            retain_checkpoints: retain_checkpoints.max(1),
            sync: fsync,
            recovery,
            disk_budget: wal_disk_budget,
            ..DurabilityConfig::new(dir)
        });
        let engine = py
            .detach(|| {
                let mut engine = Engine::new(config, Arc::new(SystemClock))?;
                if let Some(d) = durability {
                    engine.enable_durability(d)?;
                }
                Ok(engine)
            })
            .map_err(|e: Error| to_pyerr(py, e))?;
        Ok(PyEngine {
            inner: Arc::new(Mutex::new(engine)),
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Declares a source. `watermark` is "bounded_delay", "ascending" or "punctuated".
    #[pyo3(signature = (name, time, watermark, delay_ms = 0, punctuation_column = None, max_future_ms = None, idle_timeout_ms = None, schema = None))]
    #[allow(clippy::too_many_arguments)]
    fn add_source(
        &self,
        py: Python<'_>,
        name: String,
        time: String,
        watermark: &str,
        delay_ms: i64,
        punctuation_column: Option<String>,
        max_future_ms: Option<i64>,
        idle_timeout_ms: Option<i64>,
        schema: Option<PySchema>,
    ) -> PyResult<()> {
        let strategy = match watermark {
            "bounded_delay" => WatermarkStrategy::BoundedDelay { delay_ms },
            "ascending" => WatermarkStrategy::Ascending,
            "punctuated" => WatermarkStrategy::Punctuated,
            other => {
                return Err(raise(
                    py,
                    "QueryError",
                    format!("unknown watermark strategy '{other}'"),
                ))
            }
        };
        let config = SourceConfig {
            name,
            time_column: time,
            watermark: strategy,
            punctuation_column,
            max_future_ms,
            idle_timeout_ms,
            schema: schema.map(PySchema::into_inner),
        };
        self.call(py, move |e| e.add_source(config).map(|_| ()))
    }

    /// Registers a query from its JSON plan.
    fn add_query(&self, py: Python<'_>, name: String, plan: String) -> PyResult<()> {
        self.call(py, move |e| {
            let plan = QueryPlan::from_json(&plan)?;
            e.add_query(&name, plan)
        })
    }

    /// Pushes Arrow data (anything with `__arrow_c_array__` or `__arrow_c_stream__`), with an
    /// optional producer sequence number; with a state directory, returns once it is durable.
    /// Returns False when `seq` shows it was applied before.
    #[pyo3(signature = (source, data, seq = None))]
    fn push(
        &self,
        py: Python<'_>,
        source: String,
        data: AnyRecordBatch,
        seq: Option<u64>,
    ) -> PyResult<bool> {
        let batches = read_batches(py, data)?;
        // The engine is locked only to apply and log the push; the wait for its sync happens
        // outside, so pushes from other threads join the same group commit.
        let (applied, pending) =
            self.call(py, move |e| e.push_seq_deferred(&source, &batches, seq))?;
        if let Some(p) = pending {
            wait_commit(py, Some(&self.inner), &self.broken, &p)?;
        }
        Ok(applied)
    }

    /// `push` without waiting for durability: returns (applied, PendingCommit), so that one
    /// producer can have several pushes in flight and they share syncs.
    #[pyo3(signature = (source, data, seq = None))]
    fn submit(
        &self,
        py: Python<'_>,
        source: String,
        data: AnyRecordBatch,
        seq: Option<u64>,
    ) -> PyResult<(bool, PyPendingCommit)> {
        let batches = read_batches(py, data)?;
        let (applied, pending) =
            self.call(py, move |e| e.push_seq_deferred(&source, &batches, seq))?;
        Ok((applied, self.pending_commit(pending)))
    }

    /// A PendingCommit covering everything logged so far.
    fn pending_all(&self, py: Python<'_>) -> PyResult<PyPendingCommit> {
        let pending = self.call(py, |e| e.pending_all())?;
        Ok(self.pending_commit(pending))
    }

    /// Writes the results of `query` as `format` ("parquet", "jsonl", "arrow") files into
    /// directory `path`, exactly once per epoch; the sink is named `name`. `disk_budget`:
    /// fault injection for tests (writes fail with ENOSPC past that many bytes).
    #[pyo3(signature = (name, query, path, format, disk_budget=None))]
    fn add_file_sink(
        &self,
        py: Python<'_>,
        name: String,
        query: String,
        path: std::path::PathBuf,
        format: &str,
        disk_budget: Option<u64>,
    ) -> PyResult<()> {
        let format = FileFormat::parse(format)
            .ok_or_else(|| bad_choice(py, "format", "'parquet', 'jsonl' or 'arrow'", format))?;
        self.call(py, move |e| {
            e.add_file_sink(&name, &query, &path, format, disk_budget)
        })
    }

    /// Keeps the committed epochs of `query` for the caller (`sink_next` / `sink_ack`).
    fn add_callback_sink(&self, py: Python<'_>, name: String, query: String) -> PyResult<()> {
        self.call(py, move |e| e.add_delivery_sink(&name, &query))
    }

    /// The oldest committed, unacknowledged epoch of callback sink `name`: (epoch, Table), or
    /// None.
    fn sink_next<'py>(
        &self,
        py: Python<'py>,
        name: String,
    ) -> PyResult<Option<(u64, Bound<'py, PyAny>)>> {
        let next = self.call(py, move |e| e.sink_next(&name))?;
        match next {
            None => Ok(None),
            Some((epoch, batches)) => {
                let Some(schema) = batches.first().map(|b| b.schema()) else {
                    return Ok(None);
                };
                Ok(Some((epoch, table(py, batches, schema)?)))
            }
        }
    }

    /// Acknowledges the epochs of callback sink `name` up to `epoch`.
    fn sink_ack(&self, py: Python<'_>, name: String, epoch: u64) -> PyResult<()> {
        self.call(py, move |e| e.sink_acknowledge(&name, epoch))
    }

    /// Takes a checkpoint now; returns its id.
    fn checkpoint(&self, py: Python<'_>) -> PyResult<u64> {
        self.call(py, |e| e.checkpoint())
    }

    /// Runs recovery if not done yet; returns what it did.
    fn recover<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.call(py, |e| e.recover())?;
        let d = PyDict::new(py);
        d.set_item("checkpoint", r.checkpoint)?;
        d.set_item("replayed_records", r.replayed_records)?;
        d.set_item("replay_failures", r.replay_failures)?;
        d.set_item("seconds", r.seconds)?;
        d.set_item("log_cut", r.log_cut)?;
        Ok(d)
    }

    /// Where a source stands: rows and batches applied, highest sequence number.
    fn source_position<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyDict>> {
        let p = self.call(py, move |e| e.source_position(&name))?;
        let d = PyDict::new(py);
        d.set_item("rows", p.rows)?;
        d.set_item("batches", p.batches)?;
        d.set_item("last_seq", p.last_seq)?;
        Ok(d)
    }

    /// Declares lookup table `name` keyed on `on` with the rows of `data`.
    #[pyo3(signature = (name, on, data, ttl_ms = None))]
    fn add_table(
        &self,
        py: Python<'_>,
        name: String,
        on: Vec<String>,
        data: AnyRecordBatch,
        ttl_ms: Option<i64>,
    ) -> PyResult<()> {
        let rows = one_batch(py, data)?;
        let def = TableDef {
            name,
            schema: rows.schema(),
            on,
            ttl_ms,
        };
        self.call(py, move |e| e.add_table(def, rows))
    }

    /// Replaces (`replace=True`) or upserts the rows of lookup table `name`.
    fn update_table(
        &self,
        py: Python<'_>,
        name: String,
        data: AnyRecordBatch,
        replace: bool,
    ) -> PyResult<()> {
        let rows = one_batch(py, data)?;
        self.call(py, move |e| e.update_table(&name, rows, replace))
    }

    /// The distinct keys of `data` that lookup table `name` lacks or holds expired, as a
    /// pyarrow Table, or None.
    fn table_misses<'py>(
        &self,
        py: Python<'py>,
        name: String,
        data: AnyRecordBatch,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let batch = one_batch(py, data)?;
        let missing = self.call(py, move |e| e.table_misses(&name, &batch))?;
        missing
            .map(|b| {
                let schema = b.schema();
                table(py, vec![b], schema)
            })
            .transpose()
    }

    /// End of input: closes every window.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |e| e.flush())
    }

    /// Closes the engine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |e| e.close())
    }

    /// Checks processing-time idleness of sources.
    fn check_idle(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |e| e.check_idle())
    }

    /// New results of a query as a pyarrow Table, or None while the query waits for a schema.
    fn take_output<'py>(
        &self,
        py: Python<'py>,
        query: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.take(py, query, Outbox::Results)
    }

    /// New late rows of a query as a pyarrow Table, or None while the query waits for a schema.
    fn take_late<'py>(
        &self,
        py: Python<'py>,
        query: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.take(py, query, Outbox::Late)
    }

    /// The schema of a source once known, as a pyarrow Schema.
    fn source_schema<'py>(
        &self,
        py: Python<'py>,
        name: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let schema = self.call(py, move |e| e.source_schema(&name))?;
        schema
            .map(|s| PySchema::new(s).into_pyarrow(py))
            .transpose()
    }

    /// Counters of sources and queries.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        type Snapshot = (
            Vec<laminar_core::engine::SourceMetrics>,
            Vec<laminar_core::engine::QueryReport>,
            Vec<laminar_core::engine::CoreMetrics>,
            Option<laminar_core::engine::CreditMetrics>,
            Vec<Option<Vec<laminar_core::engine::Partitioning>>>,
            EngineConfig,
            Option<laminar_core::engine::DurabilityMetrics>,
            Vec<laminar_core::engine::SinkReport>,
        );
        let (sources, queries, cores, credits, parts, config, durability, sinks): Snapshot =
            self.call(py, |e| {
                let queries = e.query_reports()?;
                let parts = queries
                    .iter()
                    .map(|q| e.partitioning(&q.name).ok().flatten())
                    .collect();
                Ok((
                    e.source_metrics(),
                    queries,
                    e.core_metrics(),
                    e.credit_metrics(),
                    parts,
                    e.config(),
                    e.durability_metrics(),
                    e.sink_reports(),
                ))
            })?;
        let out = PyDict::new(py);
        let src = PyDict::new(py);
        for s in sources {
            let d = PyDict::new(py);
            d.set_item("rows", s.rows)?;
            d.set_item("batches", s.batches)?;
            d.set_item("dropped_rows", s.dropped_rows)?;
            d.set_item("watermark", s.watermark)?;
            d.set_item("max_event_time", s.max_event_time)?;
            d.set_item("idle", s.idle)?;
            d.set_item("future_rows", s.future_rows)?;
            d.set_item("ended", s.ended)?;
            src.set_item(s.name, d)?;
        }
        let qs = PyDict::new(py);
        for (q, part) in queries.into_iter().zip(parts) {
            let d = PyDict::new(py);
            if let Some(part) = part {
                let names: Vec<String> = part
                    .iter()
                    .map(|p| match p {
                        Partitioning::Even => "even".to_string(),
                        Partitioning::Keys(cols) => format!("keys{cols:?}"),
                        Partitioning::Single(c) => format!("single(core {c})"),
                    })
                    .collect();
                d.set_item("partitioning", names)?;
            }
            let m = q.metrics;
            d.set_item("state", q.state)?;
            d.set_item("rows_in", m.rows_in)?;
            d.set_item("rows_out", m.rows_out)?;
            d.set_item("watermark", m.watermark)?;
            d.set_item("pending_timers", m.timers)?;
            d.set_item("late_dropped", m.operators.late_dropped)?;
            d.set_item("late_side_output", m.operators.late_side_output)?;
            d.set_item("open_windows", m.operators.open_windows)?;
            d.set_item("live_groups", m.operators.live_groups)?;
            d.set_item("peak_groups", m.operators.peak_groups)?;
            d.set_item("state_rows", m.operators.state_rows)?;
            d.set_item("peak_state_rows", m.operators.peak_state_rows)?;
            d.set_item("duplicates_dropped", m.operators.duplicates_dropped)?;
            qs.set_item(q.name, d)?;
        }
        out.set_item("sources", src)?;
        out.set_item("queries", qs)?;
        let per_core = pyo3::types::PyList::empty(py);
        for c in cores {
            let d = PyDict::new(py);
            d.set_item("core", c.core)?;
            d.set_item("pinned", c.pinned)?;
            d.set_item("rows", c.rows)?;
            d.set_item("batches", c.batches)?;
            d.set_item("commands", c.commands)?;
            d.set_item("queue_depth", c.queue_depth)?;
            d.set_item("credits_in_use", c.credits_in_use)?;
            d.set_item("backpressured", c.backpressured)?;
            d.set_item("idle_waits", c.idle_waits)?;
            d.set_item("busy_s", c.busy_s)?;
            per_core.append(d)?;
        }
        out.set_item("cores", per_core)?;
        if let Some(m) = credits {
            let d = PyDict::new(py);
            d.set_item("policy", config.credits.overflow.name())?;
            d.set_item("credits_per_core", config.credits.exclusive)?;
            d.set_item("floating_credits", config.credits.floating)?;
            d.set_item("low_watermark", config.credits.low_watermark)?;
            d.set_item("acquired", m.acquired)?;
            d.set_item("released", m.released)?;
            d.set_item("blocked", m.blocked)?;
            d.set_item("dropped", m.dropped)?;
            d.set_item("refused", m.refused)?;
            d.set_item("floating_available", m.floating_available)?;
            out.set_item("backpressure", d)?;
        }
        if let Some(m) = durability {
            let d = PyDict::new(py);
            d.set_item("wal_records", m.records)?;
            d.set_item("wal_bytes", m.wal_bytes)?;
            d.set_item("wal_syncs", m.wal_syncs)?;
            d.set_item("wal_direct_writes", m.wal_direct_writes)?;
            d.set_item("durable_lsn", m.durable_lsn)?;
            d.set_item("checkpoints", m.checkpoints)?;
            d.set_item("last_checkpoint", m.last_checkpoint)?;
            d.set_item("last_checkpoint_s", m.last_checkpoint_s)?;
            d.set_item("checkpoints_skipped", m.checkpoints_skipped)?;
            d.set_item("skip_reason", m.skip_reason)?;
            d.set_item("recovered_checkpoint", m.recovered_checkpoint)?;
            d.set_item("replayed_records", m.replayed_records)?;
            d.set_item("replay_failures", m.replay_failures)?;
            d.set_item("recovery_s", m.recovery_s)?;
            d.set_item("log_cut", m.log_cut)?;
            out.set_item("durability", d)?;
        }
        let sk = PyDict::new(py);
        for r in sinks {
            let d = PyDict::new(py);
            let m = r.metrics;
            d.set_item("query", r.query)?;
            d.set_item("target", r.target)?;
            d.set_item("rows_written", m.rows_written)?;
            d.set_item("rows_committed", m.rows_committed)?;
            d.set_item("epochs_committed", m.epochs_committed)?;
            d.set_item("files_committed", m.files_committed)?;
            d.set_item("last_committed_epoch", m.last_committed_epoch)?;
            d.set_item("recovered_files", m.recovered_files)?;
            d.set_item("discarded_files", m.discarded_files)?;
            sk.set_item(r.name, d)?;
        }
        out.set_item("sinks", sk)?;
        Ok(out)
    }

    /// Serves this engine over the wire protocol (`docs/protocol.md`) on one I/O thread.
    /// Returns the running server; the engine stays usable from Python meanwhile (calls
    /// share it through its mutex).
    #[pyo3(signature = (host = "127.0.0.1".to_string(), port = 0, token = None, max_connections = 256, max_payload = 16 * 1024 * 1024, max_batch_rows = None, max_frames_per_sec = None, max_bytes_per_sec = None, max_output_bytes = 16 * 1024 * 1024, handshake_timeout_ms = 10_000, shutdown_grace_ms = 2_000, poll_interval_ms = 2))]
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        py: Python<'_>,
        host: String,
        port: u16,
        token: Option<String>,
        max_connections: usize,
        max_payload: u32,
        max_batch_rows: Option<usize>,
        max_frames_per_sec: Option<u32>,
        max_bytes_per_sec: Option<u64>,
        max_output_bytes: usize,
        handshake_timeout_ms: u64,
        shutdown_grace_ms: u64,
        poll_interval_ms: u64,
    ) -> PyResult<PyServer> {
        use std::net::ToSocketAddrs;
        use std::time::Duration;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                raise(
                    py,
                    "ServerError",
                    format!("cannot resolve address {host}:{port}"),
                )
            })?;
        if self.broken.load(Ordering::Acquire) {
            return Err(raise(
                py,
                "EngineClosedError",
                "this engine hit an internal error earlier and can no longer be used".into(),
            ));
        }
        let config = ServerConfig {
            addr,
            token: token.map(String::into_bytes),
            max_connections,
            max_payload,
            max_batch_rows,
            max_frames_per_sec,
            max_bytes_per_sec,
            max_output_bytes,
            handshake_timeout: Duration::from_millis(handshake_timeout_ms),
            shutdown_grace: Duration::from_millis(shutdown_grace_ms),
            poll_interval: Duration::from_millis(poll_interval_ms.max(1)),
            ..ServerConfig::default()
        };
        let service = Arc::new(EngineService::with_broken_flag(
            self.inner.clone(),
            self.broken.clone(),
        ));
        let handle = py
            .detach(move || Server::start(config, service))
            .map_err(|e| raise(py, "ServerError", e.to_string()))?;
        Ok(PyServer {
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Makes a core sleep `ms` milliseconds (tests of backpressure only).
    fn _stall_core(&self, py: Python<'_>, core: usize, ms: u64) -> PyResult<()> {
        self.call(py, move |e| e.stall_core(core, ms))
    }
}

/// Raises a Rust panic inside the engine call path; used by the tests to prove a panic
/// becomes a Python exception instead of aborting the interpreter.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>) -> PyResult<()> {
    let engine = PyEngine::new(
        py,
        1,
        1,
        1,
        "block",
        1,
        0,
        None,
        false,
        None,
        None,
        3,
        true,
        "point_in_time",
        None,
    )?;
    engine.call(py, |_| -> Result<(), Error> {
        panic!("deliberate test panic")
    })
}

/// Repairs a state directory an engine refused to open (see `laminar.repair_state_dir`).
#[pyfunction]
fn repair_state_dir<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let r = py
        .detach(|| laminar_core::engine::repair_state_dir(&path))
        .map_err(|e| to_pyerr(py, e))?;
    let d = PyDict::new(py);
    d.set_item("log_cut", r.log_cut)?;
    d.set_item("log_records", r.log_records)?;
    d.set_item("checkpoint", r.checkpoint)?;
    d.set_item("fell_back", r.fell_back)?;
    Ok(d)
}

/// A running wire-protocol server (`Engine.serve`).
#[pyclass(name = "Server", module = "laminar._laminar")]
struct PyServer {
    handle: Mutex<Option<ServerHandle>>,
}

#[pymethods]
impl PyServer {
    /// `"host:port"` the server listens on (`None` once closed).
    #[getter]
    fn address(&self) -> Option<String> {
        let g = self.handle.lock().ok()?;
        g.as_ref().map(|h| h.local_addr().to_string())
    }

    /// The I/O backend: `"uring"` or `"epoll"`.
    #[getter]
    fn backend(&self) -> Option<&'static str> {
        let g = self.handle.lock().ok()?;
        g.as_ref().map(|h| h.backend().name())
    }

    /// Whether the server is running.
    #[getter]
    fn running(&self) -> bool {
        self.handle
            .lock()
            .ok()
            .is_some_and(|g| g.as_ref().is_some_and(|h| h.is_running()))
    }

    /// The server's counters.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Ok(g) = self.handle.lock() {
            if let Some(h) = g.as_ref() {
                for (k, v) in h.metrics().snapshot() {
                    d.set_item(k, v)?;
                }
                d.set_item("backend", h.backend().name())?;
            }
        }
        Ok(d)
    }

    /// Graceful shutdown: stop accepting, send Close to every client, flush, join. Idempotent.
    fn close(&self, py: Python<'_>) {
        let taken = self.handle.lock().ok().and_then(|mut g| g.take());
        if let Some(mut h) = taken {
            py.detach(move || h.shutdown());
        }
    }
}

/// Native part of laminar.
#[pymodule]
fn _laminar(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyServer>()?;
    m.add_class::<PyPendingCommit>()?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(repair_state_dir, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
