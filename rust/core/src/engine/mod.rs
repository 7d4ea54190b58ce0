//! The `Engine`: the user-facing entry point of the core. It owns the sources, the query
//! registry and the reactor, validates every push before applying it, turns pushes into
//! reactor messages in the order the reactor's contract requires (a batch's `Data`, then the
//! watermark that batch produces), and hands results out.
//!
//! With `cores = 1` the reactor runs on the caller's thread: `push` returns after the batch
//! has been processed. With `cores > 1` the queries run on the thread-per-core runtime
//! ([`crate::runtime`]): `push` validates, generates the watermark and routes the batch by key
//! to the cores, then returns while they work (bounded by backpressure credits); taking
//! results first waits for the cores to finish what was pushed before, so a caller sees the
//! same results as with one core. Watermarks are generated here, once per source, and
//! broadcast, so every core judges lateness alike. The engine never reads the wall clock
//! except to drive idle-source detection, processing-time emits and the future-timestamp cap.
//!
//! The hidden column [`TIME_COLUMN`] (event time as int64 epoch ms) travels with every stream
//! batch inside the engine and is removed from everything handed out.

mod cores;
mod durable;
mod log_record;
mod partition;
mod plan;
mod recovery;
pub mod service;
mod sinks;
mod source;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Schema, SchemaRef};

pub use crate::operator::emit::EmitSpec;
pub use crate::operator::interval_join::JoinKind;
pub use crate::operator::lookup_join::{LookupKind, TableDef};
pub use crate::runtime::CoreMetrics;
pub use crate::sync::credit::{CreditConfig, CreditMetrics, Overflow};
pub use durable::{repair_state_dir, DurabilityConfig, DurabilityMetrics, StateDirRepair};
pub use partition::Partitioning;
pub use plan::{compile, Compiled, OpSpec, QueryPlan, SourceSchema};
pub use recovery::{RecoveryReport, SourcePosition};
pub use sinks::SinkReport;
pub use source::SourceConfig;

use crate::error::{Error, Result};
use crate::operator::keys::{key_indices, KeyEncoder};
use crate::operator::lookup_join::{cast_key, LookupTables, TableIndex};
use crate::reactor::{Budget, CoreMessage, QueryId, QueryMetrics, SourceId};
use crate::runtime::RuntimeConfig;
use crate::time::clock::{Clock, SystemClock};
use crate::time::convert::max_at_or_below;
use crate::time::Timestamp;
use cores::{Admission, Cores};
use durable::Durable;
use log_record::LogRecord;
use sinks::Sinks;
use source::{Bound, Source};

/// Name of the hidden event-time column carried inside the engine.
pub const TIME_COLUMN: &str = "__laminar_time";

/// Whether `name` is an engine-internal column.
pub fn is_hidden_column(name: &str) -> bool {
    name == TIME_COLUMN
}

/// Removes the hidden time column from a schema.
pub fn strip_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !is_hidden_column(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

fn strip_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| !is_hidden_column(f.name()))
        .map(|(_, c)| c.clone())
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Which rows of a query [`Engine::take`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbox {
    /// The query's results.
    Results,
    /// Rows that arrived after their window closed (late policy "side output").
    Late,
}

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Reactor inbox capacity in messages.
    pub inbox_capacity: usize,
    /// Messages per reactor poll.
    pub budget: Budget,
    /// Core threads; 1 runs the reactor on the caller's thread.
    pub cores: usize,
    /// Backpressure credits (cores > 1).
    pub credits: CreditConfig,
    /// Pin core threads to CPUs where allowed.
    pub pin: bool,
    /// Without a state directory: how long a sink epoch stays open before its results are
    /// published (`None`: only at `flush` and `close`). With one, checkpoints close epochs.
    pub sink_commit_every_ms: Option<i64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            inbox_capacity: 1024,
            budget: Budget::default(),
            cores: 1,
            credits: CreditConfig::default(),
            pin: true,
            sink_commit_every_ms: Some(1000),
        }
    }
}

/// Counters of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMetrics {
    /// Name.
    pub name: String,
    /// Rows accepted.
    pub rows: u64,
    /// Non-empty batches accepted.
    pub batches: u64,
    /// Rows refused by backpressure policy "drop" (not processed).
    pub dropped_rows: u64,
    /// Current watermark.
    pub watermark: Option<Timestamp>,
    /// Largest event time seen.
    pub max_event_time: Option<Timestamp>,
    /// Whether the source is idle.
    pub idle: bool,
    /// Rows too far ahead of processing time to move the watermark (still processed).
    pub future_rows: u64,
    /// Whether the source has ended (flush).
    pub ended: bool,
}

/// Counters of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryReport {
    /// Name.
    pub name: String,
    /// "running", "finished" (all inputs ended), "pending" (waiting for a schema) or
    /// "failed: ...".
    pub state: String,
    /// Counters (zero unless running).
    pub metrics: QueryMetrics,
}

