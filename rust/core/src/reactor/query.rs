//! One query inside a reactor: its operator graph, watermark tracker, timer wheel and outboxes.
//!
//! The graph is a list of [`Node`]s in topological order. Each node names where its output
//! goes (another node's input port, or the query's output), and each query input (source)
//! names the node and port it enters. A plain query is a chain; a join adds a second branch
//! that meets the first at the join's port 1.
//!
//! Every node has a watermark *shift*: the largest sum of [`Operator::watermark_delay`]s on a
//! path from an input to it. It sees the query watermark minus its shift, and has its own
//! timer wheel in that domain.
//!
//! When the watermark advances, nodes advance one at a time in graph order: a node fires its
//! due timers and hears `on_watermark` while every node after it still has the old watermark,
//! so rows a window emits because of this advance are judged downstream against the
//! watermark in force before it (exactly as source rows are), never as late.

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::operator::snapshot::{decode, encode};
use crate::operator::{shift_watermark, Operator, OperatorContext, OperatorMetrics, TimerPayload};
use crate::time::timer_wheel::{Expired, TimerWheel};
use crate::time::tracker::WatermarkTracker;
use crate::time::Timestamp;

/// Counters of one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryMetrics {
    /// Rows that entered the query.
    pub rows_in: u64,
    /// Result rows produced.
    pub rows_out: u64,
    /// Combined watermark (`None`: none yet).
    pub watermark: Option<Timestamp>,
    /// Event-time timers pending.
    pub timers: u64,
    /// Sum of the operators' counters.
    pub operators: OperatorMetrics,
}

/// Where a batch goes: a node's input port, or (`None`) the query's output.
pub type Target = Option<(usize, usize)>;

/// One operator of a query graph.
pub struct Node {
    /// The operator.
    pub op: Box<dyn Operator>,
    /// Where its output goes.
    pub next: Target,
}

/// The graph of a compiled query.
pub struct QueryGraph {
    /// Operators in topological order.
    pub nodes: Vec<Node>,
    /// For each query input (in tracker order), where its batches enter.
    pub inputs: Vec<Target>,
}

/// One step's saved timers: its wheel's time and the pending `(deadline, operator, key)`.
type SavedTimers = (i64, Vec<(i64, u32, i64)>);

/// The checkpoint form of a [`QueryRuntime`] (outputs not yet taken are not part of it: a
/// checkpoint is taken after they have been gathered).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct QueryState {
    /// Each node's [`Operator::snapshot`].
    operators: Vec<Vec<u8>>,
    /// Per node: wheel time and pending `(deadline, operator, key)` in firing order.
    timers: Vec<SavedTimers>,
    node_wm: Vec<Option<i64>>,
    /// Per input `(watermark, idle, finished)`, then the combined watermark.
    tracker: (Vec<(i64, bool, bool)>, i64),
    now: i64,
    rows_in: u64,
    rows_out: u64,
}

/// A query's runtime state. Driven only by its [`Reactor`](super::Reactor).
pub struct QueryRuntime {
    nodes: Vec<Node>,
    inputs: Vec<Target>,
    shifts: Vec<i64>,
    tracker: WatermarkTracker,
    /// Per node: its timers (in its own domain) and the query watermark it has seen.
    timers: Vec<TimerWheel<TimerPayload>>,
    node_wm: Vec<Option<Timestamp>>,
    now: Timestamp,
    output: Vec<RecordBatch>,
    late: Vec<RecordBatch>,
    rows_in: u64,
    rows_out: u64,
    // Scratch reused across calls: one output buffer per node.
    scratch: Vec<Vec<RecordBatch>>,
    expired: Vec<Expired<TimerPayload>>,
}

