//! Integration tests of the write-ahead log (`laminar_core::wal`): round trips, segment
//! rolling, group commit under concurrency, retention and recycling, recovery modes against
//! each kind of damage (torn tail, bad checksum, garbage length, stale recycled record, cut
//! file, missing segment, bad header), repair, a full disk, and property tests that no
//! truncation or bit flip of any segment ever yields a wrong record.

#[path = "common/temp_dir.rs"]
mod temp_dir;
use temp_dir::TempDir;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use laminar_core::wal::record::{encode_record, RECORD_HEADER_LEN};
use laminar_core::wal::segment::{SegmentHeader, SEGMENT_HEADER_LEN};
use laminar_core::wal::{
    repair, Damage, Lsn, RecordBuf, RecoveryMode, RecoveryReport, Wal, WalConfig, WalError,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers

fn config(dir: &Path, segment_bytes: u64, preallocate: bool) -> WalConfig {
    let mut c = WalConfig::new(dir);
    c.segment_bytes = segment_bytes;
    c.preallocate = preallocate;
    c
}

fn with_mode(mut c: WalConfig, mode: RecoveryMode) -> WalConfig {
    c.recovery = mode;
    c
}

/// Deterministic payload for record `i`, `len` bytes.
fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Appends and commits every payload; returns their LSNs.
fn append_all(wal: &Wal, payloads: &[Vec<u8>]) -> Vec<Lsn> {
    payloads
        .iter()
        .map(|p| {
            let lsn = wal.append(p).unwrap();
            wal.commit(lsn).unwrap();
            lsn
        })
        .collect()
}

fn read_all(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    wal.read_from(wal.first_lsn())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The segment files of a log directory, in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// (offset, payload length) of every record of a segment file, and the offset of its end.
fn record_layout(path: &Path) -> (Vec<(u64, u32)>, u64) {
    let bytes = fs::read(path).unwrap();
    let mut off = SEGMENT_HEADER_LEN as usize;
    let mut v = Vec::new();
    while off + RECORD_HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        if len == 0 {
            break;
        }
        v.push((off as u64, len));
        off += RECORD_HEADER_LEN + len as usize;
    }
    (v, off as u64)
}

fn header_of(path: &Path) -> SegmentHeader {
    let bytes = fs::read(path).unwrap();
    SegmentHeader::decode(&bytes).unwrap()
}

fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn flip_bit(path: &Path, bit: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, bit / 8).unwrap();
    b[0] ^= 1 << (bit % 8);
    f.write_all_at(&b, bit / 8).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A log of `n` committed records of `size(i)` bytes, closed; returns the payloads.
fn build_log(c: &WalConfig, n: u64, size: impl Fn(u64) -> usize) -> Vec<Vec<u8>> {
    let (wal, _) = Wal::open(c.clone()).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=n).map(|i| payload(i, size(i))).collect();
    append_all(&wal, &payloads);
    wal.close().unwrap();
    payloads
}

fn expect_corrupt(r: Result<(Wal, RecoveryReport), WalError>) -> (u64, u64, Damage) {
    match r {
        Err(WalError::Corrupt {
            segment,
            offset,
            reason,
            ..
        }) => (segment, offset, reason),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok((_, rep)) => panic!("expected Corrupt, opened with {rep:?}"),
    }
}

/// The records read back are exactly `payloads[..n]` with LSNs 1..=n.
fn assert_prefix(got: &[(Lsn, Vec<u8>)], payloads: &[Vec<u8>], n: usize) {
    assert_eq!(got.len(), n, "records read back");
    for (i, (lsn, p)) in got.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(p, &payloads[i], "payload of LSN {lsn}");
    }
}

// ---------------------------------------------------------------------------------------
// Basics

#[test]
fn round_trip_and_lsns_continue_after_reopen() {
    for prealloc in [true, false] {
        let d = TempDir::new("roundtrip");
        let c = config(d.path(), 64 << 10, prealloc);
        let (wal, rep) = Wal::open(c.clone()).unwrap();
        assert!(rep.is_clean());
        assert_eq!((rep.first_lsn, rep.last_lsn), (1, 0));
        assert_eq!(wal.last_lsn(), 0);
        assert_eq!(wal.read_from(1).unwrap().count(), 0);
        let a: Vec<Vec<u8>> = (1..=10).map(|i| payload(i, 100 + i as usize)).collect();
        assert_eq!(append_all(&wal, &a), (1..=10).collect::<Vec<_>>());
        assert_eq!(wal.durable_lsn(), 10);
        assert_prefix(&read_all(&wal), &a, 10);
        let from7: Vec<_> = wal.read_from(7).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(from7, vec![7, 8, 9, 10]);
        assert_eq!(wal.read_from(11).unwrap().count(), 0);
        let m = wal.metrics();
        assert_eq!(m.records_written, 10);
        assert_eq!(
            m.record_bytes,
            m.payload_bytes + 10 * RECORD_HEADER_LEN as u64
        );
        wal.close().unwrap();

        // A cleanly closed log (zero-filled or marker-ended tail) opens in every mode.
        for mode in [
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::TolerateCorruptedTail,
            RecoveryMode::PointInTime,
        ] {
            let (wal, rep) = Wal::open(with_mode(c.clone(), mode)).unwrap();
            assert!(rep.is_clean(), "{mode:?}: {rep:?}");
            assert_eq!((rep.first_lsn, rep.last_lsn, rep.records), (1, 10, 10));
            wal.close().unwrap();
        }
        let (wal, _) = Wal::open(c.clone()).unwrap();
        let b: Vec<Vec<u8>> = (11..=15).map(|i| payload(i, 50)).collect();
        assert_eq!(append_all(&wal, &b), (11..=15).collect::<Vec<_>>());
        let all: Vec<Vec<u8>> = a.iter().chain(&b).cloned().collect();
        assert_prefix(&read_all(&wal), &all, 15);
        wal.close().unwrap();
    }
}

