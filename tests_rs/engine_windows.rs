//! End-to-end tests of tumbling-window aggregation through `laminar_core::engine::Engine`.
//!
//! The property tests compare the engine with a deliberately plain reference model of the
//! documented semantics:
//! - the watermark after a batch is `max event time seen so far - delay`, never decreasing,
//!   and there is no watermark before the first non-empty batch;
//! - a row is late (dropped or sent to the late output) iff its window start `s` satisfies
//!   `s + size + lateness <= W`, where `W` is the watermark in force *before* its batch;
//! - at flush every remaining window closes;
//! - `count()` counts rows, `count(col)` non-null values; sum/min/max/avg/first/last skip nulls
//!   and are null for a group without a non-null value; first/last follow arrival order.
//!
//! The unit tests pin down late side output, allowed lateness, timestamp-typed time columns,
//! the error cases, idle sources in a union and the future-timestamp cap.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use laminar_core::engine::{EmitSpec, Engine, EngineConfig, OpSpec, QueryPlan, SourceConfig};
use laminar_core::operator::aggregate::{AggFunc, AggSpec};
use laminar_core::operator::window::WindowSpec;
use laminar_core::operator::window_aggregate::LatePolicy;
use laminar_core::reactor::QueryMetrics;
use laminar_core::time::clock::ManualClock;
use laminar_core::time::watermark::WatermarkStrategy;
use laminar_core::Error;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn new_engine() -> (Engine, ManualClock) {
    let clock = ManualClock::new(0);
    (
        Engine::new(EngineConfig::default(), Arc::new(clock.clone())).unwrap(),
        clock,
    )
}

fn source(name: &str, delay_ms: i64) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        time_column: "ts".into(),
        watermark: WatermarkStrategy::BoundedDelay { delay_ms },
        punctuation_column: None,
        max_future_ms: None,
        idle_timeout_ms: None,
        schema: None,
    }
}

fn agg(name: &str, func: AggFunc, column: Option<&str>) -> AggSpec {
    AggSpec {
        name: name.into(),
        func,
        column: column.map(str::to_string),
    }
}

fn window_op(
    size_ms: i64,
    offset_ms: i64,
    keys: &[&str],
    aggs: Vec<AggSpec>,
    allowed_lateness_ms: i64,
    late: LatePolicy,
) -> OpSpec {
    OpSpec::WindowAggregate {
        window: WindowSpec::Tumbling { size_ms, offset_ms },
        keys: keys.iter().map(|k| k.to_string()).collect(),
        aggs,
        allowed_lateness_ms,
        late,
        emit: EmitSpec::Final,
    }
}

fn plan(inputs: &[&str], op: OpSpec) -> QueryPlan {
    QueryPlan {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ops: vec![op],
    }
}

/// Columns `ts` (int64), `k` (int64), `v` (float64).
fn tkv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
    ]))
}

fn tkv(ts: &[i64], k: &[i64], v: &[f64]) -> RecordBatch {
    RecordBatch::try_new(
        tkv_schema(),
        vec![
            Arc::new(Int64Array::from(ts.to_vec())),
            Arc::new(Int64Array::from(k.to_vec())),
            Arc::new(Float64Array::from(v.to_vec())),
        ],
    )
    .unwrap()
}

/// `count` and `sum(v)` grouped by `k`, the query of most unit tests.
fn count_sum_plan(inputs: &[&str], size: i64, lateness: i64, late: LatePolicy) -> QueryPlan {
    plan(
        inputs,
        window_op(
            size,
            0,
            &["k"],
            vec![
                agg("n", AggFunc::Count, None),
                agg("total", AggFunc::Sum, Some("v")),
            ],
            lateness,
            late,
        ),
    )
}

/// An engine with source "s" (bounded delay `delay`) and query "q" ([`count_sum_plan`]).
fn count_sum_engine(
    delay: i64,
    size: i64,
    lateness: i64,
    late: LatePolicy,
) -> (Engine, ManualClock) {
    let (mut engine, clock) = new_engine();
    engine.add_source(source("s", delay)).unwrap();
    engine
        .add_query("q", count_sum_plan(&["s"], size, lateness, late))
        .unwrap();
    (engine, clock)
}

fn col_i64(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    c.as_primitive::<Int64Type>().values().to_vec()
}

fn col_f64(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    c.as_primitive::<Float64Type>().iter().collect()
}

/// `(window_start, window_end, k, n, total)` of count_sum_plan results, sorted.
fn count_sum_rows(batches: &[RecordBatch]) -> Vec<(i64, i64, i64, i64, f64)> {
    let mut rows = Vec::new();
    for b in batches {
        let (s, e, k, n) = (
            col_i64(b, "window_start"),
            col_i64(b, "window_end"),
            col_i64(b, "k"),
            col_i64(b, "n"),
        );
        let t = col_f64(b, "total");
        for i in 0..b.num_rows() {
            rows.push((s[i], e[i], k[i], n[i], t[i].unwrap()));
        }
    }
    rows.sort_by_key(|r| (r.0, r.2));
    rows
}

