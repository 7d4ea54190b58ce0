//! `SequenceBarrier`: what a consumer waits on before it may read a sequence.
//!
//! A consumer may process sequence `s` once `s` is published *and* every consumer it depends on
//! has finished `s`. Its barrier therefore holds where the publisher's progress is read (the
//! single-producer cursor, or the multi-producer availability flags) and the sequences of its
//! dependencies. With dependencies, their minimum alone bounds what is available: they only
//! ever pass published sequences, and their Release stores carry the producer's slot writes
//! (and their own, for a pipeline stage that mutates events) to us transitively. Without
//! dependencies, the single-producer cursor is the bound, and for multiple producers the
//! highest contiguous run of published flags at or above the requested sequence.
//!
//! Dependency graphs are built from this one rule: parallel consumers share a barrier on the
//! cursor only; a pipeline stage depends on the previous stage; a diamond's join depends on
//! both branches.
//!
//! A barrier can be *alerted* (shutdown): a waiter returns [`Alerted`] once nothing is
//! available and the alert is set. The alert is re-checked on every wake-up, and
//! [`SequenceBarrier::alert`] signals the wait strategy after setting it, so a consumer parked
//! by [`Blocking`](crate::sync::wait::Blocking) wakes.

use std::fmt;

use super::super::primitives::{AtomicBool, Ordering};
use super::sequence::{minimum_sequence, Sequence};
use super::sequencer::MultiState;
use crate::sync::wait::WaitStrategy;

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

/// The barrier was alerted while nothing was available: the consumer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sequence barrier was alerted")]
pub struct Alerted;

/// Where a barrier reads the producers' progress.
#[derive(Clone)]
pub(crate) enum Published {
    /// The single producer's cursor: everything up to it is published.
    Single(Arc<Sequence>),
    /// The multi-producer claim cursor and per-slot availability flags.
    Multi(Arc<MultiState>),
}

/// Waits for a sequence to be published and processed by the consumers it depends on. See
/// the module docs.
pub struct SequenceBarrier<W> {
    published: Published,
    dependencies: Box<[Arc<Sequence>]>,
    wait: Arc<W>,
    alert: Arc<AtomicBool>,
}

impl<W: WaitStrategy> SequenceBarrier<W> {
    /// A barrier over `published` and `dependencies`; `alert` is shared when several
    /// barriers are stopped together (one is created otherwise).
    pub(crate) fn new(
        published: Published,
        dependencies: Vec<Arc<Sequence>>,
        wait: Arc<W>,
        alert: Option<Arc<AtomicBool>>,
    ) -> Self {
        SequenceBarrier {
            published,
            dependencies: dependencies.into_boxed_slice(),
            wait,
            alert: alert.unwrap_or_else(|| Arc::new(AtomicBool::new(false))),
        }
    }

    /// The highest sequence that may be processed now, given that everything below
    /// `sequence` already has been; `sequence - 1` or less when `sequence` is not available.
    /// Never waits.
    #[inline]
    pub fn available(&self, sequence: i64) -> i64 {
        if !self.dependencies.is_empty() {
            return minimum_sequence(&self.dependencies, i64::MAX);
        }
        match &self.published {
            Published::Single(cursor) => cursor.get(),
            Published::Multi(state) => {
                let claimed = state.claimed();
                if claimed < sequence {
                    claimed
                } else {
                    state.highest_published(sequence, claimed)
                }
            }
        }
    }

    /// Waits (with the wait strategy) until `sequence` may be processed and returns the
    /// highest sequence that may (at least `sequence`): the consumer processes the whole
    /// range as one batch. Returns [`Alerted`] if the barrier is alerted while `sequence` is
    /// not available.
    #[inline]
    pub fn wait_for(&self, sequence: i64) -> Result<i64, Alerted> {
        let available = self.available(sequence);
        if available >= sequence {
            return Ok(available);
        }
        self.wait_slow(sequence)
    }

