//! State store bench: point lookups, scans, snapshots and open of `MemStore` and `MmapStore`.
//!
//! `cargo bench -p laminar-core --bench state_store [-- [--quick] [--mmap-only] [--sizes 1000000,10000000]]`
//!
//! Keys are `u64` as 8 big-endian bytes (so key order is numeric order), values 16 bytes. The
//! first 8 bytes of each value name the next key of one random cycle through all keys
//! (Sattolo's algorithm), so a *dependent* lookup chain reads the key it must look up next out
//! of the value it just got: nothing can be prefetched or overlapped, and the time per lookup
//! is the true latency of a cold random lookup. *Independent* lookups take keys from a random
//! array; the CPU overlaps their misses (throughput, not latency). The budget is a dependent
//! `MmapStore` lookup under 500 ns at 10M keys.
//!
//! Prints a markdown table; every figure is the median of the repetitions (1 with `--quick`,
//! 3 otherwise), as wall-clock time and as time this thread spent on a CPU (the machine may be
//! shared: a preempted run shows a higher wall clock than on-CPU time).

use std::fs::File;
use std::hint::black_box;
use std::io::BufWriter;
use std::ops::Bound;
use std::path::Path;
use std::time::Instant;

use laminar_core::state::{MemStore, MmapStore, StateStore};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

struct Data {
    keys: Vec<[u8; 8]>,
    vals: Vec<[u8; 16]>,
}

