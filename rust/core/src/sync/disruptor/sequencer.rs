//! Sequencers: how producers claim slots, wait for space and publish.
//!
//! A producer claims a range of sequences ([`Claim`]), writes the claimed slots in place and
//! publishes the claim. Before handing out sequence `s` a sequencer makes sure every *gating*
//! sequence (the consumers at the end of the graph) has passed `s - size`, the previous
//! occupant of the slot: the "wrap point". That check reads the gating sequences with Acquire,
//! so the consumers' reads of the old event happen before the producer overwrites it.
//!
//! - [`SingleProducerSequencer`]: one producer (`&mut self`, not `Clone`). It keeps the last
//!   claimed sequence and the minimum gating sequence it last saw in plain fields and reads the
//!   consumers' sequences only when a claim would cross the cached horizon. The cached value
//!   is always *replaced* by a freshly computed minimum, never advanced by adding to it (the
//!   `+= free_slots` horizon of the `disruptor` crate's 2024 batch-publish bug let a producer
//!   overrun its consumer). Publishing is one Release store of the cursor.
//! - [`MultiProducerSequencer`]: any number of producers (`Clone`). A claim is one
//!   `fetch_add(n)` on the shared claim cursor (or a compare-exchange loop for
//!   [`try_next`](MultiProducerSequencer::try_next), which must not claim what it cannot get).
//!   Because claims complete out of order, each slot carries an availability flag: publishing
//!   sequence `s` Release-stores the *round* `s >> log2(size)` into the flag of slot
//!   `s & mask`, and a consumer Acquire-loads it and compares with the round it expects. A
//!   round is never reused, so no reset is needed and there is no parity bit to flip at the
//!   wrap (the bug badbatch shipped); rounds of one slot are published in order because the
//!   producer of round `r + 1` waits for the consumers to finish round `r`.
//!
//! Both call [`WaitStrategy::signal`] after publishing, so consumers parked by
//! [`Blocking`](crate::sync::wait::Blocking) wake; producers waiting for space are woken by the
//! consumers' signal after they advance.

use std::fmt;

use super::super::primitives::{AtomicI64, Ordering};
use super::barrier::{Published, SequenceBarrier};
use super::ring_buffer::{check_size, InvalidRingSize};
use super::sequence::{minimum_sequence, Sequence};
use crate::sync::wait::WaitStrategy;

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

/// The ring has no room for the claim right now (returned by the `try_` operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ring is full")]
pub struct RingFull;

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The ring has no room for the claim right now (only from the `try_` operations).
    #[error("the ring is full")]
    Full,
    /// A claim of zero slots, or of more slots than the ring has (it could never succeed).
    #[error("cannot claim {requested} slots of a ring of {capacity}")]
    InvalidSize {
        /// Slots asked for.
        requested: usize,
        /// Slots in the ring.
        capacity: usize,
    },
}

impl From<RingFull> for ClaimError {
    fn from(_: RingFull) -> Self {
        ClaimError::Full
    }
}

/// A claimed, not yet published range of sequences `lo..=hi`. Hand it back to the sequencer's
/// `publish` once the slots are written: a claim that is never published stalls every consumer
/// at its first sequence.
#[must_use = "a claim must be published, or the consumers stall at its first sequence"]
#[derive(Debug, PartialEq, Eq)]
pub struct Claim {
    lo: i64,
    hi: i64,
}

impl Claim {
    /// The first sequence claimed.
    #[inline]
    pub fn lo(&self) -> i64 {
        self.lo
    }

    /// The last sequence claimed.
    #[inline]
    pub fn hi(&self) -> i64 {
        self.hi
    }

    /// Sequences claimed (at least 1).
    #[inline]
    pub fn len(&self) -> usize {
        (self.hi - self.lo + 1) as usize
    }

    /// Always false: a claim holds at least one sequence.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The claimed sequences, in order.
    pub fn sequences(&self) -> std::ops::RangeInclusive<i64> {
        self.lo..=self.hi
    }
}

/// Checks that `n` slots can ever be claimed from a ring of `capacity`.
#[inline]
pub(crate) fn check_claim(n: usize, capacity: usize) -> Result<i64, ClaimError> {
    if n == 0 || n > capacity {
        return Err(ClaimError::InvalidSize {
            requested: n,
            capacity,
        });
    }
    // `capacity <= MAX_RING_SIZE`, so this cannot truncate.
    Ok(n as i64)
}

