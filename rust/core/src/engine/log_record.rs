//! The payload of the engine's write-ahead-log records: one record per input that changes the
//! engine (see `durable.rs`), and how it is encoded into a [`RecordBuf`] and read back.
//!
//! A push is the bulk of the log (every row pushed), so it has its own framing, written
//! straight into the log's record buffer with one copy of the data (the Arrow IPC encoding):
//!
//! ```text
//! [tag u8 = PUSH][now i64][has_seq u8][seq u64][source_len u32][source utf-8]
//! [streams u32][len u64 per stream][Arrow IPC stream per run of batches of one schema]
//! ```
//!
//! (integers little-endian). Every other input is small and rare: `[tag u8 = OTHER]` then
//! the rkyv archive of a [`LogRecord`].
//!
//! Reading is strict: every length is checked against the bytes that are there, so a damaged
//! record is an error naming what is wrong, never a panic or a huge allocation (the log's
//! checksums catch damage first; this is the second line). Reading never copies the pushed
//! data: a [`LoggedPush`] borrows its streams from the record.

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::operator::snapshot::{
    decode, decode_batch, decode_batches, encode_aligned, encode_batch,
};
use crate::time::Timestamp;
use crate::wal::RecordBuf;

/// Tag of a push record.
const TAG_PUSH: u8 = 0xB1;
/// Tag of any other record (an rkyv [`LogRecord`]).
const TAG_OTHER: u8 = 0xB2;

/// A logged input other than a push.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(super) enum LogRecord {
    /// `Engine::update_table`.
    Table {
        name: String,
        replace: bool,
        now: Timestamp,
        data: Vec<u8>,
    },
    /// A poll that moved processing time (periodic emits, idle sources, table TTLs).
    Tick { now: Timestamp },
    /// An explicit check for idle sources.
    Idle { now: Timestamp },
    /// `Engine::flush`: end of input.
    Flush { now: Timestamp },
}

impl LogRecord {
    /// A table change of `rows`.
    pub fn table(name: &str, replace: bool, now: Timestamp, rows: &RecordBatch) -> Result<Self> {
        Ok(LogRecord::Table {
            name: name.to_string(),
            replace,
            now,
            data: encode_batch(rows)?,
        })
    }

    /// The rows of a [`LogRecord::Table`] as one batch.
    pub fn table_rows(data: &[u8]) -> Result<RecordBatch> {
        decode_batch(data, "logged table change")
    }

    /// The processing time the input was applied at.
    pub fn now(&self) -> Timestamp {
        match self {
            LogRecord::Table { now, .. }
            | LogRecord::Tick { now }
            | LogRecord::Idle { now }
            | LogRecord::Flush { now } => *now,
        }
    }

    /// Writes the record into `out` (emptied first).
    pub fn encode_into(&self, out: &mut RecordBuf) -> Result<()> {
        out.clear();
        out.extend_from_slice(&[TAG_OTHER]);
        out.extend_from_slice(&encode_aligned(self)?);
        Ok(())
    }
}

/// A logged push, borrowing its data from the record's bytes.
#[derive(Debug)]
pub(super) struct LoggedPush<'a> {
    pub source: &'a str,
    pub seq: Option<u64>,
    pub now: Timestamp,
    /// One Arrow IPC stream per run of batches with the same schema.
    pub streams: Vec<&'a [u8]>,
}

impl LoggedPush<'_> {
    /// The pushed batches, in order.
    pub fn batches(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for s in &self.streams {
            out.extend(decode_batches(s, "logged push")?.1);
        }
        Ok(out)
    }
}

/// A record read back from the log.
#[derive(Debug)]
pub(super) enum Logged<'a> {
    Push(LoggedPush<'a>),
    Other(LogRecord),
}

impl Logged<'_> {
    /// The processing time the input was applied at.
    pub fn now(&self) -> Timestamp {
        match self {
            Logged::Push(p) => p.now,
            Logged::Other(r) => r.now(),
        }
    }
}

