//! The [`StateStore`] trait: ordered byte keys to byte values, with snapshots.
//!
//! Operators keep their keyed state behind `&mut dyn StateStore`, so the trait is
//! dyn-compatible: scans return the concrete iterator [`Scan`] (no allocation for the stores of
//! this crate; other implementations may box their iterator into it).
//!
//! Contract shared by every implementation (checked by `tests_rs/state_store.rs` against a
//! `BTreeMap` model):
//! - keys are compared as byte strings; scans yield `(key, value)` in strictly increasing key
//!   order, each live key once;
//! - `get` never allocates and borrows from the store;
//! - `snapshot_to` writes the state image format of [`super::image`] (the same bytes whichever
//!   store wrote them), and `restore` accepts an image from any store, replacing the whole
//!   contents, or leaves the store unchanged and returns an error.

use std::io::Write;
use std::ops::Bound;

use super::error::StateError;
use super::memory::MemScan;
use super::mmap::MmapScan;

/// An ordered key-value store of byte strings, with snapshot and restore.
pub trait StateStore: Send {
    /// The value stored under `key`, borrowed from the store (no allocation).
    fn get(&self, key: &[u8]) -> Option<&[u8]>;

    /// Whether `key` has a value.
    fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, key: &[u8], value: &[u8]);

    /// Removes `key`; returns whether it had a value.
    fn delete(&mut self, key: &[u8]) -> bool;

    /// Number of keys with a value.
    fn len(&self) -> usize;

    /// Whether the store holds no key.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries with `start <= key <= end` (per the bounds), in key order. A range whose start
    /// lies after its end is empty (never a panic).
    fn scan_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Scan<'_>;

    /// Entries whose key starts with `prefix`, in key order.
    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> Scan<'a>;

    /// All entries, in key order.
    fn iter(&self) -> Scan<'_> {
        self.scan_range(Bound::Unbounded, Bound::Unbounded)
    }

    /// Writes a snapshot of the whole store (the state image format) to `out`; returns the
    /// number of bytes written.
    fn snapshot_to(&self, out: &mut dyn Write) -> Result<u64, StateError>;

    /// A snapshot of the whole store as bytes (see [`StateStore::snapshot_to`]).
    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let mut out = Vec::new();
        self.snapshot_to(&mut out)?;
        Ok(out)
    }

    /// Replaces the whole contents with the snapshot `bytes` (written by any store). The
    /// snapshot is validated first; on error the store is unchanged.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError>;

    /// Housekeeping between batches of writes (an operator calls it after each batch): a
    /// store may move recent writes to its long-term form here. It never changes what the
    /// store holds. Nothing to do by default.
    fn maintain(&mut self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Whether the range `(start, end)` is empty by its bounds alone (start after end, or equal
/// with an excluded side). `BTreeMap::range` panics on some of these, so stores check first.
pub(crate) fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    use Bound::{Excluded, Included};
    match (start, end) {
        (Included(a), Included(b)) => a > b,
        (Included(a) | Excluded(a), Included(b) | Excluded(b)) => a >= b,
        _ => false,
    }
}

/// An iterator over `(key, value)` entries of a store, in increasing key order.
pub struct Scan<'a> {
    inner: ScanInner<'a>,
}

enum ScanInner<'a> {
    Empty,
    Mem(MemScan<'a>),
    Mmap(MmapScan<'a>),
    Boxed(Box<dyn Iterator<Item = (&'a [u8], &'a [u8])> + 'a>),
}

impl<'a> Scan<'a> {
    /// A scan with no entries.
    pub fn empty() -> Self {
        Scan {
            inner: ScanInner::Empty,
        }
    }

    /// Wraps the iterator of another [`StateStore`] implementation (which must yield keys in
    /// strictly increasing order).
    pub fn boxed(it: Box<dyn Iterator<Item = (&'a [u8], &'a [u8])> + 'a>) -> Self {
        Scan {
            inner: ScanInner::Boxed(it),
        }
    }

    pub(crate) fn mem(s: MemScan<'a>) -> Self {
        Scan {
            inner: ScanInner::Mem(s),
        }
    }

    pub(crate) fn mmap(s: MmapScan<'a>) -> Self {
        Scan {
            inner: ScanInner::Mmap(s),
        }
    }
}

impl<'a> Iterator for Scan<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            ScanInner::Empty => None,
            ScanInner::Mem(s) => s.next(),
            ScanInner::Mmap(s) => s.next(),
            ScanInner::Boxed(s) => s.next(),
        }
    }
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scan")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Bound::*;

    #[test]
    fn empty_ranges() {
        assert!(range_is_empty(Included(b"b"), Included(b"a")));
        assert!(!range_is_empty(Included(b"a"), Included(b"a")));
        assert!(range_is_empty(Included(b"a"), Excluded(b"a")));
        assert!(range_is_empty(Excluded(b"a"), Included(b"a")));
        assert!(range_is_empty(Excluded(b"a"), Excluded(b"a")));
        assert!(!range_is_empty(Excluded(b"a"), Excluded(b"b")));
        assert!(!range_is_empty(Unbounded, Excluded(b"")));
    }
}
