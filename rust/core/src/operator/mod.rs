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
pub mod expr;
pub mod filter;
pub mod group_keys;
pub mod project;
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
    /// Rows that arrived after their window had closed and were dropped.
    pub late_dropped: u64,
    /// Rows that arrived after their window had closed and went to the late side output.
    pub late_side_output: u64,
    /// Windows currently open (holding state).
    pub open_windows: u64,
    /// Groups (window x key) currently held in state.
    pub live_groups: u64,
    /// Largest number of groups held at once.
    pub peak_groups: u64,
}

/// What the reactor lends an operator for one call.
pub struct OperatorContext<'a> {
    watermark: Option<Timestamp>,
    operator: u32,
    timers: &'a mut TimerWheel<TimerPayload>,
    output: &'a mut Vec<RecordBatch>,
    late: &'a mut Vec<RecordBatch>,
}

impl<'a> OperatorContext<'a> {
    /// A context for operator number `operator` of a query.
    pub fn new(
        watermark: Option<Timestamp>,
        operator: u32,
        timers: &'a mut TimerWheel<TimerPayload>,
        output: &'a mut Vec<RecordBatch>,
        late: &'a mut Vec<RecordBatch>,
    ) -> Self {
        OperatorContext {
            watermark,
            operator,
            timers,
            output,
            late,
        }
    }

    /// The query's combined watermark in force for this call (`None`: no watermark yet).
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
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

    /// Registers an event-time timer that fires `on_timer` once the watermark reaches `deadline`.
    pub fn register_timer(&mut self, deadline: Timestamp, key: i64) -> TimerId {
        self.timers.insert(
            deadline,
            TimerPayload {
                operator: self.operator,
                key,
            },
        )
    }
}

/// A vectorised stream transformation. See the module docs for the batch contract.
pub trait Operator: Send {
    /// Short name for metrics and errors.
    fn name(&self) -> &'static str;
    /// Schema of the batches this operator emits (including the hidden time column when the
    /// output is still a stream, see [`Operator::emits_stream`]).
    fn output_schema(&self) -> SchemaRef;
    /// Whether the output still carries the hidden event-time column.
    fn emits_stream(&self) -> bool {
        true
    }
    /// Processes one input batch.
    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()>;
    /// A timer this operator registered has fired.
    fn on_timer(
        &mut self,
        _deadline: Timestamp,
        _key: i64,
        _ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        Ok(())
    }
    /// The combined watermark advanced to `wm` (after due timers have fired).
    fn on_watermark(&mut self, _wm: Timestamp, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Current counters.
    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics::default()
    }
}
