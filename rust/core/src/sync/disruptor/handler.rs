//! Event handlers: the consumer loop the managed threads run, failure policy and statistics.
//!
//! A handler is a closure `FnMut(&T, sequence, end_of_batch) -> HandlerResult` (or `&mut T`
//! for the only handler of an exclusive stage, which may enrich events in place for the stages
//! after it). The loop of a consumer:
//!
//! 1. waits on its [`SequenceBarrier`] for the next sequence; the barrier returns the highest
//!    available one, read once: that whole range is the batch;
//! 2. calls the handler for every sequence of the batch, `end_of_batch` true on the last;
//! 3. stores its own [`Sequence`] once (Release, after all slot accesses of the batch) and
//!    signals the wait strategy, which wakes producers waiting for space and consumers that
//!    depend on it.
//!
//! It returns when the barrier is alerted while nothing is available; the disruptor alerts
//! only after every consumer has processed everything published (see
//! [`SingleProducer::shutdown`](super::SingleProducer::shutdown)).
//!
//! # Trailing closely
//!
//! A consumer faster than its producer catches up with it and then takes every event as soon
//! as it is published, in batches of one or a few. Each of its reads of the cursor and of the
//! newest slot pulls those cache lines away from the producer, whose next stores must fetch
//! them back: both sides pay a line transfer per event, and the consumer, always caught up,
//! keeps it that way. Measured with `benches/messaging.rs` on 2 vCPUs: 25–70 M events/s
//! instead of 350–450 for one producer and one busy-spinning consumer, and a 3-stage pipeline
//! (4 threads) at ~35 instead of ~140. Whether a run fell into that regime depended on how
//! fast the consumer loop happened to compile: the slower loop of an earlier version avoided
//! it more often, not by design.
//!
//! So the loop backs off, deliberately, after a *small* batch (fewer events than a quarter of
//! the ring, at most 1024) that it had to wait for: about 100 ns of spin hints (their count is
//! calibrated once per process) before it looks again, after its sequence store and signal.
//! If the next batch arrived during the back-off at the rate of a streaming producer (at least
//! one event per 10 ns) and is still small, the next back-off is twice as long, up to 64 times
//! (6.4 µs). There is none after a batch of a slower producer (whose events should not wait for
//! us), while working through a backlog, or after a large batch. An event therefore waits for
//! a back-off only when it is published within ~100 ns after a small batch that the consumer
//! had to wait for, or while its producer streams faster than one event per 10 ns; memory
//! ordering is not affected (the back-off is a delay between two batches).
//!
//! # Reading ahead
//!
//! A consumer that trails its producer by a large batch reads lines the producer's core wrote
//! last, one line transfer each. While it works through a batch it therefore prefetches the
//! slot 1 KiB further on, as long as that slot is still in the batch (published: never a line
//! the producer may still be filling), so that several transfers overlap. Measured with
//! `benches/messaging.rs` (`u64` events, ring of 4096): `batch_publish(64)` against a
//! BusySpin handler about 1.5 times as fast. A prefetch is no memory access; ordering is not
//! affected.
//!
//! Failures. A handler fails by returning `Err` or by panicking (the panic is caught with
//! `catch_unwind` once per batch, so it costs nothing while nothing fails; it never unwinds
//! out of the managed thread). What follows is the [`ExceptionPolicy`]:
//! - [`ExceptionPolicy::Continue`]: count the failure and carry on with the next event;
//! - [`ExceptionPolicy::Halt`]: stop calling this handler. The consumer keeps *draining*: it
//!   goes on advancing its sequence over every published event without calling the handler
//!   (counted as `skipped`), so producers never wait on a dead consumer, stages after it keep
//!   receiving events, and shutdown completes.
//!   [`SingleProducer::is_halted`](super::SingleProducer::is_halted) tells producers that a
//!   handler has halted.
//!
//! Either way the failure is counted in [`HandlerStats`], the first one is kept as text, and an
//! optional callback sees each ([`Builder::on_failure`](super::Builder::on_failure)). A panic
//! from anything other than the handler (the callback, an error's `Display`) halts the
//! consumer the same way instead of killing the thread.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

// The back-off's spin hints are std's, also under loom: they pace the managed consumer
// threads (std threads, never run inside a model) and synchronize nothing.
use std::hint::spin_loop;

use super::super::primitives::{AtomicBool, Ordering};
use super::barrier::SequenceBarrier;
use super::ring_buffer::{prefetch_ahead, RingBuffer, Slots};
use super::sequence::Sequence;
use crate::sync::wait::WaitStrategy;

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