    /// [`wait_for`](Self::wait_for), also telling whether it had to wait (`false` when
    /// `sequence` was available at the first look).
    #[inline]
    pub(crate) fn wait_for_noting(&self, sequence: i64) -> Result<(i64, bool), Alerted> {
        let available = self.available(sequence);
        if available >= sequence {
            return Ok((available, false));
        }
        self.wait_slow(sequence).map(|available| (available, true))
    }

    /// The waiting part of [`wait_for`](Self::wait_for), out of line: inlined into a
    /// consumer's batch loop, the spin loop competes with it for registers and reloads its
    /// pointers from the stack on every check. Whether LLVM inlined it used to depend on
    /// unrelated changes elsewhere in the module.
    #[inline(never)]
    fn wait_slow(&self, sequence: i64) -> Result<i64, Alerted> {
        let mut available = self.available(sequence);
        self.wait.wait_until(&mut || {
            available = self.available(sequence);
            available >= sequence || self.alert.load(Ordering::Acquire)
        });
        if available >= sequence {
            Ok(available)
        } else {
            Err(Alerted)
        }
    }

    /// Alerts the barrier and wakes waiters: a waiter with nothing available returns
    /// [`Alerted`].
    pub fn alert(&self) {
        self.alert.store(true, Ordering::Release);
        self.wait.signal();
    }

    /// Clears the alert.
    pub fn clear_alert(&self) {
        self.alert.store(false, Ordering::Release);
    }

    /// Whether the barrier is alerted.
    pub fn is_alerted(&self) -> bool {
        self.alert.load(Ordering::Acquire)
    }
}

impl<W> fmt::Debug for SequenceBarrier<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.published {
            Published::Single(_) => "single",
            Published::Multi(_) => "multi",
        };
        f.debug_struct("SequenceBarrier")
            .field("producers", &kind)
            .field("dependencies", &self.dependencies.len())
            .field("alerted", &self.alert.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::super::sequencer::{MultiProducerSequencer, SingleProducerSequencer};
    use super::*;
    use crate::sync::wait::{Blocking, BusySpinWithHint};

    #[test]
    fn dependencies_bound_what_is_available() {
        let (a, b) = (Arc::new(Sequence::new()), Arc::new(Sequence::new()));
        let mut sp = SingleProducerSequencer::new(8, Arc::new(BusySpinWithHint), vec![]).unwrap();
        let first = sp.new_barrier(vec![]);
        let join = sp.new_barrier(vec![a.clone(), b.clone()]);
        let claim = sp.next(5).unwrap();
        sp.publish(claim);
        assert_eq!(first.wait_for(0), Ok(4));
        assert_eq!(join.available(0), -1);
        a.set(3);
        b.set(1);
        assert_eq!(join.wait_for(0), Ok(1));
        assert_eq!(join.available(2), 1);
    }

    #[test]
    fn alert_releases_a_parked_waiter_and_progress_wins_over_the_alert() {
        let wait = Arc::new(Blocking::new(0, 0));
        let mut sp = SingleProducerSequencer::new(4, wait.clone(), vec![]).unwrap();
        let barrier = Arc::new(sp.new_barrier(vec![]));
        let b2 = barrier.clone();
        let t = std::thread::spawn(move || b2.wait_for(0));
        while wait.parked() == 0 {
            std::thread::yield_now();
        }
        barrier.alert();
        assert_eq!(t.join().unwrap(), Err(Alerted));
        assert!(barrier.is_alerted());
        let claim = sp.next(1).unwrap();
        sp.publish(claim);
        assert_eq!(
            barrier.wait_for(0),
            Ok(0),
            "available events are returned even when alerted"
        );
        barrier.clear_alert();
        assert!(!barrier.is_alerted());
    }

    #[test]
    fn blocking_waiter_wakes_on_publish() {
        let wait = Arc::new(Blocking::new(0, 0));
        let mut mp = MultiProducerSequencer::new(4, wait.clone(), vec![]).unwrap();
        let barrier = mp.new_barrier(vec![]);
        let t = std::thread::spawn(move || barrier.wait_for(0));
        while wait.parked() == 0 {
            std::thread::yield_now();
        }
        let claim = mp.next(2).unwrap();
        mp.publish(claim);
        assert_eq!(t.join().unwrap(), Ok(1));
    }
}
