//! loom models of the disruptor's sequencers and barriers. Run with
//! `cargo test -p laminar-core --profile ci --features loom --test loom_disruptor`.
//!
//! Models: multi-producer `fetch_add` and compare-exchange claims with availability publish
//! (2-slot and 1-slot rings, 2 producers), a multi-producer batch claim across the wrap, the
//! single-producer wrap and gating (spinning and `Blocking`), a two-stage pipeline whose second
//! barrier waits on the first stage (`Blocking`, so a lost wake-up deadlocks the model), and the
//! shutdown alert of a parked consumer.
//!
//! Each model is a tiny ring (1 or 2 slots) with a few events, so claims wrap; loom explores
//! the interleavings (up to a preemption bound) and the C11 reorderings of the atomics, and
//! its `UnsafeCell` tracking fails a model if a producer's slot write and a consumer's slot
//! read are not ordered by the sequences (a missing Release/Acquire pair, a consumer reading
//! an unpublished slot, a producer overwriting a slot still being read). The managed threads of
//! the builder are `std` threads and are not modelled: the models drive sequencers, the ring
//! and barriers directly with `loom::thread`, the way the managed consumer loop does.
#![cfg(feature = "loom")]

use loom::sync::Arc;
use loom::thread;

use laminar_core::sync::disruptor::{
    Alerted, ClaimError, MultiProducerSequencer, RingBuffer, Sequence, SingleProducerSequencer,
};
use laminar_core::sync::wait::{Blocking, BusySpinWithHint, WaitStrategy};

fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = runs.clone();
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(move || {
        r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "explored {} executions",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// The consumer side, as the managed loop does it: wait for the next sequence, read the whole
/// available batch, then release it with one store of our sequence and a signal. Returns the
/// events in the order read.
fn consume<W: WaitStrategy>(
    ring: &RingBuffer<u64>,
    barrier: &laminar_core::sync::disruptor::SequenceBarrier<W>,
    sequence: &Sequence,
    wait: &W,
    count: i64,
) -> Vec<u64> {
    let mut out = Vec::new();
    let mut next = 0;
    while next < count {
        let available = barrier.wait_for(next).expect("not alerted");
        for s in next..=available {
            // SAFETY: `s` was returned by our barrier and is above our own sequence, which we
            // store only after the batch; producers are gated on that sequence.
            out.push(unsafe { ring.with_slot(s, |e| *e) });
        }
        sequence.set(available);
        wait.signal();
        next = available + 1;
    }
    out
}

/// Checks that `got` holds every value of every producer once, each producer's in order.
/// Producer `p` publishes `p * 10 + i` for `i` in `0..per`.
fn assert_delivered(got: &[u64], producers: u64, per: u64) {
    assert_eq!(got.len() as u64, producers * per, "{got:?}");
    for p in 0..producers {
        let mine: Vec<u64> = got.iter().copied().filter(|v| v / 10 == p).collect();
        let want: Vec<u64> = (0..per).map(|i| p * 10 + i).collect();
        assert_eq!(mine, want, "{got:?}");
    }
}

/// Writes `value` into the claimed slot `seq`.
fn write(ring: &RingBuffer<u64>, seq: i64, value: u64) {
    // SAFETY: the caller holds an unpublished claim on `seq` from a sequencer gated on every
    // consumer, so no one else accesses the slot.
    unsafe { ring.with_slot_mut(seq, |e| *e = value) };
}

/// Two producers claim with `fetch_add` (`next`) and with the compare-exchange loop
/// (`try_next`) on a 2-slot ring; one consumer. The availability flags must expose each event
/// exactly once, after its write, across the wrap (round 0 then round 1 of each slot).
#[test]
fn multi_producer_claim_and_availability_publish() {
    model(2, || {
        let wait = Arc::new(Blocking::new(0, 0));
        let ring = Arc::new(RingBuffer::new(2, || u64::MAX).unwrap());
        let consumer = Arc::new(Sequence::new());
        let seq = MultiProducerSequencer::new(2, wait.clone(), vec![consumer.clone()]).unwrap();
        let barrier = seq.new_barrier(vec![]);

        let (mut p0, r0) = (seq.clone(), ring.clone());
        let t0 = thread::spawn(move || {
            for i in 0..2 {
                let claim = p0.next(1).unwrap();
                write(&r0, claim.lo(), i);
                p0.publish(claim);
            }
        });
        let (mut p1, r1, w1) = (seq, ring.clone(), wait.clone());
        let t1 = thread::spawn(move || {
            for i in 0..2 {
                // Retry `try_next` until it claims, parked between attempts (the consumer's
                // signal after each batch wakes us); a spin here would blow loom's budget.
                let mut claim = None;
                w1.wait_until(&mut || match p1.try_next(1) {
                    Ok(c) => {
                        claim = Some(c);
                        true
                    }
                    Err(ClaimError::Full) => false,
                    Err(e) => panic!("{e}"),
                });
                let Some(claim) = claim else { unreachable!() };
                write(&r1, claim.lo(), 10 + i);
                p1.publish(claim);
            }
        });
        let got = consume(&ring, &barrier, &consumer, &*wait, 4);
        t0.join().unwrap();
        t1.join().unwrap();
        assert_delivered(&got, 2, 2);
    });
}

/// The tightest wrap: a 1-slot ring, so every claim after the first reuses the slot the
/// consumer may still be reading, one producer claiming with `fetch_add`, the other with the
/// compare-exchange loop. A deeper preemption bound than the 2-slot model.
#[test]
fn multi_producer_one_slot_ring() {
    model(3, || {
        let wait = Arc::new(Blocking::new(0, 0));
        let ring = Arc::new(RingBuffer::new(1, || u64::MAX).unwrap());
        let consumer = Arc::new(Sequence::new());
        let seq = MultiProducerSequencer::new(1, wait.clone(), vec![consumer.clone()]).unwrap();
        let barrier = seq.new_barrier(vec![]);

        let (mut p0, r0) = (seq.clone(), ring.clone());
        let t0 = thread::spawn(move || {
            let claim = p0.next(1).unwrap();
            write(&r0, claim.lo(), 0);
            p0.publish(claim);
        });
        let (mut p1, r1, w1) = (seq, ring.clone(), wait.clone());
        let t1 = thread::spawn(move || {
            let mut claim = None;
            w1.wait_until(&mut || {
                claim = p1.try_next(1).ok();
                claim.is_some()
            });
            let Some(claim) = claim else { unreachable!() };
            write(&r1, claim.lo(), 10);
            p1.publish(claim);
        });
        let got = consume(&ring, &barrier, &consumer, &*wait, 2);
        t0.join().unwrap();
        t1.join().unwrap();
        assert_delivered(&got, 2, 1);
    });
}

/// A producer claims the whole 2-slot ring at once while another claims single slots: a range
/// publish sets several flags, and consumers must see only the contiguous published prefix.
#[test]
fn multi_producer_batch_claim_wraps() {
    model(2, || {
        let wait = Arc::new(Blocking::new(0, 0));
        let ring = Arc::new(RingBuffer::new(2, || u64::MAX).unwrap());
        let consumer = Arc::new(Sequence::new());
        let seq = MultiProducerSequencer::new(2, wait.clone(), vec![consumer.clone()]).unwrap();
        let barrier = seq.new_barrier(vec![]);

        let (mut p0, r0) = (seq.clone(), ring.clone());
        let t0 = thread::spawn(move || {
            let claim = p0.next(2).unwrap();
            for (i, s) in claim.sequences().enumerate() {
                write(&r0, s, i as u64);
            }
            p0.publish(claim);
        });
        let (mut p1, r1) = (seq, ring.clone());
        let t1 = thread::spawn(move || {
            let claim = p1.next(1).unwrap();
            write(&r1, claim.lo(), 10);
            p1.publish(claim);
        });
        let got = consume(&ring, &barrier, &consumer, &*wait, 3);
        t0.join().unwrap();
        t1.join().unwrap();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 10], "{got:?}");
        let pos = |v| got.iter().position(|&x| x == v);
        assert!(
            pos(0) < pos(1),
            "the batch's events keep their order: {got:?}"
        );
    });
}

