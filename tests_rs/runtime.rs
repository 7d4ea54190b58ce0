//! The thread-per-core runtime driven directly: commands reach the reactors in order, every
//! routed row reaches exactly the core that owns its key, shutdown drains what is queued and
//! joins the threads, a failing or panicking operator is reported by the next sync instead of
//! hanging, credits come back, and the engine gives the same results with 1, 2 or 3 cores
//! (proptest against the one-core engine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use laminar_core::engine::{Engine, EngineConfig, QueryPlan, SourceConfig, TIME_COLUMN};
use laminar_core::operator::{Operator, OperatorContext};
use laminar_core::reactor::{Node, QueryGraph};
use laminar_core::runtime::{CoreCommand, KeyRouter, RuntimeConfig, ThreadPerCoreRuntime};
use laminar_core::time::clock::ManualClock;
use laminar_core::time::watermark::WatermarkStrategy;
use laminar_core::{Error, ErrorKind};
use proptest::prelude::*;

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new(TIME_COLUMN, DataType::Int64, false),
    ]))
}

fn stream(keys: Vec<i64>) -> RecordBatch {
    let t: Vec<i64> = (0..keys.len() as i64).collect();
    RecordBatch::try_new(
        stream_schema(),
        vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(Int64Array::from(t)),
        ],
    )
    .unwrap()
}

/// Passes batches through, or panics / fails on a row with key -1 / -2.
struct Probe {
    schema: SchemaRef,
}

impl Operator for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn process(
        &mut self,
        input: &RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> laminar_core::Result<()> {
        let keys = input.column(0).as_primitive::<Int64Type>();
        if keys.values().contains(&-1) {
            panic!("probe asked to panic");
        }
        if keys.values().contains(&-2) {
            return Err(Error::InvalidPlan("probe asked to fail".into()));
        }
        ctx.emit(input.clone());
        Ok(())
    }
}

fn probe_graph() -> QueryGraph {
    QueryGraph {
        nodes: vec![Node {
            op: Box::new(Probe {
                schema: stream_schema(),
            }),
            next: None,
        }],
        inputs: vec![Some((0, 0))],
    }
}

fn runtime(cores: usize) -> ThreadPerCoreRuntime {
    let mut rt = ThreadPerCoreRuntime::start(RuntimeConfig {
        cores,
        pin: false,
        ..RuntimeConfig::default()
    })
    .unwrap();
    for core in 0..cores {
        rt.send(
            core,
            CoreCommand::AddQuery {
                inputs: vec![0],
                graph: probe_graph(),
            },
        )
        .unwrap();
    }
    rt
}

/// Commands carrying each core its own rows of `batch` (by key column 0), as the engine
/// routes them.
fn routed(batch: RecordBatch, cores: usize, credit: bool) -> Vec<(usize, CoreCommand)> {
    let parts = KeyRouter::new(cores).partition(&batch, &[0]).unwrap();
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(core, rows)| {
            let cmd = CoreCommand::Routed {
                query: 0,
                input: 0,
                source: 0,
                batch: batch.clone(),
                rows: rows?,
                credit,
            };
            Some((core, cmd))
        })
        .collect()
}

fn send_all(rt: &mut ThreadPerCoreRuntime, sends: Vec<(usize, CoreCommand)>) {
    for (core, cmd) in sends {
        rt.send(core, cmd).unwrap();
    }
}

