//! The checkpoint form of operator state: typed, plain-data structs archived with rkyv.
//!
//! Each stateful operator copies what it must remember (group tables, accumulators, open
//! windows, counters) into a plain struct of vectors and numbers, and this module turns that
//! struct into bytes ([`encode`]) and back ([`decode`]). Decoding validates the archive
//! (bytecheck) before anything is read, so a damaged snapshot is an error, never undefined
//! behaviour or a panic. Scratch buffers and hash tables are never saved: a restore rebuilds
//! the tables from the saved keys, so the snapshot does not depend on hash seeds.
//!
//! Snapshots are taken between messages (never inside a batch), so operators never save
//! per-batch scratch. Arrow data an operator holds (join buffers, lookup tables) is saved as
//! Arrow IPC (`encode_batches` / `SavedBatches`), never row by row. This module never sees a
//! thread or a file: the checkpoint layer decides where the bytes go.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};

/// The serializer [`encode`] archives with: rkyv's high-level one, into an [`AlignedVec`].
type Serializer<'a> = rkyv::api::high::HighSerializer<
    AlignedVec,
    rkyv::ser::allocator::ArenaHandle<'a>,
    rancor::Error,
>;

/// A type [`encode`] can archive (every snapshot struct deriving `rkyv::Serialize`).
pub trait Archivable: for<'a> rkyv::Serialize<Serializer<'a>> {}

impl<T: for<'a> rkyv::Serialize<Serializer<'a>>> Archivable for T {}

/// Archives `value` (a snapshot struct) into bytes.
pub fn encode<T: Archivable>(value: &T) -> Result<Vec<u8>> {
    encode_aligned(value).map(|v| v.into_vec())
}

/// [`encode`] into rkyv's aligned buffer, for a caller that only reads the bytes (it saves
/// the copy `into_vec` makes: a whole logged push, per push).
pub fn encode_aligned<T: Archivable>(value: &T) -> Result<AlignedVec> {
    rkyv::to_bytes::<rancor::Error>(value)
        .map_err(|e| Error::Snapshot(format!("could not encode operator state: {e}")))
}

/// Validates and unpacks bytes made by [`encode`] for a `T`. `what` names the state in the
/// error (e.g. "window_aggregate").
pub fn decode<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    // The archive needs its natural alignment; bytes read from a file or sliced out of a
    // larger checkpoint have none, so copy them into an aligned buffer first.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
        .map_err(|e| Error::Snapshot(format!("the saved state of {what} is damaged: {e}")))
}

/// Whether saved Arrow data of schema `saved` fits where `want` is expected: the same
/// number of columns with the same types (names, nullability and metadata are not checked:
/// restored data need not carry them).
pub fn same_column_types(saved: &arrow_schema::Schema, want: &arrow_schema::Schema) -> bool {
    saved.fields().len() == want.fields().len()
        && saved
            .fields()
            .iter()
            .zip(want.fields())
            .all(|(a, b)| a.data_type() == b.data_type())
}

/// Arrow data in a snapshot or log record: an Arrow IPC stream (schema, then the batches),
/// so the bytes are the columnar layout itself, with no per-row encoding.
pub fn encode_batches(
    schema: &arrow_schema::SchemaRef,
    batches: &[arrow_array::RecordBatch],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(out)
}

/// The schema and batches of bytes made by [`encode_batches`]. `what` names the data in the
/// error.
///
/// Damaged bytes are an error, never a panic or a huge allocation: decoding is
/// [`crate::net::ipc::decode_ipc`], which walks the stream's framing before Arrow sees it
/// (so a damaged length runs out of bytes instead of being allocated), refuses
/// body-compressed streams (this crate never writes one here, and a compressed buffer's
/// declared size would be allocated before it is checked) and catches the few panics left in
/// Arrow's decoding of malformed metadata.
pub fn decode_batches(
    bytes: &[u8],
    what: &str,
) -> Result<(arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>)> {
    use crate::net::ipc::{decode_ipc, Compression, IpcLimits};
    // Uncompressed, the decoded buffers are at most the bytes themselves.
    let limits = IpcLimits {
        max_decoded_bytes: bytes.len() as u64,
    };
    decode_ipc(bytes, Compression::None, &limits)
        .map_err(|e| Error::Snapshot(format!("the saved {what} is damaged: {e}")))
}

/// [`encode_batches`] of one batch, in its own schema.
pub fn encode_batch(batch: &arrow_array::RecordBatch) -> Result<Vec<u8>> {
    encode_batches(&batch.schema(), std::slice::from_ref(batch))
}

/// The batches of bytes made by [`encode_batches`] as one batch, in the stream's schema.
/// `what` names the data in the error.
pub fn decode_batch(bytes: &[u8], what: &str) -> Result<arrow_array::RecordBatch> {
    let (schema, batches) = decode_batches(bytes, what)?;
    Ok(arrow_select::concat::concat_batches(&schema, &batches)?)
}