/// Keys 0..n; value of key i = (next key in a random n-cycle, i).
fn data(n: usize, rng: &mut Rng) -> Data {
    let mut next: Vec<u32> = (0..n as u32).collect();
    // Sattolo: a uniformly random permutation that is a single cycle.
    for i in (1..n).rev() {
        let j = rng.below(i as u64) as usize;
        next.swap(i, j);
    }
    let keys = (0..n as u64).map(u64::to_be_bytes).collect();
    let vals = (0..n)
        .map(|i| {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&u64::from(next[i]).to_be_bytes());
            v[8..].copy_from_slice(&(i as u64).to_le_bytes());
            v
        })
        .collect();
    Data { keys, vals }
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`; 0 elsewhere).
/// The machine is shared: when other processes take our core, wall time grows but this
/// does not, so the table shows both.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

/// A wall-clock and on-CPU stopwatch.
struct Watch(Instant, u64);

impl Watch {
    fn start() -> Self {
        Watch(Instant::now(), cpu_ns())
    }

    /// (wall, on-CPU) nanoseconds since start, divided by `per`.
    fn per(&self, per: usize) -> (f64, f64) {
        let wall = self.0.elapsed().as_nanos() as f64;
        let cpu = cpu_ns().saturating_sub(self.1) as f64;
        (wall / per as f64, cpu / per as f64)
    }
}

/// Median of the (wall, cpu) pairs, each component separately.
fn median(xs: Vec<(f64, f64)>) -> (f64, f64) {
    let mut w: Vec<f64> = xs.iter().map(|x| x.0).collect();
    let mut c: Vec<f64> = xs.iter().map(|x| x.1).collect();
    w.sort_by(f64::total_cmp);
    c.sort_by(f64::total_cmp);
    (w[w.len() / 2], c[c.len() / 2])
}

fn ns((w, c): (f64, f64)) -> (String, String) {
    (format!("{w:.0} ns"), format!("{c:.0} ns"))
}

fn msf((w, c): (f64, f64)) -> (String, String) {
    (format!("{:.0} ms", w / 1e6), format!("{:.0} ms", c / 1e6))
}

/// MB of the process mapped with 2 MiB pages from files (ext4 large folios).
fn file_pmd_mapped_mb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let l = s.lines().find(|l| l.starts_with("FilePmdMapped:"))?;
    l.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb / 1024)
}

/// ns per lookup of a dependent chain of `steps` lookups.
fn dependent(s: &dyn StateStore, steps: usize) -> (f64, f64) {
    let mut k = [0u8; 8];
    let t = Watch::start();
    for _ in 0..steps {
        let v = s.get(&k).expect("chain key present");
        k.copy_from_slice(&v[..8]);
    }
    black_box(k);
    t.per(steps)
}

/// ns per lookup of independent lookups of `keys`.
fn independent(s: &dyn StateStore, keys: &[u64]) -> (f64, f64) {
    let t = Watch::start();
    let mut acc = 0usize;
    for k in keys {
        acc += s.get(&k.to_be_bytes()).map_or(0, |v| v[15] as usize);
    }
    black_box(acc);
    t.per(keys.len())
}

/// ns per scan of 100 consecutive entries from random starts.
fn short_scans(s: &dyn StateStore, starts: &[u64]) -> (f64, f64) {
    let t = Watch::start();
    let mut acc = 0usize;
    for k in starts {
        let kb = k.to_be_bytes();
        for (_, v) in s
            .scan_range(Bound::Included(&kb), Bound::Unbounded)
            .take(100)
        {
            acc += v[15] as usize;
        }
    }
    black_box(acc);
    t.per(starts.len())
}

/// ns per entry of a full scan.
fn full_scan(s: &dyn StateStore) -> (f64, f64) {
    let t = Watch::start();
    let mut n = 0usize;
    for (k, _) in s.iter() {
        n += k.len();
    }
    black_box(n);
    t.per((n / 8).max(1))
}

struct Table {
    rows: Vec<(String, usize, String, String, String)>,
}

impl Table {
    fn add(&mut self, store: &str, n: usize, what: &str, (wall, cpu): (String, String)) {
        eprintln!("  {store} {n} {what}: {wall} ({cpu} on-CPU)");
        self.rows.push((store.into(), n, what.into(), wall, cpu));
    }
}

fn human(n: usize) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn run_size(n: usize, reps: usize, lookups: usize, mmap_only: bool, dir: &Path, table: &mut Table) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    eprintln!("{} keys: generating", human(n));
    let d = data(n, &mut rng);
    let hits: Vec<u64> = (0..lookups).map(|_| rng.below(n as u64)).collect();
    let misses: Vec<u64> = (0..lookups)
        .map(|_| n as u64 + rng.below(n as u64))
        .collect();
    let starts: Vec<u64> = (0..lookups / 100).map(|_| rng.below(n as u64)).collect();

    // MmapStore: bulk build, open, lookups.
    let path = dir.join(format!("bench-{n}.img"));
    let t = Watch::start();
    let built = MmapStore::build(&path, || {
        d.keys.iter().zip(&d.vals).map(|(k, v)| (&k[..], &v[..]))
    })
    .expect("build");
    let build = t.per(1);
    let file_mb = built.file_len() as f64 / 1e6;
    drop(built);
    let mut opens = Vec::new();
    let mut mm = None;
    for _ in 0..reps {
        drop(mm.take());
        let t = Watch::start();
        mm = Some(MmapStore::open(&path).expect("open"));
        opens.push(t.per(1));
    }
    let mut mm = mm.expect("opened");
    let m = "MmapStore";
    table.add(
        m,
        n,
        "bulk build (write image + fsync + rename + open)",
        msf(build),
    );
    let pmd = file_pmd_mapped_mb().map_or("?".into(), |x| x.to_string());
    table.add(
        m,
        n,
        "file size / of it mapped with 2 MiB pages",
        (format!("{file_mb:.0} MB"), format!("{pmd} MB")),
    );
    table.add(
        m,
        n,
        "open + validate (map, populate, crc, bytecheck, records)",
        msf(median(opens)),
    );
    let dep = (0..reps).map(|_| dependent(&mm, lookups)).collect();
    table.add(m, n, "**get, dependent (latency)**", ns(median(dep)));
    let ind = (0..reps).map(|_| independent(&mm, &hits)).collect();
    table.add(m, n, "get, independent", ns(median(ind)));
    let miss = (0..reps).map(|_| independent(&mm, &misses)).collect();
    table.add(m, n, "get of absent keys, independent", ns(median(miss)));
    let sc = (0..reps).map(|_| short_scans(&mm, &starts)).collect();
    table.add(
        m,
        n,
        "range scan of 100 entries from a random key",
        ns(median(sc)),
    );
    let fs: Vec<(f64, f64)> = (0..reps).map(|_| full_scan(&mm)).collect();
    let (w, c) = median(fs);
    table.add(
        m,
        n,
        "full scan, per entry",
        (format!("{w:.1} ns"), format!("{c:.1} ns")),
    );
    // An overlay of 1% of the keys (rewritten values keep the chain intact).
    for k in hits.iter().take(n / 100) {
        let i = *k as usize;
        mm.put(&d.keys[i], &d.vals[i]);
    }
    let dep = (0..reps).map(|_| dependent(&mm, lookups)).collect();
    let what = format!(
        "get, dependent, overlay of {} entries",
        human(mm.overlay_len())
    );
    table.add(m, n, &what, ns(median(dep)));
    let t = Watch::start();
    mm.compact().expect("compact");
    table.add(
        m,
        n,
        "compact (merge, write, fsync, rename, fsync dir, re-open)",
        msf(t.per(1)),
    );
    let t = Watch::start();
    mm.snapshot_to(&mut std::io::sink()).expect("snapshot");
    table.add(
        m,
        n,
        "snapshot_to(io::sink) (with hash index)",
        msf(t.per(1)),
    );
    drop(mm);
    let _ = std::fs::remove_file(&path);
    if mmap_only {
        return;
    }

    // MemStore.
    let m = "MemStore";
    let t = Watch::start();
    let mut mem = MemStore::new();
    for (k, v) in d.keys.iter().zip(&d.vals) {
        mem.put(k, v);
    }
    table.add(m, n, "build (n puts in key order)", msf(t.per(1)));
    let dep = (0..reps).map(|_| dependent(&mem, lookups)).collect();
    table.add(m, n, "get, dependent (latency)", ns(median(dep)));
    let ind = (0..reps).map(|_| independent(&mem, &hits)).collect();
    table.add(m, n, "get, independent", ns(median(ind)));
    let sc = (0..reps).map(|_| short_scans(&mem, &starts)).collect();
    table.add(
        m,
        n,
        "range scan of 100 entries from a random key",
        ns(median(sc)),
    );
    let snap = dir.join(format!("bench-{n}.snap"));
    let t = Watch::start();
    {
        let f = File::create(&snap).expect("create");
        let mut w = BufWriter::with_capacity(1 << 20, f);
        mem.snapshot_to(&mut w).expect("snapshot");
        let f = w.into_inner().expect("flush");
        f.sync_all().expect("fsync");
    }
    table.add(
        m,
        n,
        "snapshot_to(file) + fsync (no hash index)",
        msf(t.per(1)),
    );
    let bytes = std::fs::read(&snap).expect("read");
    let _ = std::fs::remove_file(&snap);
    drop(mem);
    let t = Watch::start();
    let mem = MemStore::from_snapshot(&bytes).expect("restore");
    table.add(m, n, "restore from snapshot bytes", msf(t.per(1)));
    assert_eq!(mem.len(), n);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mmap_only = args.iter().any(|a| a == "--mmap-only");
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000, 10_000_000]);
    let (reps, lookups) = if quick {
        (1, 1_000_000)
    } else {
        (3, 4_000_000)
    };
    let dir = std::env::temp_dir().join(format!("laminar-state-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut table = Table { rows: Vec::new() };
    for &n in &sizes {
        run_size(n, reps, lookups, mmap_only, &dir, &mut table);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nstate_store bench ({}; {} lookups per figure, median of {reps})\n",
        if quick { "--quick" } else { "full" },
        lookups
    );
    println!("| store | keys | measurement | wall clock | on-CPU |");
    println!("|---|---|---|---|---|");
    for (s, n, what, wall, cpu) in &table.rows {
        println!("| {s} | {} | {what} | {wall} | {cpu} |", human(*n));
    }
}
