//! Group commit: the append queue shared by all appenders, and the writer thread that writes
//! and syncs it, one `fdatasync` per group.
//!
//! # How a record travels
//!
//! 1. [`Shared::append`] computes the payload's crc32c *outside* the lock, then under the
//!    lock: assigns the next LSN, places the record (the segment and offset it will have;
//!    rolling to a new segment when it would not fit, leaving room for an end-of-log marker),
//!    finishes the checksum with the segment number (`crc_combine`), and queues the frame as
//!    a buffer of its own: a copy into a spare allocation, or ([`Shared::append_buf`]) the
//!    caller's [`RecordBuf`] itself, with no copy. Either way the appender gets a spare
//!    allocation back from the pool of written frames ([`State::free`]), so a steady
//!    producer neither allocates nor faults in fresh memory per record. A roll is noted as a
//!    [`Roll`] at the index of the first frame of the new segment.
//! 2. The writer thread wakes (or, having just finished a group, sees the record while it
//!    polls briefly before sleeping: see [`poll`]), optionally waits up to
//!    `group_commit_delay` for more, takes the queued frames and writes them plus an 8-byte
//!    end-of-log marker, switching segments at each roll (the old segment is synced before
//!    the new one is activated): in a preallocated segment with syncs on, as one
//!    synchronous direct write padded to a page boundary ([`DirectWrites`]), otherwise with
//!    `pwrite`s (padded to a page boundary in a preallocated segment) and one `fdatasync`.
//!    Everything that queued while a group was being written forms the next group; the
//!    written frames' allocations go back to the pool.
//! 3. The writer publishes `durable_lsn` and wakes every committer ([`Shared::commit`]); all
//!    those whose LSN it covers return, having shared that one sync (a committer polls the
//!    mirrored `durable` for a moment before it sleeps).
//!
//! # Invariants
//!
//! * LSNs are consecutive and in buffer order; the bytes in the pending buffer, written in
//!   order from the current write position and switching at each roll, land exactly where
//!   `append` placed them (so the checksum's segment number is right).
//! * A record never spans segments; a record too large for a segment gets a segment of its
//!   own size. Every placement leaves 8 bytes for the end-of-log marker.
//! * `durable_lsn` only grows, and only after the write and (with `sync`) the `fdatasync`
//!   covering it succeeded. Unsynced bytes exist in at most one segment, the last.
//! * After the first failed write or sync the log is *poisoned*: the writer undoes what the
//!   failed group put on disk (so reopening finds exactly the durable prefix) and stops;
//!   nothing is acknowledged past the last durable LSN, appends fail with
//!   [`WalError::Poisoned`] and commits of non-durable LSNs with the original error.
//! * The pending buffer is bounded ([`MAX_PENDING_BYTES`]): appenders wait when the disk
//!   falls behind (backpressure) instead of growing memory without bound.
//! * The lock is never held during I/O.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::direct::DirectWrites;
use super::error::WalError;
use super::io::{Disk, ZeroChunk};
use super::metrics::WalMetrics;
use super::record::{self, RECORD_HEADER_LEN};
use super::record_buf::RecordBuf;
use super::segment::{self, SegmentInfo, SEGMENT_HEADER_LEN};
use super::Lsn;

/// Appenders wait while this many bytes are pending (and not yet taken by the writer).
pub(crate) const MAX_PENDING_BYTES: usize = 64 << 20;
/// Written frames' allocations are kept for reuse up to this total capacity (and at least
/// one, whatever its size); beyond it they are freed.
pub(crate) const FREE_BYTES: usize = 16 << 20;
/// With a group commit delay, the writer stops waiting for more once this much is pending.
pub(crate) const GROUP_WAIT_BYTES: usize = 1 << 20;
/// The page size the writer pads a group's write to in a preallocated segment (see
/// `write_group`).
const PAGE_BYTES: u64 = 4096;
/// At most this many spare files are kept (recycled segments beyond it are deleted).
pub(crate) const MAX_SPARES: usize = 2;

/// The fixed settings the writer works with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub segment_bytes: u64,
    pub max_record_bytes: u32,
    pub preallocate: bool,
    pub delay: Duration,
    pub sync: bool,
}

