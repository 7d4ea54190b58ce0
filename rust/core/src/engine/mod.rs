//! The `Engine`: the user-facing entry point of the core. It owns the sources, the query
//! registry and the reactor, validates every push before applying it, turns pushes into
//! reactor messages in the order the reactor's contract requires (a batch's `Data`, then the
//! watermark that batch produces), and hands results out.
//!
//! In this version the reactor runs on the caller's thread: `push` returns after the batch
//! has been processed, so results that the batch completes are ready at once. The engine never
//! reads the wall clock except to drive idle-source detection and the future-timestamp cap.
//!
//! The hidden column [`TIME_COLUMN`] (event time as int64 epoch ms) travels with every stream
//! batch inside the engine and is removed from everything handed out.

mod plan;
mod source;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Schema, SchemaRef};

pub use plan::{compile, Compiled, EmitSpec, OpSpec, QueryPlan};
pub use source::SourceConfig;

use crate::error::{Error, Result};
use crate::reactor::{Budget, CoreMessage, QueryId, QueryMetrics, Reactor, SourceId};
use crate::time::clock::{Clock, SystemClock};
use crate::time::convert::max_at_or_below;
use crate::time::Timestamp;
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            inbox_capacity: 1024,
            budget: Budget::default(),
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
    /// Waiting for the first schema of one of its inputs.
    Pending,
    Running {
        id: QueryId,
        input: SchemaRef,
        output: SchemaRef,
        late: SchemaRef,
    },
    Failed(String),
}

struct QueryEntry {
    name: String,
    plan: QueryPlan,
    inputs: Vec<SourceId>,
    state: QueryState,
}

/// The engine. See the module docs.
pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    sources: Vec<Source>,
    source_ids: HashMap<String, SourceId>,
    queries: Vec<QueryEntry>,
    query_ids: HashMap<String, usize>,
    reactor: Reactor,
    closed: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default(), Arc::new(SystemClock))
    }
}

