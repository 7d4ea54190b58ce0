//! The hash index of a state image: an open-addressing table of fixed-width slots, linear
//! probing, power-of-two size, load factor at most 3/4.
//!
//! A slot is `width` bytes (8, 16, 32 or 64, fixed per image). Its first 8 bytes are a
//! little-endian word:
//! - `0`: empty;
//! - bits 63..40: the high 24 bits of the key's hash (a tag that rules out almost every wrong
//!   candidate without reading further);
//! - bit 39 clear: bits 38..0 hold the record's data offset plus one (a *pointer* slot: the
//!   lookup reads the record from the sorted data region, a second cache miss);
//! - bit 39 set: an *inline* slot: bits 7..0 are the key length, bits 15..8 the value length,
//!   and the key then the value follow the word inside the slot, so a lookup costs one cache
//!   miss (the slot) instead of two.
//!
//! The writer picks the narrowest width whose slots hold at least 90% of the records inline
//! (payload `width - 8` bytes, each length at most 255), or 8 (pointers only) when no width up
//! to 64 does. Records that do not fit get pointer slots. The measured reason: a dependent
//! random access costs 200-500 ns on the project's VM at these sizes, so two per lookup miss
//! the 500 ns budget at 10M keys (see `notes/io-and-storage-limits.md` and the bench).
//!
//! Invariants of a valid table: `slots` is a power of two larger than the number of records
//! (so a probe for an absent key reaches an empty slot); exactly `count` slots are non-empty;
//! pointer slots point inside the data region; inline lengths fit the slot.

use super::error::StateError;
use super::hash::hash_key;
use super::image::{parse_record, read_u64};

const INLINE: u64 = 1 << 39;
const OFFSET_MASK: u64 = INLINE - 1;
const TAG_MASK: u64 = !((1u64 << 40) - 1);
/// The largest data region pointer slots can address.
pub(crate) const MAX_INDEXED_DATA: u64 = OFFSET_MASK - 1;
/// Slot widths a table may use.
pub(crate) const WIDTHS: [usize; 4] = [8, 16, 32, 64];
/// Share of records that must fit inline for a width to be chosen.
const INLINE_SHARE: f64 = 0.9;

/// Table size for `count` keys: a power of two, load factor at most 3/4.
pub(crate) fn capacity_for(count: u64) -> u64 {
    (count.saturating_mul(4) / 3 + 1).next_power_of_two().max(8)
}

/// Counts record sizes during a pass, then picks the slot width.
#[derive(Default)]
pub(crate) struct WidthChooser {
    count: u64,
    /// Records whose key and value fit inline in slots of 16, 32, 64 bytes.
    fits: [u64; 3],
}

impl WidthChooser {
    /// Notes one record.
    #[inline]
    pub(crate) fn add(&mut self, klen: usize, vlen: usize) {
        self.count += 1;
        if klen <= 255 && vlen <= 255 {
            for (i, w) in WIDTHS[1..].iter().enumerate() {
                if klen + vlen <= w - 8 {
                    self.fits[i] += 1;
                }
            }
        }
    }

    /// The narrowest width holding [`INLINE_SHARE`] of the records inline, else 8.
    pub(crate) fn width(&self) -> usize {
        if self.count == 0 {
            return 8;
        }
        for (i, w) in WIDTHS[1..].iter().enumerate() {
            if self.fits[i] as f64 >= INLINE_SHARE * self.count as f64 {
                return *w;
            }
        }
        8
    }
}

/// Records hashed ahead of their insertion, so that their home slots are fetched together.
const BATCH: usize = 32;

/// Builds a table (as little-endian bytes) one record at a time.
///
/// Inserts are random writes over a table far larger than the caches; taken one by one, each
/// waits for its own cache (and TLB) miss. The builder therefore queues [`BATCH`] records,
/// reads their home slots in one go (independent loads the CPU overlaps), then places them
/// (measured: 10M keys, 32-byte slots: 8.8 s to 2.4 s for a whole image).
pub(crate) struct TableBuilder<'a> {
    bytes: Vec<u8>,
    width: usize,
    mask: usize,
    seed: u64,
    pending: Vec<(u64, &'a [u8], &'a [u8], u64)>,
    /// Records placed; never more than `mask` (one slot always stays empty).
    placed: usize,
}