/// The single producer on a 2-slot ring: single and batch claims, each wrapping onto a slot
/// the consumer may still be reading. The cached gate must be refreshed from the consumer's
/// sequence (Acquire) before a slot is reused.
fn single_producer_wrap<W: WaitStrategy + 'static>(wait: fn() -> W) {
    model(4, move || {
        let wait = Arc::new(wait());
        let ring = Arc::new(RingBuffer::new(2, || u64::MAX).unwrap());
        let consumer = Arc::new(Sequence::new());
        let mut seq =
            SingleProducerSequencer::new(2, wait.clone(), vec![consumer.clone()]).unwrap();
        let barrier = seq.new_barrier(vec![]);
        let r0 = ring.clone();
        let producer = thread::spawn(move || {
            let mut v = 0;
            for n in [1, 2, 1, 2] {
                let claim = seq.next(n).unwrap();
                for s in claim.sequences() {
                    write(&r0, s, v);
                    v += 1;
                }
                seq.publish(claim);
            }
        });
        let got = consume(&ring, &barrier, &consumer, &*wait, 6);
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    });
}

#[test]
fn single_producer_wrap_and_gating_spinning() {
    single_producer_wrap(|| BusySpinWithHint);
}

#[test]
fn single_producer_wrap_and_gating_blocking() {
    single_producer_wrap(|| Blocking::new(0, 0));
}

/// A pipeline on a 2-slot ring with the `Blocking` strategy: stage A mutates each event in
/// place (exclusive), stage B (barrier on A's sequence) must see A's write; the producer is
/// gated on B. Everyone parks and is woken by signals, so a lost wake-up deadlocks the model.
#[test]
fn barrier_waits_on_its_dependency_with_blocking() {
    model(2, || {
        let wait = Arc::new(Blocking::new(0, 0));
        let ring = Arc::new(RingBuffer::new(2, || u64::MAX).unwrap());
        let (a_seq, b_seq) = (Arc::new(Sequence::new()), Arc::new(Sequence::new()));
        let mut seq = SingleProducerSequencer::new(2, wait.clone(), vec![b_seq.clone()]).unwrap();
        let a_barrier = seq.new_barrier(vec![]);
        let b_barrier = seq.new_barrier(vec![a_seq.clone()]);

        let r0 = ring.clone();
        let producer = thread::spawn(move || {
            for v in 0..3 {
                let claim = seq.next(1).unwrap();
                write(&r0, claim.lo(), v);
                seq.publish(claim);
            }
        });
        let (ra, wa, a2) = (ring.clone(), wait.clone(), a_seq.clone());
        let stage_a = thread::spawn(move || {
            let mut next = 0;
            while next < 3 {
                let available = a_barrier.wait_for(next).unwrap();
                for s in next..=available {
                    // SAFETY: A is the only consumer of its stage; `s` is published and not
                    // yet released by A, and B waits for A's sequence.
                    unsafe { ra.with_slot_mut(s, |e| *e += 100) };
                }
                a2.set(available);
                wa.signal();
                next = available + 1;
            }
        });
        let got = consume(&ring, &b_barrier, &b_seq, &*wait, 3);
        producer.join().unwrap();
        stage_a.join().unwrap();
        assert_eq!(got, vec![100, 101, 102]);
    });
}

/// Shutdown's handshake: a consumer parked on an empty ring (`Blocking`) must return
/// `Alerted` once the barrier is alerted, and must still get an event published before the
/// alert.
#[test]
fn alert_wakes_a_parked_consumer() {
    model(3, || {
        let wait = Arc::new(Blocking::new(0, 0));
        let ring = Arc::new(RingBuffer::new(2, || 0u64).unwrap());
        let consumer = Arc::new(Sequence::new());
        let mut seq =
            SingleProducerSequencer::new(2, wait.clone(), vec![consumer.clone()]).unwrap();
        let barrier = Arc::new(seq.new_barrier(vec![]));
        let (b2, r2, c2, w2) = (
            barrier.clone(),
            ring.clone(),
            consumer.clone(),
            wait.clone(),
        );
        let t = thread::spawn(move || {
            let mut next = 0;
            let mut got = Vec::new();
            loop {
                match b2.wait_for(next) {
                    Ok(available) => {
                        for s in next..=available {
                            // SAFETY: as in `consume`.
                            got.push(unsafe { r2.with_slot(s, |e| *e) });
                        }
                        c2.set(available);
                        w2.signal();
                        next = available + 1;
                    }
                    Err(Alerted) => return got,
                }
            }
        });
        let claim = seq.next(1).unwrap();
        write(&ring, claim.lo(), 7);
        seq.publish(claim);
        // Shutdown: wait until the consumer has the event, then alert.
        wait.wait_until(&mut || consumer.get() >= 0);
        barrier.alert();
        assert_eq!(t.join().unwrap(), vec![7]);
    });
}
