//! `KeyRouter`: splits a batch into one sub-batch per core by the hash of its key columns.
//!
//! Hashing is vectorised and typed: one pass per key column over the column's values buffer,
//! chosen once per column by its Arrow type (integers, dates and timestamps as their i64
//! value, floats by normalised bits, booleans, strings and binaries by their bytes,
//! dictionaries as their values; anything else through the arrow-row encoding). Rows
//! with a null key hash to one fixed value. Column hashes are combined per row, and a row goes
//! to core `(hash * cores) >> 64`. The hash scratch buffer is reused, so splitting allocates
//! only one bitmask per core (an eighth of a byte per row) and, on the cores, the sub-batches.
//!
//! The pushing thread only hashes and marks each core's rows in a bitmask
//! ([`KeyRouter::partition`]); each core then copies its own rows out of the shared batch
//! (`filter`, [`Selection::apply`]), so the copying is spread over the cores instead of all
//! landing on the pushing thread.
//!
//! The hash depends only on the key values and their type, never on the batch, the process
//! or the thread, so equal keys always reach the same core: that is what keeps a group's
//! window state, or a join key's rows from both sides, on one core. It must also stay the
//! same across processes and releases: a checkpoint holds each core's keys. The router never looks at
//! rows beyond their key columns.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, BooleanArray, RecordBatch};
use arrow_buffer::{BooleanBuffer, Buffer};
use arrow_schema::DataType;
use arrow_select::filter::FilterBuilder;

use crate::error::Result;

const NULL_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

use crate::hash::fmix64 as mix;

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = 0x27d4_eb2f_1656_67c5u64 ^ (b.len() as u64);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ mix(u64::from_le_bytes(w))).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ mix(u64::from_le_bytes(w))).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    mix(h)
}

/// Folds the column's row hashes into `out`: the first column fills it (so it needs no
/// reset), later ones are mixed in. `hashes` yields exactly one value per row.
#[inline(always)]
fn fold(out: &mut Vec<u64>, first: bool, hashes: impl Iterator<Item = u64>) {
    if first {
        out.clear();
        out.extend(hashes);
    } else {
        for (o, h) in out.iter_mut().zip(hashes) {
            *o = mix(o.rotate_left(5) ^ h);
        }
    }
}

fn hash_primitive<T>(col: &dyn Array, out: &mut Vec<u64>, first: bool)
where
    T: ArrowPrimitiveType,
    T::Native: num_like::AsI64,
{
    let values = col.as_primitive::<T>().values();
    fold(
        out,
        first,
        values
            .iter()
            .map(|&v| mix(num_like::AsI64::as_i64(v) as u64)),
    );
}

