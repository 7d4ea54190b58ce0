//! Group-key tables: map `(window start, key)` of each row to a dense group id.
//!
//! Two layouts, chosen once per query from the key columns:
//! - [`IntKeys`]: no key, or one integer key column. Keys are folded to `i64` (plus a null
//!   flag) and hashed with the window start; one probe per row, no allocation per row.
//! - [`RowKeys`]: anything else (strings, several columns). The key columns of a batch are
//!   encoded once with Arrow's row format (one allocation per batch) and each row's bytes are
//!   hashed with the window start. A group keeps its key bytes in a buffer that is reused when
//!   its id is recycled, so steady state allocates nothing per row.
//!
//! Group ids are owned by the caller (the window operator): it hands out ids through
//! [`GroupIds`], and removes a group from the table when its window closes. The table never
//! holds an id the caller has freed.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_cast::cast;
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::keys::{is_key_type, key_type_error};
use crate::error::{Error, Result};

/// Dense group ids with recycling. Ids are `u32`; the window of each live group is kept here.
#[derive(Debug, Default)]
pub struct GroupIds {
    window: Vec<i64>,
    free: Vec<u32>,
    live: usize,
    peak: usize,
}

impl GroupIds {
    /// A fresh id for a group of window `window` (a recycled one if any).
    #[inline]
    pub fn allocate(&mut self, window: i64) -> Result<u32> {
        self.live += 1;
        self.peak = self.peak.max(self.live);
        if let Some(g) = self.free.pop() {
            self.window[g as usize] = window;
            return Ok(g);
        }
        let g = u32::try_from(self.window.len())
            .map_err(|_| Error::Overflow("more than 4 billion groups held open at once".into()))?;
        self.window.push(window);
        Ok(g)
    }

    /// Returns `g` to the pool.
    pub fn release(&mut self, g: u32) {
        self.live -= 1;
        self.free.push(g);
    }

    /// Window start of live group `g`.
    #[inline]
    pub fn window(&self, g: u32) -> i64 {
        self.window[g as usize]
    }

    /// Groups alive now.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Most groups alive at once.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

/// The checkpoint form of [`GroupIds`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct GroupIdsState {
    window: Vec<i64>,
    free: Vec<u32>,
    live: u64,
    peak: u64,
}

impl GroupIds {
    /// A copy of the ids for a checkpoint.
    pub fn save(&self) -> GroupIdsState {
        GroupIdsState {
            window: self.window.clone(),
            free: self.free.clone(),
            live: self.live as u64,
            peak: self.peak as u64,
        }
    }

    /// Ids as saved by [`save`](Self::save); checks the free list against the slots.
    pub fn load(state: GroupIdsState) -> Result<GroupIds> {
        let n = state.window.len();
        let mut seen = vec![false; n];
        for &g in &state.free {
            let ok = (g as usize) < n && !std::mem::replace(&mut seen[g as usize], true);
            if !ok {
                return Err(Error::Snapshot(format!(
                    "group ids: free id {g} is out of range or listed twice"
                )));
            }
        }
        if state.live as usize != n - state.free.len() || state.peak < state.live {
            return Err(Error::Snapshot(
                "group ids: live/peak counts do not add up".into(),
            ));
        }
        Ok(GroupIds {
            window: state.window,
            free: state.free,
            live: state.live as usize,
            peak: state.peak as usize,
        })
    }

    /// The live ids, ascending.
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        let mut free = vec![false; self.window.len()];
        for &g in &self.free {
            free[g as usize] = true;
        }
        (0..self.window.len() as u32).filter(move |&g| !free[g as usize])
    }
}

/// The checkpoint form of [`GroupKeys`]: the key of every group id (the hash table is rebuilt
/// on restore, so nothing depends on hash seeds).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum GroupKeysState {
    /// [`IntKeys`]: value and null flag per group id.
    Int {
        /// Key value per group id.
        key: Vec<i64>,
        /// Null flag per group id.
        null: Vec<bool>,
    },
    /// [`RowKeys`]: Arrow row-format bytes per group id.
    Rows {
        /// Encoded key per group id.
        bytes: Vec<Vec<u8>>,
    },
}

/// The key layout of one query.
pub enum GroupKeys {
    /// No key or one integer key.
    Int(IntKeys),
    /// Strings and compound keys.
    Rows(RowKeys),
}