/// The sequencer of a ring with exactly one producer. See the module docs.
///
/// The producer-private fields live in the handle (wherever the producer keeps it), never
/// next to the shared cursor: the cursor is a [`Sequence`] of its own, alone on its padded
/// lines, so the plain stores to `next_value` do not dirty the line consumers spin on. The
/// producer never reads the cursor back on its hot path either: right after a consumer has
/// read that line, reading it can cost the producer a line transfer (measured: +50–80 ns per
/// ping-pong round trip).
pub struct SingleProducerSequencer<W> {
    /// Highest claimed sequence (published or not). Producer-private.
    next_value: i64,
    /// The highest sequence that may be claimed without looking at the gating sequences: the
    /// minimum gating sequence when last computed, plus the ring size. Always *replaced* by a
    /// value computed from a fresh minimum, never advanced by adding to it.
    limit: i64,
    /// Highest published sequence (Release-stored here, Acquire-loaded by consumers).
    cursor: Arc<Sequence>,
    gating: Box<[Arc<Sequence>]>,
    wait: Arc<W>,
    size: i64,
}

impl<W: WaitStrategy> SingleProducerSequencer<W> {
    /// A sequencer for a ring of `size` slots whose producer must not overtake `gating` (the
    /// sequences of the last consumers of the graph; with none, nothing holds the producer
    /// back and unconsumed events are overwritten).
    pub fn new(
        size: usize,
        wait: Arc<W>,
        gating: Vec<Arc<Sequence>>,
    ) -> Result<Self, InvalidRingSize> {
        check_size(size)?;
        Ok(SingleProducerSequencer {
            next_value: Sequence::INITIAL,
            // Every consumer starts at `INITIAL`.
            limit: Sequence::INITIAL + size as i64,
            cursor: Arc::new(Sequence::new()),
            gating: gating.into_boxed_slice(),
            wait,
            size: size as i64,
        })
    }

