//! Window assigners: which window(s) an event time belongs to.
//!
//! Tumbling windows of `size` ms aligned to `offset` (windows are `[start, start + size)` with
//! `start ≡ offset (mod size)`). Assignment is vectorised per batch: a batch whose rows fall in
//! one or two windows (the common case for time-ordered input) is assigned without a division
//! per row.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Longest window or lateness accepted (100 years), so bound arithmetic never overflows.
pub const MAX_SPAN_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// A window definition as sent by the builder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowSpec {
    /// Fixed-size, non-overlapping windows.
    Tumbling {
        /// Window length in ms.
        size_ms: i64,
        /// Alignment of window starts in ms (0: aligned to the epoch).
        #[serde(default)]
        offset_ms: i64,
    },
}

/// Tumbling window assigner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tumbling {
    size: i64,
    offset: i64,
}

impl Tumbling {
    /// Validates `size` (1 ms to 100 years) and normalises `offset` into `[0, size)`.
    pub fn new(size: i64, offset: i64) -> Result<Self> {
        if size <= 0 || size > MAX_SPAN_MS {
            return Err(Error::InvalidPlan(format!(
                "tumbling window size must be between 1 ms and 100 years, got {size} ms"
            )));
        }
        Ok(Tumbling {
            size,
            offset: offset.rem_euclid(size),
        })
    }

    /// Window length in ms.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// Start of the window holding `ts`.
    #[inline]
    pub fn start_of(&self, ts: Timestamp) -> Timestamp {
        ts - (ts - self.offset).rem_euclid(self.size)
    }

    /// Writes the window start of every time in `times` (whose extremes are `min`, `max`) to
    /// `out` (cleared first).
    pub fn assign(&self, times: &[i64], min: i64, max: i64, out: &mut Vec<i64>) {
        out.clear();
        if times.is_empty() {
            return;
        }
        let first = self.start_of(min);
        let last = self.start_of(max);
        if first == last {
            out.resize(times.len(), first);
        } else if last - first == self.size {
            out.extend(times.iter().map(|&t| if t >= last { last } else { first }));
        } else {
            out.extend(times.iter().map(|&t| self.start_of(t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_of_handles_negative_and_offset() {
        let w = Tumbling::new(1000, 0).unwrap();
        assert_eq!(w.start_of(0), 0);
        assert_eq!(w.start_of(999), 0);
        assert_eq!(w.start_of(1000), 1000);
        assert_eq!(w.start_of(-1), -1000);
        let o = Tumbling::new(1000, 250).unwrap();
        assert_eq!(o.start_of(249), -750);
        assert_eq!(o.start_of(250), 250);
    }

    #[test]
    fn assign_paths_agree_with_start_of() {
        let w = Tumbling::new(100, 0).unwrap();
        for times in [
            vec![5i64, 7, 99],
            vec![5, 150, 120, 99],
            vec![-50, 400, 5, 1000],
        ] {
            let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
            let mut out = Vec::new();
            w.assign(&times, min, max, &mut out);
            let expect: Vec<i64> = times.iter().map(|&t| w.start_of(t)).collect();
            assert_eq!(out, expect);
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(Tumbling::new(0, 0).is_err());
        assert!(Tumbling::new(-5, 0).is_err());
        assert!(Tumbling::new(MAX_SPAN_MS + 1, 0).is_err());
    }
}