fn keys_of(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

#[test]
fn every_routed_row_reaches_its_owner_once_in_order() {
    let cores = 3;
    let mut rt = runtime(cores);
    let mut sent = Vec::new();
    for i in 0..200 {
        let keys: Vec<i64> = (0..500).map(|j| (i * 500 + j) % 211).collect();
        sent.extend(keys.clone());
        assert!(rt.send_routed(routed(stream(keys), cores, true)).unwrap());
    }
    let reports = rt.sync().unwrap();
    let mut router = KeyRouter::new(cores);
    let owners = router
        .assign(&stream((0..211).collect()), &[0])
        .unwrap()
        .to_vec();
    let mut all = Vec::new();
    for r in reports {
        assert!(r.error.is_none());
        let got = keys_of(&r.queries[0].output);
        assert!(
            got.iter().all(|&k| owners[k as usize] == r.core as u64),
            "a row on the wrong core"
        );
        let want: Vec<i64> = sent
            .iter()
            .copied()
            .filter(|&k| owners[k as usize] == r.core as u64)
            .collect();
        assert_eq!(
            got, want,
            "core {} lost, duplicated or reordered rows",
            r.core
        );
        all.extend(got);
    }
    assert_eq!(all.len(), sent.len());
    let m = rt.credit_metrics();
    assert_eq!(m.acquired, m.released, "every credit came back");
    assert_eq!(
        rt.core_metrics().iter().map(|c| c.rows).sum::<u64>(),
        sent.len() as u64
    );
    rt.shutdown().unwrap();
}

#[test]
fn shutdown_drains_everything_queued_and_joins() {
    let mut rt = runtime(2);
    rt.stall(0, Duration::from_millis(50)).unwrap();
    for _ in 0..100 {
        send_all(&mut rt, routed(stream((0..100).collect()), 2, false));
    }
    rt.shutdown().unwrap();
    let rows: u64 = rt.core_metrics().iter().map(|c| c.rows).sum();
    assert_eq!(
        rows,
        100 * 100,
        "a batch queued before shutdown was not processed"
    );
    assert!(
        rt.send(
            0,
            CoreCommand::Sync {
                ticket: 9,
                snapshot: false,
            }
        )
        .is_err(),
        "a stopped core accepts nothing"
    );
    rt.shutdown().unwrap(); // idempotent
}

#[test]
fn an_operator_error_comes_back_with_the_next_sync_once() {
    let mut rt = runtime(2);
    send_all(&mut rt, routed(stream(vec![1, -2, 3, 4, 5, 6]), 2, false));
    let reports = rt.sync().unwrap();
    let errors: Vec<_> = reports.iter().filter_map(|r| r.error.as_ref()).collect();
    assert_eq!(errors.len(), 1, "the core owning key -2 fails the batch");
    assert_eq!(errors[0].kind(), ErrorKind::InvalidPlan);
    send_all(&mut rt, routed(stream(vec![5, 6, 7, 8]), 2, false));
    assert!(
        rt.sync().unwrap().iter().all(|r| r.error.is_none()),
        "reported once, then it works"
    );
}

#[test]
fn a_panicking_operator_poisons_its_core_without_hanging() {
    let mut rt = runtime(2);
    let mut router = KeyRouter::new(2);
    let owner = router.assign(&stream(vec![-1]), &[0]).unwrap()[0] as usize;
    for keys in [
        vec![-1],
        (0..50).collect(),
        (50..100).collect(),
        (0..70).collect(),
    ] {
        assert!(rt.send_routed(routed(stream(keys), 2, true)).unwrap());
    }
    let reports = rt.sync().unwrap();
    let err = reports[owner]
        .error
        .as_ref()
        .expect("the panic is reported");
    assert_eq!(err.kind(), ErrorKind::Runtime);
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(
        reports[1 - owner].error.is_none(),
        "the other core is unaffected"
    );
    let again = rt.sync().unwrap();
    assert!(
        again[owner].error.is_some(),
        "a poisoned core keeps saying so"
    );
    let m = rt.credit_metrics();
    assert_eq!(
        m.acquired, m.released,
        "a poisoned core still gives credits back"
    );
    rt.shutdown().unwrap();
}

#[test]
fn dropping_the_runtime_joins_its_threads() {
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let t = std::thread::spawn(move || {
        let rt = runtime(2);
        drop(rt);
        flag.store(true, Ordering::Release);
    });
    t.join().unwrap();
    assert!(stopped.load(Ordering::Acquire));
}

// ---- the engine: cores=2 and 3 equal cores=1 ---------------------------------------------

fn user_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn run_engine(cores: usize, plan: &str, batches: &[Vec<(i64, i64, f64)>]) -> Vec<String> {
    let config = EngineConfig {
        cores,
        pin: false,
        ..EngineConfig::default()
    };
    let mut eng = Engine::new(config, Arc::new(ManualClock::new(0))).unwrap();
    eng.add_source(SourceConfig {
        name: "s".into(),
        time_column: "ts".into(),
        watermark: WatermarkStrategy::BoundedDelay { delay_ms: 20 },
        punctuation_column: None,
        max_future_ms: None,
        idle_timeout_ms: None,
        schema: None,
    })
    .unwrap();
    eng.add_query("q", QueryPlan::from_json(plan).unwrap())
        .unwrap();
    let mut out = Vec::new();
    for rows in batches {
        let b = RecordBatch::try_new(
            user_schema(),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        eng.push("s", &[b]).unwrap();
        out.push(render(&eng.take_output("q").unwrap()));
    }
    eng.flush().unwrap();
    out.push(render(&eng.take_output("q").unwrap()));
    let late = eng.query_reports().unwrap()[0]
        .metrics
        .operators
        .late_dropped;
    out.push(vec![format!("late={late}")]);
    eng.close().unwrap();
    out.into_iter().flatten().collect()
}

/// Rows as sorted strings (row order across keys is not defined with several cores).
fn render(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cols: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow_cast::display::array_value_to_string(c, i).unwrap())
                .collect();
            rows.push(cols.join(","));
        }
    }
    rows.sort();
    rows.push("|".into()); // push boundary
    rows
}

const PLANS: [&str; 3] = [
    r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate", "window": {"kind": "tumbling", "size_ms": 50},
        "keys": ["key"], "aggs": [{"name": "n", "func": "count"}, {"name": "s", "func": "sum", "column": "value"},
        {"name": "f", "func": "first", "column": "value"}], "emit": {"kind": "on_update"}}]}"#,
    r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate", "window": {"kind": "session", "gap_ms": 15},
        "keys": ["key"], "aggs": [{"name": "n", "func": "count"}], "allowed_lateness_ms": 10}]}"#,
    r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate", "window": {"kind": "sliding", "size_ms": 40, "slide_ms": 10},
        "aggs": [{"name": "n", "func": "count"}, {"name": "hi", "func": "max", "column": "value"}]}]}"#,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn engine_results_do_not_depend_on_the_core_count(
        plan in 0..PLANS.len(),
        batches in prop::collection::vec(
            prop::collection::vec((0i64..400, 0i64..12, -50i64..50), 0..40), 1..8),
    ) {
        let batches: Vec<Vec<(i64, i64, f64)>> = batches
            .into_iter()
            .map(|b| b.into_iter().map(|(t, k, v)| (t, k, v as f64 / 4.0)).collect())
            .collect();
        let one = run_engine(1, PLANS[plan], &batches);
        prop_assert_eq!(&run_engine(2, PLANS[plan], &batches), &one);
        prop_assert_eq!(&run_engine(3, PLANS[plan], &batches), &one);
    }
}
