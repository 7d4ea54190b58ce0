//! [`MemStore`]: the in-memory state store, an ordered map on the heap.
//!
//! Invariants: the map holds exactly the live entries (no tombstones); a `put` that replaces a
//! value of the same length copies in place (no allocation). Snapshots are state images
//! without a hash index (smaller and cheaper to write; [`MmapStore`](super::MmapStore) builds
//! the index when it loads one).

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Bound;

use super::error::StateError;
use super::image::{self, AlignedBytes, ImageView};
use super::store::{range_is_empty, Scan, StateStore};

/// An ordered in-memory store (`BTreeMap` of boxed byte strings).
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    map: BTreeMap<Box<[u8]>, Box<[u8]>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding the entries of the snapshot `bytes` (see [`StateStore::restore`]).
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, StateError> {
        let mut s = Self::new();
        s.restore(bytes)?;
        Ok(s)
    }
}

impl StateStore for MemStore {
    #[inline]
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|v| &**v)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.map.get_mut(key) {
            Some(v) if v.len() == value.len() => v.copy_from_slice(value),
            Some(v) => *v = value.into(),
            None => {
                self.map.insert(key.into(), value.into());
            }
        }
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        self.map.remove(key).is_some()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn scan_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Scan<'_> {
        if range_is_empty(start, end) {
            return Scan::empty();
        }
        Scan::mem(MemScan {
            range: self.map.range::<[u8], _>((start, end)),
            prefix: None,
        })
    }

    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> Scan<'a> {
        Scan::mem(MemScan {
            range: self
                .map
                .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)),
            prefix: Some(prefix),
        })
    }

    fn snapshot_to(&self, out: &mut dyn Write) -> Result<u64, StateError> {
        image::encode(
            || self.map.iter().map(|(k, v)| (&**k, &**v)),
            false,
            out,
            None,
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let aligned = AlignedBytes::new(bytes);
        let buf = aligned.as_slice();
        let meta = image::validate(buf, None)?;
        let view = ImageView::new(buf, &meta, None);
        // Sorted input: the map is bulk-built.
        self.map = view
            .records()
            .map(|(k, v)| (Box::from(k), Box::from(v)))
            .collect();
        Ok(())
    }
}

/// A scan over a [`MemStore`].
#[derive(Clone)]
pub(crate) struct MemScan<'a> {
    range: btree_map::Range<'a, Box<[u8]>, Box<[u8]>>,
    /// Stop at the first key without this prefix.
    prefix: Option<&'a [u8]>,
}

impl<'a> Iterator for MemScan<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = self.range.next()?;
        if let Some(p) = self.prefix {
            if !k.starts_with(p) {
                // Exhaust, so that later calls stay `None`.
                self.range = btree_map::Range::default();
                return None;
            }
        }
        Some((k, v))
    }
}