impl GroupKeys {
    /// Chooses a layout for `keys` (column names) of `schema`.
    pub fn new(keys: &[String], schema: &Schema) -> Result<Self> {
        let mut indices = Vec::with_capacity(keys.len());
        for k in keys {
            let i = schema
                .index_of(k)
                .map_err(|_| Error::column_not_found(k, " in group_by", schema))?;
            let dt = schema.field(i).data_type();
            if !is_key_type(dt) {
                return Err(key_type_error(k, "group_by keys", dt));
            }
            indices.push(i);
        }
        let fields: Vec<Field> = indices.iter().map(|&i| schema.field(i).clone()).collect();
        match indices.as_slice() {
            [] => Ok(GroupKeys::Int(IntKeys::new(None, fields))),
            [i] if is_int_key(schema.field(*i).data_type()) => {
                Ok(GroupKeys::Int(IntKeys::new(Some(*i), fields)))
            }
            _ => Ok(GroupKeys::Rows(RowKeys::new(indices, fields)?)),
        }
    }

    /// Output fields of the key columns.
    pub fn fields(&self) -> &[Field] {
        match self {
            GroupKeys::Int(k) => &k.fields,
            GroupKeys::Rows(k) => &k.fields,
        }
    }

    /// For each row `i` finds or creates the group of `(starts[i], key of row i)` and writes its
    /// id to `out[i]`; ids created by this call are appended to `created`.
    pub fn assign(
        &mut self,
        batch: &RecordBatch,
        starts: &[i64],
        ids: &mut GroupIds,
        out: &mut Vec<u32>,
        created: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        match self {
            GroupKeys::Int(k) => k.assign(batch, starts, ids, out, created),
            GroupKeys::Rows(k) => k.assign(batch, starts, ids, out, created),
        }
    }

    /// The group of window `window` whose key is that of group `g` (of this table), if any.
    pub fn find_like(&self, g: u32, window: i64, ids: &GroupIds) -> Option<u32> {
        match self {
            GroupKeys::Int(k) => {
                let (key, null) = (k.key[g as usize], k.null[g as usize]);
                let h = IntKeys::hash(&k.hasher, window, key, null);
                k.table
                    .find(h, |&x| {
                        k.key[x as usize] == key
                            && k.null[x as usize] == null
                            && ids.window(x) == window
                    })
                    .copied()
            }
            GroupKeys::Rows(k) => {
                let bytes = k.bytes[g as usize].as_slice();
                let h = k.hasher.hash_one((window, bytes));
                k.table
                    .find(h, |&x| {
                        ids.window(x) == window && k.bytes[x as usize] == bytes
                    })
                    .copied()
            }
        }
    }

    /// Finds or creates, in this table (ids from `ids`), the group of window `window` whose key
    /// is that of group `g` of `src` (a table of the same layout). Returns the id and whether
    /// it was created.
    pub fn insert_like(
        &mut self,
        src: &GroupKeys,
        g: u32,
        window: i64,
        ids: &mut GroupIds,
    ) -> Result<(u32, bool)> {
        match (self, src) {
            (GroupKeys::Int(k), GroupKeys::Int(s)) => {
                k.find_or_insert(window, s.key[g as usize], s.null[g as usize], ids)
            }
            (GroupKeys::Rows(k), GroupKeys::Rows(s)) => {
                k.find_or_insert(window, &s.bytes[g as usize], ids)
            }
            _ => Err(Error::InvalidPlan(
                "group tables of different layouts cannot be merged".into(),
            )),
        }
    }

    /// A copy of the keys for a checkpoint.
    pub fn save(&self) -> GroupKeysState {
        match self {
            GroupKeys::Int(k) => GroupKeysState::Int {
                key: k.key.clone(),
                null: k.null.clone(),
            },
            GroupKeys::Rows(k) => GroupKeysState::Rows {
                bytes: k.bytes.clone(),
            },
        }
    }

