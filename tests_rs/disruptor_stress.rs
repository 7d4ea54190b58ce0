//! Stress tests of `laminar_core::sync::disruptor`: many threads, millions of events, every
//! wait strategy. Each test checks that every published value reaches every handler exactly
//! once and, per producer, in order; that events mutated by an exclusive stage are seen
//! mutated by the stages after it; that `try_publish` reports a full ring; and that shutdown
//! drains everything published.
//!
//! Sized for the `ci` profile on 2 cores (a few million events in all, well under 20 s). Event
//! counts scale with `DISRUPTOR_STRESS_SCALE` (default 1) for longer runs on bigger machines.
//!
//! Compiled out under the `loom` feature: loom's atomics only work inside a loom model.
#![cfg(not(feature = "loom"))]

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use laminar_core::sync::disruptor::{
    ClaimError, Disruptor, ExceptionPolicy, HandlerResult, RingFull, ShutdownReport,
};
use laminar_core::sync::wait::{
    Blocking, BusySpin, BusySpinWithHint, Sleeping, WaitStrategy, Yielding,
};

fn scale(n: u64) -> u64 {
    let k = std::env::var("DISRUPTOR_STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    n * k
}

/// The event: who published it, its per-producer counter, and fields later stages fill in.
#[derive(Debug, Default, Clone, Copy)]
struct Msg {
    producer: u32,
    value: u64,
    doubled: u64,
    tagged: u64,
}

/// A handler that checks per-producer order and sums the values (`Err` on a gap, a repeat or
/// a stale field, so the shutdown report counts it).
fn in_order(producers: usize, sum: Arc<AtomicU64>) -> impl FnMut(&Msg, i64, bool) -> HandlerResult {
    let mut expected = vec![0u64; producers];
    let mut local = 0u64;
    move |m: &Msg, _seq: i64, end_of_batch: bool| {
        let p = m.producer as usize;
        let Some(next) = expected.get_mut(p) else {
            return Err(format!("unknown producer {p}").into());
        };
        if m.value != *next {
            return Err(format!("producer {p}: expected {next}, got {}", m.value).into());
        }
        *next += 1;
        local = local.wrapping_add(m.value);
        if end_of_batch {
            sum.fetch_add(local, Ordering::Relaxed);
            local = 0;
        }
        Ok(())
    }
}

fn triangle(n: u64) -> u64 {
    n * (n - 1) / 2
}

fn assert_clean(report: &ShutdownReport, published: u64) {
    assert_eq!(report.published, published);
    for h in &report.handlers {
        assert_eq!(h.first_failure, None, "{}", h.name);
        assert_eq!(h.failures + h.panics + h.skipped, 0, "{h:?}");
        assert_eq!(h.processed, published, "{}", h.name);
        assert_eq!(h.last_sequence, published as i64 - 1, "{}", h.name);
        assert!(h.batches >= 1 && h.batches <= published, "{h:?}");
    }
}

/// One producer, one consumer; per-item or 64-slot batch publishing.
fn sp_1p1c<W: WaitStrategy + 'static>(wait: W, n: u64, ring: usize, batch: bool) {
    let sum = Arc::new(AtomicU64::new(0));
    let mut p = Disruptor::builder(ring, Msg::default)
        .wait_strategy(wait)
        .handle_events_with(in_order(1, sum.clone()))
        .build_single_producer()
        .unwrap();
    if batch {
        let mut v = 0u64;
        while v < n {
            let k = (n - v).min(64).min(ring as u64);
            p.batch_publish(k as usize, |i, m| {
                m.producer = 0;
                m.value = v + i as u64;
            })
            .unwrap();
            v += k;
        }
    } else {
        for v in 0..n {
            p.publish(|m| {
                m.producer = 0;
                m.value = v;
            });
        }
    }
    let report = p.shutdown();
    assert_clean(&report, n);
    assert_eq!(sum.load(Ordering::Relaxed), triangle(n));
}

#[test]
fn sp_1p1c_every_wait_strategy() {
    // Spinning strategies get fewer events: on 2 cores shared with other tests a spinner can
    // hold the core its peer needs for a whole scheduler slice.
    sp_1p1c(BusySpin, scale(200_000), 1024, false);
    sp_1p1c(BusySpinWithHint, scale(300_000), 1024, true);
    sp_1p1c(Yielding::default(), scale(1_000_000), 1024, false);
    sp_1p1c(Sleeping::default(), scale(500_000), 4096, true);
    sp_1p1c(Blocking::default(), scale(1_000_000), 1024, false);
    sp_1p1c(Blocking::new(0, 0), scale(200_000), 64, false);
}