#[test]
fn append_errors_are_clear() {
    let d = TempDir::new("errors");
    let mut c = config(d.path(), 4096, false);
    c.max_record_bytes = 1000;
    let (wal, _) = Wal::open(c).unwrap();
    assert!(matches!(wal.append(&[]), Err(WalError::EmptyRecord)));
    match wal.append(&[0u8; 1001]) {
        Err(WalError::RecordTooLarge {
            len: 1001,
            max: 1000,
        }) => {}
        other => panic!("{other:?}"),
    }
    let lsn = wal.append(&[1u8; 1000]).unwrap();
    assert!(matches!(
        wal.commit(lsn + 1),
        Err(WalError::UnknownLsn { lsn: 2, last: 1 })
    ));
    wal.commit(lsn).unwrap();
    wal.commit(0).unwrap();
    wal.close().unwrap();

    let mut bad = config(d.path(), 100, false);
    assert!(matches!(Wal::open(bad.clone()), Err(WalError::Config(_))));
    bad.segment_bytes = 4096;
    bad.max_record_bytes = 0;
    assert!(matches!(Wal::open(bad), Err(WalError::Config(_))));
}

#[test]
fn records_roll_across_segments_and_a_huge_record_gets_its_own_segment() {
    for prealloc in [true, false] {
        let d = TempDir::new("roll");
        let c = config(d.path(), 4096, prealloc);
        // Sizes 1..=1500, plus two records bigger than a segment.
        let sizes = |i: u64| match i {
            17 => 10_000,
            18 => 4096 - 64 - 8, // exactly the segment's record room: still needs its own
            _ => (i as usize * 97) % 1500 + 1,
        };
        let a = build_log(&c, 60, sizes);
        let files = segment_files(d.path());
        assert!(files.len() >= 10, "{} segments", files.len());
        for f in &files {
            let h = header_of(f);
            let len = fs::metadata(f).unwrap().len();
            if h.preallocated {
                assert_eq!(len, h.capacity);
            }
            assert!(h.capacity >= 4096);
        }
        let (wal, rep) =
            Wal::open(with_mode(c.clone(), RecoveryMode::AbsoluteConsistency)).unwrap();
        assert!(rep.is_clean());
        assert_eq!(rep.last_lsn, 60);
        assert_eq!(rep.segments_scanned, files.len());
        assert_prefix(&read_all(&wal), &a, 60);
        // Each segment's header starts where the previous one's records ended.
        let mut next = 1;
        for f in &files {
            let h = header_of(f);
            assert_eq!(h.first_lsn, next);
            next += record_layout(f).0.len() as u64;
        }
        assert_eq!(next, 61);
        wal.close().unwrap();
    }
}

/// `append_buf` queues the caller's buffer when nothing else is pending and copies it behind
/// what is; both must give the same log as `append`, across segment rolls, with another
/// thread appending at the same time, and leave the buffer empty and reusable.
#[test]
fn append_buf_matches_append_whether_the_buffer_is_queued_or_copied() {
    for (delay_ms, prealloc) in [(0, true), (3, true), (3, false)] {
        let d = TempDir::new("append-buf");
        let mut c = config(d.path(), 16 << 10, prealloc);
        // With a group commit delay, several records (the other thread's copied ones and
        // these queued buffers) usually share a group; without, they go out one by one.
        c.group_commit_delay = Duration::from_millis(delay_ms);
        let (wal, _) = Wal::open(c.clone()).unwrap();
        let wal = Arc::new(wal);
        let other = {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        let p = payload(1_000_000 + i, 1 + (i as usize * 31) % 700);
                        (wal.append(&p).unwrap(), p)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let mut rec = RecordBuf::new();
        let mut mine = Vec::new();
        for i in 0..150u64 {
            let p = payload(i, 1 + (i as usize * 131) % 9000);
            rec.extend_from_slice(&p[..p.len() / 2]);
            rec.extend_from_slice(&p[p.len() / 2..]);
            let lsn = wal.append_buf(&mut rec).unwrap();
            assert!(rec.is_empty(), "the buffer is handed back empty");
            mine.push((lsn, p));
        }
        let mut all = other.join().unwrap();
        all.extend(mine);
        all.sort();
        wal.commit(all.last().unwrap().0).unwrap();
        assert_eq!(all.len(), 250);
        assert_eq!(
            read_all(&wal),
            all,
            "delay {delay_ms} ms, prealloc {prealloc}"
        );
        // An empty record is refused and the buffer stays usable.
        assert!(matches!(
            wal.append_buf(&mut rec),
            Err(WalError::EmptyRecord)
        ));
        rec.extend_from_slice(b"after");
        let lsn = wal.append_buf(&mut rec).unwrap();
        wal.commit(lsn).unwrap();
        Arc::into_inner(wal).unwrap().close().unwrap();
        let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
        assert!(rep.is_clean());
        let back = read_all(&wal);
        assert_eq!(back.last().unwrap(), &(lsn, b"after".to_vec()));
        assert_eq!(&back[..250], &all[..]);
        wal.close().unwrap();
    }
}

/// A queued `RecordBuf` becomes the frame itself; once its group is written, its allocation
/// comes back to the next appender, so a steady producer reuses the same few buffers instead
/// of allocating (and faulting in) one per record. `try_commit` tells a pending record from a
/// durable one without blocking.
#[test]
fn written_frames_come_back_to_the_appender() {
    let d = TempDir::new("reuse");
    let c = config(d.path(), 1 << 20, true);
    let (wal, _) = Wal::open(c).unwrap();
    let h = wal.commit_handle();
    let mut rec = RecordBuf::new();
    let size = 50_000;
    let mut reused = 0;
    for i in 0..20u64 {
        rec.extend_from_slice(&payload(i, size));
        let lsn = wal.append_buf(&mut rec).unwrap();
        if rec.capacity() >= size {
            reused += 1;
        }
        wal.commit(lsn).unwrap();
        assert!(matches!(h.try_commit(lsn), Some(Ok(()))));
    }
    // The first append gets a fresh buffer back (nothing written yet); every later one gets
    // the allocation of a record written before it.
    assert_eq!(reused, 19);
    wal.close().unwrap();
}

/// Preallocated segments have their blocks reserved (where the file system can: not tmpfs
/// at every kernel), so a full disk shows when a segment is prepared, not at a later write.
#[test]
fn preallocated_segments_reserve_their_blocks() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("reserve");
    let segment_bytes = 256 << 10;
    let c = config(d.path(), segment_bytes, true);
    let (wal, _) = Wal::open(c).unwrap();
    let lsn = wal.append(&payload(0, 100)).unwrap();
    wal.commit(lsn).unwrap();
    for f in segment_files(d.path()) {
        let m = fs::metadata(&f).unwrap();
        assert_eq!(m.len(), segment_bytes, "{f:?}");
        assert!(
            m.blocks() * 512 >= segment_bytes,
            "{f:?}: {} blocks",
            m.blocks()
        );
    }
    wal.close().unwrap();
}