fn metrics(engine: &mut Engine, query: &str) -> QueryMetrics {
    engine
        .query_reports()
        .expect("reports")
        .into_iter()
        .find(|r| r.name == query)
        .expect("query exists")
        .metrics
}

fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// One nullable int64 column `k`.
    Int,
    /// One nullable utf8 column `s`.
    Str,
    /// Both: `k` and `s`.
    IntStr,
}

impl KeyKind {
    fn columns(self) -> &'static [&'static str] {
        match self {
            KeyKind::Int => &["k"],
            KeyKind::Str => &["s"],
            KeyKind::IntStr => &["k", "s"],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum KeyVal {
    Int(Option<i64>),
    Str(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Event {
    ts: i64,
    key: Vec<KeyVal>,
    value: Option<f64>,
}

impl Event {
    fn sort_key(&self) -> (i64, Vec<KeyVal>, Option<u64>) {
        (self.ts, self.key.clone(), self.value.map(f64::to_bits))
    }
}

/// One result row: window bounds, key, and the eight aggregates of `model_aggs`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    start: i64,
    end: i64,
    key: Vec<KeyVal>,
    n: i64,
    nv: i64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    avg: Option<f64>,
    first: Option<f64>,
    last: Option<f64>,
}

fn model_aggs() -> Vec<AggSpec> {
    vec![
        agg("n", AggFunc::Count, None),
        agg("nv", AggFunc::Count, Some("v")),
        agg("sum", AggFunc::Sum, Some("v")),
        agg("min", AggFunc::Min, Some("v")),
        agg("max", AggFunc::Max, Some("v")),
        agg("avg", AggFunc::Avg, Some("v")),
        agg("first", AggFunc::First, Some("v")),
        agg("last", AggFunc::Last, Some("v")),
    ]
}

#[derive(Debug, Default)]
struct Group {
    rows: i64,
    values: Vec<f64>,
}

#[derive(Debug)]
struct ModelResult {
    rows: Vec<Row>,
    late: Vec<Event>,
    /// Arrival indices of the late events.
    late_idx: Vec<usize>,
}

fn window_start(ts: i64, size: i64, offset: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

/// The reference semantics, written as plainly as possible. `batches` are pushed in order.
fn model(batches: &[Vec<Event>], size: i64, offset: i64, lateness: i64, delay: i64) -> ModelResult {
    let mut groups: BTreeMap<(i64, Vec<KeyVal>), Group> = BTreeMap::new();
    let mut watermark: Option<i64> = None;
    let mut max_seen: Option<i64> = None;
    let mut late = Vec::new();
    let mut late_idx = Vec::new();
    let mut index = 0;
    for batch in batches {
        for e in batch {
            let s = window_start(e.ts, size, offset);
            let is_late = matches!(watermark, Some(w) if s + size + lateness <= w);
            if is_late {
                late.push(e.clone());
                late_idx.push(index);
            } else {
                let g = groups.entry((s, e.key.clone())).or_default();
                g.rows += 1;
                if let Some(v) = e.value {
                    g.values.push(v);
                }
            }
            index += 1;
        }
        // Only after the whole batch has been judged does it move the watermark.
        if let Some(batch_max) = batch.iter().map(|e| e.ts).max() {
            max_seen = Some(max_seen.map_or(batch_max, |m| m.max(batch_max)));
            let candidate = max_seen.unwrap() - delay;
            watermark = Some(watermark.map_or(candidate, |w| w.max(candidate)));
        }
    }
    let rows = groups
        .into_iter()
        .map(|((start, key), g)| {
            let vs = &g.values;
            let sum = (!vs.is_empty()).then(|| vs.iter().sum::<f64>());
            Row {
                start,
                end: start + size,
                key,
                n: g.rows,
                nv: vs.len() as i64,
                sum,
                min: vs.iter().copied().reduce(f64::min),
                max: vs.iter().copied().reduce(f64::max),
                avg: sum.map(|s| s / vs.len() as f64),
                first: vs.first().copied(),
                last: vs.last().copied(),
            }
        })
        .collect();
    ModelResult {
        rows,
        late,
        late_idx,
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the engine with generated data
// ---------------------------------------------------------------------------------------------

fn event_schema(kind: KeyKind) -> SchemaRef {
    let mut fields = vec![Field::new("ts", DataType::Int64, false)];
    for c in kind.columns() {
        let dt = if *c == "k" {
            DataType::Int64
        } else {
            DataType::Utf8
        };
        fields.push(Field::new(*c, dt, true));
    }
    fields.push(Field::new("v", DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

fn event_batch(kind: KeyKind, events: &[Event]) -> RecordBatch {
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        events.iter().map(|e| e.ts),
    ))];
    for (i, name) in kind.columns().iter().enumerate() {
        // The column type follows the kind, not the data (the batch may be empty).
        let col: ArrayRef = if *name == "k" {
            Arc::new(
                events
                    .iter()
                    .map(|e| match &e.key[i] {
                        KeyVal::Int(k) => *k,
                        KeyVal::Str(_) => unreachable!("k holds ints"),
                    })
                    .collect::<Int64Array>(),
            )
        } else {
            Arc::new(
                events
                    .iter()
                    .map(|e| match &e.key[i] {
                        KeyVal::Str(s) => s.clone(),
                        KeyVal::Int(_) => unreachable!("s holds strings"),
                    })
                    .collect::<StringArray>(),
            )
        };
        columns.push(col);
    }
    columns.push(Arc::new(
        events.iter().map(|e| e.value).collect::<Float64Array>(),
    ));
    RecordBatch::try_new(event_schema(kind), columns).unwrap()
}

fn read_keys(kind: KeyKind, b: &RecordBatch, i: usize) -> Vec<KeyVal> {
    kind.columns()
        .iter()
        .map(|c| {
            let col = b.column_by_name(c).unwrap();
            if *c == "k" {
                let a = col.as_primitive::<Int64Type>();
                KeyVal::Int(a.is_valid(i).then(|| a.value(i)))
            } else {
                let a = col.as_string::<i32>();
                KeyVal::Str(a.is_valid(i).then(|| a.value(i).to_string()))
            }
        })
        .collect()
}

fn read_rows(kind: KeyKind, batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in batches {
        let (start, end) = (col_i64(b, "window_start"), col_i64(b, "window_end"));
        let (n, nv) = (col_i64(b, "n"), col_i64(b, "nv"));
        let f = |name| col_f64(b, name);
        let (sum, min, max, avg, first, last) = (
            f("sum"),
            f("min"),
            f("max"),
            f("avg"),
            f("first"),
            f("last"),
        );
        for i in 0..b.num_rows() {
            rows.push(Row {
                start: start[i],
                end: end[i],
                key: read_keys(kind, b, i),
                n: n[i],
                nv: nv[i],
                sum: sum[i],
                min: min[i],
                max: max[i],
                avg: avg[i],
                first: first[i],
                last: last[i],
            });
        }
    }
    rows.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
    rows
}

fn read_events(kind: KeyKind, batches: &[RecordBatch]) -> Vec<Event> {
    let mut out = Vec::new();
    for b in batches {
        let ts = col_i64(b, "ts");
        let v = col_f64(b, "v");
        for i in 0..b.num_rows() {
            out.push(Event {
                ts: ts[i],
                key: read_keys(kind, b, i),
                value: v[i],
            });
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Scenario {
    kind: KeyKind,
    events: Vec<Event>,
    /// Largest jitter the events may have (every ts >= its base - max_jitter).
    max_jitter: i64,
    size: i64,
    offset: i64,
    lateness: i64,
    delay: i64,
    /// Sorted cut points in `0..=events.len()`; consecutive equal cuts make empty batches.
    cuts: Vec<usize>,
    /// `joins[i]`: batch `i` goes into the same `push` call as batch `i - 1`.
    joins: Vec<bool>,
    late: LatePolicy,
}

fn split(events: &[Event], cuts: &[usize]) -> Vec<Vec<Event>> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain(std::iter::once(&events.len())) {
        out.push(events[from..c].to_vec());
        from = c;
    }
    out
}

struct EngineResult {
    rows: Vec<Row>,
    late: Vec<Event>,
    metrics: QueryMetrics,
}

fn run_engine(sc: &Scenario, cuts: &[usize], delay: i64) -> EngineResult {
    let (mut engine, _clock) = new_engine();
    engine.add_source(source("s", delay)).unwrap();
    let op = window_op(
        sc.size,
        sc.offset,
        sc.kind.columns(),
        model_aggs(),
        sc.lateness,
        sc.late,
    );
    engine.add_query("q", plan(&["s"], op)).unwrap();
    let batches: Vec<RecordBatch> = split(&sc.events, cuts)
        .iter()
        .map(|b| event_batch(sc.kind, b))
        .collect();
    // Group consecutive batches into push calls as `joins` says.
    let mut calls: Vec<Vec<RecordBatch>> = Vec::new();
    for (i, b) in batches.into_iter().enumerate() {
        match calls.last_mut() {
            Some(call) if sc.joins.get(i).copied().unwrap_or(false) => call.push(b),
            _ => calls.push(vec![b]),
        }
    }
    let mut output = Vec::new();
    let mut late = Vec::new();
    for call in &calls {
        engine.push("s", call).unwrap();
        output.extend(engine.take_output("q").unwrap());
        late.extend(engine.take_late("q").unwrap());
    }
    engine.flush().unwrap();
    output.extend(engine.take_output("q").unwrap());
    late.extend(engine.take_late("q").unwrap());
    let schema = engine.output_schema("q").unwrap().unwrap();
    for b in &output {
        assert_eq!(
            b.schema(),
            schema,
            "every result batch has the declared output schema"
        );
    }
    EngineResult {
        rows: read_rows(sc.kind, &output),
        late: read_events(sc.kind, &late),
        metrics: metrics(&mut engine, "q"),
    }
}

fn close(a: Option<f64>, b: Option<f64>, n: i64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            (x - y).abs() <= 1e-9 * (n.max(1) as f64) * x.abs().max(y.abs()).max(1.0)
        }
        _ => false,
    }
}

/// Compares engine rows with model rows (both sorted by window and key).
fn compare_rows(got: &[Row], want: &[Row]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        got.iter()
            .map(|r| (r.start, r.end, r.key.clone()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|r| (r.start, r.end, r.key.clone()))
            .collect::<Vec<_>>(),
        "windows/keys differ"
    );
    for (g, w) in got.iter().zip(want) {
        prop_assert_eq!(
            (g.n, g.nv),
            (w.n, w.nv),
            "counts differ: got {:?}, want {:?}",
            g,
            w
        );
        prop_assert_eq!(
            (g.min, g.max),
            (w.min, w.max),
            "min/max differ: got {:?}, want {:?}",
            g,
            w
        );
        prop_assert_eq!(
            (g.first, g.last),
            (w.first, w.last),
            "first/last differ: got {:?}, want {:?}",
            g,
            w
        );
        prop_assert!(
            close(g.sum, w.sum, w.nv),
            "sum differs: got {:?}, want {:?}",
            g,
            w
        );
        prop_assert!(
            close(g.avg, w.avg, w.nv),
            "avg differs: got {:?}, want {:?}",
            g,
            w
        );
    }
    Ok(())
}

fn check_against_model(sc: &Scenario) -> Result<(), TestCaseError> {
    let want = model(
        &split(&sc.events, &sc.cuts),
        sc.size,
        sc.offset,
        sc.lateness,
        sc.delay,
    );
    let got = run_engine(sc, &sc.cuts, sc.delay);
    compare_rows(&got.rows, &want.rows)?;
    let ops = got.metrics.operators;
    let n_late = want.late.len() as u64;
    match sc.late {
        LatePolicy::Drop => {
            prop_assert_eq!(ops.late_dropped, n_late);
            prop_assert_eq!(ops.late_side_output, 0);
            prop_assert!(got.late.is_empty());
        }
        LatePolicy::SideOutput => {
            prop_assert_eq!(ops.late_side_output, n_late);
            prop_assert_eq!(ops.late_dropped, 0);
            let mut g = got.late.clone();
            let mut w = want.late.clone();
            g.sort_by_key(Event::sort_key);
            w.sort_by_key(Event::sort_key);
            prop_assert_eq!(g, w, "late side output differs from the model's late rows");
        }
    }
    prop_assert_eq!(got.metrics.rows_in, sc.events.len() as u64);
    prop_assert_eq!(got.metrics.rows_out, want.rows.len() as u64);
    prop_assert_eq!(ops.open_windows, 0, "flush closes every window");
    prop_assert_eq!(ops.live_groups, 0, "flush releases every group");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn key_strategy(kind: KeyKind) -> BoxedStrategy<Vec<KeyVal>> {
    let int = prop_oneof![1 => Just(None), 7 => (-2i64..4).prop_map(Some)].prop_map(KeyVal::Int);
    let names = vec!["a", "b", "c", "dd", ""];
    let string = prop_oneof![
        1 => Just(None),
        7 => proptest::sample::select(names).prop_map(|s| Some(s.to_string())),
    ]
    .prop_map(KeyVal::Str);
    match kind {
        KeyKind::Int => int.prop_map(|k| vec![k]).boxed(),
        KeyKind::Str => string.prop_map(|s| vec![s]).boxed(),
        KeyKind::IntStr => (int, string).prop_map(|(k, s)| vec![k, s]).boxed(),
    }
}

fn value_strategy() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        1 => Just(None),
        3 => (-800i32..800).prop_map(|x| Some(f64::from(x) / 8.0)),
        2 => (-1.0e3f64..1.0e3).prop_map(Some),
    ]
}

/// Raw events as `(jitter seed, key, value)`; times are derived in `scenario`.
fn raw_events(kind: KeyKind) -> impl Strategy<Value = Vec<(i64, Vec<KeyVal>, Option<f64>)>> {
    proptest::collection::vec((0i64..1000, key_strategy(kind), value_strategy()), 0..160)
}

fn scenario(kind: KeyKind) -> impl Strategy<Value = Scenario> {
    (
        (1i64..12, 0i64..40, raw_events(kind)),
        (1i64..50, 0i64..50, 0i64..20, 0i64..30),
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
        proptest::collection::vec(any::<bool>(), 0..12),
        any::<bool>(),
    )
        .prop_map(
            move |(
                (spacing, max_jitter, raw),
                (size, offset, lateness, delay),
                cuts,
                joins,
                side,
            )| {
                let events: Vec<Event> = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (seed, key, value))| {
                        // Roughly ascending times (base), each pulled back by a jitter <= max_jitter.
                        let base = i as i64 * spacing / 4;
                        Event {
                            ts: base - seed % (max_jitter + 1),
                            key,
                            value,
                        }
                    })
                    .collect();
                let mut cuts: Vec<usize> =
                    cuts.iter().map(|ix| ix.index(events.len() + 1)).collect();
                cuts.sort_unstable();
                Scenario {
                    kind,
                    events,
                    max_jitter,
                    size,
                    offset: offset % size,
                    lateness,
                    delay,
                    cuts,
                    joins,
                    late: if side {
                        LatePolicy::SideOutput
                    } else {
                        LatePolicy::Drop
                    },
                }
            },
        )
}

fn other_cuts() -> impl Strategy<Value = Vec<proptest::sample::Index>> {
    proptest::collection::vec(any::<proptest::sample::Index>(), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn tumbling_matches_model_int_key(sc in scenario(KeyKind::Int)) {
        check_against_model(&sc)?;
    }

    #[test]
    fn tumbling_matches_model_string_key(sc in scenario(KeyKind::Str)) {
        check_against_model(&sc)?;
    }

    #[test]
    fn tumbling_matches_model_two_column_key(sc in scenario(KeyKind::IntStr)) {
        check_against_model(&sc)?;
    }

    /// With a delay of at least the largest jitter nothing is ever late, so where the input
    /// is cut into batches cannot change the results at all (not even float rounding: values
    /// are folded in arrival order either way).
    #[test]
    fn batch_split_does_not_change_results(sc in scenario(KeyKind::Int), other in other_cuts()) {
        let mut cuts2: Vec<usize> = other.iter().map(|ix| ix.index(sc.events.len() + 1)).collect();
        cuts2.sort_unstable();
        let a = run_engine(&sc, &sc.cuts, sc.max_jitter);
        let b = run_engine(&sc, &cuts2, sc.max_jitter);
        prop_assert_eq!(a.metrics.operators.late_dropped + a.metrics.operators.late_side_output, 0);
        prop_assert_eq!(b.metrics.operators.late_dropped + b.metrics.operators.late_side_output, 0);
        prop_assert_eq!(&a.rows, &b.rows);
        // And with any delay: whenever the model says two splits drop the same rows, the
        // engine's results agree too.
        let m1 = model(&split(&sc.events, &sc.cuts), sc.size, sc.offset, sc.lateness, sc.delay);
        let m2 = model(&split(&sc.events, &cuts2), sc.size, sc.offset, sc.lateness, sc.delay);
        if m1.late_idx == m2.late_idx {
            let a = run_engine(&sc, &sc.cuts, sc.delay);
            let b = run_engine(&sc, &cuts2, sc.delay);
            prop_assert_eq!(&a.rows, &b.rows);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Unit-style tests
// ---------------------------------------------------------------------------------------------

#[test]
fn rows_of_a_batch_are_judged_against_the_previous_watermark() {
    let (mut engine, _clock) = count_sum_engine(0, 10, 0, LatePolicy::Drop);
    engine.push("s", &[tkv(&[0], &[1], &[1.0])]).unwrap(); // watermark 0
                                                           // ts 1 is behind the batch's own max (100) but only the watermark before the batch (0)
                                                           // counts: on time.
    engine
        .push("s", &[tkv(&[100, 1], &[1, 1], &[2.0, 3.0])])
        .unwrap(); // watermark 100
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 2, 4.0)]
    );
    engine.push("s", &[tkv(&[2], &[1], &[5.0])]).unwrap(); // window [0, 10) closed: late
    assert_eq!(metrics(&mut engine, "q").operators.late_dropped, 1);
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(100, 110, 1, 1, 2.0)]
    );
}

#[test]
fn late_side_output_returns_exactly_the_late_rows() {
    let (mut engine, _clock) = count_sum_engine(0, 10, 0, LatePolicy::SideOutput);
    engine
        .push(
            "s",
            &[tkv(&[0, 5, 12, 25], &[1, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0])],
        )
        .unwrap();
    // Watermark 25: [0, 10) and [10, 20) have closed.
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 1, 1.0), (0, 10, 2, 1, 2.0), (10, 20, 1, 1, 3.0)]
    );
    assert!(engine.take_late("q").unwrap().is_empty());
    engine
        .push(
            "s",
            &[tkv(
                &[3, 21, 19, 26],
                &[7, 1, 8, 1],
                &[10.0, 20.0, 30.0, 40.0],
            )],
        )
        .unwrap();
    let late = engine.take_late("q").unwrap();
    let late_schema = engine.late_schema("q").unwrap().unwrap();
    assert_eq!(
        late_schema,
        tkv_schema(),
        "late rows have the source's user columns"
    );
    for b in &late {
        assert_eq!(b.schema(), late_schema);
    }
    let mut rows: Vec<(i64, i64, Option<f64>)> = Vec::new();
    for b in &late {
        let (ts, k, v) = (col_i64(b, "ts"), col_i64(b, "k"), col_f64(b, "v"));
        rows.extend((0..b.num_rows()).map(|i| (ts[i], k[i], v[i])));
    }
    rows.sort_by_key(|r| r.0);
    assert_eq!(rows, vec![(3, 7, Some(10.0)), (19, 8, Some(30.0))]);
    assert!(
        engine.take_late("q").unwrap().is_empty(),
        "take_late moves the rows out"
    );
    let m = metrics(&mut engine, "q").operators;
    assert_eq!((m.late_side_output, m.late_dropped), (2, 0));
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(20, 30, 1, 3, 64.0)],
        "late rows never reach a window"
    );
}

