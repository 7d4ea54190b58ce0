//! Crash points for fault-injection tests.
//!
//! `LAMINAR_CRASH_AT=<point>[:<n>]` in the environment makes the process abort — no
//! destructor runs and nothing buffered in the process is flushed, as with `kill -9` — the
//! `n`-th time (default: the first) execution reaches [`crash_point`]`(<point>)`. The points
//! sit at the moments a crash is hardest to get right and least likely to be hit by a random
//! kill (between the phases of a sink commit, for instance). The variable is read once; with it
//! unset a point costs one atomic load. It must never be set outside tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Armed {
    point: String,
    nth: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("LAMINAR_CRASH_AT").ok()?;
            let (point, nth) = match spec.split_once(':') {
                Some((p, n)) => (p.to_string(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some(Armed {
                point,
                nth,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process here if `LAMINAR_CRASH_AT` names `point` and this is the chosen visit.
pub fn crash_point(point: &str) {
    if let Some(a) = armed() {
        if a.point == point && a.reached.fetch_add(1, Ordering::Relaxed) + 1 == a.nth {
            eprintln!("laminar: crash point '{point}' reached (LAMINAR_CRASH_AT)");
            std::process::abort();
        }
    }
}