    /// Slots in the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.size as usize
    }

    /// The highest published sequence (`-1` before the first publish).
    #[inline]
    pub fn cursor(&self) -> i64 {
        self.cursor.get_relaxed()
    }

    /// The highest claimed sequence (equal to [`cursor`](Self::cursor) when no claim is
    /// outstanding).
    #[inline]
    pub fn last_claimed(&self) -> i64 {
        self.next_value
    }

    /// The highest sequence that can be claimed without reading the gating sequences (the
    /// cached horizon; producer-private, no atomic access).
    #[inline(always)]
    pub(crate) fn horizon(&self) -> i64 {
        self.limit
    }

    /// Slots that can be claimed now without waiting (reads the gating sequences).
    pub fn remaining_capacity(&mut self) -> usize {
        self.refresh_limit();
        (self.limit - self.next_value) as usize
    }

    /// Recomputes `limit` from the gating sequences (Acquire loads) and returns it.
    #[inline]
    fn refresh_limit(&mut self) -> i64 {
        // With no gating sequences nothing holds the producer back: the default makes the
        // limit a full ring ahead of the last claim.
        let gate = minimum_sequence(&self.gating, self.next_value);
        // Replace, never accumulate: the horizon is recomputed from the authoritative
        // consumer sequences every time.
        self.limit = gate + self.size;
        self.limit
    }

    /// Claims the next `n` slots, waiting with the wait strategy while the ring is full.
    /// Fails only for `n == 0` or `n > capacity`.
    pub fn next(&mut self, n: usize) -> Result<Claim, ClaimError> {
        let n = check_claim(n, self.capacity())?;
        Ok(self.claim(n))
    }

    /// Claims `n` (already checked) slots, waiting while the ring is full.
    #[inline]
    pub(crate) fn claim(&mut self, n: i64) -> Claim {
        let lo = self.next_value + 1;
        let hi = self.reserve(n);
        self.next_value = hi;
        Claim { lo, hi }
    }

    /// Waits until the next `n` (already checked) slots are free and returns the last of
    /// them, `next_value + n`, *without* claiming them: the caller writes the slots and then
    /// [`commit`](Self::commit)s them (the producer handles' fused claim-and-publish, which
    /// holds `&mut self` throughout, so nothing else can claim in between).
    #[inline(always)]
    pub(crate) fn reserve(&mut self, n: i64) -> i64 {
        let hi = self.next_value + n;
        if hi > self.limit {
            self.wait_for_space(hi);
        }
        hi
    }

    /// The cold part of [`reserve`](Self::reserve): the cached horizon is exhausted, so read
    /// the gating sequences, and wait (with the wait strategy) until every one has passed the
    /// wrap point `hi - size`. Out of line, so that the publish loops stay small.
    #[cold]
    #[inline(never)]
    fn wait_for_space(&mut self, hi: i64) {
        if hi <= self.refresh_limit() {
            return;
        }
        let wrap = hi - self.size;
        let (gating, default) = (&self.gating, self.next_value);
        let mut gate = default;
        self.wait.wait_until(&mut || {
            gate = minimum_sequence(gating, default);
            gate >= wrap
        });
        // Replace, never accumulate (see `refresh_limit`).
        self.limit = gate + self.size;
    }

    /// Claims the next `n` slots if they are free now. Fails with [`ClaimError::Full`] when
    /// they are not (nothing is claimed then), or [`ClaimError::InvalidSize`].
    pub fn try_next(&mut self, n: usize) -> Result<Claim, ClaimError> {
        let n = check_claim(n, self.capacity())?;
        self.try_claim(n).ok_or(ClaimError::Full)
    }

    /// Claims `n` (already checked) slots if they are free now.
    #[inline]
    pub(crate) fn try_claim(&mut self, n: i64) -> Option<Claim> {
        let lo = self.next_value + 1;
        let hi = self.try_reserve(n)?;
        self.next_value = hi;
        Some(Claim { lo, hi })
    }

    /// [`reserve`](Self::reserve) if the slots are free now, `None` otherwise.
    #[inline(always)]
    pub(crate) fn try_reserve(&mut self, n: i64) -> Option<i64> {
        let hi = self.next_value + n;
        if hi > self.limit && hi > self.refresh_limit_cold() {
            return None;
        }
        Some(hi)
    }

    /// [`refresh_limit`](Self::refresh_limit), out of line for the `try_` paths.
    #[cold]
    #[inline(never)]
    fn refresh_limit_cold(&mut self) -> i64 {
        self.refresh_limit()
    }

    /// Publishes a claim: one Release store of the cursor, then a signal. Claims must be
    /// published in the order they were made.
    #[inline]
    pub fn publish(&mut self, claim: Claim) {
        debug_assert_eq!(
            claim.lo,
            self.cursor.get_relaxed() + 1,
            "out-of-order publish"
        );
        self.cursor.set(claim.hi);
        self.wait.signal();
    }

    /// Claims and publishes everything [`reserve`](Self::reserve)d up to `hi`, whose slots
    /// the caller has written: the Release store of the shared cursor comes first, then the
    /// producer-private `next_value` (so the store consumers wait for is not queued behind
    /// bookkeeping), then the signal.
    #[inline(always)]
    pub(crate) fn commit(&mut self, hi: i64) {
        debug_assert!(hi > self.next_value && hi <= self.limit);
        debug_assert_eq!(
            self.next_value,
            self.cursor.get_relaxed(),
            "commit with a claim outstanding"
        );
        self.cursor.set(hi);
        self.next_value = hi;
        self.wait.signal();
    }

    /// A barrier for a consumer that waits for published events and for every sequence in
    /// `dependencies` (the consumers it comes after; empty for the first stage).
    pub fn new_barrier(&self, dependencies: Vec<Arc<Sequence>>) -> SequenceBarrier<W> {
        SequenceBarrier::new(
            Published::Single(self.cursor.clone()),
            dependencies,
            self.wait.clone(),
            None,
        )
    }

    /// Where consumers read what is published.
    pub(crate) fn published(&self) -> Published {
        Published::Single(self.cursor.clone())
    }

    /// The sequences the producer must not overtake.
    pub(crate) fn gating(&self) -> &[Arc<Sequence>] {
        &self.gating
    }

    /// The wait strategy.
    pub(crate) fn wait_strategy(&self) -> &Arc<W> {
        &self.wait
    }
}