#[test]
fn allowed_lateness_lets_a_late_row_update_an_open_window() {
    for (lateness, expect_first_window) in [(5, (0, 10, 1, 2, 4.0)), (0, (0, 10, 1, 1, 1.0))] {
        let (mut engine, _clock) = new_engine();
        engine.add_source(source("s", 0)).unwrap();
        engine
            .add_query("q", count_sum_plan(&["s"], 10, lateness, LatePolicy::Drop))
            .unwrap();
        engine
            .push("s", &[tkv(&[0, 12], &[1, 1], &[1.0, 2.0])])
            .unwrap(); // watermark 12
        let early = engine.take_output("q").unwrap();
        if lateness > 0 {
            assert_eq!(
                total_rows(&early),
                0,
                "[0, 10) stays open until 10 + lateness"
            );
        }
        engine.push("s", &[tkv(&[3], &[1], &[3.0])]).unwrap(); // behind the window's end
        engine.push("s", &[tkv(&[16], &[1], &[4.0])]).unwrap(); // watermark 16 >= 15
        let mut out = early;
        out.extend(engine.take_output("q").unwrap());
        let rows = count_sum_rows(&out);
        assert_eq!(
            rows.first(),
            Some(&expect_first_window),
            "lateness {lateness}"
        );
        let dropped_before = metrics(&mut engine, "q").operators.late_dropped;
        assert_eq!(dropped_before, if lateness > 0 { 0 } else { 1 });
        // Past end + lateness the window is closed for good.
        engine.push("s", &[tkv(&[4], &[1], &[5.0])]).unwrap();
        assert_eq!(
            metrics(&mut engine, "q").operators.late_dropped,
            dropped_before + 1
        );
        engine.flush().unwrap();
        out.extend(engine.take_output("q").unwrap());
        assert_eq!(
            count_sum_rows(&out),
            vec![expect_first_window, (10, 20, 1, 2, 6.0)]
        );
    }
}

