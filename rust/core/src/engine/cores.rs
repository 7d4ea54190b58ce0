//! Where the engine's queries run: inline on the caller's thread (`cores = 1`), or on the
//! [`ThreadPerCoreRuntime`] (`cores > 1`). The engine talks to both through [`Cores`], so the
//! rest of the engine (validation, watermark generation, tables, backlogs) is the same for
//! both; the property tests compare their results.
//!
//! Threaded mode sends each source batch to the queries reading it by their [`Partitioning`]:
//! for key-routed batches the router lists each core's rows and each core copies its own out
//! of the shared batch (so the copying runs on the cores); stateless rows are sliced here; a query that
//! cannot be split gets the batch on its one core. Each such command holds a credit; and broadcasts every other message to all cores in the order the engine sends
//! them. Results stay on the cores until the engine needs them: [`Cores::take`] and
//! [`Cores::metrics`] sync first when anything was sent since the last sync, so a caller
//! sees every effect of the pushes before it, exactly as with one core. An error of a core
//! (an operator failing on a batch) comes back with the next sync.

use arrow_array::RecordBatch;

use super::partition::Partitioning;
use super::Outbox;
use crate::error::{Error, Result};
use crate::reactor::{Budget, CoreMessage, QueryGraph, QueryId, QueryMetrics, Reactor, SourceId};
use crate::runtime::{
    CoreCommand, CoreMetrics, KeyRouter, RuntimeConfig, Selection, ThreadPerCoreRuntime,
};
use crate::sync::credit::CreditMetrics;

/// A route of a source's data: a query input and how its rows are spread.
struct Route {
    query: QueryId,
    input: usize,
    part: Partitioning,
}

/// The threaded side.
pub(super) struct Threaded {
    rt: ThreadPerCoreRuntime,
    router: KeyRouter,
    /// Per source.
    routes: Vec<Vec<Route>>,
    /// Per query: the partitioning of each input.
    parts: Vec<Vec<Partitioning>>,
    /// Per query: results and late rows gathered from the cores, not yet taken.
    gathered: Vec<(Vec<RecordBatch>, Vec<RecordBatch>)>,
    /// Per query: counters at the last sync, summed over cores.
    metrics: Vec<QueryMetrics>,
    /// Something was sent since the last sync.
    dirty: bool,
}

/// Inline reactor or thread-per-core runtime. See the module docs.
pub(super) enum Cores {
    Inline(Reactor, Budget),
    Threaded(Box<Threaded>),
}

/// Whether a routed batch was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    Accepted,
    /// Refused by backpressure policy Drop: nothing was sent.
    Dropped,
}

impl Cores {
    /// One inline reactor.
    pub fn inline(capacity: usize, budget: Budget) -> Self {
        Cores::Inline(Reactor::new(capacity), budget)
    }

    /// The threaded runtime.
    pub fn threaded(config: RuntimeConfig) -> Result<Self> {
        let rt = ThreadPerCoreRuntime::start(config)?;
        Ok(Cores::Threaded(Box::new(Threaded {
            router: KeyRouter::new(rt.cores()),
            rt,
            routes: Vec::new(),
            parts: Vec::new(),
            gathered: Vec::new(),
            metrics: Vec::new(),
            dirty: false,
        })))
    }

    /// Number of cores.
    pub fn count(&self) -> usize {
        match self {
            Cores::Inline(..) => 1,
            Cores::Threaded(t) => t.rt.cores(),
        }
    }

    /// The core a query that cannot be split runs on.
    pub fn single_core_for(&self, query: usize) -> usize {
        query % self.count()
    }

    /// Starts a query: `graph()` compiles one graph per core.
    pub fn add_query(
        &mut self,
        inputs: &[SourceId],
        mut graph: impl FnMut() -> Result<QueryGraph>,
        parts: Vec<Partitioning>,
    ) -> Result<QueryId> {
        match self {
            Cores::Inline(r, _) => Ok(r.add_query(inputs, graph()?)),
            Cores::Threaded(t) => {
                let graphs = (0..t.rt.cores())
                    .map(|_| graph())
                    .collect::<Result<Vec<_>>>()?;
                let id = t.parts.len() as QueryId;
                for (core, g) in graphs.into_iter().enumerate() {
                    t.rt.send(
                        core,
                        CoreCommand::AddQuery {
                            inputs: inputs.to_vec(),
                            graph: g,
                        },
                    )?;
                }
                for (input, (&s, p)) in inputs.iter().zip(&parts).enumerate() {
                    let s = s as usize;
                    if t.routes.len() <= s {
                        t.routes.resize_with(s + 1, Vec::new);
                    }
                    t.routes[s].push(Route {
                        query: id,
                        input,
                        part: p.clone(),
                    });
                }
                t.parts.push(parts);
                t.gathered.push(Default::default());
                t.metrics.push(QueryMetrics::default());
                t.dirty = true;
                Ok(id)
            }
        }
    }