impl QueryRuntime {
    pub(super) fn new(graph: QueryGraph) -> Self {
        let QueryGraph { nodes, inputs } = graph;
        // Shift of a node: the largest (shift + delay) over the nodes feeding it.
        let mut shifts = vec![0i64; nodes.len()];
        for i in 0..nodes.len() {
            if let Some((n, _)) = nodes[i].next {
                let s = shifts[i].saturating_add(nodes[i].op.watermark_delay());
                shifts[n] = shifts[n].max(s);
            }
        }
        QueryRuntime {
            scratch: (0..nodes.len()).map(|_| Vec::new()).collect(),
            tracker: WatermarkTracker::new(inputs.len()),
            timers: (0..nodes.len()).map(|_| TimerWheel::new()).collect(),
            node_wm: vec![None; nodes.len()],
            nodes,
            inputs,
            shifts,
            now: 0,
            output: Vec::new(),
            late: Vec::new(),
            rows_in: 0,
            rows_out: 0,
            expired: Vec::new(),
        }
    }

    pub(super) fn on_data(&mut self, input: usize, batch: &RecordBatch) -> Result<()> {
        if self.tracker.is_idle(input) {
            if let Some(wm) = self.tracker.mark_active(input) {
                self.advance(wm)?;
            }
        }
        self.rows_in += batch.num_rows() as u64;
        let target = self.inputs[input];
        self.deliver(target, batch)
    }

    pub(super) fn on_source_watermark(&mut self, input: usize, ts: Timestamp) -> Result<()> {
        match self.tracker.update(input, ts) {
            Some(wm) => self.advance(wm),
            None => Ok(()),
        }
    }

    pub(super) fn on_source_idle(&mut self, input: usize) -> Result<()> {
        match self.tracker.mark_idle(input) {
            Some(wm) => self.advance(wm),
            None => Ok(()),
        }
    }

    pub(super) fn on_end_of_input(&mut self, input: usize) -> Result<()> {
        match self.tracker.finish(input) {
            Some(wm) => self.advance(wm),
            None => Ok(()),
        }
    }

    /// Processing time moved to `now`: every operator hears of it, in graph order.
    pub(super) fn on_tick(&mut self, now: Timestamp) -> Result<()> {
        self.now = self.now.max(now);
        for i in 0..self.nodes.len() {
            self.call(i, |op, ctx| op.on_processing_time(ctx.now(), ctx))?;
        }
        Ok(())
    }

    /// A lookup table changed: every operator hears of it (lookup joins of that table apply it).
    pub(super) fn on_table_update(
        &mut self,
        table: &str,
        rows: &RecordBatch,
        replace: bool,
        now: Timestamp,
    ) -> Result<()> {
        self.now = self.now.max(now);
        for n in &mut self.nodes {
            n.op.on_table_update(table, rows, replace, now)?;
        }
        Ok(())
    }

    /// Runs `f` on node `i` with a fresh context, then sends what it emitted downstream.
    fn call(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn Operator, &mut OperatorContext<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut out = std::mem::take(&mut self.scratch[i]);
        out.clear();
        let result = {
            let mut ctx = OperatorContext::new(
                self.node_wm[i].map(|w| shift_watermark(w, self.shifts[i])),
                self.now,
                i as u32,
                &mut self.timers[i],
                &mut out,
                &mut self.late,
            );
            f(self.nodes[i].op.as_mut(), &mut ctx)
        };
        let next = self.nodes[i].next;
        let result = result.and_then(|()| out.iter().try_for_each(|b| self.deliver(next, b)));
        out.clear();
        self.scratch[i] = out;
        result
    }

    /// Sends `batch` to `target`: into a node (depth first), or to the query's output.
    fn deliver(&mut self, target: Target, batch: &RecordBatch) -> Result<()> {
        match target {
            Some((node, port)) => self.call(node, |op, ctx| op.process_port(port, batch, ctx)),
            None => {
                self.rows_out += batch.num_rows() as u64;
                self.output.push(batch.clone());
                Ok(())
            }
        }
    }

