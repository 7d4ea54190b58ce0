//! `IntervalJoin`: the stream-stream interval join (`left.join(right, on=..., within=(lo, hi))`).
//!
//! A left row `l` and a right row `r` match when their keys are equal and non-null and
//! `l.t + lo <= r.t <= l.t + hi`. Contract: `docs/SEMANTICS.md`, section "Interval join".
//!
//! # State
//! Each side keeps the batches it received, whole: the on-time rows of an input batch form one
//! stored batch (rows are never copied out one by one). Beside each stored batch lies one
//! array of per-row bookkeeping (`RowMeta`: time, key entry, chain links, matched bit), kept
//! together so that visiting a stored row touches one cache line.
//!
//! Both sides share one hash index from key to a dense *entry* id. An entry holds, per side,
//! the head of a doubly-linked chain through the stored rows of that key. Keys are either one
//! integer column (folded to `i64` and kept in the table itself: one probe per row, nothing
//! allocated per row) or anything else encoded with Arrow's row format (one encoding per
//! batch; an entry keeps its key bytes in a buffer that is reused when its id is recycled).
//! Right keys whose type differs from the left key's are cast to it first.
//!
//! # Per batch (port 0: left, port 1: right)
//! 1. Rows with `t < W - L` (`W` the watermark in force, `L` the allowed lateness) are late:
//!    counted, and dropped or sent to the late output shaped like unmatched rows of their side.
//! 2. The remaining rows are stored, and in three tight passes (so that the cache misses of
//!    many rows overlap): each row's entry is found or created (the only probe), the row is
//!    linked into its side's chain, and the other side's chain is walked for partners within
//!    the time bounds (setting matched bits for outer joins).
//! 3. All matches of the batch become one output batch: the arriving side's columns with
//!    `take`, the stored side's with `interleave` over the stored batches involved.
//!
//! Rows with a null key never match; outer sides emit them unmatched at once (no match is
//! possible, so "when no match is possible any more" is now), and they are not held.
//!
//! # Eviction (`on_watermark(W)`)
//! A left row can match no row to come once `l.t + hi < W - L` (later rows have
//! `r.t >= W - L`); a right row once `r.t - lo < W - L`. Each side keeps a heap of its stored
//! batches by the time of their oldest live row. A watermark pops the batches holding expired
//! rows and expires exactly those rows: all of a batch in storage order when it expires whole,
//! else by scanning it, and, for a batch expired bit by bit more than twice, by walking it in
//! time order (sorted once, then). An expired row is unlinked; an entry whose chains both
//! become empty leaves the table (in one loop after the batch walk), so the index only holds
//! live keys; unmatched rows of outer sides are collected and emitted as one batch per side.
//! A stored batch is dropped when its last live row is gone. Each row is expired exactly once,
//! so each unmatched row is emitted exactly once, and never while a match is still possible.
//! At end of input the watermark is `i64::MAX`, which expires everything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    new_null_array, Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_cast::{can_cast_types, cast};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::filter::filter_record_batch;
use arrow_select::interleave::interleave;
use arrow_select::take::take;
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::keys::{is_key_type, key_type_error, value_type};
use super::snapshot::{decode, encode, same_column_types, SavedBatches};
use super::window::MAX_SPAN_MS;
use super::window_aggregate::LatePolicy;
use super::{metrics_from_array, metrics_to_array, Operator, OperatorContext, OperatorMetrics};
use crate::engine::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Which unmatched rows an interval join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinKind {
    /// Matches only.
    #[default]
    Inner,
    /// Matches, and left rows without a match (nulls for the right columns).
    Left,
    /// Matches, and right rows without a match (nulls for the left columns).
    Right,
    /// Matches, and unmatched rows of both sides.
    Full,
}

impl JoinKind {
    fn left_outer(self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }

    fn right_outer(self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }
}

/// Everything an interval join is built from.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Stream schema of the left input (user columns, then [`TIME_COLUMN`]).
    pub left: SchemaRef,
    /// Stream schema of the right input.
    pub right: SchemaRef,
    /// Key columns, same names on both sides; at least one.
    pub on: Vec<String>,
    /// Lower bound of `r.t - l.t` in ms (inclusive).
    pub lower_ms: i64,
    /// Upper bound of `r.t - l.t` in ms (inclusive).
    pub upper_ms: i64,
    /// Inner or outer.
    pub how: JoinKind,
    /// Allowed lateness in ms.
    pub lateness_ms: i64,
    /// What happens to late rows.
    pub late: LatePolicy,
}

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// A stored row: `(slot << 32) | row`. [`NIL`] ends a chain.
type RowRef = u64;
const NIL: RowRef = u64::MAX;
/// Entry id of a stored row that is not (or no longer) held: null key, or expired.
const NO_ENTRY: u32 = u32::MAX;

#[inline]
fn pack(slot: u32, row: u32) -> RowRef {
    (u64::from(slot) << 32) | u64::from(row)
}

#[inline]
fn slot_of(r: RowRef) -> usize {
    (r >> 32) as usize
}

#[inline]
fn row_of(r: RowRef) -> usize {
    (r & 0xffff_ffff) as usize
}

/// Bookkeeping of one stored row, kept together so that walking a chain touches one cache
/// line per row.
#[derive(Clone, Copy)]
struct RowMeta {
    /// Event time (a copy of the batch's time column).
    time: i64,
    prev: RowRef,
    next: RowRef,
    /// Key entry; [`NO_ENTRY`] once the row is not held.
    entry: u32,
    /// Has had a partner (only maintained for outer sides).
    matched: bool,
}

/// One stored input batch of a side and its per-row bookkeeping.
struct Stored {
    batch: RecordBatch,
    rows: Vec<RowMeta>,
    /// Largest time of the batch.
    max_time: i64,
    /// A lower bound of the times of the live rows (the heap key while `order` is `None`).
    min_live: i64,
    /// Row numbers in ascending time order, computed when the batch is expired bit by bit
    /// for the third time (expiring a whole batch, or scanning it twice, needs no order).
    order: Option<Vec<u32>>,
    /// How many rows of `order` have been passed.
    cursor: usize,
    /// Partial expiries done by scanning the whole batch.
    scans: u8,
    /// Rows still held.
    live: usize,
}

impl Stored {
    /// Heap key: no live row is older.
    fn heap_key(&self) -> i64 {
        match &self.order {
            Some(o) if self.cursor < o.len() => self.rows[o[self.cursor] as usize].time,
            Some(_) => self.max_time,
            None => self.min_live,
        }
    }
}

/// One input of the join and its stored rows.
struct Side {
    time_index: usize,
    /// Key column indices in this side's schema, in `on` order.
    keys: Vec<usize>,
    /// Type each key column is cast to before hashing (right keys whose type differs from
    /// the left key's).
    key_casts: Vec<Option<DataType>>,
    /// Whether unmatched rows of this side are emitted.
    outer: bool,
    slots: Vec<Option<Stored>>,
    free_slots: Vec<u32>,
    /// Stored batches by [`Stored::heap_key`].
    heap: BinaryHeap<Reverse<(i64, u32)>>,
    /// Rows held.
    live: usize,
}

impl Side {
    #[inline]
    fn stored(&self, slot: usize) -> &Stored {
        self.slots[slot].as_ref().expect("live slot")
    }

    #[inline]
    fn stored_mut(&mut self, slot: usize) -> &mut Stored {
        self.slots[slot].as_mut().expect("live slot")
    }

    #[inline]
    fn meta_mut(&mut self, r: RowRef) -> &mut RowMeta {
        &mut self.stored_mut(slot_of(r)).rows[row_of(r)]
    }

    fn reserve_slot(&mut self) -> Result<u32> {
        if let Some(s) = self.free_slots.pop() {
            return Ok(s);
        }
        let s = u32::try_from(self.slots.len())
            .ok()
            .filter(|&s| s < u32::MAX)
            .ok_or_else(|| Error::Overflow("more than 4 billion join batches held".into()))?;
        self.slots.push(None);
        Ok(s)
    }

    /// Drops a stored batch; returns its row bookkeeping buffer for reuse.
    fn release_slot(&mut self, slot: u32) -> Option<Vec<RowMeta>> {
        self.free_slots.push(slot);
        self.slots[slot as usize].take().map(|st| st.rows)
    }
}

/// How keys are hashed and compared.
enum KeyCodec {
    /// One integer-like key column, folded to `i64` (kept in the hash table itself).
    Int,
    /// Anything else, in Arrow's row format (bytes kept per entry).
    Rows(RowConverter),
}

/// The keys of one batch, encoded.
enum BatchKeys {
    Int(Int64Array),
    Rows(Rows),
}

/// Per key entry: the heads of both sides' chains, and the key's hash.
#[derive(Clone, Copy)]
struct EntryData {
    heads: [RowRef; 2],
    hash: u64,
}

/// Key -> entry id, and per entry the heads of both sides' chains.
struct Index {
    codec: KeyCodec,
    hasher: DefaultHashBuilder,
    /// `(key, entry)` for int keys; `(0, entry)` for row keys (compared through `bytes`).
    table: HashTable<(i64, u32)>,
    entries: Vec<EntryData>,
    bytes: Vec<Vec<u8>>,
    free: Vec<u32>,
    /// Entries whose chains became empty during an expiry, to remove from the table.
    emptied: Vec<u32>,
}

impl Index {
    fn new(codec: KeyCodec) -> Self {
        Index {
            codec,
            hasher: DefaultHashBuilder::default(),
            table: HashTable::new(),
            entries: Vec::new(),
            bytes: Vec::new(),
            free: Vec::new(),
            emptied: Vec::new(),
        }
    }

    /// A fresh entry id with hash `h` and empty chains (its key is set by the caller).
    #[inline]
    fn allocate(entries: &mut Vec<EntryData>, free: &mut Vec<u32>, h: u64) -> u32 {
        let data = EntryData {
            heads: [NIL, NIL],
            hash: h,
        };
        match free.pop() {
            Some(e) => {
                entries[e as usize] = data;
                e
            }
            None => {
                // `ensure_capacity` guarantees this fits below NO_ENTRY.
                entries.push(data);
                (entries.len() - 1) as u32
            }
        }
    }

    /// Fails unless `n` more entries can be created.
    fn ensure_capacity(&self, n: usize) -> Result<()> {
        if self.entries.len().saturating_add(n) >= NO_ENTRY as usize {
            return Err(Error::Overflow(
                "more than 4 billion distinct join keys held at once".into(),
            ));
        }
        Ok(())
    }

    #[inline]
    fn entry_int(&mut self, k: i64) -> u32 {
        let Index {
            hasher,
            table,
            entries,
            free,
            ..
        } = self;
        let h = hasher.hash_one(k);
        match table.entry(h, |&(key, _)| key == k, |&(key, _)| hasher.hash_one(key)) {
            Entry::Occupied(o) => o.get().1,
            Entry::Vacant(v) => {
                let e = Self::allocate(entries, free, h);
                v.insert((k, e));
                e
            }
        }
    }