/// Arrow data inside an operator's snapshot struct: the bytes of [`encode_batches`] and their
/// CRC-32C, checked before they are decoded, so that damaged rows are refused rather than
/// restored as other values.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct SavedBatches {
    ipc: Vec<u8>,
    crc: u32,
}

impl SavedBatches {
    /// Saves `batches` (all of `schema`).
    pub fn new(
        schema: &arrow_schema::SchemaRef,
        batches: &[arrow_array::RecordBatch],
    ) -> Result<Self> {
        let ipc = encode_batches(schema, batches)?;
        let crc = crc32c::crc32c(&ipc);
        Ok(SavedBatches { ipc, crc })
    }

    /// The schema and batches saved by [`new`](Self::new); `what` names the data in errors.
    pub fn load(
        &self,
        what: &str,
    ) -> Result<(arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>)> {
        if crc32c::crc32c(&self.ipc) != self.crc {
            return Err(Error::Snapshot(format!(
                "the saved {what} is damaged (checksum mismatch)"
            )));
        }
        decode_batches(&self.ipc, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Sample {
        a: Vec<i64>,
        b: Option<i64>,
        c: Vec<(i64, Vec<u32>)>,
    }

    #[test]
    fn round_trip_and_damage_is_an_error() {
        let s = Sample {
            a: vec![1, -2, 3],
            b: Some(7),
            c: vec![(5, vec![1, 2]), (9, vec![])],
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Sample>(&bytes, "sample").unwrap(), s);
        // Truncations never decode into something else silently.
        for cut in 0..bytes.len() {
            if let Ok(got) = decode::<Sample>(&bytes[..cut], "sample") {
                assert_eq!(got, s, "a truncated snapshot decoded to different state");
            }
        }
        let err = decode::<Sample>(&[0xff; 3], "sample").unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn batches_round_trip_and_damage_is_an_error() {
        use std::sync::Arc;
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Int64,
            true,
        )]));
        let b = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow_array::Int64Array::from(vec![
                Some(1),
                None,
                Some(3),
            ]))],
        )
        .unwrap();
        let bytes = encode_batches(&schema, &[b.clone(), b.clone()]).unwrap();
        let (s, got) = decode_batches(&bytes, "rows").unwrap();
        assert_eq!(s, schema);
        assert_eq!(got, vec![b.clone(), b]);
        let (_, none) = decode_batches(&encode_batches(&schema, &[]).unwrap(), "rows").unwrap();
        assert!(none.is_empty());
        for cut in [1, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode_batches(&bytes[..cut], "rows").is_err(),
                "cut at {cut}"
            );
        }
        // A body-compressed stream is never written here: refused before Arrow allocates the
        // sizes it declares.
        let lz4 =
            crate::net::ipc::encode_ipc(&schema, &got, crate::net::ipc::Compression::Lz4).unwrap();
        let err = decode_batches(&lz4, "rows").unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn dictionary_batches_round_trip() {
        use arrow_array::types::Int32Type;
        use arrow_array::Array;
        use std::sync::Arc;
        let dict: arrow_array::DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("b"), Some("a")]
                .into_iter()
                .collect();
        let other: arrow_array::DictionaryArray<Int32Type> =
            vec![Some("c"), Some("c")].into_iter().collect();
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "d",
            dict.data_type().clone(),
            true,
        )]));
        let batches = vec![
            arrow_array::RecordBatch::try_new(schema.clone(), vec![Arc::new(dict)]).unwrap(),
            arrow_array::RecordBatch::try_new(schema.clone(), vec![Arc::new(other)]).unwrap(),
        ];
        let bytes = encode_batches(&schema, &batches).unwrap();
        assert_eq!(decode_batches(&bytes, "rows").unwrap(), (schema, batches));
    }

    #[test]
    fn saved_batches_refuse_damage_without_panicking() {
        use std::sync::Arc;
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("x", arrow_schema::DataType::Int64, true),
            arrow_schema::Field::new("s", arrow_schema::DataType::Utf8, true),
        ]));
        let b = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(arrow_array::StringArray::from(vec![
                    Some("a"),
                    Some("bc"),
                    None,
                ])),
            ],
        )
        .unwrap();
        let saved = SavedBatches::new(&schema, std::slice::from_ref(&b)).unwrap();
        let bytes = encode(&saved).unwrap();
        let back: SavedBatches = decode(&bytes, "rows").unwrap();
        assert_eq!(back.load("rows").unwrap(), (schema, vec![b]));
        for cut in 0..saved.ipc.len() {
            assert!(decode_batches(&saved.ipc[..cut], "rows").is_err());
        }
        for pos in 0..saved.ipc.len() {
            let mut bad = saved.clone();
            bad.ipc[pos] ^= 0x5a;
            let err = bad.load("rows").unwrap_err();
            assert!(err.to_string().contains("checksum"), "{err}");
            // Even with a matching checksum, decoding fails cleanly (or reads other values).
            bad.crc = crc32c::crc32c(&bad.ipc);
            let _ = bad.load("rows");
        }
    }
}