mod num_like {
    /// The integer value of a native type, for hashing (equal values, equal results).
    pub trait AsI64: Copy {
        fn as_i64(self) -> i64;
    }
    macro_rules! as_i64 {
        ($($t:ty),*) => {$(impl AsI64 for $t { #[inline(always)] fn as_i64(self) -> i64 { self as i64 } })*};
    }
    as_i64!(i8, i16, i32, i64, u8, u16, u32, u64);
}

fn hash_float<T>(col: &dyn Array, out: &mut Vec<u64>, first: bool, bits: impl Fn(T::Native) -> u64)
where
    T: ArrowPrimitiveType,
{
    let values = col.as_primitive::<T>().values();
    fold(out, first, values.iter().map(|&v| mix(bits(v))));
}

fn f64_bits(v: f64) -> u64 {
    if v == 0.0 {
        0 // -0.0 == 0.0
    } else if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// Hashes one column into `out` (combined with what is there unless `first`).
fn hash_column(col: &ArrayRef, out: &mut Vec<u64>, first: bool) -> Result<()> {
    match col.data_type() {
        DataType::Int8 => hash_primitive::<Int8Type>(col, out, first),
        DataType::Int16 => hash_primitive::<Int16Type>(col, out, first),
        DataType::Int32 => hash_primitive::<Int32Type>(col, out, first),
        // The common key type: the first (or only) key column is hashed by the vectorised
        // kernel; `mix(v as u64)` is exactly what `hash_primitive` computes per value.
        DataType::Int64 if first => {
            crate::simd::fmix64_i64(col.as_primitive::<Int64Type>().values(), out)
        }
        DataType::Int64 => hash_primitive::<Int64Type>(col, out, first),
        DataType::UInt8 => hash_primitive::<UInt8Type>(col, out, first),
        DataType::UInt16 => hash_primitive::<UInt16Type>(col, out, first),
        DataType::UInt32 => hash_primitive::<UInt32Type>(col, out, first),
        DataType::UInt64 => hash_primitive::<UInt64Type>(col, out, first),
        DataType::Date32 => hash_primitive::<Date32Type>(col, out, first),
        DataType::Date64 => hash_primitive::<Date64Type>(col, out, first),
        DataType::Timestamp(unit, _) => {
            use arrow_schema::TimeUnit::*;
            match unit {
                Second => hash_primitive::<TimestampSecondType>(col, out, first),
                Millisecond => hash_primitive::<TimestampMillisecondType>(col, out, first),
                Microsecond => hash_primitive::<TimestampMicrosecondType>(col, out, first),
                Nanosecond => hash_primitive::<TimestampNanosecondType>(col, out, first),
            }
        }
        DataType::Float32 => hash_float::<Float32Type>(col, out, first, |v| f64_bits(f64::from(v))),
        DataType::Float64 => hash_float::<Float64Type>(col, out, first, f64_bits),
        DataType::Boolean => {
            let b = col.as_boolean();
            fold(out, first, b.values().iter().map(|v| mix(u64::from(v))));
        }
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            fold(
                out,
                first,
                (0..a.len()).map(|i| hash_bytes(a.value(i).as_bytes())),
            );
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            fold(
                out,
                first,
                (0..a.len()).map(|i| hash_bytes(a.value(i).as_bytes())),
            );
        }
        DataType::Utf8View => {
            let a = col.as_string_view();
            fold(
                out,
                first,
                (0..a.len()).map(|i| hash_bytes(a.value(i).as_bytes())),
            );
        }
        DataType::Binary => {
            let a = col.as_binary::<i32>();
            fold(out, first, (0..a.len()).map(|i| hash_bytes(a.value(i))));
        }
        DataType::LargeBinary => {
            let a = col.as_binary::<i64>();
            fold(out, first, (0..a.len()).map(|i| hash_bytes(a.value(i))));
        }
        DataType::Dictionary(_, _) => {
            // A dictionary hashes like its values (the cast expands it to one value per row).
            let values = arrow_cast::cast(col, &dictionary_value_type(col.data_type()))?;
            let mut h = Vec::with_capacity(values.len());
            hash_column(&values, &mut h, true)?;
            fold(out, first, h.iter().copied());
        }
        _ => {
            let conv = arrow_row::RowConverter::new(vec![arrow_row::SortField::new(
                col.data_type().clone(),
            )])?;
            let rows = conv.convert_columns(std::slice::from_ref(col))?;
            fold(out, first, rows.iter().map(|r| hash_bytes(r.as_ref())));
        }
    }
    if col.null_count() > 0 {
        if let Some(nulls) = col.logical_nulls() {
            for (o, valid) in out.iter_mut().zip(nulls.iter()) {
                if !valid {
                    *o = if first {
                        NULL_HASH
                    } else {
                        mix(o.rotate_left(5) ^ NULL_HASH)
                    };
                }
            }
        }
    }
    Ok(())
}

fn dictionary_value_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    }
}

/// How the rows of one query input are spread over the cores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Partitioning {
    /// Stateless: contiguous slices, any core.
    Even,
    /// By the hash of these columns (indices in the input's stream schema).
    Keys(Vec<usize>),
    /// Everything on this core.
    Single(usize),
}

