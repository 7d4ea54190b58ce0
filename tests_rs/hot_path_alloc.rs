//! Hot paths do not allocate per event: a counting global allocator (this test binary only)
//! counts the allocations the *current thread* makes inside a marked section.
//!
//! - `SpscQueue` push/pop, single and batched, across two threads: no allocation at all;
//! - the disruptor: publish (single and batch of 64) and the consumer's handler: none;
//! - the reactor's per-batch path for a steady-state tumbling window (all groups exist, no
//!   window closes): the allocations of one batch do not grow with its rows (a 10,000-row
//!   batch allocates no more than a 100-row one), so nothing is allocated per event;
//! - the same for a steady-state dedup (every key held in its `MemStore`; rows either
//!   duplicates or kept, a kept row overwriting its key's time in place).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use laminar_core::engine::{compile, QueryPlan, SourceSchema, TIME_COLUMN};
use laminar_core::reactor::{Budget, CoreMessage, Reactor};
use laminar_core::sync::SpscQueue;

struct Counting;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    let _ = ACTIVE.try_with(|a| {
        if a.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting touches
// only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made inside it.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    ACTIVE.with(|a| a.set(true));
    let r = f();
    ACTIVE.with(|a| a.set(false));
    (r, COUNT.with(Cell::get))
}

#[test]
fn the_counter_sees_allocations() {
    let (_, n) = allocations(|| std::hint::black_box(vec![1u8; 64]));
    assert_eq!(n, 1, "the counting allocator must see a Vec allocation");
}

#[test]
fn spsc_push_and_pop_do_not_allocate() {
    let (mut p, mut c) = SpscQueue::<u64>::with_capacity(1024);
    let n = 1_000_000u64;
    let consumer = std::thread::spawn(move || {
        let ((sum, got), allocs) = allocations(|| {
            let (mut sum, mut got) = (0u64, 0u64);
            while got < n {
                let k = c.pop_batch(64, |v| sum = sum.wrapping_add(v));
                got += k as u64;
                if k == 0 {
                    if let Some(v) = c.pop() {
                        sum = sum.wrapping_add(v);
                        got += 1;
                    }
                    std::thread::yield_now();
                }
            }
            (sum, got)
        });
        (sum, got, allocs)
    });
    let ((), allocs) = allocations(|| {
        let mut next = 0u64;
        while next < n {
            if next.is_multiple_of(3) {
                let k = p.push_with(64.min((n - next) as usize), |i| next + i as u64);
                next += k as u64;
            } else if p.push(next).is_ok() {
                next += 1;
            }
            if p.len() == p.capacity() {
                std::thread::yield_now();
            }
        }
    });
    let (sum, got, consumer_allocs) = consumer.join().unwrap();
    assert_eq!(got, n);
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(allocs, 0, "producer allocated");
    assert_eq!(consumer_allocs, 0, "consumer allocated");
}

#[test]
fn disruptor_publish_and_consume_do_not_allocate() {
    use laminar_core::sync::disruptor::Disruptor;
    use laminar_core::sync::wait::BusySpinWithHint;
    use std::sync::atomic::{AtomicU64, Ordering};

    let n = 500_000u64;
    // The handler counts its own thread's allocations from its first event to its last.
    let handler_allocs = Arc::new(AtomicU64::new(u64::MAX));
    let sum = Arc::new(AtomicU64::new(0));
    let (ha, sm) = (handler_allocs.clone(), sum.clone());
    let mut producer = Disruptor::builder(1024, || 0u64)
        .wait_strategy(BusySpinWithHint)
        .handle_events_with(move |v: &u64, seq, _end| {
            if seq == 0 {
                COUNT.with(|c| c.set(0));
                ACTIVE.with(|a| a.set(true));
            }
            sm.fetch_add(*v, Ordering::Relaxed);
            if seq as u64 == n - 1 {
                ACTIVE.with(|a| a.set(false));
                ha.store(COUNT.with(Cell::get), Ordering::Release);
            }
            Ok(())
        })
        .build_single_producer()
        .unwrap();
    let ((), allocs) = allocations(|| {
        let mut next = 0u64;
        while next < n {
            if next.is_multiple_of(2) && n - next >= 64 {
                producer
                    .batch_publish(64, |i, slot| *slot = next + i as u64)
                    .unwrap();
                next += 64;
            } else {
                producer.publish(|slot| *slot = next);
                next += 1;
            }
        }
    });
    producer.shutdown();
    assert_eq!(
        sum.load(Ordering::Relaxed),
        n * (n - 1) / 2,
        "every event consumed once"
    );
    assert_eq!(allocs, 0, "publishing allocated");
    assert_eq!(
        handler_allocs.load(Ordering::Acquire),
        0,
        "consuming allocated"
    );
}

fn stream_batch(rows: usize, start_ts: i64, keys: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new(TIME_COLUMN, DataType::Int64, false),
    ]));
    let ts: Vec<i64> = (0..rows as i64).map(|i| start_ts + i % 500).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ts.clone())),
            Arc::new(Int64Array::from(
                (0..rows as i64).map(|i| i % keys).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                (0..rows).map(|i| i as f64).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(ts)),
        ],
    )
    .unwrap()
}