/// The error a handler returns: any error type, boxed (`?` converts into it, and
/// `Err("message".into())` works).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler returns for each event.
pub type HandlerResult = Result<(), HandlerError>;

/// What a consumer does after its handler fails (returns `Err` or panics). See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExceptionPolicy {
    /// Count the failure and carry on with the next event.
    #[default]
    Continue,
    /// Stop calling the handler; keep draining (advancing the sequence without calling it) so
    /// that no producer or downstream consumer waits on it.
    Halt,
}

/// One failure of a handler, as shown to the [`on_failure`](super::Builder::on_failure)
/// callback.
pub struct HandlerFailure<'a> {
    /// The handler's thread name.
    pub handler: &'a str,
    /// The sequence of the event it failed on.
    pub sequence: i64,
    /// The error it returned, or the panic message.
    pub error: &'a (dyn fmt::Display + 'a),
    /// Whether it panicked (rather than returning `Err`).
    pub panicked: bool,
}

impl fmt::Debug for HandlerFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerFailure")
            .field("handler", &self.handler)
            .field("sequence", &self.sequence)
            .field("error", &format_args!("{}", self.error))
            .field("panicked", &self.panicked)
            .finish()
    }
}

/// Counts one consumer kept while it ran; part of the shutdown report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// The handler's thread name.
    pub name: String,
    /// Events the handler returned `Ok` for.
    pub processed: u64,
    /// Events the handler returned `Err` for.
    pub failures: u64,
    /// Events the handler panicked on.
    pub panics: u64,
    /// Events passed without calling the handler because it had halted.
    pub skipped: u64,
    /// Batches (one barrier wait and one sequence store each).
    pub batches: u64,
    /// Whether the handler halted ([`ExceptionPolicy::Halt`] after a failure).
    pub halted: bool,
    /// The first failure, as text.
    pub first_failure: Option<String>,
    /// The last sequence this consumer released (`-1` if none).
    pub last_sequence: i64,
}

impl HandlerStats {
    /// Events this consumer passed in all: processed, failed, panicked on or skipped.
    pub fn seen(&self) -> u64 {
        self.processed + self.failures + self.panics + self.skipped
    }
}

/// The failure callback, boxed so that it can sit in an `Arc` of either flavour.
pub(crate) struct FailureHook(pub(crate) Box<dyn Fn(&HandlerFailure<'_>) + Send + Sync>);

/// A handler with its access mode to the slots.
pub(crate) trait SlotHandler<T>: Send {
    /// Calls the handler on the event of `sequence`.
    ///
    /// # Safety
    /// The caller may access `sequence` in this handler's mode: it was returned by the
    /// consumer's barrier and not yet released by the consumer, and, for [`Exclusive`]
    /// handlers, the consumer is the only one of its stage (so no other consumer accesses the
    /// slot while upstream stages have released it and downstream ones wait for us).
    unsafe fn call(
        &mut self,
        slots: Slots<'_, T>,
        sequence: i64,
        end_of_batch: bool,
    ) -> HandlerResult;
}

/// A handler that reads events (`&T`); any number may run in parallel.
pub(crate) struct Shared<F>(pub(crate) F);

impl<T, F> SlotHandler<T> for Shared<F>
where
    F: FnMut(&T, i64, bool) -> HandlerResult + Send,
{
    #[inline(always)]
    unsafe fn call(
        &mut self,
        slots: Slots<'_, T>,
        sequence: i64,
        end_of_batch: bool,
    ) -> HandlerResult {
        // SAFETY: forwarded from the caller: `sequence` is published, not yet released by us,
        // and no exclusive handler runs on it concurrently.
        unsafe { slots.with(sequence, |e| (self.0)(e, sequence, end_of_batch)) }
    }
}

/// The handler of an exclusive stage (`&mut T`): alone in its stage.
pub(crate) struct Exclusive<F>(pub(crate) F);

impl<T, F> SlotHandler<T> for Exclusive<F>
where
    F: FnMut(&mut T, i64, bool) -> HandlerResult + Send,
{
    #[inline(always)]
    unsafe fn call(
        &mut self,
        slots: Slots<'_, T>,
        sequence: i64,
        end_of_batch: bool,
    ) -> HandlerResult {
        // SAFETY: forwarded from the caller: we are the only consumer of our stage, upstream
        // stages have released `sequence`, downstream ones and the producer wait for us.
        unsafe { slots.with_mut(sequence, |e| (self.0)(e, sequence, end_of_batch)) }
    }
}

/// Everything a managed consumer thread needs.
pub(crate) struct ConsumerContext<T, W> {
    pub(crate) name: String,
    pub(crate) ring: Arc<RingBuffer<T>>,
    pub(crate) barrier: SequenceBarrier<W>,
    pub(crate) sequence: Arc<Sequence>,
    pub(crate) wait: Arc<W>,
    pub(crate) policy: ExceptionPolicy,
    pub(crate) on_failure: Option<Arc<FailureHook>>,
    /// Set when any consumer of the disruptor halts.
    pub(crate) any_halted: Arc<AtomicBool>,
}

/// A panic payload, displayed as its message when it has one.
struct PanicMessage<'a>(&'a (dyn Any + Send));

impl fmt::Display for PanicMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.0.downcast_ref::<&str>() {
            write!(f, "panicked: {s}")
        } else if let Some(s) = self.0.downcast_ref::<String>() {
            write!(f, "panicked: {s}")
        } else {
            f.write_str("panicked (non-string payload)")
        }
    }
}