/// Whether the file system under `dir` takes `O_DIRECT` (tmpfs does not).
fn takes_o_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join("probe-direct");
    let ok = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .is_ok();
    let _ = fs::remove_file(&p);
    ok
}

/// With syncs on, groups in preallocated segments go out as synchronous direct writes
/// (where the file system takes `O_DIRECT`), across segment rolls and after a reopen that
/// continues mid-page, and read back exactly; a segment too small for a page-aligned end
/// falls back to buffered writes, which read back the same.
#[test]
fn direct_writes_round_trip_across_rolls_and_reopen() {
    for segment_bytes in [64 << 10, 4096 + 1000] {
        let d = TempDir::new("direct");
        let c = config(d.path(), segment_bytes, true);
        let (wal, _) = Wal::open(c.clone()).unwrap();
        let mut all = Vec::new();
        for i in 0..120u64 {
            let p = payload(i, 1 + (i as usize * 389) % 3000);
            let lsn = wal.append(&p).unwrap();
            if i % 3 == 2 {
                wal.commit(lsn).unwrap();
            }
            all.push((lsn, p));
        }
        wal.commit(all.last().unwrap().0).unwrap();
        let m = wal.metrics();
        assert!(m.segments_created >= 3, "{m:?}");
        if takes_o_direct(d.path()) && segment_bytes % 4096 == 0 {
            assert!(m.direct_writes > 0 && m.direct_writes <= m.syncs, "{m:?}");
        }
        wal.close().unwrap();
        // Reopen: the log continues mid-page of its last segment.
        let (wal, rep) =
            Wal::open(with_mode(c.clone(), RecoveryMode::AbsoluteConsistency)).unwrap();
        assert!(rep.is_clean(), "{rep:?}");
        for i in 120..160u64 {
            let p = payload(i, 1 + (i as usize * 131) % 2000);
            let lsn = wal.append(&p).unwrap();
            wal.commit(lsn).unwrap();
            all.push((lsn, p));
        }
        wal.close().unwrap();
        let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
        assert!(rep.is_clean(), "{rep:?}");
        assert_eq!(read_all(&wal), all, "segment of {segment_bytes} bytes");
        wal.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Group commit and concurrency

#[test]
fn group_commit_8_threads_share_syncs_and_every_record_reads_back_once_in_order() {
    let d = TempDir::new("group");
    let c = config(d.path(), 256 << 10, true);
    let (wal, _) = Wal::open(c.clone()).unwrap();
    let wal = Arc::new(wal);
    const THREADS: u64 = 8;
    const PER: u64 = 2000;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut lsns = Vec::with_capacity(PER as usize);
                for i in 0..PER {
                    let mut p = Vec::with_capacity(48);
                    p.extend_from_slice(&t.to_le_bytes());
                    p.extend_from_slice(&i.to_le_bytes());
                    p.extend_from_slice(&payload(t * PER + i, 32));
                    let lsn = wal.append(&p).unwrap();
                    wal.commit(lsn).unwrap();
                    assert!(wal.durable_lsn() >= lsn);
                    lsns.push(lsn);
                }
                lsns
            })
        })
        .collect();
    let mut lsn_of = HashMap::new();
    for (t, h) in handles.into_iter().enumerate() {
        for (i, lsn) in h.join().unwrap().into_iter().enumerate() {
            lsn_of.insert(lsn, (t as u64, i as u64));
        }
    }
    assert_eq!(lsn_of.len() as u64, THREADS * PER);
    let m = wal.metrics();
    assert_eq!(m.commits, THREADS * PER);
    assert!(
        m.syncs < m.commits,
        "syncs {} commits {}",
        m.syncs,
        m.commits
    );
    assert!(m.segments_created >= 2, "{m:?}");
    let got = read_all(&wal);
    assert_eq!(got.len() as u64, THREADS * PER);
    let mut last_i = [None::<u64>; THREADS as usize];
    for (k, (lsn, p)) in got.iter().enumerate() {
        assert_eq!(*lsn, k as u64 + 1);
        let t = u64::from_le_bytes(p[0..8].try_into().unwrap());
        let i = u64::from_le_bytes(p[8..16].try_into().unwrap());
        assert_eq!(lsn_of[lsn], (t, i));
        assert_eq!(&p[16..], &payload(t * PER + i, 32)[..]);
        // Per thread, records are in append order.
        assert!(last_i[t as usize].is_none_or(|prev| prev < i));
        last_i[t as usize] = Some(i);
    }
    Arc::try_unwrap(wal).unwrap().close().unwrap();
    let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
    assert_eq!(rep.last_lsn, THREADS * PER);
    wal.close().unwrap();
}

