//! The state image: the one byte format of state snapshots and of memory-mapped state files.
//!
//! Both stores write it (`StateStore::snapshot_to`), both read it (`restore`), and
//! [`MmapStore`](super::MmapStore) maps it as its base. Layout (all integers little-endian):
//!
//! ```text
//! [header 32 B]  magic "LMNSTATE", version u32 = 1, 20 reserved zero bytes
//! [data]         records sorted by key, strictly increasing: [klen u32][vlen u32][key][value]
//! [zero padding] up to the next multiple of 64 (file offset)
//! [index]        rkyv archive of `IndexLayout`: `slots` first, so that it starts 64-byte
//!                aligned (a 32- or 64-byte slot never straddles cache lines): the hash table
//!                of `index.rs`, empty when the image was written without one; `sparse`, the
//!                data offset of every 16th record, for ordered seeks; seed, count, data
//!                length, sparse interval, slot width
//! [trailer 24 B] data_len u64, index_len u64, masked crc32c u32 of every byte before it, "LSTE"
//! ```
//!
//! Invariants of a validated image (checked once by [`validate`], which callers must pass
//! before building an [`ImageView`]): the checksum matches; the lengths add up to the file
//! length exactly; the index archive passes rkyv's bytecheck; records tile the data region
//! exactly, keys strictly increase, `count` and the sparse offsets agree with the records; a
//! hash table satisfies the invariants of `index.rs`.
//!
//! After validation, reads never re-check the checksum, but every access still goes through
//! bounds-checked slicing: a file that passes the checksum yet was written by a faulty writer
//! can at worst make a lookup miss or return a wrong value; it can never panic or read outside
//! the mapping.
//!
//! Limits: keys and values up to 4 GiB - 1 each; the index archive below 2 GiB (rkyv's 32-bit
//! relative pointers: about 60M keys with 32-byte slots, more with narrower ones); data up to
//! 512 GiB when hash-indexed.

use std::io::{self, Write};
use std::ops::{Bound, Range};
use std::path::Path;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::error::StateError;
use super::hash::{hash_key, DEFAULT_SEED};
use super::index::{OwnedTable, Table, TableBuilder, WidthChooser};

const MAGIC: [u8; 8] = *b"LMNSTATE";
const END_MAGIC: [u8; 4] = *b"LSTE";
/// Format version written and read by this build.
pub(crate) const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
const TRAILER_LEN: usize = 24;
/// Alignment of image buffers in memory (the rkyv archive needs 8).
pub(crate) const ALIGN: usize = 16;
/// Alignment of the index archive inside the image (file offset).
const INDEX_ALIGN: u64 = 64;
/// Every `SPARSE_INTERVAL`-th record's offset is kept for ordered seeks.
const SPARSE_INTERVAL: u32 = 16;
const RECORD_HEADER: usize = 8;
/// The largest key or value the format can hold.
pub(crate) const MAX_ITEM: u64 = u32::MAX as u64;
/// Writer buffer: records are small, so they are gathered before the checksum and the write.
const WRITE_BUF: usize = 256 * 1024;

/// The part of the image archived with rkyv (validated with bytecheck at open). `slots` comes
/// first: rkyv writes the fields' out-of-line data in declaration order, so the table starts
/// where the archive starts.
#[derive(rkyv::Archive, rkyv::Serialize)]
pub(crate) struct IndexLayout {
    slots: Vec<u8>,
    sparse: Vec<u64>,
    seed: u64,
    count: u64,
    data_len: u64,
    interval: u32,
    slot_width: u32,
}

/// RocksDB-style CRC mask: a CRC stored next to data that contains CRCs stays meaningful.
pub(crate) fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// File offset of the index for a data region of `data_len` bytes.
fn index_start(data_len: u64) -> Option<u64> {
    (HEADER_LEN as u64)
        .checked_add(data_len)?
        .checked_add(INDEX_ALIGN - 1)
        .map(|x| x / INDEX_ALIGN * INDEX_ALIGN)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(<[u8; 4]>::try_from(s).ok()?))
}

/// The little-endian `u64` at byte `at` of `b`, if in bounds.
#[inline]
pub(crate) fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(s).ok()?))
}