#[test]
fn sp_tiny_rings_wrap_constantly() {
    sp_1p1c(Yielding::default(), scale(200_000), 1, false);
    sp_1p1c(Blocking::new(0, 0), scale(100_000), 2, false);
    sp_1p1c(BusySpinWithHint, scale(200_000), 4, true);
}

/// `producers` threads, one consumer (or `consumers` parallel ones), mixing `publish`,
/// `batch_publish` and `try_publish`.
fn mp<W: WaitStrategy + 'static>(
    wait: W,
    producers: usize,
    consumers: usize,
    per_producer: u64,
    ring: usize,
) {
    let sums: Vec<Arc<AtomicU64>> = (0..consumers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut b = Disruptor::builder(ring, Msg::default).wait_strategy(wait);
    for s in &sums {
        b = b.handle_events_with(in_order(producers, s.clone()));
    }
    let p = b.build_multi_producer().unwrap();
    let fulls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..producers)
        .map(|k| {
            let mut p = p.clone();
            let fulls = fulls.clone();
            std::thread::Builder::new()
                .name(format!("mp-producer-{k}"))
                .spawn(move || {
                    let id = k as u32;
                    let mut v = 0u64;
                    while v < per_producer {
                        match v % 3 {
                            0 => {
                                p.publish(|m| {
                                    m.producer = id;
                                    m.value = v;
                                });
                                v += 1;
                            }
                            1 => {
                                let n = (per_producer - v).min(1 + v % 16).min(ring as u64);
                                p.batch_publish(n as usize, |i, m| {
                                    m.producer = id;
                                    m.value = v + i as u64;
                                })
                                .unwrap();
                                v += n;
                            }
                            _ => match p.try_publish(|m| {
                                m.producer = id;
                                m.value = v;
                            }) {
                                Ok(_) => v += 1,
                                Err(RingFull) => {
                                    fulls.fetch_add(1, Ordering::Relaxed);
                                    std::thread::yield_now();
                                }
                            },
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = producers as u64 * per_producer;
    let report = p.shutdown().expect("the last handle reports");
    assert_clean(&report, total);
    for s in &sums {
        assert_eq!(
            s.load(Ordering::Relaxed),
            producers as u64 * triangle(per_producer)
        );
    }
}

#[test]
fn mp_4p1c() {
    mp(Blocking::default(), 4, 1, scale(250_000), 1024);
    mp(Yielding::default(), 4, 1, scale(250_000), 256);
}

#[test]
fn mp_other_strategies_and_fan_out() {
    mp(BusySpinWithHint, 2, 1, scale(100_000), 1024);
    mp(Sleeping::default(), 3, 2, scale(100_000), 512);
    mp(Blocking::new(0, 0), 2, 2, scale(100_000), 4);
    // Threads can be oversubscribed 3x; pure spinning still has to finish.
    mp(BusySpin, 2, 1, scale(50_000), 256);
}

/// Three stages, each exclusive: 1 doubles the value, 2 tags it, 3 checks both and order.
/// Each stage sees the previous stage's writes (they travel through the consumer sequences).
fn pipeline<W: WaitStrategy + 'static>(wait: W, n: u64, producers: usize) {
    let sum = Arc::new(AtomicU64::new(0));
    let mut check = in_order(producers, sum.clone());
    let b = Disruptor::builder(1024, Msg::default)
        .wait_strategy(wait)
        .handle_events_mut(|m: &mut Msg, _, _| {
            m.doubled = m.value * 2;
            Ok(())
        })
        .then_mut(|m: &mut Msg, seq, _| {
            if m.doubled != m.value * 2 {
                return Err(format!("stage 2 saw a stale event at {seq}").into());
            }
            m.tagged = m.doubled + 1;
            Ok(())
        })
        .then(move |m: &Msg, seq, eob| {
            if m.doubled != m.value * 2 || m.tagged != m.doubled + 1 {
                return Err(format!("stage 3 saw a stale event at {seq}: {m:?}").into());
            }
            check(m, seq, eob)
        });
    let total = n * producers as u64;
    let report = if producers == 1 {
        let mut p = b.build_single_producer().unwrap();
        for v in 0..n {
            // Stale fields from the previous lap must be overwritten by the stages.
            p.publish(|m| {
                m.producer = 0;
                m.value = v;
            });
        }
        p.shutdown()
    } else {
        let p = b.build_multi_producer().unwrap();
        let threads: Vec<_> = (0..producers)
            .map(|k| {
                let mut p = p.clone();
                std::thread::spawn(move || {
                    let mut v = 0;
                    while v < n {
                        let c = (n - v).min(32);
                        p.batch_publish(c as usize, |i, m| {
                            m.producer = k as u32;
                            m.value = v + i as u64;
                        })
                        .unwrap();
                        v += c;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        p.shutdown().unwrap()
    };
    assert_clean(&report, total);
    assert_eq!(sum.load(Ordering::Relaxed), producers as u64 * triangle(n));
}

#[test]
fn three_stage_pipeline() {
    pipeline(Blocking::default(), scale(600_000), 1);
    pipeline(Yielding::default(), scale(200_000), 2);
}

/// A diamond: `a` (exclusive) doubles; `b` and `c` read in parallel and record the last
/// sequence they saw; `d` joins them and checks that both have seen the event it gets.
fn diamond<W: WaitStrategy + 'static>(wait: W, n: u64) {
    let (b_last, c_last) = (Arc::new(AtomicI64::new(-1)), Arc::new(AtomicI64::new(-1)));
    let (b2, c2, b3, c3) = (
        b_last.clone(),
        c_last.clone(),
        b_last.clone(),
        c_last.clone(),
    );
    let sum = Arc::new(AtomicU64::new(0));
    let mut check = in_order(1, sum.clone());
    let mut p = Disruptor::builder(512, Msg::default)
        .wait_strategy(wait)
        .handle_events_mut(|m: &mut Msg, _, _| {
            m.doubled = m.value * 2;
            Ok(())
        })
        .then(move |m: &Msg, seq, _| {
            if m.doubled != m.value * 2 {
                return Err("b saw a stale event".into());
            }
            b2.store(seq, Ordering::Release);
            Ok(())
        })
        .handle_events_with(move |m: &Msg, seq, _| {
            if m.doubled != m.value * 2 {
                return Err("c saw a stale event".into());
            }
            c2.store(seq, Ordering::Release);
            Ok(())
        })
        .then(move |m: &Msg, seq, eob| {
            let (b, c) = (b3.load(Ordering::Acquire), c3.load(Ordering::Acquire));
            if b < seq || c < seq {
                return Err(format!("d got {seq} before b ({b}) and c ({c})").into());
            }
            check(m, seq, eob)
        })
        .build_single_producer()
        .unwrap();
    let mut v = 0;
    while v < n {
        let k = (n - v).min(1 + v % 64);
        p.batch_publish(k as usize, |i, m| {
            m.producer = 0;
            m.value = v + i as u64;
        })
        .unwrap();
        v += k;
    }
    let report = p.shutdown();
    assert_clean(&report, n);
    assert_eq!(report.handlers.len(), 4);
    assert_eq!(sum.load(Ordering::Relaxed), triangle(n));
}

#[test]
fn diamond_graph() {
    diamond(Blocking::default(), scale(400_000));
    diamond(Yielding::default(), scale(200_000));
    diamond(Sleeping::default(), scale(100_000));
}

#[test]
fn try_publish_reports_full_and_loses_nothing() {
    let sum = Arc::new(AtomicU64::new(0));
    let mut slow = in_order(1, sum.clone());
    let mut p = Disruptor::builder(16, Msg::default)
        .wait_strategy(Blocking::default())
        .handle_events_with(move |m: &Msg, seq, eob| {
            if m.value.is_multiple_of(4096) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            slow(m, seq, eob)
        })
        .build_single_producer()
        .unwrap();
    let n = scale(200_000);
    let (mut fulls, mut batch_fulls) = (0u64, 0u64);
    let mut v = 0;
    while v < n {
        if v % 2 == 0 {
            match p.try_publish(|m| {
                m.producer = 0;
                m.value = v;
            }) {
                Ok(seq) => {
                    assert_eq!(seq, v as i64);
                    v += 1;
                }
                Err(RingFull) => {
                    fulls += 1;
                    std::thread::yield_now();
                }
            }
        } else {
            let k = (n - v).min(8);
            match p.try_batch_publish(k as usize, |i, m| {
                m.producer = 0;
                m.value = v + i as u64;
            }) {
                Ok(hi) => {
                    assert_eq!(hi, (v + k - 1) as i64);
                    v += k;
                }
                Err(ClaimError::Full) => {
                    batch_fulls += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(
        fulls + batch_fulls > 0,
        "a 16-slot ring with a sleeping consumer must fill"
    );
    let report = p.shutdown();
    assert_clean(&report, n);
    assert_eq!(sum.load(Ordering::Relaxed), triangle(n));
}

/// Shutdown straight after a burst, with consumers far behind: everything published is
/// processed before the threads stop, for every strategy and both producer kinds.
#[test]
fn shutdown_drains_everything_published() {
    fn burst<W: WaitStrategy + 'static>(wait: W) {
        let n = scale(50_000);
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let mut p = Disruptor::builder(8192, Msg::default)
            .wait_strategy(wait)
            .handle_events_with(|_: &Msg, _, _| Ok(()))
            .then(move |m: &Msg, _, _| {
                if m.value.is_multiple_of(1024) {
                    std::thread::yield_now();
                }
                s2.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .build_single_producer()
            .unwrap();
        for v in 0..n {
            p.publish(|m| m.value = v);
        }
        let report = p.shutdown();
        assert_eq!(seen.load(Ordering::Relaxed), n);
        assert!(report.handlers.iter().all(|h| h.processed == n));
    }
    burst(BusySpin);
    burst(BusySpinWithHint);
    burst(Yielding::default());
    burst(Sleeping::default());
    burst(Blocking::default());

    // Multi-producer: handles dropped (not shut down explicitly) by their threads; the last
    // drop drains and joins.
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    let p = Disruptor::builder(4096, Msg::default)
        .wait_strategy(Blocking::new(10, 2))
        .handle_events_with(move |_: &Msg, _, _| {
            s2.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .build_multi_producer()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut p = p.clone();
            std::thread::spawn(move || {
                for v in 0..25_000u64 {
                    p.publish(|m| m.value = v);
                }
            })
        })
        .collect();
    drop(p);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(seen.load(Ordering::Relaxed), 100_000);
}

/// Failing and panicking handlers under load: `Continue` counts exactly, `Halt` drains.
#[test]
fn failures_under_load_are_counted_and_never_hang() {
    for policy in [ExceptionPolicy::Continue, ExceptionPolicy::Halt] {
        let n = scale(300_000);
        let after = Arc::new(AtomicU64::new(0));
        let a2 = after.clone();
        let p = Disruptor::builder(256, Msg::default)
            .wait_strategy(Yielding::default())
            .exception_policy(policy)
            .handle_events_with(|m: &Msg, _, _| {
                if m.value % 1000 == 999 {
                    return Err("every thousandth".into());
                }
                if m.value == 150_001 {
                    panic!("one panic under load");
                }
                Ok(())
            })
            .then(move |_: &Msg, _, _| {
                a2.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .build_multi_producer()
            .unwrap();
        let threads: Vec<_> = (0..2u64)
            .map(|k| {
                let mut p = p.clone();
                std::thread::spawn(move || {
                    for v in 0..n / 2 {
                        // Values 0..n across both producers.
                        p.publish(|m| m.value = k * (n / 2) + v);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let report = p.shutdown().unwrap();
        let h = &report.handlers[0];
        assert_eq!(
            after.load(Ordering::Relaxed),
            n,
            "downstream always sees everything"
        );
        assert_eq!(h.seen(), n);
        match policy {
            ExceptionPolicy::Continue => {
                let errors = (0..n).filter(|v| v % 1000 == 999).count() as u64;
                assert_eq!((h.failures, h.panics), (errors, 1));
                assert_eq!(h.processed, n - errors - 1);
                assert!(!h.halted);
            }
            ExceptionPolicy::Halt => {
                assert!(h.halted);
                assert_eq!(h.failures + h.panics, 1);
                assert!(h.skipped > 0);
            }
        }
    }
}
