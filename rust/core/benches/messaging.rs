//! Workload F (messaging): cross-thread throughput and round-trip latency of our
//! `laminar_core::sync` queues against crossbeam-queue `ArrayQueue`, `rtrb`, `ringbuf` and the
//! `disruptor` crate, measured in the same run.
//!
//! A plain `fn main` (not criterion): what it measures is two or more threads moving a stream,
//! which criterion's single-threaded iteration model does not fit. It owns:
//! - 1 producer → 1 consumer throughput: N `u64` values (default 100 M; `--n N`, `--quick` for
//!   5 M), ring capacity 4096, producer pinned to the first core and consumer to the second
//!   (`core_affinity`, where allowed); throughput = N / (last receive − producer start after a
//!   start line). Every run checks the sum of what was received, so a queue that skips work
//!   fails loudly instead of looking fast.
//! - the disruptor shapes of workload F: 2 producers → 1 consumer and a 3-stage pipeline
//!   (3 or 4 threads on 2 vCPUs: unpinned, waits yield; the scheduler sets the pace);
//! - ping-pong round trips (1 M after 100 k of warm-up, each timed with `rdtsc` on x86_64,
//!   `Instant` elsewhere) for every queue, next to the physical floor: two `AtomicU64` on
//!   separate 128-byte-aligned lines bounced between the pinned threads with `spin_loop()`;
//! - interleaved rounds (each implementation once per round; medians reported), because the
//!   host moves this VM's two vCPUs between physical cores and results move 4–5× with
//!   placement (`../shared/notes/messaging-anchors.md`); a cache-line probe (floor RTT) before
//!   and after the run and at every round, and the CPU other processes and steal took.
//!
//! Adding an implementation is adding a function and one entry in [`throughput_benches`] or
//! [`rtt_benches`]; rows marked `Origin::Ours` get a ratio to the best external row of the same
//! class. Our disruptor's rows go in the `ours_disruptor` module (marked below).
//!
//! Run: `cargo bench -p laminar-core --bench messaging -- [--quick] [--n N] [--rounds R]
//! [--rtt M] [--only SUBSTRING[,SUBSTRING...]]`.

use std::cmp::Ordering as CmpOrdering;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use core_affinity::CoreId;
use crossbeam_utils::CachePadded;

// =============================================================================================
// Configuration
// =============================================================================================

/// What one run measures.
#[derive(Clone, Debug)]
struct Cfg {
    /// Messages per throughput run.
    n: u64,
    /// Ring capacity (slots) for every queue.
    cap: usize,
    /// Interleaved rounds; medians over them are reported.
    rounds: usize,
    /// Timed round trips per ping-pong run.
    rtt: usize,
    /// Untimed warm-up round trips before them.
    warm: usize,
    /// Producer / ping core and consumer / echo core, when pinning is possible.
    cores: Option<(CoreId, CoreId)>,
    /// Only run benches whose "queue mode" label contains this (or one of its
    /// comma-separated parts).
    only: Option<String>,
}

impl Cfg {
    fn from_args() -> Cfg {
        let mut cfg = Cfg {
            n: 100_000_000,
            cap: 4096,
            rounds: 5,
            rtt: 1_000_000,
            warm: 100_000,
            cores: None,
            only: None,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        // `--quick` first, so that an explicit `--n` after it wins.
        if args.iter().any(|a| a == "--quick") {
            cfg.n = 5_000_000;
            cfg.rounds = 3;
            cfg.rtt = 200_000;
            cfg.warm = 20_000;
        }
        while i < args.len() {
            let value = args.get(i + 1).map(String::as_str);
            match args[i].as_str() {
                "--quick" => {}
                // Passed by `cargo bench` to every bench binary.
                "--bench" => {}
                "--n" => {
                    cfg.n = parse_count(value, "--n");
                    i += 1;
                }
                "--rounds" => {
                    cfg.rounds = parse_count(value, "--rounds").max(1) as usize;
                    i += 1;
                }
                "--rtt" => {
                    cfg.rtt = parse_count(value, "--rtt").max(100) as usize;
                    cfg.warm = (cfg.rtt / 10).max(1_000);
                    i += 1;
                }
                "--only" => {
                    cfg.only = value.map(str::to_string);
                    i += 1;
                }
                other => eprintln!("messaging: ignoring unknown argument {other:?}"),
            }
            i += 1;
        }
        // Round N down to an even number so 2-producer runs split it exactly.
        cfg.n = (cfg.n.max(1_000) / 2) * 2;
        cfg.cores = match core_affinity::get_core_ids() {
            Some(ids) if ids.len() >= 2 => Some((ids[0], ids[1])),
            _ => None,
        };
        cfg
    }

    /// Whether `label` matches `--only` (any of its comma-separated substrings).
    fn wanted(&self, label: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|s| s.split(',').any(|part| label.contains(part)))
    }

    fn producer_core(&self) -> Option<CoreId> {
        self.cores.map(|c| c.0)
    }

    fn consumer_core(&self) -> Option<CoreId> {
        self.cores.map(|c| c.1)
    }
}

/// Parses a count like `100000000`, `100_000_000`, `100M` or `5m`; exits on nonsense.
fn parse_count(value: Option<&str>, flag: &str) -> u64 {
    let Some(raw) = value else {
        eprintln!("messaging: {flag} needs a value");
        std::process::exit(2);
    };
    let s = raw.replace('_', "");
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000),
        Some('m' | 'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s.as_str(), 1),
    };
    match digits.parse::<u64>() {
        Ok(v) => v.saturating_mul(mult),
        Err(_) => {
            eprintln!("messaging: {flag} {raw:?} is not a count");
            std::process::exit(2);
        }
    }
}

/// Pins the calling thread; reports (once per thread) when the OS refuses.
fn pin(core: Option<CoreId>) {
    if let Some(c) = core {
        if !core_affinity::set_for_current(c) {
            eprintln!("messaging: could not pin a thread to core {}", c.id);
        }
    }
}

/// Sum of `0..n`: what every 1P→1C and 2P→1C run must receive.
fn sum_below(n: u64) -> u64 {
    n.wrapping_mul(n.wrapping_sub(1)) / 2
}

/// Fails the whole benchmark: a queue that lost, duplicated or invented values measured
/// nothing.
fn check_sum(label: &str, got: u64, want: u64) {
    if got != want {
        eprintln!("messaging: {label}: received sum {got}, expected {want}: the run is invalid");
        std::process::exit(1);
    }
}

// =============================================================================================
// Timing
// =============================================================================================

/// Cycle counter for per-round-trip timing (`rdtsc` on x86_64: ~10 ns to read, quantized to
/// 26 cycles on this VM; `Instant` elsewhere).
mod clock {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static BASE: OnceLock<Instant> = OnceLock::new();
    static NS_PER_TICK: OnceLock<f64> = OnceLock::new();

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn ticks() -> u64 {
        // SAFETY: `rdtsc` has no preconditions on x86_64; it only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub fn ticks() -> u64 {
        BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// Measures the tick rate against `Instant` over ~100 ms (once).
    pub fn calibrate() -> f64 {
        *NS_PER_TICK.get_or_init(|| {
            let _ = BASE.get_or_init(Instant::now);
            let (t0, c0) = (Instant::now(), ticks());
            std::thread::sleep(Duration::from_millis(100));
            let (t1, c1) = (Instant::now(), ticks());
            let ns = t1.duration_since(t0).as_nanos() as f64;
            let dt = c1.saturating_sub(c0).max(1) as f64;
            ns / dt
        })
    }

    pub fn to_ns(ticks: u64) -> u64 {
        (ticks as f64 * calibrate()).round() as u64
    }
}

/// CPU taken by other processes and by the hypervisor (steal) between two snapshots, from
/// `/proc/stat` and `/proc/self/stat` (Linux; empty elsewhere).
#[derive(Clone, Copy, Default)]
struct CpuSnap {
    busy: u64,
    steal: u64,
    total: u64,
    own: u64,
}

impl CpuSnap {
    fn take() -> Option<CpuSnap> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        if f.len() < 8 {
            return None;
        }
        let busy = f[0] + f[1] + f[2] + f[5] + f[6];
        let total: u64 = f[..8].iter().sum();
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = own_stat.rsplit_once(')')?.1;
        let g: Vec<&str> = rest.split_whitespace().collect();
        let own = g.get(11)?.parse::<u64>().ok()? + g.get(12)?.parse::<u64>().ok()?;
        Some(CpuSnap {
            busy,
            steal: f[7],
            total,
            own,
        })
    }