#[test]
fn group_commit_delay_gathers_larger_groups() {
    let d = TempDir::new("delay");
    let mut c = config(d.path(), 1 << 20, true);
    c.group_commit_delay = Duration::from_millis(2);
    let (wal, _) = Wal::open(c).unwrap();
    let wal = Arc::new(wal);
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..100 {
                    let lsn = wal.append(&payload(t * 1000 + i, 64)).unwrap();
                    wal.commit(lsn).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let m = wal.metrics();
    assert_eq!(m.records_written, 400);
    assert!(m.groups * 2 <= 400, "{} groups for 400 commits", m.groups);
    assert!(m.max_group_records >= 2);
}

#[test]
fn concurrent_appends_while_rolling_segments() {
    for prealloc in [true, false] {
        let d = TempDir::new("concroll");
        let c = config(d.path(), 4096, prealloc);
        let (wal, _) = Wal::open(c.clone()).unwrap();
        let wal = Arc::new(wal);
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..150u64 {
                        // Mostly small, sometimes larger than a segment.
                        let len = if i % 37 == 5 {
                            5000
                        } else {
                            ((i * 131 + t * 7) % 900 + 1) as usize
                        };
                        let mut p = t.to_le_bytes().to_vec();
                        p.extend_from_slice(&payload(t * 10_000 + i, len));
                        let lsn = wal.append(&p).unwrap();
                        if i % 3 == 0 {
                            wal.commit(lsn).unwrap();
                        }
                        mine.push((lsn, p));
                    }
                    let last = mine.last().unwrap().0;
                    wal.commit(last).unwrap();
                    mine
                })
            })
            .collect();
        let mut expect: Vec<(Lsn, Vec<u8>)> =
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        expect.sort_by_key(|e| e.0);
        assert_eq!(expect.len(), 600);
        assert_eq!(read_all(&wal), expect);
        assert!(segment_files(d.path()).len() > 20);
        Arc::try_unwrap(wal).unwrap().close().unwrap();
        let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
        assert_eq!(rep.last_lsn, 600);
        assert_eq!(read_all(&wal), expect);
        wal.close().unwrap();
    }
}

#[test]
fn drop_without_close_writes_everything_and_reopens() {
    let d = TempDir::new("drop");
    let c = config(d.path(), 8192, true);
    let a: Vec<Vec<u8>> = (1..=50).map(|i| payload(i, 300)).collect();
    {
        let (wal, _) = Wal::open(c.clone()).unwrap();
        append_all(&wal, &a[..20]);
        for p in &a[20..] {
            wal.append(p).unwrap(); // not committed: Drop still writes them
        }
    }
    let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
    assert_eq!(rep.last_lsn, 50);
    assert_prefix(&read_all(&wal), &a, 50);
    drop(wal);
}

#[test]
fn sync_off_still_writes_and_reads_back() {
    // Preallocated segments are sparse without syncs: their holes must read as the end.
    for prealloc in [false, true] {
        let d = TempDir::new("nosync");
        let mut c = config(d.path(), 8192, prealloc);
        c.sync = false;
        let a = build_log(&c, 40, |i| i as usize * 10);
        let (wal, rep) =
            Wal::open(with_mode(c.clone(), RecoveryMode::AbsoluteConsistency)).unwrap();
        assert!(rep.is_clean(), "prealloc {prealloc}: {rep:?}");
        assert_eq!(rep.last_lsn, 40);
        assert_eq!(wal.metrics().syncs, 0);
        assert_prefix(&read_all(&wal), &a, 40);
        if prealloc {
            for f in segment_files(d.path()) {
                assert_eq!(fs::metadata(&f).unwrap().len(), header_of(&f).capacity);
            }
        }
        wal.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Retention and recycling

#[test]
fn retention_deletes_or_recycles_and_read_from_still_works() {
    for prealloc in [true, false] {
        let d = TempDir::new("retention");
        let c = config(d.path(), 4096, prealloc);
        let (wal, _) = Wal::open(c.clone()).unwrap();
        let a: Vec<Vec<u8>> = (1..=100).map(|i| payload(i, 300)).collect();
        append_all(&wal, &a);
        let before = wal.segments();
        assert!(before.len() >= 8);
        wal.truncate_before(50).unwrap();
        let after = wal.segments();
        let first = wal.first_lsn();
        assert!(first <= 50 && first > 1, "first LSN {first}");
        assert!(after.len() < before.len());
        let m = wal.metrics();
        let released = (before.len() - after.len()) as u64;
        assert_eq!(m.segments_recycled + m.segments_deleted, released);
        if prealloc {
            assert!(m.segments_recycled >= 1, "{m:?}");
        } else {
            assert_eq!(m.segments_recycled, 0);
        }
        match wal.read_from(1) {
            Err(WalError::Unavailable {
                requested: 1,
                first: f,
            }) => assert_eq!(f, first),
            other => panic!("{other:?}"),
        }
        let got: Vec<_> = wal.read_from(50).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 51);
        assert_eq!(got[0], (50, a[49].clone()));
        // Idempotent, never releases the segment being written.
        wal.truncate_before(50).unwrap();
        wal.truncate_before(u64::MAX).unwrap();
        assert_eq!(wal.segments().len(), 1);
        assert_eq!(*wal.segments().last().unwrap(), *before.last().unwrap());
        // Recycled segments are reused: write more, reopen strictly, read all back.
        let b: Vec<Vec<u8>> = (101..=200).map(|i| payload(i, 300)).collect();
        append_all(&wal, &b);
        let first = wal.first_lsn();
        wal.close().unwrap();
        let (wal, rep) =
            Wal::open(with_mode(c.clone(), RecoveryMode::AbsoluteConsistency)).unwrap();
        assert!(rep.is_clean());
        assert_eq!((rep.first_lsn, rep.last_lsn), (first, 200));
        let all: Vec<Vec<u8>> = a.iter().chain(&b).cloned().collect();
        let got = read_all(&wal);
        for (lsn, p) in &got {
            assert_eq!(p, &all[*lsn as usize - 1]);
        }
        assert_eq!(got.last().unwrap().0, 200);
        if prealloc {
            let recycled = segment_files(d.path())
                .iter()
                .filter(|f| header_of(f).previous_segment.is_some())
                .count();
            assert!(recycled >= 1, "no segment was a recycled one");
        }
        wal.close().unwrap();
    }
}

#[test]
fn a_reader_overtaken_by_retention_gets_unavailable_never_a_wrong_record() {
    let d = TempDir::new("overtaken");
    let c = config(d.path(), 4096, true);
    let (wal, _) = Wal::open(c).unwrap();
    let a: Vec<Vec<u8>> = (1..=60).map(|i| payload(i, 300)).collect();
    append_all(&wal, &a);
    let mut reader = wal.read_from(1).unwrap();
    assert_eq!(reader.next().unwrap().unwrap(), (1, a[0].clone()));
    // Release everything but the last segment, then write enough to reuse the spares.
    wal.truncate_before(wal.last_lsn()).unwrap();
    let b: Vec<Vec<u8>> = (61..=120).map(|i| payload(i, 300)).collect();
    append_all(&wal, &b);
    let mut last = 1;
    let end = loop {
        match reader.next() {
            Some(Ok((lsn, p))) => {
                assert_eq!(lsn, last + 1);
                assert_eq!(p, a[lsn as usize - 1], "wrong record at LSN {lsn}");
                last = lsn;
            }
            Some(Err(e)) => break e,
            None => panic!("the reader ended without noticing retention"),
        }
    };
    assert!(
        matches!(end, WalError::Unavailable { requested, .. } if requested == last + 1),
        "{end}"
    );
    assert!(reader.next().is_none());
    wal.close().unwrap();
}

// ---------------------------------------------------------------------------------------
// Damage, by kind and by recovery mode

/// Records in [`damaged_setup`]'s log.
const N: u64 = 32;

/// Builds a log of [`N`] records of 200 bytes in 2 KiB segments: 9 records per segment, so
/// four segments holding 9, 9, 9 and 5 records.
fn damaged_setup(tag: &str, prealloc: bool) -> (TempDir, WalConfig, Vec<Vec<u8>>) {
    let d = TempDir::new(tag);
    let c = config(d.path(), 2048, prealloc);
    let a = build_log(&c, N, |_| 200);
    assert_eq!(segment_files(d.path()).len(), 4);
    (d, c, a)
}

#[test]
fn torn_tail_by_mode() {
    for prealloc in [true, false] {
        // The last record half written: a growing file ends inside it, a preallocated one
        // has zeros where the rest of its payload should be.
        let make = || {
            let (d, c, a) = damaged_setup("torn", prealloc);
            let files = segment_files(d.path());
            let last = files.last().unwrap().clone();
            let (recs, _) = record_layout(&last);
            let (off, len) = *recs.last().unwrap();
            if prealloc {
                write_bytes(
                    &last,
                    off + 8 + u64::from(len) / 2,
                    &vec![0u8; len as usize],
                );
            } else {
                set_len(&last, off + 8 + u64::from(len) / 2);
            }
            let seg = header_of(&last).segment;
            (d, c, a, seg, off)
        };

        let (_d, c, _, seg, off) = make();
        let (s, o, reason) =
            expect_corrupt(Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)));
        assert_eq!((s, o), (seg, off));
        assert!(reason.is_tail_kind(), "{reason}");

        for mode in [
            RecoveryMode::TolerateCorruptedTail,
            RecoveryMode::PointInTime,
        ] {
            let (_d, c, a, seg, off) = make();
            let (wal, rep) = Wal::open(with_mode(c.clone(), mode)).unwrap();
            let t = rep.truncation.clone().expect("a cut");
            assert_eq!((t.segment, t.offset), (seg, off), "{mode:?}");
            if prealloc {
                assert_eq!(t.reason, Damage::BadChecksum);
            } else {
                assert!(matches!(t.reason, Damage::Truncated { .. }), "{}", t.reason);
            }
            assert!(t.segments_removed.is_empty());
            assert_eq!(rep.last_lsn, N - 1);
            assert_prefix(&read_all(&wal), &a, N as usize - 1);
            // The log continues at LSN N and is clean from then on.
            assert_eq!(wal.append(&a[N as usize - 1]).unwrap(), N);
            wal.close().unwrap();
            let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
            assert_eq!(rep.last_lsn, N);
            assert_prefix(&read_all(&wal), &a, N as usize);
            wal.close().unwrap();
        }
    }
}

