//! Processing-time (wall-clock) sources.
//!
//! This module owns the [`Clock`] abstraction: where the engine reads the current
//! processing time, in milliseconds since the Unix epoch. Two implementations are provided:
//! [`SystemClock`] (the real wall clock) and [`ManualClock`] (a shared, hand-driven clock for
//! tests and deterministic replays).
//!
//! Invariants and limits:
//! - A clock is only ever *read* by the watermark machinery, for two purposes: idle-source
//!   detection and the cap on watermarks far in the future (see
//!   [`watermark`](super::watermark)). Processing time never moves event time by itself.
//! - Reading a clock never panics, whatever the state of the host clock (a system clock set
//!   before 1970 yields a negative value; a value beyond the `i64` range saturates).
//! - Processing time is not assumed to be monotonic: the host clock may be adjusted, and a
//!   [`ManualClock`] may be set backwards. Callers must not rely on monotonicity.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of processing time (wall clock), in milliseconds since the Unix epoch.
///
/// Only used for idle detection and the future-timestamp cap; it never moves event time by
/// itself. Implementations must be cheap to call and must never panic.
pub trait Clock: Send + Sync {
    /// Current processing time in milliseconds since the Unix epoch (negative before it).
    fn now_ms(&self) -> i64;
}

/// The host's wall clock ([`SystemTime::now`]), in milliseconds since the Unix epoch.
///
/// A host clock set before the epoch yields a negative value; a time too far from the epoch
/// to fit in an `i64` of milliseconds saturates to `i64::MAX` / `i64::MIN`. Never panics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl SystemClock {
    /// Creates the system clock (a unit value; provided for symmetry with [`ManualClock::new`]).
    pub fn new() -> Self {
        SystemClock
    }
}

/// Whole milliseconds of `d`, saturating at `i64::MAX`.
fn duration_ms_saturating(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => duration_ms_saturating(since),
            // The host clock is before the epoch: report the negative offset.
            Err(before) => duration_ms_saturating(before.duration()).saturating_neg(),
        }
    }
}

/// A processing-time clock that only moves when told to; for tests and deterministic runs.
///
/// Clones share the same underlying time (an `Arc<AtomicI64>`), so a test can hand a clone to
/// the engine and drive it from outside. All updates saturate instead of overflowing.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// Creates a clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            now: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Sets the time to `ms` (which may be earlier than the current time).
    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// Moves the time by `delta_ms` (negative moves it back), saturating at the `i64` bounds.
    /// Returns the new time.
    pub fn advance(&self, delta_ms: i64) -> i64 {
        let mut current = self.now.load(Ordering::SeqCst);
        loop {
            let next = current.saturating_add(delta_ms);
            match self
                .now
                .compare_exchange_weak(current, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }

    /// Current time of this clock (same as [`Clock::now_ms`], usable without the trait in scope).
    pub fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        ManualClock::now_ms(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        // 2020-01-01T00:00:00Z; any sane test host is past it.
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn system_clock_usable_as_trait_object() {
        let clock: Box<dyn Clock> = Box::new(SystemClock::new());
        let a = clock.now_ms();
        let b = clock.now_ms();
        // Not guaranteed monotonic in general, but two back-to-back reads are never hours apart.
        assert!(a.abs_diff(b) < 3_600_000);
    }

    #[test]
    fn duration_conversion_saturates() {
        assert_eq!(duration_ms_saturating(Duration::from_millis(5)), 5);
        assert_eq!(duration_ms_saturating(Duration::MAX), i64::MAX);
        assert_eq!(
            duration_ms_saturating(Duration::MAX).saturating_neg(),
            -i64::MAX
        );
    }

    #[test]
    fn manual_clock_set_advance_and_shared_clones() {
        let c = ManualClock::new(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.advance(250), 1_250);
        assert_eq!(shared.now_ms(), 1_250);
        shared.set(10);
        assert_eq!(c.now_ms(), 10);
        assert_eq!(c.advance(-20), -10);
        let as_trait: &dyn Clock = &c;
        assert_eq!(as_trait.now_ms(), -10);
    }

    #[test]
    fn manual_clock_saturates() {
        let c = ManualClock::new(i64::MAX - 1);
        assert_eq!(c.advance(10), i64::MAX);
        c.set(i64::MIN + 1);
        assert_eq!(c.advance(-10), i64::MIN);
        assert_eq!(ManualClock::default().now_ms(), 0);
    }

    #[test]
    fn manual_clock_concurrent_advances() {
        let c = ManualClock::new(0);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        c.advance(1);
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
        assert_eq!(c.now_ms(), 4_000);
    }
}