impl<W> fmt::Debug for SingleProducerSequencer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleProducerSequencer")
            .field("size", &self.size)
            .field("cursor", &self.cursor.get())
            .field("next_value", &self.next_value)
            .field("cached_gate", &(self.limit - self.size))
            .finish()
    }
}

/// The state all producers of a multi-producer ring share.
pub(crate) struct MultiState {
    /// Highest *claimed* sequence (not published: see `available`).
    cursor: Sequence,
    /// Per slot: the round (`sequence >> shift`) last published into it; `-1` initially.
    available: Box<[AtomicI64]>,
    mask: usize,
    shift: u32,
    size: i64,
    gating: Box<[Arc<Sequence>]>,
}

impl MultiState {
    /// The availability flag of `sequence`'s slot.
    #[inline(always)]
    fn flag(&self, sequence: i64) -> &AtomicI64 {
        let idx = (sequence as usize) & self.mask;
        debug_assert!(idx < self.available.len());
        // SAFETY: `available` has `size` flags and `mask == size - 1` with `size` a power of
        // two (both set in `MultiProducerSequencer::new`, never changed), so `idx < size`.
        unsafe { self.available.get_unchecked(idx) }
    }

    /// Whether `sequence` has been published (Acquire: its slot writes are visible).
    #[inline]
    pub(crate) fn is_published(&self, sequence: i64) -> bool {
        self.flag(sequence).load(Ordering::Acquire) == sequence >> self.shift
    }

    /// The highest sequence `s` in `lo - 1 ..= hi` such that everything in `lo..=s` is
    /// published. `hi` must not exceed the claim cursor.
    #[inline]
    pub(crate) fn highest_published(&self, lo: i64, hi: i64) -> i64 {
        let mut s = lo;
        while s <= hi {
            if !self.is_published(s) {
                return s - 1;
            }
            s += 1;
        }
        hi
    }

    /// The highest claimed sequence.
    #[inline]
    pub(crate) fn claimed(&self) -> i64 {
        self.cursor.get()
    }
}

/// The sequencer of a ring with any number of producers; clone it for each producer thread.
/// See the module docs.
pub struct MultiProducerSequencer<W> {
    state: Arc<MultiState>,
    wait: Arc<W>,
    /// This handle's last computed minimum gating sequence (a lower bound of the consumers'
    /// progress: each producer caches its own, so no shared line is written for it).
    cached_gate: i64,
}

impl<W> Clone for MultiProducerSequencer<W> {
    fn clone(&self) -> Self {
        MultiProducerSequencer {
            state: self.state.clone(),
            wait: self.wait.clone(),
            cached_gate: self.cached_gate,
        }
    }
}

impl<W: WaitStrategy> MultiProducerSequencer<W> {
    /// A sequencer for a ring of `size` slots whose producers must not overtake `gating`
    /// (see [`SingleProducerSequencer::new`]).
    pub fn new(
        size: usize,
        wait: Arc<W>,
        gating: Vec<Arc<Sequence>>,
    ) -> Result<Self, InvalidRingSize> {
        let mask = check_size(size)?;
        let available = (0..size)
            .map(|_| AtomicI64::new(-1))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(MultiProducerSequencer {
            state: Arc::new(MultiState {
                cursor: Sequence::new(),
                available,
                mask,
                shift: size.trailing_zeros(),
                size: size as i64,
                gating: gating.into_boxed_slice(),
            }),
            wait,
            cached_gate: Sequence::INITIAL,
        })
    }

