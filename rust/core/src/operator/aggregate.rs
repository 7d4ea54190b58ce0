//! Aggregate functions as columnar accumulators: one typed vector per aggregate, indexed by
//! group id, updated by one tight loop per aggregate per batch (no per-row dispatch).
//!
//! Group ids are small dense integers handed out by the window operator, which recycles the
//! ids of closed windows; [`Accumulator::reset`] prepares a recycled id. Values are folded in
//! a common representation (`i64` for integers, booleans and temporal types; `f64` for floats)
//! and cast back to the input type where the result has that type (min, max, first, last).
//! Nulls are skipped; an aggregate over no non-null value is null (SQL semantics), except
//! `count`, which is 0. An `int64` sum that overflows is an error, never a wrapped value.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    /// Number of rows (no column) or of non-null values (with a column).
    Count,
    /// Sum.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Arithmetic mean (float64).
    Avg,
    /// First non-null value in arrival order.
    First,
    /// Last non-null value in arrival order.
    Last,
}

/// One aggregate of a query: `name = func(column)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggSpec {
    /// Output column name.
    pub name: String,
    /// The function.
    pub func: AggFunc,
    /// Input column (`None` only for `count`).
    #[serde(default)]
    pub column: Option<String>,
}

/// How values of an input column are folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repr {
    Int,
    Float,
}

fn repr_of(dt: &DataType) -> Option<Repr> {
    use DataType::*;
    match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Boolean => {
            Some(Repr::Int)
        }
        Timestamp(_, _) | Date32 | Date64 | Duration(_) | Time32(_) | Time64(_) => Some(Repr::Int),
        Float16 | Float32 | Float64 => Some(Repr::Float),
        _ => None,
    }
}

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow_cast::display::FormatOptions::new(),
};

/// `column` as `to` (a cheap reference count bump when it already has that type; a strict cast,
/// failing rather than producing nulls, otherwise).
fn cast_if_needed(column: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if column.data_type() == to {
        Ok(column.clone())
    } else {
        Ok(cast_with_options(column, to, &STRICT)?)
    }
}

/// Marks an int64 sum that overflowed: sticky (further additions keep it), and reported as
/// an error when the group's result is taken, so a wrapped value is never emitted. A sum
/// that is exactly `i64::MIN` is reported as an overflow too.
const OVERFLOWED: i64 = i64::MIN;

/// `a + b` for int64 sums, going (and staying) to [`OVERFLOWED`] on overflow.
#[inline(always)]
fn sticky_add(a: i64, b: i64, overflow: &mut bool) -> i64 {
    if a == OVERFLOWED {
        return OVERFLOWED;
    }
    match a.checked_add(b) {
        Some(r) if r != OVERFLOWED => r,
        _ => {
            *overflow = true;
            OVERFLOWED
        }
    }
}

/// Per-group value and non-null count for one aggregate; `first`/`last` also keep the
/// arrival sequence number of their value, so that partial results (panes, sessions) merge
/// into the value a single pass in arrival order would have produced.
#[derive(Debug, Default)]
struct Slots<T> {
    value: Vec<T>,
    count: Vec<i64>,
    seq: Vec<u64>,
}

impl<T: Copy> Slots<T> {
    fn reset(&mut self, g: usize, init: T) {
        if g >= self.value.len() {
            self.value.resize(g + 1, init);
            self.count.resize(g + 1, 0);
            self.seq.resize(g + 1, 0);
        }
        self.value[g] = init;
        self.count[g] = 0;
        self.seq[g] = 0;
    }

    /// `first` (`keep_first`) or `last` over `values`, recording arrival numbers from `seq0`.
    fn fold_ordered(
        &mut self,
        groups: &[u32],
        values: &[T],
        nulls: Option<&NullBuffer>,
        seq0: u64,
        keep_first: bool,
    ) {
        let (value, count, seq) = (&mut self.value[..], &mut self.count[..], &mut self.seq[..]);
        for (i, (&g, &v)) in groups.iter().zip(values).enumerate() {
            if nulls.is_some_and(|n| n.is_null(i)) {
                continue;
            }
            let g = g as usize;
            if !keep_first || count[g] == 0 {
                value[g] = v;
                seq[g] = seq0 + i as u64;
            }
            count[g] += 1;
        }
    }