/// The rows of a batch one core gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Every row.
    All,
    /// The rows whose bit is set (row order is kept). A bitmask is an eighth of a byte per
    /// row of the batch, against four bytes per selected row for a list of row numbers: the
    /// pushing thread writes, and each core reads, 16x less than with lists at two cores.
    Mask(BooleanBuffer),
}

impl Selection {
    /// Number of rows selected from `batch`.
    pub fn len(&self, batch: &RecordBatch) -> usize {
        match self {
            Selection::All => batch.num_rows(),
            Selection::Mask(mask) => mask.count_set_bits(),
        }
    }

    /// The selected rows of `batch` (the batch itself, without a copy, for `All`). Columns
    /// that share their data (the hidden event-time column is the user's int64 time column)
    /// are copied once.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mask = match self {
            Selection::All => return Ok(batch.clone()),
            Selection::Mask(mask) => mask,
        };
        let mask = BooleanArray::new(mask.clone(), None);
        // One predicate for every column: the copying strategy (runs of rows or single
        // rows) is chosen once from the mask.
        let predicate = FilterBuilder::new(&mask).build();
        let data: Vec<arrow_data::ArrayData> =
            batch.columns().iter().map(|c| c.to_data()).collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(data.len());
        for (i, d) in data.iter().enumerate() {
            let same = (0..i).find(|&j| data[j].ptr_eq(d));
            columns.push(match same {
                Some(j) => columns[j].clone(),
                None => predicate.filter(batch.column(i).as_ref())?,
            });
        }
        Ok(RecordBatch::try_new_with_options(
            batch.schema(),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(predicate.count())),
        )?)
    }
}

/// Splits batches by key hash. Holds reusable scratch buffers; one per thread that routes.
#[derive(Debug)]
pub struct KeyRouter {
    cores: usize,
    hashes: Vec<u64>,
    /// Where [`split_even`](Self::split_even) starts next, so keyless load rotates.
    next: usize,
}