    /// Slots in the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.state.size as usize
    }

    /// The highest *claimed* sequence (some claims below it may not be published yet).
    #[inline]
    pub fn cursor(&self) -> i64 {
        self.state.claimed()
    }

    /// Whether `sequence` has been published.
    pub fn is_published(&self, sequence: i64) -> bool {
        self.state.is_published(sequence)
    }

    /// Slots that could be claimed now without waiting (other producers may take them first).
    pub fn remaining_capacity(&mut self) -> usize {
        let claimed = self.state.claimed();
        let gate = minimum_sequence(&self.state.gating, claimed);
        self.cached_gate = self.cached_gate.max(gate);
        (self.state.size - (claimed - gate)).max(0) as usize
    }

    /// Claims the next `n` slots with one `fetch_add`, then waits with the wait strategy until
    /// the consumers have freed them. Fails only for `n == 0` or `n > capacity`.
    pub fn next(&mut self, n: usize) -> Result<Claim, ClaimError> {
        let n = check_claim(n, self.capacity())?;
        Ok(self.claim(n))
    }

    /// Claims `n` (already checked) slots, waiting while they are not free.
    #[inline]
    pub(crate) fn claim(&mut self, n: i64) -> Claim {
        let current = self.state.cursor.fetch_add(n);
        let hi = current + n;
        let wrap = hi - self.state.size;
        if wrap > self.cached_gate {
            self.wait_for_gate(current, wrap);
        }
        Claim {
            lo: current + 1,
            hi,
        }
    }

    /// The cold part of [`claim`](Self::claim): this handle's cached horizon is below `wrap`,
    /// so read the gating sequences and wait until every one has passed `wrap`.
    #[cold]
    #[inline(never)]
    fn wait_for_gate(&mut self, current: i64, wrap: i64) {
        let gating = &self.state.gating;
        let mut gate = minimum_sequence(gating, current);
        if wrap > gate {
            self.wait.wait_until(&mut || {
                gate = minimum_sequence(gating, current);
                gate >= wrap
            });
        }
        self.cached_gate = gate;
    }

    /// Claims the next `n` slots if they are free now (a compare-exchange loop: nothing is
    /// claimed on failure). Fails with [`ClaimError::Full`] or [`ClaimError::InvalidSize`].
    pub fn try_next(&mut self, n: usize) -> Result<Claim, ClaimError> {
        let n = check_claim(n, self.capacity())?;
        self.try_claim(n).ok_or(ClaimError::Full)
    }

    /// Claims `n` (already checked) slots if they are free now.
    #[inline]
    pub(crate) fn try_claim(&mut self, n: i64) -> Option<Claim> {
        loop {
            let current = self.state.cursor.get_relaxed();
            let hi = current + n;
            let wrap = hi - self.state.size;
            if wrap > self.cached_gate {
                let gate = minimum_sequence(&self.state.gating, current);
                self.cached_gate = gate;
                if wrap > gate {
                    return None;
                }
            }
            if self.state.cursor.compare_exchange(current, hi).is_ok() {
                return Some(Claim {
                    lo: current + 1,
                    hi,
                });
            }
        }
    }

    /// Publishes a claim: a Release store of each slot's round, then one signal. Claims of
    /// different producers may be published in any order; consumers see a contiguous prefix.
    #[inline]
    pub fn publish(&self, claim: Claim) {
        let state = &*self.state;
        let mut s = claim.lo;
        while s <= claim.hi {
            state.flag(s).store(s >> state.shift, Ordering::Release);
            s += 1;
        }
        self.wait.signal();
    }

    /// A barrier for a consumer that waits for published events and for every sequence in
    /// `dependencies` (the consumers it comes after; empty for the first stage).
    pub fn new_barrier(&self, dependencies: Vec<Arc<Sequence>>) -> SequenceBarrier<W> {
        SequenceBarrier::new(self.published(), dependencies, self.wait.clone(), None)
    }

    /// Where consumers read what is published.
    pub(crate) fn published(&self) -> Published {
        Published::Multi(self.state.clone())
    }

    /// The sequences the producers must not overtake.
    pub(crate) fn gating(&self) -> &[Arc<Sequence>] {
        &self.state.gating
    }

    /// The wait strategy.
    pub(crate) fn wait_strategy(&self) -> &Arc<W> {
        &self.wait
    }
}

