//! `Dedup`: drops rows whose key was kept less than `within` ago in event time.
//!
//! What it owns: the per-key state of one dedup step — for every key, the event time `k` of
//! the last row it *kept* — held in a [`StateStore`] (a [`MemStore`] unless the caller hands
//! it another store, such as an [`MmapStore`](crate::state::MmapStore)). A store key is the
//! key columns' Arrow row-format bytes (null keys encode alike, so they compare equal, as
//! group keys do); its value is `k` as 8 little-endian bytes.
//!
//! Per batch (`docs/SEMANTICS.md`, "Dedup"): the key columns are encoded once, vectorised,
//! into a reused buffer ([`KeyEncoder::encode_into`]); then the rows are judged in row order:
//! a row with `t < W` (the watermark in force before the batch) is late (dropped, counted); a
//! row whose key has a `k` with `|t - k| < within` is a duplicate (dropped, counted); any
//! other row is kept and its key's `k` becomes `t`. Each distinct key of the batch is read
//! from the store once, into a slot found by a hash probe (`BatchKeys`), and written back
//! once after the batch if a kept row changed it (for a key already held, a `MemStore`
//! overwrites the 8 bytes in place). The kept rows leave as one `filter_record_batch` of the
//! batch (the batch itself when every row is kept), unchanged.
//!
//! Expiry: an entry with `k + within <= W` can never match a non-late row again (such a row
//! has `t >= W >= k + within`), so deleting it changes no result. The store is swept — one
//! ordered scan collecting the expired keys into a reused flat buffer, then one `delete`
//! each — when the watermark has moved at least `within / 2` (at least 1 ms) past the
//! watermark of the previous sweep. Chosen over a second, time-ordered index in the same
//! store because that would cost two more writes and a new key (an allocation) for every kept
//! row, while the sweep is amortised: an entry is kept at `t >= W`, expires once `W` reaches
//! `t + within`, and sweeps are `within / 2` of watermark apart, so each entry is scanned by
//! at most about four sweeps over its life — O(1) per kept row, and nothing per batch between
//! sweeps. State therefore holds only keys kept within the last `1.5 × within` of event time
//! (plus what arrived since the watermark last moved); at `flush()` (`W = +inf`) it empties.
//!
//! Invariants:
//! - every value in the store is exactly 8 bytes (checked when a store or a checkpoint is
//!   loaded; a wrong one found later is an error, never a panic);
//! - every held `k` is the time of a row this operator kept, and no held entry has
//!   `k + within <= W` for a `W` at which a sweep ran;
//! - the output schema is the input schema, and output rows are input rows in input order.
//!
//! What it must never do: take a lock, call into Python, allocate per row for a key it
//! already holds, scan the whole store on every batch, or emit a row it judged late or
//! duplicate. It knows nothing about cores: the engine routes equal keys to one core.

use std::hash::BuildHasher;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_buffer::BooleanBufferBuilder;
use arrow_row::Rows;
use arrow_schema::SchemaRef;
use arrow_select::filter::filter_record_batch;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::keys::{is_key_type, key_indices, key_type_error, KeyEncoder};
use super::snapshot::{decode, encode};
use super::{Operator, OperatorContext, OperatorMetrics};
use crate::engine::{is_hidden_column, TIME_COLUMN};
use crate::error::{Error, Result};
use crate::state::{MemStore, StateError, StateStore};
use crate::time::Timestamp;

/// The checkpoint form of a [`Dedup`]: the store's state image plus the operator's own
/// fields.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct DedupState {
    /// `StateStore::snapshot_to` of the store (it carries its own checksum).
    store: Vec<u8>,
    /// The `within` the state was built with (a restore into another one is refused).
    within_ms: i64,
    /// The watermark of the last sweep.
    last_sweep: Option<i64>,
    late_dropped: u64,
    duplicates_dropped: u64,
    peak_keys: u64,
}

/// A damaged or foreign dedup state.
fn damaged(what: impl std::fmt::Display) -> Error {
    Error::Snapshot(format!("the saved state of dedup is damaged: {what}"))
}

/// The store failed to tidy itself (e.g. an `MmapStore` could not write its file).
fn maintain_error(e: StateError) -> Error {
    Error::Runtime(format!("dedup state store: {e}"))
}

