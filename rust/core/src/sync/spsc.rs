//! `SpscQueue`: a bounded, wait-free single-producer single-consumer ring.
//!
//! The ring has a power-of-two number of slots and two monotonically increasing positions:
//! `tail` (next slot the producer writes, stored only by the producer) and `head` (next slot
//! the consumer reads, stored only by the consumer); a position maps to slot `pos & mask`.
//! Each position sits on its own cache line ([`CachePadded`]), and each side keeps a *cached*
//! copy of the other side's position, reloading it only when the cached value says the ring
//! is full (producer) or empty (consumer). In steady state a push therefore touches one shared
//! line, the slot's, plus its own position.
//!
//! Invariants:
//! - `head <= tail <= head + capacity` at every instant, as seen by either side;
//! - slots in `[head, tail)` hold initialised values owned by the ring, all others are
//!   uninitialised;
//! - the producer writes a slot, then publishes it with a Release store of `tail`; the consumer
//!   reads `tail` with Acquire before reading slots (and symmetrically for `head`: the consumer
//!   moves a value out, then Release-stores `head`, so the producer never overwrites a slot that
//!   is still being read).
//!
//! A consumer polling an empty ring pays two line transfers per value: `tail`, then the slot.
//! After a few empty [`Consumer::pop`]s in a row it therefore also *prefetches* the slot it
//! waits for (a hint, not a read: no race with the producer's write), so that once the value
//! is published the two misses overlap. Measured with `benches/messaging.rs`: round trip p50
//! ~390 -> ~295 ns against a ~200 ns floor of two bare lines. Not from the first empty poll,
//! which would make a consumer trailing a streaming producer fetch the line being filled.
//! (Per-slot stamps, which let the consumer poll the slot alone, reached ~240 ns but double
//! the slot size for small `T` and halved throughput; they were measured and dropped.)
//!
//! Batches are the lever ([`Producer::push_batch`], [`Consumer::pop_batch`]): one Release
//! store per batch instead of per item, measured here at 6 to 7 times the per-item rate.
//!
//! The queue never allocates after construction and never blocks; a caller that wants to wait
//! pairs it with a [`WaitStrategy`](super::wait::WaitStrategy).

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::primitives::{AtomicBool, AtomicUsize, Ordering, UnsafeCell};

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next position the consumer reads. Stored by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next position the producer writes. Stored by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Set (Release) when either end is dropped.
    abandoned: AtomicBool,
}

// SAFETY: the slots are accessed by at most one producer and one consumer, each through its
// own handle (which is `Send` but not `Clone`/`Sync`); a slot is written only while it lies
// outside `[head, tail)` and read only while it lies inside, and the Release/Acquire pairs on
// `head` and `tail` order those accesses. Values of `T` move between threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the ring owns `T` values, which may be dropped on either thread.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        self.drop_queued();
    }
}

impl<T> Shared<T> {
    /// The slot that position `pos` maps to.
    #[inline(always)]
    fn slot(&self, pos: usize) -> &UnsafeCell<MaybeUninit<T>> {
        debug_assert_eq!(self.slots.len(), self.mask + 1);
        // SAFETY: `slots.len() == mask + 1` (set once in `with_capacity`, never changed), so
        // `pos & mask` is in bounds for every `pos`. Without the bounds check the per-item path
        // has no slice-length load and branch; measured in `benches/messaging.rs` at ~2.5x the
        // per-item rate (a branch here tipped the producer/consumer race into its slow mode).
        unsafe { self.slots.get_unchecked(pos & self.mask) }
    }

    /// Hints the CPU to fetch the line of the slot `pos` maps to, without reading it (a
    /// prefetch is no memory access: it cannot race with the producer's write). A consumer
    /// that found the ring empty calls it before the caller spins: the next poll then misses
    /// on `tail` and on the slot line at the same time instead of one after the other.
    #[inline(always)]
    fn prefetch(&self, pos: usize) {
        #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.slot(pos).with(|p| p as *const i8);
            // SAFETY: `_mm_prefetch` only needs SSE (baseline on x86_64); it never faults or
            // accesses memory in the language's sense, and `p` points into our slots anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
        }
        #[cfg(not(all(target_arch = "x86_64", not(feature = "loom"))))]
        let _ = pos;
    }

    /// Drops the values still queued. Kept out of line: inlined into the handles' code it
    /// changed how their hot loops compiled and cut per-item throughput several times
    /// (measured with `benches/messaging.rs`).
    #[cold]
    #[inline(never)]
    fn drop_queued(&mut self) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        for pos in head..tail {
            // SAFETY: `&mut self` means both handles are gone; slots in `[head, tail)` hold
            // initialised values that nobody else will read.
            self.slot(pos)
                .with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
    }
}