impl<W> fmt::Debug for MultiProducerSequencer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiProducerSequencer")
            .field("size", &self.state.size)
            .field("claimed", &self.state.claimed())
            .field("cached_gate", &self.cached_gate)
            .finish()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use crate::sync::wait::{BusySpinWithHint, Yielding};

    fn consumer() -> Arc<Sequence> {
        Arc::new(Sequence::new())
    }

    #[test]
    fn claims_are_validated() {
        let mut sp =
            SingleProducerSequencer::new(4, Arc::new(Yielding::default()), vec![]).unwrap();
        assert_eq!(
            sp.next(0),
            Err(ClaimError::InvalidSize {
                requested: 0,
                capacity: 4
            })
        );
        assert!(matches!(
            sp.try_next(5),
            Err(ClaimError::InvalidSize { .. })
        ));
        let mut mp = MultiProducerSequencer::new(4, Arc::new(Yielding::default()), vec![]).unwrap();
        assert!(matches!(mp.next(5), Err(ClaimError::InvalidSize { .. })));
        assert!(matches!(
            mp.try_next(0),
            Err(ClaimError::InvalidSize { .. })
        ));
        assert!(SingleProducerSequencer::new(3, Arc::new(Yielding::default()), vec![]).is_err());
        assert!(MultiProducerSequencer::new(0, Arc::new(Yielding::default()), vec![]).is_err());
    }

    #[test]
    fn single_producer_is_gated_by_the_slowest_consumer() {
        let (a, b) = (consumer(), consumer());
        let mut sp = SingleProducerSequencer::new(
            4,
            Arc::new(Yielding::default()),
            vec![a.clone(), b.clone()],
        )
        .unwrap();
        let c = sp.next(3).unwrap();
        assert_eq!((c.lo(), c.hi(), c.len()), (0, 2, 3));
        sp.publish(c);
        assert_eq!(sp.cursor(), 2);
        let c = sp.try_next(1).unwrap();
        sp.publish(c);
        assert_eq!(sp.try_next(1), Err(ClaimError::Full));
        assert_eq!(sp.remaining_capacity(), 0);
        a.set(1);
        assert_eq!(
            sp.try_next(1),
            Err(ClaimError::Full),
            "b still holds slot 0"
        );
        b.set(0);
        assert_eq!(sp.remaining_capacity(), 1);
        let c = sp.try_next(1).unwrap();
        assert_eq!(c.sequences(), 4..=4);
        sp.publish(c);
        assert_eq!(sp.try_next(2), Err(ClaimError::Full));
        b.set(3);
        // The horizon is recomputed from the sequences (min(a=1, b=3) = 1), not accumulated:
        // only one more slot is free.
        assert_eq!(sp.try_next(2), Err(ClaimError::Full));
        let c = sp.try_next(1).unwrap();
        sp.publish(c);
        assert_eq!(sp.try_next(1), Err(ClaimError::Full));
    }

    /// The `+=` horizon bug: a producer that accumulates freed slots onto a stale horizon runs
    /// past its consumer after a batch publish. Ours recomputes it and must refuse.
    #[test]
    fn batch_claims_never_run_past_the_consumer() {
        let c = consumer();
        let mut sp =
            SingleProducerSequencer::new(8, Arc::new(Yielding::default()), vec![c.clone()])
                .unwrap();
        let claim = sp.try_next(8).unwrap();
        sp.publish(claim);
        c.set(2);
        let claim = sp.try_next(3).unwrap();
        assert_eq!(claim.sequences(), 8..=10);
        sp.publish(claim);
        // An accumulating horizon would now believe 3 + 3 slots are free.
        assert_eq!(sp.try_next(1), Err(ClaimError::Full));
        c.set(4);
        assert_eq!(sp.try_next(3), Err(ClaimError::Full));
        let claim = sp.try_next(2).unwrap();
        sp.publish(claim);
        assert_eq!(sp.try_next(1), Err(ClaimError::Full));

        // Free-running: claims of varying sizes against a consumer that lags by a varying
        // amount; the producer must never get more than 8 ahead of it.
        let mut consumed = c.get();
        for i in 0..20_000usize {
            let n = 1 + i % 8;
            match sp.try_next(n) {
                Ok(claim) => {
                    assert!(claim.hi() - consumed <= 8, "overran the consumer");
                    sp.publish(claim);
                }
                Err(ClaimError::Full) => {
                    consumed = (consumed + 1 + (i as i64 % 5)).min(sp.last_claimed());
                    c.set(consumed);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn multi_producer_publishes_out_of_order_and_consumers_see_the_prefix() {
        let c = consumer();
        let mut p1 =
            MultiProducerSequencer::new(4, Arc::new(BusySpinWithHint), vec![c.clone()]).unwrap();
        let mut p2 = p1.clone();
        let a = p1.next(1).unwrap();
        let b = p2.next(2).unwrap();
        assert_eq!((a.lo(), b.lo(), b.hi()), (0, 1, 2));
        assert_eq!(p1.cursor(), 2);
        let barrier = p1.new_barrier(vec![]);
        p2.publish(b);
        assert_eq!(barrier.available(0), -1, "0 is claimed but not published");
        assert!(p1.is_published(1) && !p1.is_published(0));
        p1.publish(a);
        assert_eq!(barrier.available(0), 2);
        let d = p1.try_next(1).unwrap();
        assert_eq!(p2.try_next(1), Err(ClaimError::Full));
        assert_eq!(p2.remaining_capacity(), 0);
        p1.publish(d);
        c.set(1);
        // Wrap: sequence 4 reuses slot 0 with round 1.
        let e = p2.try_next(2).unwrap();
        assert_eq!(e.sequences(), 4..=5);
        assert!(p1.is_published(0) && !p1.is_published(4));
        p2.publish(e);
        assert!(p1.is_published(4) && p1.is_published(5));
        assert!(
            !p1.is_published(0),
            "round 0 of slot 0 was overwritten by round 1"
        );
        assert_eq!(barrier.available(2), 5);
    }

    #[test]
    fn next_waits_for_space() {
        let c = consumer();
        let mut sp =
            SingleProducerSequencer::new(2, Arc::new(BusySpinWithHint), vec![c.clone()]).unwrap();
        let claim = sp.next(2).unwrap();
        sp.publish(claim);
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            c2.set(0);
        });
        let claim = sp.next(1).unwrap();
        assert_eq!(claim.lo(), 2);
        assert!(c.get() >= 0);
        sp.publish(claim);
        t.join().unwrap();
    }
}

/// loom model of the single producer's fused claim-and-publish (`reserve`, slot writes,
/// `commit`: what [`SingleProducer::publish`](super::SingleProducer::publish) and
/// `batch_publish` do), which the public-API models in `tests_rs/loom_disruptor.rs` cannot
/// reach. Run with `cargo test -p laminar-core --profile ci --features loom --lib
/// sync::disruptor`.
#[cfg(all(test, feature = "loom"))]
mod loom_tests {
    use super::super::ring_buffer::RingBuffer;
    use super::*;
    use crate::sync::wait::{Blocking, BusySpinWithHint};
    use loom::thread;

    /// A 2-slot ring, single and batch reservations wrapping onto slots the consumer may
    /// still be reading; the consumer releases each batch with one store, as the managed loop
    /// does. loom's cell tracking fails the model if a slot write and read are not ordered.
    fn fused_publish_wraps<W: WaitStrategy + 'static>(wait: fn() -> W) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let wait = Arc::new(wait());
            let ring = Arc::new(RingBuffer::new(2, || u64::MAX).unwrap());
            let consumer = Arc::new(Sequence::new());
            let mut seq =
                SingleProducerSequencer::new(2, wait.clone(), vec![consumer.clone()]).unwrap();
            let barrier = seq.new_barrier(vec![]);
            let r0 = ring.clone();
            let producer = thread::spawn(move || {
                let mut v = 0;
                for n in [1, 2, 1] {
                    let hi = seq.reserve(n);
                    for s in hi - n + 1..=hi {
                        // SAFETY: reserved and not yet committed: the sequencer saw the
                        // consumer past `hi - 2` (Acquire), and it reads `s` only after the
                        // commit below.
                        unsafe { r0.with_slot_mut(s, |e| *e = v) };
                        v += 1;
                    }
                    seq.commit(hi);
                    assert_eq!(seq.last_claimed(), hi);
                }
            });
            let mut got = Vec::new();
            let mut next = 0;
            while next < 4 {
                let available = barrier.wait_for(next).expect("not alerted");
                for s in next..=available {
                    // SAFETY: returned by our barrier, and above our own sequence, which
                    // gates the producer and is stored only after the batch.
                    got.push(unsafe { ring.with_slot(s, |e| *e) });
                }
                consumer.set(available);
                wait.signal();
                next = available + 1;
            }
            producer.join().unwrap();
            assert_eq!(got, vec![0, 1, 2, 3]);
        });
    }

    #[test]
    fn fused_publish_wraps_spinning() {
        fused_publish_wraps(|| BusySpinWithHint);
    }

    #[test]
    fn fused_publish_wraps_blocking() {
        fused_publish_wraps(|| Blocking::new(0, 0));
    }
}
