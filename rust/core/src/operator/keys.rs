//! Key columns, shared by every step that keeps state per key (group-by, joins, dedup):
//! which column types may be keys, where the key columns are, and their encoding into
//! comparable bytes (the Arrow row format).
//!
//! A key is compared by value, so floating-point columns (where `-0.0 == 0.0` and `NaN`
//! compare unlike their bytes), also inside a dictionary, are refused everywhere alike.
//! Nothing here keeps state between batches beyond the encoder's reused buffers.

use arrow_array::ArrayRef;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, Schema};

use crate::error::{Error, Result};

/// The type a dictionary column's values have (any other type as it is).
pub fn value_type(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, v) => v,
        other => other,
    }
}

/// Whether columns of type `dt` can be keys: integers, strings, booleans, dates, timestamps
/// (and dictionaries of them), anything the row format encodes except floats.
pub fn is_key_type(dt: &DataType) -> bool {
    RowConverter::supports_fields(&[SortField::new(dt.clone())]) && !value_type(dt).is_floating()
}

/// The error for key column `column` of an unsupported type `found`, for `what` (e.g.
/// "group_by keys").
pub fn key_type_error(column: &str, what: &str, found: &DataType) -> Error {
    Error::ColumnType {
        column: column.to_string(),
        expected: format!("{what} must be integers, strings, booleans, dates or timestamps"),
        found: found.to_string(),
    }
}

/// Indices of `names` in `schema`, with a helpful error for a missing one.
pub fn key_indices(names: &[String], schema: &Schema, what: &str) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|k| {
            schema
                .index_of(k)
                .map_err(|_| Error::column_not_found(k, what, schema))
        })
        .collect()
}

/// Encodes key columns of batches into comparable bytes.
pub struct KeyEncoder {
    converter: RowConverter,
}

impl KeyEncoder {
    /// An encoder for keys of these types.
    pub fn new(types: &[DataType]) -> Result<Self> {
        let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
        Ok(KeyEncoder {
            converter: RowConverter::new(fields)?,
        })
    }

    /// The keys of `columns`' rows.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    /// An empty key buffer for [`encode_into`](Self::encode_into), reused batch after batch.
    pub fn empty_rows(&self) -> Rows {
        self.converter.empty_rows(0, 0)
    }

    /// The keys of `columns`' rows into `rows` (made by this encoder's
    /// [`empty_rows`](Self::empty_rows)), replacing what it held: once its buffers have grown
    /// to the largest batch, encoding allocates nothing.
    pub fn encode_into(&self, columns: &[ArrayRef], rows: &mut Rows) -> Result<()> {
        rows.clear();
        Ok(self.converter.append(rows, columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{Field, TimeUnit};

    #[test]
    fn floats_are_never_keys_not_even_inside_a_dictionary() {
        let dict = |v: DataType| DataType::Dictionary(Box::new(DataType::Int32), Box::new(v));
        for ok in [
            DataType::Int64,
            DataType::UInt8,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            dict(DataType::Utf8),
        ] {
            assert!(is_key_type(&ok), "{ok}");
        }
        for bad in [
            DataType::Float32,
            DataType::Float64,
            dict(DataType::Float64),
        ] {
            assert!(!is_key_type(&bad), "{bad}");
        }
        // Every keyed step says the same (group-by is one of them).
        let schema = Schema::new(vec![Field::new("x", dict(DataType::Float64), true)]);
        let e = crate::operator::group_keys::GroupKeys::new(&["x".to_string()], &schema)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("group_by keys must be integers"), "{e}");
    }
}
