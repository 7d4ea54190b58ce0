//! Producer handles: publishing into a built disruptor, and its shutdown.
//!
//! [`SingleProducer`] (exactly one, `Send`, not `Clone`) and [`MultiProducer`] (`Clone + Send`:
//! one clone per producing thread) are what [`Builder`](super::Builder) returns. Both publish by
//! handing the claimed slot to a closure that mutates the pre-allocated event in place:
//! [`publish`](SingleProducer::publish) waits while the ring is full,
//! [`try_publish`](SingleProducer::try_publish) returns [`RingFull`] instead, and
//! [`batch_publish`](SingleProducer::batch_publish) fills `n` slots with one claim and one
//! publish (one Release store of the cursor for the single producer).
//!
//! A claimed slot is always published, even when the closure panics (the event then holds
//! whatever the closure left in it): the slot is valid either way, and an unpublished claim
//! would stall every consumer behind it, and with it shutdown.
//!
//! The handles own the consumer threads. Shutdown ([`SingleProducer::shutdown`], or dropping
//! the handle; for [`MultiProducer`], when the last clone goes) drains: it waits until every
//! consumer at the end of the graph has processed the last published sequence, then alerts the
//! barriers, joins every thread and returns a [`ShutdownReport`]. Nothing published is lost,
//! and a failing or panicking handler cannot hang it (see
//! [`ExceptionPolicy`](super::ExceptionPolicy)). A handler that never returns, or a handler that owns a producer
//! of its own disruptor (so that the last handle never goes), does hang it.

use std::fmt;
use std::thread::JoinHandle;

use super::super::primitives::{lock, AtomicBool, AtomicUsize, Mutex, Ordering};
use super::handler::HandlerStats;
use super::ring_buffer::{prefetch_ahead, prefetch_write_supported, RingBuffer};
use super::sequence::{minimum_sequence, Sequence};
use super::sequencer::{
    check_claim, Claim, ClaimError, MultiProducerSequencer, RingFull, SingleProducerSequencer,
};
use crate::sync::wait::WaitStrategy;

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

/// What shutdown returns: how much was published and what each consumer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events published (the last sequence + 1).
    pub published: u64,
    /// One entry per handler, in the order they were added to the builder.
    pub handlers: Vec<HandlerStats>,
}

impl ShutdownReport {
    /// Failures (errors and panics) over all handlers.
    pub fn failures(&self) -> u64 {
        self.handlers.iter().map(|h| h.failures + h.panics).sum()
    }

    /// Whether any handler halted.
    pub fn any_halted(&self) -> bool {
        self.handlers.iter().any(|h| h.halted)
    }
}

/// The consumer threads of a disruptor and what is needed to stop them.
pub(crate) struct Runtime<W> {
    pub(crate) threads: Vec<(String, JoinHandle<HandlerStats>)>,
    /// Shared by every barrier of the graph.
    pub(crate) alert: Arc<AtomicBool>,
    /// The sequences of the last consumers of the graph.
    pub(crate) gating: Box<[Arc<Sequence>]>,
    pub(crate) wait: Arc<W>,
}

impl<W: WaitStrategy> Runtime<W> {
    /// Waits until the last consumers have passed `last` (the final published sequence),
    /// then alerts every barrier and joins every thread.
    pub(crate) fn stop(self, last: i64) -> Vec<HandlerStats> {
        let gating = &self.gating;
        if last >= 0 && !gating.is_empty() {
            self.wait
                .wait_until(&mut || minimum_sequence(gating, i64::MAX) >= last);
        }
        self.stop_now()
    }

    /// Alerts every barrier and joins every thread, without waiting for anything.
    pub(crate) fn stop_now(self) -> Vec<HandlerStats> {
        self.alert.store(true, Ordering::Release);
        self.wait.signal();
        self.threads
            .into_iter()
            .map(|(name, t)| {
                t.join().unwrap_or_else(|_| HandlerStats {
                    // Only reachable if dropping the handler itself panicked: the loop
                    // catches everything else.
                    name,
                    panics: 1,
                    ..HandlerStats::default()
                })
            })
            .collect()
    }
}

/// State shared by the whole graph that producers can query.
pub(crate) struct Health {
    /// Set when any consumer halts.
    pub(crate) any_halted: Arc<AtomicBool>,
}