fn store_error(e: StateError) -> Error {
    Error::Snapshot(format!("dedup: {e}"))
}

/// The `k` a store value holds.
#[inline]
fn read_k(value: &[u8]) -> Result<i64> {
    <[u8; 8]>::try_from(value)
        .map(i64::from_le_bytes)
        .map_err(|_| damaged(format!("a value is {} bytes, not 8", value.len())))
}

/// Checks that every value of `store` is an 8-byte `k`.
fn check_values(store: &dyn StateStore) -> Result<()> {
    for (_, v) in store.iter() {
        read_k(v)?;
    }
    Ok(())
}

/// Keyed deduplication within an event-time distance (see the module docs).
pub struct Dedup {
    schema: SchemaRef,
    key_columns: Vec<usize>,
    time_index: usize,
    within: i64,
    /// Sweep when the watermark has moved this far since the last sweep.
    sweep_every: i64,
    encoder: KeyEncoder,
    store: Box<dyn StateStore>,
    /// The watermark of the last sweep (`None`: none yet).
    last_sweep: Option<Timestamp>,
    late_dropped: u64,
    duplicates_dropped: u64,
    peak_keys: u64,
    // Scratch reused across batches.
    keys: Vec<ArrayRef>,
    rows: Rows,
    expired: Vec<u8>,
    expired_ends: Vec<usize>,
    batch_keys: BatchKeys,
}

/// The keys one batch touches, each read from the store once and written back once.
///
/// A batch usually holds several rows per key (workload A: ten), and a store lookup costs far
/// more than a hash probe (an ordered store compares key bytes at every level). So the first
/// row of a key reads its `k` from the store into a slot, later rows of that key in the batch
/// read and update the slot, and the slots that changed are written back after the batch.
/// The rule sees exactly the `k` it would see with one store access per row, because within
/// a batch only this operator touches the store, row after row.
#[derive(Default)]
struct BatchKeys {
    hasher: DefaultHashBuilder,
    /// Slot numbers, by the hash of the key's bytes.
    table: HashTable<u32>,
    slots: Vec<Slot>,
}

/// A key of the batch: the row it was first seen in (its bytes are that row's), its current
/// `k`, and whether a kept row changed `k`.
#[derive(Clone, Copy)]
struct Slot {
    row: u32,
    k: Option<i64>,
    changed: bool,
}

impl BatchKeys {
    fn clear(&mut self) {
        self.table.clear();
        self.slots.clear();
    }

    /// The slot of the key of row `i`, read from `store` the first time the batch meets it.
    fn slot(&mut self, rows: &Rows, i: usize, store: &dyn StateStore) -> Result<&mut Slot> {
        let key = rows.row(i);
        let key = key.data();
        let h = self.hasher.hash_one(key);
        let BatchKeys {
            hasher,
            table,
            slots,
        } = self;
        let found = table.find(h, |&s| {
            rows.row(slots[s as usize].row as usize).data() == key
        });
        let s = match found {
            Some(&s) => s as usize,
            None => {
                let k = store.get(key).map(read_k).transpose()?;
                let s = slots.len();
                slots.push(Slot {
                    row: i as u32,
                    k,
                    changed: false,
                });
                table.insert_unique(h, s as u32, |&x| {
                    hasher.hash_one(rows.row(slots[x as usize].row as usize).data())
                });
                s
            }
        };
        Ok(&mut slots[s])
    }
}

impl Dedup {
    /// A dedup of stream `input` on the columns `on`, dropping a row when its key was kept
    /// less than `within_ms` before (or after) it in event time; state in a [`MemStore`].
    pub fn new(on: &[String], within_ms: i64, input: SchemaRef) -> Result<Self> {
        Self::with_store(on, within_ms, input, Box::new(MemStore::new()))
    }

