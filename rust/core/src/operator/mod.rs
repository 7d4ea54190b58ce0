//! Operators: the vectorised transformations a query is made of.
//!
//! An operator receives whole Arrow [`RecordBatch`]es, never single rows, and writes what it
//! produces into the output buffer of its [`OperatorContext`] instead of returning a fresh
//! `Vec` per call. Operators know nothing about threads, queues or Python: the reactor drives
//! them, hands them the watermark in force, and lends them the query's timer wheel.
//!
//! Every batch an operator sees is a *stream batch*: the user's columns followed by the hidden
//! event-time column [`crate::engine::TIME_COLUMN`] (`Int64`, epoch ms, no nulls). Operators
//! keep that column (projections carry it along); results leave the engine without it.

pub mod aggregate;
pub mod dedup;
pub mod emit;
pub mod expr;
pub mod filter;
pub mod group_keys;
pub mod interval_join;
pub mod keys;
pub mod lookup_join;
pub mod project;
pub mod session_window;
pub mod snapshot;
pub mod window;
pub mod window_aggregate;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::time::timer_wheel::{TimerId, TimerWheel};
use crate::time::Timestamp;

/// What a timer carries: the operator (index in its query's chain) and an operator-defined key
/// (the window operator uses the window start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerPayload {
    /// Index of the operator in the query's chain.
    pub operator: u32,
    /// Operator-defined key.
    pub key: i64,
}

/// Counters an operator keeps about itself (cheap to read at any time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorMetrics {
    /// Rows that arrived too late (after their window had closed; at a dedup step, behind the
    /// watermark) and were dropped.
    pub late_dropped: u64,
    /// Rows that arrived after their window had closed and went to the late side output.
    pub late_side_output: u64,
    /// Windows currently open (holding state).
    pub open_windows: u64,
    /// Groups (window x key) currently held in state.
    pub live_groups: u64,
    /// Largest number of groups held at once.
    pub peak_groups: u64,
    /// Rows held in join state (both sides), in a lookup table, or keys held by a dedup step.
    pub state_rows: u64,
    /// Largest number of rows (or dedup keys) held in state at once.
    pub peak_state_rows: u64,
    /// Rows a dedup step dropped because their key was kept less than `within` before.
    pub duplicates_dropped: u64,
}

/// The window and join counters as a fixed array, in field order (for their checkpoints;
/// `duplicates_dropped` is not among them: only dedup counts it, and saves it itself).
pub(crate) fn metrics_to_array(m: &OperatorMetrics) -> [u64; 7] {
    [
        m.late_dropped,
        m.late_side_output,
        m.open_windows,
        m.live_groups,
        m.peak_groups,
        m.state_rows,
        m.peak_state_rows,
    ]
}

/// The inverse of [`metrics_to_array`].
pub(crate) fn metrics_from_array(a: [u64; 7]) -> OperatorMetrics {
    OperatorMetrics {
        late_dropped: a[0],
        late_side_output: a[1],
        open_windows: a[2],
        live_groups: a[3],
        peak_groups: a[4],
        state_rows: a[5],
        peak_state_rows: a[6],
        duplicates_dropped: 0,
    }
}

impl OperatorMetrics {
    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &OperatorMetrics) {
        self.late_dropped += other.late_dropped;
        self.late_side_output += other.late_side_output;
        self.open_windows += other.open_windows;
        self.live_groups += other.live_groups;
        self.peak_groups += other.peak_groups;
        self.state_rows += other.state_rows;
        self.peak_state_rows += other.peak_state_rows;
        self.duplicates_dropped += other.duplicates_dropped;
    }
}

/// What the reactor lends an operator for one call.
///
/// Each operator lives in its own *watermark domain*: an operator downstream of steps that
/// delay the watermark (see [`Operator::watermark_delay`]) sees the query watermark minus
/// those delays, and has its own timer wheel in that domain, so operators never deal with
/// the shift themselves.
pub struct OperatorContext<'a> {
    watermark: Option<Timestamp>,
    now: Timestamp,
    operator: u32,
    timers: &'a mut TimerWheel<TimerPayload>,
    output: &'a mut Vec<RecordBatch>,
    late: &'a mut Vec<RecordBatch>,
}

/// The watermark `wm` seen `shift` ms downstream (`+inf` stays `+inf`).
#[inline]
pub fn shift_watermark(wm: Timestamp, shift: i64) -> Timestamp {
    if wm == Timestamp::MAX {
        wm
    } else {
        wm.saturating_sub(shift)
    }
}