    /// Hands `msg` (about input `input` of query `query`) to that query only: backlog and
    /// table replays. Data is routed like live data but takes no credit.
    pub fn replay(&mut self, query: QueryId, input: usize, msg: &CoreMessage) -> Result<()> {
        match self {
            Cores::Inline(r, _) => r.replay(query, input, msg),
            Cores::Threaded(t) => {
                t.dirty = true;
                if let CoreMessage::Data { source, batch } = msg {
                    let part = t
                        .parts
                        .get(query as usize)
                        .and_then(|p| p.get(input))
                        .cloned()
                        .unwrap_or(Partitioning::Single(0));
                    for (core, cmd) in t.commands(query, input, &part, *source, batch, false)? {
                        t.rt.send(core, cmd)?;
                    }
                    return Ok(());
                }
                t.rt.broadcast(|| CoreCommand::Deliver {
                    query,
                    input,
                    msg: msg.clone(),
                })
            }
        }
    }

    /// Sends a message: data is routed to the queries reading its source (subject to
    /// backpressure), anything else goes to every core.
    pub fn run(&mut self, msg: CoreMessage) -> Result<Admission> {
        match self {
            Cores::Inline(r, budget) => {
                r.run(msg, *budget)?;
                Ok(Admission::Accepted)
            }
            Cores::Threaded(t) => {
                t.dirty = true;
                match msg {
                    CoreMessage::Data { source, batch } => t.route(source, &batch),
                    other => {
                        t.rt.broadcast(|| CoreCommand::Broadcast(other.clone()))?;
                        Ok(Admission::Accepted)
                    }
                }
            }
        }
    }

    /// Moves one outbox of a query out.
    pub fn take(&mut self, query: QueryId, outbox: Outbox) -> Result<Vec<RecordBatch>> {
        match self {
            Cores::Inline(r, _) => Ok(match outbox {
                Outbox::Results => r.take_output(query),
                Outbox::Late => r.take_late(query),
            }),
            Cores::Threaded(t) => {
                t.sync()?;
                let Some(g) = t.gathered.get_mut(query as usize) else {
                    return Ok(Vec::new());
                };
                Ok(std::mem::take(match outbox {
                    Outbox::Results => &mut g.0,
                    Outbox::Late => &mut g.1,
                }))
            }
        }
    }

    /// Brings every core's new results and counters to the engine (after everything sent
    /// before); nothing to do inline.
    pub fn gather(&mut self) -> Result<()> {
        match self {
            Cores::Inline(..) => Ok(()),
            Cores::Threaded(t) => t.sync(),
        }
    }

    /// Every core's query states (index: core, then query), after everything sent before:
    /// a consistent cut of the whole engine. Results gathered on the way stay available to
    /// [`take`](Self::take).
    pub fn snapshot(&mut self) -> Result<Vec<Vec<Vec<u8>>>> {
        match self {
            Cores::Inline(r, _) => Ok(vec![r.snapshot()?]),
            Cores::Threaded(t) => t.barrier(true),
        }
    }

    /// Restores the state of every query on every core (index: core, then query), as saved
    /// by [`snapshot`](Self::snapshot) from an engine with the same cores and queries.
    pub fn restore(&mut self, states: Vec<Vec<Vec<u8>>>) -> Result<()> {
        if states.len() != self.count() {
            return Err(Error::Snapshot(format!(
                "the checkpoint was taken with cores={}, this engine has cores={}: open it with the same number of cores",
                states.len(),
                self.count()
            )));
        }
        match self {
            Cores::Inline(r, _) => {
                for (q, state) in states.into_iter().flatten().enumerate() {
                    r.restore_query(q as QueryId, &state)?;
                }
                Ok(())
            }
            Cores::Threaded(t) => {
                t.dirty = true;
                for (core, queries) in states.into_iter().enumerate() {
                    for (q, state) in queries.into_iter().enumerate() {
                        let query = q as QueryId;
                        t.rt.send(core, CoreCommand::Restore { query, state })?;
                    }
                }
                t.sync()
            }
        }
    }

    /// Counters of a query (summed over cores).
    pub fn metrics(&mut self, query: QueryId) -> Result<QueryMetrics> {
        match self {
            Cores::Inline(r, _) => Ok(r.query_metrics(query).unwrap_or_default()),
            Cores::Threaded(t) => {
                t.sync()?;
                Ok(t.metrics.get(query as usize).cloned().unwrap_or_default())
            }
        }
    }

    /// Per-core counters (empty inline).
    pub fn core_metrics(&self) -> Vec<CoreMetrics> {
        match self {
            Cores::Inline(..) => Vec::new(),
            Cores::Threaded(t) => t.rt.core_metrics(),
        }
    }

    /// Credit counters (`None` inline: pushes run synchronously, nothing queues).
    pub fn credit_metrics(&self) -> Option<CreditMetrics> {
        match self {
            Cores::Inline(..) => None,
            Cores::Threaded(t) => Some(t.rt.credit_metrics()),
        }
    }

