//! Restoring operator state: a reactor snapshotted after any message, rebuilt from the same
//! plan and restored, goes on to produce exactly what the uninterrupted reactor produces.
//!
//! The model is the uninterrupted run itself: both runs see the same messages; the only
//! difference is a snapshot/restore cycle (through bytes, into freshly compiled operators
//! with new hash seeds) at a random point. Windows (tumbling, sliding), emit strategies, key
//! layouts (none, an integer, a string, a compound key) and all aggregate functions are drawn.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use laminar_core::engine::{compile, QueryPlan, SourceSchema, TIME_COLUMN};
use laminar_core::operator::lookup_join::LookupTables;
use laminar_core::reactor::{Budget, CoreMessage, Reactor};
use proptest::prelude::*;

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, false),
        Field::new("v", DataType::Float64, true),
        Field::new(TIME_COLUMN, DataType::Int64, false),
    ]))
}

fn reactor(plan: &QueryPlan) -> Reactor {
    let mut schemas = HashMap::new();
    schemas.insert(
        "src".to_string(),
        SourceSchema {
            stream: stream_schema(),
            time_type: DataType::Int64,
        },
    );
    let compiled = compile(plan, &schemas, &LookupTables::default()).expect("plan compiles");
    let mut r = Reactor::new(64);
    r.add_query(&[0], compiled.graph);
    r
}

fn plan(window: &str, keys: &str, emit: &str, lateness: i64) -> QueryPlan {
    let json = format!(
        r#"{{"inputs": ["src"], "ops": [{{"op": "window_aggregate", "window": {window},
            "keys": {keys}, "allowed_lateness_ms": {lateness}, "emit": {emit},
            "aggs": [{{"name": "n", "func": "count"}},
                     {{"name": "nv", "func": "count", "column": "v"}},
                     {{"name": "sum_v", "func": "sum", "column": "v"}},
                     {{"name": "sum_k", "func": "sum", "column": "k"}},
                     {{"name": "lo", "func": "min", "column": "v"}},
                     {{"name": "hi", "func": "max", "column": "k"}},
                     {{"name": "mean", "func": "avg", "column": "v"}},
                     {{"name": "first_v", "func": "first", "column": "v"}},
                     {{"name": "last_k", "func": "last", "column": "k"}}]}}]}}"#
    );
    QueryPlan::from_json(&json).expect("valid plan")
}

/// One message of the script: a batch of rows `(ts, key, value)`, then the bounded-delay
/// watermark it produces (as the engine sends them).
fn messages(batches: &[Vec<(i64, i64, Option<f64>)>], delay: i64) -> Vec<CoreMessage> {
    let mut out = Vec::new();
    let mut max_ts = i64::MIN;
    for rows in batches {
        let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let k: Vec<Option<i64>> = rows.iter().map(|r| (r.1 != 3).then_some(r.1)).collect();
        let s: Vec<String> = rows.iter().map(|r| format!("key-{}", r.1 % 3)).collect();
        let v: Vec<Option<f64>> = rows.iter().map(|r| r.2).collect();
        let batch = RecordBatch::try_new(
            stream_schema(),
            vec![
                Arc::new(Int64Array::from(ts.clone())),
                Arc::new(Int64Array::from(k)),
                Arc::new(StringArray::from(s)),
                Arc::new(Float64Array::from(v)),
                Arc::new(Int64Array::from(ts.clone())),
            ],
        )
        .expect("batch");
        out.push(CoreMessage::Data { source: 0, batch });
        max_ts = ts.iter().copied().fold(max_ts, i64::max);
        out.push(CoreMessage::Watermark {
            source: 0,
            ts: max_ts - delay,
        });
    }
    out.push(CoreMessage::EndOfInput { source: 0 });
    out
}