impl<'a> OperatorContext<'a> {
    /// A context for operator number `operator` whose watermark (in its own domain) is
    /// `watermark` and whose processing time is `now`.
    pub fn new(
        watermark: Option<Timestamp>,
        now: Timestamp,
        operator: u32,
        timers: &'a mut TimerWheel<TimerPayload>,
        output: &'a mut Vec<RecordBatch>,
        late: &'a mut Vec<RecordBatch>,
    ) -> Self {
        OperatorContext {
            watermark,
            now,
            operator,
            timers,
            output,
            late,
        }
    }

    /// The watermark in force for this call, in the operator's domain (`None`: none yet).
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// Processing time (epoch ms) as of the message being handled.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Appends a result batch for the next operator (or the query's output).
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.output.push(batch);
        }
    }

    /// Appends rows that were too late to the query's late side output.
    pub fn emit_late(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.late.push(batch);
        }
    }

    /// Registers an event-time timer that fires `on_timer` once the operator's watermark
    /// reaches `deadline`.
    pub fn register_timer(&mut self, deadline: Timestamp, key: i64) -> TimerId {
        self.timers.insert(
            deadline,
            TimerPayload {
                operator: self.operator,
                key,
            },
        )
    }

    /// Cancels a timer registered earlier (no effect if it already fired).
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.timers.cancel(id);
    }
}

/// A vectorised stream transformation. See the module docs for the batch contract.
pub trait Operator: Send {
    /// Short name for metrics and errors.
    fn name(&self) -> &'static str;
    /// Schema of the batches this operator emits: a stream schema, ending with the hidden
    /// event-time column.
    fn output_schema(&self) -> SchemaRef;
    /// Processes one input batch (single-input operators).
    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()>;
    /// Processes one batch arriving on input `port` (0: left, 1: right). Single-input
    /// operators keep the default, which forwards to [`Operator::process`].
    fn process_port(
        &mut self,
        port: usize,
        input: &RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        debug_assert_eq!(port, 0, "{} has one input", self.name());
        self.process(input, ctx)
    }
    /// A timer this operator registered has fired (`deadline` in the operator's domain).
    fn on_timer(
        &mut self,
        _deadline: Timestamp,
        _key: i64,
        _ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        Ok(())
    }
    /// The watermark advanced to `wm` (after due timers have fired).
    fn on_watermark(&mut self, _wm: Timestamp, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Whether the operator reads processing time (then the engine sends it on every call).
    fn uses_processing_time(&self) -> bool {
        false
    }
    /// Processing time moved to `now` (sent on engine calls, never from a timer thread).
    fn on_processing_time(
        &mut self,
        _now: Timestamp,
        _ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        Ok(())
    }
    /// A lookup table changed (`replace`: its rows are now exactly `rows`; otherwise `rows`
    /// are upserted), at processing time `now`. Only lookup joins of that table care.
    fn on_table_update(
        &mut self,
        _table: &str,
        _rows: &RecordBatch,
        _replace: bool,
        _now: Timestamp,
    ) -> Result<()> {
        Ok(())
    }
    /// How far behind its input watermark this operator's output may be: every row it emits
    /// after seeing watermark `w` has event time `>= w - delay`. Downstream steps see the
    /// watermark shifted by this much.
    fn watermark_delay(&self) -> i64 {
        0
    }
    /// Whether the rows this operator emits are final (never retracted or re-emitted), so a
    /// further windowed step may aggregate them.
    fn append_only(&self) -> bool {
        true
    }
    /// Current counters.
    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics::default()
    }
    /// The state this operator keeps between messages, as bytes for a checkpoint (see
    /// [`snapshot`]). Taken between messages only. Operators that keep nothing return an empty
    /// vector; the default refuses, so that no stateful operator is checkpointed by accident
    /// without its state.
    fn snapshot(&self) -> Result<Vec<u8>> {
        Err(crate::error::Error::Snapshot(format!(
            "the {} operator cannot be checkpointed yet",
            self.name()
        )))
    }
    /// Puts back the state saved by [`snapshot`](Operator::snapshot) on an operator freshly
    /// built from the same plan (no timers: the query restores those).
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Err(crate::error::Error::Snapshot(format!(
            "the {} operator cannot be restored from a checkpoint yet",
            self.name()
        )))
    }
}