#[test]
fn corruption_mid_last_segment_by_mode() {
    // A payload bit flipped in a record followed by valid ones: not a torn tail.
    let make = || {
        let (d, c, a) = damaged_setup("midlast", true);
        let last = segment_files(d.path()).last().unwrap().clone();
        let (recs, _) = record_layout(&last);
        assert!(recs.len() >= 3);
        let (off, _) = recs[recs.len() - 3];
        flip_bit(&last, (off + 8 + 17) * 8 + 3);
        let h = header_of(&last);
        let bad_lsn = h.first_lsn + recs.len() as u64 - 3;
        (d, c, a, h.segment, off, bad_lsn)
    };
    for mode in [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateCorruptedTail,
    ] {
        let (_d, c, _, seg, off, _) = make();
        let (s, o, reason) = expect_corrupt(Wal::open(with_mode(c, mode)));
        assert_eq!((s, o, reason), (seg, off, Damage::BadChecksum), "{mode:?}");
    }
    let (_d, c, a, seg, off, bad_lsn) = make();
    let (wal, rep) = Wal::open(c).unwrap();
    let t = rep.truncation.unwrap();
    assert_eq!(
        (t.segment, t.offset, t.reason),
        (seg, off, Damage::BadChecksum)
    );
    assert_eq!(rep.last_lsn, bad_lsn - 1);
    assert_prefix(&read_all(&wal), &a, bad_lsn as usize - 1);
    wal.close().unwrap();
}

#[test]
fn corruption_in_a_non_last_segment_by_mode() {
    for prealloc in [true, false] {
        let make = || {
            let (d, c, a) = damaged_setup("nonlast", prealloc);
            let files = segment_files(d.path());
            assert!(files.len() >= 3);
            let victim = files[1].clone();
            let (recs, _) = record_layout(&victim);
            let (off, _) = recs[1];
            flip_bit(&victim, (off + 8 + 5) * 8);
            let h = header_of(&victim);
            let later: Vec<u64> = files[2..].iter().map(|f| header_of(f).segment).collect();
            let later_records: usize = files[2..].iter().map(|f| record_layout(f).0.len()).sum();
            (d, c, a, h, off, (later, later_records as u64))
        };
        for mode in [
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::TolerateCorruptedTail,
        ] {
            let (_d, c, _, h, off, _) = make();
            let (s, o, reason) = expect_corrupt(Wal::open(with_mode(c, mode)));
            assert_eq!((s, o, reason), (h.segment, off, Damage::BadChecksum));
        }
        let (d, c, a, h, off, (later, later_records)) = make();
        let (wal, rep) = Wal::open(c.clone()).unwrap();
        let t = rep.truncation.clone().unwrap();
        assert_eq!((t.segment, t.offset), (h.segment, off));
        assert_eq!(t.segments_removed, later);
        let kept = h.first_lsn; // the damaged record is the segment's second
        assert_eq!(rep.last_lsn, kept);
        assert_eq!(t.records_discarded, later_records);
        assert!(t.bytes_discarded > 0);
        assert_prefix(&read_all(&wal), &a, kept as usize);
        // Later segment files are gone; new ones get new numbers.
        assert_eq!(segment_files(d.path()).len(), 2);
        let more: Vec<Vec<u8>> = (0..40).map(|i| payload(1000 + i, 200)).collect();
        append_all(&wal, &more);
        let new_segs = wal.segments();
        assert!(new_segs
            .iter()
            .all(|s| *s <= h.segment || *s > *later.last().unwrap()));
        wal.close().unwrap();
        let (wal, rep) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
        assert_eq!(rep.last_lsn, kept + 40);
        wal.close().unwrap();
    }
}