    /// (foreign busy %, steal %) of all CPU time between `self` and `later`.
    fn foreign_since(&self, later: &CpuSnap) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let busy = later.busy.saturating_sub(self.busy);
        let own = later.own.saturating_sub(self.own);
        let foreign = busy.saturating_sub(own) as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64;
        (100.0 * foreign / total, 100.0 * steal / total)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// =============================================================================================
// Shared harnesses
// =============================================================================================

/// One throughput measurement.
#[derive(Clone, Copy)]
struct Thru {
    msgs: u64,
    secs: f64,
}

impl Thru {
    fn mmsg_per_s(&self) -> f64 {
        self.msgs as f64 / self.secs.max(1e-12) / 1e6
    }
}

/// Waits until `count` threads have arrived (spin, then yield: on 2 cores the other thread may
/// need this one's core to get there).
fn start_line(arrived: &AtomicUsize, count: usize) {
    arrived.fetch_add(1, Ordering::AcqRel);
    let mut spins = 0u32;
    while arrived.load(Ordering::Acquire) < count {
        if spins < 1_000 {
            spins += 1;
            spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// 1 producer → 1 consumer on the two pinned cores. `produce(p, n)` sends `0..n`;
/// `consume(c, n)` receives `n` values and returns their sum, which is checked. The time runs
/// from the producer's start (after both threads reached the start line) to the consumer's
/// last receive.
fn one_to_one<P, C>(
    cfg: &Cfg,
    label: &str,
    p: P,
    c: C,
    produce: impl FnOnce(&mut P, u64) + Send,
    consume: impl FnOnce(&mut C, u64) -> u64 + Send,
) -> Thru
where
    P: Send,
    C: Send,
{
    let n = cfg.n;
    let arrived = AtomicUsize::new(0);
    let (pc, cc) = (cfg.producer_core(), cfg.consumer_core());
    let (t0, (t1, sum)) = thread::scope(|s| {
        let arrived = &arrived;
        let prod = s.spawn(move || {
            pin(pc);
            start_line(arrived, 2);
            let t0 = Instant::now();
            // Each handle on its own 128-byte block wherever the compiler keeps it (the
            // spawned closures are heap boxes allocated back to back): false sharing between
            // the two handles' private positions would otherwise decide the result.
            let mut p = CachePadded::new(p);
            produce(&mut p, n);
            t0
        });
        let cons = s.spawn(move || {
            pin(cc);
            start_line(arrived, 2);
            let mut c = CachePadded::new(c);
            let sum = consume(&mut c, n);
            (Instant::now(), sum)
        });
        let t0 = prod
            .join()
            .unwrap_or_else(|_| fail(label, "producer panicked"));
        let r = cons
            .join()
            .unwrap_or_else(|_| fail(label, "consumer panicked"));
        (t0, r)
    });
    check_sum(label, sum, sum_below(n));
    Thru {
        msgs: n,
        secs: t1.saturating_duration_since(t0).as_secs_f64(),
    }
}

fn fail(label: &str, what: &str) -> ! {
    eprintln!("messaging: {label}: {what}");
    std::process::exit(1);
}

/// One end of a ping-pong: `send` hands a value to the other end, `recv` spins until one
/// arrives from it.
trait Endpoint: Send {
    fn send(&mut self, v: u64);
    fn recv(&mut self) -> u64;
}

/// Ping-pong between the pinned cores: the ping end sends `i`, the echo end answers `i + 1`;
/// `warm` untimed round trips, then `rtt` timed one by one. Returns round-trip times in ns.
fn ping_pong<A: Endpoint, B: Endpoint>(cfg: &Cfg, label: &str, a: A, b: B, rtt: usize) -> Vec<u64> {
    let warm = cfg.warm.min(rtt);
    let total = (warm + rtt) as u64;
    let arrived = AtomicUsize::new(0);
    let (pc, cc) = (cfg.producer_core(), cfg.consumer_core());
    let ticks = thread::scope(|s| {
        let arrived = &arrived;
        let echo = s.spawn(move || {
            let mut b = CachePadded::new(b);
            pin(cc);
            start_line(arrived, 2);
            let mut sum = 0u64;
            for _ in 0..total {
                let v = b.recv();
                sum = sum.wrapping_add(v);
                b.send(v + 1);
            }
            sum
        });
        let ping = s.spawn(move || {
            let mut a = CachePadded::new(a);
            pin(pc);
            start_line(arrived, 2);
            let mut out = Vec::with_capacity(rtt);
            for i in 0..total {
                let t0 = clock::ticks();
                a.send(i);
                let r = a.recv();
                let t1 = clock::ticks();
                if r != i + 1 {
                    fail("ping-pong", "echo answered with the wrong value");
                }
                if i >= warm as u64 {
                    out.push(t1.wrapping_sub(t0));
                }
            }
            out
        });
        let sum = echo
            .join()
            .unwrap_or_else(|_| fail(label, "echo thread panicked"));
        check_sum(label, sum, sum_below(total));
        ping.join()
            .unwrap_or_else(|_| fail(label, "ping thread panicked"))
    });
    ticks.into_iter().map(clock::to_ns).collect()
}

/// p50, p99 of round-trip samples (ns).
fn percentiles(mut ns: Vec<u64>) -> (u64, u64) {
    if ns.is_empty() {
        return (0, 0);
    }
    ns.sort_unstable();
    let at = |p: usize| ns[(ns.len() * p / 100).min(ns.len() - 1)];
    (at(50), at(99))
}

/// Spin backoff for the oversubscribed shapes (3–4 threads on 2 vCPUs): spin briefly, then
/// yield so the thread that would make progress gets the core.
#[inline]
fn relax(spins: &mut u32) {
    if *spins < 100 {
        *spins += 1;
        spin_loop();
    } else {
        thread::yield_now();
    }
}

// =============================================================================================
// The physical floor: two lines bounced between the cores
// =============================================================================================

mod floor {
    use super::*;

    /// A value alone on a 128-byte block (the adjacent-line prefetcher pairs 64-byte lines).
    #[repr(align(128))]
    pub struct Line(pub AtomicU64);

    pub struct End {
        out: Arc<Line>,
        inp: Arc<Line>,
        last: u64,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            self.out.0.store(v, Ordering::Release);
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            loop {
                let x = self.inp.0.load(Ordering::Acquire);
                if x != self.last {
                    self.last = x;
                    return x;
                }
                spin_loop();
            }
        }
    }

    pub fn pair() -> (End, End) {
        let ab = Arc::new(Line(AtomicU64::new(u64::MAX)));
        let ba = Arc::new(Line(AtomicU64::new(u64::MAX)));
        (
            End {
                out: ab.clone(),
                inp: ba.clone(),
                last: u64::MAX,
            },
            End {
                out: ba,
                inp: ab,
                last: u64::MAX,
            },
        )
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let (a, b) = pair();
        ping_pong(cfg, "floor", a, b, cfg.rtt)
    }

    /// A short probe (20 k round trips) classifying the current vCPU placement.
    pub fn probe(cfg: &Cfg) -> (u64, u64) {
        let mut quick = cfg.clone();
        quick.warm = 2_000;
        let (a, b) = pair();
        percentiles(ping_pong(&quick, "probe", a, b, 20_000))
    }

    /// The placement classes of the messaging notes (§1).
    pub fn class(p50: u64) -> &'static str {
        match p50 {
            0..60 => "adjacent",
            60..=150 => "near",
            151..=300 => "between",
            _ => "far",
        }
    }
}

// =============================================================================================
// Ours: SpscQueue
// =============================================================================================

mod ours_spsc {
    use super::*;
    use laminar_core::sync::{Consumer, Producer, SpscQueue};

    fn consume_items(c: &mut Consumer<u64>, n: u64) -> u64 {
        let (mut sum, mut got) = (0u64, 0u64);
        while got < n {
            match c.pop() {
                Some(v) => {
                    sum = sum.wrapping_add(v);
                    got += 1;
                }
                None => spin_loop(),
            }
        }
        sum
    }

    fn consume_batches(c: &mut Consumer<u64>, n: u64) -> u64 {
        let (mut sum, mut got) = (0u64, 0u64);
        while got < n {
            let k = c.pop_batch(usize::MAX, |v| sum = sum.wrapping_add(v));
            if k == 0 {
                spin_loop();
            }
            got += k as u64;
        }
        sum
    }

    pub fn item(cfg: &Cfg) -> Thru {
        let (p, c) = SpscQueue::<u64>::with_capacity(cfg.cap);
        one_to_one(
            cfg,
            "SpscQueue item",
            p,
            c,
            |p: &mut Producer<u64>, n| {
                for i in 0..n {
                    let mut v = i;
                    while let Err(back) = p.push(v) {
                        v = back;
                        spin_loop();
                    }
                }
            },
            consume_items,
        )
    }

    /// `push_with(64)` (values made in place, one Release store per batch) against a consumer
    /// draining everything available with `pop_batch` (one store per drain).
    pub fn batch_push_with(cfg: &Cfg) -> Thru {
        let (p, c) = SpscQueue::<u64>::with_capacity(cfg.cap);
        one_to_one(
            cfg,
            "SpscQueue push_with",
            p,
            c,
            |p: &mut Producer<u64>, n| {
                let mut next = 0u64;
                while next < n {
                    let k = (n - next).min(64) as usize;
                    let base = next;
                    let pushed = p.push_with(k, |i| base + i as u64);
                    if pushed == 0 {
                        spin_loop();
                    }
                    next += pushed as u64;
                }
            },
            consume_batches,
        )
    }

    /// `push_batch` of a 64-value `Vec` (refilled when emptied) against `pop_batch`.
    pub fn batch_push_batch(cfg: &Cfg) -> Thru {
        let (p, c) = SpscQueue::<u64>::with_capacity(cfg.cap);
        one_to_one(
            cfg,
            "SpscQueue push_batch",
            p,
            c,
            |p: &mut Producer<u64>, n| {
                let mut next = 0u64;
                let mut buf: Vec<u64> = Vec::with_capacity(64);
                while next < n || !buf.is_empty() {
                    if buf.is_empty() {
                        let k = (n - next).min(64);
                        buf.extend(next..next + k);
                        next += k;
                    }
                    if p.push_batch(&mut buf) == 0 {
                        spin_loop();
                    }
                }
            },
            consume_batches,
        )
    }

    pub struct End {
        tx: Producer<u64>,
        rx: Consumer<u64>,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            let mut v = v;
            while let Err(back) = self.tx.push(v) {
                v = back;
                spin_loop();
            }
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            loop {
                if let Some(v) = self.rx.pop() {
                    return v;
                }
                spin_loop();
            }
        }
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let (ab_tx, ab_rx) = SpscQueue::<u64>::with_capacity(cfg.cap);
        let (ba_tx, ba_rx) = SpscQueue::<u64>::with_capacity(cfg.cap);
        let a = End {
            tx: ab_tx,
            rx: ba_rx,
        };
        let b = End {
            tx: ba_tx,
            rx: ab_rx,
        };
        ping_pong(cfg, "SpscQueue rtt", a, b, cfg.rtt)
    }
}

// =============================================================================================
// Ours: disruptor (laminar_core::sync::disruptor)
// =============================================================================================

/// ours: disruptor SP/MP/pipeline/ping-pong (`laminar_core::sync::disruptor`), shaped like the
/// `ext_disruptor` functions they are compared with: managed handler threads built with
/// `Disruptor::builder`, the last stage recording the time of the last event; the ping-pong
/// uses the low-level pieces (sequencer, ring, barrier), which is what a polling consumer is.
mod ours_disruptor {
    use super::*;
    use laminar_core::sync::disruptor::{
        Disruptor, HandlerResult, RingBuffer, Sequence, SequenceBarrier, SingleProducerSequencer,
    };
    use laminar_core::sync::wait::{BusySpin, BusySpinWithHint, Yielding};