impl Engine {
    /// An engine reading processing time from `clock`.
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>) -> Self {
        Engine {
            config,
            clock,
            sources: Vec::new(),
            source_ids: HashMap::new(),
            queries: Vec::new(),
            query_ids: HashMap::new(),
            reactor: Reactor::new(config.inbox_capacity),
            closed: false,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed(
                "the engine is closed; create a new Engine".into(),
            ));
        }
        Ok(())
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
        if self.source_ids.contains_key(&config.name) {
            return Err(Error::Duplicate {
                kind: "source",
                name: config.name,
            });
        }
        let id = SourceId::try_from(self.sources.len())
            .map_err(|_| Error::InvalidPlan("too many sources".into()))?;
        let name = config.name.clone();
        self.sources.push(Source::new(config, self.clock.now_ms())?);
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

    /// Registers a query. It is compiled now if one of its inputs has a schema, otherwise on
    /// the first push to one of them (before that push's rows are processed, so none is missed).
    pub fn add_query(&mut self, name: &str, plan: QueryPlan) -> Result<()> {
        self.check_open()?;
        if self.query_ids.contains_key(name) {
            return Err(Error::Duplicate {
                kind: "query",
                name: name.to_string(),
            });
        }
        if plan.inputs.is_empty() {
            return Err(Error::InvalidPlan(
                "a query needs at least one source".into(),
            ));
        }
        let inputs = plan
            .inputs
            .iter()
            .map(|s| self.source_id(s))
            .collect::<Result<Vec<_>>>()?;
        let mut state = QueryState::Pending;
        let known = inputs
            .iter()
            .find_map(|&s| self.sources[s as usize].bound.clone());
        if let Some(bound) = known {
            let time_type = bound.user.field(bound.time_index).data_type().clone();
            state = self.start_query(name, &plan, &inputs, &bound, &time_type)?;
        }
        let entry = QueryEntry {
            name: name.to_string(),
            plan,
            inputs,
            state,
        };
        self.query_ids.insert(name.to_string(), self.queries.len());
        self.queries.push(entry);
        Ok(())
    }

    /// Compiles query `name` over `bound` and starts it in the reactor; every input whose
    /// schema is already known must agree. Returns the query's running state.
    fn start_query(
        &mut self,
        name: &str,
        plan: &QueryPlan,
        inputs: &[SourceId],
        bound: &Bound,
        time_type: &DataType,
    ) -> Result<QueryState> {
        for &s in inputs {
            if let Some(b) = &self.sources[s as usize].bound {
                if b.stream != bound.stream {
                    return Err(Error::InvalidPlan(format!(
                        "query '{name}' reads sources with different schemas ('{}' differs); a union needs identical schemas",
                        self.sources[s as usize].config.name
                    )));
                }
            }
        }
        let compiled = compile(plan, bound.stream.clone(), time_type).map_err(|e| match e {
            Error::InvalidPlan(m) => Error::InvalidPlan(format!("query '{name}': {m}")),
            other => other,
        })?;
        let late = late_schema(plan, &compiled, &bound.stream)?;
        let id = self.reactor.add_query(inputs, compiled.operators);
        Ok(QueryState::Running {
            id,
            input: bound.stream.clone(),
            output: compiled.output_schema,
            late,
        })
    }

    /// Fixes the schema of source `sid` from its first batch, starting pending queries. On any
    /// error nothing changes except that a query that cannot run on this schema is marked failed.
    fn bind_source(&mut self, sid: SourceId, bound: Bound) -> Result<()> {
        let time_type = bound.user.field(bound.time_index).data_type().clone();
        for q in 0..self.queries.len() {
            if !self.queries[q].inputs.contains(&sid) {
                continue;
            }
            match &self.queries[q].state {
                QueryState::Running { input, .. } if *input != bound.stream => {
                    return Err(Error::SchemaMismatch {
                        source_name: self.sources[sid as usize].config.name.clone(),
                        detail: format!(
                            "query '{}' reads it together with sources of another schema",
                            self.queries[q].name
                        ),
                    });
                }
                QueryState::Pending => {
                    let (name, plan, inputs) = {
                        let e = &self.queries[q];
                        (e.name.clone(), e.plan.clone(), e.inputs.clone())
                    };
                    match self.start_query(&name, &plan, &inputs, &bound, &time_type) {
                        Ok(state) => self.queries[q].state = state,
                        Err(e) => {
                            self.queries[q].state = QueryState::Failed(e.to_string());
                            return Err(e);
                        }
                    }
                }
                _ => {}
            }
        }
        self.sources[sid as usize].bound = Some(bound);
        Ok(())
    }

    /// Pushes batches to a source. All batches are validated first; if any is invalid nothing
    /// is applied. Returns after the reactor has processed them.
    pub fn push(&mut self, source: &str, batches: &[RecordBatch]) -> Result<()> {
        self.check_open()?;
        let sid = self.source_id(source)?;
        if self.sources[sid as usize].ended {
            return Err(Error::Closed(format!(
                "source '{source}' has ended (flush() marks the end of input); create a new Engine to process more data"
            )));
        }
        let Some(first) = batches.first() else {
            return Ok(());
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
        if fresh {
            self.bind_source(sid, bound)?;
        }
        let budget = self.config.budget;
        for p in prepared {
            if p.batch.num_rows() == 0 {
                continue;
            }
            let now = self.clock.now_ms();
            let src = &mut self.sources[sid as usize];
            src.rows += p.batch.num_rows() as u64;
            src.batches += 1;
            self.reactor.run(
                CoreMessage::Data {
                    source: sid,
                    batch: p.batch,
                },
                budget,
            )?;
            let src = &mut self.sources[sid as usize];
            // Rows beyond the future horizon are processed but do not move the watermark.
            let mut max_time = p.max_time;
            if let Some(horizon) = src.generator.horizon(now).filter(|&h| p.max_time > h) {
                let (within, beyond) = max_at_or_below(p.times.values(), horizon);
                max_time = within.unwrap_or(Timestamp::MIN);
                src.generator.record_future_rows(beyond);
            }
            if let Some(wm) = src.generator.on_batch(max_time, p.punctuation, now) {
                self.reactor.run(
                    CoreMessage::Watermark {
                        source: sid,
                        ts: wm,
                    },
                    budget,
                )?;
            }
        }
        self.check_idle()
    }

    /// Marks sources idle whose idle timeout has passed (processing time). Called by `push`
    /// and `take_output`; callers may also call it directly.
    pub fn check_idle(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let now = self.clock.now_ms();
        for sid in 0..self.sources.len() {
            let src = &mut self.sources[sid];
            if !src.ended && src.generator.check_idle(now) {
                self.reactor.run(
                    CoreMessage::SourceIdle {
                        source: sid as SourceId,
                    },
                    self.config.budget,
                )?;
            }
        }
        Ok(())
    }

    /// End of input for every source: all windows close and emit. Further pushes fail.
    pub fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        for sid in 0..self.sources.len() {
            if !self.sources[sid].ended {
                self.sources[sid].ended = true;
                self.reactor.run(
                    CoreMessage::EndOfInput {
                        source: sid as SourceId,
                    },
                    self.config.budget,
                )?;
            }
        }
        Ok(())
    }

    /// Closes the engine; later calls fail with [`Error::Closed`]. Results already produced
    /// can still be taken.
    pub fn close(&mut self) {
        self.closed = true;
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
            QueryState::Pending => Ok(None),
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
        if outbox == Outbox::Results {
            self.check_idle()?;
        }
        let Some((id, output, late)) = self.running(query)? else {
            return Ok(None);
        };
        let (schema, batches) = match outbox {
            Outbox::Results => (output, self.reactor.take_output(id)),
            Outbox::Late => (late, self.reactor.take_late(id)),
        };
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
                watermark: s.generator.current(),
                max_event_time: s.generator.max_event_ts(),
                idle: s.generator.is_idle(),
                future_rows: s.generator.future_rows(),
                ended: s.ended,
            })
            .collect()
    }

    /// Counters of every query.
    pub fn query_reports(&self) -> Vec<QueryReport> {
        self.queries
            .iter()
            .map(|q| {
                let (state, metrics) = match &q.state {
                    QueryState::Running { id, .. } => {
                        let m = self.reactor.query_metrics(*id).unwrap_or_default();
                        // Every input ended: the watermark is +infinity and nothing is open.
                        let state = if m.watermark == Some(Timestamp::MAX) {
                            "finished"
                        } else {
                            "running"
                        };
                        (state.to_string(), m)
                    }
                    QueryState::Pending => ("pending".to_string(), QueryMetrics::default()),
                    QueryState::Failed(m) => (format!("failed: {m}"), QueryMetrics::default()),
                };
                QueryReport {
                    name: q.name.clone(),
                    state,
                    metrics,
                }
            })
            .collect()
    }
}

/// Schema of the rows a query's window step would route to its late output: the stream
/// entering that step, without the hidden column.
fn late_schema(plan: &QueryPlan, compiled: &Compiled, input: &SchemaRef) -> Result<SchemaRef> {
    let mut schema = input.clone();
    for (spec, op) in plan.ops.iter().zip(&compiled.operators) {
        if matches!(spec, OpSpec::WindowAggregate { .. }) {
            break;
        }
        schema = op.output_schema();
    }
    Ok(strip_schema(&schema))
}