    #[inline]
    fn entry_bytes(&mut self, k: &[u8]) -> u32 {
        let Index {
            hasher,
            table,
            entries,
            bytes,
            free,
            ..
        } = self;
        let h = hasher.hash_one(k);
        match table.entry(
            h,
            |&(_, e)| bytes[e as usize].as_slice() == k,
            |&(_, e)| entries[e as usize].hash,
        ) {
            Entry::Occupied(o) => o.get().1,
            Entry::Vacant(v) => {
                let e = Self::allocate(entries, free, h);
                if e as usize >= bytes.len() {
                    bytes.resize_with(e as usize + 1, Vec::new);
                }
                let b = &mut bytes[e as usize];
                b.clear();
                b.extend_from_slice(k);
                v.insert((0, e));
                e
            }
        }
    }

    /// Removes the entries noted in `emptied` (both chains empty) from the table and recycles
    /// their ids. Done in one tight loop after the rows are unlinked, so that the table
    /// probes of many keys overlap.
    fn release_emptied(&mut self) {
        for &e in &self.emptied {
            let h = self.entries[e as usize].hash;
            if let Ok(o) = self.table.find_entry(h, |&(_, x)| x == e) {
                o.remove();
            }
        }
        self.free.extend_from_slice(&self.emptied);
        self.emptied.clear();
    }

    /// Frees everything when no row is held, and gives memory back after a burst of keys.
    fn shrink(&mut self, rows_held: usize) {
        if rows_held == 0 {
            self.table.clear();
            self.entries.clear();
            self.free.clear();
        }
        let (len, cap) = (self.table.len(), self.table.capacity());
        if cap > 4096 && len.saturating_mul(4) < cap {
            let entries = &self.entries;
            self.table
                .shrink_to(len.saturating_mul(2), |&(_, e)| entries[e as usize].hash);
        }
    }
}

/// The checkpoint form of an [`IntervalJoin`]: both sides' stored batches with their row
/// bookkeeping, the key entries (chain heads and keys) and the counters. The hash table, the
/// entries' hashes and the eviction heaps are rebuilt on restore (the heap holds exactly one
/// `(heap key, slot)` per stored batch); row times are read back from the batches.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct IntervalJoinState {
    left: SideState,
    right: SideState,
    /// Chain heads (left, right) of every entry id.
    heads: Vec<[u64; 2]>,
    /// The key of every entry id (a default for free ids).
    keys: KeysState,
    /// Free entry ids, in reuse order.
    free: Vec<u32>,
    metrics: [u64; 7],
}

/// Entry keys in a checkpoint.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum KeysState {
    /// [`KeyCodec::Int`]: the folded key.
    Int(Vec<i64>),
    /// [`KeyCodec::Rows`]: the row-format bytes.
    Rows(Vec<Vec<u8>>),
}

/// One side in a checkpoint.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SideState {
    /// Number of slots, used or free.
    slots: u32,
    /// Free slots, in reuse order.
    free_slots: Vec<u32>,
    /// The stored batches in slot order, and their rows (one batch each, same order).
    stored: Vec<StoredState>,
    batches: SavedBatches,
}

/// One stored batch's bookkeeping in a checkpoint ([`Stored`] and its [`RowMeta`]s).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct StoredState {
    slot: u32,
    prev: Vec<u64>,
    next: Vec<u64>,
    entry: Vec<u32>,
    matched: Vec<bool>,
    min_live: i64,
    order: Option<Vec<u32>>,
    cursor: u64,
    scans: u8,
}

/// A restore error about damaged or foreign join state.
fn foreign(what: &str) -> Error {
    Error::Snapshot(format!("interval_join: {what} (was the pipeline changed?)"))
}

/// An input schema as saved: the same columns, all nullable, no metadata.
fn saved_schema(input: &Schema) -> SchemaRef {
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

impl Side {
    /// The checkpoint form of this side; `input` is its stream schema.
    fn save(&self, input: &Schema) -> Result<SideState> {
        let schema = saved_schema(input);
        let mut stored = Vec::new();
        let mut batches = Vec::new();
        for (slot, st) in self.slots.iter().enumerate() {
            let Some(st) = st else { continue };
            let options = RecordBatchOptions::new().with_row_count(Some(st.batch.num_rows()));
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                st.batch.columns().to_vec(),
                &options,
            )
            .map_err(|e| {
                Error::Snapshot(format!(
                    "interval_join: stored rows not of the input's types: {e}"
                ))
            })?;
            batches.push(batch);
            stored.push(StoredState {
                slot: slot as u32,
                prev: st.rows.iter().map(|m| m.prev).collect(),
                next: st.rows.iter().map(|m| m.next).collect(),
                entry: st.rows.iter().map(|m| m.entry).collect(),
                matched: st.rows.iter().map(|m| m.matched).collect(),
                min_live: st.min_live,
                order: st.order.clone(),
                cursor: st.cursor as u64,
                scans: st.scans,
            });
        }
        Ok(SideState {
            slots: self.slots.len() as u32,
            free_slots: self.free_slots.clone(),
            stored,
            batches: SavedBatches::new(&schema, &batches)?,
        })
    }

    /// Puts back the stored batches of `st` (checked on their own: slots, lengths, types,
    /// entry ids below `entries`); the chains are checked by the caller.
    fn load(&mut self, st: SideState, input: &Schema, entries: usize) -> Result<()> {
        let (schema, batches) = st.batches.load("interval join rows")?;
        let want = saved_schema(input);
        if !same_column_types(&schema, &want) {
            return Err(foreign("the saved rows have other columns"));
        }
        if batches.len() != st.stored.len() {
            return Err(foreign("stored batches and their rows disagree"));
        }
        // Every slot holds a stored batch or is free.
        let n = st.slots as usize;
        if n != st.stored.len() + st.free_slots.len() {
            return Err(foreign("a slot is neither stored nor free"));
        }
        let mut slots: Vec<Option<Stored>> = (0..n).map(|_| None).collect();
        let mut is_free = vec![false; n];
        for &f in &st.free_slots {
            let ok = (f as usize) < n && !std::mem::replace(&mut is_free[f as usize], true);
            if !ok {
                return Err(foreign("a free slot is out of range or listed twice"));
            }
        }
        let mut live_total = 0;
        for (saved, batch) in st.stored.into_iter().zip(batches) {
            let slot = saved.slot as usize;
            if slot >= n || is_free[slot] || slots[slot].is_some() {
                return Err(foreign("a stored batch has a bad slot"));
            }
            let len = batch.num_rows();
            let lens = [
                saved.prev.len(),
                saved.next.len(),
                saved.entry.len(),
                saved.matched.len(),
            ];
            if lens.iter().any(|&l| l != len) || len >= u32::MAX as usize {
                return Err(foreign("a stored batch's bookkeeping has the wrong length"));
            }
            let times = batch
                .column(self.time_index)
                .as_primitive::<Int64Type>()
                .values();
            let rows: Vec<RowMeta> = (0..len)
                .map(|i| RowMeta {
                    time: times[i],
                    prev: saved.prev[i],
                    next: saved.next[i],
                    entry: saved.entry[i],
                    matched: saved.matched[i],
                })
                .collect();
            let live = rows.iter().filter(|m| m.entry != NO_ENTRY).count();
            if live == 0
                || rows
                    .iter()
                    .any(|m| m.entry != NO_ENTRY && m.entry as usize >= entries)
            {
                return Err(foreign("a stored batch's rows have bad entry ids"));
            }
            let cursor = usize::try_from(saved.cursor).unwrap_or(usize::MAX);
            if let Some(order) = &saved.order {
                if cursor > order.len() || order.iter().any(|&r| r as usize >= len) {
                    return Err(foreign("a stored batch's time order is out of range"));
                }
            } else if cursor != 0 {
                return Err(foreign("a stored batch's time order is out of range"));
            }
            live_total += live;
            slots[slot] = Some(Stored {
                max_time: times.iter().copied().max().unwrap_or(i64::MIN),
                batch,
                rows,
                min_live: saved.min_live,
                order: saved.order,
                cursor,
                scans: saved.scans,
                live,
            });
        }
        if slots.iter().zip(&is_free).any(|(s, &f)| s.is_none() != f) {
            return Err(foreign("a slot is neither stored nor free"));
        }
        self.heap = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|st| Reverse((st.heap_key(), i as u32))))
            .collect();
        self.slots = slots;
        self.free_slots = st.free_slots;
        self.live = live_total;
        Ok(())
    }

    /// The stored row `r`, if `r` names one.
    fn row(&self, r: RowRef) -> Option<&RowMeta> {
        self.slots.get(slot_of(r))?.as_ref()?.rows.get(row_of(r))
    }
}

impl Index {
    /// The checkpoint form of the entries: heads, keys, free ids (in id order; no hash order).
    fn save(&self) -> (Vec<[u64; 2]>, KeysState, Vec<u32>) {
        let heads = self.entries.iter().map(|e| e.heads).collect();
        let n = self.entries.len();
        let keys = match self.codec {
            KeyCodec::Int => {
                let mut keys = vec![0; n];
                for &(k, e) in self.table.iter() {
                    keys[e as usize] = k;
                }
                KeysState::Int(keys)
            }
            KeyCodec::Rows(_) => {
                let mut keys = vec![Vec::new(); n];
                for &(_, e) in self.table.iter() {
                    keys[e as usize] = self.bytes[e as usize].clone();
                }
                KeysState::Rows(keys)
            }
        };
        (heads, keys, self.free.clone())
    }

    /// Rebuilds the entries and the table from saved heads, keys and free ids (`heads` and
    /// `free` already checked); refuses a key listed twice.
    fn load(
        &mut self,
        heads: &[[u64; 2]],
        keys: KeysState,
        free: Vec<u32>,
        is_free: &[bool],
    ) -> Result<()> {
        let n = heads.len();
        let mut entries: Vec<EntryData> = heads
            .iter()
            .map(|&heads| EntryData { heads, hash: 0 })
            .collect();
        let mut table: HashTable<(i64, u32)> = HashTable::with_capacity(n - free.len());
        let hasher = &self.hasher;
        let twice = || foreign("a join key is listed twice");
        let bytes = match (&self.codec, keys) {
            (KeyCodec::Int, KeysState::Int(keys)) if keys.len() == n => {
                for (e, &k) in keys.iter().enumerate() {
                    if is_free[e] {
                        continue;
                    }
                    let h = hasher.hash_one(k);
                    entries[e].hash = h;
                    match table.entry(h, |&(key, _)| key == k, |&(key, _)| hasher.hash_one(key)) {
                        Entry::Occupied(_) => return Err(twice()),
                        Entry::Vacant(v) => {
                            v.insert((k, e as u32));
                        }
                    }
                }
                Vec::new()
            }
            (KeyCodec::Rows(_), KeysState::Rows(keys)) if keys.len() == n => {
                for (e, k) in keys.iter().enumerate() {
                    if is_free[e] {
                        continue;
                    }
                    let h = hasher.hash_one(k.as_slice());
                    entries[e].hash = h;
                    let found = table.entry(
                        h,
                        |&(_, x)| keys[x as usize] == *k,
                        |&(_, x)| entries[x as usize].hash,
                    );
                    match found {
                        Entry::Occupied(_) => return Err(twice()),
                        Entry::Vacant(v) => {
                            v.insert((0, e as u32));
                        }
                    }
                }
                keys
            }
            (KeyCodec::Int, KeysState::Int(_)) | (KeyCodec::Rows(_), KeysState::Rows(_)) => {
                return Err(foreign("keys and entries disagree"))
            }
            _ => return Err(foreign("the saved join keys have another layout")),
        };
        self.table = table;
        self.entries = entries;
        self.bytes = bytes;
        self.free = free;
        self.emptied.clear();
        Ok(())
    }
}

