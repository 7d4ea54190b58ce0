//! Restoring the state of session windows, interval joins and lookup joins: a reactor
//! snapshotted after any message, rebuilt from the same plan and restored, goes on to produce
//! exactly what the uninterrupted reactor produces (row for row, in the same order), and a
//! snapshot of the restored reactor is the snapshot it was restored from.
//!
//! As in `checkpoint_restore.rs`, the model is the uninterrupted run itself; here the run is
//! cut twice (snapshot, restore into freshly compiled operators with new hash seeds, go on).
//! Damaged operator state (truncated, or every byte flipped in turn) is refused or restored
//! without a panic, and state of another pipeline is refused clearly.

#[path = "common/restore.rs"]
mod restore;

use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use laminar_core::engine::TIME_COLUMN;
use laminar_core::operator::lookup_join::TableDef;
use laminar_core::operator::snapshot::{decode, encode};
use laminar_core::reactor::{Budget, CoreMessage, Reactor};
use proptest::prelude::*;
use restore::{
    check_restore, int_col, row_batches, rows_messages, rows_schema, run, window_setup, Setup,
};

// ---------------------------------------------------------------------------------------------
// Damage

/// `(deadline, operator, key)` of a pending timer in a query's snapshot.
type Timer = (i64, u32, i64);

/// The layout of a query's snapshot (`QueryState` in `reactor/query.rs`), mirrored here only
/// to damage the operator's part of it: damage elsewhere would test the query layer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct QueryStateMirror {
    operators: Vec<Vec<u8>>,
    timers: Vec<(i64, Vec<Timer>)>,
    node_wm: Vec<Option<i64>>,
    tracker: (Vec<(i64, bool, bool)>, i64),
    now: i64,
    rows_in: u64,
    rows_out: u64,
}