fn run(r: &mut Reactor, msgs: &[CoreMessage], out: &mut Vec<RecordBatch>) {
    for m in msgs {
        r.run(m.clone(), Budget::default()).expect("message runs");
        out.extend(r.take_output(0));
        out.extend(r.take_late(0));
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow_cast::display::array_value_to_string(c, i).expect("display"))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

fn batches() -> impl Strategy<Value = Vec<Vec<(i64, i64, Option<f64>)>>> {
    let row = (
        0i64..6_000,
        0i64..5,
        proptest::option::weighted(0.9, -50.0f64..50.0),
    );
    proptest::collection::vec(proptest::collection::vec(row, 1..30), 1..12).prop_map(|mut bs| {
        // Mostly increasing time, with jitter: shift batch i by i * 500 ms.
        for (i, b) in bs.iter_mut().enumerate() {
            for r in b.iter_mut() {
                r.0 += i as i64 * 500;
            }
        }
        bs
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn restore_then_continue_equals_uninterrupted(
        input in batches(),
        window in prop_oneof![
            Just(r#"{"kind": "tumbling", "size_ms": 1000}"#),
            Just(r#"{"kind": "sliding", "size_ms": 3000, "slide_ms": 1000}"#),
        ],
        keys in prop_oneof![Just("[]"), Just(r#"["k"]"#), Just(r#"["s"]"#), Just(r#"["s", "k"]"#)],
        emit in prop_oneof![
            Just(r#"{"kind": "on_window_close"}"#),
            Just(r#"{"kind": "final"}"#),
            Just(r#"{"kind": "on_update"}"#),
            Just(r#"{"kind": "changelog"}"#),
        ],
        lateness in prop_oneof![Just(0i64), Just(700)],
        delay in 0i64..800,
        cut_frac in 0.0f64..1.0,
    ) {
        let plan = plan(window, keys, emit, lateness);
        let msgs = messages(&input, delay);
        let cut = ((msgs.len() as f64) * cut_frac) as usize;

        let mut whole = Vec::new();
        run(&mut reactor(&plan), &msgs, &mut whole);

        let mut resumed = Vec::new();
        let mut first = reactor(&plan);
        run(&mut first, &msgs[..cut], &mut resumed);
        let saved = first.snapshot().expect("snapshot");
        drop(first);
        let mut second = reactor(&plan);
        second.restore_query(0, &saved[0]).expect("restore");
        // A snapshot of the restored reactor is the snapshot it was restored from, except
        // for what depends on hash-table order (nothing saved does).
        prop_assert_eq!(&second.snapshot().expect("snapshot again"), &saved);
        run(&mut second, &msgs[cut..], &mut resumed);

        prop_assert_eq!(rows(&resumed), rows(&whole));
    }
}

#[test]
fn damaged_or_foreign_state_is_an_error() {
    let p = plan(
        r#"{"kind": "tumbling", "size_ms": 1000}"#,
        r#"["k"]"#,
        r#"{"kind": "on_window_close"}"#,
        0,
    );
    let mut r = reactor(&p);
    let mut out = Vec::new();
    run(
        &mut r,
        &messages(&[vec![(10, 1, Some(1.0)), (1500, 2, None)]], 0)[..1],
        &mut out,
    );
    let saved = r.snapshot().unwrap().remove(0);
    // Every truncation is refused or restores the very same state; none panics.
    for cut in 0..saved.len() {
        let mut fresh = reactor(&p);
        if fresh.restore_query(0, &saved[..cut]).is_ok() {
            assert_eq!(fresh.snapshot().unwrap()[0], saved);
        }
    }
    // State of another pipeline (string keys instead of integer keys) is refused clearly.
    let other = plan(
        r#"{"kind": "tumbling", "size_ms": 1000}"#,
        r#"["s"]"#,
        r#"{"kind": "on_window_close"}"#,
        0,
    );
    let err = reactor(&other).restore_query(0, &saved).unwrap_err();
    assert!(err.to_string().contains("pipeline changed"), "{err}");
    // A query that does not exist is refused.
    assert!(reactor(&p).restore_query(5, &saved).is_err());
}

/// A byte flipped anywhere in a query's saved state (its own fields as well as its
/// operators') is refused, or restores into a reactor that goes on without panicking or
/// hanging (a watchdog fails the test if the runs do not finish).
#[test]
fn any_flipped_byte_is_refused_or_harmless_never_a_hang() {
    let p = plan(
        r#"{"kind": "sliding", "size_ms": 3000, "slide_ms": 1000}"#,
        r#"["s", "k"]"#,
        r#"{"kind": "on_window_close"}"#,
        500,
    );
    let rows: Vec<Vec<(i64, i64, Option<f64>)>> = (0..6)
        .map(|b| {
            (0..20)
                .map(|i| (b * 700 + i * 37, i % 5, Some(i as f64)))
                .collect()
        })
        .collect();
    let msgs = messages(&rows, 200);
    let cut = msgs.len() / 2;
    let mut r = reactor(&p);
    run(&mut r, &msgs[..cut], &mut Vec::new());
    let saved = r.snapshot().unwrap().remove(0);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut refused = 0usize;
        for i in 0..saved.len() {
            let mut bytes = saved.clone();
            bytes[i] ^= 0x5a;
            let mut fresh = reactor(&p);
            if fresh.restore_query(0, &bytes).is_err() {
                refused += 1;
                continue;
            }
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for m in &msgs[cut..] {
                    let _ = fresh.run(m.clone(), Budget::default());
                    fresh.take_output(0);
                }
            }));
            assert!(
                outcome.is_ok(),
                "flipping byte {i} made the restored reactor panic"
            );
        }
        let _ = done_tx.send(refused);
    });
    let refused = done_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("a restored reactor hung (or panicked) on damaged state");
    assert!(refused > 0);
}