/// Rows picked from one side's batches for an output batch.
enum Gather {
    /// All rows from one batch.
    Take(RecordBatch, UInt32Array),
    /// Rows from several batches: `(batch, row)` pairs.
    Interleave(Vec<RecordBatch>, Vec<(usize, usize)>),
}

impl Gather {
    fn column(&self, c: usize) -> Result<ArrayRef> {
        Ok(match self {
            Gather::Take(b, idx) => take(b.column(c).as_ref(), idx, None)?,
            Gather::Interleave(bs, idx) => {
                let arrays: Vec<&dyn Array> = bs.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, idx)?
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Gather::Take(_, idx) => idx.len(),
            Gather::Interleave(_, idx) => idx.len(),
        }
    }

    /// The rows `refs` of `side` (`src_of` is scratch, all `u32::MAX`, and left so).
    fn from_refs(side: &Side, refs: &[RowRef], src_of: &mut Vec<u32>) -> Gather {
        if src_of.len() < side.slots.len() {
            src_of.resize(side.slots.len(), u32::MAX);
        }
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut used: Vec<usize> = Vec::new();
        let indices: Vec<(usize, usize)> = refs
            .iter()
            .map(|&r| {
                let s = slot_of(r);
                let mut k = src_of[s];
                if k == u32::MAX {
                    k = sources.len() as u32;
                    src_of[s] = k;
                    sources.push(side.stored(s).batch.clone());
                    used.push(s);
                }
                (k as usize, row_of(r))
            })
            .collect();
        for s in used {
            src_of[s] = u32::MAX;
        }
        if sources.len() == 1 {
            let rows = UInt32Array::from_iter_values(indices.iter().map(|&(_, r)| r as u32));
            Gather::Take(sources.pop().expect("one source"), rows)
        } else {
            Gather::Interleave(sources, indices)
        }
    }
}

/// Where each output column comes from.
struct Layout {
    schema: SchemaRef,
    /// Left input column of each left output column.
    left_cols: Vec<usize>,
    /// Right input column of each right output column (the right non-key user columns).
    right_cols: Vec<usize>,
    /// For each left output column that is a key: the right input column of that key
    /// (used for rows from the right side only).
    left_key_from_right: Vec<Option<usize>>,
}

/// Matches found for one input batch.
struct Matches {
    /// Row of the arriving batch.
    own: Vec<u32>,
    /// Stored row of the other side.
    other: Vec<RowRef>,
    /// Event time of the result: `max(l.t, r.t)`.
    times: Vec<i64>,
    /// Arriving rows with a null key.
    null_rows: Vec<u32>,
}

impl Matches {
    fn with_capacity(n: usize) -> Self {
        Matches {
            own: Vec::with_capacity(n),
            other: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            null_rows: Vec::new(),
        }
    }
}

/// Stream-stream interval join. See the module docs.
pub struct IntervalJoin {
    lower: i64,
    upper: i64,
    lateness: i64,
    late_policy: LatePolicy,
    sides: [Side; 2],
    index: Index,
    layout: Layout,
    metrics: OperatorMetrics,
    /// The stream schemas of the inputs (for checkpoints).
    inputs: [SchemaRef; 2],
    // Scratch reused across calls.
    src_of: Vec<u32>,
    expired: Vec<RowRef>,
    emptied: Vec<u32>,
    /// Row bookkeeping buffers of dropped batches, for reuse.
    pool: Vec<Vec<RowMeta>>,
    /// Per arriving row, the first row of the other side's chain of its key.
    cand: Vec<RowRef>,
}

/// Most buffers kept in [`IntervalJoin::pool`].
const POOL: usize = 16;

fn time_index(schema: &Schema, which: &str) -> Result<usize> {
    let i = schema.index_of(TIME_COLUMN).map_err(|_| {
        Error::InvalidPlan(format!("the {which} input of the join has no event time"))
    })?;
    if schema.field(i).data_type() != &DataType::Int64 {
        return Err(Error::InvalidPlan(format!(
            "the event time of the {which} input of the join is not int64"
        )));
    }
    Ok(i)
}

/// Whether right keys of type `r` can be compared with left keys of type `l` (after casting
/// them to `l`).
fn comparable(l: &DataType, r: &DataType) -> bool {
    use DataType::*;
    if l == r {
        return true;
    }
    let (lv, rv) = (value_type(l), value_type(r));
    let same_family = lv == rv
        || (lv.is_integer() && rv.is_integer())
        || matches!((lv, rv), (Timestamp(..), Timestamp(..)))
        || matches!((lv, rv), (Date32 | Date64, Date32 | Date64))
        || matches!(
            (lv, rv),
            (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View)
        )
        || matches!(
            (lv, rv),
            (
                Binary | LargeBinary | BinaryView,
                Binary | LargeBinary | BinaryView
            )
        );
    same_family && can_cast_types(r, l)
}

/// Key types folded to `i64` on the fast path.
fn is_int_key(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Timestamp(_, _)
    )
}

impl IntervalJoin {
    /// Validates `spec` and builds the operator.
    pub fn new(spec: JoinSpec) -> Result<Self> {
        let JoinSpec {
            left,
            right,
            on,
            lower_ms,
            upper_ms,
            how,
            lateness_ms,
            late,
        } = spec;
        if on.is_empty() {
            return Err(Error::InvalidPlan(
                "join needs at least one key column, e.g. on=\"id\"".into(),
            ));
        }
        if lower_ms > upper_ms {
            return Err(Error::InvalidPlan(format!(
                "join within=({lower_ms}, {upper_ms}) needs lo <= hi (right.t - left.t must lie in [lo, hi])"
            )));
        }
        if lower_ms.unsigned_abs() > MAX_SPAN_MS as u64
            || upper_ms.unsigned_abs() > MAX_SPAN_MS as u64
        {
            return Err(Error::InvalidPlan(format!(
                "join within=({lower_ms}, {upper_ms}) ms: bounds must be within 100 years"
            )));
        }
        if !(0..=MAX_SPAN_MS).contains(&lateness_ms) {
            return Err(Error::InvalidPlan(format!(
                "allowed lateness must be between 0 and 100 years, got {lateness_ms} ms"
            )));
        }
        let left_time = time_index(&left, "left")?;
        let right_time = time_index(&right, "right")?;

        let mut left_keys = Vec::with_capacity(on.len());
        let mut right_keys = Vec::with_capacity(on.len());
        let mut right_casts = Vec::with_capacity(on.len());
        for (j, k) in on.iter().enumerate() {
            if on[..j].contains(k) {
                return Err(Error::InvalidPlan(format!(
                    "join key '{k}' is listed twice"
                )));
            }
            let find = |schema: &Schema, side: &str| {
                schema
                    .index_of(k)
                    .ok()
                    .filter(|_| !crate::engine::is_hidden_column(k))
                    .ok_or_else(|| {
                        Error::column_not_found(
                            k,
                            &format!(" in the {side} input of join on="),
                            schema,
                        )
                    })
            };
            let li = find(&left, "left")?;
            let ri = find(&right, "right")?;
            let (lt, rt) = (left.field(li).data_type(), right.field(ri).data_type());
            for dt in [lt, rt] {
                if !is_key_type(dt) {
                    return Err(key_type_error(k, "join keys", dt));
                }
            }
            if !comparable(lt, rt) {
                return Err(Error::ColumnType {
                    column: k.clone(),
                    expected: format!(
                        "join keys must have comparable types on both sides (left has {lt})"
                    ),
                    found: rt.to_string(),
                });
            }
            left_keys.push(li);
            right_keys.push(ri);
            right_casts.push((lt != rt).then(|| lt.clone()));
        }

        // Output: left user columns, right non-key user columns, the event time. A side's
        // columns are null in rows from the other side alone: unmatched rows of an outer
        // join, and late rows sent to the side output (which has the same schema).
        let side_output = late == LatePolicy::SideOutput;
        let (lnull, rnull) = (
            how.right_outer() || side_output,
            how.left_outer() || side_output,
        );
        let mut fields: Vec<Field> = Vec::new();
        let mut left_cols = Vec::new();
        let mut left_key_from_right = Vec::new();
        for (i, f) in left.fields().iter().enumerate() {
            if i == left_time {
                continue;
            }
            fields.push(f.as_ref().clone().with_nullable(f.is_nullable() || lnull));
            left_cols.push(i);
            left_key_from_right.push(
                left_keys
                    .iter()
                    .position(|&k| k == i)
                    .map(|j| right_keys[j]),
            );
        }
        let mut right_cols = Vec::new();
        for (i, f) in right.fields().iter().enumerate() {
            if i == right_time || right_keys.contains(&i) {
                continue;
            }
            let mut field = f.as_ref().clone().with_nullable(f.is_nullable() || rnull);
            if fields.iter().any(|g| g.name() == f.name()) {
                field = field.with_name(format!("{}_right", f.name()));
            }
            if fields.iter().any(|g| g.name() == field.name()) {
                return Err(Error::InvalidPlan(format!(
                    "join result column '{}' appears twice; rename a column on one side",
                    field.name()
                )));
            }
            fields.push(field);
            right_cols.push(i);
        }
        fields.push(Field::new(TIME_COLUMN, DataType::Int64, false));

        let codec = match left_keys.as_slice() {
            [k] if is_int_key(left.field(*k).data_type()) => KeyCodec::Int,
            _ => KeyCodec::Rows(RowConverter::new(
                left_keys
                    .iter()
                    .map(|&k| SortField::new(left.field(k).data_type().clone()))
                    .collect(),
            )?),
        };
        let side = |time_index, keys, key_casts, outer| Side {
            time_index,
            keys,
            key_casts,
            outer,
            slots: Vec::new(),
            free_slots: Vec::new(),
            heap: BinaryHeap::new(),
            live: 0,
        };
        Ok(IntervalJoin {
            lower: lower_ms,
            upper: upper_ms,
            lateness: lateness_ms,
            late_policy: late,
            sides: [
                side(
                    left_time,
                    left_keys.clone(),
                    vec![None; on.len()],
                    how.left_outer(),
                ),
                side(right_time, right_keys, right_casts, how.right_outer()),
            ],
            index: Index::new(codec),
            layout: Layout {
                schema: Arc::new(Schema::new(fields)),
                left_cols,
                right_cols,
                left_key_from_right,
            },
            metrics: OperatorMetrics::default(),
            inputs: [left, right],
            src_of: Vec::new(),
            expired: Vec::new(),
            emptied: Vec::new(),
            pool: Vec::new(),
            cand: Vec::new(),
        })
    }