/// Snapshots after `msgs[..cut]`, then checks that damaged copies of the state of operator
/// `node` (truncated, or each byte flipped in turn) are refused or restored without a panic
/// (and then run the rest of the script without one), and that `foreign` (another pipeline)
/// refuses the state as such.
fn check_damage(setup: &Setup, msgs: &[CoreMessage], cut: usize, node: usize, foreign: &Setup) {
    let mut r = setup.reactor();
    let mut out = Vec::new();
    run(&mut r, &msgs[..cut], &mut out);
    let saved = r.snapshot().unwrap().remove(0);
    let mut query: QueryStateMirror = decode(&saved, "query").expect("mirror of QueryState");
    assert_eq!(
        encode(&query).unwrap(),
        saved,
        "QueryStateMirror is out of date"
    );
    let state = query.operators[node].clone();
    assert!(state.len() > 200, "the scenario holds some state");
    let mut with = |bytes: &[u8]| -> (Reactor, bool) {
        query.operators[node] = bytes.to_vec();
        let mut fresh = setup.reactor();
        let ok = fresh.restore_query(0, &encode(&query).unwrap()).is_ok();
        (fresh, ok)
    };
    // Every truncation is refused or restores the very same state.
    for len in 0..state.len() {
        let (fresh, ok) = with(&state[..len]);
        if ok {
            assert_eq!(fresh.snapshot().unwrap()[0], saved);
        }
    }
    // Every byte flipped: an error, or a state that runs on (results may differ; errors are
    // fine, panics are not).
    let mut accepted = 0;
    for pos in 0..state.len() {
        let mut bad = state.clone();
        bad[pos] ^= 0x5a;
        let (mut fresh, ok) = with(&bad);
        if ok {
            accepted += 1;
            for m in &msgs[cut..] {
                if fresh.run(m.clone(), Budget::default()).is_err() {
                    break;
                }
                fresh.take_output(0);
                fresh.take_late(0);
            }
        }
    }
    assert!(accepted < state.len(), "some damage is detected");
    let err = foreign.reactor().restore_query(0, &saved).unwrap_err();
    assert!(err.to_string().contains("pipeline changed"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Session windows

fn session_setup(gap: i64, keys: &str, emit: &str, lateness: i64, late: &str) -> Setup {
    let window = format!(r#"{{"kind": "session", "gap_ms": {gap}}}"#);
    window_setup(&window, keys, emit, lateness, late)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn session_restore_then_continue_equals_uninterrupted(
        input in row_batches(3_000, 400, 20, 14),
        gap in prop_oneof![Just(50i64), 100i64..600],
        keys in prop_oneof![Just("[]"), Just(r#"["k"]"#), Just(r#"["s"]"#), Just(r#"["s", "k"]"#)],
        emit in prop_oneof![
            Just(r#"{"kind": "on_window_close"}"#),
            Just(r#"{"kind": "final"}"#),
            Just(r#"{"kind": "on_update"}"#),
            Just(r#"{"kind": "changelog"}"#),
            Just(r#"{"kind": "periodic", "interval_ms": 1000}"#),
        ],
        lateness in prop_oneof![Just(0i64), 100i64..900],
        late in prop_oneof![Just("drop"), Just("side_output")],
        delay in 0i64..800,
        cuts in proptest::collection::vec(0.0f64..1.0, 1..3),
    ) {
        let setup = session_setup(gap, keys, emit, lateness, late);
        check_restore(&setup, &rows_messages(&input, delay, true), &cuts)?;
    }
}

#[test]
fn session_damaged_or_foreign_state_is_an_error() {
    let batches: Vec<Vec<(i64, i64, Option<f64>)>> = (0..6)
        .map(|b| {
            (0..12)
                .map(|i| (b * 300 + (i * 37) % 500, i % 5, Some(i as f64)))
                .collect()
        })
        .collect();
    let msgs = rows_messages(&batches, 200, true);
    for keys in ["[]", r#"["s", "k"]"#] {
        let emit = r#"{"kind": "changelog"}"#;
        let setup = session_setup(100, keys, emit, 300, "drop");
        // Another key layout.
        let other = if keys == "[]" { r#"["s"]"# } else { r#"["k"]"# };
        let foreign = session_setup(100, other, emit, 300, "drop");
        check_damage(&setup, &msgs, msgs.len() / 2, 0, &foreign);
    }
}

// ---------------------------------------------------------------------------------------------
// Lookup joins

fn lookup_table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("w", DataType::Float64, true),
    ]))
}

fn lookup_setup(on: &str, how: &str, ttl: Option<i64>) -> Setup {
    let json = format!(
        r#"{{"inputs": ["src0"], "ops": [{{"op": "lookup", "table": "t", "on": ["{on}"],
            "how": "{how}"}}]}}"#
    );
    let table = TableDef {
        name: "t".into(),
        schema: lookup_table_schema(),
        on: vec![on.into()],
        ttl_ms: ttl,
    };
    Setup::new(&json, vec![rows_schema()], vec![table])
}

/// One step of a lookup script.
#[derive(Debug, Clone)]
enum LookupEvent {
    /// Table rows `(key, w)`: replace the table, or upsert them.
    Table(Vec<(i64, Option<f64>)>, bool),
    /// Stream rows `(ts, key)`; key 5 is null (in `k`).
    Stream(Vec<(i64, i64)>),
    /// Processing time passes (TTL).
    Tick,
}

/// The messages of `events`, processing time advancing by `steps[i]` before event `i`.
fn lookup_messages(events: &[(LookupEvent, i64)]) -> Vec<CoreMessage> {
    let mut out = Vec::new();
    let mut now = 1_000;
    for (n, (e, step)) in events.iter().enumerate() {
        now += step;
        match e {
            LookupEvent::Table(rows, replace) => {
                let batch = RecordBatch::try_new(
                    lookup_table_schema(),
                    vec![
                        int_col(rows.iter().map(|r| Some(r.0)).collect()),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|r| format!("x{}", r.0)),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter()
                                .enumerate()
                                .map(|(i, r)| format!("n{}-{n}-{i}", r.0)),
                        )),
                        Arc::new(Float64Array::from(
                            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                        )),
                    ],
                )
                .expect("table batch");
                out.push(CoreMessage::TableUpdate {
                    table: Arc::from("t"),
                    rows: batch,
                    replace: *replace,
                    now,
                });
            }
            LookupEvent::Stream(rows) => {
                let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let batch = RecordBatch::try_new(
                    rows_schema(),
                    vec![
                        Arc::new(Int64Array::from(ts.clone())),
                        int_col(rows.iter().map(|r| (r.1 != 5).then_some(r.1)).collect()),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|r| format!("x{}", r.1)),
                        )),
                        Arc::new(Float64Array::from_iter_values(
                            rows.iter().map(|r| r.0 as f64 / 10.0),
                        )),
                        Arc::new(Int64Array::from(ts)),
                    ],
                )
                .expect("stream batch");
                out.push(CoreMessage::Data { source: 0, batch });
            }
            LookupEvent::Tick => out.push(CoreMessage::Tick { now }),
        }
    }
    out.push(CoreMessage::EndOfInput { source: 0 });
    out
}

