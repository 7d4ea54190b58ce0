//! [`Wal`], the handle: open (recovery, then the writer and preallocator threads), the public
//! operations, retention, close.
//!
//! # Invariants
//!
//! * The handle owns two threads: the writer (always) and the preallocator (when
//!   `preallocate`). `close` and `Drop` stop both: the writer first, after it has written and
//!   synced everything appended, then the preallocator (which deletes a half-made spare).
//! * Retention never removes the segment being written, and only removes a segment when the
//!   next segment exists (so its every record is known to be below the retention LSN).
//! * Recycling renames a released segment to a spare; its records become invalid the moment
//!   the spare is activated under a new, higher segment number (the checksum covers it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::config::WalConfig;
use super::error::WalError;
use super::io::Disk;
use super::metrics::WalMetrics;
use super::reader::WalReader;
use super::record_buf::RecordBuf;
use super::recovery::{self, RecoveryReport};
use super::segment::{self, SegmentInfo};
use super::writer::{self, lock, Active, Place, Settings, Shared, State, MAX_SPARES};
use super::Lsn;

/// Waits for LSNs of a [`Wal`] to become durable: [`Wal::commit`] without the `Wal` (see
/// [`Wal::commit_handle`]). Waiting on a closed log returns at once for what it made
/// durable, and the log's failure for what it did not.
#[derive(Clone)]
pub struct CommitHandle {
    shared: Arc<Shared>,
}

impl CommitHandle {
    /// [`Wal::commit`]: blocks until every record up to `lsn` is durable.
    pub fn commit(&self, lsn: Lsn) -> Result<(), WalError> {
        self.shared.commit(lsn)
    }

    /// [`commit`](Self::commit) without blocking: `None` while `lsn` is neither durable nor
    /// failed, otherwise what `commit` would return now.
    pub fn try_commit(&self, lsn: Lsn) -> Option<Result<(), WalError>> {
        self.shared.try_commit(lsn)
    }
}

/// A write-ahead log: records appended from any number of threads, made durable in groups by
/// one writer thread. `Send + Sync`; share it behind an `Arc`. See the [module docs](super).
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    preallocator: Option<JoinHandle<()>>,
}

impl Wal {
    /// Opens the log in `config.dir` (creating the directory if needed): scans the existing
    /// segments according to `config.recovery`, cuts damage where the mode allows, and
    /// starts the writer. The report says what was found: the last valid LSN, and where,
    /// why and how much was cut ([`RecoveryReport::truncation`]).
    ///
    /// Fails with [`WalError::Corrupt`] (naming segment, offset and reason) when the mode
    /// refuses the damage found; [`repair`](super::repair) then cuts the log explicitly.
    pub fn open(config: WalConfig) -> Result<(Wal, RecoveryReport), WalError> {
        config.validate()?;
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| WalError::io(&dir, "create directory", e))?;
        let disk = Disk::new(config.disk_budget, config.sync);
        let rec = recovery::recover(&dir, config.recovery, config.max_record_bytes, &disk)?;
        let settings = Settings {
            segment_bytes: config.segment_bytes,
            max_record_bytes: config.max_record_bytes,
            preallocate: config.preallocate,
            delay: config.group_commit_delay,
            sync: config.sync,
        };

        // Spares of another size, or when preallocation is off, are of no use.
        let mut spares = Vec::new();
        let mut next_spare_id = 1;
        for (id, path, len) in rec.spares {
            next_spare_id = next_spare_id.max(id + 1);
            if config.preallocate && len == config.segment_bytes {
                spares.push(path);
            } else {
                segment::remove(&path)?;
            }
        }

