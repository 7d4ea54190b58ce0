//! Loom models of `sync`'s SPSC ring and of the `Blocking` wait handshake.
//!
//! Under the crate feature `loom`, `laminar_core::sync` compiles against loom's atomics,
//! cells, mutex and condition variable, so each `loom::model` below runs every interleaving
//! (and every value a load may return under the C11 model, within loom's limits) of a small
//! configuration: a capacity-2 ring pushed and popped across two threads, through both the
//! single-item and the batch paths, with wrap-around; and a waiter that parks in
//! `Blocking::new(0, 0)` while another thread publishes with a Release store and calls
//! `signal()`. Loom reports a data race on a slot (the consumer reading a slot the producer is
//! writing, or the producer overwriting one still being read), a lost wake-up (as a deadlock),
//! a double drop or a leak (as a failed count).
//!
//! Run: `cargo test -p laminar-core --profile ci --features loom --test loom_sync`.
//! The preemption bound defaults to 3 (loom's documented sweet spot); `LOOM_MAX_PREEMPTIONS`
//! overrides it.
#![cfg(feature = "loom")]

use laminar_core::sync::wait::{Blocking, WaitStrategy};
use laminar_core::sync::SpscQueue;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Runs `f` under loom with a preemption bound (3 unless `LOOM_MAX_PREEMPTIONS` says).
fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Pushes `v`, yielding to the model while the ring is full.
fn push_spin<T: Send>(p: &mut laminar_core::sync::Producer<T>, mut v: T) {
    loop {
        match p.push(v) {
            Ok(()) => return,
            Err(back) => {
                v = back;
                thread::yield_now();
            }
        }
    }
}

/// Pops one value, yielding to the model while the ring is empty.
fn pop_spin<T: Send>(c: &mut laminar_core::sync::Consumer<T>) -> T {
    loop {
        if let Some(v) = c.pop() {
            return v;
        }
        thread::yield_now();
    }
}

/// Five single-item pushes through two slots: the third and later pushes wait for the
/// consumer to free a slot (positions wrap twice), and every value arrives once, in order.
#[test]
fn spsc_single_items_wrap_around() {
    model(|| {
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(2);
        let producer = thread::spawn(move || {
            for i in 0..5 {
                push_spin(&mut p, i);
            }
        });
        for i in 0..5 {
            assert_eq!(pop_spin(&mut c), i);
        }
        producer.join().unwrap();
    });
}

/// A payload of several words moved through a full ring: a consumer that read a slot the
/// producer was still writing, or a producer that overwrote a slot still being read, is a race
/// on the slot's cell that loom reports (and would show as a torn value here).
#[test]
fn spsc_multi_word_payload_is_never_torn() {
    model(|| {
        let (mut p, mut c) = SpscQueue::<[u64; 4]>::with_capacity(2);
        let producer = thread::spawn(move || {
            for i in 1..=3u64 {
                push_spin(&mut p, [i, i * 10, i * 100, i * 1000]);
            }
        });
        for i in 1..=3u64 {
            let v = pop_spin(&mut c);
            assert_eq!(v, [i, i * 10, i * 100, i * 1000]);
        }
        producer.join().unwrap();
    });
}

/// `peek` hands out a reference into the slot; the producer must not overwrite it while the
/// reference lives, even with the ring full and the producer retrying.
#[test]
fn spsc_peek_is_not_overwritten_while_borrowed() {
    model(|| {
        let (mut p, mut c) = SpscQueue::<[u64; 2]>::with_capacity(2);
        let producer = thread::spawn(move || {
            for i in 1..=3u64 {
                push_spin(&mut p, [i, !i]);
            }
        });
        for i in 1..=3u64 {
            loop {
                if let Some(v) = c.peek() {
                    assert_eq!(*v, [i, !i]);
                    break;
                }
                thread::yield_now();
            }
            assert_eq!(c.pop(), Some([i, !i]));
        }
        producer.join().unwrap();
    });
}

