//! Write-ahead log benchmark: group-commit throughput and latency.
//!
//! `cargo bench -p laminar-core --bench wal [-- --quick]` prints a markdown table: for 1 and 4
//! concurrent appenders, records of 4 KiB and 64 KiB, preallocated segments or growing files,
//! each appender looping `append` + `commit` (one record per commit, as one pushed batch per
//! commit), with retention every 256 commits on the first appender (as checkpoints would), so
//! that preallocated runs recycle segments. Reported: commits/s, fsyncs/s, MB/s of records
//! (framing included), p50/p99 latency of append+commit, records per group, WAL bytes per
//! record. With syncs on, a group goes to a preallocated segment as one synchronous direct
//! write (`O_DIRECT | O_DSYNC`) where the file system allows, and to a growing file as a
//! `pwrite` and an `fdatasync`. Rows with `sync = false` show the cost of durability, and a first row without
//! the WAL (one thread, `pwrite` + `fdatasync` into a preallocated file) the floor the disk
//! sets, measured in the same run.
//!
//! The log lives in `$LAMINAR_BENCH_DIR` or the system temp directory; `--quick` runs each
//! configuration for 0.6 s instead of 3 s. Disk numbers on a VM are noisy (multi-ms stalls):
//! compare rows of one run, not runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use laminar_core::wal::{Wal, WalConfig};

struct Row {
    appenders: usize,
    record: usize,
    preallocate: bool,
    sync: bool,
    commits_per_s: f64,
    fsyncs_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    records_per_group: f64,
    bytes_per_record: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn run(
    root: &std::path::Path,
    appenders: usize,
    record: usize,
    preallocate: bool,
    sync: bool,
    dur: Duration,
) -> Row {
    let dir = root.join(format!(
        "wal-{appenders}-{record}-{preallocate}-{sync}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = WalConfig::new(&dir);
    cfg.preallocate = preallocate;
    cfg.sync = sync;
    let seg_records = (cfg.segment_bytes / (record as u64 + 8)).max(1);
    let (wal, _) = Wal::open(cfg).expect("open");
    let wal = Arc::new(wal);
    // Warm-up: the first segment and its spare exist, the buffers are grown.
    for _ in 0..20 {
        wal.append_durable(&vec![1u8; record]).expect("warm-up");
    }
    let m0 = wal.metrics();
    let start = Instant::now();
    let deadline = start + dur;
    let handles: Vec<_> = (0..appenders)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let payload: Vec<u8> = (0..record).map(|i| (i * 31 + t) as u8).collect();
                let mut lat = Vec::with_capacity(1 << 16);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let lsn = wal.append(&payload).expect("append");
                    wal.commit(lsn).expect("commit");
                    lat.push(t0.elapsed());
                    n += 1;
                    if t == 0 && n.is_multiple_of(256) {
                        // A checkpoint: keep about two segments of log.
                        let keep = 2 * seg_records;
                        wal.truncate_before(wal.durable_lsn().saturating_sub(keep))
                            .expect("retention");
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("appender"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let m1 = wal.metrics();
    Arc::try_unwrap(wal)
        .expect("appenders joined")
        .close()
        .expect("close");
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_unstable();
    let records = (m1.records_written - m0.records_written) as f64;
    let groups = (m1.groups - m0.groups).max(1) as f64;
    Row {
        appenders,
        record,
        preallocate,
        sync,
        commits_per_s: lat.len() as f64 / elapsed,
        fsyncs_per_s: (m1.syncs - m0.syncs) as f64 / elapsed,
        mb_per_s: (m1.record_bytes - m0.record_bytes) as f64 / elapsed / 1e6,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        records_per_group: records / groups,
        bytes_per_record: (m1.record_bytes - m0.record_bytes) as f64 / records.max(1.0),
    }
}

/// Baseline without the WAL: one thread, `pwrite` of 4 KiB records into a zero-filled,
/// fsynced file, then `fdatasync`, in a loop (the notes' "prealloc, 1 record per commit").
fn raw_baseline(root: &std::path::Path, record: usize, dur: Duration) -> Row {
    use std::os::unix::fs::FileExt;
    let path = root.join(format!("wal-raw-{}", std::process::id()));
    let size = 64u64 << 20;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create");
    let zeros = vec![0u8; 1 << 20];
    for i in 0..size / (1 << 20) {
        f.write_all_at(&zeros, i << 20).expect("zero-fill");
    }
    f.sync_all().expect("fsync");
    let payload = vec![7u8; record];
    let mut lat = Vec::new();
    let mut off = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        let t0 = Instant::now();
        if off + record as u64 > size {
            off = 0;
        }
        f.write_all_at(&payload, off).expect("write");
        f.sync_data().expect("fdatasync");
        off += record as u64;
        lat.push(t0.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_unstable();
    let n = lat.len() as f64;
    Row {
        appenders: 1,
        record,
        preallocate: true,
        sync: true,
        commits_per_s: n / elapsed,
        fsyncs_per_s: n / elapsed,
        mb_per_s: n * record as f64 / elapsed / 1e6,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        records_per_group: 1.0,
        bytes_per_record: record as f64,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dur = Duration::from_millis(if quick { 600 } else { 3000 });
    let root: PathBuf = std::env::var_os("LAMINAR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "WAL group commit, {} s per row, log in {} (64 MiB segments; one sync per group: a synchronous direct write in preallocated segments, pwrite + fdatasync in growing ones)\n",
        dur.as_secs_f64(),
        root.display()
    );
    println!(
        "| appenders | record | segments | sync | commits/s | fsyncs/s | MB/s | p50 µs | p99 µs | records/group | WAL bytes/record |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut configs = Vec::new();
    for preallocate in [true, false] {
        for record in [4 << 10, 64 << 10] {
            for appenders in [1, 4] {
                configs.push((appenders, record, preallocate, true));
            }
        }
    }
    // One pushed batch of workload E (10,000 events of 24 bytes) is a record of ~240 KiB.
    configs.push((1, 256 << 10, true, true));
    configs.push((1, 256 << 10, true, false));
    configs.push((4, 4 << 10, true, false));
    configs.push((4, 4 << 10, false, false));
    let mut rows: Vec<(&str, Row)> = Vec::new();
    rows.push((
        "raw pwrite+fdatasync, no WAL",
        raw_baseline(&root, 4 << 10, dur),
    ));
    rows.push((
        "raw pwrite+fdatasync, no WAL",
        raw_baseline(&root, 256 << 10, dur),
    ));
    for (appenders, record, preallocate, sync) in configs {
        rows.push(("", run(&root, appenders, record, preallocate, sync, dur)));
    }
    for (label, r) in rows {
        println!(
            "| {} | {} KiB | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} (+{:.2}%) |",
            r.appenders,
            r.record >> 10,
            if !label.is_empty() {
                label
            } else if r.preallocate {
                "preallocated"
            } else {
                "growing"
            },
            if !r.sync {
                "off"
            } else if r.preallocate && label.is_empty() {
                "direct write"
            } else {
                "fdatasync"
            },
            r.commits_per_s,
            r.fsyncs_per_s,
            r.mb_per_s,
            r.p50_us,
            r.p99_us,
            r.records_per_group,
            r.bytes_per_record,
            (r.bytes_per_record / r.record as f64 - 1.0) * 100.0,
        );
    }
}
