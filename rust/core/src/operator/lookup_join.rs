//! `LookupJoin`: enriches each stream row with the row of a reference table that has the
//! same key, as the table is when the row is processed.
//!
//! A table is a list of Arrow chunks plus an index from the key (Arrow row format bytes) to
//! its latest row. Replacing the table starts over; upserts append a chunk and repoint the
//! index; superseded rows are compacted away once they outnumber the live ones. Probing a
//! batch encodes its keys once, makes one hash probe per row and gathers the table's columns
//! with one vectorised `interleave` (misses point at a one-row chunk of nulls).
//!
//! Entries older than the table's TTL (processing time since loaded) count as missing. The
//! operator never calls a loader: the engine asks [`TableIndex::missing`] which keys of a
//! push are missing or expired and upserts what the loader returns before the push runs.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow_row::Rows;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::interleave::interleave;
use arrow_select::take::take;
use hashbrown::HashMap as FastMap;
use serde::{Deserialize, Serialize};

use super::keys::{key_indices, KeyEncoder};
use super::snapshot::{decode, encode, same_column_types, SavedBatches};
use super::{Operator, OperatorContext, OperatorMetrics};
use crate::engine::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Inner or left lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupKind {
    /// Keep every stream row; nulls where the table has no match.
    #[default]
    Left,
    /// Keep only rows with a match.
    Inner,
}

/// A reference table as declared: schema, key columns and TTL.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Name.
    pub name: String,
    /// Schema of the table's rows.
    pub schema: SchemaRef,
    /// Key columns.
    pub on: Vec<String>,
    /// Entries older than this (ms of processing time) are expired.
    pub ttl_ms: Option<i64>,
}

/// The engine's reference tables by name.
pub type LookupTables = HashMap<String, TableDef>;

/// Where a key's latest row is (chunk, row) and the processing time it was loaded.
type Entry = (u32, u32, Timestamp);

/// Key → its latest row.
#[derive(Default)]
pub struct TableIndex {
    map: FastMap<Box<[u8]>, Entry>,
}

impl TableIndex {
    /// Forgets everything.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Records rows `0..rows.num_rows()` of chunk `chunk` as the latest for their keys.
    pub fn insert(&mut self, rows: &Rows, chunk: u32, now: Timestamp) {
        for i in 0..rows.num_rows() {
            let k = rows.row(i);
            match self.map.get_mut(k.as_ref()) {
                Some(e) => *e = (chunk, i as u32, now),
                None => {
                    self.map.insert(k.as_ref().into(), (chunk, i as u32, now));
                }
            }
        }
    }

    /// The entry of `key` if present and not expired at `now`.
    #[inline]
    pub fn get(&self, key: &[u8], now: Timestamp, ttl: Option<i64>) -> Option<(u32, u32)> {
        let &(c, r, at) = self.map.get(key)?;
        match ttl {
            Some(t) if now.saturating_sub(at) >= t => None,
            _ => Some((c, r)),
        }
    }