/// Writes a push of `batches` into `out` (emptied first); see the module docs for the layout.
/// Batches with the same schema in a row share one IPC stream.
pub(super) fn encode_push(
    out: &mut RecordBuf,
    source: &str,
    seq: Option<u64>,
    now: Timestamp,
    batches: &[RecordBatch],
) -> Result<()> {
    let source_len = u32::try_from(source.len())
        .map_err(|_| Error::InvalidPlan("source name longer than 4 GiB".into()))?;
    let mut runs = Vec::new();
    let mut start = 0;
    while start < batches.len() {
        let schema = batches[start].schema();
        let end = batches[start..]
            .iter()
            .position(|b| b.schema() != schema)
            .map_or(batches.len(), |k| start + k);
        runs.push(start..end);
        start = end;
    }
    out.clear();
    // A capacity hint only (the buffer grows as needed, and a recycled one keeps its size):
    // what fixed-width columns' rows occupy. Not `get_array_memory_size`, which for a slice
    // of a larger batch reports the parent's whole buffers (it reserved hundreds of MB per
    // record), nor `get_slice_memory_size`, which indexes the offsets that a raw empty
    // variable-width `ArrayData` may lack (valid Arrow, e.g. from a legacy IPC stream).
    let data: usize = batches
        .iter()
        .flat_map(|b| b.columns())
        .map(|c| {
            let width = c.data_type().primitive_width().unwrap_or(0);
            c.len() * width + c.len().div_ceil(8) + 3 * 64
        })
        .sum();
    out.reserve(64 + source.len() + runs.len() * (8 + 1024) + data);
    out.extend_from_slice(&[TAG_PUSH]);
    out.extend_from_slice(&now.to_le_bytes());
    out.extend_from_slice(&[u8::from(seq.is_some())]);
    out.extend_from_slice(&seq.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&source_len.to_le_bytes());
    out.extend_from_slice(source.as_bytes());
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    let lens_at = out.len();
    for _ in &runs {
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    for (i, run) in runs.into_iter().enumerate() {
        let before = out.len();
        let schema = batches[run.start].schema();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut *out, &schema)?;
        for b in &batches[run] {
            w.write(b)?;
        }
        w.finish()?;
        drop(w);
        let len = (out.len() - before) as u64;
        out.patch(lens_at + i * 8, &len.to_le_bytes());
    }
    Ok(())
}

/// Reads a record written by [`encode_push`] or [`LogRecord::encode_into`].
pub(super) fn decode_logged(bytes: &[u8]) -> Result<Logged<'_>> {
    let mut r = Reader { bytes, at: 0 };
    match r.take(1)?[0] {
        TAG_PUSH => {
            let now = i64::from_le_bytes(r.array()?);
            let has_seq = r.take(1)?[0];
            let seq = u64::from_le_bytes(r.array()?);
            let seq = match has_seq {
                0 => None,
                1 => Some(seq),
                other => return Err(damaged(format!("sequence flag {other}"))),
            };
            let source_len = u32::from_le_bytes(r.array()?) as usize;
            let source = std::str::from_utf8(r.take(source_len)?)
                .map_err(|_| damaged("the source name is not UTF-8".into()))?;
            let n = u32::from_le_bytes(r.array()?) as usize;
            // Each stream takes at least its 8-byte length: a garbage count runs out of bytes
            // here rather than being allocated.
            if n > r.left() / 8 {
                return Err(damaged(format!(
                    "{n} streams declared in {} bytes",
                    r.left()
                )));
            }
            let lens: Vec<u64> = (0..n)
                .map(|_| r.array().map(u64::from_le_bytes))
                .collect::<Result<_>>()?;
            let mut streams = Vec::with_capacity(n);
            for len in lens {
                let len =
                    usize::try_from(len).map_err(|_| damaged(format!("stream length {len}")))?;
                streams.push(r.take(len)?);
            }
            if r.left() != 0 {
                return Err(damaged(format!("{} bytes after the last stream", r.left())));
            }
            Ok(Logged::Push(LoggedPush {
                source,
                seq,
                now,
                streams,
            }))
        }
        TAG_OTHER => Ok(Logged::Other(decode(
            &bytes[1..],
            "a write-ahead log record",
        )?)),
        other => Err(damaged(format!(
            "unknown record tag {other:#04x} (a log written by another laminar version?)"
        ))),
    }
}

fn damaged(what: String) -> Error {
    Error::Snapshot(format!("a write-ahead log record is damaged: {what}"))
}