    /// Replaces the keys with `state` and rebuilds the table over the live groups of `ids`.
    pub fn load(&mut self, state: GroupKeysState, ids: &GroupIds) -> Result<()> {
        let live: Vec<u32> = ids.live_ids().collect();
        let too_short = |len: usize| live.last().is_some_and(|&g| g as usize >= len);
        match (self, state) {
            (GroupKeys::Int(k), GroupKeysState::Int { key, null }) => {
                if key.len() != null.len() || too_short(key.len()) {
                    return Err(Error::Snapshot("group keys: fewer keys than groups".into()));
                }
                k.key = key;
                k.null = null;
                k.recent.clear();
                k.table = HashTable::with_capacity(live.len());
                for g in live {
                    let gi = g as usize;
                    let h = IntKeys::hash(&k.hasher, ids.window(g), k.key[gi], k.null[gi]);
                    let (hasher, key, null) = (&k.hasher, &k.key, &k.null);
                    k.table.insert_unique(h, g, |&x| {
                        IntKeys::hash(hasher, ids.window(x), key[x as usize], null[x as usize])
                    });
                }
                Ok(())
            }
            (GroupKeys::Rows(k), GroupKeysState::Rows { bytes }) => {
                if too_short(bytes.len()) {
                    return Err(Error::Snapshot("group keys: fewer keys than groups".into()));
                }
                k.check_rows(&bytes, &live)?;
                k.bytes = bytes;
                k.table = HashTable::with_capacity(live.len());
                for g in live {
                    let (hasher, bytes) = (&k.hasher, &k.bytes);
                    let h = hasher.hash_one((ids.window(g), bytes[g as usize].as_slice()));
                    k.table.insert_unique(h, g, |&x| {
                        hasher.hash_one((ids.window(x), bytes[x as usize].as_slice()))
                    });
                }
                Ok(())
            }
            _ => Err(Error::Snapshot(
                "group keys: the saved key layout differs from this query's (was the pipeline changed?)"
                    .into(),
            )),
        }
    }

    /// Removes group `g` (of window `ids.window(g)`) from the table.
    pub fn remove(&mut self, g: u32, ids: &GroupIds) {
        match self {
            GroupKeys::Int(k) => k.remove(g, ids),
            GroupKeys::Rows(k) => k.remove(g, ids),
        }
    }

    /// The key columns for `groups`, in that order.
    pub fn finish(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        match self {
            GroupKeys::Int(k) => k.finish(groups),
            GroupKeys::Rows(k) => k.finish(groups),
        }
    }
}

fn is_int_key(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Timestamp(_, _)
    )
}

/// One slot of [`RecentGroups`].
#[derive(Debug, Clone, Copy)]
struct Recent {
    window: i64,
    key: i64,
    /// [`RecentGroups::EMPTY`] when the slot holds nothing.
    group: u32,
    null: bool,
}

/// A direct-mapped cache in front of [`IntKeys`]' hash table: `(window, key, null)` to the
/// group found for it last. A hit costs one multiply and one load, against a hash, a table
/// probe and three loads to verify the candidate; with a few thousand live groups (a
/// thousand keys times the open panes) most rows hit.
///
/// Invariant: a slot that is not empty holds the window, key and null flag of the live group
/// it names. Slots are filled only from the table, [`IntKeys::remove`] empties the one slot
/// a removed group can occupy before its id is released (and may be reused), and a table
/// rebuilt from a checkpoint starts with every slot empty.
struct RecentGroups {
    slots: Box<[Recent]>,
}

impl RecentGroups {
    const EMPTY: u32 = u32::MAX;
    /// 2048 slots of 24 bytes: 48 KiB, about an L1 data cache.
    const BITS: u32 = 11;

    fn new() -> Self {
        let empty = Recent {
            window: 0,
            key: 0,
            group: Self::EMPTY,
            null: false,
        };
        RecentGroups {
            slots: vec![empty; 1 << Self::BITS].into_boxed_slice(),
        }
    }

    #[inline(always)]
    fn slot(window: i64, key: i64) -> usize {
        let x = (key as u64) ^ (window as u64).rotate_left(29);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - Self::BITS)) as usize
    }

    #[inline(always)]
    fn get(&self, window: i64, key: i64, null: bool) -> Option<u32> {
        let r = &self.slots[Self::slot(window, key)];
        (r.group != Self::EMPTY && r.window == window && r.key == key && r.null == null)
            .then_some(r.group)
    }

    #[inline(always)]
    fn set(&mut self, window: i64, key: i64, null: bool, group: u32) {
        self.slots[Self::slot(window, key)] = Recent {
            window,
            key,
            group,
            null,
        };
    }

    fn forget(&mut self, window: i64, key: i64, group: u32) {
        let r = &mut self.slots[Self::slot(window, key)];
        if r.group == group {
            r.group = Self::EMPTY;
        }
    }

    fn clear(&mut self) {
        for r in self.slots.iter_mut() {
            r.group = Self::EMPTY;
        }
    }
}

/// Table for no key or a single integer key.
pub struct IntKeys {
    column: Option<usize>,
    fields: Vec<Field>,
    hasher: DefaultHashBuilder,
    table: HashTable<u32>,
    key: Vec<i64>,
    null: Vec<bool>,
    recent: RecentGroups,
}