enum Failure {
    Error(HandlerError),
    Panic(Box<dyn Any + Send>),
}

/// The loop position and counters, kept outside the unwinding region.
struct LoopState {
    stats: HandlerStats,
    halted: bool,
    /// The next sequence to wait for (everything below is released).
    next: i64,
    /// The first sequence of the current batch not yet handed to the handler, when a failure
    /// interrupted the batch (a halted consumer skips from here).
    resume: i64,
}

/// Runs a consumer until its barrier is alerted with nothing left; returns its counts.
pub(crate) fn run_consumer<T, W, H>(ctx: ConsumerContext<T, W>, mut handler: H) -> HandlerStats
where
    W: WaitStrategy,
    H: SlotHandler<T>,
{
    let mut state = LoopState {
        stats: HandlerStats {
            name: ctx.name.clone(),
            last_sequence: ctx.sequence.get_relaxed(),
            ..HandlerStats::default()
        },
        halted: false,
        next: ctx.sequence.get_relaxed() + 1,
        resume: ctx.sequence.get_relaxed() + 1,
    };
    loop {
        let run = catch_unwind(AssertUnwindSafe(|| consume(&ctx, &mut handler, &mut state)));
        match run {
            Ok(()) => break,
            Err(payload) => {
                // A panic outside the handler call (failure reporting). Never unwind out of
                // the thread: halt, and drain from the last released sequence (no event is
                // handed to the handler twice, because it is not called again).
                state.stats.panics += 1;
                halt(&ctx, &mut state);
                drop_payload(payload);
            }
        }
    }
    state.stats.last_sequence = ctx.sequence.get_relaxed();
    state.stats
}

/// Drops a panic payload; its `Drop` may panic too, and that must not escape either.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

fn halt<T, W>(ctx: &ConsumerContext<T, W>, state: &mut LoopState) {
    if !state.halted {
        state.halted = true;
        state.stats.halted = true;
        ctx.any_halted.store(true, Ordering::Release);
    }
}

/// The batch loop. Returns when alerted; unwinds only if failure reporting panics.
fn consume<T, W, H>(ctx: &ConsumerContext<T, W>, handler: &mut H, state: &mut LoopState)
where
    W: WaitStrategy,
    H: SlotHandler<T>,
{
    // Read once: the slot base and mask stay in registers for the whole loop.
    let slots = ctx.ring.slots();
    let mut slip = Slip::new(slots.capacity());
    // See "Reading ahead" in the module docs.
    let ahead = prefetch_ahead::<T>();
    loop {
        let Ok((available, waited)) = ctx.barrier.wait_for_noting(state.next) else {
            return;
        };
        state.stats.batches += 1;
        if !state.halted {
            process_batch(ctx, slots, handler, state, available, ahead);
        }
        // Also right after the handler halted in this batch: the rest of it is skipped.
        if state.halted && state.resume <= available {
            skip(state, available);
        }
        // One Release store per batch, after every slot access of the batch.
        ctx.sequence.set(available);
        ctx.wait.signal();
        let spins = slip.after_batch(available - state.next + 1, waited);
        if spins > 0 {
            back_off(spins);
        }
        state.next = available + 1;
        state.resume = state.next;
    }
}

/// The consumer's back-off after a small batch. See the module docs ("Trailing closely").
struct Slip {
    /// Batches of fewer events than this are small: a quarter of the ring, at most
    /// [`SLIP_BATCH`].
    below: i64,
    /// Spin hints that take about [`SLIP_NS`] here: the first back-off.
    base: u32,
    /// The longest back-off, [`SLIP_MAX`] times the first.
    max: u32,
    /// The last back-off, in spin hints (0: none after the last batch).
    spins: u32,
}

