//! Criterion benchmarks of the reactor and the engine's hot path.
//!
//! - `reactor_submit_one_row/*`: the cost of queueing, with a reactor that has no queries, so
//!   that no operator runs and only the inbox is measured:
//!   - `submit`: `Reactor::submit` of a `CoreMessage::Data` holding a prebuilt one-row stream
//!     batch (the message clone is made outside the timed section);
//!   - `poll`: `Reactor::poll` taking one queued message out (and dropping it, since no query
//!     reads the source), amortised over 1,000 queued messages;
//!   - `submit_poll`: one `submit` immediately followed by one `poll`, the per-message cost of
//!     the synchronous driver.
//! - `single_event_tumbling`: `Engine::push` of a one-row batch through a 1 s tumbling window
//!   grouped by an int key (count + sum), timestamps increasing by 1 ms per event, so ~1,000
//!   events per window and windows keep closing as they would in a live stream. Building the
//!   one-row batches happens outside the timed section.
//! - `bulk_tumbling`: throughput of `Engine::push` with 10,000-row batches of workload-A-like
//!   data (ts = base + i/10 - jitter(0..100), key uniform in 0..1000, value f64) through the
//!   same query. Data generation happens outside the timed section.
//!
//! Run with `cargo bench -p laminar-core --bench reactor`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use laminar_core::engine::{compile, Engine, QueryPlan, SourceConfig, SourceSchema, TIME_COLUMN};
use laminar_core::reactor::{Budget, CoreMessage, Reactor};
use laminar_core::time::watermark::WatermarkStrategy;

/// A tiny deterministic xorshift64 generator (no dependency, same data on every run).
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn user_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn user_batch(ts: Vec<i64>, key: Vec<i64>, value: Vec<f64>) -> RecordBatch {
    RecordBatch::try_new(
        user_schema(),
        vec![
            Arc::new(Int64Array::from(ts)),
            Arc::new(Int64Array::from(key)),
            Arc::new(Float64Array::from(value)),
        ],
    )
    .expect("valid batch")
}

/// A one-row stream batch: the user columns plus the hidden event-time column.
fn one_row_stream_batch() -> RecordBatch {
    let mut fields: Vec<Field> = user_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(TIME_COLUMN, DataType::Int64, false));
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        vec![
            Arc::new(Int64Array::from(vec![1_000])),
            Arc::new(Int64Array::from(vec![7])),
            Arc::new(Float64Array::from(vec![1.5])),
            Arc::new(Int64Array::from(vec![1_000])),
        ],
    )
    .expect("valid stream batch")
}

/// An engine with source `s` (bounded delay `delay_ms`) and query `q`: 1 s tumbling windows
/// grouped by `key`, `count()` and `sum(value)`.
fn tumbling_engine(delay_ms: i64) -> Engine {
    let mut engine = Engine::default();
    engine
        .add_source(SourceConfig {
            name: "s".into(),
            time_column: "ts".into(),
            watermark: WatermarkStrategy::BoundedDelay { delay_ms },
            punctuation_column: None,
            max_future_ms: None,
            idle_timeout_ms: None,
            schema: Some(user_schema()),
        })
        .expect("source");
    let plan = QueryPlan::from_json(
        r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate",
            "window": {"kind": "tumbling", "size_ms": 1000}, "keys": ["key"],
            "aggs": [{"name": "n", "func": "count"}, {"name": "total", "func": "sum", "column": "value"}]}]}"#,
    )
    .expect("plan");
    engine.add_query("q", plan).expect("query");
    engine
}

const QUEUE_CHUNK: u64 = 1_000;