#[test]
fn timestamp_time_column_gives_timestamp_window_bounds() {
    let (mut engine, _clock) = count_sum_engine(0, 1000, 0, LatePolicy::Drop);
    let ts_type = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", ts_type, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    let ts = TimestampNanosecondArray::from(vec![1_500_000_000i64, 1_999_999_999, 2_000_000_000])
        .with_timezone("UTC");
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ts),
            Arc::new(Int64Array::from(vec![1, 1, 1])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
        ],
    )
    .unwrap();
    engine.push("s", &[batch]).unwrap();
    engine.flush().unwrap();
    let bound = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let out_schema = engine.output_schema("q").unwrap().unwrap();
    assert_eq!(
        out_schema
            .field_with_name("window_start")
            .unwrap()
            .data_type(),
        &bound
    );
    assert_eq!(
        out_schema
            .field_with_name("window_end")
            .unwrap()
            .data_type(),
        &bound
    );
    let out = engine.take_output("q").unwrap();
    let mut rows = Vec::new();
    for b in &out {
        assert_eq!(b.schema(), out_schema);
        let s = b
            .column_by_name("window_start")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let e = b
            .column_by_name("window_end")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let n = col_i64(b, "n");
        rows.extend((0..b.num_rows()).map(|i| (s.value(i), e.value(i), n[i])));
    }
    rows.sort_unstable();
    assert_eq!(rows, vec![(1000, 2000, 2), (2000, 3000, 1)]);
    assert!(
        !out_schema
            .fields()
            .iter()
            .any(|f| f.name().starts_with("__")),
        "hidden column removed"
    );
}

