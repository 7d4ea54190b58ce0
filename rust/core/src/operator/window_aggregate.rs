//! `WindowAggregate`: tumbling windows grouped by key, emitted when the window closes.
//!
//! Per batch, in this order (the order is the correctness argument):
//! 1. Rows are judged late against the watermark *in force when the batch arrives*: a row is
//!    late if its window has already closed, i.e. `window_end + allowed_lateness <= watermark`.
//!    Late rows are counted and dropped, or sent to the late side output.
//! 2. Every other row is assigned its window start (vectorised), then its group id (one hash
//!    probe), then every aggregate folds the batch in one typed loop.
//! 3. Only after that does the reactor let the batch's own event times move the watermark,
//!    which fires the timers of the windows it closes (see `reactor`).
//!
//! A window registers one timer at `end + allowed_lateness` when its first row arrives; when it
//! fires, the window's groups are emitted as one batch (`window_start`, `window_end`, keys,
//! aggregates) and their ids and table entries are released, so state is bounded by
//! keys x open windows and never by the number of events.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_cast::cast;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::filter::filter_record_batch;

use super::aggregate::{Accumulator, AggSpec};
use super::group_keys::{GroupIds, GroupKeys};
use super::window::{Tumbling, MAX_SPAN_MS};
use super::{Operator, OperatorContext, OperatorMetrics};
use crate::engine::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// What happens to rows whose window has already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Count and discard.
    #[default]
    Drop,
    /// Send to the query's late side output.
    SideOutput,
}

/// Tumbling-window grouped aggregation.
pub struct WindowAggregate {
    window: Tumbling,
    lateness: i64,
    late_policy: LatePolicy,
    time_index: usize,
    bound_type: DataType,
    keys: GroupKeys,
    aggs: Vec<Accumulator>,
    ids: GroupIds,
    /// Open windows (by start) with their groups in creation order.
    windows: BTreeMap<Timestamp, Vec<u32>>,
    schema: SchemaRef,
    metrics: OperatorMetrics,
    // Scratch reused across batches.
    starts: Vec<i64>,
    groups: Vec<u32>,
    created: Vec<u32>,
}