    /// Result rows for matched pairs.
    fn matched_batch(&self, left: &Gather, right: &Gather, times: Vec<i64>) -> Result<RecordBatch> {
        let mut cols = Vec::with_capacity(self.layout.schema.fields().len());
        for &c in &self.layout.left_cols {
            cols.push(left.column(c)?);
        }
        for &c in &self.layout.right_cols {
            cols.push(right.column(c)?);
        }
        cols.push(Arc::new(Int64Array::from(times)) as ArrayRef);
        Ok(RecordBatch::try_new(self.layout.schema.clone(), cols)?)
    }

    /// Result rows for rows of side `s` without a partner (also the shape of late rows).
    fn unmatched_batch(&self, s: usize, rows: &Gather) -> Result<RecordBatch> {
        let n = rows.len();
        let fields = self.layout.schema.fields();
        let nl = self.layout.left_cols.len();
        let mut cols = Vec::with_capacity(fields.len());
        if s == LEFT {
            for &c in &self.layout.left_cols {
                cols.push(rows.column(c)?);
            }
            for f in &fields[nl..nl + self.layout.right_cols.len()] {
                cols.push(new_null_array(f.data_type(), n));
            }
        } else {
            for (f, key) in fields[..nl].iter().zip(&self.layout.left_key_from_right) {
                cols.push(match key {
                    Some(rc) => {
                        let a = rows.column(*rc)?;
                        if a.data_type() == f.data_type() {
                            a
                        } else {
                            cast(&a, f.data_type())?
                        }
                    }
                    None => new_null_array(f.data_type(), n),
                });
            }
            for &c in &self.layout.right_cols {
                cols.push(rows.column(c)?);
            }
        }
        cols.push(rows.column(self.sides[s].time_index)?);
        Ok(RecordBatch::try_new(self.layout.schema.clone(), cols)?)
    }

    /// Splits off the rows of `batch` (side `s`) with `t < wm - L`: counts them and sends them
    /// to the late output if asked. Returns the on-time rows, or `None` if all are on time.
    fn split_late(
        &mut self,
        s: usize,
        batch: &RecordBatch,
        wm: Timestamp,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<Option<RecordBatch>> {
        let cutoff = wm.saturating_sub(self.lateness);
        let times = batch
            .column(self.sides[s].time_index)
            .as_primitive::<Int64Type>()
            .values();
        if times.iter().all(|&t| t >= cutoff) {
            return Ok(None);
        }
        let late = BooleanBuffer::collect_bool(times.len(), |i| times[i] < cutoff);
        let n_late = late.count_set_bits() as u64;
        match self.late_policy {
            LatePolicy::Drop => self.metrics.late_dropped += n_late,
            LatePolicy::SideOutput => {
                self.metrics.late_side_output += n_late;
                let rows = UInt32Array::from_iter_values(late.set_indices().map(|i| i as u32));
                let out = self.unmatched_batch(s, &Gather::Take(batch.clone(), rows))?;
                ctx.emit_late(out);
            }
        }
        Ok(Some(filter_record_batch(batch, &(!&late).into())?))
    }

    /// The keys of `batch` (side `s`), cast to the left key types and encoded, and which rows
    /// have a null key.
    fn batch_keys(&self, s: usize, batch: &RecordBatch) -> Result<(BatchKeys, Option<NullBuffer>)> {
        let side = &self.sides[s];
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(side.keys.len());
        for (&c, to) in side.keys.iter().zip(&side.key_casts) {
            cols.push(match to {
                Some(dt) => cast(batch.column(c), dt)?,
                None => batch.column(c).clone(),
            });
        }
        let mut nulls: Option<NullBuffer> = None;
        for c in &cols {
            nulls = NullBuffer::union(nulls.as_ref(), c.logical_nulls().as_ref());
        }
        let nulls = nulls.filter(|n| n.null_count() > 0);
        let keys = match &self.index.codec {
            KeyCodec::Int => {
                let c = &cols[0];
                let c = if c.data_type() == &DataType::Int64 {
                    c.clone()
                } else {
                    cast(c, &DataType::Int64)?
                };
                BatchKeys::Int(c.as_primitive::<Int64Type>().clone())
            }
            KeyCodec::Rows(conv) => BatchKeys::Rows(conv.convert_columns(&cols)?),
        };
        Ok((keys, nulls))
    }

    /// Stores `batch` (on-time rows of side `s`), links its rows into the index and collects
    /// their matches with the other side's stored rows.
    fn insert_and_probe(&mut self, s: usize, batch: &RecordBatch) -> Result<Matches> {
        let n = batch.num_rows();
        if n >= u32::MAX as usize {
            return Err(Error::Overflow(
                "join input batch of 4 billion rows or more".into(),
            ));
        }
        self.index.ensure_capacity(n)?;
        let (keys, nulls) = self.batch_keys(s, batch)?;
        let times = batch
            .column(self.sides[s].time_index)
            .as_primitive::<Int64Type>()
            .values();
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        let mut rows = self.pool.pop().unwrap_or_default();
        rows.extend(times.iter().map(|&time| {
            min_time = min_time.min(time);
            max_time = max_time.max(time);
            RowMeta {
                time,
                prev: NIL,
                next: NIL,
                entry: NO_ENTRY,
                matched: false,
            }
        }));
        let slot = self.sides[s].reserve_slot()?;
        let mut st = Stored {
            batch: batch.clone(),
            rows,
            max_time,
            min_live: min_time,
            order: None,
            cursor: 0,
            scans: 0,
            live: 0,
        };
        let mut m = Matches::with_capacity(n);
        let (lower, upper) = (self.lower, self.upper);
        let [left, right] = &mut self.sides;
        let (own, other) = if s == LEFT {
            (left, right)
        } else {
            (right, left)
        };
        let index = &mut self.index;
        let nulls = nulls.as_ref();
        match &keys {
            BatchKeys::Int(k) => {
                let k = k.values();
                link_and_probe(
                    index,
                    own,
                    other,
                    &mut st,
                    s,
                    slot,
                    nulls,
                    lower,
                    upper,
                    &mut m,
                    &mut self.cand,
                    |ix, i| ix.entry_int(k[i]),
                )
            }
            BatchKeys::Rows(rows) => link_and_probe(
                index,
                own,
                other,
                &mut st,
                s,
                slot,
                nulls,
                lower,
                upper,
                &mut m,
                &mut self.cand,
                |ix, i| ix.entry_bytes(rows.row(i).as_ref()),
            ),
        }
        let own = &mut self.sides[s];
        if st.live == 0 {
            own.free_slots.push(slot);
            if self.pool.len() < POOL {
                st.rows.clear();
                self.pool.push(st.rows);
            }
        } else {
            own.live += st.live;
            own.heap.push(Reverse((st.heap_key(), slot)));
            own.slots[slot as usize] = Some(st);
        }
        let held = (self.sides[LEFT].live + self.sides[RIGHT].live) as u64;
        self.metrics.state_rows = held;
        self.metrics.peak_state_rows = self.metrics.peak_state_rows.max(held);
        Ok(m)
    }

    /// Expires the rows of side `s` with `t < thr` (`thr` exact, hence `i128`); the unmatched
    /// ones of an outer side are left in `self.expired`, the emptied slots in `self.emptied`
    /// (released by [`Self::release_emptied`] once the unmatched rows are gathered).
    fn expire(&mut self, s: usize, thr: i128) {
        self.expired.clear();
        self.emptied.clear();
        let IntervalJoin {
            sides,
            index,
            expired,
            emptied,
            ..
        } = self;
        let side = &mut sides[s];
        while let Some(&Reverse((key, slot32))) = side.heap.peek() {
            if i128::from(key) >= thr {
                break;
            }
            side.heap.pop();
            let slot = slot32 as usize;
            let st = side.stored_mut(slot);
            if i128::from(st.max_time) < thr {
                // The whole batch expires: in storage order.
                for r in 0..st.rows.len() {
                    expire_row(side, index, s, slot, r, expired);
                }
            } else if st.order.is_none() && st.scans < 2 {
                // Part of it: scan, and note the oldest survivor.
                st.scans += 1;
                let mut min_live = i64::MAX;
                for r in 0..st.rows.len() {
                    let meta = side.stored(slot).rows[r];
                    if meta.entry == NO_ENTRY {
                        continue;
                    }
                    if i128::from(meta.time) < thr {
                        expire_row(side, index, s, slot, r, expired);
                    } else {
                        min_live = min_live.min(meta.time);
                    }
                }
                side.stored_mut(slot).min_live = min_live;
            } else {
                // Expired bit by bit again and again: walk it in time order.
                if st.order.is_none() {
                    let mut pairs: Vec<(i64, u32)> = st
                        .rows
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.entry != NO_ENTRY)
                        .map(|(i, m)| (m.time, i as u32))
                        .collect();
                    pairs.sort_unstable();
                    st.order = Some(pairs.into_iter().map(|(_, i)| i).collect());
                    st.cursor = 0;
                }
                loop {
                    let st = side.stored_mut(slot);
                    let order = st.order.as_ref().expect("ordered");
                    if st.cursor >= order.len() {
                        break;
                    }
                    let r = order[st.cursor] as usize;
                    if i128::from(st.rows[r].time) >= thr {
                        break;
                    }
                    st.cursor += 1;
                    expire_row(side, index, s, slot, r, expired);
                }
            }
            let st = side.stored(slot);
            if st.live == 0 {
                emptied.push(slot32);
            } else {
                side.heap.push(Reverse((st.heap_key(), slot32)));
            }
        }
        index.release_emptied();
    }

    /// The state to checkpoint (see [`IntervalJoinState`]).
    fn save(&self) -> Result<IntervalJoinState> {
        let (heads, keys, free) = self.index.save();
        Ok(IntervalJoinState {
            left: self.sides[LEFT].save(&self.inputs[LEFT])?,
            right: self.sides[RIGHT].save(&self.inputs[RIGHT])?,
            heads,
            keys,
            free,
            metrics: metrics_to_array(&self.metrics),
        })
    }