#[test]
fn json_plan_works_like_the_struct_plan() {
    let (mut engine, _clock) = new_engine();
    engine.add_source(source("s", 0)).unwrap();
    let p = QueryPlan::from_json(
        r#"{"inputs": ["s"], "ops": [{"op": "window_aggregate",
            "window": {"kind": "tumbling", "size_ms": 10}, "keys": ["k"],
            "aggs": [{"name": "n", "func": "count"}, {"name": "total", "func": "sum", "column": "v"}],
            "emit": {"kind": "final"}}]}"#,
    )
    .unwrap();
    assert_eq!(p, count_sum_plan(&["s"], 10, 0, LatePolicy::Drop));
    engine.add_query("q", p).unwrap();
    engine
        .push("s", &[tkv(&[1, 2, 11], &[1, 2, 1], &[1.0, 2.0, 3.0])])
        .unwrap();
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 1, 1.0), (0, 10, 2, 1, 2.0), (10, 20, 1, 1, 3.0)]
    );
}

// ---- errors ----

#[test]
fn unknown_group_by_column_is_column_not_found() {
    // Schema declared up front: the query is compiled (and rejected) at once.
    let (mut engine, _clock) = new_engine();
    engine
        .add_source(SourceConfig {
            schema: Some(tkv_schema()),
            ..source("s", 0)
        })
        .unwrap();
    let bad = plan(
        &["s"],
        window_op(
            10,
            0,
            &["nope"],
            vec![agg("n", AggFunc::Count, None)],
            0,
            LatePolicy::Drop,
        ),
    );
    match engine.add_query("q", bad.clone()) {
        Err(Error::ColumnNotFound {
            column, available, ..
        }) => {
            assert_eq!(column, "nope");
            assert_eq!(available, "ts, k, v");
        }
        other => panic!("expected ColumnNotFound, got {other:?}"),
    }
    // Schema learnt from the first push: that push reports the error and applies nothing.
    let (mut engine, _clock) = new_engine();
    engine.add_source(source("s", 0)).unwrap();
    engine.add_query("q", bad).unwrap();
    match engine.push("s", &[tkv(&[1], &[1], &[1.0])]) {
        Err(Error::ColumnNotFound { column, .. }) => assert_eq!(column, "nope"),
        other => panic!("expected ColumnNotFound, got {other:?}"),
    }
    assert_eq!(engine.source_metrics()[0].rows, 0);
    let state = engine.query_reports().unwrap()[0].state.clone();
    assert!(state.starts_with("failed"), "{state}");
}

