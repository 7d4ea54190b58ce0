//! [`RecordBuf`]: a record built in place for [`Wal::append_buf`](super::Wal::append_buf).
//!
//! A large record (a pushed batch encoded as Arrow IPC) is written straight into a
//! `RecordBuf`, whose first [`RECORD_HEADER_LEN`] bytes are kept free for the frame header.
//! Appending queues the buffer itself as the record's frame (no copy of the payload) and
//! hands back the allocation of a frame already written, from the log's pool, for the next
//! record: a steady producer reuses the same few allocations, and neither copies the payload
//! again nor allocates per record.
//!
//! Invariant: `bytes.len() >= RECORD_HEADER_LEN`, and the payload is `bytes[RECORD_HEADER_LEN..]`.
//! This type never writes to the log itself.

use std::io;

use super::record::RECORD_HEADER_LEN;

/// A record payload under construction, with room for its frame header. See the module docs.
#[derive(Debug)]
pub struct RecordBuf {
    pub(crate) bytes: Vec<u8>,
}

impl Default for RecordBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBuf {
    /// An empty record.
    pub fn new() -> Self {
        RecordBuf {
            bytes: vec![0; RECORD_HEADER_LEN],
        }
    }

    /// Empties the record, keeping its allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.resize(RECORD_HEADER_LEN, 0);
    }

    /// The payload written so far.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[RECORD_HEADER_LEN..]
    }

    /// Appends `data` to the payload.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// The payload's length.
    pub fn len(&self) -> usize {
        self.bytes.len() - RECORD_HEADER_LEN
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many payload bytes fit without allocating.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity().saturating_sub(RECORD_HEADER_LEN)
    }

    /// Reserves room for `additional` more payload bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.bytes.reserve(additional);
    }

    /// Overwrites payload bytes `[at, at + data.len())`, which must have been written (e.g. a
    /// length patched in after what it measures). Panics otherwise: a caller's bug.
    pub fn patch(&mut self, at: usize, data: &[u8]) {
        let start = RECORD_HEADER_LEN + at;
        self.bytes[start..start + data.len()].copy_from_slice(data);
    }

    /// Takes `other`'s allocation as this (emptied) record's, for reuse.
    pub(crate) fn recycle(&mut self, mut other: Vec<u8>) {
        other.clear();
        other.resize(RECORD_HEADER_LEN, 0);
        self.bytes = other;
    }
}

impl io::Write for RecordBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn payload_follows_the_reserved_header() {
        let mut r = RecordBuf::new();
        assert!(r.is_empty());
        r.write_all(b"abcd").unwrap();
        r.extend_from_slice(b"ef");
        r.patch(1, b"XY");
        assert_eq!(r.payload(), b"aXYdef");
        assert_eq!(r.len(), 6);
        assert_eq!(r.bytes.len(), RECORD_HEADER_LEN + 6);
        r.clear();
        assert!(r.is_empty());
        r.recycle(vec![1, 2, 3]);
        assert!(r.is_empty());
        assert_eq!(r.bytes, vec![0; RECORD_HEADER_LEN]);
    }
}