    /// Group `g`'s partial result: value, non-null count and arrival number.
    #[inline]
    fn part(&self, g: usize) -> (T, i64, u64) {
        (self.value[g], self.count[g], self.seq[g])
    }

    /// Folds a partial result into slot `d` (`f` combines two present values).
    #[inline]
    fn combine(
        &mut self,
        d: usize,
        (value, count, seq): (T, i64, u64),
        func: AggFunc,
        mut f: impl FnMut(T, T) -> T,
    ) {
        if count == 0 {
            return;
        }
        let take = match func {
            _ if self.count[d] == 0 => true,
            AggFunc::First => seq < self.seq[d],
            AggFunc::Last => seq > self.seq[d],
            _ => {
                self.value[d] = f(self.value[d], value);
                false
            }
        };
        if take {
            self.value[d] = value;
            self.seq[d] = seq;
        }
        self.count[d] += count;
    }

    /// Folds `values` into the slots of `groups` with `f(acc, v, count_before)`.
    #[inline]
    fn fold(
        &mut self,
        groups: &[u32],
        values: &[T],
        nulls: Option<&NullBuffer>,
        mut f: impl FnMut(T, T, i64) -> T,
    ) {
        let (value, count) = (&mut self.value[..], &mut self.count[..]);
        match nulls {
            None => {
                for (&g, &v) in groups.iter().zip(values) {
                    let g = g as usize;
                    value[g] = f(value[g], v, count[g]);
                    count[g] += 1;
                }
            }
            Some(n) => {
                for (i, (&g, &v)) in groups.iter().zip(values).enumerate() {
                    if n.is_valid(i) {
                        let g = g as usize;
                        value[g] = f(value[g], v, count[g]);
                        count[g] += 1;
                    }
                }
            }
        }
    }

    fn gather<A>(&self, groups: &[u32]) -> A
    where
        A: FromIterator<Option<T>>,
    {
        groups
            .iter()
            .map(|&g| (self.count[g as usize] > 0).then(|| self.value[g as usize]))
            .collect()
    }
}

/// The checkpoint form of one [`Accumulator`]'s per-group state.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum AccumulatorState {
    /// `count()` of rows.
    CountRows(Vec<i64>),
    /// Integer slots: value, non-null count, arrival number.
    Int(Vec<i64>, Vec<i64>, Vec<u64>),
    /// Float slots: value, non-null count, arrival number.
    Float(Vec<f64>, Vec<i64>, Vec<u64>),
}

impl<T: Clone> Slots<T> {
    fn parts(&self) -> (Vec<T>, Vec<i64>, Vec<u64>) {
        (self.value.clone(), self.count.clone(), self.seq.clone())
    }

    fn from_parts(value: Vec<T>, count: Vec<i64>, seq: Vec<u64>) -> Result<Self> {
        if value.len() != count.len() || value.len() != seq.len() {
            return Err(Error::Snapshot(
                "aggregate slots of different lengths".into(),
            ));
        }
        Ok(Slots { value, count, seq })
    }
}

#[derive(Debug)]
enum State {
    CountRows(Vec<i64>),
    Int(Slots<i64>),
    Float(Slots<f64>),
}

/// A bound aggregate: function, input column index and per-group state.
#[derive(Debug)]
pub struct Accumulator {
    func: AggFunc,
    column: Option<usize>,
    column_name: String,
    input_type: DataType,
    state: State,
    output: Field,
}

