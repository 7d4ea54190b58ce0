//! The reactor: one single-threaded event loop that runs queries.
//!
//! It owns, per query, the operator chain, a [`WatermarkTracker`](crate::time::tracker::WatermarkTracker) over the query's sources and
//! a [`TimerWheel`](crate::time::timer_wheel::TimerWheel) of event-time timers. Messages are queued with [`Reactor::submit`] and
//! processed by [`Reactor::poll`], which takes a [`Budget`] so one call never runs unbounded.
//!
//! The reactor is event-driven, never tick-driven: a `Data` message runs through the chain
//! at once, and a `Watermark` message that advances a query's combined watermark fires, in
//! deadline order, every timer it passes (closing windows) before `poll` returns. A result is
//! therefore in the query's outbox as soon as the message that completes it is processed.
//!
//! Ordering contract with the caller: for each batch, send `Data` *then* the `Watermark` the
//! batch's own times produce. Rows are judged late against the watermark in force when `Data`
//! is processed, and only afterwards does the batch move the watermark.
//!
//! The reactor never knows about Python, threads or where messages come from, and never
//! allocates per row: operators receive whole batches and write into reused buffers.

mod query;

use std::collections::VecDeque;

use arrow_array::RecordBatch;

pub use query::{Node, QueryGraph, QueryMetrics, QueryRuntime, Target};

use crate::error::Result;
use crate::time::Timestamp;

/// Index of a source in the engine.
pub type SourceId = u32;
/// Index of a query in its reactor.
pub type QueryId = u32;

/// A message into a reactor.
#[derive(Debug, Clone)]
pub enum CoreMessage {
    /// A stream batch of a source (user columns plus the hidden event-time column).
    Data {
        /// The source.
        source: SourceId,
        /// The rows.
        batch: RecordBatch,
    },
    /// The source's watermark advanced to `ts`.
    Watermark {
        /// The source.
        source: SourceId,
        /// The new watermark.
        ts: Timestamp,
    },
    /// The source has had no data for its idle timeout: stop waiting for it.
    SourceIdle {
        /// The source.
        source: SourceId,
    },
    /// The source has ended: its watermark is +infinity from now on.
    EndOfInput {
        /// The source.
        source: SourceId,
    },
    /// Processing time is now `now` (epoch ms): drives processing-time emits.
    Tick {
        /// Processing time.
        now: Timestamp,
    },
    /// A lookup table changed: `replace` sets its rows to `rows`; otherwise they are upserted.
    TableUpdate {
        /// Table name.
        table: std::sync::Arc<str>,
        /// The rows.
        rows: RecordBatch,
        /// Replace the whole table (else upsert).
        replace: bool,
        /// Processing time of the change.
        now: Timestamp,
    },
}

/// How much work one [`Reactor::poll`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Maximum number of messages processed.
    pub messages: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { messages: 64 }
    }
}

/// What one [`Reactor::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollOutcome {
    /// Messages processed.
    pub processed: usize,
    /// Messages still queued.
    pub pending: usize,
}

/// The single-threaded event loop. See the module docs.
pub struct Reactor {
    inbox: VecDeque<CoreMessage>,
    capacity: usize,
    queries: Vec<QueryRuntime>,
    /// For each source: the queries reading it and the source's input index in each.
    routes: Vec<Vec<(usize, usize)>>,
}

