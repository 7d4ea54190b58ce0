//! Window assigners: which window(s) an event time belongs to.
//!
//! Tumbling windows of `size` ms aligned to `offset` (windows are `[start, start + size)` with
//! `start ≡ offset (mod size)`). Assignment is vectorised per batch: a batch whose rows fall in
//! one or two windows (the common case for time-ordered input) is assigned without a division
//! per row.
//!
//! Sliding windows are built from *panes* ([`Panes`]): the time axis is cut into tumbling
//! panes of `gcd(size, slide)` ms, each row is assigned to exactly one pane (never copied
//! once per window), and a window's result is the merge of its `size / pane` panes. Tumbling
//! windows are the special case of one pane per window.

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
    /// Fixed-size windows starting every `slide_ms`.
    Sliding {
        /// Window length in ms.
        size_ms: i64,
        /// Distance between window starts in ms (`1 <= slide <= size`).
        slide_ms: i64,
        /// Alignment of window starts in ms.
        #[serde(default)]
        offset_ms: i64,
    },
    /// Per-key sessions closed by `gap_ms` of inactivity.
    Session {
        /// Inactivity gap in ms.
        gap_ms: i64,
    },
}

impl WindowSpec {
    /// The pane layout of a tumbling or sliding window (sessions have none).
    pub fn assigner(&self) -> Result<Panes> {
        match *self {
            WindowSpec::Tumbling { size_ms, offset_ms } => Panes::new(size_ms, size_ms, offset_ms),
            WindowSpec::Sliding {
                size_ms,
                slide_ms,
                offset_ms,
            } => Panes::new(size_ms, slide_ms, offset_ms),
            WindowSpec::Session { .. } => Err(Error::InvalidPlan(
                "session windows have no fixed panes".into(),
            )),
        }
    }
}

/// Windows of `size` starting every `slide` (aligned to `offset`), cut into panes of
/// `gcd(size, slide)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    size: i64,
    slide: i64,
    offset: i64,
    pane: Tumbling,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Panes {
    /// Validates the sizes: `1 ms <= slide <= size <= 100 years`.
    pub fn new(size: i64, slide: i64, offset: i64) -> Result<Self> {
        Tumbling::new(size, 0)?;
        if slide <= 0 || slide > size {
            return Err(Error::InvalidPlan(format!(
                "a sliding window's slide must be between 1 ms and its size ({size} ms), got {slide} ms"
            )));
        }
        let offset = offset.rem_euclid(slide);
        Ok(Panes {
            size,
            slide,
            offset,
            pane: Tumbling::new(gcd(size, slide), offset)?,
        })
    }

    /// Window length.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// Distance between window starts.
    pub fn slide(&self) -> i64 {
        self.slide
    }

    /// Pane length.
    pub fn pane_size(&self) -> i64 {
        self.pane.size()
    }

    /// Panes per window.
    pub fn panes_per_window(&self) -> i64 {
        self.size / self.pane.size()
    }

    /// The tumbling assigner of panes.
    pub fn pane(&self) -> &Tumbling {
        &self.pane
    }

    /// Start of the last window holding the pane (or time) `t`.
    #[inline]
    pub fn last_window(&self, t: Timestamp) -> Timestamp {
        t - (t - self.offset).rem_euclid(self.slide)
    }

    /// Start of the first window holding pane `p` (a pane start).
    #[inline]
    pub fn first_window(&self, p: Timestamp) -> Timestamp {
        // Smallest aligned start s with s + size >= p + pane.
        let lo = p + self.pane.size() - self.size;
        let last = self.last_window(lo);
        if last == lo {
            lo
        } else {
            last + self.slide
        }
    }

    /// Starts of the windows holding pane `p`, in order.
    pub fn windows_of(&self, p: Timestamp) -> impl Iterator<Item = Timestamp> {
        let (first, last, slide) = (self.first_window(p), self.last_window(p), self.slide);
        (0..)
            .map(move |i| first + i * slide)
            .take_while(move |&s| s <= last)
    }
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
    fn panes_of_sliding_windows() {
        let p = Panes::new(10, 4, 0).unwrap();
        assert_eq!(p.pane_size(), 2);
        assert_eq!(p.panes_per_window(), 5);
        // Pane [8, 10) lies in windows starting at 0, 4 and 8.
        assert_eq!(p.windows_of(8).collect::<Vec<_>>(), vec![0, 4, 8]);
        // Every time is in the windows the brute force finds.
        for t in -30..30i64 {
            let pane = p.pane().start_of(t);
            let brute: Vec<i64> = (-60..60)
                .filter(|&s: &i64| s.rem_euclid(4) == 0 && s <= t && t < s + 10)
                .collect();
            assert_eq!(p.windows_of(pane).collect::<Vec<_>>(), brute, "t={t}");
        }
        let o = Panes::new(10, 5, 3).unwrap();
        assert_eq!(
            o.windows_of(o.pane().start_of(9)).collect::<Vec<_>>(),
            vec![3, 8]
        );
        assert!(Panes::new(10, 11, 0).is_err());
        assert!(Panes::new(10, 0, 0).is_err());
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(Tumbling::new(0, 0).is_err());
        assert!(Tumbling::new(-5, 0).is_err());
        assert!(Tumbling::new(MAX_SPAN_MS + 1, 0).is_err());
    }
}