impl Accumulator {
    /// A copy of the per-group state for a checkpoint.
    pub fn save(&self) -> AccumulatorState {
        match &self.state {
            State::CountRows(v) => AccumulatorState::CountRows(v.clone()),
            State::Int(s) => {
                let (v, c, q) = s.parts();
                AccumulatorState::Int(v, c, q)
            }
            State::Float(s) => {
                let (v, c, q) = s.parts();
                AccumulatorState::Float(v, c, q)
            }
        }
    }

    /// Replaces the per-group state with `state` (saved by [`save`](Self::save) from an
    /// accumulator of the same function and type).
    pub fn load(&mut self, state: AccumulatorState) -> Result<()> {
        self.state = match (&self.state, state) {
            (State::CountRows(_), AccumulatorState::CountRows(v)) => State::CountRows(v),
            (State::Int(_), AccumulatorState::Int(v, c, q)) => {
                State::Int(Slots::from_parts(v, c, q)?)
            }
            (State::Float(_), AccumulatorState::Float(v, c, q)) => {
                State::Float(Slots::from_parts(v, c, q)?)
            }
            _ => {
                return Err(Error::Snapshot(format!(
                    "aggregate '{}': the saved state has another type (was the pipeline changed?)",
                    self.output.name()
                )))
            }
        };
        Ok(())
    }

    /// Groups this accumulator has slots for.
    pub fn slots(&self) -> usize {
        match &self.state {
            State::CountRows(v) => v.len(),
            State::Int(s) => s.value.len(),
            State::Float(s) => s.value.len(),
        }
    }

    /// Binds `spec` against `schema`.
    pub fn new(spec: &AggSpec, schema: &Schema) -> Result<Self> {
        let Some(name) = &spec.column else {
            if spec.func != AggFunc::Count {
                return Err(Error::InvalidPlan(format!(
                    "aggregate '{}': {:?} needs a column, e.g. lm.{}(\"price\")",
                    spec.name,
                    spec.func,
                    format!("{:?}", spec.func).to_lowercase()
                )));
            }
            return Ok(Accumulator {
                func: AggFunc::Count,
                column: None,
                column_name: String::new(),
                input_type: DataType::Null,
                state: State::CountRows(Vec::new()),
                output: Field::new(&spec.name, DataType::Int64, false),
            });
        };
        let index = schema.index_of(name).map_err(|_| {
            Error::column_not_found(name, &format!(" in aggregate '{}'", spec.name), schema)
        })?;
        let input_type = schema.field(index).data_type().clone();
        let repr = match (spec.func, repr_of(&input_type)) {
            (AggFunc::Count, _) => Repr::Int,
            (_, Some(r)) => r,
            (_, None) => {
                return Err(Error::ColumnType {
                    column: name.clone(),
                    expected: format!(
                        "{:?} needs a numeric, boolean or temporal column",
                        spec.func
                    ),
                    found: input_type.to_string(),
                })
            }
        };
        let out_type = match (spec.func, repr) {
            (AggFunc::Count, _) => DataType::Int64,
            (AggFunc::Avg, _) => DataType::Float64,
            (AggFunc::Sum, Repr::Int) => DataType::Int64,
            (AggFunc::Sum, Repr::Float) => DataType::Float64,
            _ => input_type.clone(),
        };
        let state = match (spec.func, repr) {
            (AggFunc::Count, _) => State::Int(Slots::default()),
            (AggFunc::Avg, _) | (_, Repr::Float) => State::Float(Slots::default()),
            (_, Repr::Int) => State::Int(Slots::default()),
        };
        Ok(Accumulator {
            func: spec.func,
            column: Some(index),
            column_name: name.clone(),
            input_type,
            state,
            output: Field::new(&spec.name, out_type, spec.func != AggFunc::Count),
        })
    }

    /// The output field.
    pub fn field(&self) -> &Field {
        &self.output
    }

    /// Prepares group `g` for a new group (grows the state if `g` is new).
    pub fn reset(&mut self, g: u32) {
        let g = g as usize;
        match &mut self.state {
            State::CountRows(c) => {
                if g >= c.len() {
                    c.resize(g + 1, 0);
                }
                c[g] = 0;
            }
            State::Int(s) => s.reset(g, self.func.int_init()),
            State::Float(s) => s.reset(g, self.func.float_init()),
        }
    }