/// Parses the record at `off` of `data`: `(key, value, offset of the next record)`.
#[inline]
pub(crate) fn parse_record(data: &[u8], off: usize) -> Option<(&[u8], &[u8], usize)> {
    let klen = read_u32(data, off)? as usize;
    let vlen = read_u32(data, off.checked_add(4)?)? as usize;
    let ks = off.checked_add(RECORD_HEADER)?;
    let ke = ks.checked_add(klen)?;
    let ve = ke.checked_add(vlen)?;
    Some((data.get(ks..ke)?, data.get(ke..ve)?, ve))
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Sizes, sparse offsets and the hash table, computed in passes over the records.
struct Plan {
    count: u64,
    data_len: u64,
    sparse: Vec<u64>,
    slots: Vec<u8>,
    slot_width: usize,
}

fn plan<'a, I, F>(records: &F, with_index: bool) -> Result<Plan, StateError>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut count = 0u64;
    let mut off = 0u64;
    let mut sparse = Vec::new();
    let mut prev: Option<&[u8]> = None;
    let mut widths = WidthChooser::default();
    for (k, v) in records() {
        for (what, len) in [("a key", k.len()), ("a value", v.len())] {
            if len as u64 > MAX_ITEM {
                return Err(StateError::TooLarge {
                    what,
                    len: len as u64,
                    max: MAX_ITEM,
                });
            }
        }
        if let Some(p) = prev {
            if p >= k {
                return Err(StateError::Unsorted(format!(
                    "record {count} has key {:?} after {:?}",
                    Preview(k),
                    Preview(p)
                )));
            }
        }
        prev = Some(k);
        if count.is_multiple_of(u64::from(SPARSE_INTERVAL)) {
            sparse.push(off);
        }
        widths.add(k.len(), v.len());
        count += 1;
        off += (RECORD_HEADER + k.len() + v.len()) as u64;
    }
    let (mut slots, mut slot_width) = (Vec::new(), 0);
    if with_index {
        slot_width = widths.width();
        let mut table = TableBuilder::new(count, off, slot_width, DEFAULT_SEED)?;
        let mut off = 0u64;
        for (k, v) in records() {
            table.insert(k, v, off);
            off += (RECORD_HEADER + k.len() + v.len()) as u64;
        }
        slots = table.finish();
    }
    Ok(Plan {
        count,
        data_len: off,
        sparse,
        slots,
        slot_width,
    })
}

/// Shows the first bytes of a key in an error message.
struct Preview<'a>(&'a [u8]);