impl Reactor {
    /// A reactor whose inbox holds at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Reactor {
            inbox: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            queries: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Adds a query reading `inputs` (sources, in tracker order) through `graph` (whose
    /// `inputs` say where each source's batches enter).
    pub fn add_query(&mut self, inputs: &[SourceId], graph: QueryGraph) -> QueryId {
        let id = self.queries.len();
        for (input, &s) in inputs.iter().enumerate() {
            let s = s as usize;
            if self.routes.len() <= s {
                self.routes.resize_with(s + 1, Vec::new);
            }
            self.routes[s].push((id, input));
        }
        self.queries.push(QueryRuntime::new(graph));
        id as QueryId
    }

    /// Queues a message. Fails (and hands the message back) when the inbox is full: the
    /// caller must [`poll`](Self::poll) first.
    pub fn submit(&mut self, msg: CoreMessage) -> std::result::Result<(), CoreMessage> {
        if self.inbox.len() >= self.capacity {
            return Err(msg);
        }
        self.inbox.push_back(msg);
        Ok(())
    }

    /// Messages waiting in the inbox.
    pub fn pending(&self) -> usize {
        self.inbox.len()
    }

    /// Processes up to `budget.messages` queued messages. On an operator error the failing
    /// message is consumed and the error returned; later messages stay queued.
    pub fn poll(&mut self, budget: Budget) -> Result<PollOutcome> {
        let mut processed = 0;
        while processed < budget.messages {
            let Some(msg) = self.inbox.pop_front() else {
                break;
            };
            processed += 1;
            self.handle(msg)?;
        }
        Ok(PollOutcome {
            processed,
            pending: self.inbox.len(),
        })
    }

    /// Submits `msg` and polls until the inbox is empty: the synchronous driver used when the
    /// reactor runs on the caller's thread.
    pub fn run(&mut self, msg: CoreMessage, budget: Budget) -> Result<()> {
        let mut msg = msg;
        loop {
            match self.submit(msg) {
                Ok(()) => break,
                Err(back) => {
                    msg = back;
                    self.poll(budget)?;
                }
            }
        }
        while self.poll(budget)?.pending > 0 {}
        Ok(())
    }

    fn handle(&mut self, msg: CoreMessage) -> Result<()> {
        let source = match &msg {
            CoreMessage::Data { source, .. }
            | CoreMessage::Watermark { source, .. }
            | CoreMessage::SourceIdle { source }
            | CoreMessage::EndOfInput { source } => *source,
            CoreMessage::Tick { .. } | CoreMessage::TableUpdate { .. } => {
                for q in &mut self.queries {
                    Self::deliver(q, 0, &msg)?;
                }
                return Ok(());
            }
        };
        let n = self.routes.get(source as usize).map_or(0, Vec::len);
        // Usually one or two queries per source; iterate by index to keep borrows simple.
        for k in 0..n {
            let (q, input) = self.routes[source as usize][k];
            Self::deliver(&mut self.queries[q], input, &msg)?;
        }
        Ok(())
    }

    fn deliver(query: &mut QueryRuntime, input: usize, msg: &CoreMessage) -> Result<()> {
        match msg {
            CoreMessage::Data { batch, .. } => query.on_data(input, batch),
            CoreMessage::Watermark { ts, .. } => query.on_source_watermark(input, *ts),
            CoreMessage::SourceIdle { .. } => query.on_source_idle(input),
            CoreMessage::EndOfInput { .. } => query.on_end_of_input(input),
            CoreMessage::Tick { now } => query.on_tick(*now),
            CoreMessage::TableUpdate {
                table,
                rows,
                replace,
                now,
            } => query.on_table_update(table, rows, *replace, *now),
        }
    }

    /// Hands `msg` (about the query's input number `input`) to one query only, at once: used
    /// to replay what a query missed while it waited for its inputs' schemas.
    pub fn replay(&mut self, query: QueryId, input: usize, msg: &CoreMessage) -> Result<()> {
        match self.queries.get_mut(query as usize) {
            Some(q) => Self::deliver(q, input, msg),
            None => Ok(()),
        }
    }

    /// The state of every query, in query order (see `QueryRuntime::snapshot`): taken between
    /// messages, after the outputs have been gathered.
    pub fn snapshot(&self) -> Result<Vec<Vec<u8>>> {
        self.queries.iter().map(QueryRuntime::snapshot).collect()
    }

    /// Puts back the state of query `query` saved by [`snapshot`](Self::snapshot).
    pub fn restore_query(&mut self, query: QueryId, state: &[u8]) -> Result<()> {
        match self.queries.get_mut(query as usize) {
            Some(q) => q.restore(state),
            None => Err(crate::error::Error::Snapshot(format!(
                "the checkpoint holds a query {query} this pipeline does not have"
            ))),
        }
    }

    /// Moves the query's results out (empty if none).
    pub fn take_output(&mut self, query: QueryId) -> Vec<RecordBatch> {
        self.queries
            .get_mut(query as usize)
            .map(QueryRuntime::take_output)
            .unwrap_or_default()
    }

    /// Moves the query's late rows out (empty if none).
    pub fn take_late(&mut self, query: QueryId) -> Vec<RecordBatch> {
        self.queries
            .get_mut(query as usize)
            .map(QueryRuntime::take_late)
            .unwrap_or_default()
    }

    /// Counters of one query.
    pub fn query_metrics(&self, query: QueryId) -> Option<QueryMetrics> {
        self.queries.get(query as usize).map(QueryRuntime::metrics)
    }

    /// Number of queries.
    pub fn query_count(&self) -> usize {
        self.queries.len()
    }
}
