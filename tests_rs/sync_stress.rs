//! Stress tests of `laminar_core::sync::SpscQueue` and of the `Blocking` wait strategy under
//! real threads.
//!
//! What they hold the ring to, over millions of messages between two threads:
//! - every value is delivered exactly once and in order, through every mix of the single-item
//!   (`push`/`pop`/`peek`) and batch (`push_batch`/`push_with`/`pop_batch`) paths, with tiny
//!   capacities (2, 4) that keep the ring wrapping and racing between full and empty;
//! - values left in the ring when both ends are gone are dropped exactly once (a per-value
//!   drop log, not just a total), including after a panicking user callback;
//! - one test per memory-ordering bug class of the messaging notes' checklist that applies to
//!   an SPSC ring: a torn multi-word payload (consumer reading a slot the producer is still
//!   writing: the tail must be Release-stored after the slot write and Acquire-loaded before
//!   the read), a `peek`ed slot overwritten while borrowed (the head must be Release-stored
//!   only after the read), a producer overrunning a slow consumer (the free-slot horizon must
//!   be recomputed from the consumer's position, never accumulated), and abandonment that does
//!   not make earlier pushes visible (the rtrb `Arc::strong_count` bug).
//!
//! `Blocking` is run as a ping-pong and as the wait of a streaming producer/consumer with a
//! zero spin and yield budget, so that nearly every wait parks: a lost wake-up hangs a thread,
//! and the watchdog in [`with_timeout`] fails the test instead of hanging the run.
//!
//! x86 is TSO, so the ordering tests mostly guard against the compiler (and against future
//! edits); the loom models in `tests_rs/loom_sync.rs` cover the weaker orderings. The whole
//! file runs in well under 20 s in the `ci` profile on 2 cores.

use std::hint::spin_loop;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use laminar_core::sync::wait::{Blocking, WaitStrategy};
use laminar_core::sync::{Consumer, Producer, SpscQueue};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `f` on its own thread and fails the test if it has not finished after `secs`
/// seconds (a lost wake-up or a stuck spin would otherwise hang the whole test run). A panic
/// inside `f` is re-raised here.
fn with_timeout<F>(name: &str, secs: u64, f: F)
where
    F: FnOnce() + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            f();
            let _ = done_tx.send(());
        })
        .unwrap();
    match done_rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // `f` panicked before sending: propagate its panic.
            if let Err(p) = worker.join() {
                panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: not finished after {secs} s (lost wake-up or livelock)")
        }
    }
}

/// Spin-then-yield backoff for the test's own retry loops: on 2 cores, with other tests
/// running in parallel, a pure spin could hold the core the other side needs.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
        if self.0 < 64 {
            self.0 += 1;
            spin_loop();
        } else {
            thread::yield_now();
        }
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// A small deterministic generator (xorshift64*), so each thread chooses its path mix
/// independently and a failure can be replayed from the seed in its message.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Pushes `v`, backing off while the ring is full.
fn push_blocking<T: Send>(p: &mut Producer<T>, mut v: T) {
    let mut backoff = Backoff::default();
    loop {
        match p.push(v) {
            Ok(()) => return,
            Err(back) => {
                v = back;
                backoff.snooze();
            }
        }
    }
}