    /// Queue name for the table rows.
    pub const QUEUE: &str = "laminar disruptor";

    /// What the last stage reports: its sum and when it saw the last event.
    #[derive(Default)]
    struct Done {
        sum: AtomicU64,
        end_ns: AtomicU64,
        seen: AtomicBool,
    }

    impl Done {
        fn record(&self, base: Instant, sum: u64) {
            self.end_ns
                .store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.sum.store(sum, Ordering::Relaxed);
            self.seen.store(true, Ordering::Release);
        }
    }

    /// A handler that pins its managed thread to `core` on its first event, sums the values and
    /// records the time of event number `n` (counted: also right when producers interleave).
    fn summing(
        n: u64,
        base: Instant,
        done: Arc<Done>,
        core: Option<CoreId>,
    ) -> impl FnMut(&u64, i64, bool) -> HandlerResult + Send + 'static {
        let (mut sum, mut count, mut pinned) = (0u64, 0u64, false);
        move |v: &u64, _seq: i64, _end_of_batch: bool| {
            if !pinned {
                pinned = true;
                pin(core);
            }
            sum = sum.wrapping_add(*v);
            count += 1;
            if count == n {
                done.record(base, sum);
            }
            Ok(())
        }
    }

    fn finish(label: &str, n: u64, start_ns: u64, done: &Done, want: u64) -> Thru {
        if !done.seen.load(Ordering::Acquire) {
            fail(label, "the last stage never saw the last event");
        }
        check_sum(label, done.sum.load(Ordering::Relaxed), want);
        let end = done.end_ns.load(Ordering::Relaxed);
        Thru {
            msgs: n,
            secs: end.saturating_sub(start_ns) as f64 / 1e9,
        }
    }

    /// SP, one managed handler (BusySpin, like the crate's row) pinned to the second core by a
    /// warm-up event (value 0, before the clock starts), producer on the first core; per-item
    /// `publish` or `batch_publish(batch)` (one claim, one cursor store per batch).
    fn sp(cfg: &Cfg, label: &'static str, batch: Option<usize>) -> Thru {
        let (n, cap) = (cfg.n, cfg.cap);
        let (pc, cc) = (cfg.producer_core(), cfg.consumer_core());
        let base = Instant::now();
        let done = Arc::new(Done::default());
        let d2 = done.clone();
        let start_ns = thread::spawn(move || {
            let mut producer = Disruptor::builder(cap, || 0u64)
                .wait_strategy(BusySpin)
                .thread_name("bench-sp")
                .handle_events_with(summing(n + 1, base, d2, cc))
                .build_single_producer()
                .unwrap_or_else(|e| fail(label, &e.to_string()));
            pin(pc);
            producer.publish(|e| *e = 0);
            producer.wait_until_processed(0);
            thread::sleep(Duration::from_millis(1));
            let start_ns = base.elapsed().as_nanos() as u64;
            match batch {
                None => {
                    for i in 0..n {
                        producer.publish(|e| *e = i);
                    }
                }
                Some(b) => {
                    let mut next = 0u64;
                    while next < n {
                        let k = (n - next).min(b as u64) as usize;
                        let base_v = next;
                        producer
                            .batch_publish(k, |i, e| *e = base_v + i as u64)
                            .unwrap_or_else(|e| fail(label, &e.to_string()));
                        next += k as u64;
                    }
                }
            }
            // Drains and joins the handler thread.
            producer.shutdown();
            start_ns
        })
        .join()
        .unwrap_or_else(|_| fail(label, "producer panicked"));
        finish(label, n, start_ns, &done, sum_below(n))
    }

    pub fn sp_item(cfg: &Cfg) -> Thru {
        sp(cfg, "laminar disruptor SP item", None)
    }

    pub fn sp_batch64(cfg: &Cfg) -> Thru {
        sp(cfg, "laminar disruptor SP batch", Some(64))
    }

