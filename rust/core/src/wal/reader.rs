//! Reading the log back: [`WalReader`], the iterator [`Wal::read_from`](super::Wal::read_from)
//! returns, for recovery replay.
//!
//! # Invariants
//!
//! * Yields records in LSN order, each LSN exactly once, starting at the requested LSN and
//!   ending at the durable LSN of the moment the reader was created (records after it may
//!   not be written yet, or may still be lost in a crash).
//! * Every yielded payload passed its checksum under its segment's number. Damage is an
//!   `Err` item, after which the iterator ends; it never yields a wrong record.
//! * Memory: one buffered reader (256 KiB) plus the record being yielded; the log is never
//!   loaded whole. Records before the requested LSN are skipped with a seek, not read.
//! * A segment removed by retention while the reader still needed it gives
//!   [`WalError::Unavailable`].

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::sync::Arc;

use super::error::{Damage, WalError};
use super::record::{self, Header, RECORD_HEADER_LEN};
use super::segment::{SegmentHeader, SegmentInfo, SEGMENT_HEADER_LEN};
use super::writer::{lock, Shared};
use super::Lsn;

/// Iterator over `(lsn, payload)` of the records from some LSN on; see the module docs.
#[derive(Debug)]
pub struct WalReader {
    shared: Arc<Shared>,
    /// Live segments when the reader was created, from the one holding `next`.
    segments: Vec<SegmentInfo>,
    /// Index in `segments` of the open segment (or of the next one to open).
    index: usize,
    /// The open segment: reader, its header, offset of the next record.
    open: Option<(BufReader<File>, SegmentHeader, u64)>,
    /// LSN of the next record in the open segment (or the first of the next segment).
    lsn: Lsn,
    /// First LSN to yield.
    from: Lsn,
    /// Last LSN to yield.
    end: Lsn,
    done: bool,
}

impl WalReader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> Result<WalReader, WalError> {
        let st = lock(&shared.state);
        let first = st.segments.first().map_or(st.next_lsn, |s| s.first_lsn);
        let from = from.max(1);
        if from < first {
            return Err(WalError::Unavailable {
                requested: from,
                first,
            });
        }
        let end = st.durable_lsn;
        // The last segment whose first LSN is <= from holds it (or the log ends before it).
        let start = st
            .segments
            .iter()
            .rposition(|s| s.first_lsn <= from)
            .unwrap_or(0);
        let segments: Vec<SegmentInfo> = st.segments[start..].to_vec();
        let lsn = segments.first().map_or(first, |s| s.first_lsn);
        drop(st);
        Ok(WalReader {
            shared,
            segments,
            index: 0,
            open: None,
            lsn,
            from,
            end,
            done: from > end,
        })
    }

    /// The error for damage at `offset` of the open segment, or [`WalError::Unavailable`]
    /// when retention removed the segment meanwhile.
    fn damage(&self, offset: u64, reason: Damage) -> WalError {
        if let Some(e) = self.retired() {
            return e;
        }
        let s = &self.segments[self.index];
        WalError::Corrupt {
            path: s.path.clone(),
            segment: s.segment,
            offset,
            reason,
        }
    }

    fn retired(&self) -> Option<WalError> {
        let st = lock(&self.shared.state);
        let first = st.segments.first().map_or(st.next_lsn, |s| s.first_lsn);
        (self.lsn < first).then_some(WalError::Unavailable {
            requested: self.lsn,
            first,
        })
    }

    fn io_error(&self, op: &'static str, e: io::Error) -> WalError {
        if let Some(r) = self.retired() {
            return r;
        }
        WalError::io(&self.segments[self.index].path, op, e)
    }

    /// Opens segment `self.index`.
    fn open_segment(&mut self) -> Result<(), WalError> {
        let info = &self.segments[self.index];
        let mut f = File::open(&info.path).map_err(|e| self.io_error("open", e))?;
        let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
        f.read_exact(&mut head)
            .map_err(|e| self.io_error("read", e))?;
        let header = SegmentHeader::decode(&head).map_err(|d| self.damage(0, d))?;
        if header.segment != info.segment || header.first_lsn != info.first_lsn {
            return Err(self.damage(
                0,
                Damage::BadHeader {
                    detail: format!(
                        "expected segment {} from LSN {}, found segment {} from LSN {}",
                        info.segment, info.first_lsn, header.segment, header.first_lsn
                    ),
                },
            ));
        }
        self.lsn = header.first_lsn;
        self.open = Some((
            BufReader::with_capacity(256 << 10, f),
            header,
            SEGMENT_HEADER_LEN,
        ));
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<(Lsn, Vec<u8>)>, WalError> {
        let max = self.shared.settings.max_record_bytes;
        loop {
            if self.lsn > self.end {
                return Ok(None);
            }
            // Move to the next segment once this one's records are used up.
            if let Some(next) = self.segments.get(self.index + 1) {
                if self.lsn >= next.first_lsn {
                    self.index += 1;
                    self.open = None;
                }
            }
            if self.open.is_none() {
                if self.index >= self.segments.len() {
                    return Ok(None);
                }
                self.open_segment()?;
                continue;
            }
            let Some((r, header, offset)) = self.open.as_mut() else {
                continue;
            };
            let at = *offset;
            let mut h = [0u8; RECORD_HEADER_LEN];
            if let Err(e) = r.read_exact(&mut h) {
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    self.damage(
                        at,
                        Damage::Truncated {
                            needed: RECORD_HEADER_LEN as u64,
                            available: 0,
                        },
                    )
                } else {
                    self.io_error("read", e)
                });
            }
            let (len, crc) = match record::parse_header(h, max) {
                Ok(Header::Record { len, crc }) => (len, crc),
                // The log ends before the durable LSN it promised: damage.
                Ok(Header::End) => {
                    return Err(self.damage(
                        at,
                        Damage::Truncated {
                            needed: RECORD_HEADER_LEN as u64,
                            available: 0,
                        },
                    ))
                }
                Err(d) => return Err(self.damage(at, d)),
            };
            let lsn = self.lsn;
            let frame = RECORD_HEADER_LEN as u64 + u64::from(len);
            if lsn < self.from {
                r.seek_relative(i64::from(len))
                    .map_err(|e| WalError::io(&self.segments[self.index].path, "seek", e))?;
                *offset += frame;
                self.lsn += 1;
                continue;
            }
            let segment = header.segment;
            let previous = header.previous_segment;
            let mut payload = vec![0u8; len as usize];
            if let Err(e) = r.read_exact(&mut payload) {
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    self.damage(
                        at,
                        Damage::Truncated {
                            needed: frame,
                            available: 0,
                        },
                    )
                } else {
                    self.io_error("read", e)
                });
            }
            if let Err(d) = record::verify(segment, crc, &payload, previous) {
                return Err(self.damage(at, d));
            }
            *offset += frame;
            self.lsn += 1;
            return Ok(Some((lsn, payload)));
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<(Lsn, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
