//! Wait strategies: what a consumer (or a producer facing a full ring) does while the thing it
//! waits for is not there yet.
//!
//! A waiter calls [`WaitStrategy::wait_until`] with a readiness check (for example "the cursor
//! has reached my sequence"); whoever makes progress calls [`WaitStrategy::signal`] *after* the
//! Release store that publishes it. Strategies trade latency for CPU:
//!
//! | strategy | waiting | cost to the signaller |
//! |---|---|---|
//! | [`BusySpin`] | re-checks in a tight loop | nothing |
//! | [`BusySpinWithHint`] | re-checks with `spin_loop()` (PAUSE) between checks | nothing |
//! | [`Yielding`] | spins briefly, then `yield_now()` between checks | nothing |
//! | [`Sleeping`] | spins, yields, then sleeps a short, fixed time between checks | nothing |
//! | [`Blocking`] | spins, yields, then parks on a condition variable | a fence and a load; a lock and a notify only when someone is parked |
//!
//! On a 2-core machine a spinning waiter takes a core away from the thread that would make
//! progress, so idle cores of the runtime use [`Blocking`]: its spin and yield budgets are
//! small (microseconds) and then it parks.
//!
//! ## The wake-up handshake of [`Blocking`] (why no wake-up can be lost)
//!
//! Waiter: lock the mutex, increment `parked` (SeqCst), issue a SeqCst fence, re-check
//! readiness, and only then wait on the condition variable (which releases the mutex
//! atomically). Signaller: publish (Release), issue a SeqCst fence, load `parked`; if non-zero,
//! lock the mutex and notify all. Either the signaller's load sees the increment, and then it
//! takes the mutex, which the waiter holds from its increment until it is inside `wait`, so the
//! notify reaches it; or the load does not see it, and then in the total order of SeqCst fences
//! the waiter's fence comes after the signaller's, so its re-check (Acquire loads) sees the
//! published progress. LMAX 2.10.1 ("don't signal if nobody waits" without the fence) and
//! badbatch (notify without the mutex) lost exactly this race;
//! `tests_rs/sync_stress.rs` and the loom model in `tests_rs/loom_sync.rs` exercise it.

use std::fmt::Debug;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::primitives::{fence, lock, spin_loop, yield_now, AtomicUsize, Condvar, Mutex, Ordering};

/// How a waiter waits. See the module docs.
pub trait WaitStrategy: Send + Sync + Debug {
    /// Returns once `ready()` is true. `ready` is called at least once; it must be cheap and
    /// must use Acquire loads for what it checks.
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool);

    /// Wakes waiters that may be blocked. Call after the Release store that makes progress
    /// visible. Never blocks for long; free for the non-blocking strategies.
    fn signal(&self);
}

/// Re-checks in a tight loop, without a spin hint: the lowest latency when each waiter has a
/// core of its own, and the worst choice when it has not.
#[derive(Debug, Default, Clone, Copy)]
pub struct BusySpin;

impl WaitStrategy for BusySpin {
    #[inline]
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool) {
        while !ready() {}
    }

    #[inline]
    fn signal(&self) {}
}

/// Re-checks with a CPU spin hint (PAUSE) between checks; measured here to halve the round
/// trip compared with a pure spin, because the core stops speculating on the spun-on line.
#[derive(Debug, Default, Clone, Copy)]
pub struct BusySpinWithHint;

impl WaitStrategy for BusySpinWithHint {
    #[inline]
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool) {
        while !ready() {
            spin_loop();
        }
    }

    #[inline]
    fn signal(&self) {}
}

/// Spins `spins` times, then yields the thread between checks.
#[derive(Debug, Clone, Copy)]
pub struct Yielding {
    /// Checks with a spin hint before the first yield.
    pub spins: u32,
}

impl Default for Yielding {
    fn default() -> Self {
        Yielding { spins: 100 }
    }
}

impl WaitStrategy for Yielding {
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool) {
        let mut n = 0u32;
        while !ready() {
            if n < self.spins {
                n += 1;
                spin_loop();
            } else {
                yield_now();
            }
        }
    }

    #[inline]
    fn signal(&self) {}
}

/// Spins, yields, then sleeps `sleep` between checks: little CPU, latency of the sleep.
#[derive(Debug, Clone, Copy)]
pub struct Sleeping {
    /// Checks with a spin hint first.
    pub spins: u32,
    /// Then checks with a yield.
    pub yields: u32,
    /// Then the sleep between checks.
    pub sleep: Duration,
}