#[test]
fn garbage_huge_length_is_rejected() {
    let (d, c, a) = damaged_setup("garbage", false);
    let last = segment_files(d.path()).last().unwrap().clone();
    let (recs, _) = record_layout(&last);
    let (off, _) = recs[0];
    write_bytes(&last, off, &0xdead_beefu32.to_le_bytes());
    let first = header_of(&last).first_lsn;
    let (_, o, reason) = expect_corrupt(Wal::open(with_mode(
        c.clone(),
        RecoveryMode::AbsoluteConsistency,
    )));
    assert_eq!(o, off);
    assert!(
        matches!(
            reason,
            Damage::BadLength {
                len: 0xdead_beef,
                ..
            }
        ),
        "{reason}"
    );
    let (wal, rep) = Wal::open(c).unwrap();
    assert_eq!(rep.last_lsn, first - 1);
    assert_prefix(&read_all(&wal), &a, first as usize - 1);
    wal.close().unwrap();
}

#[test]
fn zero_length_with_nonzero_crc_is_damage_not_an_end() {
    let (d, c, _) = damaged_setup("zerolen", true);
    let last = segment_files(d.path()).last().unwrap().clone();
    let (recs, _) = record_layout(&last);
    let (off, _) = recs[recs.len() - 2];
    write_bytes(&last, off, &[0, 0, 0, 0]);
    let (_, o, reason) = expect_corrupt(Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)));
    assert_eq!(o, off);
    assert!(
        matches!(reason, Damage::BadLength { len: 0, .. }),
        "{reason}"
    );
}

#[test]
fn stale_record_in_a_recycled_segment_is_rejected() {
    let d = TempDir::new("stale");
    let c = config(d.path(), 4096, true);
    let (wal, _) = Wal::open(c.clone()).unwrap();
    // Phase 1: identical records, so that a recycled file's old content is known.
    let old = payload(7, 300);
    for _ in 0..60 {
        let lsn = wal.append(&old).unwrap();
        wal.commit(lsn).unwrap();
    }
    wal.truncate_before(wal.last_lsn()).unwrap();
    assert!(wal.metrics().segments_recycled >= 1);
    // Phase 2: records of the same size land where the old ones were.
    let mut n = 0;
    let recycled = loop {
        let lsn = wal.append(&payload(1000 + n, 300)).unwrap();
        wal.commit(lsn).unwrap();
        n += 1;
        let files = segment_files(d.path());
        let last = files.last().unwrap();
        let h = header_of(last);
        if h.previous_segment.is_some() && record_layout(last).0.len() >= 3 {
            break last.clone();
        }
        assert!(n < 200, "no recycled segment was reused");
    };
    let last_lsn = wal.last_lsn();
    wal.close().unwrap();
    let h = header_of(&recycled);
    let prev = h.previous_segment.unwrap();
    let (_, end) = record_layout(&recycled);
    // The writer zeroed the rest of its last page, where old records were (without the
    // padding, the bytes after the end marker are the old records': see `write_group`).
    let bytes = fs::read(&recycled).unwrap();
    let page_end = (end as usize).next_multiple_of(4096).min(bytes.len());
    assert!(page_end > end as usize + RECORD_HEADER_LEN);
    assert!(bytes[end as usize..page_end].iter().all(|&b| b == 0));
    // Simulate a lost end marker: put back the old record that the marker (and the zeros
    // the writer pads its last page with) overwrote.
    let mut frame = Vec::new();
    encode_record(&mut frame, prev, &old);
    write_bytes(&recycled, end, &frame);
    let (s, o, reason) = expect_corrupt(Wal::open(with_mode(
        c.clone(),
        RecoveryMode::AbsoluteConsistency,
    )));
    assert_eq!((s, o), (h.segment, end));
    assert_eq!(
        reason,
        Damage::StaleRecord {
            previous_segment: prev
        }
    );
    let (wal, rep) = Wal::open(c).unwrap();
    let t = rep.truncation.unwrap();
    assert_eq!(
        t.reason,
        Damage::StaleRecord {
            previous_segment: prev
        }
    );
    assert_eq!(
        rep.last_lsn, last_lsn,
        "the stale record must not count as a record"
    );
    wal.close().unwrap();
}

#[test]
fn cut_preallocated_segment_is_detected() {
    let (d, c, a) = damaged_setup("shortfile", true);
    let last = segment_files(d.path()).last().unwrap().clone();
    let (recs, _) = record_layout(&last);
    // Cut exactly at a record boundary: every byte left is valid, but records are gone.
    let (off, _) = recs[recs.len() - 2];
    set_len(&last, off);
    let (_, o, reason) = expect_corrupt(Wal::open(with_mode(
        c.clone(),
        RecoveryMode::AbsoluteConsistency,
    )));
    assert_eq!(o, off);
    assert!(matches!(reason, Damage::ShortFile { .. }), "{reason}");
    let (_, _, reason) = expect_corrupt(Wal::open(with_mode(
        c.clone(),
        RecoveryMode::TolerateCorruptedTail,
    )));
    assert!(matches!(reason, Damage::ShortFile { .. }));
    let (wal, rep) = Wal::open(c.clone()).unwrap();
    assert_eq!(rep.last_lsn, N - 2);
    assert_prefix(&read_all(&wal), &a, N as usize - 2);
    wal.close().unwrap();
    // The repair restored the preallocated size.
    assert_eq!(fs::metadata(&last).unwrap().len(), 2048);
    let (wal, _) = Wal::open(with_mode(c, RecoveryMode::AbsoluteConsistency)).unwrap();
    wal.close().unwrap();
}