    /// How each input of a query is spread over the cores (`None` inline).
    pub fn partitioning(&self, query: QueryId) -> Option<&[Partitioning]> {
        match self {
            Cores::Inline(..) => None,
            Cores::Threaded(t) => t.parts.get(query as usize).map(Vec::as_slice),
        }
    }

    /// Makes a core sleep (tests of backpressure).
    pub fn stall(&mut self, core: usize, d: std::time::Duration) -> Result<()> {
        match self {
            Cores::Inline(..) => Ok(()),
            Cores::Threaded(t) => t.rt.stall(core, d),
        }
    }

    /// Drains and stops the cores.
    pub fn shutdown(&mut self) -> Result<()> {
        match self {
            Cores::Inline(..) => Ok(()),
            Cores::Threaded(t) => t.rt.shutdown(),
        }
    }
}

impl Threaded {
    /// The commands carrying `batch` (of `source`) to input `input` of query `query`, one per
    /// core that may receive rows: a key-routed batch goes whole to every core, which keeps
    /// its own rows; stateless rows are sliced here; a single-core query's go to its core.
    fn commands(
        &mut self,
        query: QueryId,
        input: usize,
        part: &Partitioning,
        source: SourceId,
        batch: &RecordBatch,
        credit: bool,
    ) -> Result<Vec<(usize, CoreCommand)>> {
        let routed = |batch: RecordBatch, rows: Selection| CoreCommand::Routed {
            query,
            input,
            source,
            batch,
            rows,
            credit,
        };
        Ok(match part {
            Partitioning::Keys(keys) => self
                .router
                .partition(batch, keys)?
                .into_iter()
                .enumerate()
                .filter_map(|(core, rows)| Some((core, routed(batch.clone(), rows?))))
                .collect(),
            Partitioning::Even => self
                .router
                .split_even(batch)
                .into_iter()
                .enumerate()
                .filter_map(|(core, b)| b.map(|b| (core, routed(b, Selection::All))))
                .collect(),
            Partitioning::Single(core) => vec![(*core, routed(batch.clone(), Selection::All))],
        })
    }

    /// Routes one batch of `source` to every query reading it, one credit per command.
    fn route(&mut self, source: SourceId, batch: &RecordBatch) -> Result<Admission> {
        let routes = std::mem::take(
            self.routes
                .get_mut(source as usize)
                .unwrap_or(&mut Vec::new()),
        );
        let mut sends: Vec<(usize, CoreCommand)> = Vec::new();
        let mut result = Ok(());
        for r in &routes {
            match self.commands(r.query, r.input, &r.part, source, batch, true) {
                Ok(c) => sends.extend(c),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some(slot) = self.routes.get_mut(source as usize) {
            *slot = routes;
        }
        result?;
        if sends.is_empty() {
            return Ok(Admission::Accepted);
        }
        Ok(if self.rt.send_routed(sends)? {
            Admission::Accepted
        } else {
            Admission::Dropped
        })
    }

    /// Collects every core's new results and counters if anything was sent since the last
    /// sync; the first core error is returned (results gathered before it are kept).
    fn sync(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.barrier(false).map(|_| ())
    }

    /// One round trip to every core: gathers their new results and counters and, with
    /// `snapshot`, every core's query states (index: core, then query). A core reports its
    /// first error instead of a snapshot, so states come back only when every core is sound.
    fn barrier(&mut self, snapshot: bool) -> Result<Vec<Vec<Vec<u8>>>> {
        let reports = self.rt.sync_with(snapshot)?;
        self.dirty = false;
        for m in &mut self.metrics {
            *m = QueryMetrics::default();
        }
        let mut error = None;
        let mut states = Vec::with_capacity(if snapshot { reports.len() } else { 0 });
        for r in reports {
            for (q, out) in r.queries.into_iter().enumerate() {
                if let Some(g) = self.gathered.get_mut(q) {
                    g.0.extend(out.output);
                    g.1.extend(out.late);
                }
                if let Some(m) = self.metrics.get_mut(q) {
                    merge_metrics(m, &out.metrics, r.core == 0);
                }
            }
            if error.is_none() {
                error = r.error;
            }
            states.extend(r.snapshot);
        }
        error.map_or(Ok(states), Err)
    }
}

/// Adds one core's counters of a query to the total. Every core sees the same watermarks,
/// so the watermark is taken as the minimum (a core that lags shows).
fn merge_metrics(total: &mut QueryMetrics, core: &QueryMetrics, first: bool) {
    total.rows_in += core.rows_in;
    total.rows_out += core.rows_out;
    total.timers += core.timers;
    total.operators.add(&core.operators);
    total.watermark = if first {
        core.watermark
    } else {
        match (total.watermark, core.watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        }
    };
}

impl Drop for Cores {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// An error for a core count the engine cannot run.
pub(super) fn check_cores(cores: usize) -> Result<()> {
    if cores == 0 {
        return Err(Error::InvalidPlan("cores must be at least 1".into()));
    }
    Ok(())
}