impl IntKeys {
    fn new(column: Option<usize>, fields: Vec<Field>) -> Self {
        IntKeys {
            column,
            fields,
            hasher: DefaultHashBuilder::default(),
            table: HashTable::new(),
            key: Vec::new(),
            null: Vec::new(),
            recent: RecentGroups::new(),
        }
    }

    #[inline]
    fn hash(hasher: &DefaultHashBuilder, window: i64, key: i64, null: bool) -> u64 {
        hasher.hash_one((window, key, null))
    }

    fn assign(
        &mut self,
        batch: &RecordBatch,
        starts: &[i64],
        ids: &mut GroupIds,
        out: &mut Vec<u32>,
        created: &mut Vec<u32>,
    ) -> Result<()> {
        let column: Option<ArrayRef> = match self.column {
            Some(c) if batch.column(c).data_type() == &DataType::Int64 => {
                Some(batch.column(c).clone())
            }
            Some(c) => Some(cast(batch.column(c), &DataType::Int64)?),
            None => None,
        };
        let values: &[i64] = match &column {
            Some(c) => c.as_primitive::<Int64Type>().values(),
            None => &[],
        };
        let nulls = column.as_ref().and_then(|c| c.logical_nulls());
        for (i, &w) in starts.iter().enumerate() {
            let (k, n) = match (values.get(i), &nulls) {
                (Some(_), Some(ns)) if ns.is_null(i) => (0, true),
                (Some(&v), _) => (v, false),
                (None, _) => (0, false),
            };
            let g = match self.recent.get(w, k, n) {
                Some(g) => g,
                None => {
                    let (g, new) = self.find_or_insert(w, k, n, ids)?;
                    if new {
                        created.push(g);
                    }
                    g
                }
            };
            out.push(g);
        }
        Ok(())
    }

    fn find_or_insert(
        &mut self,
        w: i64,
        k: i64,
        n: bool,
        ids: &mut GroupIds,
    ) -> Result<(u32, bool)> {
        if let Some(g) = self.recent.get(w, k, n) {
            return Ok((g, false));
        }
        let IntKeys {
            hasher,
            table,
            key,
            null,
            recent,
            ..
        } = self;
        let h = Self::hash(hasher, w, k, n);
        let found = table.find(h, |&g| {
            let gi = g as usize;
            key[gi] == k && null[gi] == n && ids.window(g) == w
        });
        if let Some(&g) = found {
            recent.set(w, k, n, g);
            return Ok((g, false));
        }
        let g = ids.allocate(w)?;
        let gi = g as usize;
        if gi >= key.len() {
            key.resize(gi + 1, 0);
            null.resize(gi + 1, false);
        }
        key[gi] = k;
        null[gi] = n;
        table.insert_unique(h, g, |&g| {
            Self::hash(hasher, ids.window(g), key[g as usize], null[g as usize])
        });
        recent.set(w, k, n, g);
        Ok((g, true))
    }

    fn remove(&mut self, g: u32, ids: &GroupIds) {
        let gi = g as usize;
        self.recent.forget(ids.window(g), self.key[gi], g);
        let h = Self::hash(&self.hasher, ids.window(g), self.key[gi], self.null[gi]);
        if let Ok(entry) = self.table.find_entry(h, |&x| x == g) {
            entry.remove();
        }
    }

    fn finish(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        let Some(field) = self.fields.first() else {
            return Ok(Vec::new());
        };
        let keys: Int64Array = groups
            .iter()
            .map(|&g| (!self.null[g as usize]).then(|| self.key[g as usize]))
            .collect();
        let keys: ArrayRef = Arc::new(keys);
        Ok(vec![cast(&keys, field.data_type())?])
    }
}

/// Table for string and compound keys, using Arrow's row format.
pub struct RowKeys {
    columns: Vec<usize>,
    fields: Vec<Field>,
    converter: RowConverter,
    hasher: DefaultHashBuilder,
    table: HashTable<u32>,
    bytes: Vec<Vec<u8>>,
}

impl RowKeys {
    fn new(columns: Vec<usize>, fields: Vec<Field>) -> Result<Self> {
        let sort_fields = fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(RowKeys {
            columns,
            fields,
            converter: RowConverter::new(sort_fields)?,
            hasher: DefaultHashBuilder::default(),
            table: HashTable::new(),
            bytes: Vec::new(),
        })
    }