#[test]
fn missing_middle_segment_is_an_lsn_gap() {
    let (d, c, a) = damaged_setup("gap", false);
    let files = segment_files(d.path());
    assert!(files.len() >= 4);
    let gone = header_of(&files[2]);
    fs::remove_file(&files[2]).unwrap();
    let (s, o, reason) = expect_corrupt(Wal::open(with_mode(
        c.clone(),
        RecoveryMode::TolerateCorruptedTail,
    )));
    let third = header_of(&files[3]);
    assert_eq!((s, o), (third.segment, 0));
    assert_eq!(
        reason,
        Damage::LsnGap {
            expected: gone.first_lsn,
            found: third.first_lsn
        }
    );
    let (wal, rep) = Wal::open(c).unwrap();
    assert_eq!(rep.last_lsn, gone.first_lsn - 1);
    assert_eq!(
        rep.truncation.unwrap().segments_removed.len(),
        files.len() - 3
    );
    assert_prefix(&read_all(&wal), &a, gone.first_lsn as usize - 1);
    wal.close().unwrap();
}

#[test]
fn bad_segment_header_by_mode() {
    let (d, c, a) = damaged_setup("header", true);
    let files = segment_files(d.path());
    let victim = header_of(&files[1]);
    flip_bit(&files[1], 24 * 8 + 2); // first LSN field
    let (s, o, reason) = expect_corrupt(Wal::open(with_mode(
        c.clone(),
        RecoveryMode::TolerateCorruptedTail,
    )));
    assert_eq!((s, o), (victim.segment, 0));
    assert!(matches!(reason, Damage::BadHeader { .. }));
    let (wal, rep) = Wal::open(c).unwrap();
    assert_eq!(rep.last_lsn, victim.first_lsn - 1);
    assert_prefix(&read_all(&wal), &a, victim.first_lsn as usize - 1);
    wal.close().unwrap();
}

#[test]
fn repair_truncates_to_the_last_valid_record_and_the_log_continues() {
    let (d, c, a) = damaged_setup("repair", true);
    let files = segment_files(d.path());
    let victim = files[files.len() - 2].clone();
    let (recs, _) = record_layout(&victim);
    let (off, len) = recs[recs.len() / 2];
    flip_bit(&victim, (off + 8 + u64::from(len) - 1) * 8 + 7);
    let strict = with_mode(c.clone(), RecoveryMode::AbsoluteConsistency);
    let (s, o, _) = expect_corrupt(Wal::open(strict.clone()));
    let rep = repair(d.path()).unwrap();
    let t = rep.truncation.clone().unwrap();
    assert_eq!(
        (t.segment, t.offset, t.reason.clone()),
        (s, o, Damage::BadChecksum)
    );
    assert_eq!(t.segments_removed.len(), 1);
    let kept = rep.last_lsn;
    assert_eq!(
        kept,
        header_of(&victim).first_lsn + recs.len() as u64 / 2 - 1
    );
    // A second repair finds nothing to do.
    assert!(repair(d.path()).unwrap().is_clean());
    let (wal, rep) = Wal::open(strict.clone()).unwrap();
    assert!(rep.is_clean());
    assert_eq!(rep.last_lsn, kept);
    assert_prefix(&read_all(&wal), &a, kept as usize);
    let more: Vec<Vec<u8>> = (0..30).map(|i| payload(500 + i, 250)).collect();
    let lsns = append_all(&wal, &more);
    assert_eq!(lsns[0], kept + 1);
    wal.close().unwrap();
    let (wal, _) = Wal::open(strict).unwrap();
    let got = read_all(&wal);
    assert_eq!(got.len() as u64, kept + 30);
    assert_eq!(got[kept as usize].1, more[0]);
    wal.close().unwrap();
}

// ---------------------------------------------------------------------------------------
// A full disk

#[test]
fn disk_full_fails_the_commit_poisons_and_reopen_recovers_the_durable_prefix() {
    for prealloc in [false, true] {
        let d = TempDir::new("diskfull");
        let mut c = config(d.path(), 8192, prealloc);
        c.disk_budget = Some(if prealloc { 3 * 8192 + 100 } else { 20_000 });
        let (wal, _) = Wal::open(c.clone()).unwrap();
        let mut acked = Vec::new();
        let failed_lsn = loop {
            let p = payload(acked.len() as u64, 700);
            let lsn = wal.append(&p).unwrap();
            match wal.commit(lsn) {
                Ok(()) => acked.push(p),
                Err(WalError::DiskFull { .. }) => break lsn,
                Err(e) => panic!("prealloc {prealloc}: {e}"),
            }
            assert!(acked.len() < 1000, "the budget never ran out");
        };
        assert_eq!(failed_lsn, acked.len() as u64 + 1);
        assert!(acked.len() >= 5);
        // The non-blocking check says the same as the commits.
        let h = wal.commit_handle();
        assert!(matches!(
            h.try_commit(failed_lsn),
            Some(Err(WalError::DiskFull { .. }))
        ));
        assert!(matches!(h.try_commit(1), Some(Ok(()))));
        assert!(matches!(
            h.try_commit(failed_lsn + 1),
            Some(Err(WalError::UnknownLsn { .. }))
        ));
        assert_eq!(wal.durable_lsn(), acked.len() as u64);
        assert!(matches!(wal.append(b"more"), Err(WalError::Poisoned(_))));
        assert!(matches!(
            wal.commit(failed_lsn),
            Err(WalError::DiskFull { .. })
        ));
        wal.commit(acked.len() as u64).unwrap(); // durable before the failure
        assert!(matches!(wal.close(), Err(WalError::DiskFull { .. })));

        // Space freed: the log reopens, even strictly, with exactly the acknowledged records.
        let mut c2 = with_mode(c.clone(), RecoveryMode::AbsoluteConsistency);
        c2.disk_budget = None;
        let (wal, rep) = Wal::open(c2).unwrap();
        assert!(rep.is_clean(), "{rep:?}");
        assert_eq!(rep.last_lsn, acked.len() as u64);
        assert_prefix(&read_all(&wal), &acked, acked.len());
        assert_eq!(wal.append(b"after").unwrap(), acked.len() as u64 + 1);
        wal.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Property tests: no truncation and no bit flip of any segment yields a wrong record.

struct Template {
    dir: TempDir,
    payloads: Vec<Vec<u8>>,
    /// Per segment file: (name, written end: offset just past its end marker).
    files: Vec<(String, u64)>,
    /// Every other file (spares), copied along.
    others: Vec<String>,
}

fn template(prealloc: bool) -> &'static Template {
    static T: [OnceLock<Template>; 2] = [OnceLock::new(), OnceLock::new()];
    T[usize::from(prealloc)].get_or_init(|| {
        let dir = TempDir::new(if prealloc { "tpl-prealloc" } else { "tpl-grow" });
        let mut c = config(dir.path(), 2048, prealloc);
        c.sync = false; // recovery logic is the subject here, not durability
        let payloads = build_log(&c, 40, |i| ((i * 53) % 400 + 1) as usize);
        let mut files = Vec::new();
        for f in segment_files(dir.path()) {
            let (_, end) = record_layout(&f);
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            files.push((name, end + RECORD_HEADER_LEN as u64));
        }
        let others = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".wal"))
            .collect();
        Template {
            dir,
            payloads,
            files,
            others,
        }
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate { file: usize, frac: f64 },
    Flip { file: usize, frac: f64, bit: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0.0f64..1.0).prop_map(|(f, frac)| Mutation::Truncate {
            file: f.index(1 << 20),
            frac
        }),
        (any::<prop::sample::Index>(), 0.0f64..1.0, 0u8..8).prop_map(|(f, frac, bit)| {
            Mutation::Flip {
                file: f.index(1 << 20),
                frac,
                bit,
            }
        }),
    ]
}