impl KeyRouter {
    /// A router over `cores` cores (at least 1).
    pub fn new(cores: usize) -> Self {
        let cores = cores.max(1);
        KeyRouter {
            cores,
            hashes: Vec::new(),
            next: 0,
        }
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Hashes columns `keys` of `batch` into `self.hashes`.
    fn hash(&mut self, batch: &RecordBatch, keys: &[usize]) -> Result<()> {
        if keys.is_empty() {
            self.hashes.clear();
            self.hashes.resize(batch.num_rows(), 0);
        }
        for (i, &k) in keys.iter().enumerate() {
            hash_column(batch.column(k), &mut self.hashes, i == 0)?;
        }
        Ok(())
    }

    /// The core owning a hash: `(hash * cores) >> 64`, always in `0..cores`.
    #[inline(always)]
    fn core_of(hash: u64, cores: u128) -> usize {
        ((u128::from(hash) * cores) >> 64) as usize
    }

    /// Each core's rows as a bitmask, in one pass over the hashes: row `i` sets bit `i` of its
    /// owner's mask. Two cores need only the second mask: the first is its complement (the
    /// owner is the hash's top bit, packed 64 rows to a word without a branch).
    fn masks(&self, n: usize) -> Vec<BooleanBuffer> {
        if self.cores == 2 {
            let one = BooleanBuffer::collect_bool(n, |i| self.hashes[i] >> 63 == 1);
            let zero = !&one;
            return vec![zero, one];
        }
        let words = n.div_ceil(64);
        let mut masks = vec![vec![0u64; words]; self.cores];
        let cores = self.cores as u128;
        for (row, &h) in self.hashes.iter().enumerate() {
            masks[Self::core_of(h, cores)][row >> 6] |= 1 << (row & 63);
        }
        masks
            .into_iter()
            .map(|m| BooleanBuffer::new(Buffer::from_vec(m), 0, n))
            .collect()
    }

    /// The core of each row of `batch` by the hash of columns `keys` (empty `keys`: core 0).
    pub fn assign(&mut self, batch: &RecordBatch, keys: &[usize]) -> Result<&[u64]> {
        self.hash(batch, keys)?;
        let cores = self.cores as u128;
        for h in self.hashes.iter_mut() {
            *h = Self::core_of(*h, cores) as u64;
        }
        Ok(&self.hashes)
    }

    /// Which rows of `batch` each core gets by the hash of columns `keys`: entry `c` is
    /// `None` when core `c` gets no row, [`Selection::All`] when it gets every row, else a
    /// bitmask of its rows (row order is kept).
    pub fn partition(
        &mut self,
        batch: &RecordBatch,
        keys: &[usize],
    ) -> Result<Vec<Option<Selection>>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok((0..self.cores).map(|_| None).collect());
        }
        self.hash(batch, keys)?;
        Ok(self
            .masks(n)
            .into_iter()
            .map(|mask| match mask.count_set_bits() {
                0 => None,
                c if c == n => Some(Selection::All),
                _ => Some(Selection::Mask(mask)),
            })
            .collect())
    }

    /// Splits `batch` into contiguous, zero-copy slices of nearly equal size, for steps that
    /// hold no per-key state. Successive calls start on successive cores, so small batches
    /// spread too.
    pub fn split_even(&mut self, batch: &RecordBatch) -> Vec<Option<RecordBatch>> {
        let mut out = vec![None; self.cores];
        let n = batch.num_rows();
        let parts = self.cores.min(n.max(1));
        let mut start = 0;
        for p in 0..parts {
            let len = n / parts + usize::from(p < n % parts);
            if len > 0 {
                out[(self.next + p) % self.cores] = Some(batch.slice(start, len));
            }
            start += len;
        }
        self.next = (self.next + 1) % self.cores;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    /// Each core's rows, as the cores take them.
    fn split(r: &mut KeyRouter, b: &RecordBatch, keys: &[usize]) -> Vec<Option<RecordBatch>> {
        let parts = r.partition(b, keys).unwrap();
        parts
            .into_iter()
            .map(|p| p.map(|s| s.apply(b).unwrap()))
            .collect()
    }

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    #[test]
    fn equal_keys_go_to_one_core_and_every_row_once() {
        let keys: Vec<i64> = (0..10_000).map(|i| i % 97).collect();
        let vals: Vec<i64> = (0..10_000).collect();
        let b = batch(vec![
            ("k", Arc::new(Int64Array::from(keys)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(vals)) as ArrayRef),
        ]);
        let mut r = KeyRouter::new(3);
        let parts = split(&mut r, &b, &[0]);
        let mut owner = std::collections::HashMap::new();
        let mut seen = Vec::new();
        for (c, p) in parts.iter().enumerate() {
            let p = p.as_ref().expect("97 keys over 3 cores reach all of them");
            let k = p.column(0).as_primitive::<Int64Type>();
            let v = p.column(1).as_primitive::<Int64Type>();
            for i in 0..p.num_rows() {
                assert_eq!(*owner.entry(k.value(i)).or_insert(c), c);
                seen.push(v.value(i));
            }
            assert!(v.values().windows(2).all(|w| w[0] < w[1]), "order kept");
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn the_hash_depends_on_the_value_not_its_width_or_encoding() {
        let mut r = KeyRouter::new(4);
        let a = batch(vec![(
            "k",
            Arc::new(Int32Array::from(vec![1, 2, 3, 400])) as ArrayRef,
        )]);
        let b = batch(vec![(
            "k",
            Arc::new(Int64Array::from(vec![1, 2, 3, 400])) as ArrayRef,
        )]);
        let ha = r.assign(&a, &[0]).unwrap().to_vec();
        assert_eq!(ha, r.assign(&b, &[0]).unwrap());
        let s = batch(vec![(
            "k",
            Arc::new(StringArray::from(vec!["x", "yy", "x", "z"])) as ArrayRef,
        )]);
        let d: DictionaryArray<Int32Type> = vec!["x", "yy", "x", "z"].into_iter().collect();
        let d = batch(vec![("k", Arc::new(d) as ArrayRef)]);
        let hs = r.assign(&s, &[0]).unwrap().to_vec();
        assert_eq!(hs[0], hs[2]);
        assert_eq!(hs, r.assign(&d, &[0]).unwrap());
        let f = batch(vec![(
            "k",
            Arc::new(Float64Array::from(vec![0.0, -0.0])) as ArrayRef,
        )]);
        let hf = r.assign(&f, &[0]).unwrap();
        assert_eq!(hf[0], hf[1]);
    }

    #[test]
    fn nulls_and_compound_keys() {
        let mut r = KeyRouter::new(8);
        let b = batch(vec![
            (
                "a",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(1), None])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec!["p", "q", "p", "q"])) as ArrayRef,
            ),
        ]);
        let h = r.assign(&b, &[0, 1]).unwrap().to_vec();
        assert_eq!(h[0], h[2]);
        assert_eq!(h[1], h[3]);
        let parts = split(&mut r, &b, &[0, 1]);
        assert_eq!(
            parts.iter().flatten().map(|p| p.num_rows()).sum::<usize>(),
            4
        );
    }

    #[test]
    fn the_partition_lists_exactly_each_cores_rows() {
        let keys: Vec<i64> = (0..5_000).map(|i| (i * 7919) % 1013).collect();
        let b = batch(vec![("k", Arc::new(Int64Array::from(keys)) as ArrayRef)]);
        // 2 cores take the complement path, 3 and 16 the general one.
        for cores in [2, 3, 16] {
            let mut r = KeyRouter::new(cores);
            let owner = r.assign(&b, &[0]).unwrap().to_vec();
            let parts = r.partition(&b, &[0]).unwrap();
            assert_eq!(parts.len(), cores);
            for (c, part) in parts.iter().enumerate() {
                let want: Vec<u32> = (0..5_000u32)
                    .filter(|&i| owner[i as usize] == c as u64)
                    .collect();
                match part {
                    Some(Selection::Mask(m)) => {
                        assert_eq!(m.len(), 5_000);
                        assert_eq!(m.set_indices().map(|i| i as u32).collect::<Vec<_>>(), want);
                    }
                    other => panic!("core {c} of {cores}: {other:?}"),
                }
            }
            let one = batch(vec![(
                "k",
                Arc::new(Int64Array::from(vec![7, 7, 7])) as ArrayRef,
            )]);
            let parts = r.partition(&one, &[0]).unwrap();
            assert_eq!(
                parts.iter().filter(|p| **p == Some(Selection::All)).count(),
                1
            );
            assert_eq!(parts.iter().filter(|p| p.is_none()).count(), cores - 1);
        }
    }

    #[test]
    fn shared_columns_are_copied_once_and_stay_shared() {
        let t: ArrayRef = Arc::new(Int64Array::from((0..100).collect::<Vec<_>>()));
        let b = batch(vec![("ts", t.clone()), ("k", t.clone()), ("t2", t)]);
        let sel = Selection::Mask(BooleanBuffer::from_iter(
            (0..100).map(|i| [1, 5, 7].contains(&i)),
        ));
        let out = sel.apply(&b).unwrap();
        assert_eq!(out.num_rows(), 3);
        assert!(out.column(0).to_data().ptr_eq(&out.column(2).to_data()));
        assert_eq!(
            out.column(1).as_primitive::<Int64Type>().values().to_vec(),
            vec![1, 5, 7]
        );
    }

    #[test]
    fn even_split_is_contiguous_and_rotates() {
        let b = batch(vec![(
            "k",
            Arc::new(Int64Array::from((0..7).collect::<Vec<_>>())) as ArrayRef,
        )]);
        let mut r = KeyRouter::new(2);
        let p = r.split_even(&b);
        assert_eq!(p[0].as_ref().unwrap().num_rows(), 4);
        assert_eq!(p[1].as_ref().unwrap().num_rows(), 3);
        let one = b.slice(0, 1);
        let p1 = r.split_even(&one);
        assert!(
            p1[1].is_some() && p1[0].is_none(),
            "second call starts on core 1"
        );
    }
}