/// Waits until every last consumer has processed `sequence`.
fn wait_processed<W: WaitStrategy>(wait: &W, gating: &[Arc<Sequence>], sequence: i64) {
    if gating.is_empty() || sequence < 0 {
        return;
    }
    wait.wait_until(&mut || minimum_sequence(gating, i64::MAX) >= sequence);
}

/// The only producer of a single-producer disruptor. See the module docs.
pub struct SingleProducer<T, W: WaitStrategy> {
    sequencer: SingleProducerSequencer<W>,
    ring: Arc<RingBuffer<T>>,
    /// How far ahead of a per-item `publish` the slot line is prefetched for writing (see
    /// `fill_one_and_commit`); more than the ring's capacity where `PREFETCHW` is missing, so
    /// that the check in the hot path never passes.
    write_ahead: i64,
    health: Health,
    runtime: Option<Runtime<W>>,
}

/// Claims and publishes the slots reserved up to `hi` when dropped: on the normal path right
/// after they were written, and also when the filling closure panics, so that a panic cannot
/// leave a claim unpublished.
struct CommitSingle<'a, W: WaitStrategy> {
    sequencer: &'a mut SingleProducerSequencer<W>,
    hi: i64,
}

impl<W: WaitStrategy> Drop for CommitSingle<'_, W> {
    #[inline(always)]
    fn drop(&mut self) {
        self.sequencer.commit(self.hi);
    }
}