    /// Row numbers (first occurrence of each distinct key) of the keys in `rows` that are
    /// missing or expired at `now`.
    pub fn missing(&self, rows: &Rows, now: Timestamp, ttl: Option<i64>) -> Vec<u32> {
        let mut seen: FastMap<&[u8], ()> = FastMap::new();
        let mut out = Vec::new();
        for i in 0..rows.num_rows() {
            let k: &[u8] = rows.row(i).data();
            if self.get(k, now, ttl).is_none() && seen.insert(k, ()).is_none() {
                out.push(i as u32);
            }
        }
        out
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Whether keys of these types can be compared (after a cast): equal types, two integer
/// types, or two string types.
pub fn comparable_keys(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    let string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    a == b || (a.is_integer() && b.is_integer()) || (string(a) && string(b))
}

/// `column` as key type `to` (no copy when it already has it).
pub fn cast_key(column: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if column.data_type() == to {
        Ok(column.clone())
    } else {
        Ok(arrow_cast::cast(column, to)?)
    }
}

/// The checkpoint form of a [`LookupJoin`]: the table as the operator holds it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct LookupJoinState {
    /// The value-column chunks, one batch per chunk.
    chunks: SavedBatches,
    /// `(key, chunk, row, loaded at)` of every key, in `(chunk, row)` order (no hash order).
    index: Vec<(Vec<u8>, u32, u32, i64)>,
    /// Rows in the chunks, superseded ones included (chunks of no value column carry no
    /// row count of their own).
    total_rows: u64,
}

/// A restore error about damaged or foreign lookup state.
fn foreign(table: &str, what: &str) -> Error {
    Error::Snapshot(format!(
        "lookup_join of table '{table}': {what} (was the pipeline changed?)"
    ))
}

/// Lookup join against one table.
pub struct LookupJoin {
    table: TableDef,
    how: LookupKind,
    stream_keys: Vec<usize>,
    table_keys: Vec<usize>,
    /// Table columns that are output (not keys).
    value_columns: Vec<usize>,
    key_types: Vec<DataType>,
    encoder: KeyEncoder,
    index: TableIndex,
    /// Value-column chunks; the last chunk is a one-row chunk of nulls for misses.
    chunks: Vec<Vec<ArrayRef>>,
    nulls: Vec<ArrayRef>,
    live_rows: usize,
    total_rows: usize,
    schema: SchemaRef,
    time_index: usize,
}

impl LookupJoin {
    /// Binds a lookup of `table` on `on` over stream `input`.
    pub fn new(table: &TableDef, on: &[String], how: LookupKind, input: SchemaRef) -> Result<Self> {
        if on.is_empty() {
            return Err(Error::InvalidPlan(
                "lookup needs at least one key column (on=...)".into(),
            ));
        }
        if on != table.on.as_slice() {
            return Err(Error::InvalidPlan(format!(
                "lookup on {on:?} but table '{}' is keyed on {:?}",
                table.name, table.on
            )));
        }
        let stream_keys = key_indices(on, &input, " in lookup (stream side)")?;
        let table_keys = key_indices(on, &table.schema, " in lookup table")?;
        let mut types = Vec::new();
        for (&s, &t) in stream_keys.iter().zip(&table_keys) {
            let (st, tt) = (
                input.field(s).data_type(),
                table.schema.field(t).data_type(),
            );
            if !comparable_keys(st, tt) {
                return Err(Error::ColumnType {
                    column: input.field(s).name().clone(),
                    expected: format!("the lookup table's key type {tt}"),
                    found: st.to_string(),
                });
            }
            types.push(st.clone());
        }
        let time_index = input
            .index_of(TIME_COLUMN)
            .map_err(|_| Error::InvalidPlan("lookup input has no event-time column".into()))?;
        let value_columns: Vec<usize> = (0..table.schema.fields().len())
            .filter(|i| !table_keys.contains(i))
            .collect();
        let mut fields: Vec<Field> = input
            .fields()
            .iter()
            .filter(|f| f.name() != TIME_COLUMN)
            .map(|f| f.as_ref().clone())
            .collect();
        for &c in &value_columns {
            let f = table.schema.field(c);
            let mut name = f.name().clone();
            if fields.iter().any(|g| g.name() == &name) {
                name = format!("{name}_right");
            }
            fields.push(Field::new(name, f.data_type().clone(), true));
        }
        fields.push(Field::new(TIME_COLUMN, DataType::Int64, false));
        let nulls = value_columns
            .iter()
            .map(|&c| new_null_array(table.schema.field(c).data_type(), 1))
            .collect();
        Ok(LookupJoin {
            table: table.clone(),
            how,
            stream_keys,
            table_keys,
            value_columns,
            encoder: KeyEncoder::new(&types)?,
            key_types: types,
            index: TableIndex::default(),
            chunks: Vec::new(),
            nulls,
            live_rows: 0,
            total_rows: 0,
            schema: Arc::new(Schema::new(fields)),
            time_index,
        })
    }