/// Namespace for [`SpscQueue::with_capacity`].
pub struct SpscQueue<T>(std::marker::PhantomData<T>);

impl<T: Send> SpscQueue<T> {
    /// A ring of at least `capacity` slots (rounded up to a power of two, minimum 2), split
    /// into its two ends.
    pub fn with_capacity(capacity: usize) -> (Producer<T>, Consumer<T>) {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let shared = Arc::new(Shared {
            slots,
            mask: capacity - 1,
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            abandoned: AtomicBool::new(false),
        });
        (
            Producer {
                shared: shared.clone(),
                tail: 0,
                cached_head: 0,
            },
            Consumer {
                shared,
                head: 0,
                cached_tail: 0,
                empty_polls: 0,
            },
        )
    }
}

/// The producing end. `Send`, not `Clone`: exactly one thread pushes at a time.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own position (the authoritative value is in `shared.tail`; this avoids a load).
    tail: usize,
    /// Last `head` we loaded: the consumer is at least this far.
    cached_head: usize,
}

impl<T: Send> Producer<T> {
    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots, reloading the consumer's position only when the cached one shows fewer
    /// than `want`.
    #[inline]
    fn free(&mut self, want: usize) -> usize {
        let cap = self.capacity();
        let mut free = cap - (self.tail - self.cached_head);
        if free < want {
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            free = cap - (self.tail - self.cached_head);
        }
        free
    }

    #[inline]
    fn write(&mut self, value: T) {
        let slot = self.shared.slot(self.tail);
        // SAFETY: `free()` showed this slot lies outside `[head, tail)`: it is uninitialised
        // (or was moved out by the consumer, whose Release store of `head` we Acquired), and
        // the consumer will not read it before our Release store of `tail`.
        slot.with_mut(|p| unsafe { (*p).write(value) });
        self.tail = self.tail.wrapping_add(1);
    }

    /// Pushes one value, or hands it back when the ring is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free(1) == 0 {
            return Err(value);
        }
        let slot = self.shared.slot(self.tail);
        // SAFETY: as in `write`.
        slot.with_mut(|p| unsafe { (*p).write(value) });
        // Publish first, then update our own copy: the consumer sees the value one store
        // sooner (measured: round trip p50 ~450 -> ~350 ns).
        let next = self.tail.wrapping_add(1);
        self.shared.tail.store(next, Ordering::Release);
        self.tail = next;
        Ok(())
    }

    /// Moves as many values from the front of `values` as fit, published with one store.
    /// Returns how many were pushed (the rest stay in `values`, in order).
    pub fn push_batch(&mut self, values: &mut Vec<T>) -> usize {
        let n = self.free(values.len()).min(values.len());
        if n == 0 {
            return 0;
        }
        for v in values.drain(..n) {
            self.write(v);
        }
        self.shared.tail.store(self.tail, Ordering::Release);
        n
    }

    /// Pushes up to `n` values produced by `make(i)` for `i` in `0..n`, published with one
    /// store. Returns how many were pushed: `make` is only called for slots that are free.
    pub fn push_with(&mut self, n: usize, mut make: impl FnMut(usize) -> T) -> usize {
        let n = self.free(n).min(n);
        for i in 0..n {
            self.write(make(i));
        }
        if n > 0 {
            self.shared.tail.store(self.tail, Ordering::Release);
        }
        n
    }

    /// Values in the ring now (the consumer may be taking some as this returns).
    pub fn len(&self) -> usize {
        self.tail - self.shared.head.load(Ordering::Acquire)
    }

    /// Whether the ring is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the consumer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        self.shared.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Publish what this end has written: after a panic in `push_with`'s `make`, `self.tail`
        // counts slots already written but not yet published, which `Shared::drop` (reading
        // `shared.tail`) would otherwise leak.
        self.shared.tail.store(self.tail, Ordering::Release);
        self.shared.abandoned.store(true, Ordering::Release);
    }
}

/// The consuming end. `Send`, not `Clone`: exactly one thread pops at a time.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    /// Last `tail` we loaded: at least this much has been published.
    cached_tail: usize,
    /// `pop`s in a row that found the ring empty.
    empty_polls: u32,
}

/// Empty `pop`s in a row after which each further one prefetches the slot it waits for.
const PREFETCH_AFTER: u32 = 4;

impl<T: Send> Consumer<T> {
    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Published values not yet taken, reloading the producer's position only when the
    /// cached one shows fewer than `want`.
    #[inline]
    fn available(&mut self, want: usize) -> usize {
        let mut n = self.cached_tail - self.head;
        if n < want {
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            n = self.cached_tail - self.head;
        }
        n
    }