impl Default for Sleeping {
    fn default() -> Self {
        Sleeping {
            spins: 100,
            yields: 100,
            sleep: Duration::from_micros(100),
        }
    }
}

impl WaitStrategy for Sleeping {
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool) {
        let mut n = 0u32;
        while !ready() {
            if n < self.spins {
                spin_loop();
            } else if n < self.spins.saturating_add(self.yields) {
                yield_now();
            } else {
                sleep(self.sleep);
            }
            n = n.saturating_add(1);
        }
    }

    #[inline]
    fn signal(&self) {}
}

#[cfg(not(feature = "loom"))]
fn sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(feature = "loom")]
fn sleep(_: Duration) {
    yield_now();
}

/// Spins, yields, then parks until [`signal`](WaitStrategy::signal). The strategy for threads
/// that share cores with others. See the module docs for the handshake.
#[derive(Debug)]
pub struct Blocking {
    /// Checks with a spin hint first (a few microseconds in all by default).
    pub spins: u32,
    /// Then checks with a yield.
    pub yields: u32,
    parked: CachePadded<AtomicUsize>,
    mutex: Mutex<()>,
    condvar: Condvar,
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking::new(200, 20)
    }
}

impl Blocking {
    /// A blocking strategy that spins `spins` times and yields `yields` times before parking.
    pub fn new(spins: u32, yields: u32) -> Self {
        Blocking {
            spins,
            yields,
            parked: CachePadded::new(AtomicUsize::new(0)),
            mutex: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    /// Threads parked right now (for metrics and tests).
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}

impl WaitStrategy for Blocking {
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool) {
        for _ in 0..self.spins {
            if ready() {
                return;
            }
            spin_loop();
        }
        for _ in 0..self.yields {
            if ready() {
                return;
            }
            yield_now();
        }
        let mut guard = lock(&self.mutex);
        loop {
            self.parked.fetch_add(1, Ordering::SeqCst);
            // `ready()` reads with Acquire, not SeqCst: without this fence the C11 model lets
            // it miss a store made before `signal()`'s fence while `signal()` also misses the
            // increment (store buffering), and the waiter parks for good. The loom model
            // `blocking_wait_is_woken_by_signal` finds that deadlock without it.
            fence(Ordering::SeqCst);
            if ready() {
                self.parked.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            guard = self.condvar.wait(guard).unwrap_or_else(|p| p.into_inner());
            self.parked.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return;
            }
        }
    }

    #[inline]
    fn signal(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.mutex);
            self.condvar.notify_all();
        }
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn strategies() -> Vec<Arc<dyn WaitStrategy>> {
        vec![
            Arc::new(BusySpin),
            Arc::new(BusySpinWithHint),
            Arc::new(Yielding::default()),
            Arc::new(Sleeping::default()),
            Arc::new(Blocking::new(0, 0)),
            Arc::new(Blocking::default()),
        ]
    }

    #[test]
    fn every_strategy_returns_once_ready() {
        for s in strategies() {
            let flag = Arc::new(AtomicBool::new(false));
            let (f2, s2) = (flag.clone(), s.clone());
            let t = std::thread::spawn(move || {
                s2.wait_until(&mut || f2.load(std::sync::atomic::Ordering::Acquire));
            });
            std::thread::sleep(Duration::from_millis(2));
            flag.store(true, std::sync::atomic::Ordering::Release);
            s.signal();
            t.join().unwrap();
        }
    }

    /// Many hand-offs, each waiting on the previous: a lost wake-up would hang this test.
    #[test]
    fn blocking_never_loses_a_wake_up() {
        let s = Arc::new(Blocking::new(0, 0));
        let turn = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let rounds = 20_000u64;
        let (s2, t2) = (s.clone(), turn.clone());
        let other = std::thread::spawn(move || {
            for i in 0..rounds {
                s2.wait_until(&mut || t2.load(std::sync::atomic::Ordering::Acquire) == 2 * i + 1);
                t2.store(2 * i + 2, std::sync::atomic::Ordering::Release);
                s2.signal();
            }
        });
        for i in 0..rounds {
            turn.store(2 * i + 1, std::sync::atomic::Ordering::Release);
            s.signal();
            s.wait_until(&mut || turn.load(std::sync::atomic::Ordering::Acquire) == 2 * i + 2);
        }
        other.join().unwrap();
        assert_eq!(s.parked(), 0);
    }
}