#[test]
fn null_timestamps_are_rejected_and_nothing_is_applied() {
    let (mut engine, _clock) = count_sum_engine(0, 10, 0, LatePolicy::Drop);
    // A nullable time field (the declared one is not), with a null in it.
    let nullable = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
    ]));
    let with_null = RecordBatch::try_new(
        nullable,
        vec![
            Arc::new(Int64Array::from(vec![Some(3), None])),
            Arc::new(Int64Array::from(vec![1, 1])),
            Arc::new(Float64Array::from(vec![1.0, 1.0])),
        ],
    )
    .unwrap();
    // As the very first push: the source does not even learn its schema.
    match engine.push("s", std::slice::from_ref(&with_null)) {
        Err(Error::TimeColumn {
            source_name,
            column,
            ..
        }) => assert_eq!((source_name.as_str(), column.as_str()), ("s", "ts")),
        other => panic!("expected TimeColumn, got {other:?}"),
    }
    assert!(engine.source_schema("s").unwrap().is_none());
    engine
        .push("s", &[tkv(&[0, 5], &[1, 1], &[1.0, 2.0])])
        .unwrap();
    let before = (
        engine.source_metrics()[0].clone(),
        metrics(&mut engine, "q"),
    );
    assert_eq!(before.0.rows, 2);
    // A good batch followed by a bad one in the same push: neither is applied.
    let err = engine
        .push("s", &[tkv(&[6, 50], &[1, 1], &[3.0, 4.0]), with_null])
        .unwrap_err();
    assert!(matches!(err, Error::TimeColumn { .. }), "{err:?}");
    assert_eq!(
        (
            engine.source_metrics()[0].clone(),
            metrics(&mut engine, "q")
        ),
        before,
        "failed push changed state"
    );
    assert_eq!(total_rows(&engine.take_output("q").unwrap()), 0);
    engine.push("s", &[tkv(&[7], &[1], &[5.0])]).unwrap();
    assert_eq!(engine.source_metrics()[0].rows, 3);
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 3, 8.0)]
    );
}