fn lookup_events() -> impl Strategy<Value = Vec<(LookupEvent, i64)>> {
    let key = 0i64..8;
    let row = (key, proptest::option::weighted(0.8, -10.0f64..10.0));
    // Now and then enough superseded rows to compact the table.
    let rows = prop_oneof![3 => 0usize..12, 1 => 500usize..1000]
        .prop_flat_map(move |n| proptest::collection::vec(row.clone(), n));
    let event = prop_oneof![
        3 => (rows, proptest::bool::weighted(0.15))
            .prop_map(|(rows, replace)| LookupEvent::Table(rows, replace)),
        4 => proptest::collection::vec((0i64..10_000, 0i64..8), 1..12)
            .prop_map(LookupEvent::Stream),
        1 => Just(LookupEvent::Tick),
    ];
    proptest::collection::vec((event, 0i64..400), 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn lookup_restore_then_continue_equals_uninterrupted(
        events in lookup_events(),
        on in prop_oneof![Just("k"), Just("s")],
        how in prop_oneof![Just("left"), Just("inner")],
        ttl in proptest::option::of(300i64..1500),
        cuts in proptest::collection::vec(0.0f64..1.0, 1..3),
    ) {
        let setup = lookup_setup(on, how, ttl);
        check_restore(&setup, &lookup_messages(&events), &cuts)?;
    }
}

#[test]
fn lookup_damaged_or_foreign_state_is_an_error() {
    let events: Vec<(LookupEvent, i64)> = vec![
        (
            LookupEvent::Table((0..6).map(|k| (k, Some(k as f64))).collect(), true),
            0,
        ),
        (
            LookupEvent::Stream((0..8).map(|i| (i * 10, i)).collect()),
            100,
        ),
        (
            LookupEvent::Table(vec![(2, None), (7, Some(7.5))], false),
            100,
        ),
        (
            LookupEvent::Stream((0..8).map(|i| (i * 10, i)).collect()),
            100,
        ),
        (LookupEvent::Tick, 900),
        (
            LookupEvent::Stream((0..8).map(|i| (i * 10, i)).collect()),
            100,
        ),
    ];
    let msgs = lookup_messages(&events);
    let setup = lookup_setup("k", "left", Some(1000));
    // Another table layout: keyed on `s`, so `k` is a value column.
    let foreign = lookup_setup("s", "left", Some(1000));
    check_damage(&setup, &msgs, 3, 0, &foreign);
}

// ---------------------------------------------------------------------------------------------
// Interval joins

fn join_schema(right: bool) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        if right {
            Field::new("b", DataType::Float64, true)
        } else {
            Field::new("a", DataType::Int64, false)
        },
        Field::new(TIME_COLUMN, DataType::Int64, false),
    ]))
}

fn join_setup(on: &str, how: &str, lo: i64, hi: i64, lateness: i64, late: &str) -> Setup {
    let json = format!(
        r#"{{"inputs": ["src0"], "ops": [{{"op": "join",
            "right": {{"inputs": ["src1"], "ops": []}},
            "on": {on}, "lower_ms": {lo}, "upper_ms": {hi}, "how": "{how}",
            "allowed_lateness_ms": {lateness}, "late": "{late}"}}]}}"#
    );
    Setup::new(
        &json,
        vec![join_schema(false), join_schema(true)],
        Vec::new(),
    )
}

