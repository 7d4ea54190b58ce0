//! Emit strategies of windowed aggregations, and the layout of their result batches.
//!
//! This module owns *when* a window's rows leave (the [`EmitSpec`] rules every window
//! operator follows) and *what* they look like ([`ResultLayout`]: `window_start`,
//! `window_end`, keys, aggregates, an optional `weight`, and the hidden event time
//! `window_end - 1`). It never holds window state.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_cast::cast;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::engine::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// When a windowed query emits results. See `docs/SEMANTICS.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmitSpec {
    /// When the watermark reaches the window's end; again after a batch of allowed-late rows.
    #[default]
    OnWindowClose,
    /// Once per window, when the allowed lateness has expired.
    Final,
    /// After every input batch, for the windows it changed.
    OnUpdate,
    /// Every `interval_ms` of processing time, for the windows changed since; final rows at
    /// close.
    Periodic {
        /// Period in ms.
        interval_ms: i64,
    },
    /// After every input batch: retractions (`weight = -1`) and new rows (`+1`).
    Changelog,
}

impl EmitSpec {
    /// Checks the strategy's parameters.
    pub fn validate(&self) -> Result<()> {
        if let EmitSpec::Periodic { interval_ms } = self {
            if *interval_ms <= 0 {
                return Err(Error::InvalidPlan(format!(
                    "periodic emit needs a positive interval, got {interval_ms} ms"
                )));
            }
        }
        Ok(())
    }

    /// Whether a window fires (emits) when the watermark reaches its end, before it closes.
    pub fn fires_at_end(&self, lateness: i64) -> bool {
        matches!(self, EmitSpec::OnWindowClose) && lateness > 0
    }

    /// Whether a window's rows are emitted when it closes.
    pub fn emits_at_close(&self, lateness: i64) -> bool {
        match self {
            EmitSpec::OnWindowClose => lateness == 0,
            EmitSpec::Final | EmitSpec::Periodic { .. } => true,
            EmitSpec::OnUpdate | EmitSpec::Changelog => false,
        }
    }

    /// Whether every input batch emits the windows it changed.
    pub fn per_batch(&self) -> bool {
        matches!(self, EmitSpec::OnUpdate | EmitSpec::Changelog)
    }

    /// Whether emitted rows are never superseded.
    pub fn append_only(&self, lateness: i64) -> bool {
        match self {
            EmitSpec::Final => true,
            EmitSpec::OnWindowClose => lateness == 0,
            _ => false,
        }
    }
}

/// Processing-time pacing of [`EmitSpec::Periodic`]: the first tick starts the period.
#[derive(Debug, Default)]
pub struct PeriodicClock {
    last: Option<Timestamp>,
}

impl PeriodicClock {
    /// A clock whose current period started at `last` (as read by [`last`](Self::last)).
    pub fn at(last: Option<Timestamp>) -> Self {
        PeriodicClock { last }
    }

    /// When the current period started (`None`: no periodic emit seen yet).
    pub fn last(&self) -> Option<Timestamp> {
        self.last
    }

    /// Whether a periodic emit is due at `now` under `emit` (never for other strategies);
    /// when it is, the next period starts at `now`.
    pub fn due(&mut self, emit: EmitSpec, now: Timestamp) -> bool {
        let EmitSpec::Periodic { interval_ms } = emit else {
            return false;
        };
        match self.last {
            Some(last) if now.saturating_sub(last) < interval_ms => false,
            Some(_) => {
                self.last = Some(now);
                true
            }
            None => {
                self.last = Some(now);
                false
            }
        }
    }
}

/// The columns of a window result: bounds, keys, aggregates, optional weight, hidden time.
pub struct ResultLayout {
    schema: SchemaRef,
    bound_type: DataType,
}

impl ResultLayout {
    /// The layout for these key and aggregate fields. Fails if a name repeats.
    pub fn new(keys: &[Field], aggs: &[Field], bound_type: DataType, weight: bool) -> Result<Self> {
        let mut fields = vec![
            Field::new("window_start", bound_type.clone(), false),
            Field::new("window_end", bound_type.clone(), false),
        ];
        fields.extend(keys.iter().cloned());
        fields.extend(aggs.iter().cloned());
        if weight {
            fields.push(Field::new("weight", DataType::Int64, false));
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name() == f.name()) {
                return Err(Error::InvalidPlan(format!(
                    "result column '{}' appears twice; rename the aggregate",
                    f.name()
                )));
            }
        }
        fields.push(Field::new(TIME_COLUMN, DataType::Int64, false));
        Ok(ResultLayout {
            schema: Arc::new(Schema::new(fields)),
            bound_type,
        })
    }

    /// The stream schema of results.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn bounds(&self, values: Vec<i64>) -> Result<ArrayRef> {
        let a: ArrayRef = Arc::new(Int64Array::from(values));
        Ok(if self.bound_type == DataType::Int64 {
            a
        } else {
            cast(&a, &self.bound_type)?
        })
    }

    /// One batch of results: row `i` is window `[starts[i], ends[i])` with the given key and
    /// aggregate columns; `weight` fills the weight column when the layout has one.
    pub fn build(
        &self,
        starts: Vec<i64>,
        ends: Vec<i64>,
        keys: Vec<ArrayRef>,
        aggs: Vec<ArrayRef>,
        weight: Option<i64>,
    ) -> Result<RecordBatch> {
        let n = starts.len();
        let time: ArrayRef = Arc::new(Int64Array::from_iter_values(ends.iter().map(|e| e - 1)));
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        columns.push(self.bounds(starts)?);
        columns.push(self.bounds(ends)?);
        columns.extend(keys);
        columns.extend(aggs);
        if let Some(w) = weight {
            columns.push(Arc::new(Int64Array::from_value(w, n)));
        }
        columns.push(time);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