    /// Puts back `st` after checking it: every stored row that is held lies exactly once on
    /// the chain of its entry, in both directions, and every entry id in use has rows.
    fn load(&mut self, st: IntervalJoinState) -> Result<()> {
        let n = st.heads.len();
        if n >= NO_ENTRY as usize {
            return Err(foreign("too many key entries"));
        }
        let mut is_free = vec![false; n];
        for &f in &st.free {
            let ok = (f as usize) < n && !std::mem::replace(&mut is_free[f as usize], true);
            if !ok {
                return Err(foreign("a free key entry is out of range or listed twice"));
            }
        }
        for (s, saved) in [(LEFT, st.left), (RIGHT, st.right)] {
            self.sides[s].load(saved, &self.inputs[s], n)?;
        }
        for (e, heads) in st.heads.iter().enumerate() {
            if is_free[e] != (*heads == [NIL, NIL]) {
                return Err(foreign("a key entry's rows disagree with the free entries"));
            }
        }
        for s in [LEFT, RIGHT] {
            let side = &self.sides[s];
            let mut seen = 0usize;
            for (e, heads) in st.heads.iter().enumerate() {
                let (mut prev, mut c) = (NIL, heads[s]);
                while c != NIL {
                    seen += 1;
                    let ok = seen <= side.live
                        && side
                            .row(c)
                            .is_some_and(|m| m.entry as usize == e && m.prev == prev);
                    if !ok {
                        return Err(foreign("a chain of stored rows is broken"));
                    }
                    prev = c;
                    c = side.row(c).map_or(NIL, |m| m.next);
                }
            }
            if seen != side.live {
                return Err(foreign("a stored row is on no chain"));
            }
        }
        self.index.load(&st.heads, st.keys, st.free, &is_free)?;
        self.metrics = metrics_from_array(st.metrics);
        Ok(())
    }

    /// Drops the stored batches emptied by the last [`Self::expire`] of side `s`.
    fn release_emptied(&mut self, s: usize) {
        for &slot in &self.emptied {
            if let Some(mut rows) = self.sides[s].release_slot(slot) {
                if self.pool.len() < POOL {
                    rows.clear();
                    self.pool.push(rows);
                }
            }
        }
        self.emptied.clear();
    }
}

/// Expires row `r` of stored batch `slot` of side `s` (if still held): unlinks it, drops its
/// key entry when no row of either side is left, and notes it in `unmatched` if it is an
/// unmatched row of an outer side.
#[inline]
fn expire_row(
    side: &mut Side,
    index: &mut Index,
    s: usize,
    slot: usize,
    r: usize,
    unmatched: &mut Vec<RowRef>,
) {
    let outer = side.outer;
    let st = side.stored_mut(slot);
    let meta = st.rows[r];
    let e = meta.entry;
    if e == NO_ENTRY {
        return;
    }
    st.rows[r].entry = NO_ENTRY;
    st.live -= 1;
    side.live -= 1;
    if outer && !meta.matched {
        unmatched.push(pack(slot as u32, r as u32));
    }
    let (p, nx) = (meta.prev, meta.next);
    let entry = &mut index.entries[e as usize];
    if p != NIL {
        side.meta_mut(p).next = nx;
    } else {
        entry.heads[s] = nx;
    }
    if nx != NIL {
        side.meta_mut(nx).prev = p;
    }
    if entry.heads == [NIL, NIL] {
        // Removed from the table after the batch (see `Index::release_emptied`).
        index.emptied.push(e);
    }
}

/// The per-row work of a batch, in three passes so that the cache misses of many rows
/// overlap (each pass's iterations are independent): find or create each row's key entry
/// (`entry_of`, monomorphised per key codec); link each row into `own`'s chain and note the
/// head of `other`'s; walk those chains for partners within the time bounds.
#[allow(clippy::too_many_arguments)]
#[inline]
fn link_and_probe<F: FnMut(&mut Index, usize) -> u32>(
    index: &mut Index,
    own: &mut Side,
    other: &mut Side,
    st: &mut Stored,
    s: usize,
    slot: u32,
    nulls: Option<&NullBuffer>,
    lower: i64,
    upper: i64,
    m: &mut Matches,
    cand: &mut Vec<RowRef>,
    mut entry_of: F,
) {
    let o = 1 - s;
    let n = st.rows.len();
    for i in 0..n {
        if nulls.is_some_and(|v| v.is_null(i)) {
            m.null_rows.push(i as u32);
        } else {
            st.rows[i].entry = entry_of(index, i);
        }
    }
    cand.clear();
    cand.resize(n, NIL);
    for (i, first) in cand.iter_mut().enumerate() {
        let e = st.rows[i].entry;
        if e == NO_ENTRY {
            continue;
        }
        let me = pack(slot, i as u32);
        let entry = &mut index.entries[e as usize];
        let head = entry.heads[s];
        entry.heads[s] = me;
        *first = entry.heads[o];
        st.rows[i].next = head;
        st.live += 1;
        if head != NIL {
            if slot_of(head) == slot as usize {
                st.rows[row_of(head)].prev = me;
            } else {
                own.meta_mut(head).prev = me;
            }
        }
    }
    let (lower, upper) = (i128::from(lower), i128::from(upper));
    let other_outer = other.outer;
    let own_outer = own.outer;
    for (i, &first) in cand.iter().enumerate() {
        if first == NIL {
            continue;
        }
        // Bounds on the partner's time.
        let t = st.rows[i].time;
        let t128 = i128::from(t);
        let (lo, hi) = if s == LEFT {
            (t128 + lower, t128 + upper)
        } else {
            (t128 - upper, t128 - lower)
        };
        let mut c = first;
        let mut hit = false;
        while c != NIL {
            let meta = other.meta_mut(c);
            let ot = meta.time;
            if (lo..=hi).contains(&i128::from(ot)) {
                hit = true;
                if other_outer {
                    meta.matched = true;
                }
                m.own.push(i as u32);
                m.other.push(c);
                m.times.push(t.max(ot));
            }
            c = meta.next;
        }
        if hit && own_outer {
            st.rows[i].matched = true;
        }
    }
}