enum QueryState {
    /// Waiting for a schema for each of its unions; `backlog` holds what its inputs received
    /// meanwhile (input number, message), replayed when it starts.
    Pending {
        backlog: Vec<(usize, CoreMessage)>,
    },
    Running {
        id: QueryId,
        /// The stream schema each input must have.
        expected: Vec<SchemaRef>,
        output: SchemaRef,
        late: SchemaRef,
    },
    Failed(String),
}

struct QueryEntry {
    name: String,
    plan: QueryPlan,
    /// The source of each input, in input order.
    inputs: Vec<SourceId>,
    /// The union (branch) number of each input.
    branch_of: Vec<usize>,
    state: QueryState,
}

impl QueryEntry {
    /// The query's definition without its state (to compile it while it is being replaced).
    fn spec(&self) -> QueryEntry {
        QueryEntry {
            name: self.name.clone(),
            plan: self.plan.clone(),
            inputs: self.inputs.clone(),
            branch_of: self.branch_of.clone(),
            state: QueryState::Failed(String::new()),
        }
    }
}

/// The engine's side of a lookup table: which keys it holds and when they were loaded, so
/// that the keys a loader must fetch are known before a push runs.
struct TableMirror {
    def: TableDef,
    encoder: KeyEncoder,
    key_columns: Vec<usize>,
    index: TableIndex,
    /// The changes since the last replacement, replayed to queries that start later.
    log: Vec<CoreMessage>,
}

impl TableMirror {
    /// Records change `rows` (already conformed to the table's schema) in the key index and
    /// the log, folding the log into one replacement when it grows long. Returns the message
    /// that carries the change to the queries.
    fn record(&mut self, rows: RecordBatch, replace: bool, now: Timestamp) -> Result<CoreMessage> {
        let keys: Vec<_> = self
            .key_columns
            .iter()
            .map(|&c| rows.column(c).clone())
            .collect();
        let encoded = self.encoder.encode(&keys)?;
        if replace {
            self.index.clear();
            self.log.clear();
        }
        self.index.insert(&encoded, 0, now);
        let msg = CoreMessage::TableUpdate {
            table: Arc::from(self.def.name.as_str()),
            rows,
            replace,
            now,
        };
        self.log.push(msg.clone());
        if self.log.len() > TABLE_LOG_LIMIT {
            // Fold the log into one replacement (later rows win, as when applied in order);
            // a query starting later sees these rows as loaded now.
            let batches: Vec<RecordBatch> = self
                .log
                .iter()
                .filter_map(|m| match m {
                    CoreMessage::TableUpdate { rows, .. } => Some(rows.clone()),
                    _ => None,
                })
                .collect();
            let rows = arrow_select::concat::concat_batches(&self.def.schema, &batches)?;
            self.log = vec![CoreMessage::TableUpdate {
                table: Arc::from(self.def.name.as_str()),
                rows,
                replace: true,
                now,
            }];
        }
        Ok(msg)
    }
}

/// A push's log record not yet known to be durable (see [`Engine::push_seq_deferred`]).
pub struct PendingCommit {
    handle: crate::wal::CommitHandle,
    lsn: crate::wal::Lsn,
}

impl PendingCommit {
    /// Waits on `lsn` of `durable`'s log.
    fn new(durable: &Durable, lsn: crate::wal::Lsn) -> Self {
        PendingCommit {
            handle: durable.wal.commit_handle(),
            lsn,
        }
    }

    /// Blocks until the push's record is durable (group commit: pushes waiting at once share
    /// one sync).
    pub fn wait(&self) -> Result<()> {
        Ok(self.handle.commit(self.lsn)?)
    }

    /// Whether [`wait`](Self::wait) would return at once: the record is durable, or the log
    /// failed before it was.
    pub fn is_done(&self) -> bool {
        self.handle.try_commit(self.lsn).is_some()
    }
}

/// Changes kept per table before the log is folded into one replacement.
const TABLE_LOG_LIMIT: usize = 64;

/// The engine. See the module docs.
pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    sources: Vec<Source>,
    source_ids: HashMap<String, SourceId>,
    queries: Vec<QueryEntry>,
    query_ids: HashMap<String, usize>,
    tables: LookupTables,
    mirrors: HashMap<String, TableMirror>,
    cores: Cores,
    /// Some running query reads processing time: send it on every push and take.
    ticking: bool,
    closed: bool,
    /// The write-ahead log and checkpoints, with a state directory.
    durable: Option<Box<Durable>>,
    /// Durability counters as they were at `close` (the log itself is closed then).
    final_durability: Option<durable::DurabilityMetrics>,
    /// Processing time frozen for the input being handled (live: read once per input and
    /// logged with it; replay: the logged value), so a replay sees the times the live run saw.
    op_now: Option<Timestamp>,
    /// Where query results go besides `take_output`: exactly-once sinks.
    sinks: Sinks,
    /// What every call says after an error the engine cannot continue from (see `fail`).
    failure: Option<String>,
}

