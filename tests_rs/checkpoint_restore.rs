//! Restoring operator state: a reactor snapshotted after any message, rebuilt from the same
//! plan and restored, goes on to produce exactly what the uninterrupted reactor produces.
//!
//! The model is the uninterrupted run itself: both runs see the same messages; the only
//! difference is a snapshot/restore cycle (through bytes, into freshly compiled operators
//! with new hash seeds) at a random point. Windows (tumbling, sliding), emit strategies, key
//! layouts (none, an integer, a string, a compound key) and all aggregate functions are drawn.

#[path = "common/restore.rs"]
mod restore;

use laminar_core::reactor::Budget;
use proptest::prelude::*;
use restore::{check_restore, row_batches, rows_messages, run, window_setup, Setup};

/// A window aggregation dropping late rows (see `window_setup`).
fn plan(window: &str, keys: &str, emit: &str, lateness: i64) -> Setup {
    window_setup(window, keys, emit, lateness, "drop")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn restore_then_continue_equals_uninterrupted(
        input in row_batches(6_000, 500, 30, 12),
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
        let setup = plan(window, keys, emit, lateness);
        check_restore(&setup, &rows_messages(&input, delay, false), &[cut_frac])?;
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
    let mut r = p.reactor();
    let mut out = Vec::new();
    run(
        &mut r,
        &rows_messages(&[vec![(10, 1, Some(1.0)), (1500, 2, None)]], 0, false)[..1],
        &mut out,
    );
    let saved = r.snapshot().unwrap().remove(0);
    // Every truncation is refused or restores the very same state; none panics.
    for cut in 0..saved.len() {
        let mut fresh = p.reactor();
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
    let err = other.reactor().restore_query(0, &saved).unwrap_err();
    assert!(err.to_string().contains("pipeline changed"), "{err}");
    // A query that does not exist is refused.
    assert!(p.reactor().restore_query(5, &saved).is_err());
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
    let msgs = rows_messages(&rows, 200, false);
    let cut = msgs.len() / 2;
    let mut r = p.reactor();
    run(&mut r, &msgs[..cut], &mut Vec::new());
    let saved = r.snapshot().unwrap().remove(0);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut refused = 0usize;
        for i in 0..saved.len() {
            let mut bytes = saved.clone();
            bytes[i] ^= 0x5a;
            let mut fresh = p.reactor();
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