/// How long a consumer first backs off after a small batch.
const SLIP_NS: u64 = 100;
/// The back-off doubles while the producer streams, up to this many times the first.
const SLIP_MAX: u32 = 64;
/// The batch size the back-off aims for (with rings of 4096 slots or more).
const SLIP_BATCH: usize = 1024;
/// Events that must arrive during a first back-off for the producer to count as streaming
/// (one per 10 ns; proportionally more during longer back-offs).
const STREAMING: i64 = 10;

impl Slip {
    fn new(capacity: usize) -> Slip {
        let base = slip_spins();
        Slip {
            below: (capacity / 4).min(SLIP_BATCH) as i64,
            base,
            max: base.saturating_mul(SLIP_MAX),
            spins: 0,
        }
    }

    /// After a batch of `events`, for which the consumer had `waited` (or not): how long to
    /// back off, in spin hints.
    #[inline(always)]
    fn after_batch(&mut self, events: i64, waited: bool) -> u32 {
        self.spins = if events >= self.below {
            // Not trailing closely, or the last back-off was long enough.
            0
        } else if waited {
            // Caught up with the producer, then a small batch: start backing off.
            self.base
        } else if self.spins > 0 {
            // This batch arrived during the last back-off. At the rate of a streaming
            // producer (`events` per `spins / base * SLIP_NS` ns against `STREAMING` per
            // `SLIP_NS`), back off twice as long; at a lower rate, not at all (the producer
            // does not suffer from us, and its events should not wait for us).
            let streaming = events.saturating_mul(i64::from(self.base))
                >= STREAMING.saturating_mul(i64::from(self.spins));
            if streaming {
                self.spins.saturating_mul(2).min(self.max)
            } else {
                0
            }
        } else {
            // Busy working through a backlog: never hold it back.
            0
        };
        self.spins
    }
}

/// Spins `spins` hints.
#[inline(always)]
fn back_off(spins: u32) {
    for _ in 0..spins {
        spin_loop();
    }
}

/// The number of `spin_loop` hints that take about [`SLIP_NS`] on this machine (a hint costs
/// from about 1 ns to over 40 ns depending on the CPU), measured once per process: the fastest
/// of a few timed runs, so that a preemption during one does not shorten the slip.
fn slip_spins() -> u32 {
    static SPINS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SPINS.get_or_init(|| {
        const PROBE: u32 = 128;
        let fastest = (0..4)
            .map(|_| {
                let t = std::time::Instant::now();
                for _ in 0..PROBE {
                    spin_loop();
                }
                t.elapsed().as_nanos()
            })
            .min()
            .unwrap_or(0)
            .max(1);
        (u128::from(SLIP_NS) * u128::from(PROBE) / fastest).clamp(1, 4096) as u32
    })
}

/// A halted consumer passes `state.resume..=available` without calling its handler.
#[cold]
#[inline(never)]
fn skip(state: &mut LoopState, available: i64) {
    state.stats.skipped += (available - state.resume + 1) as u64;
}

/// Calls the handler on `state.next..=available`, applying the policy to failures, and
/// prefetches the slot `ahead` further on while that is still in the batch.
#[inline(always)]
fn process_batch<T, W, H>(
    ctx: &ConsumerContext<T, W>,
    slots: Slots<'_, T>,
    handler: &mut H,
    state: &mut LoopState,
    available: i64,
    ahead: i64,
) where
    W: WaitStrategy,
    H: SlotHandler<T>,
{
    let mut seq = state.next;
    while seq <= available {
        let start = seq;
        let result = catch_unwind(AssertUnwindSafe(|| {
            while seq <= available {
                // Read-ahead inside the batch only: never a line the producer may be filling.
                if seq + ahead <= available {
                    slots.prefetch(seq + ahead);
                }
                // SAFETY: `seq <= available`, which our barrier returned, and above our own
                // sequence (stored only after the batch); the builder gives an exclusive
                // handler a stage of its own.
                unsafe { handler.call(slots, seq, seq == available) }?;
                seq += 1;
            }
            Ok(())
        }));
        // Everything before `seq` was handed to the handler and returned `Ok`.
        state.stats.processed += (seq - start) as u64;
        let failure = match result {
            Ok(Ok(())) => break,
            Ok(Err(e)) => Failure::Error(e),
            Err(payload) => Failure::Panic(payload),
        };
        // `seq` is the sequence the handler failed on; it has been handed over.
        state.resume = seq + 1;
        report_failure(ctx, state, seq, failure);
        seq += 1;
        if ctx.policy == ExceptionPolicy::Halt {
            // `consume` skips the rest of the batch, from `state.resume`.
            halt(ctx, state);
            break;
        }
    }
}