    /// Folds the rows of `batch` into the groups `groups[i]` (one per row); `seq0` is the
    /// arrival number of the batch's first row (for `first`/`last` across merges).
    pub fn update(&mut self, groups: &[u32], batch: &RecordBatch, seq0: u64) -> Result<()> {
        let func = self.func;
        match (&mut self.state, self.column) {
            (State::CountRows(counts), _) => {
                for &g in groups {
                    counts[g as usize] += 1;
                }
            }
            (State::Int(slots), Some(c)) => {
                let col = cast_if_needed(batch.column(c), &DataType::Int64)?;
                let col = col.as_primitive::<Int64Type>();
                let nulls = col.nulls();
                let values = col.values();
                match func {
                    AggFunc::Count => slots.fold(groups, values, nulls, |a, _, _| a + 1),
                    AggFunc::Sum => {
                        let mut overflow = false;
                        slots.fold(groups, values, nulls, |a, v, _| {
                            sticky_add(a, v, &mut overflow)
                        });
                        if overflow {
                            return Err(Error::Overflow(format!(
                                "sum of column '{}' exceeds the int64 range; cast it to float first",
                                self.column_name
                            )));
                        }
                    }
                    AggFunc::Min => slots.fold(groups, values, nulls, |a, v, _| a.min(v)),
                    AggFunc::Max => slots.fold(groups, values, nulls, |a, v, _| a.max(v)),
                    AggFunc::First => slots.fold_ordered(groups, values, nulls, seq0, true),
                    AggFunc::Last => slots.fold_ordered(groups, values, nulls, seq0, false),
                    AggFunc::Avg => unreachable_state(),
                }
            }
            (State::Float(slots), Some(c)) => {
                let col = cast_if_needed(batch.column(c), &DataType::Float64)?;
                let col = col.as_primitive::<Float64Type>();
                let nulls = col.nulls();
                let values = col.values();
                match func {
                    AggFunc::Sum | AggFunc::Avg => {
                        slots.fold(groups, values, nulls, |a, v, _| a + v)
                    }
                    AggFunc::Min => slots.fold(groups, values, nulls, |a, v, _| a.min(v)),
                    AggFunc::Max => slots.fold(groups, values, nulls, |a, v, _| a.max(v)),
                    AggFunc::First => slots.fold_ordered(groups, values, nulls, seq0, true),
                    AggFunc::Last => slots.fold_ordered(groups, values, nulls, seq0, false),
                    AggFunc::Count => unreachable_state(),
                }
            }
            (_, None) => unreachable_state(),
        }
        Ok(())
    }

    /// Folds group `s` of `src` (an accumulator bound from the same spec) into group `d` of
    /// this one, for each `(d, s)` in `pairs`: the result is what folding both groups' rows
    /// into one would have given.
    pub fn merge_from(&mut self, src: &Accumulator, pairs: &[(u32, u32)]) -> Result<()> {
        self.merge_pairs(Some(&src.state), pairs)
    }

    /// Like [`Accumulator::merge_from`] with both groups in this accumulator (`d != s`).
    pub fn merge_within(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        self.merge_pairs(None, pairs)
    }

