//! Conversion of a user's time column into engine event time (`i64` epoch milliseconds).
//!
//! Accepted column types: `Int64` (already epoch milliseconds: zero-copy) and `Timestamp` of any
//! unit, with or without a time zone (the stored values are UTC instants, so the zone does not
//! change the conversion). Conversion is one vectorised pass over the values buffer, flooring
//! towards negative infinity so that an instant 0.5 ms before the epoch lands at -1 ms.
//! This module never looks at rows one by one outside that single kernel loop, and never
//! accepts nulls or values outside [`MIN_EVENT_TIME`, `MAX_EVENT_TIME`].

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, Int64Array};
use arrow_schema::{DataType, TimeUnit};

use super::{Timestamp, MAX_EVENT_TIME, MIN_EVENT_TIME};

/// Why a time column could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeColumnProblem {
    /// The type is neither int64 nor a timestamp.
    UnsupportedType(DataType),
    /// The column has null values.
    Nulls(usize),
    /// A value lies outside the supported range.
    OutOfRange(Timestamp),
}

impl std::fmt::Display for TimeColumnProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeColumnProblem::UnsupportedType(t) => write!(
                f,
                "type {t} is not supported; use int64 epoch milliseconds or a timestamp type"
            ),
            TimeColumnProblem::Nulls(n) => {
                write!(f, "{n} null value(s); every row needs an event time")
            }
            TimeColumnProblem::OutOfRange(v) => write!(
                f,
                "value {v} ms is outside the supported range [{MIN_EVENT_TIME}, {MAX_EVENT_TIME}] ms (years -7963..9999)"
            ),
        }
    }
}

/// Whether `dt` can be used as an event-time column.
pub fn is_time_type(dt: &DataType) -> bool {
    matches!(dt, DataType::Int64 | DataType::Timestamp(_, _))
}

/// Event times of a converted column, with the batch's extremes (computed in the same pass).
#[derive(Debug, Clone)]
pub struct EventTimes {
    /// Epoch milliseconds, no nulls.
    pub millis: Int64Array,
    /// Smallest value (`i64::MAX` for an empty column).
    pub min: Timestamp,
    /// Largest value (`i64::MIN` for an empty column).
    pub max: Timestamp,
}