    /// 2 producers (`fetch_add` claims) → 1 managed handler, unpinned, `Yielding` waits;
    /// `n` values in all.
    pub fn mp2(cfg: &Cfg) -> Thru {
        let label = "laminar disruptor MP 2P1C";
        let n = cfg.n;
        let base = Instant::now();
        let done = Arc::new(Done::default());
        let producer = Disruptor::builder(cfg.cap, || 0u64)
            .wait_strategy(Yielding::default())
            .thread_name("bench-mp")
            .handle_events_with(summing(n, base, done.clone(), None))
            .build_multi_producer()
            .unwrap_or_else(|e| fail(label, &e.to_string()));
        let go = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for half in 0..2u64 {
            let mut p = producer.clone();
            let go = go.clone();
            handles.push(thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                for i in half * n / 2..(half + 1) * n / 2 {
                    p.publish(|e| *e = i);
                }
            }));
        }
        drop(producer);
        thread::sleep(Duration::from_millis(1));
        let start_ns = base.elapsed().as_nanos() as u64;
        go.store(true, Ordering::Release);
        for h in handles {
            h.join()
                .unwrap_or_else(|_| fail(label, "producer panicked"));
        }
        // The last producer handle, dropped by its thread, drained and joined the handler.
        finish(label, n, start_ns, &done, sum_below(n))
    }

    /// Pipeline event: stage 1 writes `s1 = v + 1`, stage 2 `s2 = 2 * s1` (both exclusive
    /// stages, mutating the event in place), stage 3 sums `s2`.
    #[derive(Default)]
    pub struct Ev3 {
        v: u64,
        s1: u64,
        s2: u64,
    }

    /// Producer → stage 1 → stage 2 → stage 3, unpinned, `Yielding` waits; the last stage's
    /// sum must be Σ 2(v + 1) = n(n + 1).
    pub fn pipeline3(cfg: &Cfg) -> Thru {
        let label = "laminar disruptor pipeline";
        let n = cfg.n;
        let base = Instant::now();
        let done = Arc::new(Done::default());
        let d3 = done.clone();
        let (mut sum, mut count) = (0u64, 0u64);
        let mut producer = Disruptor::builder(cfg.cap, Ev3::default)
            .wait_strategy(Yielding::default())
            .thread_name("bench-pipe")
            .handle_events_mut(|e: &mut Ev3, _, _| {
                e.s1 = e.v + 1;
                Ok(())
            })
            .then_mut(|e: &mut Ev3, _, _| {
                e.s2 = 2 * e.s1;
                Ok(())
            })
            .then(move |e: &Ev3, _, _| {
                sum = sum.wrapping_add(e.s2);
                count += 1;
                if count == n {
                    d3.record(base, sum);
                }
                Ok(())
            })
            .build_single_producer()
            .unwrap_or_else(|e| fail(label, &e.to_string()));
        thread::sleep(Duration::from_millis(1));
        let start_ns = base.elapsed().as_nanos() as u64;
        for i in 0..n {
            producer.publish(|e| e.v = i);
        }
        producer.shutdown();
        finish(label, n, start_ns, &done, n.wrapping_mul(n + 1))
    }

    type Wait = BusySpinWithHint;

    /// Ping-pong end: publishes into one SP ring; consumes the other one event at a time with
    /// its barrier and its own gating sequence (what an event poller does).
    pub struct End {
        tx: SingleProducerSequencer<Wait>,
        tx_ring: Arc<RingBuffer<u64>>,
        rx_ring: Arc<RingBuffer<u64>>,
        rx_barrier: SequenceBarrier<Wait>,
        rx_sequence: Arc<Sequence>,
        next: i64,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            let claim = self
                .tx
                .next(1)
                .unwrap_or_else(|e| fail("laminar disruptor rtt", &e.to_string()));
            // SAFETY: the claim is ours and unpublished, and the sequencer waited for the
            // other end's gating sequence to pass the slot's previous lap.
            unsafe { self.tx_ring.with_slot_mut(claim.lo(), |e| *e = v) };
            self.tx.publish(claim);
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            // A polling consumer: `available` never waits; between polls, prefetch the slot
            // it waits for (`RingBuffer::prefetch`), so that the cursor and the slot line
            // arrive together once published.
            while self.rx_barrier.available(self.next) < self.next {
                self.rx_ring.prefetch(self.next);
                spin_loop();
            }
            // SAFETY: the barrier showed `next` published; our sequence (which gates the
            // producer) is below it until the store just after the read.
            let v = unsafe { self.rx_ring.with_slot(self.next, |e| *e) };
            self.rx_sequence.set(self.next);
            self.next += 1;
            v
        }
    }

    /// The producing side of a ring: its sequencer and slots.
    type Tx = (SingleProducerSequencer<Wait>, Arc<RingBuffer<u64>>);
    /// The consuming side of a ring: slots, barrier and the consumer's gating sequence.
    type Rx = (Arc<RingBuffer<u64>>, SequenceBarrier<Wait>, Arc<Sequence>);

    /// One SP ring, split into its producing and consuming sides.
    fn ring(cap: usize) -> (Tx, Rx) {
        let label = "laminar disruptor rtt";
        let ring =
            Arc::new(RingBuffer::new(cap, || 0u64).unwrap_or_else(|e| fail(label, &e.to_string())));
        let consumer = Arc::new(Sequence::new());
        let seq =
            SingleProducerSequencer::new(cap, Arc::new(BusySpinWithHint), vec![consumer.clone()])
                .unwrap_or_else(|e| fail(label, &e.to_string()));
        let barrier = seq.new_barrier(vec![]);
        ((seq, ring.clone()), (ring, barrier, consumer))
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let ((ab_tx, ab_tx_ring), (ab_rx_ring, ab_barrier, ab_seq)) = ring(cfg.cap);
        let ((ba_tx, ba_tx_ring), (ba_rx_ring, ba_barrier, ba_seq)) = ring(cfg.cap);
        let a = End {
            tx: ab_tx,
            tx_ring: ab_tx_ring,
            rx_ring: ba_rx_ring,
            rx_barrier: ba_barrier,
            rx_sequence: ba_seq,
            next: 0,
        };
        let b = End {
            tx: ba_tx,
            tx_ring: ba_tx_ring,
            rx_ring: ab_rx_ring,
            rx_barrier: ab_barrier,
            rx_sequence: ab_seq,
            next: 0,
        };
        ping_pong(cfg, "laminar disruptor rtt", a, b, cfg.rtt)
    }
}

// =============================================================================================
// External: crossbeam-queue ArrayQueue
// =============================================================================================

mod ext_crossbeam {
    use super::*;
    use crossbeam_queue::ArrayQueue;

    fn push_spin(q: &ArrayQueue<u64>, v: u64) {
        let mut v = v;
        while let Err(back) = q.push(v) {
            v = back;
            spin_loop();
        }
    }

    pub fn item(cfg: &Cfg) -> Thru {
        let q = Arc::new(ArrayQueue::<u64>::new(cfg.cap));
        one_to_one(
            cfg,
            "ArrayQueue item",
            q.clone(),
            q,
            |q, n| {
                for i in 0..n {
                    push_spin(q, i);
                }
            },
            |q, n| {
                let (mut sum, mut got) = (0u64, 0u64);
                while got < n {
                    match q.pop() {
                        Some(v) => {
                            sum = sum.wrapping_add(v);
                            got += 1;
                        }
                        None => spin_loop(),
                    }
                }
                sum
            },
        )
    }