impl Operator for IntervalJoin {
    fn name(&self) -> &'static str {
        "interval_join"
    }

    fn output_schema(&self) -> SchemaRef {
        self.layout.schema.clone()
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        encode(&self.save()?)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let st: IntervalJoinState = decode(state, self.name())?;
        self.load(st)
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.process_port(0, input, ctx)
    }

    fn process_port(
        &mut self,
        port: usize,
        input: &RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let s = match port {
            0 => LEFT,
            1 => RIGHT,
            p => {
                return Err(Error::InvalidPlan(format!(
                    "interval join has inputs 0 (left) and 1 (right), got {p}"
                )))
            }
        };
        if input.num_rows() == 0 {
            return Ok(());
        }
        let on_time = match ctx.watermark() {
            Some(wm) => self.split_late(s, input, wm, ctx)?,
            None => None,
        };
        let batch = on_time.as_ref().unwrap_or(input);
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let m = self.insert_and_probe(s, batch)?;
        if !m.own.is_empty() {
            let own = Gather::Take(batch.clone(), UInt32Array::from(m.own));
            let other = Gather::from_refs(&self.sides[1 - s], &m.other, &mut self.src_of);
            let out = if s == LEFT {
                self.matched_batch(&own, &other, m.times)?
            } else {
                self.matched_batch(&other, &own, m.times)?
            };
            ctx.emit(out);
        }
        if self.sides[s].outer && !m.null_rows.is_empty() {
            let rows = Gather::Take(batch.clone(), UInt32Array::from(m.null_rows));
            let out = self.unmatched_batch(s, &rows)?;
            ctx.emit(out);
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, ctx: &mut OperatorContext<'_>) -> Result<()> {
        // Left rows expire when l.t + hi < wm - L, right rows when r.t - lo < wm - L; exact
        // arithmetic in i128, and the end-of-input watermark expires everything.
        let base = i128::from(wm) - i128::from(self.lateness);
        for (s, shift) in [
            (LEFT, -i128::from(self.upper)),
            (RIGHT, i128::from(self.lower)),
        ] {
            let thr = if wm == Timestamp::MAX {
                i128::MAX
            } else {
                base + shift
            };
            self.expire(s, thr);
            let out = if self.expired.is_empty() {
                None
            } else {
                let rows = Gather::from_refs(&self.sides[s], &self.expired, &mut self.src_of);
                Some(self.unmatched_batch(s, &rows))
            };
            self.release_emptied(s);
            if let Some(out) = out {
                ctx.emit(out?);
            }
        }
        let held = self.sides[LEFT].live + self.sides[RIGHT].live;
        self.index.shrink(held);
        self.metrics.state_rows = held as u64;
        Ok(())
    }

    /// `L + max(0, hi, -lo)`: every row emitted after watermark `W` (the one in force before
    /// the call that emits it) has event time `>= W - delay`:
    /// - a match is emitted when its later-arriving row `x` comes, which is not late:
    ///   `max(l.t, r.t) >= x.t >= W - L`; the same holds for null-key rows, emitted at once;
    /// - an unmatched left row emitted by `on_watermark(W')` either arrived under `W` (so
    ///   `l.t >= W - L`) or survived the expiry at `W` (`l.t + hi >= W - L`): either way
    ///   `l.t >= W - L - max(0, hi)`; a right row likewise has `r.t >= W - L - max(0, -lo)`.
    ///
    /// The bound is relative to the watermark before the advance that expires a row: how far
    /// the watermark jumps in one advance is unbounded, so no finite delay can bound these
    /// rows against the new watermark. Downstream steps must therefore receive the rows
    /// emitted by `on_watermark` before their own watermark moves on (the reactor advances
    /// the nodes of a query one by one in graph order).
    fn watermark_delay(&self) -> i64 {
        self.lateness
            .saturating_add(0i64.max(self.upper).max(self.lower.saturating_neg()))
    }

    fn append_only(&self) -> bool {
        true
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            state_rows: (self.sides[LEFT].live + self.sides[RIGHT].live) as u64,
            ..self.metrics
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::TimerPayload;
    use crate::time::timer_wheel::TimerWheel;
    use arrow_array::{Float64Array, Int32Array, StringArray};
    use proptest::prelude::*;

    /// `(key, left id a, right id b, event time)` of a result row.
    type Out = (Option<i64>, Option<i64>, Option<i64>, i64);

    /// How the key is laid out in a test.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Keys {
        /// `k: Int64` on both sides; the right side has its columns as `(b, k)`.
        Int,
        /// `k: Int32` on the left, `k: Int64` on the right.
        Mixed,
        /// `k: Utf8` ("x<k>").
        Str,
        /// `(s: Utf8 "x<k>", n: Int64 k)`; a null key has a null `s` only.
        Two,
    }

    fn stream_schema(cols: Vec<Field>) -> SchemaRef {
        let mut cols = cols;
        cols.push(Field::new(TIME_COLUMN, DataType::Int64, false));
        Arc::new(Schema::new(cols))
    }

    fn key_fields(keys: Keys, right: bool) -> Vec<Field> {
        match keys {
            Keys::Int => vec![Field::new("k", DataType::Int64, true)],
            Keys::Mixed => vec![Field::new(
                "k",
                if right {
                    DataType::Int64
                } else {
                    DataType::Int32
                },
                true,
            )],
            Keys::Str => vec![Field::new("k", DataType::Utf8, true)],
            Keys::Two => vec![
                Field::new("s", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ],
        }
    }

    fn on(keys: Keys) -> Vec<String> {
        match keys {
            Keys::Two => vec!["s".into(), "n".into()],
            _ => vec!["k".into()],
        }
    }

    fn schema_of(keys: Keys, right: bool) -> SchemaRef {
        let id = Field::new(if right { "b" } else { "a" }, DataType::Int64, false);
        let mut cols = key_fields(keys, right);
        if right && keys == Keys::Int {
            cols.insert(0, id);
        } else {
            cols.push(id);
        }
        stream_schema(cols)
    }

    /// A batch of `(key, id, t)` rows in the layout of `keys`.
    fn batch(keys: Keys, right: bool, rows: &[(Option<i64>, i64, i64)]) -> RecordBatch {
        let schema = schema_of(keys, right);
        let ks: Vec<Option<i64>> = rows.iter().map(|r| r.0).collect();
        let strs: StringArray = ks.iter().map(|k| k.map(|k| format!("x{k}"))).collect();
        let mut key_cols: Vec<ArrayRef> = match keys {
            Keys::Int => vec![Arc::new(Int64Array::from(ks.clone()))],
            Keys::Mixed if right => vec![Arc::new(Int64Array::from(ks.clone()))],
            Keys::Mixed => vec![Arc::new(
                ks.iter()
                    .map(|k| k.map(|k| k as i32))
                    .collect::<Int32Array>(),
            )],
            Keys::Str => vec![Arc::new(strs)],
            Keys::Two => vec![
                Arc::new(strs),
                Arc::new(Int64Array::from(
                    ks.iter().map(|k| Some(k.unwrap_or(0))).collect::<Vec<_>>(),
                )),
            ],
        };
        let id: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
        if right && keys == Keys::Int {
            key_cols.insert(0, id);
        } else {
            key_cols.push(id);
        }
        key_cols.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.2),
        )));
        RecordBatch::try_new(schema, key_cols).unwrap()
    }

    fn decode_key(a: &ArrayRef, i: usize) -> Option<i64> {
        if a.is_null(i) {
            return None;
        }
        match a.data_type() {
            DataType::Utf8 => Some(a.as_string::<i32>().value(i)[1..].parse().unwrap()),
            _ => {
                let a = cast(a, &DataType::Int64).unwrap();
                Some(a.as_primitive::<Int64Type>().value(i))
            }
        }
    }

    fn decode(batches: &[RecordBatch]) -> Vec<Out> {
        let mut out = Vec::new();
        for b in batches {
            let schema = b.schema();
            let col = |n: &str| b.column(schema.index_of(n).unwrap()).clone();
            let a = col("a");
            let bb = col("b");
            let t = col(TIME_COLUMN);
            assert_eq!(t.null_count(), 0);
            let (a, bb, t) = (
                a.as_primitive::<Int64Type>(),
                bb.as_primitive::<Int64Type>(),
                t.as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                out.push((
                    decode_key(b.column(0), i),
                    a.is_valid(i).then(|| a.value(i)),
                    bb.is_valid(i).then(|| bb.value(i)),
                    t.value(i),
                ));
            }
        }
        out.sort();
        out
    }

    fn spec(
        keys: Keys,
        how: JoinKind,
        lo: i64,
        hi: i64,
        lateness: i64,
        late: LatePolicy,
    ) -> JoinSpec {
        JoinSpec {
            left: schema_of(keys, false),
            right: schema_of(keys, true),
            on: on(keys),
            lower_ms: lo,
            upper_ms: hi,
            how,
            lateness_ms: lateness,
            late,
        }
    }

    /// A context as the reactor lends it (the operator's own watermark domain).
    fn context<'a>(
        wm: Option<i64>,
        timers: &'a mut TimerWheel<TimerPayload>,
        out: &'a mut Vec<RecordBatch>,
        late: &'a mut Vec<RecordBatch>,
    ) -> OperatorContext<'a> {
        OperatorContext::new(wm, 0, 0, timers, out, late)
    }

    /// Drives an operator the way the reactor does.
    struct Harness {
        op: IntervalJoin,
        keys: Keys,
        timers: TimerWheel<TimerPayload>,
        late: Vec<RecordBatch>,
        wm: Option<i64>,
    }

    impl Harness {
        fn new(spec: JoinSpec, keys: Keys) -> Self {
            Harness {
                op: IntervalJoin::new(spec).unwrap(),
                keys,
                timers: TimerWheel::new(),
                late: Vec::new(),
                wm: None,
            }
        }

        fn simple(how: JoinKind, lo: i64, hi: i64) -> Self {
            Harness::new(spec(Keys::Int, how, lo, hi, 0, LatePolicy::Drop), Keys::Int)
        }

        fn push_batch(&mut self, port: usize, b: &RecordBatch) -> Vec<RecordBatch> {
            let mut out = Vec::new();
            let mut ctx = context(self.wm, &mut self.timers, &mut out, &mut self.late);
            self.op.process_port(port, b, &mut ctx).unwrap();
            for b in &out {
                assert_eq!(b.schema(), self.op.output_schema());
            }
            out
        }

        /// Pushes `(key, id, t)` rows to `port`, returns the rows emitted.
        fn push(&mut self, port: usize, rows: &[(Option<i64>, i64, i64)]) -> Vec<Out> {
            let b = batch(self.keys, port == 1, rows);
            decode(&self.push_batch(port, &b))
        }

        fn advance(&mut self, wm: i64) -> Vec<Out> {
            self.wm = Some(wm);
            let mut out = Vec::new();
            let mut ctx = context(self.wm, &mut self.timers, &mut out, &mut self.late);
            self.op.on_watermark(wm, &mut ctx).unwrap();
            decode(&out)
        }

        fn take_late(&mut self) -> Vec<Out> {
            let out = decode(&self.late);
            self.late.clear();
            out
        }

        fn state(&self) -> u64 {
            self.op.metrics().state_rows
        }
    }

    #[test]
    fn inner_bounds_are_inclusive_with_a_negative_lower_bound() {
        let left = [(Some(1), 1, 100)];
        let right = [
            (Some(1), 1, 94),
            (Some(1), 2, 95),
            (Some(1), 3, 110),
            (Some(1), 4, 111),
            (Some(2), 5, 100),
        ];
        let want = vec![
            (Some(1), Some(1), Some(2), 100),
            (Some(1), Some(1), Some(3), 110),
        ];
        for left_first in [true, false] {
            let mut h = Harness::simple(JoinKind::Inner, -5, 10);
            let got = if left_first {
                assert!(h.push(0, &left).is_empty());
                h.push(1, &right)
            } else {
                assert!(h.push(1, &right).is_empty());
                h.push(0, &left)
            };
            assert_eq!(got, want);
            assert!(h.advance(Timestamp::MAX).is_empty());
            assert_eq!(h.state(), 0);
        }
    }

    #[test]
    fn positive_point_interval() {
        let mut h = Harness::simple(JoinKind::Inner, 5, 5);
        h.push(
            1,
            &[(Some(1), 1, 104), (Some(1), 2, 105), (Some(1), 3, 106)],
        );
        assert_eq!(
            h.push(0, &[(Some(1), 7, 100)]),
            vec![(Some(1), Some(7), Some(2), 105)]
        );
    }

    #[test]
    fn several_matches_per_key_both_ways() {
        let mut h = Harness::simple(JoinKind::Inner, 0, 10);
        h.push(0, &[(Some(1), 1, 0), (Some(1), 2, 5), (Some(2), 3, 5)]);
        h.push(0, &[(Some(1), 4, 8)]);
        let got = h.push(1, &[(Some(1), 10, 9), (Some(2), 11, 20), (Some(1), 12, 12)]);
        assert_eq!(
            got,
            vec![
                (Some(1), Some(1), Some(10), 9),
                (Some(1), Some(2), Some(10), 9),
                (Some(1), Some(2), Some(12), 12),
                (Some(1), Some(4), Some(10), 9),
                (Some(1), Some(4), Some(12), 12),
            ]
        );
    }

    #[test]
    fn left_join_emits_unmatched_rows_once_after_they_expire() {
        let mut h = Harness::simple(JoinKind::Left, 0, 10);
        assert!(h.push(0, &[(Some(1), 1, 0), (Some(2), 2, 0)]).is_empty());
        assert_eq!(
            h.push(1, &[(Some(2), 9, 5)]),
            vec![(Some(2), Some(2), Some(9), 5)]
        );
        assert_eq!(h.state(), 3);
        // 0 + 10 < 10 is false: a right row at 10 could still match.
        assert!(h.advance(10).is_empty());
        assert_eq!(h.state(), 2, "the right row at 5 expired: 5 - 0 < 10");
        assert_eq!(h.push(1, &[(Some(3), 8, 10)]), vec![]);
        assert_eq!(h.advance(11), vec![(Some(1), Some(1), None, 0)]);
        assert_eq!(h.state(), 0, "the right row at 10 expired too: 10 - 0 < 11");
        assert!(h.advance(11).is_empty());
        assert!(h.advance(50).is_empty());
        assert!(h.advance(Timestamp::MAX).is_empty());
        assert_eq!(h.state(), 0);
        assert_eq!(h.op.metrics().peak_state_rows, 3);
    }

    #[test]
    fn right_join_takes_keys_from_the_right_row() {
        let mut h = Harness::new(
            spec(Keys::Mixed, JoinKind::Right, 0, 10, 0, LatePolicy::Drop),
            Keys::Mixed,
        );
        let schema = h.op.output_schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Int32);
        assert!(schema.field(0).is_nullable() && schema.field(1).is_nullable());
        assert!(
            !schema.field(2).is_nullable(),
            "right column of a right join"
        );
        h.push(0, &[(Some(1), 1, 0), (Some(7), 2, 100)]);
        assert_eq!(
            h.push(1, &[(Some(7), 9, 105), (Some(8), 10, 5)]),
            vec![(Some(7), Some(2), Some(9), 105)]
        );
        assert_eq!(h.advance(50), vec![(Some(8), None, Some(10), 5)]);
        assert!(
            h.advance(Timestamp::MAX).is_empty(),
            "unmatched left rows are not emitted"
        );
    }

    #[test]
    fn full_join_emits_both_sides() {
        let mut h = Harness::simple(JoinKind::Full, -3, 3);
        h.push(0, &[(Some(1), 1, 10), (Some(2), 2, 10)]);
        h.push(1, &[(Some(1), 3, 12), (Some(3), 4, 10), (Some(2), 5, 20)]);
        let mut got = h.advance(Timestamp::MAX);
        got.sort();
        assert_eq!(
            got,
            vec![
                (Some(2), None, Some(5), 20),
                (Some(2), Some(2), None, 10),
                (Some(3), None, Some(4), 10),
            ]
        );
        let schema = h.op.output_schema();
        assert!(schema.fields()[..3].iter().all(|f| f.is_nullable()));
        assert!(!schema.field(3).is_nullable());
    }

    #[test]
    fn null_keys_never_match() {
        for how in [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
        ] {
            for keys in [Keys::Int, Keys::Str, Keys::Two] {
                let mut h = Harness::new(spec(keys, how, 0, 0, 0, LatePolicy::Drop), keys);
                let l = h.push(0, &[(None, 1, 0)]);
                let r = h.push(1, &[(None, 2, 0)]);
                assert_eq!(h.state(), 0, "null keys are not held");
                assert_eq!(
                    l,
                    if how.left_outer() {
                        vec![(None, Some(1), None, 0)]
                    } else {
                        vec![]
                    }
                );
                assert_eq!(
                    r,
                    if how.right_outer() {
                        vec![(None, None, Some(2), 0)]
                    } else {
                        vec![]
                    }
                );
                assert!(h.advance(Timestamp::MAX).is_empty());
            }
        }
    }

    #[test]
    fn string_and_two_column_keys() {
        for keys in [Keys::Str, Keys::Two, Keys::Mixed] {
            let mut h = Harness::new(spec(keys, JoinKind::Full, 0, 5, 0, LatePolicy::Drop), keys);
            h.push(0, &[(Some(1), 1, 0), (Some(2), 2, 0), (Some(1), 3, 2)]);
            let got = h.push(1, &[(Some(1), 10, 3), (Some(3), 11, 3)]);
            assert_eq!(
                got,
                vec![
                    (Some(1), Some(1), Some(10), 3),
                    (Some(1), Some(3), Some(10), 3)
                ]
            );
            let mut rest = h.advance(Timestamp::MAX);
            rest.sort();
            assert_eq!(
                rest,
                vec![(Some(2), Some(2), None, 0), (Some(3), None, Some(11), 3)]
            );
            assert_eq!(h.state(), 0);
            assert_eq!(h.op.index.table.len(), 0);
        }
    }

    #[test]
    fn out_of_order_rows_expire_one_by_one() {
        let mut h = Harness::simple(JoinKind::Full, 0, 5);
        h.push(
            0,
            &[
                (Some(1), 1, 50),
                (Some(2), 2, 10),
                (Some(3), 3, 30),
                (Some(4), 4, 20),
            ],
        );
        let got = h.push(
            1,
            &[
                (Some(1), 11, 55),
                (Some(2), 12, 12),
                (Some(3), 13, 31),
                (Some(5), 15, 3),
            ],
        );
        assert_eq!(
            got,
            vec![
                (Some(1), Some(1), Some(11), 55),
                (Some(2), Some(2), Some(12), 12),
                (Some(3), Some(3), Some(13), 31),
            ]
        );
        assert_eq!(h.advance(3), vec![]);
        assert_eq!(h.advance(4), vec![(Some(5), None, Some(15), 3)]);
        assert_eq!(h.advance(26), vec![(Some(4), Some(4), None, 20)]);
        assert_eq!(h.state(), 4);
        assert_eq!(h.advance(36), vec![]);
        assert_eq!(h.state(), 2);
        assert_eq!(h.advance(Timestamp::MAX), vec![]);
        assert_eq!(h.state(), 0);
    }

    #[test]
    fn a_batch_expires_row_by_row_in_time_order() {
        // One shuffled batch, the watermark moving 1 ms at a time: the first partial expiries
        // scan the batch, later ones walk it in time order; each row leaves exactly when
        // t + hi < W.
        let mut h = Harness::simple(JoinKind::Left, -100, 0);
        let times: Vec<i64> = (0..40).map(|i| (i * 17) % 40).collect();
        let rows: Vec<_> = times.iter().map(|&t| (Some(t % 3), t, t)).collect();
        h.push(0, &rows);
        for w in 0..=40 {
            let got = h.advance(w);
            let want: Vec<Out> = (w - 1..w)
                .filter(|&t| t >= 0)
                .map(|t| (Some(t % 3), Some(t), None, t))
                .collect();
            assert_eq!(got, want, "at {w}");
            assert_eq!(h.state(), (40 - w) as u64);
        }
        assert!(h.op.sides[LEFT].slots.iter().all(Option::is_none));
    }

    #[test]
    fn late_rows_dropped_or_sent_to_the_side_output() {
        for policy in [LatePolicy::Drop, LatePolicy::SideOutput] {
            let mut h = Harness::new(
                spec(Keys::Int, JoinKind::Inner, 0, 10, 10, policy),
                Keys::Int,
            );
            h.wm = Some(100);
            assert!(h.push(0, &[(Some(1), 1, 89), (Some(1), 2, 90)]).is_empty());
            assert_eq!(
                h.push(1, &[(Some(1), 3, 89), (Some(1), 4, 95)]),
                vec![(Some(1), Some(2), Some(4), 95)]
            );
            let m = h.op.metrics();
            assert_eq!(h.state(), 2);
            match policy {
                LatePolicy::Drop => {
                    assert_eq!((m.late_dropped, m.late_side_output), (2, 0));
                    assert!(h.take_late().is_empty());
                }
                LatePolicy::SideOutput => {
                    assert_eq!((m.late_dropped, m.late_side_output), (0, 2));
                    assert_eq!(
                        h.take_late(),
                        vec![(Some(1), None, Some(3), 89), (Some(1), Some(1), None, 89)]
                    );
                }
            }
        }
    }

    #[test]
    fn late_side_output_of_an_inner_join_fits_the_output_schema() {
        // Inner join over non-nullable columns: late rows carry nulls for the other side, so
        // with late="side" the result columns are nullable (the late output shares the schema).
        let left = stream_schema(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("a", DataType::Int64, false),
        ]);
        let right = stream_schema(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]);
        let op = IntervalJoin::new(JoinSpec {
            left: left.clone(),
            right,
            on: vec!["k".into()],
            lower_ms: 0,
            upper_ms: 0,
            how: JoinKind::Inner,
            lateness_ms: 0,
            late: LatePolicy::SideOutput,
        })
        .unwrap();
        let nullable: Vec<_> = op
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.is_nullable())
            .collect();
        assert_eq!(nullable, [true, true, true, false]);
        let mut h = Harness {
            op,
            keys: Keys::Int,
            timers: TimerWheel::new(),
            late: Vec::new(),
            wm: Some(10),
        };
        let b = RecordBatch::try_new(
            left,
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int64Array::from(vec![5])),
                Arc::new(Int64Array::from(vec![3])),
            ],
        )
        .unwrap();
        h.push_batch(0, &b);
        assert_eq!(h.take_late(), vec![(Some(1), Some(5), None, 3)]);
        let mut h = Harness {
            op: IntervalJoin::new(spec(Keys::Int, JoinKind::Inner, 0, 0, 0, LatePolicy::Drop))
                .unwrap(),
            keys: Keys::Int,
            timers: TimerWheel::new(),
            late: Vec::new(),
            wm: None,
        };
        assert!(
            !h.op.output_schema().field(1).is_nullable(),
            "a: not nullable"
        );
        assert!(h.push(0, &[(Some(1), 1, 0)]).is_empty());
    }

    #[test]
    fn state_is_evicted_and_the_index_stays_bounded() {
        let mut h = Harness::simple(JoinKind::Inner, 0, 10);
        let mut peak_entries = 0;
        for round in 0..50i64 {
            let rows: Vec<_> = (0..1000)
                .map(|i| (Some(round * 1000 + i), i, round * 100 + i % 100))
                .collect();
            h.push(0, &rows);
            let got = h.push(1, &rows);
            assert_eq!(got.len(), 1000);
            h.advance(round * 100 + 100);
            peak_entries = peak_entries
                .max(h.op.index.entries.len())
                .max(h.op.index.table.len());
            assert!(h.state() < 2000, "round {round}: {} rows held", h.state());
        }
        // At most 1100 keys are live at once, and expired keys leave the index at once.
        assert!(peak_entries <= 1100, "{peak_entries} entries");
        h.advance(Timestamp::MAX);
        assert_eq!(h.state(), 0);
        assert_eq!(h.op.index.table.len(), 0);
        // A round's 1000 + 1000 rows on top of the 100 left rows (t + 10 >= W) of the last.
        assert_eq!(h.op.metrics().peak_state_rows, 2100);
        assert!(h
            .op
            .sides
            .iter()
            .all(|s| s.slots.iter().all(Option::is_none)));
    }

    #[test]
    fn extreme_times_and_the_end_of_input_watermark() {
        for how in [JoinKind::Inner, JoinKind::Full] {
            let mut h = Harness::new(
                spec(
                    Keys::Int,
                    how,
                    -MAX_SPAN_MS,
                    MAX_SPAN_MS,
                    MAX_SPAN_MS,
                    LatePolicy::SideOutput,
                ),
                Keys::Int,
            );
            let rows = [
                (Some(1), 1, i64::MIN),
                (Some(1), 2, i64::MAX),
                (Some(2), 3, 0),
            ];
            h.push(0, &rows);
            let got = h.push(1, &rows);
            assert_eq!(got.len(), 3);
            h.advance(i64::MIN);
            h.advance(0);
            h.advance(i64::MAX - 1);
            assert_eq!(h.push(0, &[(Some(1), 4, i64::MAX)]).len(), 1);
            assert!(h.push(0, &[(Some(3), 6, i64::MAX)]).is_empty());
            let rest = h.advance(Timestamp::MAX);
            if how == JoinKind::Inner {
                assert!(rest.is_empty());
            } else {
                assert_eq!(rest, vec![(Some(3), Some(6), None, i64::MAX)]);
            }
            assert_eq!(h.state(), 0);
            h.push(0, &[(Some(1), 5, i64::MIN)]);
            assert_eq!(h.take_late().len(), 1);
            assert_eq!(h.op.watermark_delay(), 2 * MAX_SPAN_MS);
        }
    }

    #[test]
    fn watermark_delay_covers_the_bounds() {
        let d = |lo, hi, l| {
            Harness::new(
                spec(Keys::Int, JoinKind::Full, lo, hi, l, LatePolicy::Drop),
                Keys::Int,
            )
            .op
            .watermark_delay()
        };
        assert_eq!(d(-7, 3, 5), 12);
        assert_eq!(d(2, 9, 0), 9);
        assert_eq!(d(-5, -2, 1), 6);
        assert_eq!(d(0, 0, 0), 0);
    }

    #[test]
    fn result_columns_and_name_clashes() {
        let left = stream_schema(vec![
            Field::new("ts", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        let right = stream_schema(vec![
            Field::new("ts", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, false),
            Field::new("id", DataType::Int64, false),
        ]);
        let mk = |left: &SchemaRef, right: &SchemaRef, how| {
            IntervalJoin::new(JoinSpec {
                left: left.clone(),
                right: right.clone(),
                on: vec!["id".into()],
                lower_ms: 0,
                upper_ms: 10,
                how,
                lateness_ms: 0,
                late: LatePolicy::Drop,
            })
        };
        let op = mk(&left, &right, JoinKind::Left).unwrap();
        let s = op.output_schema();
        let names: Vec<_> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "ts",
                "id",
                "name",
                "ts_right",
                "name_right",
                "amount",
                TIME_COLUMN
            ]
        );
        let nullable: Vec<_> = s.fields().iter().map(|f| f.is_nullable()).collect();
        assert_eq!(nullable, [false, false, true, true, true, true, false]);
        assert_eq!(s.field(5).data_type(), &DataType::Float64);
        assert_eq!(op.name(), "interval_join");

        // One matched row through the operator, right row first.
        let mut op = op;
        let mut timers = TimerWheel::new();
        let (mut out, mut late) = (Vec::new(), Vec::new());
        let rb = RecordBatch::try_new(
            right.clone(),
            vec![
                Arc::new(Int64Array::from(vec![105])),
                Arc::new(StringArray::from(vec!["p1"])),
                Arc::new(Float64Array::from(vec![9.5])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int64Array::from(vec![105])),
            ],
        )
        .unwrap();
        let lb = RecordBatch::try_new(
            left.clone(),
            vec![
                Arc::new(Int64Array::from(vec![100])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["o1"])),
                Arc::new(Int64Array::from(vec![100])),
            ],
        )
        .unwrap();
        let mut ctx = context(None, &mut timers, &mut out, &mut late);
        op.process_port(1, &rb, &mut ctx).unwrap();
        op.process(&lb, &mut ctx).unwrap();
        assert_eq!(out.len(), 1);
        let b = &out[0];
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.column(3).as_primitive::<Int64Type>().value(0), 105);
        assert_eq!(b.column(4).as_string::<i32>().value(0), "p1");
        assert_eq!(b.column(6).as_primitive::<Int64Type>().value(0), 105);

        let clash = stream_schema(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Int64, false),
            Field::new("x_right", DataType::Int64, false),
        ]);
        let r2 = stream_schema(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Int64, false),
        ]);
        let err = mk(&clash, &r2, JoinKind::Inner).err().unwrap();
        assert!(
            matches!(err, Error::InvalidPlan(ref m) if m.contains("x_right")),
            "{err}"
        );
    }

    #[test]
    fn validation() {
        let base = || spec(Keys::Int, JoinKind::Inner, 0, 10, 0, LatePolicy::Drop);
        let err = |s: JoinSpec| IntervalJoin::new(s).err().expect("should fail");

        let e = err(JoinSpec {
            on: vec!["nope".into()],
            ..base()
        });
        assert!(matches!(e, Error::ColumnNotFound { .. }), "{e}");
        assert!(
            e.to_string().contains("nope") && !e.to_string().contains(TIME_COLUMN),
            "{e}"
        );
        let e = err(JoinSpec {
            on: vec![TIME_COLUMN.into()],
            ..base()
        });
        assert!(matches!(e, Error::ColumnNotFound { .. }), "{e}");
        let e = err(JoinSpec {
            on: vec![],
            ..base()
        });
        assert!(matches!(e, Error::InvalidPlan(_)), "{e}");
        let e = err(JoinSpec {
            on: vec!["k".into(), "k".into()],
            ..base()
        });
        assert!(matches!(e, Error::InvalidPlan(_)), "{e}");
        let e = err(JoinSpec {
            lower_ms: 5,
            upper_ms: 3,
            ..base()
        });
        assert!(
            e.to_string().contains("within=(5, 3)") && e.to_string().contains("lo <= hi"),
            "{e}"
        );
        let e = err(JoinSpec {
            upper_ms: MAX_SPAN_MS + 1,
            ..base()
        });
        assert!(matches!(e, Error::InvalidPlan(_)), "{e}");
        let e = err(JoinSpec {
            lower_ms: i64::MIN,
            ..base()
        });
        assert!(matches!(e, Error::InvalidPlan(_)), "{e}");
        let e = err(JoinSpec {
            lateness_ms: -1,
            ..base()
        });
        assert!(matches!(e, Error::InvalidPlan(_)), "{e}");

        let floats = stream_schema(vec![Field::new("k", DataType::Float64, true)]);
        let e = err(JoinSpec {
            left: floats.clone(),
            right: floats,
            ..base()
        });
        assert!(matches!(e, Error::ColumnType { .. }), "{e}");
        let strs = stream_schema(vec![Field::new("k", DataType::Utf8, true)]);
        let e = err(JoinSpec {
            right: strs,
            ..base()
        });
        assert!(matches!(e, Error::ColumnType { .. }), "{e}");
        let no_time = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        assert!(IntervalJoin::new(JoinSpec {
            left: no_time,
            ..base()
        })
        .is_err());
    }

    // ------------------------------------------------------------------------------------------
    // Property test against a nested-loop model.

    type Push = (usize, Vec<(Option<i64>, i64)>);

    #[derive(Debug, Clone)]
    struct Case {
        keys: Keys,
        how: JoinKind,
        lo: i64,
        hi: i64,
        lateness: i64,
        late: LatePolicy,
        delays: [i64; 2],
        /// `(port, rows as (key, t))`.
        pushes: Vec<Push>,
    }

    fn case() -> impl Strategy<Value = Case> {
        let keys = prop_oneof![
            Just(Keys::Int),
            Just(Keys::Mixed),
            Just(Keys::Str),
            Just(Keys::Two)
        ];
        let how = prop_oneof![
            Just(JoinKind::Inner),
            Just(JoinKind::Left),
            Just(JoinKind::Right),
            Just(JoinKind::Full)
        ];
        let late = prop_oneof![Just(LatePolicy::Drop), Just(LatePolicy::SideOutput)];
        let row = (proptest::option::weighted(0.9, 0..5i64), 0..100i64);
        let push = (0..2usize, proptest::collection::vec(row, 0..12));
        (
            keys,
            how,
            -25..25i64,
            0..30i64,
            0..15i64,
            late,
            [0..25i64, 0..25i64],
            proptest::collection::vec(push, 0..20),
        )
            .prop_map(
                |(keys, how, lo, width, lateness, late, delays, pushes)| Case {
                    keys,
                    how,
                    lo,
                    hi: lo + width,
                    lateness,
                    late,
                    delays,
                    pushes,
                },
            )
    }

    fn expires(side: usize, t: i64, lo: i64, hi: i64, w: i64, l: i64) -> bool {
        if side == LEFT {
            t + hi < w - l
        } else {
            t - lo < w - l
        }
    }

    fn check(c: &Case) -> std::result::Result<(), TestCaseError> {
        let mut h = Harness::new(spec(c.keys, c.how, c.lo, c.hi, c.lateness, c.late), c.keys);
        let delay = h.op.watermark_delay();
        let mut max_seen: [Option<i64>; 2] = [None, None];
        let mut w: Option<i64> = None;
        let mut kept: [Vec<(Option<i64>, i64, i64)>; 2] = [Vec::new(), Vec::new()];
        let mut want_late = Vec::new();
        let mut got = Vec::new();
        let mut next_id = 0;
        for (side, rows) in &c.pushes {
            let side = *side;
            let rows: Vec<(Option<i64>, i64, i64)> = rows
                .iter()
                .map(|&(k, t)| {
                    next_id += 1;
                    (k, next_id, t)
                })
                .collect();
            for &(k, id, t) in &rows {
                if w.is_some_and(|w| t < w - c.lateness) {
                    want_late.push(if side == LEFT {
                        (k, Some(id), None, t)
                    } else {
                        (k, None, Some(id), t)
                    });
                } else {
                    kept[side].push((k, id, t));
                }
            }
            let out = h.push(side, &rows);
            for r in &out {
                if let Some(w) = w {
                    prop_assert!(
                        r.3 >= w - c.lateness,
                        "row {r:?} emitted on arrival under {w}"
                    );
                }
                if r.1.is_none() || r.2.is_none() {
                    prop_assert!(r.0.is_none(), "unmatched row {r:?} emitted on arrival");
                }
            }
            got.extend(out);
            if let Some(mx) = rows.iter().map(|r| r.2).max() {
                max_seen[side] = Some(max_seen[side].map_or(mx, |m| m.max(mx)));
            }
            let new_w = match max_seen {
                [Some(a), Some(b)] => Some((a - c.delays[0]).min(b - c.delays[1])),
                _ => None,
            };
            if new_w > w {
                let prev = w;
                w = new_w;
                let wm = w.unwrap();
                let out = h.advance(wm);
                for r in &out {
                    let side = if r.2.is_none() { LEFT } else { RIGHT };
                    prop_assert!(
                        r.1.is_none() || r.2.is_none(),
                        "match {r:?} emitted by a watermark"
                    );
                    prop_assert!(
                        expires(side, r.3, c.lo, c.hi, wm, c.lateness),
                        "{r:?} emitted too early at {wm}"
                    );
                    if let Some(p) = prev {
                        prop_assert!(
                            r.3 >= p - delay,
                            "{r:?} emitted at {wm} breaks the delay {delay} after {p}"
                        );
                    }
                }
                got.extend(out);
                let held: usize = (0..2)
                    .map(|s| {
                        kept[s]
                            .iter()
                            .filter(|r| {
                                r.0.is_some() && !expires(s, r.2, c.lo, c.hi, wm, c.lateness)
                            })
                            .count()
                    })
                    .sum();
                prop_assert_eq!(h.state() as usize, held, "rows held at {}", wm);
            }
        }
        got.extend(h.advance(Timestamp::MAX));
        got.sort();
        prop_assert_eq!(h.state(), 0);
        prop_assert_eq!(h.op.index.table.len(), 0);

        // Nested-loop model over the on-time rows.
        let mut want = Vec::new();
        let mut matched = [vec![false; kept[0].len()], vec![false; kept[1].len()]];
        for (i, l) in kept[LEFT].iter().enumerate() {
            for (j, r) in kept[RIGHT].iter().enumerate() {
                if l.0.is_some() && l.0 == r.0 && l.2 + c.lo <= r.2 && r.2 <= l.2 + c.hi {
                    want.push((l.0, Some(l.1), Some(r.1), l.2.max(r.2)));
                    matched[LEFT][i] = true;
                    matched[RIGHT][j] = true;
                }
            }
        }
        if c.how.left_outer() {
            for (i, l) in kept[LEFT].iter().enumerate() {
                if !matched[LEFT][i] {
                    want.push((l.0, Some(l.1), None, l.2));
                }
            }
        }
        if c.how.right_outer() {
            for (j, r) in kept[RIGHT].iter().enumerate() {
                if !matched[RIGHT][j] {
                    want.push((r.0, None, Some(r.1), r.2));
                }
            }
        }
        want.sort();
        prop_assert_eq!(got, want);
        want_late.sort();
        let m = h.op.metrics();
        match c.late {
            LatePolicy::Drop => {
                prop_assert_eq!(m.late_dropped as usize, want_late.len());
                prop_assert_eq!(m.late_side_output, 0);
                prop_assert!(h.late.is_empty());
            }
            LatePolicy::SideOutput => {
                prop_assert_eq!(m.late_dropped, 0);
                prop_assert_eq!(m.late_side_output as usize, want_late.len());
                prop_assert_eq!(h.take_late(), want_late);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_the_nested_loop_model(c in case()) {
            check(&c)?;
        }
    }
}