fn reactor_submit_one_row(c: &mut Criterion) {
    let msg = CoreMessage::Data {
        source: 0,
        batch: one_row_stream_batch(),
    };
    let budget = Budget::default();
    let mut group = c.benchmark_group("reactor_submit_one_row");
    group.throughput(Throughput::Elements(1));

    group.bench_function("submit", |b| {
        let mut reactor = Reactor::new(QUEUE_CHUNK as usize);
        let mut queued: Vec<CoreMessage> = Vec::with_capacity(QUEUE_CHUNK as usize);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(QUEUE_CHUNK);
                queued.extend((0..n).map(|_| msg.clone()));
                let start = Instant::now();
                for m in queued.drain(..) {
                    if reactor.submit(black_box(m)).is_err() {
                        panic!("inbox full");
                    }
                }
                total += start.elapsed();
                while reactor.poll(budget).expect("poll").pending > 0 {}
                left -= n;
            }
            total
        });
    });

    group.bench_function("poll", |b| {
        let mut reactor = Reactor::new(QUEUE_CHUNK as usize);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(QUEUE_CHUNK);
                for _ in 0..n {
                    if reactor.submit(msg.clone()).is_err() {
                        panic!("inbox full");
                    }
                }
                let start = Instant::now();
                for _ in 0..n {
                    black_box(reactor.poll(Budget { messages: 1 }).expect("poll"));
                }
                total += start.elapsed();
                left -= n;
            }
            total
        });
    });

    group.bench_function("submit_poll", |b| {
        let mut reactor = Reactor::new(16);
        b.iter_batched(
            || msg.clone(),
            |m| {
                if reactor.submit(m).is_err() {
                    panic!("inbox full");
                }
                black_box(reactor.poll(budget).expect("poll"))
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// One-row batches built ahead of the timed pushes.
const EVENT_CHUNK: u64 = 4_096;

fn single_event_tumbling(c: &mut Criterion) {
    let mut engine = tumbling_engine(100);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut ts: i64 = 0;
    let mut batches: Vec<RecordBatch> = Vec::with_capacity(EVENT_CHUNK as usize);
    let mut group = c.benchmark_group("single_event_tumbling");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_one_row", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(EVENT_CHUNK);
                batches.clear();
                for _ in 0..n {
                    ts += 1;
                    batches.push(user_batch(
                        vec![ts],
                        vec![rng.below(100) as i64],
                        vec![rng.unit() * 100.0],
                    ));
                }
                let start = Instant::now();
                for batch in &batches {
                    engine.push("s", std::slice::from_ref(batch)).expect("push");
                }
                total += start.elapsed();
                black_box(engine.take_output("q").expect("output"));
                left -= n;
            }
            total
        });
    });
    // The reactor alone: a prebuilt one-row stream batch through the compiled tumbling query,
    // followed by the watermark it produces (what `Engine::push` adds on top is validation
    // and time-column conversion).
    let plan = QueryPlan::from_json(
        r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate",
            "window": {"kind": "tumbling", "size_ms": 1000}, "keys": ["key"],
            "aggs": [{"name": "n", "func": "count"}, {"name": "total", "func": "sum", "column": "value"}]}]}"#,
    )
    .expect("plan");
    let stream_schema = one_row_stream_batch().schema();
    let schemas = std::collections::HashMap::from([(
        "s".to_string(),
        SourceSchema {
            stream: stream_schema.clone(),
            time_type: DataType::Int64,
        },
    )]);
    let compiled = compile(&plan, &schemas, &Default::default()).expect("compile");
    let mut reactor = Reactor::new(1024);
    let q = reactor.add_query(&[0], compiled.graph);
    let mut events: Vec<RecordBatch> = Vec::with_capacity(EVENT_CHUNK as usize);
    let mut ts: i64 = 0;
    group.bench_function("reactor_process_one_row", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(EVENT_CHUNK);
                events.clear();
                for _ in 0..n {
                    ts += 1;
                    events.push(
                        RecordBatch::try_new(
                            stream_schema.clone(),
                            vec![
                                Arc::new(Int64Array::from(vec![ts])),
                                Arc::new(Int64Array::from(vec![rng.below(100) as i64])),
                                Arc::new(Float64Array::from(vec![rng.unit() * 100.0])),
                                Arc::new(Int64Array::from(vec![ts])),
                            ],
                        )
                        .expect("stream batch"),
                    );
                }
                let start = Instant::now();
                for (i, batch) in events.drain(..).enumerate() {
                    let t = ts - n as i64 + 1 + i as i64;
                    reactor
                        .run(CoreMessage::Data { source: 0, batch }, Budget::default())
                        .expect("data");
                    reactor
                        .run(
                            CoreMessage::Watermark {
                                source: 0,
                                ts: t - 100,
                            },
                            Budget::default(),
                        )
                        .expect("watermark");
                }
                total += start.elapsed();
                black_box(reactor.take_output(q));
                left -= n;
            }
            total
        });
    });
    group.finish();
}

const BULK_ROWS: usize = 10_000;

/// Workload A: ~10 events per ms, each up to 99 ms late, 1,000 keys.
fn workload_a_batch(rng: &mut XorShift, base: i64) -> RecordBatch {
    let mut ts = Vec::with_capacity(BULK_ROWS);
    let mut key = Vec::with_capacity(BULK_ROWS);
    let mut value = Vec::with_capacity(BULK_ROWS);
    for i in 0..BULK_ROWS as i64 {
        ts.push(base + i / 10 - rng.below(100) as i64);
        key.push(rng.below(1_000) as i64);
        value.push(rng.unit() * 1_000.0);
    }
    user_batch(ts, key, value)
}

fn bulk_tumbling(c: &mut Criterion) {
    // A delay of 100 ms covers the jitter: no row is ever late.
    let mut engine = tumbling_engine(100);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut base: i64 = 1_000_000;
    let mut group = c.benchmark_group("bulk_tumbling");
    group.throughput(Throughput::Elements(BULK_ROWS as u64));
    group.bench_function("push_10k_rows", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = workload_a_batch(&mut rng, base);
                base += (BULK_ROWS / 10) as i64;
                let start = Instant::now();
                engine
                    .push("s", std::slice::from_ref(&batch))
                    .expect("push");
                total += start.elapsed();
                black_box(engine.take_output("q").expect("output"));
            }
            total
        });
    });
    group.finish();
    let reports = engine.query_reports().expect("query reports");
    let report = &reports[0].metrics;
    assert_eq!(
        report.operators.late_dropped, 0,
        "workload A must have no late rows here"
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = reactor_submit_one_row, single_event_tumbling, bulk_tumbling
}
criterion_main!(benches);