    /// Folds, for each `(d, s)`, group `s` of `src` (or of this state when `None`) into `d`.
    fn merge_pairs(&mut self, src: Option<&State>, pairs: &[(u32, u32)]) -> Result<()> {
        let func = self.func;
        let mut overflow = false;
        match &mut self.state {
            State::CountRows(d) => {
                for &(dg, sg) in pairs {
                    let n = match src {
                        Some(State::CountRows(s)) => s[sg as usize],
                        None => d[sg as usize],
                        Some(_) => unreachable_value(0),
                    };
                    d[dg as usize] += n;
                }
            }
            State::Int(d) => {
                for &(dg, sg) in pairs {
                    let part = match src {
                        Some(State::Int(s)) => s.part(sg as usize),
                        None => d.part(sg as usize),
                        Some(_) => unreachable_value((0, 0, 0)),
                    };
                    d.combine(dg as usize, part, func, |a, b| match func {
                        AggFunc::Min => a.min(b),
                        AggFunc::Max => a.max(b),
                        AggFunc::Count => a,
                        _ => sticky_add(a, b, &mut overflow),
                    });
                }
            }
            State::Float(d) => {
                for &(dg, sg) in pairs {
                    let part = match src {
                        Some(State::Float(s)) => s.part(sg as usize),
                        None => d.part(sg as usize),
                        Some(_) => unreachable_value((0.0, 0, 0)),
                    };
                    d.combine(dg as usize, part, func, |a, b| match func {
                        AggFunc::Min => a.min(b),
                        AggFunc::Max => a.max(b),
                        _ => a + b,
                    });
                }
            }
        }
        if overflow {
            return Err(Error::Overflow(format!(
                "sum of column '{}' exceeds the int64 range; cast it to float first",
                self.column_name
            )));
        }
        Ok(())
    }

    /// The results for `groups`, in that order, as a column of [`Accumulator::field`]'s type.
    pub fn finish(&self, groups: &[u32]) -> Result<ArrayRef> {
        let out: ArrayRef = match &self.state {
            State::CountRows(c) => Arc::new(
                groups
                    .iter()
                    .map(|&g| c[g as usize])
                    .collect::<Int64Array>(),
            ),
            State::Int(s) if self.func == AggFunc::Count => Arc::new(
                groups
                    .iter()
                    .map(|&g| s.count[g as usize])
                    .collect::<Int64Array>(),
            ),
            State::Int(s) => {
                if self.func == AggFunc::Sum
                    && groups.iter().any(|&g| {
                        s.value.get(g as usize) == Some(&OVERFLOWED)
                            && s.count.get(g as usize).is_some_and(|&c| c > 0)
                    })
                {
                    return Err(Error::Overflow(format!(
                        "sum of column '{}' exceeded the int64 range earlier in this window; cast it to float first",
                        self.column_name
                    )));
                }
                Arc::new(s.gather::<Int64Array>(groups))
            }
            State::Float(s) if self.func == AggFunc::Avg => Arc::new(
                groups
                    .iter()
                    .map(|&g| {
                        let n = s.count[g as usize];
                        (n > 0).then(|| s.value[g as usize] / n as f64)
                    })
                    .collect::<Float64Array>(),
            ),
            State::Float(s) => Arc::new(s.gather::<Float64Array>(groups)),
        };
        if out.data_type() == self.output.data_type() {
            Ok(out)
        } else {
            Ok(cast_with_options(&out, self.output.data_type(), &STRICT)?)
        }
    }

    /// Bytes of state per group (for memory accounting).
    pub fn bytes_per_group(&self) -> usize {
        match self.state {
            State::CountRows(_) => 8,
            State::Int(_) | State::Float(_) => 16,
        }
    }

    /// The input type the aggregate reads (Null for `count()`).
    pub fn input_type(&self) -> &DataType {
        &self.input_type
    }
}

impl AggFunc {
    fn int_init(self) -> i64 {
        match self {
            AggFunc::Min => i64::MAX,
            AggFunc::Max => i64::MIN,
            _ => 0,
        }
    }

    fn float_init(self) -> f64 {
        match self {
            AggFunc::Min => f64::INFINITY,
            AggFunc::Max => f64::NEG_INFINITY,
            _ => 0.0,
        }
    }
}

/// The state/function pairs are fixed in [`Accumulator::new`]; the others cannot occur.
#[cold]
fn unreachable_state() {
    debug_assert!(false, "aggregate state does not match its function");
}

/// Accumulators merged together are bound from the same spec, so their states match.
#[cold]
fn unreachable_value<T>(empty: T) -> T {
    debug_assert!(false, "merged accumulators have different states");
    empty
}