#[test]
fn schema_change_between_pushes_is_schema_mismatch() {
    let (mut engine, _clock) = count_sum_engine(0, 10, 0, LatePolicy::Drop);
    engine.push("s", &[tkv(&[1], &[1], &[1.0])]).unwrap();
    let int_values = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, false),
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let extra = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, false),
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
            Field::new("w", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Float64Array::from(vec![1.0])),
            Arc::new(Float64Array::from(vec![1.0])),
        ],
    )
    .unwrap();
    for bad in [int_values, extra] {
        match engine.push("s", &[bad]) {
            Err(Error::SchemaMismatch { source_name, .. }) => assert_eq!(source_name, "s"),
            other => panic!("expected SchemaMismatch, got {other:?}"),
        }
    }
    assert_eq!(engine.source_metrics()[0].rows, 1);
}

#[test]
fn push_after_flush_is_closed() {
    let (mut engine, _clock) = count_sum_engine(0, 10, 0, LatePolicy::Drop);
    engine.push("s", &[tkv(&[1], &[1], &[1.0])]).unwrap();
    engine.flush().unwrap();
    assert!(matches!(
        engine.push("s", &[tkv(&[2], &[1], &[1.0])]),
        Err(Error::Closed(_))
    ));
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 1, 1.0)]
    );
}