/// Where the next appended record goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    pub segment: u64,
    pub offset: u64,
    pub capacity: u64,
}

/// A segment switch inside the pending queue: frames from index `at` on go to a new segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Roll {
    pub at: usize,
    pub segment: u64,
    pub first_lsn: Lsn,
    pub capacity: u64,
    /// Larger than a normal segment (one huge record): created as a growing file.
    pub oversized: bool,
}

/// The first write or sync failure, kept so that every later caller gets the same error.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    disk_full: bool,
    path: PathBuf,
    op: &'static str,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    pub(crate) fn new(e: &WalError) -> Self {
        match e {
            WalError::DiskFull { path } => Failure {
                disk_full: true,
                path: path.clone(),
                op: "write",
                kind: io::ErrorKind::StorageFull,
                message: e.to_string(),
            },
            WalError::Io { path, op, source } => Failure {
                disk_full: false,
                path: path.clone(),
                op,
                kind: source.kind(),
                message: source.to_string(),
            },
            other => Failure {
                disk_full: false,
                path: PathBuf::new(),
                op: "write",
                kind: io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    /// The original error, for committers whose records it made non-durable.
    pub(crate) fn error(&self) -> WalError {
        if self.disk_full {
            WalError::DiskFull {
                path: self.path.clone(),
            }
        } else {
            WalError::Io {
                path: self.path.clone(),
                op: self.op,
                source: io::Error::new(self.kind, self.message.clone()),
            }
        }
    }

    /// [`WalError::Poisoned`] naming the original error, for later appends.
    pub(crate) fn poisoned(&self) -> WalError {
        WalError::Poisoned(self.error().to_string())
    }
}

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    pub next_lsn: Lsn,
    pub next_segment: u64,
    pub place: Place,
    /// Frames appended and not yet taken by the writer, in LSN order: each a record's header
    /// and payload in its own buffer (appending a [`RecordBuf`] queues it without a copy).
    pub pending: Vec<Vec<u8>>,
    /// Total length of `pending`'s frames.
    pub pending_bytes: usize,
    /// Allocations of written frames, handed back to appenders for their next record (see
    /// [`FREE_BYTES`]): steady state neither allocates nor faults in fresh pages per record.
    pub free: Vec<Vec<u8>>,
    /// Total capacity of `free`.
    pub free_bytes: usize,
    pub rolls: Vec<Roll>,
    pub pending_since: Option<Instant>,
    pub durable_lsn: Lsn,
    pub failure: Option<Failure>,
    pub closing: bool,
    /// Live segments in order; the last is the one the writer writes.
    pub segments: Vec<SegmentInfo>,
    /// Spare files ready to become segments.
    pub spares: Vec<PathBuf>,
    pub next_spare_id: u64,
    /// The preallocator is preparing a spare.
    pub prealloc_busy: bool,
    /// The preallocator's last attempt failed; it waits for the writer to use a spare first.
    pub prealloc_failed: bool,
    pub metrics: WalMetrics,
}

/// State and signals shared by the handle, the writer and the preallocator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub disk: Disk,
    pub settings: Settings,
    pub state: Mutex<State>,
    /// To the writer: records pending, or closing.
    pub work: Condvar,
    /// To committers and blocked appenders: durable progress, buffer taken, failure.
    pub progress: Condvar,
    /// Between writer and preallocator: a spare wanted, a spare ready, stop.
    pub spare: Condvar,
    /// Tells the preallocator to stop (set once the writer has exited).
    pub stop_prealloc: AtomicBool,
    /// `State::durable_lsn`, mirrored (stored under the lock) for committers that poll before
    /// they sleep (see [`poll`]).
    pub durable: AtomicU64,
    /// The last LSN appended (`State::next_lsn - 1`), mirrored for the writer's poll.
    pub appended: AtomicU64,
}

