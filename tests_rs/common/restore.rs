//! The harness of the checkpoint-restore tests (`checkpoint_restore.rs`,
//! `checkpoint_restore_more.rs`): build a reactor for a plan, run a script of messages,
//! compare results row by row, and run a script once whole and once cut by snapshot/restore
//! cycles. Included by each test crate with `#[path]`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use laminar_core::engine::{compile, QueryPlan, SourceSchema, TIME_COLUMN};
use laminar_core::operator::lookup_join::{LookupTables, TableDef};
use laminar_core::reactor::{Budget, CoreMessage, Reactor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Every aggregate function over the columns of [`rows_schema`], as plan JSON.
pub const ALL_AGGS: &str = r#"[{"name": "n", "func": "count"},
                     {"name": "nv", "func": "count", "column": "v"},
                     {"name": "sum_v", "func": "sum", "column": "v"},
                     {"name": "sum_k", "func": "sum", "column": "k"},
                     {"name": "lo", "func": "min", "column": "v"},
                     {"name": "hi", "func": "max", "column": "k"},
                     {"name": "mean", "func": "avg", "column": "v"},
                     {"name": "first_v", "func": "first", "column": "v"},
                     {"name": "last_k", "func": "last", "column": "k"}]"#;

pub fn int_col(v: Vec<Option<i64>>) -> Arc<Int64Array> {
    Arc::new(Int64Array::from(v))
}

/// A query, its sources (query input `i` reads source `i`) and the engine's lookup tables.
pub struct Setup {
    pub plan: QueryPlan,
    pub sources: Vec<SchemaRef>,
    pub tables: LookupTables,
}

impl Setup {
    pub fn new(json: &str, sources: Vec<SchemaRef>, tables: Vec<TableDef>) -> Self {
        Setup {
            plan: QueryPlan::from_json(json).expect("valid plan"),
            sources,
            tables: tables.into_iter().map(|t| (t.name.clone(), t)).collect(),
        }
    }

    pub fn reactor(&self) -> Reactor {
        let schemas: HashMap<String, SourceSchema> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("src{i}"),
                    SourceSchema {
                        stream: s.clone(),
                        time_type: DataType::Int64,
                    },
                )
            })
            .collect();
        let compiled = compile(&self.plan, &schemas, &self.tables).expect("plan compiles");
        let mut r = Reactor::new(64);
        let ids: Vec<u32> = (0..self.sources.len() as u32).collect();
        r.add_query(&ids, compiled.graph);
        r
    }
}

pub fn run(r: &mut Reactor, msgs: &[CoreMessage], out: &mut Vec<RecordBatch>) {
    for m in msgs {
        r.run(m.clone(), Budget::default()).expect("message runs");
        out.extend(r.take_output(0));
        out.extend(r.take_late(0));
    }
}

pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
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

/// Runs `msgs` whole, and again with a snapshot/restore cycle at each cut (fractions of the
/// script); both runs must emit the same rows in the same order and end with the same
/// counters.
pub fn check_restore(
    setup: &Setup,
    msgs: &[CoreMessage],
    cuts: &[f64],
) -> Result<(), TestCaseError> {
    let mut whole = Vec::new();
    let mut uninterrupted = setup.reactor();
    run(&mut uninterrupted, msgs, &mut whole);

    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|f| ((msgs.len() as f64) * f) as usize)
        .collect();
    cuts.sort_unstable();
    let mut resumed = Vec::new();
    let mut r = setup.reactor();
    let mut done = 0;
    for cut in cuts {
        run(&mut r, &msgs[done..cut], &mut resumed);
        done = cut;
        let saved = r.snapshot().expect("snapshot");
        r = setup.reactor();
        r.restore_query(0, &saved[0]).expect("restore");
        // Nothing saved depends on hash order: the restored state saves to the same bytes.
        prop_assert_eq!(&r.snapshot().expect("snapshot again"), &saved);
    }
    run(&mut r, &msgs[done..], &mut resumed);
    prop_assert_eq!(rows(&resumed), rows(&whole));
    // The counters (late rows, peak state) carry over too.
    prop_assert_eq!(r.query_metrics(0), uninterrupted.query_metrics(0));
    Ok(())
}

/// A one-step window aggregation over `rows_schema()` computing [`ALL_AGGS`]; `window` is the
/// window's JSON, `keys` a JSON list, `late` the late policy ("drop" or "side_output").
pub fn window_setup(window: &str, keys: &str, emit: &str, lateness: i64, late: &str) -> Setup {
    let json = format!(
        r#"{{"inputs": ["src0"], "ops": [{{"op": "window_aggregate", "window": {window},
            "keys": {keys}, "allowed_lateness_ms": {lateness}, "late": "{late}", "emit": {emit},
            "aggs": {ALL_AGGS}}}]}}"#
    );
    Setup::new(&json, vec![rows_schema()], Vec::new())
}

/// `ts`, a nullable integer key `k`, a string key `s`, a nullable float `v`, the hidden time.
pub fn rows_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, false),
        Field::new("v", DataType::Float64, true),
        Field::new(TIME_COLUMN, DataType::Int64, false),
    ]))
}

/// Per batch of rows `(ts, key, value)`: the batch, the bounded-delay watermark it produces,
/// and, with `ticks`, a processing-time tick (for periodic emits).
pub fn rows_messages(
    batches: &[Vec<(i64, i64, Option<f64>)>],
    delay: i64,
    ticks: bool,
) -> Vec<CoreMessage> {
    let mut out = Vec::new();
    let mut max_ts = i64::MIN;
    for (i, rows) in batches.iter().enumerate() {
        let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let k: Vec<Option<i64>> = rows.iter().map(|r| (r.1 != 3).then_some(r.1)).collect();
        let s: Vec<String> = rows.iter().map(|r| format!("key-{}", r.1 % 3)).collect();
        let v: Vec<Option<f64>> = rows.iter().map(|r| r.2).collect();
        let batch = RecordBatch::try_new(
            rows_schema(),
            vec![
                Arc::new(Int64Array::from(ts.clone())),
                int_col(k),
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
        if ticks {
            out.push(CoreMessage::Tick {
                now: (i as i64 + 1) * 700,
            });
        }
    }
    out.push(CoreMessage::EndOfInput { source: 0 });
    out
}

/// Batches of rows `(ts, key, value)` for [`rows_messages`]: up to `max_batches` batches of up
/// to `max_rows` rows, times in `0..jitter` shifted by `i * step` ms for batch `i` (mostly
/// increasing, out of order within `jitter`), keys in `0..5`, values sometimes null.
pub fn row_batches(
    jitter: i64,
    step: i64,
    max_rows: usize,
    max_batches: usize,
) -> impl Strategy<Value = Vec<Vec<(i64, i64, Option<f64>)>>> {
    let row = (
        0i64..jitter,
        0i64..5,
        proptest::option::weighted(0.9, -50.0f64..50.0),
    );
    proptest::collection::vec(proptest::collection::vec(row, 1..max_rows), 1..max_batches).prop_map(
        move |mut bs| {
            for (i, b) in bs.iter_mut().enumerate() {
                for r in b.iter_mut() {
                    r.0 += i as i64 * step;
                }
            }
            bs
        },
    )
}