    /// As [`new`](Self::new), with the keyed state in `store` (e.g. an
    /// [`MmapStore`](crate::state::MmapStore) for state larger than memory). What `store`
    /// already holds is taken as the state (every value must be an 8-byte `k`); normally it
    /// is empty.
    pub fn with_store(
        on: &[String],
        within_ms: i64,
        input: SchemaRef,
        store: Box<dyn StateStore>,
    ) -> Result<Self> {
        if on.is_empty() {
            return Err(Error::InvalidPlan(
                "dedup needs at least one key column: on=\"id\" or on=[\"a\", \"b\"]".into(),
            ));
        }
        for (i, k) in on.iter().enumerate() {
            if on[..i].contains(k) {
                return Err(Error::InvalidPlan(format!(
                    "dedup on= names the column '{k}' twice"
                )));
            }
        }
        if within_ms <= 0 {
            return Err(Error::InvalidPlan(format!(
                "dedup within must be longer than zero, got {within_ms} ms; e.g. within=\"10s\""
            )));
        }
        if let Some(k) = on.iter().find(|k| is_hidden_column(k)) {
            return Err(Error::column_not_found(k, " in dedup", &input));
        }
        let key_columns = key_indices(on, &input, " in dedup")?;
        let mut types = Vec::with_capacity(on.len());
        for (&c, name) in key_columns.iter().zip(on) {
            let dt = input.field(c).data_type();
            if !is_key_type(dt) {
                return Err(key_type_error(name, "dedup keys", dt));
            }
            types.push(dt.clone());
        }
        let time_index = input
            .index_of(TIME_COLUMN)
            .map_err(|_| Error::InvalidPlan("dedup input has no event-time column".into()))?;
        check_values(store.as_ref())?;
        let encoder = KeyEncoder::new(&types)?;
        let rows = encoder.empty_rows();
        Ok(Dedup {
            schema: input,
            key_columns,
            time_index,
            within: within_ms,
            sweep_every: (within_ms / 2).max(1),
            encoder,
            peak_keys: store.len() as u64,
            store,
            last_sweep: None,
            late_dropped: 0,
            duplicates_dropped: 0,
            keys: Vec::new(),
            rows,
            expired: Vec::new(),
            expired_ends: Vec::new(),
            batch_keys: BatchKeys::default(),
        })
    }

    /// The store holding the keyed state.
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    /// Deletes every entry with `k + within <= wm` (all of them at `wm = +inf`).
    fn sweep(&mut self, wm: Timestamp) -> Result<()> {
        self.last_sweep = Some(wm);
        if self.store.is_empty() {
            return Ok(());
        }
        // k + within <= wm  <=>  k <= wm - within; below i64::MIN nothing is expired.
        let cutoff = if wm == Timestamp::MAX {
            Timestamp::MAX
        } else {
            match wm.checked_sub(self.within) {
                Some(c) => c,
                None => return Ok(()),
            }
        };
        self.expired.clear();
        self.expired_ends.clear();
        for (key, value) in self.store.iter() {
            if read_k(value)? <= cutoff {
                self.expired.extend_from_slice(key);
                self.expired_ends.push(self.expired.len());
            }
        }
        let mut start = 0;
        for &end in &self.expired_ends {
            self.store.delete(&self.expired[start..end]);
            start = end;
        }
        self.store.maintain().map_err(maintain_error)
    }

    #[cfg(test)]
    fn never_sweep(mut self) -> Self {
        self.sweep_every = i64::MAX;
        self
    }
}