impl WindowAggregate {
    /// Builds the operator over stream `input`. `bound_type` is the type of the window bound
    /// columns (int64 or a millisecond timestamp, following the source's time column).
    pub fn new(
        window: Tumbling,
        lateness_ms: i64,
        late_policy: LatePolicy,
        keys: &[String],
        aggs: &[AggSpec],
        input: SchemaRef,
        bound_type: DataType,
    ) -> Result<Self> {
        if !(0..=MAX_SPAN_MS).contains(&lateness_ms) {
            return Err(Error::InvalidPlan(format!(
                "allowed lateness must be between 0 and 100 years, got {lateness_ms} ms"
            )));
        }
        if aggs.is_empty() {
            return Err(Error::InvalidPlan(
                "agg() needs at least one aggregate, e.g. .agg(n=lm.count())".into(),
            ));
        }
        let time_index = input
            .index_of(TIME_COLUMN)
            .map_err(|_| Error::InvalidPlan("window input has no event-time column".into()))?;
        let keys = GroupKeys::new(keys, &input)?;
        let aggs = aggs
            .iter()
            .map(|a| Accumulator::new(a, &input))
            .collect::<Result<Vec<_>>>()?;
        let mut fields = vec![
            Field::new("window_start", bound_type.clone(), false),
            Field::new("window_end", bound_type.clone(), false),
        ];
        fields.extend(keys.fields().iter().cloned());
        fields.extend(aggs.iter().map(|a| a.field().clone()));
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name() == f.name()) {
                return Err(Error::InvalidPlan(format!(
                    "result column '{}' appears twice; rename the aggregate",
                    f.name()
                )));
            }
        }
        Ok(WindowAggregate {
            window,
            lateness: lateness_ms,
            late_policy,
            time_index,
            bound_type,
            keys,
            aggs,
            ids: GroupIds::default(),
            windows: BTreeMap::new(),
            schema: Arc::new(Schema::new(fields)),
            metrics: OperatorMetrics::default(),
            starts: Vec::new(),
            groups: Vec::new(),
            created: Vec::new(),
        })
    }

    /// Routes the rows whose window closed at watermark `wm` (counted, dropped or sent to the
    /// side output) and returns the on-time rows, or `None` when every row is on time (the
    /// common case, which costs one comparison).
    fn split_late(
        &mut self,
        batch: &RecordBatch,
        wm: Timestamp,
        min: i64,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<Option<RecordBatch>> {
        // Window start s is closed iff s + size + lateness <= wm.
        let cutoff = wm.saturating_sub(self.window.size() + self.lateness);
        if self.window.start_of(min) > cutoff {
            return Ok(None);
        }
        let times = batch
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values();
        let w = self.window;
        let late = BooleanBuffer::collect_bool(times.len(), |i| w.start_of(times[i]) <= cutoff);
        let n_late = late.count_set_bits() as u64;
        match self.late_policy {
            LatePolicy::Drop => self.metrics.late_dropped += n_late,
            LatePolicy::SideOutput => {
                self.metrics.late_side_output += n_late;
                ctx.emit_late(filter_record_batch(batch, &late.clone().into())?);
            }
        }
        Ok(Some(filter_record_batch(batch, &(!&late).into())?))
    }

    fn bound_column(&self, value: i64, len: usize) -> Result<ArrayRef> {
        let a: ArrayRef = Arc::new(Int64Array::from_value(value, len));
        Ok(if self.bound_type == DataType::Int64 {
            a
        } else {
            cast(&a, &self.bound_type)?
        })
    }
}

impl Operator for WindowAggregate {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn emits_stream(&self) -> bool {
        false
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if input.num_rows() == 0 {
            return Ok(());
        }
        let times = input
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values();
        let (mut min, mut max) = crate::time::convert::min_max(times);
        let on_time = match ctx.watermark() {
            Some(wm) => self.split_late(input, wm, min, ctx)?,
            None => None,
        };
        let batch = on_time.as_ref().unwrap_or(input);
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = batch
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values();
        if on_time.is_some() {
            // Late rows were split off: the extremes of what is left.
            (min, max) = crate::time::convert::min_max(times);
        }
        self.window.assign(times, min, max, &mut self.starts);
        self.created.clear();
        self.keys.assign(
            batch,
            &self.starts,
            &mut self.ids,
            &mut self.groups,
            &mut self.created,
        )?;
        for &g in &self.created {
            let start = self.ids.window(g);
            for a in &mut self.aggs {
                a.reset(g);
            }
            match self.windows.get_mut(&start) {
                Some(groups) => groups.push(g),
                None => {
                    let deadline = start
                        .saturating_add(self.window.size())
                        .saturating_add(self.lateness);
                    ctx.register_timer(deadline, start);
                    self.windows.insert(start, vec![g]);
                }
            }
        }
        for a in &mut self.aggs {
            a.update(&self.groups, batch)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _deadline: Timestamp,
        start: i64,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let Some(groups) = self.windows.remove(&start) else {
            return Ok(());
        };
        let n = groups.len();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        columns.push(self.bound_column(start, n)?);
        columns.push(self.bound_column(start + self.window.size(), n)?);
        columns.extend(self.keys.finish(&groups)?);
        for a in &self.aggs {
            columns.push(a.finish(&groups)?);
        }
        for &g in &groups {
            self.keys.remove(g, &self.ids);
            self.ids.release(g);
        }
        ctx.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            open_windows: self.windows.len() as u64,
            live_groups: self.ids.live() as u64,
            peak_groups: self.ids.peak() as u64,
            ..self.metrics
        }
    }
}