/// A bounds-checked cursor over a record's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(damaged(format!(
                "{n} bytes wanted at offset {}, {} left",
                self.at,
                self.left()
            )));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("ts", Arc::new(Int64Array::from_iter_values(0..n)) as _)])
            .unwrap()
    }

    /// The capacity hint does not count a slice's parent buffers (a few rows of a large batch
    /// reserved its whole size), and an empty string array built without offsets (valid
    /// Arrow, as legacy IPC streams carry) encodes and reads back.
    #[test]
    fn the_capacity_hint_fits_slices_and_empty_string_arrays() {
        let big = batch(1_000_000);
        let mut rec = RecordBuf::new();
        encode_push(&mut rec, "trades", None, 0, &[big.slice(10, 100)]).unwrap();
        assert!(
            rec.capacity() < 64 << 10,
            "{} bytes reserved",
            rec.capacity()
        );
        let Logged::Push(p) = decode_logged(rec.payload()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.batches().unwrap(), vec![big.slice(10, 100)]);

        let empty = arrow_data::ArrayData::builder(arrow_schema::DataType::Utf8)
            .len(0)
            .add_buffer(arrow_buffer::Buffer::from_vec(Vec::<i32>::new())) // no offsets
            .add_buffer(arrow_buffer::Buffer::from_vec(Vec::<u8>::new()))
            .build()
            .unwrap();
        let empty = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(empty)) as arrow_array::ArrayRef,
        )])
        .unwrap();
        encode_push(&mut rec, "trades", None, 0, &[empty]).unwrap();
        let Logged::Push(p) = decode_logged(rec.payload()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.batches().unwrap()[0].num_rows(), 0);
    }

    #[test]
    fn a_push_reads_back_with_its_schema_runs() {
        let other =
            RecordBatch::try_from_iter([("s", Arc::new(StringArray::from(vec!["a", "b"])) as _)])
                .unwrap();
        let batches = vec![batch(3), batch(5), other.clone(), batch(1)];
        let mut rec = RecordBuf::new();
        encode_push(&mut rec, "trades", Some(7), 1234, &batches).unwrap();
        let Logged::Push(p) = decode_logged(rec.payload()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!((p.source, p.seq, p.now), ("trades", Some(7), 1234));
        assert_eq!(p.streams.len(), 3);
        assert_eq!(p.batches().unwrap(), batches);

        encode_push(&mut rec, "", None, -5, &[]).unwrap();
        let Logged::Push(p) = decode_logged(rec.payload()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!((p.source, p.seq, p.now, p.streams.len()), ("", None, -5, 0));
    }

    #[test]
    fn other_records_read_back() {
        let mut rec = RecordBuf::new();
        LogRecord::Flush { now: 42 }.encode_into(&mut rec).unwrap();
        let got = decode_logged(rec.payload()).unwrap();
        assert!(matches!(got, Logged::Other(LogRecord::Flush { now: 42 })));
        assert_eq!(got.now(), 42);
        let t = LogRecord::table("t", true, 9, &batch(4)).unwrap();
        t.encode_into(&mut rec).unwrap();
        let Logged::Other(LogRecord::Table {
            name,
            replace,
            now,
            data,
        }) = decode_logged(rec.payload()).unwrap()
        else {
            panic!("not a table record")
        };
        assert_eq!((name.as_str(), replace, now), ("t", true, 9));
        assert_eq!(LogRecord::table_rows(&data).unwrap(), batch(4));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut rec = RecordBuf::new();
        encode_push(&mut rec, "src", Some(1), 5, &[batch(10)]).unwrap();
        let good = rec.payload().to_vec();
        // Every truncation fails cleanly.
        for cut in 0..good.len() {
            assert!(
                decode_logged(&good[..cut]).is_err(),
                "a push cut at {cut} decoded"
            );
        }
        // Garbage counts and lengths are refused before anything is allocated.
        let mut bad = good.clone();
        let count_at = 1 + 8 + 1 + 8 + 4 + 3;
        bad[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_logged(&bad).is_err());
        let mut bad = good.clone();
        bad[count_at + 4..count_at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_logged(&bad).is_err());
        let mut bad = good.clone();
        bad[9] = 2; // sequence flag
        assert!(decode_logged(&bad).is_err());
        let mut bad = good;
        bad[0] = 0;
        let e = decode_logged(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown record tag"), "{e}");
        assert!(decode_logged(&[]).is_err());
    }
}