    /// 2 producers → 1 consumer, unpinned (3 threads on 2 vCPUs), spin-then-yield waits.
    pub fn mp2(cfg: &Cfg) -> Thru {
        let n = cfg.n;
        let q = Arc::new(ArrayQueue::<u64>::new(cfg.cap));
        let go = AtomicBool::new(false);
        let (t0, t1, sum) = thread::scope(|s| {
            let go = &go;
            for half in 0..2u64 {
                let q = q.clone();
                s.spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        thread::yield_now();
                    }
                    let (lo, hi) = (half * n / 2, (half + 1) * n / 2);
                    for i in lo..hi {
                        let mut v = i;
                        let mut spins = 0;
                        while let Err(back) = q.push(v) {
                            v = back;
                            relax(&mut spins);
                        }
                    }
                });
            }
            let cons = s.spawn(|| {
                while !go.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                let (mut sum, mut got, mut spins) = (0u64, 0u64, 0u32);
                while got < n {
                    match q.pop() {
                        Some(v) => {
                            sum = sum.wrapping_add(v);
                            got += 1;
                            spins = 0;
                        }
                        None => relax(&mut spins),
                    }
                }
                (Instant::now(), sum)
            });
            thread::sleep(Duration::from_millis(1));
            let t0 = Instant::now();
            go.store(true, Ordering::Release);
            let (t1, sum) = cons
                .join()
                .unwrap_or_else(|_| fail("ArrayQueue mp2", "consumer panicked"));
            (t0, t1, sum)
        });
        check_sum("ArrayQueue 2P1C", sum, sum_below(n));
        Thru {
            msgs: n,
            secs: t1.saturating_duration_since(t0).as_secs_f64(),
        }
    }

    pub struct End {
        tx: Arc<ArrayQueue<u64>>,
        rx: Arc<ArrayQueue<u64>>,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            push_spin(&self.tx, v);
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            loop {
                if let Some(v) = self.rx.pop() {
                    return v;
                }
                spin_loop();
            }
        }
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let ab = Arc::new(ArrayQueue::<u64>::new(cfg.cap));
        let ba = Arc::new(ArrayQueue::<u64>::new(cfg.cap));
        let a = End {
            tx: ab.clone(),
            rx: ba.clone(),
        };
        let b = End { tx: ba, rx: ab };
        ping_pong(cfg, "ArrayQueue rtt", a, b, cfg.rtt)
    }
}

// =============================================================================================
// External: rtrb
// =============================================================================================

mod ext_rtrb {
    use super::*;
    use rtrb::{Consumer, Producer, RingBuffer};

    fn consume_items(c: &mut Consumer<u64>, n: u64) -> u64 {
        let (mut sum, mut got) = (0u64, 0u64);
        while got < n {
            match c.pop() {
                Ok(v) => {
                    sum = sum.wrapping_add(v);
                    got += 1;
                }
                Err(_) => spin_loop(),
            }
        }
        sum
    }

    fn push_spin(p: &mut Producer<u64>, v: u64) {
        let mut v = v;
        while let Err(rtrb::PushError::Full(back)) = p.push(v) {
            v = back;
            spin_loop();
        }
    }

    pub fn item(cfg: &Cfg) -> Thru {
        let (p, c) = RingBuffer::<u64>::new(cfg.cap);
        one_to_one(
            cfg,
            "rtrb item",
            p,
            c,
            |p: &mut Producer<u64>, n| {
                for i in 0..n {
                    push_spin(p, i);
                }
            },
            consume_items,
        )
    }

    /// Write chunks of 64 (`write_chunk_uninit` + `fill_from_iter`, one commit each), read
    /// everything available as one chunk.
    pub fn chunks64(cfg: &Cfg) -> Thru {
        let (p, c) = RingBuffer::<u64>::new(cfg.cap);
        one_to_one(
            cfg,
            "rtrb chunks",
            p,
            c,
            |p: &mut Producer<u64>, n| {
                let mut next = 0u64;
                while next < n {
                    let k = (n - next).min(64);
                    match p.write_chunk_uninit(k as usize) {
                        Ok(chunk) => {
                            let filled = chunk.fill_from_iter(next..next + k);
                            next += filled as u64;
                        }
                        Err(_) => spin_loop(),
                    }
                }
            },
            |c: &mut Consumer<u64>, n| {
                let (mut sum, mut got) = (0u64, 0u64);
                while got < n {
                    let avail = c.slots();
                    if avail == 0 {
                        spin_loop();
                        continue;
                    }
                    match c.read_chunk(avail) {
                        Ok(chunk) => {
                            let (a, b) = chunk.as_slices();
                            for &v in a.iter().chain(b) {
                                sum = sum.wrapping_add(v);
                            }
                            got += (a.len() + b.len()) as u64;
                            chunk.commit_all();
                        }
                        Err(_) => spin_loop(),
                    }
                }
                sum
            },
        )
    }

    pub struct End {
        tx: Producer<u64>,
        rx: Consumer<u64>,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            push_spin(&mut self.tx, v);
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            loop {
                if let Ok(v) = self.rx.pop() {
                    return v;
                }
                spin_loop();
            }
        }
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let (ab_tx, ab_rx) = RingBuffer::<u64>::new(cfg.cap);
        let (ba_tx, ba_rx) = RingBuffer::<u64>::new(cfg.cap);
        ping_pong(
            cfg,
            "rtrb rtt",
            End {
                tx: ab_tx,
                rx: ba_rx,
            },
            End {
                tx: ba_tx,
                rx: ab_rx,
            },
            cfg.rtt,
        )
    }
}

// =============================================================================================
// External: ringbuf
// =============================================================================================

mod ext_ringbuf {
    use super::*;
    use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
    use ringbuf::{HeapCons, HeapProd, HeapRb};

    fn split(cap: usize) -> (HeapProd<u64>, HeapCons<u64>) {
        HeapRb::<u64>::new(cap).split()
    }

    fn push_spin(p: &mut HeapProd<u64>, v: u64) {
        let mut v = v;
        while let Err(back) = p.try_push(v) {
            v = back;
            spin_loop();
        }
    }

    pub fn item(cfg: &Cfg) -> Thru {
        let (p, c) = split(cfg.cap);
        one_to_one(
            cfg,
            "ringbuf item",
            p,
            c,
            |p: &mut HeapProd<u64>, n| {
                for i in 0..n {
                    push_spin(p, i);
                }
            },
            |c: &mut HeapCons<u64>, n| {
                let (mut sum, mut got) = (0u64, 0u64);
                while got < n {
                    match c.try_pop() {
                        Some(v) => {
                            sum = sum.wrapping_add(v);
                            got += 1;
                        }
                        None => spin_loop(),
                    }
                }
                sum
            },
        )
    }

    /// `push_slice` of 64 values (the rest of a partly pushed slice retried) against
    /// `pop_slice` into a 64-value buffer.
    pub fn slices64(cfg: &Cfg) -> Thru {
        let (p, c) = split(cfg.cap);
        one_to_one(
            cfg,
            "ringbuf slices",
            p,
            c,
            |p: &mut HeapProd<u64>, n| {
                let mut buf = [0u64; 64];
                let mut next = 0u64;
                while next < n {
                    let k = (n - next).min(64) as usize;
                    for (j, slot) in buf[..k].iter_mut().enumerate() {
                        *slot = next + j as u64;
                    }
                    let mut off = 0;
                    while off < k {
                        let pushed = p.push_slice(&buf[off..k]);
                        if pushed == 0 {
                            spin_loop();
                        }
                        off += pushed;
                    }
                    next += k as u64;
                }
            },
            |c: &mut HeapCons<u64>, n| {
                let mut buf = [0u64; 64];
                let (mut sum, mut got) = (0u64, 0u64);
                while got < n {
                    let k = c.pop_slice(&mut buf);
                    if k == 0 {
                        spin_loop();
                        continue;
                    }
                    for &v in &buf[..k] {
                        sum = sum.wrapping_add(v);
                    }
                    got += k as u64;
                }
                sum
            },
        )
    }

    pub struct End {
        tx: HeapProd<u64>,
        rx: HeapCons<u64>,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            push_spin(&mut self.tx, v);
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            loop {
                if let Some(v) = self.rx.try_pop() {
                    return v;
                }
                spin_loop();
            }
        }
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let (ab_tx, ab_rx) = split(cfg.cap);
        let (ba_tx, ba_rx) = split(cfg.cap);
        ping_pong(
            cfg,
            "ringbuf rtt",
            End {
                tx: ab_tx,
                rx: ba_rx,
            },
            End {
                tx: ba_tx,
                rx: ab_rx,
            },
            cfg.rtt,
        )
    }
}