    /// Applies a table change: `replace` drops every row first; otherwise `rows` are upserted.
    pub fn apply(&mut self, rows: &RecordBatch, replace: bool, now: Timestamp) -> Result<()> {
        if replace {
            self.index.clear();
            self.chunks.clear();
            self.total_rows = 0;
        }
        if rows.num_rows() > 0 {
            // Table keys are compared in the stream's key types.
            let keys = self
                .table_keys
                .iter()
                .zip(&self.key_types)
                .map(|(&c, t)| cast_key(rows.column(c), t))
                .collect::<Result<Vec<_>>>()?;
            let encoded = self.encoder.encode(&keys)?;
            let chunk = u32::try_from(self.chunks.len())
                .map_err(|_| Error::Overflow("too many lookup table updates".into()))?;
            self.chunks.push(
                self.value_columns
                    .iter()
                    .map(|&c| rows.column(c).clone())
                    .collect(),
            );
            self.index.insert(&encoded, chunk, now);
            self.total_rows += rows.num_rows();
        }
        self.live_rows = self.index.len();
        if self.total_rows > 2 * self.live_rows + 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the chunks to hold only the live rows.
    fn compact(&mut self) -> Result<()> {
        let mut entries: Vec<(Box<[u8]>, Entry)> = self.index.map.drain().collect();
        entries.sort_by_key(|e| (e.1 .0, e.1 .1));
        let idx: Vec<(usize, usize)> = entries
            .iter()
            .map(|e| (e.1 .0 as usize, e.1 .1 as usize))
            .collect();
        let mut columns = Vec::with_capacity(self.value_columns.len());
        for c in 0..self.value_columns.len() {
            let arrays: Vec<&dyn Array> = self.chunks.iter().map(|ch| ch[c].as_ref()).collect();
            columns.push(interleave(&arrays, &idx)?);
        }
        self.chunks = vec![columns];
        for (i, (k, (_, _, at))) in entries.into_iter().enumerate() {
            self.index.map.insert(k, (0, i as u32, at));
        }
        self.total_rows = self.index.len();
        Ok(())
    }

    /// The schema of the value-column chunks in a snapshot: the declared types, all nullable.
    fn chunk_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .value_columns
            .iter()
            .map(|&c| {
                let f = self.table.schema.field(c);
                Field::new(f.name(), f.data_type().clone(), true)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The state to checkpoint (see [`LookupJoinState`]).
    fn save(&self) -> Result<LookupJoinState> {
        let schema = self.chunk_schema();
        let batches = self
            .chunks
            .iter()
            .map(|columns| {
                let rows = columns.first().map_or(0, |c| c.len());
                let options = RecordBatchOptions::new().with_row_count(Some(rows));
                RecordBatch::try_new_with_options(schema.clone(), columns.clone(), &options)
                    .map_err(|e| {
                        Error::Snapshot(format!(
                            "lookup_join of table '{}': rows not of the declared types: {e}",
                            self.table.name
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut index: Vec<(Vec<u8>, u32, u32, i64)> = self
            .index
            .map
            .iter()
            .map(|(k, &(c, r, at))| (k.to_vec(), c, r, at))
            .collect();
        index.sort_unstable_by_key(|e| (e.1, e.2));
        Ok(LookupJoinState {
            chunks: SavedBatches::new(&schema, &batches)?,
            index,
            total_rows: self.total_rows as u64,
        })
    }

    /// Puts back `st` after checking it against this table's columns.
    fn load(&mut self, st: LookupJoinState) -> Result<()> {
        let name = self.table.name.clone();
        let (schema, batches) = st.chunks.load("lookup table rows")?;
        let want = self.chunk_schema();
        if !same_column_types(&schema, &want) {
            return Err(foreign(&name, "the saved rows have other columns"));
        }
        let has_columns = !self.value_columns.is_empty();
        let held: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let total_rows = usize::try_from(st.total_rows)
            .ok()
            .filter(|&t| !has_columns || t == held)
            .ok_or_else(|| foreign(&name, "the row count disagrees with the saved rows"))?;
        let mut index = TableIndex::default();
        for (key, c, r, at) in st.index {
            let in_range = batches
                .get(c as usize)
                .is_some_and(|b| !has_columns || (r as usize) < b.num_rows());
            if !in_range {
                return Err(foreign(&name, "a key points past the saved rows"));
            }
            if index
                .map
                .insert(key.into_boxed_slice(), (c, r, at))
                .is_some()
            {
                return Err(foreign(&name, "a key is listed twice"));
            }
        }
        if index.len() > total_rows {
            return Err(foreign(&name, "more keys than rows"));
        }
        self.chunks = batches.into_iter().map(|b| b.columns().to_vec()).collect();
        self.live_rows = index.len();
        self.index = index;
        self.total_rows = total_rows;
        Ok(())
    }
}

impl Operator for LookupJoin {
    fn name(&self) -> &'static str {
        "lookup_join"
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        encode(&self.save()?)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let st: LookupJoinState = decode(state, self.name())?;
        self.load(st)
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let n = input.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self
            .stream_keys
            .iter()
            .map(|&c| input.column(c).clone())
            .collect();
        let encoded = self.encoder.encode(&keys)?;
        let null_chunk = self.chunks.len();
        let now = ctx.now();
        let ttl = self.table.ttl_ms;
        let mut idx: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut keep: Vec<u32> = Vec::new();
        let key_nulls: Vec<_> = keys.iter().filter_map(|k| k.logical_nulls()).collect();
        for i in 0..n {
            let null_key = key_nulls.iter().any(|nb| nb.is_null(i));
            let hit = if null_key {
                None
            } else {
                self.index.get(encoded.row(i).as_ref(), now, ttl)
            };
            match (hit, self.how) {
                (Some((c, r)), _) => {
                    idx.push((c as usize, r as usize));
                    keep.push(i as u32);
                }
                (None, LookupKind::Left) => {
                    idx.push((null_chunk, 0));
                    keep.push(i as u32);
                }
                (None, LookupKind::Inner) => {}
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        let rows: Option<UInt32Array> = (keep.len() < n).then(|| UInt32Array::from(keep));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, c) in input.columns().iter().enumerate() {
            if i == self.time_index {
                continue;
            }
            columns.push(match &rows {
                Some(r) => take(c.as_ref(), r, None)?,
                None => c.clone(),
            });
        }
        for c in 0..self.value_columns.len() {
            let mut arrays: Vec<&dyn Array> = self.chunks.iter().map(|ch| ch[c].as_ref()).collect();
            arrays.push(self.nulls[c].as_ref());
            columns.push(interleave(&arrays, &idx)?);
        }
        let time = input.column(self.time_index);
        columns.push(match &rows {
            Some(r) => take(time.as_ref(), r, None)?,
            None => time.clone(),
        });
        ctx.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    fn uses_processing_time(&self) -> bool {
        self.table.ttl_ms.is_some()
    }

    fn on_table_update(
        &mut self,
        table: &str,
        rows: &RecordBatch,
        replace: bool,
        now: Timestamp,
    ) -> Result<()> {
        if table == self.table.name {
            self.apply(rows, replace, now)?;
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            state_rows: self.live_rows as u64,
            ..OperatorMetrics::default()
        }
    }
}