/// Per batch `(side, rows (ts, key))` (key 4 is null in `k` and `s`): the batch on its source,
/// then that source's bounded-delay watermark; both sources end at the end.
fn join_messages(batches: &[(usize, Vec<(i64, i64)>)], delay: i64) -> Vec<CoreMessage> {
    let mut out = Vec::new();
    let mut max_ts = [i64::MIN; 2];
    let mut id = 0i64;
    for (side, rows) in batches {
        let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let key = |r: &(i64, i64)| (r.1 != 4).then_some(r.1);
        let own: Arc<dyn arrow_array::Array> = if *side == 1 {
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|_| (id + 1) as f64 / 2.0),
            ))
        } else {
            Arc::new(Int64Array::from_iter_values(
                (0..rows.len() as i64).map(|i| id + i),
            ))
        };
        id += rows.len() as i64;
        let batch = RecordBatch::try_new(
            join_schema(*side == 1),
            vec![
                int_col(rows.iter().map(key).collect()),
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|r| key(r).map(|k| format!("x{k}")))
                        .collect::<Vec<_>>(),
                )),
                own,
                Arc::new(Int64Array::from(ts.clone())),
            ],
        )
        .expect("batch");
        let source = *side as u32;
        out.push(CoreMessage::Data { source, batch });
        max_ts[*side] = ts.iter().copied().fold(max_ts[*side], i64::max);
        out.push(CoreMessage::Watermark {
            source,
            ts: max_ts[*side] - delay,
        });
    }
    out.push(CoreMessage::EndOfInput { source: 0 });
    out.push(CoreMessage::EndOfInput { source: 1 });
    out
}

fn join_batches() -> impl Strategy<Value = Vec<(usize, Vec<(i64, i64)>)>> {
    let row = (0i64..1_500, 0i64..5);
    proptest::collection::vec((0usize..2, proptest::collection::vec(row, 1..16)), 1..16).prop_map(
        |mut bs| {
            // Mostly increasing time with wide jitter, so that stored batches expire row by
            // row (scanned, then walked in time order).
            for (i, (_, b)) in bs.iter_mut().enumerate() {
                for r in b.iter_mut() {
                    r.0 += i as i64 * 250;
                }
            }
            bs
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn join_restore_then_continue_equals_uninterrupted(
        input in join_batches(),
        on in prop_oneof![Just(r#"["k"]"#), Just(r#"["s"]"#), Just(r#"["s", "k"]"#)],
        how in prop_oneof![Just("inner"), Just("left"), Just("right"), Just("full")],
        (lo, hi) in prop_oneof![
            Just((-300i64, 300i64)),
            Just((0, 600)),
            Just((-600, 0)),
            Just((100, 200)),
        ],
        lateness in prop_oneof![Just(0i64), 100i64..600],
        late in prop_oneof![Just("drop"), Just("side_output")],
        delay in 0i64..700,
        cuts in proptest::collection::vec(0.0f64..1.0, 1..3),
    ) {
        let setup = join_setup(on, how, lo, hi, lateness, late);
        check_restore(&setup, &join_messages(&input, delay), &cuts)?;
    }
}

#[test]
fn join_damaged_or_foreign_state_is_an_error() {
    let batches: Vec<(usize, Vec<(i64, i64)>)> = (0..8)
        .map(|b| {
            let rows = (0..10).map(|i| (b * 150 + (i * 97) % 700, i % 5)).collect();
            ((b % 2) as usize, rows)
        })
        .collect();
    let msgs = join_messages(&batches, 100);
    for on in [r#"["k"]"#, r#"["s", "k"]"#] {
        let setup = join_setup(on, "full", -300, 300, 100, "drop");
        // Another key layout.
        let other = if on == r#"["k"]"# {
            r#"["s"]"#
        } else {
            r#"["k"]"#
        };
        let foreign = join_setup(other, "full", -300, 300, 100, "drop");
        check_damage(&setup, &msgs, msgs.len() - 6, 0, &foreign);
    }
}