/// Copies the template, applies `m`, opens with `mode`, and checks the outcome. Returns
/// whether the log opened.
fn check_mutation(prealloc: bool, m: &Mutation, mode: RecoveryMode) -> Result<(), TestCaseError> {
    let t = template(prealloc);
    let d = TempDir::new("prop");
    for (name, _) in &t.files {
        fs::copy(t.dir.path().join(name), d.path().join(name)).unwrap();
    }
    for name in &t.others {
        fs::copy(t.dir.path().join(name), d.path().join(name)).unwrap();
    }
    let nfiles = t.files.len();
    // Mutations hit the written part of a file (plus a little after it) most of the time.
    let (file, at_boundary_cut) = match *m {
        Mutation::Truncate { file, frac } => {
            let (name, end) = &t.files[file % nfiles];
            let path = d.path().join(name);
            let cut = (*end as f64 * frac) as u64;
            set_len(&path, cut);
            let (recs, _) = record_layout(&t.dir.path().join(name));
            let boundary = cut >= SEGMENT_HEADER_LEN
                && (recs.iter().any(|(o, _)| *o == cut) || cut == end - RECORD_HEADER_LEN as u64);
            (file % nfiles, boundary)
        }
        Mutation::Flip { file, frac, bit } => {
            let (name, end) = &t.files[file % nfiles];
            let byte = ((*end + 16) as f64 * frac) as u64;
            let path = d.path().join(name);
            let len = fs::metadata(&path).unwrap().len();
            if byte < len {
                flip_bit(&path, byte * 8 + u64::from(bit));
            }
            (file % nfiles, false)
        }
    };
    let mut c = with_mode(config(d.path(), 2048, prealloc), mode);
    c.sync = false; // recovery logic is the subject here, not durability: keep it fast
    let all = t.payloads.len();
    match Wal::open(c.clone()) {
        Ok((wal, rep)) => {
            let got: Vec<(Lsn, Vec<u8>)> = wal
                .read_from(1)
                .map_err(|e| TestCaseError::fail(format!("read_from: {e}")))?
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
            // Never a wrong record: what is read is a prefix, in order.
            prop_assert_eq!(got.len() as u64, rep.last_lsn);
            for (i, (lsn, p)) in got.iter().enumerate() {
                prop_assert_eq!(*lsn, i as u64 + 1);
                prop_assert!(p == &t.payloads[i], "wrong payload at LSN {}", lsn);
            }
            if got.len() < all {
                match mode {
                    RecoveryMode::PointInTime => {}
                    RecoveryMode::TolerateCorruptedTail => {
                        prop_assert!(
                            rep.truncation.is_some() || (!prealloc && at_boundary_cut),
                            "short log without a reported cut"
                        );
                    }
                    RecoveryMode::AbsoluteConsistency => {
                        // Only an undetectable cut at a record boundary of the last growing
                        // segment may shorten the log without an error (documented).
                        prop_assert!(
                            !prealloc && at_boundary_cut && file == nfiles - 1,
                            "strict open lost records silently: {:?}",
                            rep
                        );
                    }
                }
            }
            if mode == RecoveryMode::PointInTime {
                // The recovered log accepts appends continuing its LSNs and reopens strictly.
                let n = wal
                    .append(b"next")
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(n, rep.last_lsn + 1);
                wal.close()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let strict = with_mode(c, RecoveryMode::AbsoluteConsistency);
                let (wal, rep2) =
                    Wal::open(strict).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(rep2.last_lsn, n);
                wal.close()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            } else {
                wal.close()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        Err(WalError::Corrupt { .. }) => {
            prop_assert!(
                mode != RecoveryMode::PointInTime,
                "point-in-time refused to open"
            );
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_truncation_or_bit_flip_never_yields_a_wrong_record_preallocated(m in mutation()) {
        for mode in [RecoveryMode::PointInTime, RecoveryMode::TolerateCorruptedTail,
                     RecoveryMode::AbsoluteConsistency] {
            check_mutation(true, &m, mode)?;
        }
    }

    #[test]
    fn any_truncation_or_bit_flip_never_yields_a_wrong_record_growing(m in mutation()) {
        for mode in [RecoveryMode::PointInTime, RecoveryMode::TolerateCorruptedTail,
                     RecoveryMode::AbsoluteConsistency] {
            check_mutation(false, &m, mode)?;
        }
    }
}