#[test]
fn int64_sum_overflow_is_an_error() {
    let (mut engine, _clock) = new_engine();
    engine.add_source(source("s", 0)).unwrap();
    engine
        .add_query(
            "q",
            plan(
                &["s"],
                window_op(
                    10,
                    0,
                    &["k"],
                    vec![agg("total", AggFunc::Sum, Some("v"))],
                    0,
                    LatePolicy::Drop,
                ),
            ),
        )
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Int64Array::from(vec![1, 1])),
            Arc::new(Int64Array::from(vec![i64::MAX, 1])),
        ],
    )
    .unwrap();
    match engine.push("s", &[batch]) {
        Err(Error::Overflow(msg)) => assert!(msg.contains("'v'"), "{msg}"),
        other => panic!("expected Overflow, got {other:?}"),
    }
}

// ---- idle sources and the future cap ----

fn union_engine() -> (Engine, ManualClock) {
    let (mut engine, clock) = new_engine();
    engine.add_source(source("a", 0)).unwrap();
    engine
        .add_source(SourceConfig {
            idle_timeout_ms: Some(100),
            ..source("b", 0)
        })
        .unwrap();
    engine
        .add_query("q", count_sum_plan(&["a", "b"], 10, 0, LatePolicy::Drop))
        .unwrap();
    (engine, clock)
}

#[test]
fn idle_source_stops_holding_the_watermark_after_check_idle() {
    let (mut engine, clock) = union_engine();
    engine
        .push("a", &[tkv(&[0, 15, 32], &[1, 1, 1], &[1.0, 2.0, 3.0])])
        .unwrap();
    clock.advance(50);
    engine.push("a", &[tkv(&[45], &[1], &[4.0])]).unwrap();
    assert_eq!(
        total_rows(&engine.take_output("q").unwrap()),
        0,
        "b (no data, not idle yet) holds the watermark"
    );
    assert_eq!(metrics(&mut engine, "q").watermark, None);
    clock.advance(51); // 101 ms without data from b
    engine.check_idle().unwrap();
    assert!(engine
        .source_metrics()
        .iter()
        .any(|s| s.name == "b" && s.idle));
    assert_eq!(metrics(&mut engine, "q").watermark, Some(45));
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 1, 1.0), (10, 20, 1, 1, 2.0), (30, 40, 1, 1, 3.0)]
    );
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(40, 50, 1, 1, 4.0)]
    );
}

#[test]
fn idle_source_is_detected_on_the_next_push() {
    let (mut engine, clock) = union_engine();
    engine
        .push("a", &[tkv(&[0, 15], &[1, 1], &[1.0, 2.0])])
        .unwrap();
    assert_eq!(total_rows(&engine.take_output("q").unwrap()), 0);
    clock.advance(100);
    engine.push("a", &[tkv(&[27], &[1], &[3.0])]).unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(0, 10, 1, 1, 1.0), (10, 20, 1, 1, 2.0)]
    );
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![(20, 30, 1, 1, 3.0)]
    );
}

/// A far-future event time must not drag the watermark along: with `max_future_ms = 1000` and
/// processing time 0 the source watermark stays at or below 1000, the rows are still processed
/// (counted in `future_rows`), and windows past the horizon only close at flush.
#[test]
fn far_future_timestamps_do_not_move_the_watermark_past_the_horizon() {
    let (mut engine, _clock) = new_engine();
    engine
        .add_source(SourceConfig {
            max_future_ms: Some(1000),
            ..source("s", 0)
        })
        .unwrap();
    engine
        .add_query("q", count_sum_plan(&["s"], 100, 0, LatePolicy::Drop))
        .unwrap();
    engine
        .push("s", &[tkv(&[500, 10_000_000], &[1, 1], &[1.0, 2.0])])
        .unwrap();
    let m = engine
        .source_metrics()
        .into_iter()
        .find(|s| s.name == "s")
        .unwrap();
    assert!(
        m.watermark.is_some_and(|w| (500..=1000).contains(&w)),
        "source watermark {:?}",
        m.watermark
    );
    assert!(m.future_rows >= 1, "{m:?}");
    assert!(metrics(&mut engine, "q").watermark <= Some(1000));
    let mut before_flush = engine.take_output("q").unwrap();
    // A later on-time row moves the watermark within the horizon and closes [500, 600).
    engine.push("s", &[tkv(&[650], &[1], &[3.0])]).unwrap();
    before_flush.extend(engine.take_output("q").unwrap());
    // Far below 10_000_000 but beyond the horizon: on time, since the watermark did not jump.
    engine.push("s", &[tkv(&[5_000], &[1], &[4.0])]).unwrap();
    before_flush.extend(engine.take_output("q").unwrap());
    assert_eq!(metrics(&mut engine, "q").operators.late_dropped, 0);
    assert_eq!(count_sum_rows(&before_flush), vec![(500, 600, 1, 1, 1.0)]);
    assert!(metrics(&mut engine, "q").watermark <= Some(1000));
    engine.flush().unwrap();
    assert_eq!(
        count_sum_rows(&engine.take_output("q").unwrap()),
        vec![
            (600, 700, 1, 1, 3.0),
            (5_000, 5_100, 1, 1, 4.0),
            (10_000_000, 10_000_100, 1, 1, 2.0)
        ]
    );
}