impl std::fmt::Debug for Preview<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len().min(16);
        write!(f, "{:02x?}", &self.0[..n])?;
        if self.0.len() > n {
            write!(f, "..({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// Buffers writes, computes the running crc32c, and keeps the first I/O error (rkyv's writer
/// boxes errors, which would lose "disk full").
struct CrcWriter<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
    crc: u32,
    written: u64,
    error: Option<io::Error>,
}

impl<'w> CrcWriter<'w> {
    fn new(out: &'w mut dyn Write) -> Self {
        CrcWriter {
            out,
            buf: Vec::with_capacity(WRITE_BUF),
            crc: 0,
            written: 0,
            error: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > WRITE_BUF {
            self.drain()?;
            if bytes.len() >= WRITE_BUF {
                self.crc = crc32c::crc32c_append(self.crc, bytes);
                self.out.write_all(bytes)?;
                self.written += bytes.len() as u64;
                return Ok(());
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn pos(&self) -> u64 {
        self.written + self.buf.len() as u64
    }
}

impl Write for CrcWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.put(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(e) => {
                let kind = e.kind();
                self.error.get_or_insert(e);
                Err(io::Error::from(kind))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes an image of `records` (called up to three times: each call must yield the same
/// records, in strictly increasing key order) to `out`. With `with_index`, the image carries
/// the hash index that [`MmapStore`](super::MmapStore) needs for point lookups; without, it is
/// smaller and cheaper to write. Returns the number of bytes written. `path` only labels
/// errors.
pub(crate) fn encode<'a, I, F>(
    records: F,
    with_index: bool,
    out: &mut dyn Write,
    path: Option<&Path>,
) -> Result<u64, StateError>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let plan = plan(&records, with_index)?;
    let mut w = CrcWriter::new(out);
    let res = write_planned(&records, plan, &mut w);
    match (res, w.error.take()) {
        (Ok(n), _) => Ok(n),
        (Err(_), Some(io)) => Err(StateError::io(path, "write", io)),
        (Err(e), None) => Err(e),
    }
}

fn write_planned<'a, I, F>(
    records: &F,
    plan: Plan,
    w: &mut CrcWriter<'_>,
) -> Result<u64, StateError>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let io = |e: io::Error| StateError::io(None, "write", e);
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    w.put(&header).map_err(io)?;
    let mut count = 0u64;
    for (k, v) in records() {
        // Lengths were checked against MAX_ITEM by `plan`.
        w.put(&(k.len() as u32).to_le_bytes()).map_err(io)?;
        w.put(&(v.len() as u32).to_le_bytes()).map_err(io)?;
        w.put(k).map_err(io)?;
        w.put(v).map_err(io)?;
        count += 1;
    }
    let data_end = w.pos();
    if count != plan.count || data_end != HEADER_LEN as u64 + plan.data_len {
        return Err(StateError::Unsorted(
            "the records changed between the passes of the image writer".into(),
        ));
    }
    let pad = index_start(plan.data_len).unwrap_or(data_end) - data_end;
    w.put(&[0u8; INDEX_ALIGN as usize][..pad as usize])
        .map_err(io)?;
    let index_start = w.pos();
    let layout = IndexLayout {
        slots: plan.slots,
        sparse: plan.sparse,
        seed: DEFAULT_SEED,
        count: plan.count,
        data_len: plan.data_len,
        interval: SPARSE_INTERVAL,
        slot_width: plan.slot_width as u32,
    };
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(
        &layout,
        rkyv::ser::writer::IoWriter::new(&mut *w),
    )
    // With no I/O error stored (the caller checks that first), rkyv fails only when a relative
    // pointer does not fit its 32 bits.
    .map_err(|_| StateError::TooLarge {
        what: "the index of the state image (rkyv 32-bit offsets)",
        len: (layout.slots.len() + layout.sparse.len() * 8) as u64,
        max: i32::MAX as u64,
    })?;
    let index_len = w.pos() - index_start;
    w.put(&plan.data_len.to_le_bytes()).map_err(io)?;
    w.put(&index_len.to_le_bytes()).map_err(io)?;
    w.drain().map_err(io)?;
    let mut tail = [0u8; 8];
    tail[..4].copy_from_slice(&mask_crc(w.crc).to_le_bytes());
    tail[4..].copy_from_slice(&END_MAGIC);
    w.out.write_all(&tail).map_err(io)?;
    Ok(w.written + tail.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// Validation

/// Where the parts of a validated image lie (byte ranges into the image buffer).
#[derive(Clone, Debug)]
pub(crate) struct ImageMeta {
    /// Number of records.
    pub(crate) count: u64,
    data: Range<usize>,
    sparse: Range<usize>,
    slots: Range<usize>,
    slot_width: usize,
    seed: u64,
    interval: usize,
}

impl ImageMeta {
    /// Whether the image carries a hash index.
    pub(crate) fn has_index(&self) -> bool {
        !self.slots.is_empty()
    }
}

/// An image buffer aligned for validation: borrowed when `bytes` already is, else copied.
pub(crate) enum AlignedBytes<'a> {
    /// The caller's buffer.
    Borrowed(&'a [u8]),
    /// A 16-byte aligned copy.
    Owned(AlignedVec<ALIGN>),
}

impl AlignedBytes<'_> {
    /// Borrows `bytes` if it starts on a 16-byte boundary, else copies it.
    pub(crate) fn new(bytes: &[u8]) -> AlignedBytes<'_> {
        if (bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            AlignedBytes::Borrowed(bytes)
        } else {
            let mut v = AlignedVec::<ALIGN>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            AlignedBytes::Owned(v)
        }
    }

    /// The aligned bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            AlignedBytes::Borrowed(b) => b,
            AlignedBytes::Owned(v) => v.as_slice(),
        }
    }
}

/// Checks everything listed in the module invariants. `bytes` must start on a 16-byte boundary
/// (a memory map does; use [`AlignedBytes`] otherwise). `path` labels errors.
pub(crate) fn validate(bytes: &[u8], path: Option<&Path>) -> Result<ImageMeta, StateError> {
    let bad = |reason: String| StateError::corrupt(path, reason);
    let len = bytes.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(bad(format!(
            "it is {len} bytes, shorter than the smallest state image ({} bytes): truncated or \
             not a laminar state file",
            HEADER_LEN + TRAILER_LEN
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(bad(
            "it does not start with the state image magic 'LMNSTATE': not a laminar \
                        state file"
                .into(),
        ));
    }
    let version = read_u32(bytes, 8).unwrap_or(0);
    if version != VERSION {
        return Err(bad(format!(
            "it has format version {version}, this build reads version {VERSION}"
        )));
    }
    if bytes[12..HEADER_LEN].iter().any(|&b| b != 0) {
        return Err(bad("reserved header bytes are not zero".into()));
    }
    let t = len - TRAILER_LEN;
    if bytes[len - 4..] != END_MAGIC {
        return Err(bad(
            "the end marker is missing: the file is truncated or was not completely \
                        written"
                .into(),
        ));
    }
    let stored = read_u32(bytes, t + 16).unwrap_or(0);
    let computed = mask_crc(crc32c::crc32c(&bytes[..t + 16]));
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file was \
             damaged"
        )));
    }
    let data_len = read_u64(bytes, t).unwrap_or(u64::MAX);
    let index_len = read_u64(bytes, t + 8).unwrap_or(u64::MAX);
    let index_start = index_start(data_len);
    let total = index_start
        .and_then(|s| s.checked_add(index_len))
        .and_then(|s| s.checked_add(TRAILER_LEN as u64));
    if total != Some(len as u64) {
        return Err(bad(format!(
            "lengths do not add up (data {data_len}, index {index_len}, file {len})"
        )));
    }
    // Both fit in `len` (checked just above).
    let index_start = index_start.unwrap_or(0) as usize;
    let data = HEADER_LEN..HEADER_LEN + data_len as usize;
    if bytes[data.end..index_start].iter().any(|&b| b != 0) {
        return Err(bad("padding after the records is not zero".into()));
    }
    if !(bytes.as_ptr() as usize + index_start).is_multiple_of(ALIGN) {
        return Err(bad("internal: image buffer is not 16-byte aligned".into()));
    }
    let index_bytes = &bytes[index_start..t];
    let index = rkyv::access::<ArchivedIndexLayout, rancor::Error>(index_bytes)
        .map_err(|e| bad(format!("the index archive is invalid: {e}")))?;
    let count = index.count.to_native();
    let interval = index.interval.to_native();
    if index.data_len.to_native() != data_len {
        return Err(bad(
            "the index and the trailer disagree on the data length".into()
        ));
    }
    if interval == 0 {
        return Err(bad("sparse interval is zero".into()));
    }
    if index.sparse.len() as u64 != count.div_ceil(u64::from(interval)) {
        return Err(bad(format!(
            "sparse index has {} entries, {count} records need {}",
            index.sparse.len(),
            count.div_ceil(u64::from(interval))
        )));
    }
    let base = bytes.as_ptr() as usize;
    let range_of = |ptr: *const u8, n: usize| -> Result<Range<usize>, StateError> {
        let s = (ptr as usize)
            .checked_sub(base)
            .filter(|s| s.checked_add(n).is_some_and(|e| e <= len))
            .ok_or_else(|| bad("index vectors lie outside the image".into()))?;
        Ok(s..s + n)
    };
    let sparse = range_of(index.sparse.as_ptr().cast(), index.sparse.len() * 8)?;
    let slots = range_of(index.slots.as_ptr(), index.slots.len())?;
    let meta = ImageMeta {
        count,
        data,
        sparse,
        slots,
        slot_width: index.slot_width.to_native() as usize,
        seed: index.seed.to_native(),
        interval: interval as usize,
    };
    check_records(bytes, &meta).map_err(&bad)?;
    if meta.has_index() {
        Table::new(&bytes[meta.slots.clone()], meta.slot_width)
            .check(count, data_len)
            .map_err(&bad)?;
    }
    Ok(meta)
}