        let mut next_segment = rec.max_segment + 1;
        let mut metrics = WalMetrics::default();
        let mut segments = rec.segments;
        if config.sync {
            // What recovery found may still be only in the page cache (a previous process
            // killed before its sync, or one that ran with syncs off). New records are
            // acknowledged after it, and direct writes sync only what they write: make it
            // durable first, or a power cut could end the log before them.
            for s in &segments {
                let f = segment::open_rw(&s.path)?;
                disk.sync_data(&f, &s.path)?;
            }
        }
        let active = match segments.last() {
            Some(last) => Active::new(
                segment::open_rw(&last.path)?,
                last.clone(),
                rec.tail_offset,
                &settings,
                &disk,
            ),
            None => {
                // A new log (or one whose every segment was cut): its first segment.
                let n = next_segment;
                next_segment += 1;
                let (file, info) = if config.preallocate {
                    let spare = match spares.pop() {
                        Some(s) => s,
                        None => {
                            let id = next_spare_id;
                            next_spare_id += 1;
                            let zeros = super::io::ZeroChunk::new();
                            let s = segment::prepare_spare(
                                &disk,
                                &dir,
                                id,
                                config.segment_bytes,
                                &zeros,
                                &|| false,
                            )?;
                            metrics.spares_preallocated += 1;
                            metrics.preallocated_bytes += config.segment_bytes;
                            s.ok_or(WalError::Closed)?
                        }
                    };
                    segment::activate_spare(&disk, &dir, &spare, n, rec.next_lsn)?
                } else {
                    segment::create_growing(&disk, &dir, n, rec.next_lsn, config.segment_bytes)?
                };
                metrics.segments_created += 1;
                segments.push(info.clone());
                Active::new(file, info, segment::SEGMENT_HEADER_LEN, &settings, &disk)
            }
        };
        let place = Place {
            segment: active.info.segment,
            offset: active.offset,
            capacity: active.info.capacity,
        };
        let state = State {
            next_lsn: rec.next_lsn,
            next_segment,
            place,
            pending: Vec::new(),
            pending_bytes: 0,
            free: Vec::new(),
            free_bytes: 0,
            rolls: Vec::new(),
            pending_since: None,
            durable_lsn: rec.next_lsn - 1,
            failure: None,
            closing: false,
            segments,
            spares,
            next_spare_id,
            prealloc_busy: false,
            prealloc_failed: false,
            metrics,
        };
        let last = rec.next_lsn - 1;
        let shared = Arc::new(Shared {
            durable: AtomicU64::new(last),
            appended: AtomicU64::new(last),
            dir,
            disk,
            settings,
            state: Mutex::new(state),
            work: Condvar::new(),
            progress: Condvar::new(),
            spare: Condvar::new(),
            stop_prealloc: AtomicBool::new(false),
        });
        let spawn_err = |e| WalError::io(&shared.dir, "spawn thread", e);
        let w = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("laminar-wal-writer".into())
            .spawn(move || writer::run(&w, active))
            .map_err(spawn_err)?;
        let mut wal = Wal {
            shared: Arc::clone(&shared),
            writer: Some(writer),
            preallocator: None,
        };
        if config.preallocate {
            let p = Arc::clone(&shared);
            wal.preallocator = Some(
                std::thread::Builder::new()
                    .name("laminar-wal-prealloc".into())
                    .spawn(move || writer::run_preallocator(&p))
                    .map_err(spawn_err)?,
            );
        }
        Ok((wal, rec.report))
    }

    /// Appends one record (the payload is copied into the log's buffer) and returns its LSN.
    /// Not yet durable: [`commit`](Self::commit) waits for that. Blocks only when the pending
    /// buffer is full (64 MiB, the disk falling behind).
    ///
    /// Errors: [`WalError::EmptyRecord`], [`WalError::RecordTooLarge`] (above
    /// `max_record_bytes`), [`WalError::Poisoned`] after a failed write or sync.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        self.shared.append(payload)
    }

    /// Appends the record built in `rec` (see [`RecordBuf`]) and returns its LSN; `rec` is left
    /// empty, ready for the next record (possibly with another buffer's allocation). The same
    /// as [`append`](Self::append) except that, when no other record is pending, the payload
    /// is not copied: the buffer itself is queued.
    ///
    /// Errors: those of [`append`](Self::append); `rec` is emptied either way.
    pub fn append_buf(&self, rec: &mut RecordBuf) -> Result<Lsn, WalError> {
        self.shared.append_buf(rec)
    }

    /// Blocks until every record up to `lsn` is written and (with `sync`) `fdatasync`ed.
    /// Threads waiting at once share one sync (group commit). Returns immediately for an LSN
    /// that is already durable, even after a later failure.
    ///
    /// Errors: the write or sync error that kept `lsn` from becoming durable
    /// ([`WalError::DiskFull`], [`WalError::Io`]); after it the log is poisoned and every
    /// later commit of a non-durable LSN returns it too. Reopening runs recovery.
    /// [`WalError::UnknownLsn`] for an LSN never appended.
    pub fn commit(&self, lsn: Lsn) -> Result<(), WalError> {
        self.shared.commit(lsn)
    }

    /// A handle that waits for LSNs to become durable without borrowing the log, so that a
    /// caller can wait outside the lock that guards its appends and let other appenders'
    /// records join the same sync (group commit across threads).
    pub fn commit_handle(&self) -> CommitHandle {
        CommitHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// [`append`](Self::append) then [`commit`](Self::commit).
    pub fn append_durable(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let lsn = self.append(payload)?;
        self.commit(lsn)?;
        Ok(lsn)
    }

    /// Reads the records with LSN >= `from` (0 or 1: from the start), in order, checking every
    /// checksum, up to the durable LSN of now. A streaming iterator: the log is not loaded into
    /// memory. [`WalError::Unavailable`] when `from` is below [`first_lsn`](Self::first_lsn)
    /// (retention removed it).
    pub fn read_from(&self, from: Lsn) -> Result<WalReader, WalError> {
        WalReader::new(Arc::clone(&self.shared), from)
    }

    /// Retention: releases the segments whose every record has LSN < `lsn` (typically the
    /// first LSN not covered by a completed checkpoint). With `preallocate`, up to two of them
    /// are kept as spares and recycled as future segments (renamed; their old records turn
    /// invalid under the new segment number); the others are deleted. The segment being
    /// written is never released.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<(), WalError> {
        let settings = &self.shared.settings;
        let (released, recycle) = {
            let mut st = lock(&self.shared.state);
            let n = st
                .segments
                .windows(2)
                .take_while(|w| w[1].first_lsn <= lsn)
                .count();
            let released: Vec<SegmentInfo> = st.segments.drain(..n).collect();
            let mut recycle = Vec::new();
            for s in &released {
                let reuse = settings.preallocate
                    && s.preallocated
                    && s.capacity == settings.segment_bytes
                    && st.spares.len() + recycle.len() < MAX_SPARES;
                recycle.push(reuse.then(|| {
                    st.next_spare_id += 1;
                    st.next_spare_id - 1
                }));
            }
            (released, recycle)
        };
        if released.is_empty() {
            return Ok(());
        }
        // Oldest first, syncing the directory after each, so that a crash in the middle
        // leaves a log that still starts at a segment boundary with no gap after it.
        let mut recycled = Vec::new();
        let mut deleted = 0;
        let mut result = Ok(());
        for (s, id) in released.iter().zip(recycle) {
            let r = match id {
                Some(id) => {
                    let to = self.shared.dir.join(segment::spare_file_name(id));
                    segment::rename(&s.path, &to).map(|()| recycled.push(to))
                }
                None => segment::remove(&s.path).map(|()| deleted += 1),
            };
            let r = r.and_then(|()| self.shared.disk.sync_dir(&self.shared.dir));
            if r.is_err() && result.is_ok() {
                result = r;
            }
        }
        let mut st = lock(&self.shared.state);
        st.metrics.segments_recycled += recycled.len() as u64;
        st.metrics.segments_deleted += deleted;
        st.spares.extend(recycled);
        drop(st);
        self.shared.spare.notify_all();
        result
    }

    /// The highest LSN known to be durable (written and synced).
    pub fn durable_lsn(&self) -> Lsn {
        lock(&self.shared.state).durable_lsn
    }

    /// The LSN of the last appended record (0 if none ever was).
    pub fn last_lsn(&self) -> Lsn {
        lock(&self.shared.state).next_lsn - 1
    }

    /// The LSN of the first record still in the log (retention moves it forward); one past
    /// [`last_lsn`](Self::last_lsn) when the log holds no record.
    pub fn first_lsn(&self) -> Lsn {
        let st = lock(&self.shared.state);
        st.segments.first().map_or(st.next_lsn, |s| s.first_lsn)
    }

    /// The numbers of the live segment files, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        lock(&self.shared.state)
            .segments
            .iter()
            .map(|s| s.segment)
            .collect()
    }

    /// The counters since open.
    pub fn metrics(&self) -> WalMetrics {
        lock(&self.shared.state).metrics
    }

    /// Writes and syncs everything appended, stops the threads, and reports the first write
    /// or sync failure if there was one. `Drop` does the same without reporting.
    pub fn close(mut self) -> Result<(), WalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WalError> {
        {
            let mut st = lock(&self.shared.state);
            st.closing = true;
        }
        self.shared.work.notify_all();
        self.shared.progress.notify_all();
        let mut result = Ok(());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                result = Err(WalError::Poisoned("the WAL writer thread panicked".into()));
            }
        }
        self.shared.stop_prealloc.store(true, Ordering::Release);
        // Wake the preallocator under the lock so that it cannot miss the stop between its
        // check and its wait.
        drop(lock(&self.shared.state));
        self.shared.spare.notify_all();
        if let Some(p) = self.preallocator.take() {
            let _ = p.join();
        }
        if let Some(f) = &lock(&self.shared.state).failure {
            return Err(f.error());
        }
        result
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.shutdown();
        }
    }
}
