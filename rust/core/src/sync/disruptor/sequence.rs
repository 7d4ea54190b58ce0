//! `Sequence`: a padded, monotonically increasing `i64` cursor.
//!
//! Every party of a disruptor publishes its progress through a `Sequence`: the producer side
//! (the sequencer's cursor) and each consumer (the highest sequence it has finished with). A
//! sequence starts at [`Sequence::INITIAL`] (`-1`: nothing yet) and only moves forward.
//!
//! Invariants and ordering:
//! - exactly one thread stores to a given `Sequence` (the owner of that progress), except the
//!   multi-producer claim cursor, which is only ever advanced with a read-modify-write;
//! - a store ([`Sequence::set`]) is `Release` and is made *after* the slot accesses it covers
//!   (slot writes for a producer, slot reads or writes for a consumer);
//! - a load ([`Sequence::get`]) is `Acquire`, so whoever sees the new value also sees those
//!   slot accesses. Both were shipped as `Relaxed` bugs elsewhere (see the module docs of
//!   [`disruptor`](super)).
//!
//! The value sits alone on its cache line pair ([`CachePadded`]), so the line a producer spins
//! on is not dirtied by unrelated stores.

use std::fmt;

use crossbeam_utils::CachePadded;

use super::super::primitives::{AtomicI64, Ordering};

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

/// A padded atomic `i64` cursor; see the module docs for its ordering rules.
pub struct Sequence {
    value: CachePadded<AtomicI64>,
}

impl Sequence {
    /// The value of a sequence before anything was published or processed.
    pub const INITIAL: i64 = -1;

    /// A sequence at [`Sequence::INITIAL`].
    pub fn new() -> Self {
        Sequence::with_value(Sequence::INITIAL)
    }

    /// A sequence at `value`.
    pub fn with_value(value: i64) -> Self {
        Sequence {
            value: CachePadded::new(AtomicI64::new(value)),
        }
    }

    /// The current value (`Acquire`: slot accesses made before the store of this value are
    /// visible to the caller).
    #[inline]
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Acquire)
    }

    /// Stores `value` (`Release`: call it after the slot accesses it covers). Only the owner of
    /// the sequence stores to it, and values never decrease.
    #[inline]
    pub fn set(&self, value: i64) {
        debug_assert!(value >= self.value.load(Ordering::Relaxed));
        self.value.store(value, Ordering::Release);
    }

    /// The value without ordering; for the owner re-reading its own sequence.
    #[inline]
    pub(crate) fn get_relaxed(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Adds `n` and returns the previous value. The multi-producer claim: `Relaxed`, because
    /// the claim orders nothing by itself (slot reuse is ordered by the Acquire loads of the
    /// gating sequences, publication by the availability flags).
    #[inline]
    pub(crate) fn fetch_add(&self, n: i64) -> i64 {
        self.value.fetch_add(n, Ordering::Relaxed)
    }

    /// Moves from `current` to `new` if the value is still `current` (the non-blocking
    /// multi-producer claim; `Relaxed` for the same reason as [`Sequence::fetch_add`]).
    #[inline]
    pub(crate) fn compare_exchange(&self, current: i64, new: i64) -> Result<i64, i64> {
        self.value
            .compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed)
    }
}

impl Default for Sequence {
    fn default() -> Self {
        Sequence::new()
    }
}

impl fmt::Debug for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Sequence").field(&self.get()).finish()
    }
}

/// The smallest value among `sequences` (`Acquire` loads), or `default` when there are none.
#[inline]
pub(crate) fn minimum_sequence(sequences: &[Arc<Sequence>], default: i64) -> i64 {
    let mut min = default;
    for (i, s) in sequences.iter().enumerate() {
        let v = s.get();
        if i == 0 || v < min {
            min = v;
        }
    }
    min
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    #[test]
    fn starts_at_minus_one_and_moves_forward() {
        let s = Sequence::new();
        assert_eq!(s.get(), -1);
        s.set(5);
        assert_eq!(s.get(), 5);
        assert_eq!(s.fetch_add(3), 5);
        assert_eq!(s.get_relaxed(), 8);
        assert_eq!(format!("{s:?}"), "Sequence(8)");
        assert_eq!(Sequence::default().get(), Sequence::INITIAL);
    }

    #[test]
    fn padded_to_its_own_lines() {
        assert!(std::mem::size_of::<Sequence>() >= 64);
        assert!(std::mem::align_of::<Sequence>() >= 64);
    }

    #[test]
    fn minimum_of_none_is_the_default() {
        assert_eq!(minimum_sequence(&[], 42), 42);
        let seqs = vec![
            Arc::new(Sequence::with_value(7)),
            Arc::new(Sequence::with_value(3)),
            Arc::new(Sequence::with_value(9)),
        ];
        assert_eq!(minimum_sequence(&seqs, 100), 3);
        assert_eq!(minimum_sequence(&seqs, 1), 3);
    }
}