/// Records tile the data region, keys strictly increase, count and sparse offsets agree.
fn check_records(bytes: &[u8], meta: &ImageMeta) -> Result<(), String> {
    let data = &bytes[meta.data.clone()];
    let sparse = &bytes[meta.sparse.clone()];
    let mut off = 0usize;
    let mut i = 0u64;
    let mut prev: Option<&[u8]> = None;
    while off < data.len() {
        let (k, _, next) = parse_record(data, off)
            .ok_or_else(|| format!("record {i} at data offset {off} runs past the data region"))?;
        if prev.is_some_and(|p| p >= k) {
            return Err(format!("record {i} is out of key order"));
        }
        if i.is_multiple_of(meta.interval as u64) {
            let want = read_u64(sparse, (i / meta.interval as u64) as usize * 8);
            if want != Some(off as u64) {
                return Err(format!("sparse index entry for record {i} is wrong"));
            }
        }
        prev = Some(k);
        i += 1;
        off = next;
    }
    if i != meta.count {
        return Err(format!("found {i} records, the index says {}", meta.count));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Read access to a validated image. Cheap to build (a few slices), so stores build one per
/// call instead of holding a self-referential borrow of their buffer.
#[derive(Clone, Copy)]
pub(crate) struct ImageView<'a> {
    data: &'a [u8],
    sparse: &'a [u8],
    table: Option<Table<'a>>,
    seed: u64,
    interval: usize,
    count: u64,
}

impl<'a> ImageView<'a> {
    /// A view of `bytes`, which [`validate`] accepted and returned `meta` for. `owned` replaces
    /// a missing hash index.
    #[inline]
    pub(crate) fn new(bytes: &'a [u8], meta: &ImageMeta, owned: Option<&'a OwnedTable>) -> Self {
        let slice = |r: &Range<usize>| bytes.get(r.clone()).unwrap_or(&[]);
        let table = match owned {
            Some(t) => Some(t.view()),
            None if meta.has_index() => Some(Table::new(slice(&meta.slots), meta.slot_width)),
            None => None,
        };
        ImageView {
            data: slice(&meta.data),
            sparse: slice(&meta.sparse),
            table,
            seed: meta.seed,
            interval: meta.interval,
            count: meta.count,
        }
    }

    /// The seed of this image's key hash.
    #[inline]
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// The value stored under `key`.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        match self.table {
            Some(t) => t.find(self.data, key, hash_key(self.seed, key)),
            None => self.get_sorted(key),
        }
    }

    /// [`get`](Self::get) with `hash == hash_key(self.seed(), key)` already computed.
    #[inline]
    pub(crate) fn get_hashed(&self, key: &[u8], hash: u64) -> Option<&'a [u8]> {
        match self.table {
            Some(t) => t.find(self.data, key, hash),
            None => self.get_sorted(key),
        }
    }

    /// Point lookup through the sparse index (images without a hash table).
    fn get_sorted(&self, key: &[u8]) -> Option<&'a [u8]> {
        let off = self.seek(Bound::Included(key));
        match parse_record(self.data, off) {
            Some((k, v, _)) if k == key => Some(v),
            _ => None,
        }
    }

    /// Data offset of the first record whose key satisfies `start` (`data.len()` if none).
    pub(crate) fn seek(&self, start: Bound<&[u8]>) -> usize {
        let (target, inclusive) = match start {
            Bound::Unbounded => return 0,
            Bound::Included(k) => (k, true),
            Bound::Excluded(k) => (k, false),
        };
        let before = |k: &[u8]| if inclusive { k < target } else { k <= target };
        let blocks = self.sparse.len() / 8;
        let block_start = |b: usize| read_u64(self.sparse, b * 8).unwrap_or(u64::MAX) as usize;
        // First block whose first record is not before the start.
        let (mut lo, mut hi) = (0usize, blocks);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match parse_record(self.data, block_start(mid)) {
                Some((k, _, _)) if before(k) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let mut off = if lo == 0 { 0 } else { block_start(lo - 1) };
        // At most one block of records to walk.
        for _ in 0..=self.interval {
            match parse_record(self.data, off) {
                Some((k, _, next)) if before(k) => off = next,
                Some(_) => return off,
                None => return self.data.len(),
            }
        }
        off.min(self.data.len())
    }

    /// Records with keys in `(start, end)`, in key order.
    pub(crate) fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Records<'a> {
        let from = self.seek(start);
        let to = match end {
            Bound::Unbounded => self.data.len(),
            Bound::Included(k) => self.seek(Bound::Excluded(k)),
            Bound::Excluded(k) => self.seek(Bound::Included(k)),
        };
        Records {
            data: self.data,
            off: from,
            end: to.max(from),
        }
    }

    /// All records, in key order.
    pub(crate) fn records(&self) -> Records<'a> {
        Records {
            data: self.data,
            off: 0,
            end: self.data.len(),
        }
    }

    /// A hash table for this image (for images written without one).
    pub(crate) fn build_table(&self) -> Result<OwnedTable, StateError> {
        let mut widths = WidthChooser::default();
        for (k, v) in self.records() {
            widths.add(k.len(), v.len());
        }
        let width = widths.width();
        let mut table = TableBuilder::new(self.count, self.data.len() as u64, width, self.seed)?;
        let mut it = self.records();
        while let Some((off, k, v)) = it.next_entry() {
            table.insert(k, v, off as u64);
        }
        Ok(OwnedTable::new(table.finish(), width))
    }
}