// =============================================================================================
// External: disruptor 4.4.0
// =============================================================================================

mod ext_disruptor {
    use super::*;
    use disruptor::{
        build_multi_producer, build_single_producer, BusySpin, EventPoller, Polling,
        ProcessorSettings as _, Producer as _, Sequence, SingleConsumerBarrier, SingleProducer,
        SingleProducerBarrier,
    };

    /// The event: one `u64`, pre-allocated in the ring and overwritten in place.
    pub struct Ev {
        v: u64,
    }

    fn ev() -> Ev {
        Ev { v: 0 }
    }

    /// A waiting strategy for the oversubscribed shapes: the crate has none that yields, and a
    /// busy-spinning stage would hold a core the others need (3–4 threads on 2 vCPUs).
    #[derive(Clone, Copy)]
    pub struct YieldWait;

    impl disruptor::wait_strategies::WaitStrategy for YieldWait {
        fn wait_for(&self, _sequence: Sequence) {
            thread::yield_now();
        }
    }

    /// What the managed consumer thread reports: its sum and when it saw the last event.
    #[derive(Default)]
    struct Done {
        sum: AtomicU64,
        end_ns: AtomicU64,
        seen: AtomicBool,
    }

    /// A handler that sums `v` and records the time of event number `n` (counted, so that it
    /// also works when several producers interleave sequences).
    fn summing_handler(
        n: u64,
        base: Instant,
        done: Arc<Done>,
    ) -> impl FnMut(&Ev, Sequence, bool) + Send + 'static {
        let (mut sum, mut count) = (0u64, 0u64);
        move |e: &Ev, _seq: Sequence, _end_of_batch: bool| {
            sum = sum.wrapping_add(e.v);
            count += 1;
            if count == n {
                done.end_ns
                    .store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                done.sum.store(sum, Ordering::Relaxed);
                done.seen.store(true, Ordering::Release);
            }
        }
    }

    fn finish(label: &str, n: u64, start_ns: u64, done: &Done, want: u64) -> Thru {
        if !done.seen.load(Ordering::Acquire) {
            fail(label, "the consumer never saw the last event");
        }
        check_sum(label, done.sum.load(Ordering::Relaxed), want);
        let end = done.end_ns.load(Ordering::Relaxed);
        Thru {
            msgs: n,
            secs: end.saturating_sub(start_ns) as f64 / 1e9,
        }
    }

    /// SP, managed consumer thread (BusySpin) pinned to the second core, producer on the
    /// first; per-item `publish` or `batch_publish(batch)`.
    fn sp(cfg: &Cfg, label: &'static str, batch: Option<usize>) -> Thru {
        let n = cfg.n;
        let cap = cfg.cap;
        let (pc, cc) = (cfg.producer_core(), cfg.consumer_core());
        let base = Instant::now();
        let done = Arc::new(Done::default());
        let d2 = done.clone();
        let start_ns = thread::spawn(move || {
            // Build before pinning this thread: the crate checks the handler's core against
            // the cores the *calling* thread may run on.
            let builder = build_single_producer(cap, ev, BusySpin);
            let builder = match cc {
                Some(core) => builder.pin_at_core(core.id),
                None => builder,
            };
            let mut producer = builder
                .handle_events_with(summing_handler(n, base, d2))
                .build();
            pin(pc);
            thread::sleep(Duration::from_millis(1));
            let start_ns = base.elapsed().as_nanos() as u64;
            match batch {
                None => {
                    for i in 0..n {
                        producer.publish(|e| e.v = i);
                    }
                }
                Some(b) => {
                    let mut next = 0u64;
                    while next < n {
                        let k = (n - next).min(b as u64) as usize;
                        let mut v = next;
                        producer.batch_publish(k, |iter| {
                            for e in iter {
                                e.v = v;
                                v += 1;
                            }
                        });
                        next += k as u64;
                    }
                }
            }
            // Dropping the last producer drains and joins the consumer thread.
            drop(producer);
            start_ns
        })
        .join()
        .unwrap_or_else(|_| fail(label, "producer panicked"));
        finish(label, n, start_ns, &done, sum_below(n))
    }

    pub fn sp_item(cfg: &Cfg) -> Thru {
        sp(cfg, "disruptor SP item", None)
    }

    pub fn sp_batch64(cfg: &Cfg) -> Thru {
        sp(cfg, "disruptor SP batch", Some(64))
    }

    /// 2 producers → 1 managed consumer, unpinned, yielding waits; `n` values in all.
    pub fn mp2(cfg: &Cfg) -> Thru {
        let n = cfg.n;
        let base = Instant::now();
        let done = Arc::new(Done::default());
        let producer = build_multi_producer(cfg.cap, ev, YieldWait)
            .handle_events_with(summing_handler(n, base, done.clone()))
            .build();
        let go = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for half in 0..2u64 {
            let mut p = producer.clone();
            let go = go.clone();
            handles.push(thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                for i in half * n / 2..(half + 1) * n / 2 {
                    // `try_publish` + the same spin-then-yield as the ArrayQueue 2P→1C row:
                    // `publish` busy-spins on a full ring, which on 2 vCPUs starves the consumer.
                    let mut spins = 0;
                    while p.try_publish(|e| e.v = i).is_err() {
                        relax(&mut spins);
                    }
                }
            }));
        }
        drop(producer);
        thread::sleep(Duration::from_millis(1));
        let start_ns = base.elapsed().as_nanos() as u64;
        go.store(true, Ordering::Release);
        for h in handles {
            h.join()
                .unwrap_or_else(|_| fail("disruptor MP", "producer panicked"));
        }
        // The last producer handle was dropped by its thread, which joined the consumer.
        finish("disruptor MP 2P1C", n, start_ns, &done, sum_below(n))
    }

    /// Pipeline event: stage 1 writes `s1 = v + 1`, stage 2 `s2 = 2 * s1`, stage 3 sums `s2`
    /// (each stage reads what the previous one wrote, ordered by the sequence barriers).
    pub struct Ev3 {
        v: u64,
        s1: AtomicU64,
        s2: AtomicU64,
    }

    /// Producer → stage 1 → stage 2 → stage 3 (each `and_then` the previous), unpinned,
    /// yielding waits; the last stage's sum must be Σ 2(v + 1) = n(n + 1).
    pub fn pipeline3(cfg: &Cfg) -> Thru {
        let n = cfg.n;
        let base = Instant::now();
        let done = Arc::new(Done::default());
        let d3 = done.clone();
        let (mut sum, mut count) = (0u64, 0u64);
        let mut producer = build_single_producer(
            cfg.cap,
            || Ev3 {
                v: 0,
                s1: AtomicU64::new(0),
                s2: AtomicU64::new(0),
            },
            YieldWait,
        )
        .handle_events_with(|e: &Ev3, _, _| e.s1.store(e.v + 1, Ordering::Relaxed))
        .and_then()
        .handle_events_with(|e: &Ev3, _, _| {
            e.s2.store(2 * e.s1.load(Ordering::Relaxed), Ordering::Relaxed)
        })
        .and_then()
        .handle_events_with(move |e: &Ev3, _, _| {
            sum = sum.wrapping_add(e.s2.load(Ordering::Relaxed));
            count += 1;
            if count == n {
                d3.end_ns
                    .store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                d3.sum.store(sum, Ordering::Relaxed);
                d3.seen.store(true, Ordering::Release);
            }
        })
        .build();
        thread::sleep(Duration::from_millis(1));
        let start_ns = base.elapsed().as_nanos() as u64;
        for i in 0..n {
            let mut spins = 0;
            while producer.try_publish(|e| e.v = i).is_err() {
                relax(&mut spins);
            }
        }
        drop(producer);
        finish(
            "disruptor pipeline",
            n,
            start_ns,
            &done,
            n.wrapping_mul(n + 1),
        )
    }

    /// Ping-pong end: publishes into one SP ring, polls another with `EventPoller`.
    pub struct End {
        tx: SingleProducer<Ev, SingleConsumerBarrier>,
        rx: EventPoller<Ev, SingleProducerBarrier>,
    }

    impl Endpoint for End {
        #[inline]
        fn send(&mut self, v: u64) {
            self.tx.publish(|e| e.v = v);
        }

        #[inline]
        fn recv(&mut self) -> u64 {
            loop {
                match self.rx.take(1) {
                    Ok(mut guard) => {
                        if let Some(e) = (&mut guard).next() {
                            return e.v;
                        }
                    }
                    Err(Polling::NoEvents) => spin_loop(),
                    Err(Polling::Shutdown) => fail("disruptor rtt", "ring shut down"),
                }
            }
        }
    }

    fn ring(
        cap: usize,
    ) -> (
        SingleProducer<Ev, SingleConsumerBarrier>,
        EventPoller<Ev, SingleProducerBarrier>,
    ) {
        let (poller, builder) = build_single_producer(cap, ev, BusySpin).new_event_poller();
        (builder.build(), poller)
    }

    pub fn rtt(cfg: &Cfg) -> Vec<u64> {
        let (ab_tx, ab_rx) = ring(cfg.cap);
        let (ba_tx, ba_rx) = ring(cfg.cap);
        ping_pong(
            cfg,
            "disruptor rtt",
            End {
                tx: ab_tx,
                rx: ba_rx,
            },
            End {
                tx: ba_tx,
                rx: ab_rx,
            },
            cfg.rtt,
        )
    }
}