    fn assign(
        &mut self,
        batch: &RecordBatch,
        starts: &[i64],
        ids: &mut GroupIds,
        out: &mut Vec<u32>,
        created: &mut Vec<u32>,
    ) -> Result<()> {
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&c| batch.column(c).clone())
            .collect();
        let rows = self.converter.convert_columns(&cols)?;
        for (i, &w) in starts.iter().enumerate() {
            let (g, new) = self.find_or_insert(w, rows.row(i).as_ref(), ids)?;
            if new {
                created.push(g);
            }
            out.push(g);
        }
        Ok(())
    }

    /// Checks that the saved keys of `live` groups are rows this converter made: Arrow's row
    /// parser trusts its input (a damaged row would panic or decode garbage when the group is
    /// emitted), so each is decoded, under a panic guard, and must encode back to itself.
    fn check_rows(&self, bytes: &[Vec<u8>], live: &[u32]) -> Result<()> {
        let damaged = || Error::Snapshot("group keys: a saved key is not a valid row".into());
        let parser = self.converter.parser();
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.converter
                .convert_rows(live.iter().map(|&g| parser.parse(&bytes[g as usize])))
        }))
        .map_err(|_| damaged())?
        .map_err(|_| damaged())?;
        let again = self
            .converter
            .convert_columns(&decoded)
            .map_err(|_| damaged())?;
        let same = live
            .iter()
            .enumerate()
            .all(|(i, &g)| again.row(i).as_ref() == bytes[g as usize].as_slice());
        if same {
            Ok(())
        } else {
            Err(damaged())
        }
    }

    fn find_or_insert(&mut self, w: i64, k: &[u8], ids: &mut GroupIds) -> Result<(u32, bool)> {
        let RowKeys {
            hasher,
            table,
            bytes,
            ..
        } = self;
        let h = hasher.hash_one((w, k));
        if let Some(&g) = table.find(h, |&g| ids.window(g) == w && bytes[g as usize] == k) {
            return Ok((g, false));
        }
        let g = ids.allocate(w)?;
        let gi = g as usize;
        if gi >= bytes.len() {
            bytes.resize_with(gi + 1, Vec::new);
        }
        bytes[gi].clear();
        bytes[gi].extend_from_slice(k);
        table.insert_unique(h, g, |&g| {
            hasher.hash_one((ids.window(g), bytes[g as usize].as_slice()))
        });
        Ok((g, true))
    }

    fn remove(&mut self, g: u32, ids: &GroupIds) {
        let h = self
            .hasher
            .hash_one((ids.window(g), self.bytes[g as usize].as_slice()));
        if let Ok(entry) = self.table.find_entry(h, |&x| x == g) {
            entry.remove();
        }
    }

    fn finish(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let rows = groups
            .iter()
            .map(|&g| parser.parse(&self.bytes[g as usize]));
        Ok(self.converter.convert_rows(rows)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random finds, inserts and removals (with ids reused at once, and far more keys than
    /// cache slots, so slots collide) agree with a plain map at every step, and so do the
    /// finds after a save and load.
    #[test]
    fn int_keys_agree_with_a_map_through_removals_reuse_and_reload() {
        let fields = vec![Field::new("k", DataType::Int64, true)];
        let mut keys = GroupKeys::Int(IntKeys::new(Some(0), fields));
        let mut ids = GroupIds::default();
        let mut model: HashMap<(i64, i64, bool), u32> = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..200_000 {
            let w = rnd(4) as i64 * 1000;
            let k = rnd(6000) as i64 - 3000;
            let n = rnd(50) == 0;
            let k = if n { 0 } else { k };
            let GroupKeys::Int(t) = &mut keys else {
                unreachable!()
            };
            if rnd(3) == 0 {
                if let Some(g) = model.remove(&(w, k, n)) {
                    keys.remove(g, &ids);
                    ids.release(g);
                }
                continue;
            }
            let (g, new) = t.find_or_insert(w, k, n, &mut ids).unwrap();
            match model.get(&(w, k, n)) {
                Some(&want) => assert_eq!((g, new), (want, false), "step {step}"),
                None => {
                    assert!(new, "step {step}: found a group for a key never inserted");
                    assert!(!model.values().any(|&v| v == g), "step {step}: id in use");
                    model.insert((w, k, n), g);
                }
            }
            if step == 150_000 {
                let saved = keys.save();
                keys.load(saved, &ids).unwrap();
            }
        }
        let GroupKeys::Int(t) = &mut keys else {
            unreachable!()
        };
        for (&(w, k, n), &g) in &model {
            assert_eq!(t.find_or_insert(w, k, n, &mut ids).unwrap(), (g, false));
        }
    }
}