impl<T, W: WaitStrategy> SingleProducer<T, W> {
    pub(crate) fn new(
        sequencer: SingleProducerSequencer<W>,
        ring: Arc<RingBuffer<T>>,
        health: Health,
        runtime: Runtime<W>,
    ) -> Self {
        let write_ahead = if prefetch_write_supported() {
            prefetch_ahead::<T>()
        } else {
            ring.capacity() as i64 + 1
        };
        SingleProducer {
            sequencer,
            ring,
            write_ahead,
            health,
            runtime: Some(runtime),
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The last published sequence (`-1` before the first).
    pub fn cursor(&self) -> i64 {
        self.sequencer.cursor()
    }

    /// Writes the `n` slots reserved up to `hi` with `fill(i, event)` (`i` counting from 0),
    /// then claims and publishes them.
    #[inline(always)]
    fn fill_and_commit(&mut self, n: i64, hi: i64, mut fill: impl FnMut(usize, &mut T)) -> i64 {
        let slots = self.ring.slots();
        let guard = CommitSingle {
            sequencer: &mut self.sequencer,
            hi,
        };
        let lo = hi - n + 1;
        for i in 0..n {
            // SAFETY: `lo + i <= hi` was reserved by the sequencer, which saw every gating
            // consumer past `hi - capacity` with an Acquire load, and it is above the cursor:
            // this handle is the only producer and holds `&mut self` until the guard publishes
            // it below, so no consumer reads the slot and nothing else writes it meanwhile.
            unsafe { slots.with_mut(lo + i, |event| fill(i as usize, event)) };
        }
        drop(guard);
        hi
    }

    /// Writes the one slot reserved at `seq` with `f`, then claims and publishes it.
    ///
    /// It first prefetches, for writing, the slot `write_ahead` (1 KiB) further on when the
    /// cached horizon shows that every consumer has released it (its previous lap), so that
    /// the line is ours by the time we write it. Otherwise each slot line changes owner
    /// (consumer to producer) on the producer's store, and with one slot and one cursor store
    /// per event the store buffer holds too few events to overlap those transfers: measured
    /// with `benches/messaging.rs` (`u64`, ring of 4096, BusySpin handler), about twice the
    /// per-item rate. A prefetch touches no memory in the language's sense, so this orders
    /// nothing; a consumer still reading another slot of that line just fetches it back.
    #[inline(always)]
    fn fill_one_and_commit<F: FnOnce(&mut T)>(&mut self, seq: i64, f: F) -> i64 {
        let slots = self.ring.slots();
        let ahead = seq + self.write_ahead;
        if ahead <= self.sequencer.horizon() {
            slots.prefetch_write(ahead);
        }
        let guard = CommitSingle {
            sequencer: &mut self.sequencer,
            hi: seq,
        };
        // SAFETY: as in `fill_and_commit`: `seq` is reserved, gated and not yet published.
        unsafe { slots.with_mut(seq, f) };
        drop(guard);
        seq
    }

    /// Publishes one event: waits (with the wait strategy) for a free slot, lets `f` write
    /// it in place and publishes it. Returns its sequence.
    #[inline]
    pub fn publish<F: FnOnce(&mut T)>(&mut self, f: F) -> i64 {
        let seq = self.sequencer.reserve(1);
        self.fill_one_and_commit(seq, f)
    }

    /// Publishes one event if a slot is free now; otherwise returns [`RingFull`] without
    /// calling `f`.
    #[inline]
    pub fn try_publish<F: FnOnce(&mut T)>(&mut self, f: F) -> Result<i64, RingFull> {
        let seq = self.sequencer.try_reserve(1).ok_or(RingFull)?;
        Ok(self.fill_one_and_commit(seq, f))
    }

    /// Claims `n` slots at once (waiting for them), calls `f(i, event)` for `i` in `0..n`, and
    /// publishes them together. Returns the last sequence. Fails only for `n == 0` or
    /// `n > capacity`.
    #[inline]
    pub fn batch_publish<F: FnMut(usize, &mut T)>(
        &mut self,
        n: usize,
        f: F,
    ) -> Result<i64, ClaimError> {
        let n = check_claim(n, self.sequencer.capacity())?;
        let hi = self.sequencer.reserve(n);
        Ok(self.fill_and_commit(n, hi, f))
    }

    /// [`batch_publish`](Self::batch_publish) if `n` slots are free now; otherwise
    /// [`ClaimError::Full`] without calling `f`.
    #[inline]
    pub fn try_batch_publish<F: FnMut(usize, &mut T)>(
        &mut self,
        n: usize,
        f: F,
    ) -> Result<i64, ClaimError> {
        let n = check_claim(n, self.sequencer.capacity())?;
        let hi = self.sequencer.try_reserve(n).ok_or(ClaimError::Full)?;
        Ok(self.fill_and_commit(n, hi, f))
    }

    /// The highest sequence every consumer has processed.
    pub fn processed(&self) -> i64 {
        minimum_sequence(self.sequencer.gating(), self.cursor())
    }

    /// Waits (with the wait strategy) until every consumer has processed `sequence` (clamped
    /// to the last published one).
    pub fn wait_until_processed(&self, sequence: i64) {
        let wait = &**self.sequencer.wait_strategy();
        wait_processed(wait, self.sequencer.gating(), sequence.min(self.cursor()));
    }

    /// Whether a handler has halted ([`ExceptionPolicy::Halt`](super::ExceptionPolicy::Halt)
    /// after a failure); its consumer still drains, so publishing never blocks on it.
    pub fn is_halted(&self) -> bool {
        self.health.any_halted.load(Ordering::Acquire)
    }

    /// Drains and stops: waits until every consumer has processed everything published, joins
    /// the threads and returns what they did.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    // Out of line and cold (also reached from `Drop`): shutdown code inlined next to a publish
    // loop changes how the loop compiles.
    #[cold]
    #[inline(never)]
    fn stop(&mut self) -> ShutdownReport {
        let last = self.sequencer.cursor();
        let handlers = match self.runtime.take() {
            Some(runtime) => runtime.stop(last),
            None => Vec::new(),
        };
        ShutdownReport {
            published: (last + 1) as u64,
            handlers,
        }
    }
}

impl<T, W: WaitStrategy> Drop for SingleProducer<T, W> {
    #[inline]
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.stop();
        }
    }
}

impl<T, W: WaitStrategy> fmt::Debug for SingleProducer<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleProducer")
            .field("sequencer", &self.sequencer)
            .field("running", &self.runtime.is_some())
            .finish()
    }
}

/// What the clones of a [`MultiProducer`] share.
struct MultiShared<W> {
    /// Live handles; the one that takes it to zero shuts down.
    handles: AtomicUsize,
    runtime: Mutex<Option<Runtime<W>>>,
    health: Health,
}

/// A producer of a multi-producer disruptor; clone it for each producing thread. See the
/// module docs.
pub struct MultiProducer<T, W: WaitStrategy> {
    sequencer: MultiProducerSequencer<W>,
    ring: Arc<RingBuffer<T>>,
    shared: Arc<MultiShared<W>>,
    /// Set once this handle has given up its share (by `shutdown`).
    released: bool,
}

/// Publishes its claim when dropped (see [`PublishSingle`]).
struct PublishMulti<'a, W: WaitStrategy> {
    sequencer: &'a MultiProducerSequencer<W>,
    claim: Option<Claim>,
}