/// Sends `0..n` with a random mix of `push`, `push_batch` and `push_with`, batch sizes up to
/// twice the capacity plus one (so batches are routinely cut short by a full ring).
fn produce_mixed(mut p: Producer<u64>, n: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let max_batch = (2 * p.capacity() + 1) as u64;
    let mut next = 0u64;
    let mut pending: Vec<u64> = Vec::new();
    let mut backoff = Backoff::default();
    while next < n || !pending.is_empty() {
        let progressed = if !pending.is_empty() {
            // A partly pushed batch must go out first, in order.
            p.push_batch(&mut pending) > 0
        } else {
            match rng.below(3) {
                0 => match p.push(next) {
                    Ok(()) => {
                        next += 1;
                        true
                    }
                    Err(back) => {
                        assert_eq!(back, next, "push handed back a different value");
                        false
                    }
                },
                1 => {
                    let k = (1 + rng.below(max_batch)).min(n - next);
                    pending.extend(next..next + k);
                    next += k;
                    p.push_batch(&mut pending) > 0
                }
                _ => {
                    let k = (1 + rng.below(max_batch)).min(n - next) as usize;
                    let base = next;
                    let mut made = 0usize;
                    let pushed = p.push_with(k, |i| {
                        assert_eq!(i, made, "push_with called make out of order");
                        made += 1;
                        base + i as u64
                    });
                    assert_eq!(
                        made, pushed,
                        "push_with called make for a slot it did not fill"
                    );
                    assert!(pushed <= k);
                    next += pushed as u64;
                    pushed > 0
                }
            }
        };
        if progressed {
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
}

/// Receives `0..n` with a random mix of `pop`, `pop_batch` and `peek`-then-`pop`, checking
/// that each value is the next one expected (exactly once, in order). Returns the sum.
fn consume_mixed(mut c: Consumer<u64>, n: u64, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let cap = c.capacity();
    let max_batch = (2 * cap + 1) as u64;
    let mut expect = 0u64;
    let mut sum = 0u64;
    let mut backoff = Backoff::default();
    while expect < n {
        let got = match rng.below(3) {
            0 => match c.pop() {
                Some(v) => {
                    assert_eq!(v, expect, "pop out of order (seed {seed})");
                    expect += 1;
                    sum = sum.wrapping_add(v);
                    1
                }
                None => 0,
            },
            1 => {
                let k = 1 + rng.below(max_batch) as usize;
                let taken = c.pop_batch(k, |v| {
                    assert_eq!(v, expect, "pop_batch out of order (seed {seed})");
                    expect += 1;
                    sum = sum.wrapping_add(v);
                });
                assert!(taken <= k && taken <= cap);
                taken
            }
            _ => match c.peek().copied() {
                Some(v) => {
                    assert_eq!(v, expect, "peek out of order (seed {seed})");
                    assert_eq!(c.pop(), Some(v), "pop after peek returned another value");
                    expect += 1;
                    sum = sum.wrapping_add(v);
                    1
                }
                None => 0,
            },
        };
        assert!(c.len() <= cap, "consumer sees more than capacity queued");
        if got > 0 {
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
    assert_eq!(c.pop(), None, "a value beyond the last one sent");
    sum
}

fn sum_below(n: u64) -> u64 {
    n * (n.saturating_sub(1)) / 2
}

/// Records how many times each value was dropped. Leaked on purpose (`&'static`), so that a
/// double drop only bumps a counter and fails an assertion instead of corrupting the heap.
struct DropLog(Vec<AtomicU8>);

impl DropLog {
    fn new(n: usize) -> &'static Self {
        Box::leak(Box::new(DropLog(
            (0..n).map(|_| AtomicU8::new(0)).collect(),
        )))
    }

    /// Asserts values `0..created` were each dropped exactly once and no other was.
    fn assert_each_dropped_once(&self, created: usize, context: &str) {
        for (id, count) in self.0.iter().enumerate() {
            let want = u8::from(id < created);
            let got = count.load(Ordering::Relaxed);
            assert_eq!(
                got, want,
                "{context}: value {id} dropped {got} times (want {want})"
            );
        }
    }
}

/// A value whose drop is logged by id.
struct Tracked {
    id: usize,
    log: &'static DropLog,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.log.0[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Exactly once, in order
// ---------------------------------------------------------------------------------------------

/// Single-item push/pop of 4.5 M values across two threads, from the smallest ring (2 slots:
/// every other push finds it full) to a roomy one.
#[test]
fn single_items_arrive_once_in_order() {
    with_timeout("single_items", 60, || {
        for (cap, n) in [
            (2usize, 1_000_000u64),
            (4, 1_000_000),
            (64, 1_000_000),
            (4096, 1_500_000),
        ] {
            let (mut p, mut c) = SpscQueue::<u64>::with_capacity(cap);
            assert_eq!(p.capacity(), cap);
            let producer = thread::spawn(move || {
                for i in 0..n {
                    push_blocking(&mut p, i);
                }
                p
            });
            let mut backoff = Backoff::default();
            let mut expect = 0u64;
            while expect < n {
                match c.pop() {
                    Some(v) => {
                        assert_eq!(v, expect, "capacity {cap}");
                        expect += 1;
                        backoff.reset();
                    }
                    None => backoff.snooze(),
                }
            }
            let p = producer.join().unwrap();
            assert!(p.is_empty() && c.is_empty());
            assert_eq!(c.pop(), None);
        }
    });
}

/// Every mix of single-item and batch paths on both sides, 4 M values over rings of 2, 4, 16
/// and 1024 slots; exactly once and in order, checked value by value and by sum.
#[test]
fn mixed_single_and_batch_paths_arrive_once_in_order() {
    with_timeout("mixed_paths", 60, || {
        for (i, cap) in [2usize, 4, 16, 1024].into_iter().enumerate() {
            let n = 1_000_000u64;
            let seed = 0x5EED_0000 + i as u64;
            let (p, c) = SpscQueue::<u64>::with_capacity(cap);
            let producer = thread::spawn(move || produce_mixed(p, n, seed));
            let sum = consume_mixed(c, n, seed.rotate_left(17));
            producer.join().unwrap();
            assert_eq!(sum, sum_below(n), "capacity {cap}");
        }
    });
}

/// Non-`Copy` values (heap boxes) through the batch paths: a value moved twice or never would
/// show as a wrong or double-freed box.
#[test]
fn boxed_values_arrive_once_in_order() {
    with_timeout("boxed", 60, || {
        let n = 300_000u64;
        let (mut p, mut c) = SpscQueue::<Box<u64>>::with_capacity(4);
        let producer = thread::spawn(move || {
            let mut pending = Vec::new();
            let mut next = 0u64;
            let mut backoff = Backoff::default();
            while next < n || !pending.is_empty() {
                if pending.is_empty() {
                    let k = (n - next).min(7);
                    pending.extend((next..next + k).map(Box::new));
                    next += k;
                }
                if p.push_batch(&mut pending) == 0 {
                    backoff.snooze();
                } else {
                    backoff.reset();
                }
            }
        });
        let mut expect = 0u64;
        let mut backoff = Backoff::default();
        while expect < n {
            let got = c.pop_batch(5, |b| {
                assert_eq!(*b, expect);
                expect += 1;
            });
            if got == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
        producer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Drops
// ---------------------------------------------------------------------------------------------

/// Many short lives of a tiny ring: the consumer takes a random number of values and drops
/// its end while the producer is still pushing; the producer stops when it sees the consumer
/// gone. Every value created is dropped exactly once: by the consumer, by the producer (a push
/// handed back) or by the ring (left queued), whichever end goes last.
#[test]
fn values_left_in_the_ring_are_dropped_exactly_once() {
    with_timeout("drops", 60, || {
        let mut rng = Rng::new(0xD50B);
        for round in 0..2_000u64 {
            let cap = [2usize, 4, 8][(round % 3) as usize];
            let limit = 64usize;
            let take = rng.below(2 * cap as u64 + 2) as usize;
            let log = DropLog::new(limit);
            let (mut p, mut c) = SpscQueue::<Tracked>::with_capacity(cap);
            let plog = log;
            let producer = thread::spawn(move || {
                let mut created = 0usize;
                let mut backoff = Backoff::default();
                while created < limit && !p.is_abandoned() {
                    let v = Tracked {
                        id: created,
                        log: plog,
                    };
                    created += 1;
                    if p.push(v).is_err() {
                        // Handed back and dropped here; the next attempt is a new value.
                        backoff.snooze();
                    }
                }
                // Drop `p` on this thread half the time, on the test's thread otherwise.
                if created.is_multiple_of(2) {
                    drop(p);
                    (created, None)
                } else {
                    (created, Some(p))
                }
            });
            let mut taken = 0usize;
            let mut backoff = Backoff::default();
            while taken < take {
                match c.pop() {
                    Some(v) => {
                        assert_eq!(v.log.0[v.id].load(Ordering::Relaxed), 0);
                        taken += 1;
                        backoff.reset();
                    }
                    None if c.is_abandoned() => break,
                    None => backoff.snooze(),
                }
            }
            drop(c);
            let (created, p) = producer.join().unwrap();
            drop(p);
            log.assert_each_dropped_once(created, &format!("round {round}, capacity {cap}"));
        }
    });
}

/// A panic in `pop_batch`'s callback, caught, then both ends dropped: the values handed out
/// before the panic (and the one the panicking callback owned) must not be dropped again by
/// the ring, and the values still queued must be dropped once.
#[test]
fn a_panicking_pop_batch_callback_drops_each_value_once() {
    let log = DropLog::new(6);
    let (mut p, mut c) = SpscQueue::<Tracked>::with_capacity(8);
    for id in 0..6 {
        assert!(p.push(Tracked { id, log }).is_ok());
    }
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        c.pop_batch(4, |v| {
            if v.id == 2 {
                panic!("callback fails on value 2");
            }
        });
    }));
    panic::set_hook(hook);
    assert!(r.is_err());
    drop(c);
    drop(p);
    log.assert_each_dropped_once(6, "after a panicking pop_batch callback");
}

/// A panic in `push_with`'s `make`, caught, then both ends dropped: the values made before the
/// panic are in slots; they must be dropped once, not leaked and not twice.
#[test]
fn a_panicking_push_with_maker_drops_each_value_once() {
    let log = DropLog::new(4);
    let (mut p, c) = SpscQueue::<Tracked>::with_capacity(8);
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let l2 = log;
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        p.push_with(4, |i| {
            if i == 3 {
                panic!("maker fails on the fourth value");
            }
            Tracked { id: i, log: l2 }
        });
    }));
    panic::set_hook(hook);
    assert!(r.is_err());
    drop(p);
    drop(c);
    log.assert_each_dropped_once(3, "after a panicking push_with maker");
}

// ---------------------------------------------------------------------------------------------
// Memory-ordering bug classes (messaging notes, checklist item 7)
// ---------------------------------------------------------------------------------------------

/// Eight words, each derived from the sequence number, written non-atomically into the slot.
type Payload = [u64; 8];

fn payload(seq: u64) -> Payload {
    let mut w = [0u64; 8];
    for (j, x) in w.iter_mut().enumerate() {
        *x = seq
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(j as u32 * 8)
            ^ j as u64;
    }
    w
}

/// Checklist: "Release store of the cursor after slot writes; Acquire when reading the
/// cursor". A consumer that read a slot the producer was still writing would see a payload
/// mixing two sequence numbers (or an old and a new half). 2 M eight-word payloads through
/// rings of 2 and 4 slots, through both push paths and both pop paths.
#[test]
fn multi_word_payloads_are_never_torn() {
    with_timeout("torn_payload", 60, || {
        for cap in [2usize, 4] {
            let n = 1_000_000u64;
            let (mut p, mut c) = SpscQueue::<Payload>::with_capacity(cap);
            let producer = thread::spawn(move || {
                let mut next = 0u64;
                let mut rng = Rng::new(cap as u64);
                let mut backoff = Backoff::default();
                while next < n {
                    let pushed = if rng.below(2) == 0 {
                        usize::from(p.push(payload(next)).is_ok())
                    } else {
                        let base = next;
                        let k = (1 + rng.below(cap as u64 + 1) as usize).min((n - next) as usize);
                        p.push_with(k, |i| payload(base + i as u64))
                    };
                    next += pushed as u64;
                    if pushed == 0 {
                        backoff.snooze();
                    } else {
                        backoff.reset();
                    }
                }
            });
            let mut expect = 0u64;
            let mut rng = Rng::new(!(cap as u64));
            let mut backoff = Backoff::default();
            while expect < n {
                let got = if rng.below(2) == 0 {
                    match c.pop() {
                        Some(v) => {
                            assert_eq!(v, payload(expect), "torn payload at {expect}, cap {cap}");
                            expect += 1;
                            1
                        }
                        None => 0,
                    }
                } else {
                    c.pop_batch(cap, |v| {
                        assert_eq!(v, payload(expect), "torn payload at {expect}, cap {cap}");
                        expect += 1;
                    })
                };
                if got == 0 {
                    backoff.snooze();
                } else {
                    backoff.reset();
                }
            }
            producer.join().unwrap();
        }
    });
}

/// Checklist: "Release store of the consumer sequence after slot reads". `peek` lends the
/// consumer a reference into the slot; if the head moved before the read ended, the producer
/// (retrying on a full 2-slot ring all the time) would overwrite the words while they are being
/// read. The consumer reads them slowly, twice, then pops and compares.
#[test]
fn a_peeked_slot_is_not_overwritten_while_read() {
    with_timeout("peek_overwrite", 60, || {
        let n = 200_000u64;
        let (mut p, mut c) = SpscQueue::<Payload>::with_capacity(2);
        let producer = thread::spawn(move || {
            for i in 0..n {
                push_blocking(&mut p, payload(i));
            }
        });
        let mut backoff = Backoff::default();
        for i in 0..n {
            let want = payload(i);
            loop {
                if let Some(v) = c.peek() {
                    for _pass in 0..2 {
                        for (j, w) in v.iter().enumerate() {
                            // Slow reader: give the producer time to (wrongly) overwrite.
                            spin_loop();
                            assert_eq!(
                                std::hint::black_box(*w),
                                want[j],
                                "peeked slot changed under the reader at {i}, word {j}"
                            );
                        }
                    }
                    break;
                }
                backoff.snooze();
            }
            backoff.reset();
            assert_eq!(c.pop(), Some(want));
        }
        producer.join().unwrap();
    });
}

/// Checklist: "recompute the horizon from authoritative values, never accumulate" (the
/// disruptor crate's `+=` batch-publish bug). A producer hammering `push_batch` and
/// `push_with` with batches larger than the ring against a consumer that stalls at random:
/// an overrun would overwrite unread values (a gap in the sequence, a value never dropped)
/// and show as more than `capacity` values queued.
#[test]
fn the_producer_never_overruns_a_slow_consumer() {
    with_timeout("overrun", 60, || {
        let n = 400_000usize;
        let cap = 4usize;
        let log = DropLog::new(n);
        let (mut p, mut c) = SpscQueue::<Tracked>::with_capacity(cap);
        let plog = log;
        let producer = thread::spawn(move || {
            let mut rng = Rng::new(0x0BE5);
            let mut next = 0usize;
            let mut pending = Vec::new();
            let mut backoff = Backoff::default();
            while next < n || !pending.is_empty() {
                let pushed = if !pending.is_empty() {
                    p.push_batch(&mut pending)
                } else if rng.below(2) == 0 {
                    let k = (1 + rng.below(3 * cap as u64) as usize).min(n - next);
                    pending.extend((next..next + k).map(|id| Tracked { id, log: plog }));
                    next += k;
                    p.push_batch(&mut pending)
                } else {
                    let k = (1 + rng.below(3 * cap as u64) as usize).min(n - next);
                    let base = next;
                    let pushed = p.push_with(k, |i| Tracked {
                        id: base + i,
                        log: plog,
                    });
                    next += pushed;
                    pushed
                };
                assert!(
                    p.len() <= cap,
                    "producer sees {} queued in {cap} slots",
                    p.len()
                );
                if pushed == 0 {
                    backoff.snooze();
                } else {
                    backoff.reset();
                }
            }
        });
        let mut rng = Rng::new(0x51_0E);
        let mut expect = 0usize;
        let mut backoff = Backoff::default();
        while expect < n {
            if rng.below(64) == 0 {
                // Stall: the producer fills the ring and keeps retrying.
                for _ in 0..rng.below(2_000) {
                    spin_loop();
                }
            }
            let queued = c.len();
            assert!(
                queued <= cap,
                "consumer sees {queued} queued in {cap} slots"
            );
            let got = c.pop_batch(1 + rng.below(cap as u64) as usize, |v| {
                assert_eq!(
                    v.id, expect,
                    "gap or repeat: the producer overran the consumer"
                );
                expect += 1;
            });
            if got == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
        producer.join().unwrap();
        drop(c);
        log.assert_each_dropped_once(n, "overrun test");
    });
}

/// Checklist: "no synchronization via `Arc::strong_count`" (rtrb issue #114). A consumer that
/// finds the ring empty and the producer gone must, on its final drain, see every value
/// pushed before the drop (the abandon flag is Release-stored after the last tail store and
/// Acquire-loaded). Thousands of short lives with a random number of values and heap payloads.
#[test]
fn abandonment_makes_every_earlier_push_visible() {
    with_timeout("abandon", 60, || {
        let mut rng = Rng::new(0xAB);
        for round in 0..3_000u64 {
            let cap = [2usize, 4][(round % 2) as usize];
            let n = rng.below(3 * cap as u64 + 1);
            let (mut p, mut c) = SpscQueue::<Box<[u64; 2]>>::with_capacity(cap);
            let producer = thread::spawn(move || {
                for i in 0..n {
                    push_blocking(&mut p, Box::new([i, !i]));
                }
                // `p` is dropped here: the last thing this thread does.
            });
            let mut got = 0u64;
            let mut backoff = Backoff::default();
            loop {
                if let Some(v) = c.pop() {
                    assert_eq!(*v, [got, !got]);
                    got += 1;
                    backoff.reset();
                } else if c.is_abandoned() {
                    while let Some(v) = c.pop() {
                        assert_eq!(*v, [got, !got]);
                        got += 1;
                    }
                    break;
                } else {
                    backoff.snooze();
                }
            }
            producer.join().unwrap();
            assert_eq!(
                got, n,
                "round {round}: values pushed before the drop went missing"
            );
        }
        // And the other direction: the producer sees the consumer go.
        let (p, c) = SpscQueue::<u64>::with_capacity(2);
        thread::spawn(move || drop(c)).join().unwrap();
        assert!(p.is_abandoned());
    });
}

// ---------------------------------------------------------------------------------------------
// Blocking: no lost wake-ups
// ---------------------------------------------------------------------------------------------

/// Waits on `wait` until `c` yields a value.
fn pop_waiting<T: Send>(c: &mut Consumer<T>, wait: &Blocking) -> T {
    let mut got = None;
    wait.wait_until(&mut || {
        got = c.pop();
        got.is_some()
    });
    match got {
        Some(v) => v,
        None => unreachable!("wait_until returned before ready() was true"),
    }
}

/// A ping-pong over two 2-slot rings, each direction with its own `Blocking`: 30 k round trips
/// with nothing spent spinning (every wait that finds nothing parks), then 100 k with the
/// default budgets (spin, yield, park). Each round trip waits on the other thread's signal, so
/// a single lost wake-up hangs it and the watchdog fails the test.
#[test]
fn blocking_ping_pong_never_loses_a_wake_up() {
    for (label, spins, yields, rounds) in [
        ("park at once", 0u32, 0u32, 30_000u64),
        ("default budgets", 200, 20, 100_000),
    ] {
        with_timeout(label, 60, move || {
            let ping_wait = Arc::new(Blocking::new(spins, yields));
            let pong_wait = Arc::new(Blocking::new(spins, yields));
            let (mut ping_tx, mut ping_rx) = SpscQueue::<u64>::with_capacity(2);
            let (mut pong_tx, mut pong_rx) = SpscQueue::<u64>::with_capacity(2);
            let (pw, qw) = (ping_wait.clone(), pong_wait.clone());
            let echo = thread::spawn(move || {
                for i in 0..rounds {
                    let v = pop_waiting(&mut ping_rx, &pw);
                    assert_eq!(v, i);
                    push_blocking(&mut pong_tx, v + 1);
                    qw.signal();
                }
            });
            for i in 0..rounds {
                push_blocking(&mut ping_tx, i);
                ping_wait.signal();
                assert_eq!(pop_waiting(&mut pong_rx, &pong_wait), i + 1);
            }
            echo.join().unwrap();
            assert_eq!(ping_wait.parked(), 0);
            assert_eq!(pong_wait.parked(), 0);
        });
    }
}

/// A streaming producer and consumer on a 4-slot ring that both park: the consumer waits on
/// "not empty", the producer on "not full", each signalled by the other after its Release
/// store. Both sides block constantly; 300 k values arrive once and in order.
#[test]
fn blocking_producer_and_consumer_stream_without_hanging() {
    with_timeout("blocking_stream", 60, || {
        let n = 300_000u64;
        let not_empty = Arc::new(Blocking::new(0, 0));
        let not_full = Arc::new(Blocking::new(0, 0));
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(4);
        let (ne, nf) = (not_empty.clone(), not_full.clone());
        let producer = thread::spawn(move || {
            let mut rng = Rng::new(0x57);
            let mut next = 0u64;
            while next < n {
                let k = (1 + rng.below(6) as usize).min((n - next) as usize);
                let base = next;
                let mut pushed = 0;
                nf.wait_until(&mut || {
                    pushed = p.push_with(k, |i| base + i as u64);
                    pushed > 0
                });
                next += pushed as u64;
                ne.signal();
            }
        });
        let mut expect = 0u64;
        let mut rng = Rng::new(0x58);
        while expect < n {
            let max = 1 + rng.below(5) as usize;
            let mut taken = 0;
            not_empty.wait_until(&mut || {
                taken = c.pop_batch(max, |v| {
                    assert_eq!(v, expect);
                    expect += 1;
                });
                taken > 0
            });
            not_full.signal();
        }
        producer.join().unwrap();
        assert_eq!(not_empty.parked(), 0);
        assert_eq!(not_full.parked(), 0);
    });
}

/// Several waiters on one `Blocking` (the strategy is shared by a consumer group): a single
/// `signal()` after each step must wake whichever waiter the step is for. 4 threads pass a
/// token round-robin 40 k times through one strategy and one atomic.
#[test]
fn one_blocking_shared_by_many_waiters() {
    with_timeout("shared_blocking", 60, || {
        let threads = 4u64;
        let steps = 40_000u64;
        let wait = Arc::new(Blocking::new(0, 0));
        let token = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|me| {
                let (wait, token, finished) = (wait.clone(), token.clone(), finished.clone());
                thread::spawn(move || {
                    let mut step = me;
                    while step < steps {
                        wait.wait_until(&mut || token.load(Ordering::Acquire) == step);
                        token.store(step + 1, Ordering::Release);
                        wait.signal();
                        step += threads;
                    }
                    finished.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(token.load(Ordering::Relaxed), steps);
        assert_eq!(finished.load(Ordering::Relaxed), threads as usize);
        assert_eq!(wait.parked(), 0);
    });
}

/// `wait_until` returns at once, without parking, when the condition already holds, and a
/// `signal()` with nobody waiting is harmless.
#[test]
fn blocking_ready_at_once_and_signal_without_waiters() {
    let wait = Blocking::new(0, 0);
    let flag = AtomicBool::new(true);
    for _ in 0..1_000 {
        wait.signal();
        wait.wait_until(&mut || flag.load(Ordering::Acquire));
    }
    assert_eq!(wait.parked(), 0);
}