/// A reactor running one query, `plan` (JSON), over source `s` of [`stream_batch`]'s schema.
/// The allocations of one 10,000-row batch (`a_big`) against 100-row batches before and after
/// it: no more than two more (so nothing allocates per row), and few in all.
fn assert_allocates_per_batch_not_per_row(what: &str, a_small: u64, a_big: u64, a_small2: u64) {
    assert!(
        a_big <= a_small.max(a_small2) + 2,
        "{what}: a 10,000-row batch made {a_big} allocations, a 100-row one {a_small}/{a_small2}: something allocates per row"
    );
    eprintln!(
        "{what} allocations per batch: 100 rows {a_small}, 10,000 rows {a_big}, 100 rows {a_small2}"
    );
    assert!(a_big < 50, "{what}: {a_big} allocations for one batch");
}

fn reactor_with(plan: &str) -> Reactor {
    let plan = QueryPlan::from_json(plan).unwrap();
    let schemas = HashMap::from([(
        "s".to_string(),
        SourceSchema {
            stream: stream_batch(1, 0, 1).schema(),
            time_type: DataType::Int64,
        },
    )]);
    let compiled = compile(&plan, &schemas, &Default::default()).unwrap();
    let mut reactor = Reactor::new(16);
    reactor.add_query(&[0], compiled.graph);
    reactor
}

#[test]
fn the_reactor_does_not_allocate_per_event_in_a_steady_tumbling_window() {
    let mut reactor = reactor_with(
        r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate",
            "window": {"kind": "tumbling", "size_ms": 1000000}, "keys": ["key"],
            "aggs": [{"name": "n", "func": "count"}, {"name": "total", "func": "sum", "column": "value"},
                     {"name": "hi", "func": "max", "column": "value"}]}]}"#,
    );
    let budget = Budget::default();
    let keys = 1000;
    // Warm-up: every group exists and every scratch buffer has grown to the largest batch.
    for i in 0..5 {
        let b = stream_batch(10_000, i * 100, keys);
        reactor
            .run(
                CoreMessage::Data {
                    source: 0,
                    batch: b,
                },
                budget,
            )
            .unwrap();
        reactor
            .run(
                CoreMessage::Watermark {
                    source: 0,
                    ts: i * 100,
                },
                budget,
            )
            .unwrap();
    }
    let small = stream_batch(100, 1_000, keys);
    let big = stream_batch(10_000, 1_000, keys);
    let mut per_batch = |b: RecordBatch, wm: i64| {
        let (r, n) = allocations(|| {
            reactor.run(
                CoreMessage::Data {
                    source: 0,
                    batch: b,
                },
                budget,
            )?;
            reactor.run(CoreMessage::Watermark { source: 0, ts: wm }, budget)
        });
        r.unwrap();
        n
    };
    let a_small = per_batch(small, 1_000);
    let a_big = per_batch(big, 1_001);
    let a_small2 = per_batch(stream_batch(100, 1_002, keys), 1_002);
    assert_allocates_per_batch_not_per_row("window", a_small, a_big, a_small2);
    assert_eq!(
        reactor.take_output(0).len(),
        0,
        "no window closed during the measurement"
    );
}

#[test]
fn the_reactor_does_not_allocate_per_event_in_a_steady_dedup() {
    let mut reactor = reactor_with(
        r#"{"inputs": ["s"], "ops": [{"op": "dedup", "on": ["key"], "within_ms": 60}]}"#,
    );
    let budget = Budget::default();
    let keys = 1000;
    let run = |reactor: &mut Reactor, b: RecordBatch| {
        reactor.run(
            CoreMessage::Data {
                source: 0,
                batch: b,
            },
            budget,
        )
    };
    // Warm-up: every key is held and the key buffer has grown to the largest batch. The
    // watermark stays at 0, so nothing expires and no row is late.
    reactor
        .run(CoreMessage::Watermark { source: 0, ts: 0 }, budget)
        .unwrap();
    for i in 0..5 {
        run(&mut reactor, stream_batch(10_000, i * 100, keys)).unwrap();
    }
    reactor.take_output(0);
    // Each key's time moves by 100 >= within from batch to batch: its first row in a batch
    // is kept (a put over its 8 bytes), the others are duplicates (in the big batch at the
    // same time, in the small ones of 50 keys 50 ms later), so every batch is filtered.
    let mut per_batch = |b: RecordBatch| {
        let (r, n) = allocations(|| run(&mut reactor, b));
        r.unwrap();
        n
    };
    let a_small = per_batch(stream_batch(100, 1_000, 50));
    let a_big = per_batch(stream_batch(10_000, 1_100, keys));
    let a_small2 = per_batch(stream_batch(100, 1_200, 50));
    assert_allocates_per_batch_not_per_row("dedup", a_small, a_big, a_small2);
    let kept: usize = reactor
        .take_output(0)
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(
        kept,
        50 + 1000 + 50,
        "each key's first row per batch is kept"
    );
}