    /// The combined watermark moved to `wm`: node by node in graph order, fire the node's
    /// due timers in deadline order, then tell it (see the module docs).
    fn advance(&mut self, wm: Timestamp) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.node_wm[i] = Some(wm);
            let local = shift_watermark(wm, self.shifts[i]);
            // Timers set while firing (a session that grew re-arms its close) may already be
            // due: keep firing until none is.
            loop {
                let mut expired = std::mem::take(&mut self.expired);
                expired.clear();
                self.timers[i].advance_to(local, &mut expired);
                if expired.is_empty() {
                    self.expired = expired;
                    break;
                }
                let mut result = Ok(());
                for timer in expired.drain(..) {
                    let (deadline, key) = (timer.deadline, timer.payload.key);
                    result = self.call(i, |op, ctx| op.on_timer(deadline, key, ctx));
                    if result.is_err() {
                        break;
                    }
                }
                self.expired = expired;
                result?;
            }
            self.call(i, |op, ctx| op.on_watermark(local, ctx))?;
        }
        Ok(())
    }

    /// Everything the query keeps between messages, as bytes (see [`QueryState`]).
    pub(super) fn snapshot(&self) -> Result<Vec<u8>> {
        let operators = self
            .nodes
            .iter()
            .map(|n| n.op.snapshot())
            .collect::<Result<Vec<_>>>()?;
        let timers = self
            .timers
            .iter()
            .map(|w| {
                let pending = w.pending().into_iter();
                (
                    w.now(),
                    pending.map(|(d, p)| (d, p.operator, p.key)).collect(),
                )
            })
            .collect();
        encode(&QueryState {
            operators,
            timers,
            node_wm: self.node_wm.clone(),
            tracker: self.tracker.save(),
            now: self.now,
            rows_in: self.rows_in,
            rows_out: self.rows_out,
        })
    }

    /// Puts back what [`snapshot`](Self::snapshot) saved, on a query freshly compiled from the
    /// same plan.
    pub(super) fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let st: QueryState = decode(bytes, "a query")?;
        let n = self.nodes.len();
        if st.operators.len() != n || st.timers.len() != n || st.node_wm.len() != n {
            return Err(Error::Snapshot(format!(
                "the checkpoint holds a query of {} operators where this one has {n} (was the pipeline changed?)",
                st.operators.len()
            )));
        }
        let (inputs, combined) = &st.tracker;
        let tracker = WatermarkTracker::restored(inputs, *combined, self.tracker.num_inputs())
            .ok_or_else(|| {
                Error::Snapshot("the checkpoint holds a query with other inputs".into())
            })?;
        // What holds between messages: every pending timer is later than its wheel's time
        // (due ones have fired) and belongs to its node; a node that has seen a watermark has
        // its wheel at that watermark (shifted), never past the combined one. State that
        // breaks this could fire timers forever on the next advance: refuse it.
        let broken =
            |what: &str| Error::Snapshot(format!("the saved query state is inconsistent: {what}"));
        for (i, ((now, pending), wm)) in st.timers.iter().zip(&st.node_wm).enumerate() {
            if pending
                .iter()
                .any(|&(d, op, _)| d <= *now || op as usize != i)
            {
                return Err(broken(
                    "a pending timer is already due or belongs to another step",
                ));
            }
            if let Some(w) = wm {
                if *now != shift_watermark(*w, self.shifts[i]) || *combined < *w {
                    return Err(broken("a step's timers and watermark disagree"));
                }
            } else if *now != i64::MIN {
                return Err(broken("a step that saw no watermark has advanced timers"));
            }
        }
        for (node, state) in self.nodes.iter_mut().zip(&st.operators) {
            node.op.restore(state)?;
        }
        self.timers = st
            .timers
            .into_iter()
            .map(|(now, pending)| {
                let pending = pending
                    .into_iter()
                    .map(|(d, operator, key)| (d, TimerPayload { operator, key }));
                TimerWheel::restored(now, pending)
            })
            .collect();
        self.node_wm = st.node_wm;
        self.tracker = tracker;
        self.now = st.now;
        self.rows_in = st.rows_in;
        self.rows_out = st.rows_out;
        Ok(())
    }

    pub(super) fn take_output(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.output)
    }

    pub(super) fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    pub(super) fn metrics(&self) -> QueryMetrics {
        let mut ops = OperatorMetrics::default();
        for n in &self.nodes {
            ops.add(&n.op.metrics());
        }
        QueryMetrics {
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            watermark: self.tracker.current(),
            timers: self.timers.iter().map(|t| t.len() as u64).sum(),
            operators: ops,
        }
    }
}