impl Operator for Dedup {
    fn name(&self) -> &'static str {
        "dedup"
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let n = input.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.keys.clear();
        self.keys
            .extend(self.key_columns.iter().map(|&c| input.column(c).clone()));
        self.encoder.encode_into(&self.keys, &mut self.rows)?;
        self.keys.clear();
        let times = input
            .column(self.time_index)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::InvalidPlan("dedup input's event time is not int64".into()))?
            .values();
        let wm = ctx.watermark();
        let within = self.within.unsigned_abs();
        let mut keep = BooleanBufferBuilder::new(n);
        let mut kept = 0usize;
        self.batch_keys.clear();
        for (i, &t) in times.iter().enumerate() {
            if wm.is_some_and(|w| t < w) {
                self.late_dropped += 1;
                keep.append(false);
                continue;
            }
            let slot = self.batch_keys.slot(&self.rows, i, self.store.as_ref())?;
            if slot.k.is_some_and(|k| t.abs_diff(k) < within) {
                self.duplicates_dropped += 1;
                keep.append(false);
            } else {
                slot.k = Some(t);
                slot.changed = true;
                keep.append(true);
                kept += 1;
            }
        }
        for slot in self.batch_keys.slots.iter().filter(|s| s.changed) {
            if let Some(k) = slot.k {
                self.store
                    .put(self.rows.row(slot.row as usize).data(), &k.to_le_bytes());
            }
        }
        self.store.maintain().map_err(maintain_error)?;
        self.peak_keys = self.peak_keys.max(self.store.len() as u64);
        if kept == n {
            ctx.emit(input.clone());
        } else if kept > 0 {
            let mask = BooleanArray::new(keep.finish(), None);
            ctx.emit(filter_record_batch(input, &mask)?);
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        let due = match self.last_sweep {
            None => true,
            Some(last) => wm == Timestamp::MAX || wm.saturating_sub(last) >= self.sweep_every,
        };
        if due {
            self.sweep(wm)?;
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            late_dropped: self.late_dropped,
            duplicates_dropped: self.duplicates_dropped,
            state_rows: self.store.len() as u64,
            peak_state_rows: self.peak_keys,
            ..OperatorMetrics::default()
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut image = Vec::new();
        self.store.snapshot_to(&mut image).map_err(store_error)?;
        encode(&DedupState {
            store: image,
            within_ms: self.within,
            last_sweep: self.last_sweep,
            late_dropped: self.late_dropped,
            duplicates_dropped: self.duplicates_dropped,
            peak_keys: self.peak_keys,
        })
    }

    /// Loads the store image with [`StateStore::restore`] (validated before it replaces the
    /// contents), then checks every value. On an error the query's restore fails as a whole
    /// and the engine refuses the checkpoint, so what the store then holds is never used.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let st: DedupState = decode(state, self.name())?;
        if st.within_ms != self.within {
            return Err(Error::Snapshot(format!(
                "dedup: the checkpoint was taken with within={} ms, this query has {} ms (was the pipeline changed?)",
                st.within_ms, self.within
            )));
        }
        self.store.restore(&st.store).map_err(store_error)?;
        check_values(self.store.as_ref())?;
        if st.peak_keys < self.store.len() as u64 {
            return Err(damaged("it holds more keys than its peak"));
        }
        self.last_sweep = st.last_sweep;
        self.late_dropped = st.late_dropped;
        self.duplicates_dropped = st.duplicates_dropped;
        self.peak_keys = st.peak_keys;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::TimerPayload;
    use crate::state::MmapStore;
    use crate::time::timer_wheel::TimerWheel;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A row: `(s, k, id, t)`; single-key tests use `k` only.
    type Row = (Option<&'static str>, Option<i64>, i64, i64);

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("k", DataType::Int64, true),
            Field::new("id", DataType::Int64, false),
            Field::new(TIME_COLUMN, DataType::Int64, false),
        ]))
    }

    fn batch(rows: &[Row]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn keys(on: &[&str]) -> Vec<String> {
        on.iter().map(|s| s.to_string()).collect()
    }

    /// Drives one operator the way the reactor does: a batch is judged against the
    /// watermark in force, then the watermark moves (bounded delay).
    struct Harness {
        op: Dedup,
        timers: TimerWheel<TimerPayload>,
        wm: Option<i64>,
        max_seen: Option<i64>,
        delay: Option<i64>,
    }

    impl Harness {
        fn new(on: &[&str], within: i64) -> Self {
            Self::of(Dedup::new(&keys(on), within, schema()).unwrap())
        }

        fn of(op: Dedup) -> Self {
            Harness {
                op,
                timers: TimerWheel::new(),
                wm: None,
                max_seen: None,
                delay: None,
            }
        }

        /// Moves the watermark to `max seen - delay` after every batch.
        fn with_delay(mut self, delay: i64) -> Self {
            self.delay = Some(delay);
            self
        }

        /// Pushes rows; returns the ids kept, in order.
        fn push(&mut self, rows: &[Row]) -> Vec<i64> {
            let b = batch(rows);
            let (mut out, mut late) = (Vec::new(), Vec::new());
            let mut ctx =
                OperatorContext::new(self.wm, 0, 0, &mut self.timers, &mut out, &mut late);
            self.op.process(&b, &mut ctx).unwrap();
            assert!(late.is_empty(), "dedup has no side output");
            let mut ids = Vec::new();
            for o in &out {
                assert_eq!(o.schema(), schema());
                ids.extend(o.column(2).as_primitive::<Int64Type>().values().iter());
            }
            if let (Some(d), Some(m)) = (self.delay, rows.iter().map(|r| r.3).max()) {
                let m = self.max_seen.map_or(m, |s| s.max(m));
                self.max_seen = Some(m);
                if self.wm.is_none_or(|w| m - d > w) {
                    self.advance(m - d);
                }
            }
            ids
        }

        fn advance(&mut self, wm: i64) {
            self.wm = Some(wm);
            let (mut out, mut late) = (Vec::new(), Vec::new());
            let mut ctx =
                OperatorContext::new(self.wm, 0, 0, &mut self.timers, &mut out, &mut late);
            self.op.on_watermark(wm, &mut ctx).unwrap();
            assert!(out.is_empty() && late.is_empty());
        }

        fn len(&self) -> usize {
            self.op.store().len()
        }
    }

    fn k(key: Option<i64>, id: i64, t: i64) -> Row {
        (None, key, id, t)
    }

    #[test]
    fn keeps_the_first_row_and_drops_rows_closer_than_within_to_the_last_kept() {
        let mut h = Harness::new(&["k"], 10);
        // Within one batch, in row order: 1 kept (k=100); 2 dup; 3 kept (|111-100| = 11);
        // 4 dup of 3; 5 (out of order) dup of 3 (|103-111| = 8); 6 another key.
        let got = h.push(&[
            k(Some(1), 1, 100),
            k(Some(1), 2, 105),
            k(Some(1), 3, 111),
            k(Some(1), 4, 115),
            k(Some(1), 5, 103),
            k(Some(2), 6, 104),
        ]);
        assert_eq!(got, vec![1, 3, 6]);
        // Across batches: the remembered k of key 1 is 111 (the last *kept*, not the last seen).
        assert_eq!(h.push(&[k(Some(1), 7, 120), k(Some(1), 8, 121)]), vec![8]);
        // Earlier than k, far enough: kept, and k moves back to it.
        assert_eq!(h.push(&[k(Some(1), 9, 100), k(Some(1), 10, 109)]), vec![9]);
        let m = h.op.metrics();
        assert_eq!((m.duplicates_dropped, m.late_dropped), (5, 0));
        assert_eq!((m.state_rows, m.peak_state_rows), (2, 2));
    }

    #[test]
    fn a_distance_of_exactly_within_is_kept() {
        let mut h = Harness::new(&["k"], 10);
        assert_eq!(
            h.push(&[
                k(Some(1), 1, 100),
                k(Some(1), 2, 110), // |110 - 100| = 10: kept, k = 110
                k(Some(1), 3, 100), // |100 - 110| = 10: kept, k = 100
                k(Some(1), 4, 91),  // 9: dup
                k(Some(1), 5, 90),  // 10: kept
                k(Some(1), 6, 99),  // 9: dup
            ]),
            vec![1, 2, 3, 5]
        );
        let mut one = Harness::new(&["k"], 1);
        assert_eq!(
            one.push(&[k(Some(1), 1, 5), k(Some(1), 2, 5), k(Some(1), 3, 6)]),
            vec![1, 3]
        );
    }

    #[test]
    fn null_keys_are_one_key_of_their_own() {
        let mut h = Harness::new(&["k"], 10);
        assert_eq!(
            h.push(&[
                k(None, 1, 100),
                k(Some(0), 2, 101),
                k(None, 3, 102),
                k(Some(0), 4, 103),
                k(None, 5, 200),
            ]),
            vec![1, 2, 5]
        );
    }

    #[test]
    fn compound_keys_compare_every_column() {
        let mut h = Harness::new(&["s", "k"], 10);
        let rows = [
            (Some("a"), Some(1), 1, 100),
            (Some("a"), Some(2), 2, 100),
            (Some("b"), Some(1), 3, 100),
            (Some(""), Some(1), 4, 100),
            (None, Some(1), 5, 100),
            (None, None, 6, 100),
            (Some("a"), None, 7, 100),
            // duplicates of each of the above
            (Some("a"), Some(1), 8, 101),
            (Some("a"), Some(2), 9, 101),
            (Some("b"), Some(1), 10, 101),
            (Some(""), Some(1), 11, 101),
            (None, Some(1), 12, 101),
            (None, None, 13, 101),
            (Some("a"), None, 14, 101),
        ];
        assert_eq!(h.push(&rows), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(h.len(), 7);
    }

    #[test]
    fn late_rows_are_dropped_counted_and_remember_nothing() {
        let mut h = Harness::new(&["k"], 10);
        h.advance(100);
        // 1 is late (t < W) although its key is new; it sets no k, so 2 is kept. 3 (t == W)
        // is on time.
        assert_eq!(
            h.push(&[k(Some(1), 1, 99), k(Some(1), 2, 104), k(Some(2), 3, 100)]),
            vec![2, 3]
        );
        // Late even though a duplicate: counted as late only.
        assert_eq!(h.push(&[k(Some(1), 4, 98)]), Vec::<i64>::new());
        let m = h.op.metrics();
        assert_eq!((m.late_dropped, m.duplicates_dropped), (2, 0));
    }

    #[test]
    fn expiry_deletes_entries_once_the_watermark_passes_them() {
        let within = 100;
        let mut h = Harness::new(&["k"], within);
        h.advance(0); // the first watermark sweeps (nothing yet)
        let rows: Vec<Row> = (0..50).map(|i| k(Some(i), i, i * 10)).collect(); // k = 0..490
        assert_eq!(h.push(&rows).len(), 50);
        assert_eq!(h.len(), 50);
        // Less than within / 2 past the last sweep: no sweep yet, although 0 + 100 <= 49.
        h.advance(49);
        assert_eq!(h.len(), 50);
        // A sweep at 250 deletes k <= 150 (16 entries: k = 0, 10, ..., 150).
        h.advance(250);
        assert_eq!(h.len(), 34);
        h.advance(400); // deletes k <= 300
        assert_eq!(h.len(), 19);
        // Expired keys are kept again (they could not have matched anyway).
        assert_eq!(
            h.push(&[k(Some(5), 100, 401), k(Some(40), 101, 402)]),
            vec![100]
        );
        h.advance(Timestamp::MAX); // flush: everything expires
        assert_eq!(h.len(), 0);
        assert_eq!(h.op.metrics().peak_state_rows, 50);
    }

    #[test]
    fn expiry_boundary_is_exact() {
        for within in [1, 2, 3, 10, 101] {
            let mut h = Harness::new(&["k"], within);
            h.advance(0);
            assert_eq!(
                h.push(&[k(Some(1), 1, 1000), k(Some(2), 2, 1001)]),
                vec![1, 2]
            );
            // A sweep at W = 1000 + within: key 1 (k + within == W) expires, key 2
            // (k + within == W + 1) must stay ...
            let w = 1000 + within;
            h.advance(w);
            assert_eq!(h.len(), 1, "within {within}");
            // ... because a row of key 2 at t = W is still its duplicate (|W - 1001| < within).
            assert_eq!(h.push(&[k(Some(2), 3, w), k(Some(1), 4, w)]), vec![4]);
        }
    }

    /// A plain model of the semantics: ids kept, late and duplicate counts.
    fn model(batches: &[Vec<Row>], within: i64, delay: i64) -> (Vec<i64>, u64, u64) {
        let mut last: std::collections::HashMap<Option<i64>, i64> = Default::default();
        let (mut wm, mut max_seen): (Option<i64>, Option<i64>) = (None, None);
        let (mut kept, mut late, mut dups) = (Vec::new(), 0, 0);
        for b in batches {
            for &(_, key, id, t) in b {
                if wm.is_some_and(|w| t < w) {
                    late += 1;
                } else if last.get(&key).is_some_and(|&k| (t - k).abs() < within) {
                    dups += 1;
                } else {
                    last.insert(key, t);
                    kept.push(id);
                }
            }
            if let Some(m) = b.iter().map(|r| r.3).max() {
                let m = max_seen.map_or(m, |s| s.max(m));
                max_seen = Some(m);
                wm = Some(wm.map_or(m - delay, |w| w.max(m - delay)));
            }
        }
        (kept, late, dups)
    }

    /// Batches of rows `(key, id, t)`: batch `b` has times `b * span + step - jitter`
    /// (`step < span`, `jitter < max_jitter`), keys below `keys` or null, ids in push order.
    fn batches_of(span: i64, max_jitter: i64, keys: i64) -> impl Strategy<Value = Vec<Vec<Row>>> {
        prop::collection::vec(
            prop::collection::vec((prop::option::of(0..keys), 0..span, 0..max_jitter), 0..12),
            1..12,
        )
        .prop_map(move |bs| {
            let mut id = 0;
            bs.into_iter()
                .enumerate()
                .map(|(b, rows)| {
                    rows.into_iter()
                        .map(|(key, step, jitter)| {
                            id += 1;
                            (None, key, id, b as i64 * span + step - jitter)
                        })
                        .collect()
                })
                .collect()
        })
    }

    /// Sparse data, and dense data whose times often land exactly on the watermark and on
    /// `k ± within` (the boundaries of the rules and of expiry).
    fn batches_strategy() -> impl Strategy<Value = Vec<Vec<Row>>> {
        prop_oneof![batches_of(40, 60, 6), batches_of(4, 6, 3)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Sweeping (at any pace) never changes a result: the operator equals the model and
        /// an operator that never expires anything, while holding no more keys than it.
        #[test]
        fn expiry_never_changes_results(
            batches in batches_strategy(),
            within in prop_oneof![1i64..8, 1i64..120],
            delay in prop_oneof![0i64..4, 0i64..80],
        ) {
            let mut swept = Harness::new(&["k"], within).with_delay(delay);
            let mut kept_all =
                Harness::of(Dedup::new(&keys(&["k"]), within, schema()).unwrap().never_sweep())
                    .with_delay(delay);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for rows in &batches {
                a.extend(swept.push(rows));
                b.extend(kept_all.push(rows));
                prop_assert!(swept.len() <= kept_all.len());
            }
            let (want, late, dups) = model(&batches, within, delay);
            prop_assert_eq!(&a, &want);
            prop_assert_eq!(&b, &want);
            let m = swept.op.metrics();
            prop_assert_eq!((m.late_dropped, m.duplicates_dropped), (late, dups));
            // Every entry left is one that the watermark has not passed by within + a sweep.
            if let Some(w) = swept.wm {
                for (_, v) in swept.op.store().iter() {
                    prop_assert!(read_k(v).unwrap() + within > w - (within / 2).max(1));
                }
            }
        }

        /// snapshot → restore (into a MemStore- or an MmapStore-backed operator) mid-stream
        /// continues exactly like the uninterrupted operator.
        #[test]
        fn snapshot_restore_continues_identically(
            batches in batches_strategy(), within in 1i64..120, delay in 0i64..80,
            cut in 0usize..12, mmap in any::<bool>(),
        ) {
            let cut = cut.min(batches.len());
            let mut whole = Harness::new(&["k"], within).with_delay(delay);
            for rows in &batches[..cut] {
                whole.push(rows);
            }
            let bytes = whole.op.snapshot().unwrap();
            let dir = TempDir::new("restore");
            let store: Box<dyn StateStore> = if mmap {
                Box::new(MmapStore::build(dir.path.join("state"), std::iter::empty).unwrap())
            } else {
                Box::new(MemStore::new())
            };
            let mut op = Dedup::with_store(&keys(&["k"]), within, schema(), store).unwrap();
            op.restore(&bytes).unwrap();
            let mut resumed = Harness::of(op).with_delay(delay);
            resumed.wm = whole.wm;
            resumed.max_seen = whole.max_seen;
            prop_assert_eq!(resumed.len(), whole.len());
            prop_assert_eq!(resumed.op.metrics(), whole.op.metrics());
            for rows in &batches[cut..] {
                prop_assert_eq!(resumed.push(rows), whole.push(rows));
                prop_assert_eq!(resumed.op.metrics(), whole.op.metrics());
            }
        }
    }

    /// A dedup whose state is a scratch `MmapStore` gives the same rows as one in memory
    /// through enough keys to compact the file several times (`maintain`), sweeps included,
    /// and the file is gone once the operator is.
    #[test]
    fn a_scratch_mmap_store_compacts_and_matches_the_memory_store() {
        let dir = TempDir::new("scratch");
        let store = MmapStore::scratch(&dir.path).unwrap();
        let mut on_disk =
            Harness::of(Dedup::with_store(&keys(&["k"]), 50, schema(), Box::new(store)).unwrap())
                .with_delay(10);
        let mut in_memory = Harness::new(&["k"], 50).with_delay(10);
        let files = || std::fs::read_dir(&dir.path).unwrap().count();
        assert_eq!(files(), 1);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut id = 0i64;
        for b in 0..60i64 {
            let rows: Vec<Row> = (0..5_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    id += 1;
                    // 400k keys; times move 2 ms per batch, with 5 ms of disorder.
                    k(Some((x % 400_000) as i64), id, b * 2 + (x >> 40) as i64 % 5)
                })
                .collect();
            assert_eq!(on_disk.push(&rows), in_memory.push(&rows), "batch {b}");
            assert_eq!(on_disk.op.store().len(), in_memory.op.store().len());
        }
        assert!(in_memory.op.store().len() > 2 * MmapStore::COMPACT_AT);
        assert_eq!(on_disk.op.metrics(), in_memory.op.metrics());
        // The keys went into the file (compactions ran), not only into the in-memory overlay.
        let file = std::fs::read_dir(&dir.path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let bytes = file.metadata().unwrap().len();
        assert!(
            bytes > 10 * MmapStore::COMPACT_AT as u64,
            "file of {bytes} bytes"
        );
        drop(on_disk);
        assert_eq!(files(), 0, "the scratch file outlived its store");
    }

    /// A directory removed on drop.
    struct TempDir {
        path: std::path::PathBuf,
    }

    impl TempDir {
        fn new(name: &str) -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "laminar-dedup-{}-{name}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir { path }
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    #[test]
    fn snapshot_holds_the_store_and_a_restored_duplicate_is_still_dropped() {
        let mut h = Harness::new(&["k"], 1000);
        assert_eq!(
            h.push(&[k(Some(1), 1, 100), k(Some(2), 2, 100)]),
            vec![1, 2]
        );
        h.advance(50);
        let bytes = h.op.snapshot().unwrap();
        let mut fresh = Harness::new(&["k"], 1000);
        fresh.op.restore(&bytes).unwrap();
        fresh.wm = h.wm;
        assert_eq!(fresh.len(), 2);
        assert_eq!(
            fresh.push(&[k(Some(1), 3, 900), k(Some(3), 4, 900)]),
            vec![4]
        );
        // A checkpoint of another `within`, or damaged bytes, are refused.
        let mut other = Dedup::new(&keys(&["k"]), 999, schema()).unwrap();
        let err = other.restore(&bytes).unwrap_err().to_string();
        assert!(err.contains("within"), "{err}");
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            let mut op = Dedup::new(&keys(&["k"]), 1000, schema()).unwrap();
            assert!(op.restore(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_store_holding_values_that_are_not_times_is_refused() {
        let mut bad = MemStore::new();
        bad.put(b"key", b"short");
        let err = Dedup::with_store(&keys(&["k"]), 10, schema(), Box::new(bad))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not 8"), "{err}");
        // The same store image inside a checkpoint.
        let mut bad = MemStore::new();
        bad.put(b"key", b"short");
        let bytes = encode(&DedupState {
            store: bad.snapshot().unwrap(),
            within_ms: 10,
            last_sweep: None,
            late_dropped: 0,
            duplicates_dropped: 0,
            peak_keys: 1,
        })
        .unwrap();
        let mut op = Dedup::new(&keys(&["k"]), 10, schema()).unwrap();
        assert!(op
            .restore(&bytes)
            .unwrap_err()
            .to_string()
            .contains("not 8"));
    }

    #[test]
    fn bad_plans_are_refused_with_what_to_fix() {
        let err = |on: &[&str], within: i64| {
            Dedup::new(&keys(on), within, schema())
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err(&[], 10).contains("at least one key column"));
        assert!(err(&["k", "k"], 10).contains("twice"));
        assert!(err(&["k"], 0).contains("longer than zero"));
        assert!(err(&["k"], -5).contains("longer than zero"));
        let e = err(&["nope"], 10);
        assert!(
            e.contains("'nope' not found in dedup") && e.contains("[s, k, id]"),
            "{e}"
        );
        assert!(err(&[TIME_COLUMN], 10).contains("not found"));
        let floats = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new(TIME_COLUMN, DataType::Int64, false),
        ]));
        let e = Dedup::new(&keys(&["x"]), 10, floats)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dedup keys must be integers"), "{e}");
    }
}