impl<'a> TableBuilder<'a> {
    /// An empty table for `count` records of a data region of `data_len` bytes.
    pub(crate) fn new(
        count: u64,
        data_len: u64,
        width: usize,
        seed: u64,
    ) -> Result<Self, StateError> {
        if data_len > MAX_INDEXED_DATA {
            return Err(StateError::TooLarge {
                what: "the data region of a hash-indexed image",
                len: data_len,
                max: MAX_INDEXED_DATA,
            });
        }
        let cap = capacity_for(count);
        let too_large = || StateError::TooLarge {
            what: "the hash index",
            len: cap.saturating_mul(width as u64),
            max: isize::MAX as u64,
        };
        let slots = usize::try_from(cap).map_err(|_| too_large())?;
        let len = slots
            .checked_mul(width)
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or_else(too_large)?;
        Ok(TableBuilder {
            bytes: vec![0u8; len],
            width,
            mask: slots - 1,
            seed,
            pending: Vec::with_capacity(BATCH),
            placed: 0,
        })
    }

    /// Adds the record `(key, value)` found at data offset `off`. The caller adds each key
    /// once and no more than the `count` given to [`TableBuilder::new`] (extra records are
    /// dropped once the table is full; the image writer then reports the mismatch).
    #[inline]
    pub(crate) fn insert(&mut self, key: &'a [u8], value: &'a [u8], off: u64) {
        self.pending
            .push((hash_key(self.seed, key), key, value, off));
        if self.pending.len() == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut touch = 0u8;
        for &(h, ..) in &self.pending {
            touch ^= self
                .bytes
                .get((h as usize & self.mask) * self.width)
                .copied()
                .unwrap_or(0);
        }
        std::hint::black_box(touch);
        let pending = std::mem::take(&mut self.pending);
        for &(h, key, value, off) in &pending {
            self.place(h, key, value, off);
        }
        self.pending = pending;
        self.pending.clear();
    }

    fn place(&mut self, h: u64, key: &[u8], value: &[u8], off: u64) {
        if self.placed >= self.mask {
            return;
        }
        self.placed += 1;
        let mut i = h as usize & self.mask;
        while read_u64(&self.bytes, i * self.width).unwrap_or(0) != 0 {
            i = (i + 1) & self.mask;
        }
        let at = i * self.width;
        let inline =
            key.len() <= 255 && value.len() <= 255 && key.len() + value.len() <= self.width - 8;
        let word = if inline {
            let p = at + 8;
            self.bytes[p..p + key.len()].copy_from_slice(key);
            self.bytes[p + key.len()..p + key.len() + value.len()].copy_from_slice(value);
            (h & TAG_MASK) | INLINE | key.len() as u64 | (value.len() as u64) << 8
        } else {
            (h & TAG_MASK) | (off + 1)
        };
        self.bytes[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }

    /// The table bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.flush();
        self.bytes
    }
}

/// Read access to a table (the image's bytes, or a table built in memory).
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    bytes: &'a [u8],
    width: usize,
    slots: usize,
}

impl<'a> Table<'a> {
    /// A table over `bytes` with slots of `width` bytes. An empty `bytes` is a table with no
    /// slots (every lookup misses).
    pub(crate) fn new(bytes: &'a [u8], width: usize) -> Self {
        let width = width.max(8);
        Table {
            bytes,
            width,
            slots: bytes.len() / width,
        }
    }