#[cold]
fn report_failure<T, W>(
    ctx: &ConsumerContext<T, W>,
    state: &mut LoopState,
    sequence: i64,
    failure: Failure,
) {
    let stats = &mut state.stats;
    let panicked = matches!(failure, Failure::Panic(_));
    if panicked {
        stats.panics += 1;
    } else {
        stats.failures += 1;
    }
    let mut show = |error: &dyn fmt::Display| {
        if stats.first_failure.is_none() {
            stats.first_failure = Some(format!("sequence {sequence}: {error}"));
        }
        if let Some(hook) = &ctx.on_failure {
            (hook.0)(&HandlerFailure {
                handler: &ctx.name,
                sequence,
                error,
                panicked,
            });
        }
    };
    match failure {
        Failure::Error(e) => show(&e),
        Failure::Panic(payload) => {
            show(&PanicMessage(&*payload));
            drop_payload(payload);
        }
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::super::sequencer::SingleProducerSequencer;
    use super::*;
    use crate::sync::wait::BusySpinWithHint;

    /// Drives `run_consumer` on the current thread over `n` pre-published events.
    fn run<H: SlotHandler<u64>>(n: i64, policy: ExceptionPolicy, handler: H) -> HandlerStats {
        let wait = Arc::new(BusySpinWithHint);
        let ring = Arc::new(RingBuffer::new(16, || 0u64).unwrap());
        let mut sp = SingleProducerSequencer::new(16, wait.clone(), vec![]).unwrap();
        let claim = sp.next(n as usize).unwrap();
        for s in claim.sequences() {
            // SAFETY: the claim is ours and unpublished; no consumer runs yet.
            unsafe { ring.with_slot_mut(s, |e| *e = s as u64 * 10) };
        }
        sp.publish(claim);
        let barrier = sp.new_barrier(vec![]);
        // Alerted up front: the consumer drains what is there and stops.
        barrier.alert();
        let ctx = ConsumerContext {
            name: "test".into(),
            ring,
            barrier,
            sequence: Arc::new(Sequence::new()),
            wait,
            policy,
            on_failure: None,
            any_halted: Arc::new(AtomicBool::new(false)),
        };
        run_consumer(ctx, handler)
    }

    #[test]
    fn one_batch_and_end_of_batch_on_the_last() {
        let mut seen = Vec::new();
        let stats = run(
            5,
            ExceptionPolicy::Continue,
            Shared(|e: &u64, s: i64, eob: bool| {
                seen.push((*e, s, eob));
                Ok(())
            }),
        );
        assert_eq!(stats.processed, 5);
        assert_eq!(stats.batches, 1);
        assert_eq!(stats.last_sequence, 4);
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[4], (40, 4, true));
        assert!(seen[..4].iter().all(|x| !x.2));
    }

    #[test]
    fn continue_counts_errors_and_panics_and_goes_on() {
        let mut calls = Vec::new();
        let stats = run(
            8,
            ExceptionPolicy::Continue,
            Exclusive(|e: &mut u64, s: i64, _| {
                calls.push(s);
                *e += 1;
                match s {
                    2 => Err("bad event".into()),
                    5 => panic!("boom at {s}"),
                    _ => Ok(()),
                }
            }),
        );
        assert_eq!(calls, (0..8).collect::<Vec<_>>());
        assert_eq!((stats.processed, stats.failures, stats.panics), (6, 1, 1));
        assert_eq!(
            stats.first_failure.as_deref(),
            Some("sequence 2: bad event")
        );
        assert!(!stats.halted);
        assert_eq!(stats.seen(), 8);
    }

    #[test]
    fn halt_stops_calling_and_drains() {
        let mut calls = 0;
        let stats = run(
            10,
            ExceptionPolicy::Halt,
            Shared(|_: &u64, s: i64, _| {
                calls += 1;
                if s == 3 {
                    panic!("stop");
                }
                Ok(())
            }),
        );
        assert_eq!(calls, 4);
        assert!(stats.halted);
        assert_eq!((stats.processed, stats.panics, stats.skipped), (3, 1, 6));
        assert_eq!(
            stats.last_sequence, 9,
            "a halted consumer still releases every sequence"
        );
        assert_eq!(
            stats.first_failure.as_deref(),
            Some("sequence 3: panicked: stop")
        );
    }
}