/// Converts `column` to epoch milliseconds. Int64 input is returned without copying.
pub fn to_event_times(column: &ArrayRef) -> Result<EventTimes, TimeColumnProblem> {
    if !is_time_type(column.data_type()) {
        return Err(TimeColumnProblem::UnsupportedType(
            column.data_type().clone(),
        ));
    }
    if column.null_count() > 0 {
        return Err(TimeColumnProblem::Nulls(column.null_count()));
    }
    let millis: Int64Array =
        match column.data_type() {
            DataType::Int64 => column.as_primitive::<Int64Type>().clone(),
            DataType::Timestamp(TimeUnit::Millisecond, _) => column
                .as_primitive::<TimestampMillisecondType>()
                .reinterpret_cast::<Int64Type>(),
            DataType::Timestamp(TimeUnit::Second, _) => column
                .as_primitive::<TimestampSecondType>()
                .unary::<_, Int64Type>(|s| s.saturating_mul(1000)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => column
                .as_primitive::<TimestampMicrosecondType>()
                .unary::<_, Int64Type>(|us| us.div_euclid(1000)),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => column
                .as_primitive::<TimestampNanosecondType>()
                .unary::<_, Int64Type>(|ns| ns.div_euclid(1_000_000)),
            other => return Err(TimeColumnProblem::UnsupportedType(other.clone())),
        };
    let (min, max) = min_max(millis.values());
    if !millis.is_empty() {
        if min < MIN_EVENT_TIME {
            return Err(TimeColumnProblem::OutOfRange(min));
        }
        if max > MAX_EVENT_TIME {
            return Err(TimeColumnProblem::OutOfRange(max));
        }
    }
    Ok(EventTimes { millis, min, max })
}

/// Largest non-null value of a watermark (punctuation) column, in epoch milliseconds.
/// Conversion is monotonic, so the raw maximum is converted once instead of every row.
pub fn max_millis(column: &ArrayRef) -> Result<Option<Timestamp>, TimeColumnProblem> {
    let unit = match column.data_type() {
        DataType::Int64 => None,
        DataType::Timestamp(u, _) => Some(*u),
        other => return Err(TimeColumnProblem::UnsupportedType(other.clone())),
    };
    // Timestamp -> Int64 exposes the stored values without changing them.
    let raw = arrow_cast::cast(column, &DataType::Int64)
        .map_err(|_| TimeColumnProblem::UnsupportedType(column.data_type().clone()))?;
    let raw = arrow_arith::aggregate::max(raw.as_primitive::<Int64Type>());
    let ms = raw.map(|v| match unit {
        None | Some(TimeUnit::Millisecond) => v,
        Some(TimeUnit::Second) => v.saturating_mul(1000),
        Some(TimeUnit::Microsecond) => v.div_euclid(1000),
        Some(TimeUnit::Nanosecond) => v.div_euclid(1_000_000),
    });
    Ok(ms.map(|v| v.clamp(MIN_EVENT_TIME, MAX_EVENT_TIME)))
}

/// Largest value not above `limit` (`None` if there is none) and how many values are above it,
/// in one pass. Used for the future horizon: rows beyond it do not move the watermark.
pub fn max_at_or_below(values: &[i64], limit: i64) -> (Option<i64>, u64) {
    let mut max = i64::MIN;
    let mut beyond = 0u64;
    let mut any = false;
    for &v in values {
        let above = v > limit;
        beyond += above as u64;
        any |= !above;
        max = if above { max } else { max.max(v) };
    }
    (any.then_some(max), beyond)
}

/// Minimum and maximum of a slice in one pass (`(i64::MAX, i64::MIN)` when empty), vectorised
/// for the CPU it runs on ([`crate::simd::min_max_i64`]).
#[inline]
pub fn min_max(values: &[i64]) -> (i64, i64) {
    crate::simd::min_max_i64(values)
}

/// The inverse direction for results: the Arrow type used for window bounds of a source whose
/// time column has type `source_time_type` (timestamps keep their zone, in milliseconds).
pub fn bound_type(source_time_type: &DataType) -> DataType {
    match source_time_type {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        _ => DataType::Int64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Float64Array, TimestampMicrosecondArray, TimestampNanosecondArray, TimestampSecondArray,
    };
    use std::sync::Arc;

    #[test]
    fn int64_is_zero_copy() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![5, 1, 9]));
        let t = to_event_times(&a).unwrap();
        assert_eq!(
            t.millis.values().as_ptr(),
            a.as_primitive::<Int64Type>().values().as_ptr()
        );
        assert_eq!((t.min, t.max), (1, 9));
    }

    #[test]
    fn timestamp_units_floor_to_millis() {
        let ns: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![1_500_000, -1, 2_999_999]).with_timezone("UTC"),
        );
        assert_eq!(
            to_event_times(&ns).unwrap().millis.values().to_vec(),
            vec![1, -1, 2]
        );
        let us: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_500, -1_500]));
        assert_eq!(
            to_event_times(&us).unwrap().millis.values().to_vec(),
            vec![1, -2]
        );
        let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![2]));
        assert_eq!(
            to_event_times(&s).unwrap().millis.values().to_vec(),
            vec![2000]
        );
    }

    #[test]
    fn rejects_nulls_types_and_range() {
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        assert_eq!(to_event_times(&n).unwrap_err(), TimeColumnProblem::Nulls(1));
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        assert!(matches!(
            to_event_times(&f),
            Err(TimeColumnProblem::UnsupportedType(_))
        ));
        let big: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX]));
        assert!(matches!(
            to_event_times(&big),
            Err(TimeColumnProblem::OutOfRange(_))
        ));
        let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MIN]));
        assert!(matches!(
            to_event_times(&s),
            Err(TimeColumnProblem::OutOfRange(_))
        ));
    }

    #[test]
    fn max_at_or_below_splits_at_the_limit() {
        assert_eq!(max_at_or_below(&[5, 100, 7, 200], 50), (Some(7), 2));
        assert_eq!(max_at_or_below(&[100, 200], 50), (None, 2));
        assert_eq!(max_at_or_below(&[1, 50], 50), (Some(50), 0));
        assert_eq!(max_at_or_below(&[], 0), (None, 0));
    }

    #[test]
    fn empty_column_is_fine() {
        let a: ArrayRef = Arc::new(Int64Array::from(Vec::<i64>::new()));
        let t = to_event_times(&a).unwrap();
        assert_eq!((t.min, t.max), (i64::MAX, i64::MIN));
    }
}