// =============================================================================================
// The bench list
// =============================================================================================

/// Whose implementation a row measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Ours,
    External,
}

/// What a throughput row is compared with (ratios are taken within a class).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// 1P→1C, one message per operation.
    PerItem,
    /// 1P→1C, batches of 64 on the producer side.
    Batch64,
    /// 2 producers → 1 consumer.
    Mp2,
    /// Producer → 3 dependent stages.
    Pipeline3,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::PerItem => "1P→1C per item",
            Class::Batch64 => "1P→1C batch 64",
            Class::Mp2 => "2P→1C",
            Class::Pipeline3 => "3-stage pipeline",
        }
    }
}

struct ThroughputBench {
    queue: &'static str,
    mode: &'static str,
    class: Class,
    origin: Origin,
    run: fn(&Cfg) -> Thru,
}

struct RttBench {
    /// Matches the `queue` of the per-item throughput row it is printed with.
    queue: &'static str,
    origin: Origin,
    run: fn(&Cfg) -> Vec<u64>,
}

const OURS_SPSC: &str = "laminar SpscQueue";
const ARRAY_QUEUE: &str = "crossbeam ArrayQueue";
const RTRB: &str = "rtrb";
const RINGBUF: &str = "ringbuf";
const DISRUPTOR_CRATE: &str = "disruptor 4.4 (crate)";
const FLOOR: &str = "floor: 2 cache lines";

fn throughput_benches() -> Vec<ThroughputBench> {
    use Class::*;
    use Origin::*;
    let b = |queue, mode, class, origin, run| ThroughputBench {
        queue,
        mode,
        class,
        origin,
        run,
    };
    vec![
        // ours: SpscQueue
        b(
            OURS_SPSC,
            "per item (push/pop)",
            PerItem,
            Ours,
            ours_spsc::item,
        ),
        b(
            OURS_SPSC,
            "batch 64 (push_with + pop_batch)",
            Batch64,
            Ours,
            ours_spsc::batch_push_with,
        ),
        b(
            OURS_SPSC,
            "batch 64 (push_batch + pop_batch)",
            Batch64,
            Ours,
            ours_spsc::batch_push_batch,
        ),
        // ours: disruptor SP/MP/pipeline
        b(
            ours_disruptor::QUEUE,
            "SP per item (publish, BusySpin handler)",
            PerItem,
            Ours,
            ours_disruptor::sp_item,
        ),
        b(
            ours_disruptor::QUEUE,
            "SP batch_publish(64)",
            Batch64,
            Ours,
            ours_disruptor::sp_batch64,
        ),
        b(
            ours_disruptor::QUEUE,
            "MP 2P→1C (fetch_add claims, Yielding handler)",
            Mp2,
            Ours,
            ours_disruptor::mp2,
        ),
        b(
            ours_disruptor::QUEUE,
            "3-stage pipeline (&mut stages, Yielding)",
            Pipeline3,
            Ours,
            ours_disruptor::pipeline3,
        ),
        // external
        b(
            ARRAY_QUEUE,
            "per item (push/pop)",
            PerItem,
            External,
            ext_crossbeam::item,
        ),
        b(
            RTRB,
            "per item (push/pop)",
            PerItem,
            External,
            ext_rtrb::item,
        ),
        b(
            RTRB,
            "chunks 64 (write 64, read all)",
            Batch64,
            External,
            ext_rtrb::chunks64,
        ),
        b(
            RINGBUF,
            "per item (try_push/try_pop)",
            PerItem,
            External,
            ext_ringbuf::item,
        ),
        b(
            RINGBUF,
            "slices 64 (push_slice/pop_slice)",
            Batch64,
            External,
            ext_ringbuf::slices64,
        ),
        b(
            DISRUPTOR_CRATE,
            "SP per item (publish, BusySpin handler)",
            PerItem,
            External,
            ext_disruptor::sp_item,
        ),
        b(
            DISRUPTOR_CRATE,
            "SP batch_publish(64)",
            Batch64,
            External,
            ext_disruptor::sp_batch64,
        ),
        b(
            DISRUPTOR_CRATE,
            "MP 2P→1C (try_publish, yielding handler)",
            Mp2,
            External,
            ext_disruptor::mp2,
        ),
        b(
            ARRAY_QUEUE,
            "2P→1C (spin, then yield)",
            Mp2,
            External,
            ext_crossbeam::mp2,
        ),
        b(
            DISRUPTOR_CRATE,
            "3-stage pipeline (try_publish, yielding handlers)",
            Pipeline3,
            External,
            ext_disruptor::pipeline3,
        ),
    ]
}

fn rtt_benches() -> Vec<RttBench> {
    use Origin::*;
    let b = |queue, origin, run| RttBench { queue, origin, run };
    vec![
        b(OURS_SPSC, Ours, ours_spsc::rtt),
        // ours: disruptor ping-pong
        b(ours_disruptor::QUEUE, Ours, ours_disruptor::rtt),
        b(ARRAY_QUEUE, External, ext_crossbeam::rtt),
        b(RTRB, External, ext_rtrb::rtt),
        b(RINGBUF, External, ext_ringbuf::rtt),
        b(DISRUPTOR_CRATE, External, ext_disruptor::rtt),
        b(FLOOR, External, floor::rtt),
    ]
}

// =============================================================================================
// Main: interleaved rounds, medians, tables
// =============================================================================================

fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(CmpOrdering::Equal));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn fmt_opt(x: Option<f64>, prec: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.prec$}"),
        _ => "—".to_string(),
    }
}