    /// The value of `key` (whose hash is `h`); records of pointer slots are read from `data`.
    #[inline]
    pub(crate) fn find(&self, data: &'a [u8], key: &[u8], h: u64) -> Option<&'a [u8]> {
        let n = self.slots;
        if n == 0 {
            return None;
        }
        let mask = n - 1;
        let mut i = h as usize & mask;
        for _ in 0..n {
            let at = i * self.width;
            let w = read_u64(self.bytes, at).unwrap_or(0);
            if w == 0 {
                return None;
            }
            if (w ^ h) & TAG_MASK == 0 {
                if w & INLINE != 0 {
                    let kl = (w & 0xff) as usize;
                    let vl = ((w >> 8) & 0xff) as usize;
                    let p = at + 8;
                    if self.bytes.get(p..p + kl) == Some(key) {
                        return self.bytes.get(p + kl..p + kl + vl);
                    }
                } else if let Some((k, v, _)) = parse_record(data, ((w & OFFSET_MASK) - 1) as usize)
                {
                    if k == key {
                        return Some(v);
                    }
                }
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Checks the invariants of the module documentation (not that each slot matches its
    /// record: the image checksum covers accidental damage, and a wrong slot can only make a
    /// lookup miss).
    pub(crate) fn check(&self, count: u64, data_len: u64) -> Result<(), String> {
        if !WIDTHS.contains(&self.width) || !self.bytes.len().is_multiple_of(self.width) {
            return Err(format!("hash slot width {} is not valid", self.width));
        }
        if !self.slots.is_power_of_two() || self.slots as u64 <= count {
            return Err(format!(
                "hash table of {} slots cannot hold {count} keys",
                self.slots
            ));
        }
        let mut used = 0u64;
        for slot in self.bytes.chunks_exact(self.width) {
            let w = read_u64(slot, 0).unwrap_or(0);
            if w == 0 {
                continue;
            }
            used += 1;
            if w & INLINE != 0 {
                let len = (w & 0xff) + ((w >> 8) & 0xff);
                if w & (OFFSET_MASK & !0xffff) != 0 || len > self.width as u64 - 8 {
                    return Err("an inline hash slot has invalid lengths".into());
                }
            } else if (w & OFFSET_MASK) == 0 || (w & OFFSET_MASK) > data_len {
                return Err("a hash slot points outside the data region".into());
            }
        }
        if used != count {
            return Err(format!("hash table has {used} entries for {count} records"));
        }
        Ok(())
    }
}

/// A table built in memory (for an image written without one).
pub(crate) struct OwnedTable {
    bytes: Box<[u8]>,
    width: usize,
}

impl OwnedTable {
    /// Wraps built table bytes.
    pub(crate) fn new(bytes: Vec<u8>, width: usize) -> Self {
        OwnedTable {
            bytes: bytes.into_boxed_slice(),
            width,
        }
    }

    /// Read access.
    pub(crate) fn view(&self) -> Table<'_> {
        Table::new(&self.bytes, self.width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::hash::DEFAULT_SEED;

    #[test]
    fn capacity() {
        assert_eq!(capacity_for(0), 8);
        assert!(capacity_for(10_000_000) > 10_000_000 * 4 / 3);
        assert!(capacity_for(10_000_000).is_power_of_two());
    }

    #[test]
    fn widths() {
        let mut c = WidthChooser::default();
        assert_eq!(c.width(), 8);
        for _ in 0..100 {
            c.add(8, 16);
        }
        assert_eq!(c.width(), 32);
        for _ in 0..20 {
            c.add(8, 300);
        }
        assert_eq!(c.width(), 8, "less than 90% fit");
        let mut c = WidthChooser::default();
        c.add(4, 4);
        assert_eq!(c.width(), 16);
    }

    #[test]
    fn inline_and_pointer_slots() {
        // Data region with one record for the pointer slot.
        let big = vec![7u8; 40];
        let mut data = Vec::new();
        data.extend_from_slice(&3u32.to_le_bytes());
        data.extend_from_slice(&40u32.to_le_bytes());
        data.extend_from_slice(b"big");
        data.extend_from_slice(&big);
        let mut b = TableBuilder::new(2, data.len() as u64, 32, DEFAULT_SEED).unwrap();
        b.insert(b"big", &big, 0);
        b.insert(b"small", b"value", 999);
        let bytes = b.finish();
        let t = Table::new(&bytes, 32);
        t.check(2, data.len() as u64).unwrap();
        let f = |k: &[u8]| t.find(&data, k, hash_key(DEFAULT_SEED, k));
        assert_eq!(f(b"big"), Some(&big[..]));
        assert_eq!(f(b"small"), Some(&b"value"[..]));
        assert_eq!(f(b"none"), None);
        assert!(t.check(3, data.len() as u64).is_err());
    }
}