/// Iterator over consecutive records of an image, in key order.
#[derive(Clone)]
pub(crate) struct Records<'a> {
    data: &'a [u8],
    off: usize,
    end: usize,
}

impl<'a> Records<'a> {
    /// Next record with its data offset.
    #[inline]
    fn next_entry(&mut self) -> Option<(usize, &'a [u8], &'a [u8])> {
        if self.off >= self.end {
            return None;
        }
        let off = self.off;
        match parse_record(self.data, off) {
            Some((k, v, next)) => {
                self.off = next;
                Some((off, k, v))
            }
            None => {
                self.off = self.end;
                None
            }
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().map(|(_, k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pairs: &[(&[u8], &[u8])], with_index: bool) -> AlignedVec<ALIGN> {
        let mut out = Vec::new();
        encode(|| pairs.iter().copied(), with_index, &mut out, None).unwrap();
        let mut v = AlignedVec::<ALIGN>::new();
        v.extend_from_slice(&out);
        v
    }

    #[test]
    fn round_trip_both_kinds() {
        let keys: Vec<[u8; 8]> = (0u64..1000).map(|i| (i * 3).to_be_bytes()).collect();
        let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &k[4..])).collect();
        for with_index in [false, true] {
            let img = image(&pairs, with_index);
            let meta = validate(&img, None).unwrap();
            assert_eq!(meta.has_index(), with_index);
            if with_index {
                assert_eq!(
                    meta.slots.start % INDEX_ALIGN as usize,
                    0,
                    "table 64-byte aligned"
                );
                assert_eq!(
                    meta.slot_width, 32,
                    "8-byte keys, 4-byte values: 32-byte slots"
                );
            }
            let view = ImageView::new(&img, &meta, None);
            for (k, v) in &pairs {
                assert_eq!(view.get(k), Some(*v));
            }
            assert_eq!(view.get(&1u64.to_be_bytes()), None);
            assert_eq!(view.records().count(), 1000);
            let from = 30u64.to_be_bytes();
            let to = 60u64.to_be_bytes();
            let got: Vec<_> = view
                .range(Bound::Excluded(&from), Bound::Included(&to))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(got.len(), 10);
        }
    }

    #[test]
    fn unsorted_rejected() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"b", b""), (b"a", b"")];
        let err = encode(|| pairs.iter().copied(), true, &mut Vec::new(), None).unwrap_err();
        assert!(matches!(err, StateError::Unsorted(_)));
    }
}