impl<W: WaitStrategy> Drop for PublishMulti<'_, W> {
    #[inline]
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.sequencer.publish(claim);
        }
    }
}

impl<T, W: WaitStrategy> Clone for MultiProducer<T, W> {
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from a live one, which keeps the count above zero.
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        MultiProducer {
            sequencer: self.sequencer.clone(),
            ring: self.ring.clone(),
            shared: self.shared.clone(),
            released: false,
        }
    }
}

impl<T, W: WaitStrategy> MultiProducer<T, W> {
    pub(crate) fn new(
        sequencer: MultiProducerSequencer<W>,
        ring: Arc<RingBuffer<T>>,
        health: Health,
        runtime: Runtime<W>,
    ) -> Self {
        MultiProducer {
            sequencer,
            ring,
            shared: Arc::new(MultiShared {
                handles: AtomicUsize::new(1),
                runtime: Mutex::new(Some(runtime)),
                health,
            }),
            released: false,
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The highest claimed sequence over all producers (claims below it may still be in
    /// flight).
    pub fn cursor(&self) -> i64 {
        self.sequencer.cursor()
    }

    #[inline]
    fn fill_and_publish(&mut self, claim: Claim, mut fill: impl FnMut(usize, &mut T)) -> i64 {
        let (lo, hi) = (claim.lo(), claim.hi());
        let slots = self.ring.slots();
        let guard = PublishMulti {
            sequencer: &self.sequencer,
            claim: Some(claim),
        };
        for (i, seq) in (lo..=hi).enumerate() {
            // SAFETY: `seq` belongs to our unpublished claim (claims are unique: one atomic
            // read-modify-write of the claim cursor), and the sequencer saw every gating
            // consumer past `seq - capacity` with an Acquire load, so no consumer reads the
            // slot until its availability flag is stored below.
            unsafe { slots.with_mut(seq, |event| fill(i, event)) };
        }
        drop(guard);
        hi
    }

    /// Writes the one slot of `claim` with `f`, then publishes it.
    #[inline]
    fn fill_one_and_publish<F: FnOnce(&mut T)>(&mut self, claim: Claim, f: F) -> i64 {
        let seq = claim.lo();
        let guard = PublishMulti {
            sequencer: &self.sequencer,
            claim: Some(claim),
        };
        // SAFETY: as in `fill_and_publish`: `seq` is our unique, unpublished, gated claim.
        unsafe { self.ring.with_slot_mut(seq, f) };
        drop(guard);
        seq
    }

    /// Publishes one event (see [`SingleProducer::publish`]): one `fetch_add` claim, waiting
    /// for space if the ring is full.
    #[inline]
    pub fn publish<F: FnOnce(&mut T)>(&mut self, f: F) -> i64 {
        let claim = self.sequencer.claim(1);
        self.fill_one_and_publish(claim, f)
    }

    /// Publishes one event if a slot is free now; otherwise returns [`RingFull`].
    #[inline]
    pub fn try_publish<F: FnOnce(&mut T)>(&mut self, f: F) -> Result<i64, RingFull> {
        let claim = self.sequencer.try_claim(1).ok_or(RingFull)?;
        Ok(self.fill_one_and_publish(claim, f))
    }

    /// Claims `n` consecutive slots with one `fetch_add`, fills them with `f(i, event)` and
    /// publishes them. Returns the last sequence.
    #[inline]
    pub fn batch_publish<F: FnMut(usize, &mut T)>(
        &mut self,
        n: usize,
        f: F,
    ) -> Result<i64, ClaimError> {
        let claim = self.sequencer.next(n)?;
        Ok(self.fill_and_publish(claim, f))
    }

    /// [`batch_publish`](Self::batch_publish) if `n` slots are free now; otherwise
    /// [`ClaimError::Full`] without calling `f`.
    #[inline]
    pub fn try_batch_publish<F: FnMut(usize, &mut T)>(
        &mut self,
        n: usize,
        f: F,
    ) -> Result<i64, ClaimError> {
        let claim = self.sequencer.try_next(n)?;
        Ok(self.fill_and_publish(claim, f))
    }

    /// The highest sequence every consumer has processed.
    pub fn processed(&self) -> i64 {
        minimum_sequence(self.sequencer.gating(), self.cursor())
    }

    /// Waits until every consumer has processed `sequence` (clamped to the highest claim).
    pub fn wait_until_processed(&self, sequence: i64) {
        let wait = &**self.sequencer.wait_strategy();
        wait_processed(wait, self.sequencer.gating(), sequence.min(self.cursor()));
    }

    /// Whether a handler has halted (see [`SingleProducer::is_halted`]).
    pub fn is_halted(&self) -> bool {
        self.shared.health.any_halted.load(Ordering::Acquire)
    }

    /// Gives up this handle. If it was the last one, drains and stops the disruptor (see
    /// [`SingleProducer::shutdown`]) and returns the report; otherwise returns `None` and the
    /// last handle to go shuts down (dropping it does the same, without a report).
    pub fn shutdown(mut self) -> Option<ShutdownReport> {
        self.release()
    }

    #[cold]
    #[inline(never)]
    fn release(&mut self) -> Option<ShutdownReport> {
        if self.released {
            return None;
        }
        self.released = true;
        // AcqRel: every other handle's claims and publishes happen before its decrement, so
        // the last one reads the final claim cursor below.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        let last = self.sequencer.cursor();
        let runtime = lock(&self.shared.runtime).take();
        let handlers = runtime.map(|r| r.stop(last)).unwrap_or_default();
        Some(ShutdownReport {
            published: (last + 1) as u64,
            handlers,
        })
    }
}

impl<T, W: WaitStrategy> Drop for MultiProducer<T, W> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<T, W: WaitStrategy> fmt::Debug for MultiProducer<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiProducer")
            .field("sequencer", &self.sequencer)
            .field("handles", &self.shared.handles.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::super::{Disruptor, ExceptionPolicy};
    use super::*;
    use crate::sync::wait::{Blocking, BusySpinWithHint, Yielding};
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A disruptor whose only handler blocks until told to go on, so the ring fills.
    fn gated<W: WaitStrategy + 'static>(
        wait: W,
        size: usize,
    ) -> (SingleProducer<u64, W>, mpsc::Sender<()>, Arc<AtomicU64>) {
        let (go, gate) = mpsc::channel::<()>();
        let sum = Arc::new(AtomicU64::new(0));
        let s2 = sum.clone();
        let p = Disruptor::builder(size, || 0u64)
            .wait_strategy(wait)
            .handle_events_with(move |e: &u64, _, _| {
                // Each event waits for one permit (or for the sender to be gone).
                let _ = gate.recv();
                s2.fetch_add(*e, Ordering::Relaxed);
                Ok(())
            })
            .build_single_producer()
            .unwrap();
        (p, go, sum)
    }

    #[test]
    fn handles_are_send_and_the_multi_producer_is_clone() {
        fn send<S: Send>() {}
        fn clone<C: Clone>() {}
        send::<SingleProducer<Vec<u8>, Blocking>>();
        send::<MultiProducer<Vec<u8>, Yielding>>();
        clone::<MultiProducer<Vec<u8>, Yielding>>();
    }

    #[test]
    fn try_publish_reports_full_and_publish_waits_for_space() {
        let (mut p, go, sum) = gated(Blocking::new(0, 0), 4);
        for i in 1..=4 {
            assert_eq!(p.try_publish(|e| *e = i), Ok(i as i64 - 1));
        }
        let mut called = false;
        assert_eq!(p.try_publish(|_| called = true), Err(RingFull));
        assert!(!called, "the closure runs only for a claimed slot");
        assert_eq!(p.try_batch_publish(2, |_, _| {}), Err(ClaimError::Full));
        assert_eq!(
            p.batch_publish(5, |_, _| {}),
            Err(ClaimError::InvalidSize {
                requested: 5,
                capacity: 4
            })
        );
        // `publish` parks (Blocking) until the consumer frees a slot: release permits from
        // another thread after a while; the consumer's signal must wake the producer.
        let feeder = std::thread::spawn(move || {
            for _ in 0..6 {
                std::thread::sleep(Duration::from_millis(2));
                let _ = go.send(());
            }
        });
        assert_eq!(p.publish(|e| *e = 5), 4);
        assert_eq!(p.batch_publish(1, |_, e| *e = 6), Ok(5));
        feeder.join().unwrap();
        let report = p.shutdown();
        assert_eq!(report.published, 6);
        assert_eq!(report.handlers[0].processed, 6);
        assert_eq!(sum.load(Ordering::Relaxed), 21);
    }

    #[test]
    fn a_panicking_publish_closure_still_publishes_its_claim() {
        let (mut p, go, sum) = gated(Yielding::default(), 8);
        drop(go);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.batch_publish(3, |i, e| {
                *e = 100;
                if i == 1 {
                    panic!("producer-side failure");
                }
            })
        }));
        assert!(r.is_err());
        assert_eq!(p.cursor(), 2, "the whole claim was published");
        p.publish(|e| *e = 1);
        let report = p.shutdown();
        assert_eq!(report.published, 4);
        // Slot 2 was never written by the panicking closure: it holds the factory value 0.
        assert_eq!(sum.load(Ordering::Relaxed), 201);
    }

    #[test]
    fn halted_consumer_keeps_draining_so_producers_never_hang() {
        let calls = Arc::new(AtomicU64::new(0));
        let c2 = calls.clone();
        let downstream = Arc::new(AtomicU64::new(0));
        let d2 = downstream.clone();
        let mut p = Disruptor::builder(4, || 0u64)
            .wait_strategy(Blocking::default())
            .exception_policy(ExceptionPolicy::Halt)
            .handle_events_with(move |e: &u64, _, _| {
                c2.fetch_add(1, Ordering::Relaxed);
                if *e == 3 {
                    return Err("bad".into());
                }
                Ok(())
            })
            .then(move |_, _, _| {
                d2.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .build_multi_producer()
            .unwrap();
        // Far more events than slots: a consumer that stopped advancing would block this.
        for i in 0..1000u64 {
            p.publish(|e| *e = i);
        }
        p.wait_until_processed(999);
        assert!(p.is_halted());
        let report = p.shutdown().unwrap();
        assert_eq!(
            calls.load(Ordering::Relaxed),
            4,
            "not called after the failure"
        );
        assert_eq!(
            downstream.load(Ordering::Relaxed),
            1000,
            "later stages see every event"
        );
        let h = &report.handlers[0];
        assert!(h.halted && report.any_halted());
        assert_eq!((h.processed, h.failures, h.skipped), (3, 1, 996));
        assert_eq!(report.handlers[1].processed, 1000);
    }

    #[test]
    fn multi_producer_shuts_down_with_its_last_handle() {
        let sum = Arc::new(AtomicU64::new(0));
        let s2 = sum.clone();
        let p = Disruptor::builder(64, || 0u64)
            .wait_strategy(BusySpinWithHint)
            .handle_events_with(move |e: &u64, _, _| {
                s2.fetch_add(*e, Ordering::Relaxed);
                Ok(())
            })
            .build_multi_producer()
            .unwrap();
        let workers: Vec<_> = (0..3u64)
            .map(|k| {
                let mut p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        p.publish(|e| *e = k * 1000 + i);
                    }
                    p.shutdown()
                })
            })
            .collect();
        for w in workers {
            assert_eq!(
                w.join().unwrap(),
                None,
                "the original handle is still alive"
            );
        }
        let report = p.shutdown().expect("last handle reports");
        assert_eq!(report.published, 3000);
        assert_eq!(report.handlers[0].processed, 3000);
        assert_eq!(sum.load(Ordering::Relaxed), (0..3000u64).sum::<u64>());
    }

    #[test]
    fn dropping_the_producer_drains_and_joins() {
        let sum = Arc::new(AtomicU64::new(0));
        let s2 = sum.clone();
        {
            let mut p = Disruptor::builder(8, || 0u64)
                .wait_strategy(Blocking::default())
                .handle_events_with(move |e: &u64, _, _| {
                    std::thread::sleep(Duration::from_micros(50));
                    s2.fetch_add(*e, Ordering::Relaxed);
                    Ok(())
                })
                .build_single_producer()
                .unwrap();
            for i in 0..100 {
                p.publish(|e| *e = i);
            }
        }
        assert_eq!(sum.load(Ordering::Relaxed), (0..100u64).sum::<u64>());
        // Shutting down with nothing published returns at once.
        let p = Disruptor::builder(8, || 0u64)
            .handle_events_with(|_, _, _| Ok(()))
            .build_single_producer()
            .unwrap();
        let report = p.shutdown();
        assert_eq!(report.published, 0);
        assert_eq!(report.handlers[0].batches, 0);
    }
}