/// The batch paths: `push_batch` of more values than fit (the rest stay queued in the
/// caller's `Vec`), then `push_with`, against a consumer draining with `pop_batch`; one
/// Release store per batch must still cover every slot of the batch.
#[test]
fn spsc_batch_paths_wrap_around() {
    model(|| {
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(2);
        let producer = thread::spawn(move || {
            let mut pending = vec![0u64, 1, 2];
            while !pending.is_empty() {
                if p.push_batch(&mut pending) == 0 {
                    thread::yield_now();
                }
            }
            let mut next = 3u64;
            while next < 5 {
                let base = next;
                let pushed = p.push_with(5 - next as usize, |i| base + i as u64);
                next += pushed as u64;
                if pushed == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 5 {
            if c.pop_batch(8, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        producer.join().unwrap();
    });
}

/// Single-item pushes against batch pops and batch pushes against single-item pops, so each
/// kind of Release store is paired with each kind of Acquire reload.
#[test]
fn spsc_mixed_single_and_batch() {
    model(|| {
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(2);
        let producer = thread::spawn(move || {
            push_spin(&mut p, 0);
            let mut pending = vec![1u64, 2];
            while !pending.is_empty() {
                if p.push_batch(&mut pending) == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        got.push(pop_spin(&mut c));
        while got.len() < 3 {
            if c.pop_batch(2, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, vec![0, 1, 2]);
        producer.join().unwrap();
    });
}

/// Counts drops of the values it wraps.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Values still queued when both ends are gone are dropped exactly once, whichever thread
/// drops its end last; values taken are dropped by the taker only.
#[test]
fn spsc_values_left_in_the_ring_are_dropped_once() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut p, mut c) = SpscQueue::<Counted>::with_capacity(2);
        let d = drops.clone();
        let producer = thread::spawn(move || {
            for _ in 0..2 {
                push_spin(&mut p, Counted(d.clone()));
            }
            // `p` is dropped here, possibly before or after the consumer's end.
        });
        drop(pop_spin(&mut c));
        drop(c);
        producer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

/// A consumer that sees `is_abandoned()` must also see every value pushed before the
/// producer was dropped (the rtrb bug: abandonment inferred from `Arc::strong_count`, which
/// does not synchronize).
#[test]
fn spsc_abandoned_implies_everything_pushed_is_visible() {
    model(|| {
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(2);
        let producer = thread::spawn(move || {
            push_spin(&mut p, 7);
            push_spin(&mut p, 8);
        });
        let mut got = Vec::new();
        loop {
            if let Some(v) = c.pop() {
                got.push(v);
            } else if c.is_abandoned() {
                while let Some(v) = c.pop() {
                    got.push(v);
                }
                break;
            } else {
                thread::yield_now();
            }
        }
        assert_eq!(got, vec![7, 8]);
        producer.join().unwrap();
    });
}

/// The wake-up handshake: a waiter that parks at once (`Blocking::new(0, 0)`) and a signaller
/// that Release-stores the flag and calls `signal()`. A lost wake-up leaves the waiter parked
/// forever, which loom reports as a deadlock.
#[test]
fn blocking_wait_is_woken_by_signal() {
    model(|| {
        let wait = Arc::new(Blocking::new(0, 0));
        let flag = Arc::new(AtomicBool::new(false));
        let (w2, f2) = (wait.clone(), flag.clone());
        let signaller = thread::spawn(move || {
            f2.store(true, Ordering::Release);
            w2.signal();
        });
        wait.wait_until(&mut || flag.load(Ordering::Acquire));
        assert!(flag.load(Ordering::Acquire));
        signaller.join().unwrap();
        assert_eq!(wait.parked(), 0);
    });
}

/// Both directions through one `Blocking`: the first thread hands a turn over and waits for
/// it to come back while the second waits for it and hands it back (a one-round ping-pong in
/// which both threads may park on the same condition variable).
#[test]
fn blocking_ping_pong_one_round() {
    model(|| {
        let wait = Arc::new(Blocking::new(0, 0));
        let turn = Arc::new(AtomicUsize::new(0));
        let (w2, t2) = (wait.clone(), turn.clone());
        let other = thread::spawn(move || {
            w2.wait_until(&mut || t2.load(Ordering::Acquire) == 1);
            t2.store(2, Ordering::Release);
            w2.signal();
        });
        turn.store(1, Ordering::Release);
        wait.signal();
        wait.wait_until(&mut || turn.load(Ordering::Acquire) == 2);
        other.join().unwrap();
        assert_eq!(wait.parked(), 0);
    });
}

/// The ring paired with `Blocking`, as the runtime uses it: the consumer parks until a value
/// is there, the producer pushes and signals.
#[test]
fn blocking_consumer_of_a_ring() {
    model(|| {
        let wait = Arc::new(Blocking::new(0, 0));
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(2);
        let w2 = wait.clone();
        let producer = thread::spawn(move || {
            push_spin(&mut p, 42);
            w2.signal();
        });
        let mut got = None;
        wait.wait_until(&mut || {
            got = c.pop();
            got.is_some()
        });
        assert_eq!(got, Some(42));
        producer.join().unwrap();
    });
}

/// Both ends of a 2-slot ring wait in `Blocking`: the consumer on "not empty", the producer on
/// "not full", each signalled by the other after its Release store. Three values force the
/// producer to wait for a slot at least once in some interleavings.
#[test]
fn blocking_producer_and_consumer_of_a_ring() {
    model(|| {
        let not_empty = Arc::new(Blocking::new(0, 0));
        let not_full = Arc::new(Blocking::new(0, 0));
        let (mut p, mut c) = SpscQueue::<u64>::with_capacity(2);
        let (ne, nf) = (not_empty.clone(), not_full.clone());
        let producer = thread::spawn(move || {
            for i in 0..3u64 {
                let mut v = Some(i);
                nf.wait_until(&mut || match v.take() {
                    Some(x) => match p.push(x) {
                        Ok(()) => true,
                        Err(back) => {
                            v = Some(back);
                            false
                        }
                    },
                    None => true,
                });
                ne.signal();
            }
        });
        for i in 0..3u64 {
            let mut got = None;
            not_empty.wait_until(&mut || {
                got = c.pop();
                got.is_some()
            });
            assert_eq!(got, Some(i));
            not_full.signal();
        }
        producer.join().unwrap();
    });
}