    #[inline]
    fn read(&mut self) -> T {
        let slot = self.shared.slot(self.head);
        // SAFETY: `available()` showed this slot lies inside `[head, tail)`: the producer
        // initialised it before its Release store of `tail`, which we Acquired, and will not
        // touch it again until our Release store of `head` moves past it.
        let value = slot.with(|p| unsafe { (*p).assume_init_read() });
        self.head = self.head.wrapping_add(1);
        value
    }

    /// Takes one value.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available(1) == 0 {
            // Waited a while: prefetch the slot (see `Shared::prefetch`). Not on the first
            // empty polls: a consumer trailing a streaming producer finds the next value within
            // a poll or two, and fetching the line the producer is still filling would only
            // make the two trade it once more.
            self.empty_polls = self.empty_polls.saturating_add(1);
            if self.empty_polls >= PREFETCH_AFTER {
                self.shared.prefetch(self.head);
            }
            return None;
        }
        self.empty_polls = 0;
        let slot = self.shared.slot(self.head);
        // SAFETY: as in `read`.
        let v = slot.with(|p| unsafe { (*p).assume_init_read() });
        // Free the slot first, then update our own copy (as in `Producer::push`).
        let next = self.head.wrapping_add(1);
        self.shared.head.store(next, Ordering::Release);
        self.head = next;
        Some(v)
    }

    /// Takes up to `max` values, handing each to `f` in order, and frees their slots with one
    /// store. Returns how many were taken.
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let n = self.available(max).min(max);
        for _ in 0..n {
            let v = self.read();
            f(v);
        }
        if n > 0 {
            self.shared.head.store(self.head, Ordering::Release);
        }
        n
    }

    /// The next value, without taking it.
    pub fn peek(&mut self) -> Option<&T> {
        if self.available(1) == 0 {
            return None;
        }
        let slot = self.shared.slot(self.head);
        // SAFETY: as in `read`; the value stays in the ring (and initialised) while the
        // returned borrow of `self` lives, because only this consumer can move it out.
        Some(slot.with(|p| unsafe { (*p).assume_init_ref() }))
    }

    /// Values in the ring now.
    pub fn len(&self) -> usize {
        self.shared.tail.load(Ordering::Acquire) - self.head
    }

    /// Whether the ring is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the producer has been dropped (values it pushed before may still be queued).
    pub fn is_abandoned(&self) -> bool {
        self.shared.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Free what this end has taken: after a panic in `pop_batch`'s callback, `self.head`
        // is past values already moved out but `shared.head` is not, and `Shared::drop`
        // (reading `shared.head`) would drop those values a second time.
        self.shared.head.store(self.head, Ordering::Release);
        self.shared.abandoned.store(true, Ordering::Release);
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    #[test]
    fn capacity_rounds_up_and_full_hands_back() {
        let (mut p, mut c) = SpscQueue::<u32>::with_capacity(3);
        assert_eq!(p.capacity(), 4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9));
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        let mut got = Vec::new();
        assert_eq!(c.pop_batch(10, |v| got.push(v)), 4);
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn batch_push_keeps_the_rest_in_order() {
        let (mut p, mut c) = SpscQueue::with_capacity(4);
        let mut v: Vec<u64> = (0..6).collect();
        assert_eq!(p.push_batch(&mut v), 4);
        assert_eq!(v, vec![4, 5]);
        assert_eq!(c.peek(), Some(&0));
        assert_eq!(c.pop_batch(2, drop), 2);
        assert_eq!(p.push_batch(&mut v), 2);
        let mut got = Vec::new();
        c.pop_batch(usize::MAX, |x| got.push(x));
        assert_eq!(got, vec![2, 3, 4, 5]);
        assert_eq!(p.push_with(10, |i| i as u64 * 10), 4);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn values_left_in_the_ring_are_dropped_once() {
        let marker = std::sync::Arc::new(());
        let (mut p, mut c) = SpscQueue::with_capacity(8);
        for _ in 0..5 {
            p.push(marker.clone()).unwrap();
        }
        drop(c.pop());
        assert!(!p.is_abandoned());
        drop(c);
        assert!(p.is_abandoned());
        assert_eq!(std::sync::Arc::strong_count(&marker), 5);
        drop(p);
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    }

    #[test]
    fn empty_polls_prefetch_and_change_nothing() {
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(4);
        for round in 0..3u64 {
            for _ in 0..2 * PREFETCH_AFTER {
                assert_eq!(c.pop(), None);
            }
            assert!(c.empty_polls >= PREFETCH_AFTER);
            p.push(round).unwrap();
            assert_eq!(c.pop(), Some(round));
            assert_eq!(c.empty_polls, 0);
        }
    }

    #[test]
    fn positions_wrap_many_times() {
        let (mut p, mut c) = SpscQueue::with_capacity(2);
        for i in 0..10_000u32 {
            p.push(i).unwrap();
            assert_eq!(c.pop(), Some(i));
        }
    }
}