impl Default for Engine {
    /// One core, on the caller's thread.
    fn default() -> Self {
        let config = EngineConfig::default();
        Engine::with_cores(
            config,
            Arc::new(SystemClock),
            Cores::inline(config.inbox_capacity, config.budget),
        )
    }
}

impl Engine {
    /// An engine reading processing time from `clock`. With `config.cores > 1` this starts
    /// the core threads.
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        cores::check_cores(config.cores)?;
        let cores = if config.cores == 1 {
            Cores::inline(config.inbox_capacity, config.budget)
        } else {
            Cores::threaded(RuntimeConfig {
                cores: config.cores,
                inbox_capacity: config.inbox_capacity.max(64),
                credits: config.credits,
                pin: config.pin,
                budget: config.budget,
            })?
        };
        Ok(Engine::with_cores(config, clock, cores))
    }

    fn with_cores(config: EngineConfig, clock: Arc<dyn Clock>, cores: Cores) -> Self {
        Engine {
            config,
            clock,
            sources: Vec::new(),
            source_ids: HashMap::new(),
            queries: Vec::new(),
            query_ids: HashMap::new(),
            tables: LookupTables::new(),
            mirrors: HashMap::new(),
            cores,
            ticking: false,
            closed: false,
            durable: None,
            final_durability: None,
            op_now: None,
            sinks: Sinks::new(config.sink_commit_every_ms),
            failure: None,
        }
    }

    /// Processing time: the frozen time of the input being handled, else the clock's.
    fn now(&self) -> Timestamp {
        self.op_now.unwrap_or_else(|| self.clock.now_ms())
    }

    /// The settings.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Number of cores the queries run on.
    pub fn core_count(&self) -> usize {
        self.cores.count()
    }

    fn check_open(&self) -> Result<()> {
        if let Some(why) = &self.failure {
            return Err(Error::Closed(why.clone()));
        }
        if self.closed {
            return Err(Error::Closed(
                "the engine is closed; create a new Engine".into(),
            ));
        }
        Ok(())
    }

    /// An error after which the engine's state cannot be trusted (its log or a sink failed,
    /// or recovery did): the engine closes without publishing anything more (core threads
    /// joined, state and sink directories released, so that a new engine can recover them),
    /// every later call says why, and `e` is returned.
    pub(super) fn fail(&mut self, e: Error) -> Error {
        if self.failure.is_none() {
            let hint = if self.durable.is_some() {
                " on the same state_dir: it recovers every acknowledged input"
            } else {
                ""
            };
            self.failure = Some(format!(
                "the engine stopped after an error ({e}); create a new Engine{hint}"
            ));
        }
        self.sinks.stop();
        let _ = self.close();
        e
    }

    fn source_id(&self, name: &str) -> Result<SourceId> {
        self.source_ids
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownSource(name.to_string()))
    }

    /// Declares a source.
    pub fn add_source(&mut self, config: SourceConfig) -> Result<SourceId> {
        self.check_open()?;
        self.check_definable("a source")?;
        if self.source_ids.contains_key(&config.name) {
            return Err(Error::Duplicate {
                kind: "source",
                name: config.name,
            });
        }
        let id = SourceId::try_from(self.sources.len())
            .map_err(|_| Error::InvalidPlan("too many sources".into()))?;
        let name = config.name.clone();
        self.sources.push(Source::new(config, self.now())?);
        self.source_ids.insert(name, id);
        Ok(id)
    }

    /// The user schema of a source, once known.
    pub fn source_schema(&self, name: &str) -> Result<Option<SchemaRef>> {
        let id = self.source_id(name)?;
        Ok(self.sources[id as usize]
            .bound
            .as_ref()
            .map(|b| b.user.clone()))
    }

    /// Registers a query. It is compiled as soon as each union it reads has a known schema
    /// (now, or on a later push); what its inputs receive before that is kept and replayed,
    /// so no row is missed.
    pub fn add_query(&mut self, name: &str, plan: QueryPlan) -> Result<()> {
        self.check_open()?;
        self.check_definable("a query")?;
        if self.query_ids.contains_key(name) {
            return Err(Error::Duplicate {
                kind: "query",
                name: name.to_string(),
            });
        }
        let mut inputs = Vec::new();
        let mut branch_of = Vec::new();
        for (b, branch) in plan.branches().iter().enumerate() {
            if branch.is_empty() {
                return Err(Error::InvalidPlan(
                    "a query needs at least one source".into(),
                ));
            }
            for s in branch {
                inputs.push(self.source_id(s)?);
                branch_of.push(b);
            }
        }
        for t in plan.tables() {
            if !self.tables.contains_key(&t) {
                return Err(Error::InvalidPlan(format!("unknown lookup table '{t}'")));
            }
        }
        let mut entry = QueryEntry {
            name: name.to_string(),
            plan,
            inputs,
            branch_of,
            state: QueryState::Pending {
                backlog: Vec::new(),
            },
        };
        if self.ready(&entry) {
            entry.state = self.start_query(&entry)?.1;
        }
        self.query_ids.insert(name.to_string(), self.queries.len());
        self.queries.push(entry);
        Ok(())
    }

    /// Whether every union of the query has a source with a known schema.
    fn ready(&self, q: &QueryEntry) -> bool {
        let branches = q.branch_of.iter().max().map_or(0, |b| b + 1);
        (0..branches).all(|b| {
            q.inputs
                .iter()
                .zip(&q.branch_of)
                .any(|(&s, &qb)| qb == b && self.sources[s as usize].bound.is_some())
        })
    }

    fn source_schemas(&self) -> HashMap<String, SourceSchema> {
        self.sources
            .iter()
            .filter_map(|s| {
                s.bound.as_ref().map(|b| {
                    (
                        s.config.name.clone(),
                        SourceSchema {
                            stream: b.stream.clone(),
                            time_type: b.user.field(b.time_index).data_type().clone(),
                        },
                    )
                })
            })
            .collect()
    }

    /// Compiles query `q` and starts it in the reactor. Returns its id and running state.
    fn start_query(&mut self, q: &QueryEntry) -> Result<(QueryId, QueryState)> {
        let schemas = self.source_schemas();
        let in_query = |e| match e {
            Error::InvalidPlan(m) => Error::InvalidPlan(format!("query '{}': {m}", q.name)),
            other => other,
        };
        let compiled = compile(&q.plan, &schemas, &self.tables).map_err(in_query)?;
        // The schema each input must have: the first known schema of its union.
        let expected = q
            .branch_of
            .iter()
            .map(|&b| {
                q.inputs
                    .iter()
                    .zip(&q.branch_of)
                    .filter(|(_, &qb)| qb == b)
                    .find_map(|(&s, _)| self.sources[s as usize].bound.as_ref())
                    .map(|bound| bound.stream.clone())
                    .ok_or_else(|| Error::InvalidPlan("a union has no schema yet".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.ticking |= compiled
            .graph
            .nodes
            .iter()
            .any(|n| n.op.uses_processing_time());
        let parts = partition::partition(
            &q.plan,
            &|s| schemas.get(s).map(|ss| ss.stream.clone()),
            self.cores.single_core_for(self.queries.len()),
        );
        let mut first = Some(compiled.graph);
        let tables = &self.tables;
        let id = self.cores.add_query(
            &q.inputs,
            || match first.take() {
                Some(g) => Ok(g),
                None => compile(&q.plan, &schemas, tables)
                    .map(|c| c.graph)
                    .map_err(in_query),
            },
            parts,
        )?;
        // Bring the query's lookup tables up to date.
        for t in q.plan.tables() {
            if let Some(m) = self.mirrors.get(&t) {
                for msg in &m.log {
                    self.cores.replay(id, 0, msg)?;
                }
            }
        }
        Ok((
            id,
            QueryState::Running {
                id,
                expected,
                output: compiled.output_schema,
                late: compiled.late_schema,
            },
        ))
    }

    /// Fixes the schema of source `sid` from its first batch and starts the queries that were
    /// waiting for it (replaying what they missed). A running query reading the source in a
    /// union of another schema is an error; a query that cannot compile is marked failed.
    fn bind_source(&mut self, sid: SourceId, bound: Bound) -> Result<()> {
        for q in &self.queries {
            if let QueryState::Running { expected, .. } = &q.state {
                for (i, &s) in q.inputs.iter().enumerate() {
                    if s == sid && expected[i] != bound.stream {
                        return Err(Error::SchemaMismatch {
                            source_name: self.sources[sid as usize].config.name.clone(),
                            detail: format!(
                                "query '{}' reads it together with sources of another schema",
                                q.name
                            ),
                        });
                    }
                }
            }
        }
        self.sources[sid as usize].bound = Some(bound);
        for q in 0..self.queries.len() {
            if !self.queries[q].inputs.contains(&sid)
                || !matches!(self.queries[q].state, QueryState::Pending { .. })
                || !self.ready(&self.queries[q])
            {
                continue;
            }
            let backlog = match std::mem::replace(
                &mut self.queries[q].state,
                QueryState::Failed(String::new()),
            ) {
                QueryState::Pending { backlog } => backlog,
                _ => Vec::new(),
            };
            let spec = self.queries[q].spec();
            let result = match self.start_query(&spec) {
                Ok((id, state)) => {
                    self.queries[q].state = state;
                    backlog
                        .iter()
                        .try_for_each(|(input, msg)| self.cores.replay(id, *input, msg))
                }
                Err(e) => {
                    self.queries[q].state = QueryState::Failed(e.to_string());
                    Err(e)
                }
            };
            if let Err(e) = result {
                self.sources[sid as usize].bound = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Keeps `msg` (about source `sid`) for the queries still waiting for a schema.
    fn backlog(&mut self, sid: SourceId, msg: &CoreMessage) {
        for q in &mut self.queries {
            if let QueryState::Pending { backlog } = &mut q.state {
                for (i, &s) in q.inputs.iter().enumerate() {
                    if s == sid {
                        backlog.push((i, msg.clone()));
                    }
                }
            }
        }
    }

    /// Sends `msg` about source `sid` to the cores and to the waiting queries' backlogs
    /// (unless the cores refuse it under backpressure policy Drop).
    fn send(&mut self, sid: SourceId, msg: CoreMessage) -> Result<Admission> {
        let waiting = self
            .queries
            .iter()
            .any(|q| matches!(q.state, QueryState::Pending { .. }) && q.inputs.contains(&sid));
        if !waiting {
            return self.cores.run(msg);
        }
        let admitted = self.cores.run(msg.clone())?;
        if admitted == Admission::Accepted {
            self.backlog(sid, &msg);
        }
        Ok(admitted)
    }

    /// Declares a lookup table keyed on `def.on` with initial rows `rows`.
    pub fn add_table(&mut self, def: TableDef, rows: RecordBatch) -> Result<()> {
        self.check_open()?;
        self.check_definable("a lookup table")?;
        if self.tables.contains_key(&def.name) {
            return Err(Error::Duplicate {
                kind: "table",
                name: def.name,
            });
        }
        if def.on.is_empty() {
            return Err(Error::InvalidPlan(
                "a lookup table needs at least one key column".into(),
            ));
        }
        if let Some(ttl) = def.ttl_ms {
            if ttl <= 0 {
                return Err(Error::InvalidPlan(format!(
                    "a lookup ttl must be positive, got {ttl} ms"
                )));
            }
        }
        let key_columns = key_indices(&def.on, &def.schema, " in lookup table")?;
        let types: Vec<DataType> = key_columns
            .iter()
            .map(|&c| def.schema.field(c).data_type().clone())
            .collect();
        let mirror = TableMirror {
            def: def.clone(),
            encoder: KeyEncoder::new(&types)?,
            key_columns,
            index: TableIndex::default(),
            log: Vec::new(),
        };
        self.tables.insert(def.name.clone(), def.clone());
        self.mirrors.insert(def.name.clone(), mirror);
        // Part of the definition (a restart adds it again): not logged.
        self.apply_table_update(&def.name, rows, true)
    }

    /// Replaces (`replace`) or upserts rows of lookup table `name`.
    pub fn update_table(&mut self, name: &str, rows: RecordBatch, replace: bool) -> Result<()> {
        self.check_open()?;
        self.seal()?;
        if !self.mirrors.contains_key(name) {
            return Err(Error::InvalidPlan(format!("unknown lookup table '{name}'")));
        }
        let lsn = self.begin_input(|now, buf| {
            LogRecord::table(name, replace, now, &rows)?.encode_into(buf)
        })?;
        let applied = self.apply_table_update(name, rows, replace);
        self.end_input(lsn, true, applied)
    }

    /// Applies a table change (the part of [`update_table`](Self::update_table) a replay
    /// repeats).
    fn apply_table_update(&mut self, name: &str, rows: RecordBatch, replace: bool) -> Result<()> {
        let now = self.now();
        let mirror = self
            .mirrors
            .get_mut(name)
            .ok_or_else(|| Error::InvalidPlan(format!("unknown lookup table '{name}'")))?;
        let rows = conform(&rows, &mirror.def.schema, name)?;
        let msg = mirror.record(rows, replace, now)?;
        self.cores.run(msg).map(|_| ())
    }

    /// The distinct keys of `batch` (rows about to be pushed) that lookup table `name` lacks
    /// or holds expired; `None` when `batch` lacks the key columns or nothing is missing.
    pub fn table_misses(&self, name: &str, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let mirror = self
            .mirrors
            .get(name)
            .ok_or_else(|| Error::InvalidPlan(format!("unknown lookup table '{name}'")))?;
        let schema = batch.schema();
        let Ok(cols) = key_indices(&mirror.def.on, &schema, "") else {
            return Ok(None);
        };
        let mut keys = Vec::with_capacity(cols.len());
        let mut fields = Vec::with_capacity(cols.len());
        for (&c, &tc) in cols.iter().zip(&mirror.key_columns) {
            let want = mirror.def.schema.field(tc);
            match cast_key(batch.column(c), want.data_type()) {
                Ok(k) => keys.push(k),
                Err(_) => return Ok(None),
            }
            fields.push(want.clone());
        }
        let encoded = mirror.encoder.encode(&keys)?;
        let rows = mirror
            .index
            .missing(&encoded, self.now(), mirror.def.ttl_ms);
        if rows.is_empty() {
            return Ok(None);
        }
        let idx = arrow_array::UInt32Array::from(rows);
        let columns = keys
            .iter()
            .map(|k| arrow_select::take::take(k.as_ref(), &idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?))
    }

    /// Pushes batches to a source. All batches are validated first; if any is invalid nothing
    /// is applied. Returns after the reactor has processed them.
    pub fn push(&mut self, source: &str, batches: &[RecordBatch]) -> Result<()> {
        self.push_seq(source, batches, None).map(|_| ())
    }

    /// [`push`](Self::push) with the producer's sequence number `seq` (increasing per source):
    /// a push whose `seq` is at or below the highest applied so far is recognised as a retry
    /// (after a crash or a reconnect) and ignored. Returns whether the batches were applied.
    /// With a state directory the push is in the write-ahead log when this returns.
    pub fn push_seq(
        &mut self,
        source: &str,
        batches: &[RecordBatch],
        seq: Option<u64>,
    ) -> Result<bool> {
        let (applied, pending) = self.push_seq_deferred(source, batches, seq)?;
        if let Some(p) = pending {
            let waited = p.wait();
            self.finish_commit(waited)?;
        }
        Ok(applied)
    }

    /// [`push_seq`](Self::push_seq) without waiting for its log record: the push is applied
    /// and logged, and the returned [`PendingCommit`] (with a state directory) waits until the
    /// record is durable. Wait for it *without* holding whatever guards the engine, then
    /// pass the result to [`finish_commit`](Self::finish_commit): meanwhile other threads'
    /// pushes are logged too and share the same sync (group commit across producers). The
    /// push counts as acknowledged only once the wait succeeded.
    pub fn push_seq_deferred(
        &mut self,
        source: &str,
        batches: &[RecordBatch],
        seq: Option<u64>,
    ) -> Result<(bool, Option<PendingCommit>)> {
        self.check_open()?;
        self.seal()?;
        let sid = self.source_id(source)?;
        if let (Some(s), Some(last)) = (seq, self.sources[sid as usize].last_seq) {
            if s <= last {
                // Applied before; maybe by a push still waiting for its sync on another
                // thread: the retry is acknowledged only once everything logged is durable.
                return Ok((false, self.pending_all()?));
            }
        }
        if self.sources[sid as usize].ended {
            return Err(Error::Closed(format!(
                "source '{source}' has ended (flush() marks the end of input); create a new Engine to process more data"
            )));
        }
        let Some(first) = batches.first() else {
            return Ok((true, None));
        };
        // Every batch is validated against the source's schema (or, on the first push, the
        // schema the first batch would fix) before anything is applied.
        let src = &self.sources[sid as usize];
        let (bound, fresh) = match &src.bound {
            Some(b) => (b.clone(), false),
            None => (src.bind(&first.schema())?, true),
        };
        let prepared = batches
            .iter()
            .map(|b| src.prepare(&bound, b))
            .collect::<Result<Vec<_>>>()?;
        let lsn =
            self.begin_input(|now, buf| log_record::encode_push(buf, source, seq, now, batches))?;
        let applied = self.apply_push(sid, bound, fresh, prepared, seq);
        self.end_input(lsn, false, applied)?;
        let pending = match (lsn, &self.durable) {
            (Some(lsn), Some(d)) => Some(PendingCommit::new(d, lsn)),
            _ => None,
        };
        Ok((true, pending))
    }

    /// Waits for everything logged so far (every source's pushes, table updates, flushes)
    /// to be durable, like [`PendingCommit::wait`]: `None` without a state directory.
    /// [`Error::Closed`] once the engine is closed or stopped by an error (after a failure
    /// nothing more can become durable: say so rather than report nothing to wait for).
    pub fn pending_all(&self) -> Result<Option<PendingCommit>> {
        self.check_open()?;
        Ok(self
            .durable
            .as_ref()
            .map(|d| PendingCommit::new(d, d.wal.last_lsn())))
    }

    /// Ends a push made with [`push_seq_deferred`](Self::push_seq_deferred) once its
    /// [`PendingCommit::wait`] returned `waited`: a failed wait stops the engine (the push
    /// was applied but is not durable, so nothing more may be acknowledged).
    pub fn finish_commit(&mut self, waited: Result<()>) -> Result<()> {
        match waited {
            Ok(()) => Ok(()),
            Err(e) if self.failure.is_some() => Err(e),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Applies a validated push (the part of [`push_seq`](Self::push_seq) a replay repeats).
    fn apply_push(
        &mut self,
        sid: SourceId,
        bound: Bound,
        fresh: bool,
        prepared: Vec<source::Prepared>,
        seq: Option<u64>,
    ) -> Result<()> {
        if fresh {
            self.bind_source(sid, bound)?;
        }
        if seq.is_some() {
            self.sources[sid as usize].last_seq = seq;
        }
        self.tick()?;
        for p in prepared {
            if p.batch.num_rows() == 0 {
                continue;
            }
            let now = self.now();
            let rows = p.batch.num_rows() as u64;
            let admitted = self.send(
                sid,
                CoreMessage::Data {
                    source: sid,
                    batch: p.batch,
                },
            )?;
            let src = &mut self.sources[sid as usize];
            if admitted == Admission::Dropped {
                // Refused whole: as if never pushed, so it does not move the watermark.
                src.dropped_rows += rows;
                continue;
            }
            src.rows += rows;
            src.batches += 1;
            // Rows beyond the future horizon are processed but do not move the watermark.
            let mut max_time = p.max_time;
            if let Some(horizon) = src.generator.horizon(now).filter(|&h| p.max_time > h) {
                let (within, beyond) = max_at_or_below(p.times.values(), horizon);
                max_time = within.unwrap_or(Timestamp::MIN);
                src.generator.record_future_rows(beyond);
            }
            if let Some(wm) = src.generator.on_batch(max_time, p.punctuation, now) {
                self.send(
                    sid,
                    CoreMessage::Watermark {
                        source: sid,
                        ts: wm,
                    },
                )?;
            }
        }
        self.mark_idle_sources()
    }

    /// Tells the operators the processing time (periodic emits, lookup TTLs), when one of
    /// them reads it.
    fn tick(&mut self) -> Result<()> {
        if !self.ticking {
            return Ok(());
        }
        let now = self.now();
        self.cores.run(CoreMessage::Tick { now }).map(|_| ())
    }

    /// Marks sources idle whose idle timeout has passed (processing time). Called by `push`
    /// and `take_output`; callers may also call it directly (with a state directory the
    /// check is logged, like every input).
    pub fn check_idle(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.seal()?;
        if !self
            .sources
            .iter()
            .any(|s| s.config.idle_timeout_ms.is_some())
        {
            return Ok(());
        }
        let lsn = self.begin_input(|now, buf| LogRecord::Idle { now }.encode_into(buf))?;
        let applied = self.mark_idle_sources();
        self.end_input(lsn, false, applied)
    }

    /// Marks sources idle whose idle timeout has passed at the current processing time.
    fn mark_idle_sources(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let now = self.now();
        for sid in 0..self.sources.len() {
            let src = &mut self.sources[sid];
            if !src.ended && src.generator.check_idle(now) {
                self.send(
                    sid as SourceId,
                    CoreMessage::SourceIdle {
                        source: sid as SourceId,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// End of input for every source: all windows close and emit. Further pushes fail.
    pub fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        self.seal()?;
        let lsn = self.begin_input(|now, buf| LogRecord::Flush { now }.encode_into(buf))?;
        let applied = self.apply_flush();
        self.end_input(lsn, true, applied)?;
        // The last results reach the sinks (a checkpoint with a state directory).
        self.publish_sinks()
    }

    /// Ends every source (the part of [`flush`](Self::flush) a replay repeats).
    fn apply_flush(&mut self) -> Result<()> {
        for sid in 0..self.sources.len() {
            if !self.sources[sid].ended {
                self.sources[sid].ended = true;
                self.send(
                    sid as SourceId,
                    CoreMessage::EndOfInput {
                        source: sid as SourceId,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Closes the engine; later calls fail with [`Error::Closed`]. Results already produced
    /// can still be taken. Core threads are drained and joined.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        // What the sinks have not published yet is published (a checkpoint with a state
        // directory), while the engine still runs.
        let published = self.publish_sinks();
        self.closed = true;
        // Gather what the cores hold, so it can still be taken, then stop them.
        let gathered = self.cores.gather();
        let stopped = self.cores.shutdown();
        // The log is synced and the state directory released for the next engine.
        let released = match self.durable.take() {
            Some(d) => {
                self.final_durability = Some(d.metrics());
                d.close()
            }
            None => Ok(()),
        };
        self.release_sinks();
        published.and(gathered).and(stopped).and(released)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn running(&self, query: &str) -> Result<Option<(QueryId, SchemaRef, SchemaRef)>> {
        let q = self
            .query_ids
            .get(query)
            .ok_or_else(|| Error::InvalidPlan(format!("unknown query '{query}'")))?;
        match &self.queries[*q].state {
            QueryState::Running {
                id, output, late, ..
            } => Ok(Some((*id, output.clone(), late.clone()))),
            QueryState::Pending { .. } => Ok(None),
            QueryState::Failed(m) => Err(Error::InvalidPlan(format!(
                "query '{query}' failed to start: {m}"
            ))),
        }
    }

    /// Moves the new rows of one of the query's outboxes out, with their schema (hidden
    /// column removed). `None` while the query waits for a schema.
    pub fn take(
        &mut self,
        query: &str,
        outbox: Outbox,
    ) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        if let Some(sink) = self
            .sinks
            .feeding(query)
            .filter(|_| outbox == Outbox::Results)
        {
            return Err(Error::InvalidPlan(format!(
                "the results of query '{query}' go to sink '{sink}'; read them there"
            )));
        }
        if outbox == Outbox::Results && !self.closed {
            self.seal()?;
            self.poll_time()?;
        }
        self.take_rows(query, outbox)
    }

    /// Moves the rows gathered so far in one of the query's outboxes out, without the hidden
    /// column (what [`take`](Self::take) hands out, and what sinks are fed).
    fn take_rows(
        &mut self,
        query: &str,
        outbox: Outbox,
    ) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        let Some((id, output, late)) = self.running(query)? else {
            return Ok(None);
        };
        let schema = match outbox {
            Outbox::Results => output,
            Outbox::Late => late,
        };
        let batches = self.cores.take(id, outbox)?;
        let batches = batches
            .into_iter()
            .map(|b| strip_batch(b, &schema))
            .collect::<Result<_>>()?;
        Ok(Some((schema, batches)))
    }

    /// Moves the query's new results out (without the hidden column). Empty while pending.
    pub fn take_output(&mut self, query: &str) -> Result<Vec<RecordBatch>> {
        Ok(self
            .take(query, Outbox::Results)?
            .map(|(_, b)| b)
            .unwrap_or_default())
    }

    /// Moves the query's new late rows out (without the hidden column).
    pub fn take_late(&mut self, query: &str) -> Result<Vec<RecordBatch>> {
        Ok(self
            .take(query, Outbox::Late)?
            .map(|(_, b)| b)
            .unwrap_or_default())
    }

    /// Result schema of a query (`None` while it waits for a schema).
    pub fn output_schema(&self, query: &str) -> Result<Option<SchemaRef>> {
        Ok(self.running(query)?.map(|(_, s, _)| s))
    }

    /// Schema of a query's late rows (`None` while it waits for a schema).
    pub fn late_schema(&self, query: &str) -> Result<Option<SchemaRef>> {
        Ok(self.running(query)?.map(|(_, _, l)| l))
    }

    /// Counters of every source.
    pub fn source_metrics(&self) -> Vec<SourceMetrics> {
        self.sources
            .iter()
            .map(|s| SourceMetrics {
                name: s.config.name.clone(),
                rows: s.rows,
                batches: s.batches,
                dropped_rows: s.dropped_rows,
                watermark: s.generator.current(),
                max_event_time: s.generator.max_event_ts(),
                idle: s.generator.is_idle(),
                future_rows: s.generator.future_rows(),
                ended: s.ended,
            })
            .collect()
    }

    /// Counters of every query (with cores > 1: after the cores finished what was pushed).
    pub fn query_reports(&mut self) -> Result<Vec<QueryReport>> {
        let mut reports = Vec::with_capacity(self.queries.len());
        for q in &self.queries {
            let (state, metrics) = match &q.state {
                QueryState::Running { id, .. } => {
                    let m = self.cores.metrics(*id)?;
                    // Every input ended: the watermark is +infinity and nothing is open.
                    let state = if m.watermark == Some(Timestamp::MAX) {
                        "finished"
                    } else {
                        "running"
                    };
                    (state.to_string(), m)
                }
                QueryState::Pending { .. } => ("pending".to_string(), QueryMetrics::default()),
                QueryState::Failed(m) => (format!("failed: {m}"), QueryMetrics::default()),
            };
            reports.push(QueryReport {
                name: q.name.clone(),
                state,
                metrics,
            });
        }
        Ok(reports)
    }

    /// Counters of each core (empty with one core: it runs on the caller's thread).
    pub fn core_metrics(&self) -> Vec<CoreMetrics> {
        self.cores.core_metrics()
    }

    /// Backpressure counters (`None` with one core: pushes run synchronously).
    pub fn credit_metrics(&self) -> Option<CreditMetrics> {
        self.cores.credit_metrics()
    }

    /// How each input of a running query is spread over the cores (`None` with one core or
    /// while the query waits for a schema).
    pub fn partitioning(&self, query: &str) -> Result<Option<Vec<Partitioning>>> {
        Ok(self
            .running(query)?
            .and_then(|(id, _, _)| self.cores.partitioning(id).map(<[_]>::to_vec)))
    }

    /// Makes core `core` sleep for `ms` milliseconds before its next command. For tests of
    /// backpressure; does nothing with one core.
    #[doc(hidden)]
    pub fn stall_core(&mut self, core: usize, ms: u64) -> Result<()> {
        self.cores.stall(core, std::time::Duration::from_millis(ms))
    }
}

/// `rows` with exactly the columns of table `table`'s `schema` (by name, in its order, cast
/// where the types differ).
fn conform(rows: &RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let c = rows.column_by_name(f.name()).ok_or_else(|| {
            Error::column_not_found(
                f.name(),
                &format!(" in the rows for lookup table '{table}'"),
                &rows.schema(),
            )
        })?;
        columns.push(if c.data_type() == f.data_type() {
            c.clone()
        } else {
            arrow_cast::cast(c, f.data_type()).map_err(|e| Error::SchemaMismatch {
                source_name: format!("lookup table '{table}'"),
                detail: format!("column '{}': {e}", f.name()),
            })?
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
