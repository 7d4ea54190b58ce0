//! One query inside a reactor: its operator chain, watermark tracker, timer wheel and outboxes.

use arrow_array::RecordBatch;

use crate::error::Result;
use crate::operator::{Operator, OperatorContext, OperatorMetrics, TimerPayload};
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

/// A query's runtime state. Driven only by its [`Reactor`](super::Reactor).
pub struct QueryRuntime {
    operators: Vec<Box<dyn Operator>>,
    tracker: WatermarkTracker,
    timers: TimerWheel<TimerPayload>,
    output: Vec<RecordBatch>,
    late: Vec<RecordBatch>,
    rows_in: u64,
    rows_out: u64,
    // Scratch reused across calls.
    current: Vec<RecordBatch>,
    next: Vec<RecordBatch>,
    expired: Vec<Expired<TimerPayload>>,
}

impl QueryRuntime {
    pub(super) fn new(inputs: usize, operators: Vec<Box<dyn Operator>>) -> Self {
        QueryRuntime {
            operators,
            tracker: WatermarkTracker::new(inputs),
            timers: TimerWheel::new(),
            output: Vec::new(),
            late: Vec::new(),
            rows_in: 0,
            rows_out: 0,
            current: Vec::new(),
            next: Vec::new(),
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
        self.current.clear();
        self.current.push(batch.clone());
        self.run_chain(0)
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

    /// The combined watermark moved to `wm`: fire due timers in deadline order, then tell
    /// every operator.
    fn advance(&mut self, wm: Timestamp) -> Result<()> {
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.timers.advance_to(wm, &mut expired);
        let mut result = Ok(());
        for timer in expired.drain(..) {
            let op = timer.payload.operator as usize;
            self.next.clear();
            let mut ctx = OperatorContext::new(
                Some(wm),
                op as u32,
                &mut self.timers,
                &mut self.next,
                &mut self.late,
            );
            if let Err(e) = self.operators[op].on_timer(timer.deadline, timer.payload.key, &mut ctx)
            {
                result = Err(e);
                break;
            }
            std::mem::swap(&mut self.current, &mut self.next);
            if let Err(e) = self.run_chain(op + 1) {
                result = Err(e);
                break;
            }
        }
        self.expired = expired;
        result?;
        for i in 0..self.operators.len() {
            self.next.clear();
            let mut ctx = OperatorContext::new(
                Some(wm),
                i as u32,
                &mut self.timers,
                &mut self.next,
                &mut self.late,
            );
            self.operators[i].on_watermark(wm, &mut ctx)?;
            // Batches produced on a watermark continue down the chain.
            if !self.next.is_empty() {
                std::mem::swap(&mut self.current, &mut self.next);
                self.run_chain(i + 1)?;
            }
        }
        Ok(())
    }

    /// Runs the batches in `self.current` through operators `start..` into the outbox.
    fn run_chain(&mut self, start: usize) -> Result<()> {
        let wm = self.tracker.current();
        for i in start..self.operators.len() {
            if self.current.is_empty() {
                return Ok(());
            }
            self.next.clear();
            let mut ctx = OperatorContext::new(
                wm,
                i as u32,
                &mut self.timers,
                &mut self.next,
                &mut self.late,
            );
            for b in self.current.iter() {
                self.operators[i].process(b, &mut ctx)?;
            }
            std::mem::swap(&mut self.current, &mut self.next);
        }
        for b in self.current.drain(..) {
            self.rows_out += b.num_rows() as u64;
            self.output.push(b);
        }
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
        for op in &self.operators {
            let m = op.metrics();
            ops.late_dropped += m.late_dropped;
            ops.late_side_output += m.late_side_output;
            ops.open_windows += m.open_windows;
            ops.live_groups += m.live_groups;
            ops.peak_groups += m.peak_groups;
        }
        QueryMetrics {
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            watermark: self.tracker.current(),
            timers: self.timers.len() as u64,
            operators: ops,
        }
    }
}
