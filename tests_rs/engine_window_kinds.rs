//! End-to-end tests of sliding and session windows and of the changelog emit strategy through
//! `laminar_core::engine::Engine`, against a deliberately plain model of `docs/SEMANTICS.md`:
//! - the watermark after a batch is `max event time seen - delay`; rows are judged against the
//!   watermark `W` in force before their batch;
//! - sliding: a row counts in each of its windows `[s, s + size)` with `s + size + L > W`;
//! - session: a row is late when `t < W - L`; the other rows of a key form sessions of rows
//!   less than `gap` apart, `[first, last + gap)`;
//! - changelog: summing the weights per distinct row leaves exactly the final rows.
//!
//! Values are small integers (as floats), so sums are exact in any order.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use laminar_core::engine::{EmitSpec, Engine, EngineConfig, OpSpec, QueryPlan, SourceConfig};
use laminar_core::operator::aggregate::{AggFunc, AggSpec};
use laminar_core::operator::window::WindowSpec;
use laminar_core::operator::window_aggregate::LatePolicy;
use laminar_core::time::clock::ManualClock;
use laminar_core::time::watermark::WatermarkStrategy;
use proptest::prelude::*;

/// `(window_start, window_end, k, n, total)`.
type Row = (i64, i64, i64, i64, i64);

#[derive(Debug, Clone)]
struct Scenario {
    /// Batches of `(ts, k, v)`.
    batches: Vec<Vec<(i64, i64, i64)>>,
    delay: i64,
    lateness: i64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec((0i64..400, 0i64..3, 0i64..10), 0..80),
        prop::collection::vec(0usize..80, 0..6),
        0i64..60,
        0i64..40,
    )
        .prop_map(|(mut rows, cuts, delay, lateness)| {
            // Mostly ascending time with disorder.
            rows.sort_by_key(|r| r.0);
            for (i, r) in rows.iter_mut().enumerate() {
                r.0 -= (i as i64 * 7) % 50;
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
            cuts.sort_unstable();
            let mut batches = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([rows.len()]) {
                batches.push(rows[prev..c].to_vec());
                prev = c;
            }
            Scenario {
                batches,
                delay,
                lateness,
            }
        })
}

/// Calls `f(W before the batch, row)` for every row, tracking the watermark as the engine does.
fn walk(sc: &Scenario, mut f: impl FnMut(Option<i64>, (i64, i64, i64))) {
    let mut wm: Option<i64> = None;
    let mut max_seen: Option<i64> = None;
    for b in &sc.batches {
        for &r in b {
            f(wm, r);
        }
        if let Some(m) = b.iter().map(|r| r.0).max() {
            max_seen = Some(max_seen.map_or(m, |x: i64| x.max(m)));
            let cand = max_seen.unwrap() - sc.delay;
            wm = Some(wm.map_or(cand, |w| w.max(cand)));
        }
    }
}

fn sliding_model(sc: &Scenario, size: i64, slide: i64) -> Vec<Row> {
    let mut groups: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    walk(sc, |wm, (t, k, v)| {
        let last = t - t.rem_euclid(slide);
        let mut s = last;
        while s > t - size {
            if wm.is_none_or(|w| s + size + sc.lateness > w) {
                let e = groups.entry((s, k)).or_default();
                e.0 += 1;
                e.1 += v;
            }
            s -= slide;
        }
    });
    let mut out: Vec<Row> = groups
        .into_iter()
        .map(|((s, k), (n, total))| (s, s + size, k, n, total))
        .collect();
    out.sort();
    out
}

fn session_model(sc: &Scenario, gap: i64) -> Vec<Row> {
    let mut per_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    walk(sc, |wm, (t, k, v)| {
        if wm.is_none_or(|w| t >= w - sc.lateness) {
            per_key.entry(k).or_default().push((t, v));
        }
    });
    let mut out = Vec::new();
    for (k, mut rows) in per_key {
        rows.sort();
        let (mut first, mut last, mut n, mut total) = (rows[0].0, rows[0].0, 0, 0);
        for &(t, v) in &rows {
            if t - last >= gap {
                out.push((first, last + gap, k, n, total));
                (first, n, total) = (t, 0, 0);
            }
            last = t;
            n += 1;
            total += v;
        }
        out.push((first, last + gap, k, n, total));
    }
    out.sort();
    out
}