/// Locks, ignoring poisoning: no code holding this lock panics on data, and the state stays
/// consistent between statements that could.
pub(crate) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a>(cv: &Condvar, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// See [`Wal::append`](super::Wal::append).
    pub(crate) fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let (len, crc) = self.check(payload)?;
        self.queue(len, crc, |spare, header| {
            let mut frame = spare.unwrap_or_default();
            frame.clear();
            frame.extend_from_slice(&header);
            frame.extend_from_slice(payload);
            frame
        })
    }

    /// See [`Wal::append_buf`](super::Wal::append_buf).
    pub(crate) fn append_buf(&self, rec: &mut RecordBuf) -> Result<Lsn, WalError> {
        let (len, crc) = self.check(rec.payload())?;
        let mut frame = std::mem::take(&mut rec.bytes);
        let mut back = None;
        let queued = self.queue(len, crc, |spare, header| {
            // The record's buffer becomes the queued frame; a spare allocation comes back.
            frame[..RECORD_HEADER_LEN].copy_from_slice(&header);
            back = spare;
            frame
        });
        // On an error the frame was dropped with the closure; `rec` gets a fresh buffer.
        rec.recycle(back.unwrap_or_default());
        queued
    }

    /// The payload's length (refused when empty or above the maximum record size) and its
    /// crc32c, computed before the lock is taken.
    fn check(&self, payload: &[u8]) -> Result<(u32, u32), WalError> {
        if payload.is_empty() {
            return Err(WalError::EmptyRecord);
        }
        let max = self.settings.max_record_bytes;
        match u32::try_from(payload.len()) {
            Ok(l) if l <= max => Ok((l, crc32c::crc32c(payload))),
            _ => Err(WalError::RecordTooLarge {
                len: payload.len() as u64,
                max,
            }),
        }
    }

    /// Numbers and places a record of `len` payload bytes whose crc32c is `payload_crc`;
    /// `make_frame` makes its frame (the given header, then the payload; it may use the spare
    /// allocation it is given), which is queued, under the lock.
    fn queue(
        &self,
        len: u32,
        payload_crc: u32,
        make_frame: impl FnOnce(Option<Vec<u8>>, [u8; RECORD_HEADER_LEN]) -> Vec<u8>,
    ) -> Result<Lsn, WalError> {
        let frame = RECORD_HEADER_LEN as u64 + u64::from(len);
        let need = frame + RECORD_HEADER_LEN as u64; // room for the end marker after it

        let mut st = lock(&self.state);
        loop {
            if let Some(f) = &st.failure {
                return Err(f.poisoned());
            }
            if st.closing {
                return Err(WalError::Closed);
            }
            if st.pending_bytes < MAX_PENDING_BYTES {
                break;
            }
            st.metrics.append_stalls += 1;
            st = wait(&self.progress, st);
        }
        if st.place.offset + need > st.place.capacity {
            let segment = st.next_segment;
            st.next_segment += 1;
            let oversized = SEGMENT_HEADER_LEN + need > self.settings.segment_bytes;
            let capacity = if oversized {
                SEGMENT_HEADER_LEN + need
            } else {
                self.settings.segment_bytes
            };
            let roll = Roll {
                at: st.pending.len(),
                segment,
                first_lsn: st.next_lsn,
                capacity,
                oversized,
            };
            st.rolls.push(roll);
            st.place = Place {
                segment,
                offset: SEGMENT_HEADER_LEN,
                capacity,
            };
        }
        let crc = record::record_crc_from_payload_crc(st.place.segment, len, payload_crc);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
        let spare = st.free.pop();
        if let Some(b) = &spare {
            st.free_bytes -= b.capacity();
        }
        let made = make_frame(spare, header);
        st.pending_bytes += made.len();
        st.pending.push(made);
        st.place.offset += frame;
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        self.appended.store(lsn, Ordering::Release);
        st.metrics.appends += 1;
        if st.pending_since.is_none() {
            st.pending_since = Some(Instant::now());
        }
        drop(st);
        self.work.notify_one();
        Ok(lsn)
    }

    /// See [`Wal::commit`](super::Wal::commit).
    pub(crate) fn commit(&self, lsn: Lsn) -> Result<(), WalError> {
        if lsn <= self.appended.load(Ordering::Acquire) {
            // Usually durable within one sync: see [`poll`]. The locked check below decides.
            poll(COMMIT_POLL, || self.durable.load(Ordering::Acquire) >= lsn);
        }
        let mut st = lock(&self.state);
        st.metrics.commits += 1;
        if lsn >= st.next_lsn {
            return Err(WalError::UnknownLsn {
                lsn,
                last: st.next_lsn - 1,
            });
        }
        loop {
            if lsn <= st.durable_lsn {
                return Ok(());
            }
            if let Some(f) = &st.failure {
                return Err(f.error());
            }
            st = wait(&self.progress, st);
        }
    }

    /// See [`CommitHandle::try_commit`](super::CommitHandle::try_commit).
    pub(crate) fn try_commit(&self, lsn: Lsn) -> Option<Result<(), WalError>> {
        if self.durable.load(Ordering::Acquire) >= lsn {
            return Some(Ok(()));
        }
        let st = lock(&self.state);
        if lsn >= st.next_lsn {
            return Some(Err(WalError::UnknownLsn {
                lsn,
                last: st.next_lsn - 1,
            }));
        }
        if lsn <= st.durable_lsn {
            return Some(Ok(()));
        }
        st.failure.as_ref().map(|f| Err(f.error()))
    }

    /// Takes a spare for the next segment: a ready one, or waits for the preallocator, or
    /// (when it is idle or failed) prepares one on this thread.
    fn take_spare(&self, zeros: &mut Option<ZeroChunk>) -> Result<PathBuf, WalError> {
        let mut st = lock(&self.state);
        loop {
            while let Some(p) = st.spares.pop() {
                // A spare of another size (config changed) is not used.
                match segment::file_len(&p) {
                    Ok(len) if len == self.settings.segment_bytes => {
                        st.prealloc_failed = false;
                        drop(st);
                        self.spare.notify_all();
                        return Ok(p);
                    }
                    _ => {
                        let _ = segment::remove(&p);
                    }
                }
            }
            if !st.prealloc_busy {
                break;
            }
            st = wait(&self.spare, st);
        }
        let id = st.next_spare_id;
        st.next_spare_id += 1;
        st.prealloc_failed = false;
        drop(st);
        let zeros = zeros.get_or_insert_with(ZeroChunk::new);
        let len = self.settings.segment_bytes;
        let p = segment::prepare_spare(&self.disk, &self.dir, id, len, zeros, &|| false)?;
        let mut st = lock(&self.state);
        st.metrics.preallocated_bytes += len;
        st.metrics.spares_preallocated += 1;
        drop(st);
        self.spare.notify_all();
        p.ok_or(WalError::Closed)
    }
}