fn main() {
    let cfg = Cfg::from_args();
    let ns_per_tick = clock::calibrate();
    let tp: Vec<ThroughputBench> = throughput_benches()
        .into_iter()
        .filter(|b| cfg.wanted(&format!("{} {}", b.queue, b.mode)))
        .collect();
    let rt: Vec<RttBench> = rtt_benches()
        .into_iter()
        .filter(|b| cfg.wanted(&format!("{} ping-pong", b.queue)))
        .collect();

    println!("# Workload F: messaging");
    println!();
    println!(
        "n = {} u64 per run, capacity {}, {} interleaved rounds (medians), ping-pong {} round trips after {} warm-up",
        cfg.n, cfg.cap, cfg.rounds, cfg.rtt, cfg.warm
    );
    match cfg.cores {
        Some((a, b)) => println!("pinning: producer/ping → core {}, consumer/echo → core {} (2P→1C and pipeline unpinned)", a.id, b.id),
        None => println!("pinning: unavailable (fewer than 2 cores visible), threads float"),
    }
    println!(
        "timer: {} ns per tick; load average at start: {}",
        fmt_opt(Some(ns_per_tick), 4),
        loadavg()
    );

    let probe_before = floor::probe(&cfg);
    println!(
        "cache-line probe before: RTT p50 {} ns, p99 {} ns ({})",
        probe_before.0,
        probe_before.1,
        floor::class(probe_before.0)
    );
    println!();

    let mut thr: Vec<Vec<f64>> = vec![Vec::new(); tp.len()];
    let mut rtt: Vec<Vec<(u64, u64)>> = vec![Vec::new(); rt.len()];
    let cpu_start = CpuSnap::take();
    println!("| round | probe p50 (ns) | placement | foreign CPU % | steal % | seconds |");
    println!("|---:|---:|---|---:|---:|---:|");
    for round in 0..cfg.rounds {
        let snap = CpuSnap::take();
        let t_round = Instant::now();
        let (p50, _) = floor::probe(&cfg);
        for (i, b) in tp.iter().enumerate() {
            let r = (b.run)(&cfg);
            thr[i].push(r.mmsg_per_s());
        }
        for (i, b) in rt.iter().enumerate() {
            rtt[i].push(percentiles((b.run)(&cfg)));
        }
        let (foreign, steal) = match (snap, CpuSnap::take()) {
            (Some(a), Some(b)) => a.foreign_since(&b),
            _ => (f64::NAN, f64::NAN),
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.1} |",
            round + 1,
            p50,
            floor::class(p50),
            fmt_opt(Some(foreign), 1),
            fmt_opt(Some(steal), 1),
            t_round.elapsed().as_secs_f64()
        );
    }
    let cpu_total = match (cpu_start, CpuSnap::take()) {
        (Some(a), Some(b)) => Some(a.foreign_since(&b)),
        _ => None,
    };
    let probe_after = floor::probe(&cfg);
    println!();
    println!(
        "cache-line probe after: RTT p50 {} ns, p99 {} ns ({})",
        probe_after.0,
        probe_after.1,
        floor::class(probe_after.0)
    );
    if let Some((foreign, steal)) = cpu_total {
        println!("whole run: other processes {foreign:.1} % of all CPU, steal {steal:.1} %; load average at end: {}", loadavg());
    }
    println!();

    // Medians.
    let thr_med: Vec<f64> = thr.iter().map(|v| median(v)).collect();
    let rtt_med: Vec<(f64, f64)> = rtt
        .iter()
        .map(|v| {
            let p50: Vec<f64> = v.iter().map(|x| x.0 as f64).collect();
            let p99: Vec<f64> = v.iter().map(|x| x.1 as f64).collect();
            (median(&p50), median(&p99))
        })
        .collect();

    // Best external per class, and best external RTT p50.
    let best_ext = |class: Class| -> Option<(f64, &'static str)> {
        tp.iter()
            .zip(&thr_med)
            .filter(|(b, _)| b.class == class && b.origin == Origin::External)
            .map(|(b, &m)| (m, b.queue))
            .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(CmpOrdering::Equal))
    };
    let best_ext_rtt: Option<(f64, &'static str)> = rt
        .iter()
        .zip(&rtt_med)
        .filter(|(b, _)| b.origin == Origin::External && b.queue != FLOOR)
        .map(|(b, m)| (m.0, b.queue))
        .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(CmpOrdering::Equal));

    println!("## Results (medians over {} rounds)", cfg.rounds);
    println!();
    println!("| queue | mode | Mmsg/s | ns/msg | RTT p50 (ns) | RTT p99 (ns) | thr ÷ best ext. | p50 ÷ best ext. |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut rtt_printed = vec![false; rt.len()];
    for (i, b) in tp.iter().enumerate() {
        let m = thr_med[i];
        let rtt_idx = if b.class == Class::PerItem {
            rt.iter().position(|r| r.queue == b.queue)
        } else {
            None
        };
        // A queue's RTT goes on its first per-item row only.
        let rtt_idx = rtt_idx.filter(|&j| !rtt_printed[j]);
        let (p50, p99) = match rtt_idx {
            Some(j) => {
                rtt_printed[j] = true;
                (Some(rtt_med[j].0), Some(rtt_med[j].1))
            }
            None => (None, None),
        };
        let thr_ratio = match (b.origin, best_ext(b.class)) {
            (Origin::Ours, Some((best, _))) => Some(m / best),
            _ => None,
        };
        let rtt_ratio = match (b.origin, p50, best_ext_rtt) {
            (Origin::Ours, Some(p), Some((best, _))) => Some(p / best),
            _ => None,
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            b.queue,
            b.mode,
            fmt_opt(Some(m), 1),
            fmt_opt(Some(1e3 / m), 2),
            fmt_opt(p50, 0),
            fmt_opt(p99, 0),
            fmt_opt(thr_ratio, 2),
            fmt_opt(rtt_ratio, 2)
        );
    }
    for (j, r) in rt.iter().enumerate() {
        if rtt_printed[j] {
            continue;
        }
        let ratio = match (r.origin, best_ext_rtt) {
            (Origin::Ours, Some((best, _))) => Some(rtt_med[j].0 / best),
            _ => None,
        };
        println!(
            "| {} | ping-pong | — | — | {} | {} | — | {} |",
            r.queue,
            fmt_opt(Some(rtt_med[j].0), 0),
            fmt_opt(Some(rtt_med[j].1), 0),
            fmt_opt(ratio, 2)
        );
    }
    println!();

    // Ours against the best external, per class.
    println!("## Ours ÷ best external (same run)");
    println!();
    println!("| ours | class | ours | best external | ratio |");
    println!("|---|---|---:|---|---:|");
    for (i, b) in tp
        .iter()
        .enumerate()
        .filter(|(_, b)| b.origin == Origin::Ours)
    {
        match best_ext(b.class) {
            Some((best, name)) => println!(
                "| {} {} | {} | {:.1} Mmsg/s | {} {:.1} Mmsg/s | {:.2} |",
                b.queue,
                b.mode,
                b.class.label(),
                thr_med[i],
                name,
                best,
                thr_med[i] / best
            ),
            None => println!(
                "| {} {} | {} | {:.1} Mmsg/s | — | — |",
                b.queue,
                b.mode,
                b.class.label(),
                thr_med[i]
            ),
        }
    }
    for (j, r) in rt
        .iter()
        .enumerate()
        .filter(|(_, r)| r.origin == Origin::Ours)
    {
        if let Some((best, name)) = best_ext_rtt {
            println!(
                "| {} | RTT p50 (lower is better) | {:.0} ns | {} {:.0} ns | {:.2} |",
                r.queue,
                rtt_med[j].0,
                name,
                best,
                rtt_med[j].0 / best
            );
        }
    }
    println!();

    // Per-round figures, so the spread is visible.
    println!("## Per round");
    println!();
    let header: Vec<String> = (1..=cfg.rounds).map(|r| format!("r{r}")).collect();
    println!("| queue | mode | {} | min | max |", header.join(" | "));
    println!("|---|---|{}---:|---:|", "---:|".repeat(cfg.rounds));
    for (i, b) in tp.iter().enumerate() {
        let vals: Vec<String> = thr[i].iter().map(|v| format!("{v:.1}")).collect();
        let min = thr[i].iter().cloned().fold(f64::INFINITY, f64::min);
        let max = thr[i].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {} | {} Mmsg/s | {} | {:.1} | {:.1} |",
            b.queue,
            b.mode,
            vals.join(" | "),
            min,
            max
        );
    }
    for (j, r) in rt.iter().enumerate() {
        let vals: Vec<String> = rtt[j]
            .iter()
            .map(|(p50, p99)| format!("{p50}/{p99}"))
            .collect();
        println!(
            "| {} | RTT p50/p99 ns | {} | | |",
            r.queue,
            vals.join(" | ")
        );
    }
    println!();
    println!(
        "Notes: throughput = n / (last receive − producer start); each run checks the received sum. \
         Disruptor-crate SP rows use its managed consumer thread (BusySpin, pinned); its ping-pong \
         uses two SP rings with EventPoller::take(1). 2P→1C and pipeline rows run 3–4 threads on \
         2 vCPUs, unpinned, with yielding waits: the scheduler sets their pace."
    );
}