fn run(sc: &Scenario, window: WindowSpec, emit: EmitSpec) -> Vec<(Row, i64)> {
    let clock = ManualClock::new(0);
    let mut engine = Engine::new(EngineConfig::default(), Arc::new(clock)).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    engine
        .add_source(SourceConfig {
            name: "s".into(),
            time_column: "ts".into(),
            watermark: WatermarkStrategy::BoundedDelay { delay_ms: sc.delay },
            punctuation_column: None,
            max_future_ms: None,
            idle_timeout_ms: None,
            schema: Some(schema.clone()),
        })
        .unwrap();
    let agg = |name: &str, func, column: Option<&str>| AggSpec {
        name: name.into(),
        func,
        column: column.map(str::to_string),
    };
    engine
        .add_query(
            "q",
            QueryPlan {
                inputs: vec!["s".into()],
                ops: vec![OpSpec::WindowAggregate {
                    window,
                    keys: vec!["k".into()],
                    aggs: vec![
                        agg("n", AggFunc::Count, None),
                        agg("total", AggFunc::Sum, Some("v")),
                    ],
                    allowed_lateness_ms: sc.lateness,
                    late: LatePolicy::Drop,
                    emit,
                }],
            },
        )
        .unwrap();
    let mut out = Vec::new();
    let mut take = |engine: &mut Engine| {
        for b in engine.take_output("q").unwrap() {
            let col = |n: &str| {
                b.column_by_name(n)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            };
            let (s, e, k, n) = (col("window_start"), col("window_end"), col("k"), col("n"));
            let total: Vec<f64> = b
                .column_by_name("total")
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec();
            let weight = b
                .column_by_name("weight")
                .map(|w| w.as_primitive::<Int64Type>().values().to_vec());
            for i in 0..b.num_rows() {
                let w = weight.as_ref().map_or(1, |w| w[i]);
                out.push(((s[i], e[i], k[i], n[i], total[i] as i64), w));
            }
        }
    };
    for batch in &sc.batches {
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(batch.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(batch.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(
                    batch.iter().map(|r| r.2 as f64),
                )),
            ],
        )
        .unwrap();
        engine.push("s", &[b]).unwrap();
        take(&mut engine);
    }
    engine.flush().unwrap();
    take(&mut engine);
    out
}

fn final_rows(rows: Vec<(Row, i64)>) -> Vec<Row> {
    let mut out: Vec<Row> = rows
        .into_iter()
        .map(|(r, w)| {
            assert_eq!(w, 1, "final() emits no weights");
            r
        })
        .collect();
    out.sort();
    out
}

/// Sums the weights per distinct row; every row must end at 0 or 1.
fn fold(rows: Vec<(Row, i64)>) -> Vec<Row> {
    let mut sums: BTreeMap<Row, i64> = BTreeMap::new();
    for (r, w) in rows {
        *sums.entry(r).or_default() += w;
    }
    sums.into_iter()
        .filter_map(|(r, w)| {
            assert!(w == 0 || w == 1, "row {r:?} folds to weight {w}");
            (w == 1).then_some(r)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sliding_matches_model(sc in scenario(), size in 1i64..60, slide_div in 1i64..5) {
        let slide = (size / slide_div).max(1);
        let window = WindowSpec::Sliding { size_ms: size, slide_ms: slide, offset_ms: 0 };
        let want = sliding_model(&sc, size, slide);
        prop_assert_eq!(final_rows(run(&sc, window.clone(), EmitSpec::Final)), want.clone());
        prop_assert_eq!(fold(run(&sc, window, EmitSpec::Changelog)), want);
    }

    #[test]
    fn session_matches_model(sc in scenario(), gap in 1i64..40) {
        let window = WindowSpec::Session { gap_ms: gap };
        let want = session_model(&sc, gap);
        prop_assert_eq!(final_rows(run(&sc, window.clone(), EmitSpec::Final)), want.clone());
        prop_assert_eq!(fold(run(&sc, window, EmitSpec::Changelog)), want);
    }

    #[test]
    fn tumbling_changelog_folds_to_final(sc in scenario(), size in 1i64..60) {
        let window = WindowSpec::Tumbling { size_ms: size, offset_ms: 0 };
        let want = final_rows(run(&sc, window.clone(), EmitSpec::Final));
        prop_assert_eq!(want.clone(), sliding_model(&sc, size, size));
        prop_assert_eq!(fold(run(&sc, window, EmitSpec::Changelog)), want);
    }
}

#[test]
fn a_row_that_bridges_two_sessions_merges_them() {
    // Key 0: rows at 0 and 20 (gap 15: two sessions), then 10 bridges them.
    let sc = Scenario {
        batches: vec![vec![(0, 0, 1), (20, 0, 2)], vec![(10, 0, 4)]],
        delay: 100,
        lateness: 0,
    };
    let window = WindowSpec::Session { gap_ms: 15 };
    assert_eq!(
        final_rows(run(&sc, window.clone(), EmitSpec::Final)),
        vec![(0, 35, 0, 3, 7)]
    );
    // The changelog retracts both sessions it had emitted and inserts the merged one.
    let log = run(&sc, window, EmitSpec::Changelog);
    assert_eq!(
        log,
        vec![
            ((0, 15, 0, 1, 1), 1),
            ((20, 35, 0, 1, 2), 1),
            ((0, 15, 0, 1, 1), -1),
            ((20, 35, 0, 1, 2), -1),
            ((0, 35, 0, 3, 7), 1),
        ]
    );
}