/// The segment the writer is writing.
#[derive(Debug)]
pub(crate) struct Active {
    pub file: File,
    pub info: SegmentInfo,
    /// Where the next byte goes.
    pub offset: u64,
    /// Written since its last sync.
    pub dirty: bool,
    /// Synchronous direct writes, where they apply (see [`DirectWrites`]).
    pub direct: Option<DirectWrites>,
}

impl Active {
    /// The segment `info` open as `file`, its next byte going at `offset`; with direct
    /// writes when the segment is preallocated, syncs are on and the disk has no
    /// fault-injection budget (and the file system takes `O_DIRECT`).
    pub(crate) fn new(
        file: File,
        info: SegmentInfo,
        offset: u64,
        settings: &Settings,
        disk: &Disk,
    ) -> Active {
        let direct = if info.preallocated && settings.sync && disk.allows_direct() {
            DirectWrites::open(&info.path, &file, offset)
        } else {
            None
        };
        Active {
            file,
            info,
            offset,
            dirty: false,
            direct,
        }
    }
}

#[derive(Debug, Default)]
struct GroupStats {
    bytes: u64,
    syncs: u64,
    direct_writes: u64,
    sync_time: Duration,
}

/// The writer thread's body: runs until closing with nothing pending, or the first failure.
pub(crate) fn run(shared: &Shared, mut active: Active) {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut rolls: Vec<Roll> = Vec::new();
    let mut zeros: Option<ZeroChunk> = None;
    let delay = shared.settings.delay;
    loop {
        let (first_lsn, last_lsn, frame_bytes) = {
            let mut st = lock(&shared.state);
            loop {
                if st.failure.is_some() {
                    return;
                }
                if !st.pending.is_empty() {
                    if !delay.is_zero() && !st.closing && st.pending_bytes < GROUP_WAIT_BYTES {
                        let deadline = st.pending_since.unwrap_or_else(Instant::now) + delay;
                        let now = Instant::now();
                        if now < deadline {
                            st = shared
                                .work
                                .wait_timeout(st, deadline - now)
                                .map(|(g, _)| g)
                                .unwrap_or_else(|e| e.into_inner().0);
                            continue;
                        }
                    }
                    break;
                }
                if st.closing {
                    return;
                }
                st = wait(&shared.work, st);
            }
            std::mem::swap(&mut st.pending, &mut frames);
            let frame_bytes = std::mem::take(&mut st.pending_bytes) as u64;
            std::mem::swap(&mut st.rolls, &mut rolls);
            st.pending_since = None;
            (st.durable_lsn + 1, st.next_lsn - 1, frame_bytes)
        };
        shared.progress.notify_all(); // appenders blocked on a full buffer
        let mut start = GroupStart {
            info: active.info.clone(),
            offset: active.offset,
            written_end: active.offset,
        };
        let result = write_group(shared, &mut active, &frames, &rolls, &mut zeros, &mut start);
        if result.is_err() {
            undo_group(shared, &start);
        }
        let mut st = lock(&shared.state);
        match result {
            Ok(g) => {
                let records = last_lsn + 1 - first_lsn;
                st.durable_lsn = last_lsn;
                shared.durable.store(last_lsn, Ordering::Release);
                let m = &mut st.metrics;
                m.records_written += records;
                m.record_bytes += frame_bytes;
                m.payload_bytes += frame_bytes - records * RECORD_HEADER_LEN as u64;
                m.bytes_written += g.bytes;
                m.groups += 1;
                m.max_group_records = m.max_group_records.max(records);
                m.syncs += g.syncs;
                m.direct_writes += g.direct_writes;
                m.sync_time += g.sync_time;
            }
            Err(e) => st.failure = Some(Failure::new(&e)),
        }
        while let Some(f) = frames.pop() {
            if !st.free.is_empty() && st.free_bytes + f.capacity() > FREE_BYTES {
                frames.push(f); // freed below, outside the lock, with the rest
                break;
            }
            st.free_bytes += f.capacity();
            st.free.push(f);
        }
        drop(st);
        shared.progress.notify_all();
        frames.clear();
        rolls.clear();
        if delay.is_zero() {
            // The next record of a producer that waited for this group comes soon: see [`poll`].
            poll(WRITER_POLL, || {
                shared.appended.load(Ordering::Acquire) > last_lsn
            });
        }
    }
}

/// How long the writer polls for the next record after a group before it sleeps.
const WRITER_POLL: Duration = Duration::from_micros(250);
/// How long a committer polls for its LSN to become durable before it sleeps.
const COMMIT_POLL: Duration = Duration::from_millis(1);

/// Checks `ready` with a spin hint a few times, then with `yield_now` between checks, for up
/// to `limit`; returns whether it became true.
///
/// Waking a thread that sleeps on a condition variable costs tens of microseconds on this
/// VM (an idle vCPU has to be woken), and a synchronous producer's commit pays it twice: the
/// writer woken by the append, the committer woken by the sync. Both waits are short (a sync
/// takes ~0.1-0.5 ms here, and a producer whose commit returned appends its next record
/// soon), so both sides poll first. Yielding gives the vCPU to any other runnable thread, so
/// on a 2-core machine a poller does not hold a core away from the threads doing the work.
/// Polling is only a shortcut: the caller then takes the lock and re-checks, and sleeps on
/// the condition variable as before, so no wake-up can be lost.
fn poll(limit: Duration, ready: impl Fn() -> bool) -> bool {
    for _ in 0..64 {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    let deadline = Instant::now() + limit;
    loop {
        for _ in 0..8 {
            if ready() {
                return true;
            }
            std::thread::yield_now();
        }
        if Instant::now() >= deadline {
            return ready();
        }
    }
}

fn sync(shared: &Shared, a: &mut Active, g: &mut GroupStats) -> Result<(), WalError> {
    if shared.settings.sync && a.dirty {
        let t = Instant::now();
        shared.disk.sync_data(&a.file, &a.info.path)?;
        g.sync_time += t.elapsed();
        g.syncs += 1;
    }
    a.dirty = false;
    Ok(())
}

/// Where a group started writing, to undo it if it fails.
#[derive(Debug)]
struct GroupStart {
    info: SegmentInfo,
    offset: u64,
    /// How far the group may have written into that segment.
    written_end: u64,
}

fn write_piece(
    shared: &Shared,
    a: &mut Active,
    bytes: &[u8],
    g: &mut GroupStats,
    start: &mut GroupStart,
) -> Result<(), WalError> {
    if a.info.segment == start.info.segment {
        start.written_end = start.written_end.max(a.offset + bytes.len() as u64);
    }
    shared
        .disk
        .write_at(&a.file, &a.info.path, bytes, a.offset)?;
    g.bytes += bytes.len() as u64;
    a.dirty = true;
    Ok(())
}

/// After a failed group: removes what it may have put on disk, so that the log holds exactly
/// the durable prefix (nothing a failed commit did not acknowledge comes back at reopen).
/// Segments the group started are deleted; in the segment it started in, its bytes are
/// zeroed (preallocated: an overwrite, which needs no space even on a full disk) or cut off
/// (growing file). Best effort: if this fails too, recovery at reopen finds the group's
/// records, or cuts them as a torn tail.
fn undo_group(shared: &Shared, start: &GroupStart) {
    let started: Vec<SegmentInfo> = {
        let mut st = lock(&shared.state);
        match st
            .segments
            .iter()
            .position(|s| s.segment == start.info.segment)
        {
            Some(i) => st.segments.drain(i + 1..).collect(),
            None => Vec::new(),
        }
    };
    for s in &started {
        let _ = segment::remove(&s.path);
    }
    if let Ok(f) = segment::open_rw(&start.info.path) {
        let path = &start.info.path;
        let undone = if start.info.preallocated {
            let zeros = vec![0u8; (start.written_end - start.offset) as usize];
            shared.disk.write_at(&f, path, &zeros, start.offset)
        } else {
            f.set_len(start.offset)
                .map_err(|e| WalError::io(path, "truncate", e))
        };
        if undone.is_ok() {
            let _ = shared.disk.sync_all(&f, path);
        }
    }
    let _ = shared.disk.sync_dir(&shared.dir);
}

/// Writes one group (see the module docs).
fn write_group(
    shared: &Shared,
    active: &mut Active,
    frames: &[Vec<u8>],
    rolls: &[Roll],
    zeros: &mut Option<ZeroChunk>,
    group: &mut GroupStart,
) -> Result<GroupStats, WalError> {
    let mut g = GroupStats::default();
    let mut start = 0;
    for roll in rolls {
        if roll.at > start {
            write_frames(shared, active, &frames[start..roll.at], &mut g, group)?;
        }
        sync(shared, active, &mut g)?;
        *active = next_segment(shared, roll, zeros, &mut g)?;
        start = roll.at;
    }
    write_frames(shared, active, &frames[start..], &mut g, group)?;
    sync(shared, active, &mut g)?;
    Ok(g)
}

/// Zeros for the end-of-log marker and the padding after it.
static MARKER_AND_PAD: [u8; RECORD_HEADER_LEN + PAGE_BYTES as usize] =
    [0; RECORD_HEADER_LEN + PAGE_BYTES as usize];

/// Writes `frames` at the active segment's position, then the end-of-log marker, and moves
/// the position past the frames: durably in one direct write where the segment takes them
/// (see [`DirectWrites`]), else through the page cache (the caller syncs).
///
/// In a preallocated segment the marker is followed by zeros up to the next page boundary
/// (the segment holds zeros or stale records there, which nothing reads past the marker): a
/// buffered write that ends inside a page the page cache does not hold makes the kernel read
/// that page from disk first, which more than doubled the cost of a ~240 KB commit after an
/// `O_DIRECT` fill; the next group starts inside this last page, which is then cached.
fn write_frames(
    shared: &Shared,
    a: &mut Active,
    frames: &[Vec<u8>],
    g: &mut GroupStats,
    group: &mut GroupStart,
) -> Result<(), WalError> {
    if let Some(d) = a.direct.as_mut() {
        let t = Instant::now();
        let len: u64 = frames.iter().map(|f| f.len() as u64).sum();
        if a.info.segment == group.info.segment {
            // Before the write, as for buffered writes: a write that fails may still have
            // put some of its pages on disk, and undoing the group must cover them.
            group.written_end = group
                .written_end
                .max(DirectWrites::end_of(a.offset, len).min(a.info.capacity));
        }
        match d.write(&a.info.path, a.offset, frames, a.info.capacity)? {
            Some(end) => {
                g.bytes += end - a.offset;
                g.syncs += 1;
                g.direct_writes += 1;
                g.sync_time += t.elapsed();
                a.offset += len;
                return Ok(());
            }
            None => a.direct = None,
        }
    }
    for f in frames {
        write_piece(shared, a, f, g, group)?;
        a.offset += f.len() as u64;
    }
    let end = a.offset + RECORD_HEADER_LEN as u64;
    let padded = if a.info.preallocated {
        end.next_multiple_of(PAGE_BYTES)
            .min(a.info.capacity)
            .max(end)
    } else {
        end
    };
    write_piece(
        shared,
        a,
        &MARKER_AND_PAD[..(padded - a.offset) as usize],
        g,
        group,
    )
}

/// Creates (or activates a spare as) the segment `roll` starts, and adds it to the catalogue.
fn next_segment(
    shared: &Shared,
    roll: &Roll,
    zeros: &mut Option<ZeroChunk>,
    g: &mut GroupStats,
) -> Result<Active, WalError> {
    let dir: &Path = &shared.dir;
    let (file, info) = if roll.oversized || !shared.settings.preallocate {
        segment::create_growing(
            &shared.disk,
            dir,
            roll.segment,
            roll.first_lsn,
            roll.capacity,
        )?
    } else {
        let spare = shared.take_spare(zeros)?;
        segment::activate_spare(&shared.disk, dir, &spare, roll.segment, roll.first_lsn)?
    };
    g.bytes += SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64;
    let mut st = lock(&shared.state);
    st.segments.push(info.clone());
    st.metrics.segments_created += 1;
    drop(st);
    Ok(Active::new(
        file,
        info,
        SEGMENT_HEADER_LEN,
        &shared.settings,
        &shared.disk,
    ))
}

/// The preallocator thread's body: keeps one spare ready while none is, until told to stop.
pub(crate) fn run_preallocator(shared: &Shared) {
    let zeros = ZeroChunk::new();
    let stop = || shared.stop_prealloc.load(Ordering::Acquire);
    loop {
        let id = {
            let mut st = lock(&shared.state);
            loop {
                if stop() {
                    return;
                }
                if st.spares.is_empty() && !st.prealloc_failed && st.failure.is_none() {
                    break;
                }
                st = wait(&shared.spare, st);
            }
            st.prealloc_busy = true;
            st.next_spare_id += 1;
            st.next_spare_id - 1
        };
        let len = shared.settings.segment_bytes;
        let r = segment::prepare_spare(&shared.disk, &shared.dir, id, len, &zeros, &stop);
        let mut st = lock(&shared.state);
        st.prealloc_busy = false;
        match r {
            Ok(Some(p)) => {
                st.spares.push(p);
                st.metrics.spares_preallocated += 1;
                st.metrics.preallocated_bytes += len;
            }
            Ok(None) => {}
            Err(_) => st.prealloc_failed = true,
        }
        drop(st);
        shared.spare.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rebuilds_the_original_error_for_every_caller() {
        let full = Failure::new(&WalError::io(
            "/x/1.wal",
            "write",
            io::Error::from_raw_os_error(28),
        ));
        assert!(
            matches!(full.error(), WalError::DiskFull { path } if path == Path::new("/x/1.wal"))
        );
        assert!(matches!(full.error(), WalError::DiskFull { .. }));
        let p = full.poisoned();
        assert!(
            matches!(&p, WalError::Poisoned(m) if m.contains("disk full")),
            "{p}"
        );

        let eio = Failure::new(&WalError::io(
            "/x/2.wal",
            "fdatasync",
            io::Error::other("EIO"),
        ));
        match eio.error() {
            WalError::Io { path, op, source } => {
                assert_eq!(path, Path::new("/x/2.wal"));
                assert_eq!(op, "fdatasync");
                assert_eq!(source.kind(), io::ErrorKind::Other);
                assert!(source.to_string().contains("EIO"));
            }
            e => panic!("{e}"),
        }
    }
}
