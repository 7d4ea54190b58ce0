//! Arrow IPC payloads of data frames (Push, Subscribed, Result): record batches to an Arrow
//! IPC stream and back, with optional LZ4-frame or zstd body compression.
//!
//! A payload is one complete Arrow IPC *stream* in the encapsulated format with continuation
//! markers: a Schema message, then dictionary and record-batch messages, then the
//! end-of-stream marker (`FF FF FF FF 00 00 00 00`). The bytes are the columnar layout itself:
//! nothing is encoded per row.
//!
//! # Invariants
//!
//! * **Decoding never panics and never allocates what the peer merely claims.** Before Arrow
//!   sees the bytes, [`decode_ipc_buffer`] walks the stream's framing itself: every message
//!   starts with a continuation marker and a metadata length that fits; the metadata is a
//!   verified flatbuffer; the body length fits; every buffer lies inside its body; the stream
//!   ends with exactly one end marker. For compressed bodies it sums the decompressed sizes
//!   the buffers declare (the 8-byte prefix of each) and refuses the stream when the sum is
//!   over [`IpcLimits::max_decoded_bytes`]: Arrow allocates the declared size before it
//!   decompresses, so without this check an 8-byte lie would abort the process on an
//!   allocation failure, which no `catch_unwind` can stop. Then Arrow decodes (with its own
//!   validation of array data) under `catch_unwind`, for the panics left in its handling of
//!   malformed metadata.
//! * **The frame's compression flag must match the stream**: every record batch (and
//!   dictionary batch) carries the codec the flag announces, or none when the flag is
//!   absent ([`NetError::CompressionMismatch`]). A receiver can therefore refuse an
//!   unsupported codec from the header alone.
//! * [`decode_ipc_buffer`] takes an Arrow `Buffer` (e.g. made from the frame's payload `Vec`
//!   without a copy) and the decoded arrays point into it where alignment allows.

use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::{CompressionType, MessageHeader};
use arrow_schema::{ArrowError, SchemaRef};

use super::error::NetError;
use super::frame::Flags;

/// The continuation marker in front of every encapsulated IPC message.
const CONTINUATION: [u8; 4] = [0xff; 4];

/// The default of [`IpcLimits::max_decoded_bytes`]: 256 MiB.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Body compression of an Arrow IPC payload, announced by the frame's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Buffers as they are.
    #[default]
    None,
    /// LZ4 frame format (Arrow `LZ4_FRAME`), flag `COMPRESSED_LZ4`.
    Lz4,
    /// Zstandard (Arrow `ZSTD`), flag `COMPRESSED_ZSTD`.
    Zstd,
}

impl Compression {
    /// The compression a frame's flags announce (the header decoder already refused both
    /// bits at once).
    pub fn from_flags(flags: Flags) -> Compression {
        if flags.contains(Flags::COMPRESSED_LZ4) {
            Compression::Lz4
        } else if flags.contains(Flags::COMPRESSED_ZSTD) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The flag to set on a frame whose payload uses this compression.
    pub fn flags(self) -> Flags {
        match self {
            Compression::None => Flags::NONE,
            Compression::Lz4 => Flags::COMPRESSED_LZ4,
            Compression::Zstd => Flags::COMPRESSED_ZSTD,
        }
    }

    fn arrow(self) -> Option<CompressionType> {
        match self {
            Compression::None => None,
            Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
            Compression::Zstd => Some(CompressionType::ZSTD),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    fn from_arrow(c: Option<CompressionType>) -> Result<Compression, NetError> {
        match c {
            None => Ok(Compression::None),
            Some(CompressionType::LZ4_FRAME) => Ok(Compression::Lz4),
            Some(CompressionType::ZSTD) => Ok(Compression::Zstd),
            Some(other) => Err(NetError::BadArrow(format!(
                "unknown compression codec {}",
                other.0
            ))),
        }
    }
}

/// Limits applied when decoding an Arrow IPC payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcLimits {
    /// The most bytes the stream's buffers may occupy once decompressed (for uncompressed
    /// streams the body sizes, which the frame length already bounds).
    pub max_decoded_bytes: u64,
}

impl Default for IpcLimits {
    fn default() -> Self {
        IpcLimits {
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
        }
    }
}

/// The Arrow IPC stream of `batches` (all of `schema`), body-compressed as asked.
pub fn encode_ipc(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    compression: Compression,
) -> Result<Vec<u8>, NetError> {
    let mut out = Vec::new();
    encode_ipc_into(&mut out, schema, batches, compression)?;
    Ok(out)
}

/// [`encode_ipc`] appending to `out` (e.g. after a frame's head); on error `out` is left as
/// it was.
pub fn encode_ipc_into(
    out: &mut Vec<u8>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    compression: Compression,
) -> Result<(), NetError> {
    let start = out.len();
    let r = write_stream(out, schema, batches, compression);
    if r.is_err() {
        out.truncate(start);
    }
    r.map_err(|e| NetError::BadArrow(format!("cannot encode: {e}")))
}

fn write_stream(
    out: &mut Vec<u8>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    compression: Compression,
) -> Result<(), ArrowError> {
    let options = IpcWriteOptions::default().try_with_compression(compression.arrow())?;
    let mut w = StreamWriter::try_new_with_options(out, schema, options)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

/// Decodes an Arrow IPC stream payload (copying it once into an Arrow buffer); see
/// [`decode_ipc_buffer`].
pub fn decode_ipc(
    bytes: &[u8],
    expected: Compression,
    limits: &IpcLimits,
) -> Result<(SchemaRef, Vec<RecordBatch>), NetError> {
    // Scan first so that garbage is refused before the copy.
    scan(bytes, expected, limits)?;
    decode_scanned(Buffer::from(bytes))
}

/// Decodes an Arrow IPC stream payload held in `buffer` (no copy: make it with
/// `Buffer::from_vec(frame.payload)` and `slice` it to the IPC bytes). `expected` is the
/// compression the frame's flags announce.
///
/// Errors: [`NetError::BadArrow`] for anything malformed (framing, metadata, buffers, data
/// that fails Arrow's validation, a panic inside Arrow), [`NetError::ArrowTooLarge`] for a
/// stream that declares more decoded bytes than `limits` allows,
/// [`NetError::CompressionMismatch`] when the stream's codec is not the flag's.
pub fn decode_ipc_buffer(
    buffer: Buffer,
    expected: Compression,
    limits: &IpcLimits,
) -> Result<(SchemaRef, Vec<RecordBatch>), NetError> {
    scan(buffer.as_slice(), expected, limits)?;
    decode_scanned(buffer)
}

fn decode_scanned(mut buffer: Buffer) -> Result<(SchemaRef, Vec<RecordBatch>), NetError> {
    // The buffer and decoder are dropped if Arrow panics; nothing shared outlives the call,
    // so observing them half-updated is impossible.
    let read = catch_unwind(AssertUnwindSafe(move || {
        let mut decoder = arrow_ipc::reader::StreamDecoder::new();
        let mut batches = Vec::new();
        while let Some(b) = decoder.decode(&mut buffer)? {
            batches.push(b);
        }
        decoder.finish()?;
        let schema = decoder
            .schema()
            .ok_or_else(|| ArrowError::IpcError("no schema".into()))?;
        Ok::<_, ArrowError>((schema, batches))
    }));
    match read {
        Ok(r) => r.map_err(|e| NetError::BadArrow(e.to_string())),
        Err(_) => Err(NetError::BadArrow(
            "the Arrow decoder panicked on this payload".into(),
        )),
    }
}

fn bad(msg: impl Into<String>) -> NetError {
    NetError::BadArrow(msg.into())
}

/// Walks the stream's message framing without decoding arrays; see the module invariants.
fn scan(bytes: &[u8], expected: Compression, limits: &IpcLimits) -> Result<(), NetError> {
    let mut rest = bytes;
    let mut declared: u64 = 0;
    let mut index = 0usize;
    loop {
        let Some((cont, after)) = rest.split_first_chunk::<4>() else {
            return Err(bad("the stream is cut short (no end-of-stream marker)"));
        };
        if *cont != CONTINUATION {
            return Err(bad(format!("message {index}: no continuation marker")));
        }
        let Some((len, after)) = after.split_first_chunk::<4>() else {
            return Err(bad(format!("message {index}: metadata length cut short")));
        };
        let meta_len = i32::from_le_bytes(*len);
        if meta_len == 0 {
            if !after.is_empty() {
                return Err(bad(format!(
                    "{} bytes after the end-of-stream marker",
                    after.len()
                )));
            }
            if index == 0 {
                return Err(bad("no schema message"));
            }
            return Ok(());
        }
        let meta_len = usize::try_from(meta_len)
            .map_err(|_| bad(format!("message {index}: negative metadata length")))?;
        if meta_len > after.len() {
            return Err(bad(format!(
                "message {index}: metadata length {meta_len} runs past the {} bytes left",
                after.len()
            )));
        }
        let (meta, after) = after.split_at(meta_len);
        let message = arrow_ipc::root_as_message(meta)
            .map_err(|e| bad(format!("message {index}: invalid metadata: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| bad(format!("message {index}: negative body length")))?;
        if body_len > after.len() {
            return Err(bad(format!(
                "message {index}: body length {body_len} runs past the {} bytes left",
                after.len()
            )));
        }
        let (body, after) = after.split_at(body_len);
        let header = message.header_type();
        if index == 0 && header != MessageHeader::Schema {
            return Err(bad("the first message is not a schema"));
        }
        let batch = match header {
            MessageHeader::Schema if index == 0 => None,
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => {
                message.header_as_dictionary_batch().and_then(|d| d.data())
            }
            other => {
                return Err(bad(format!(
                    "message {index}: unexpected message type {}",
                    other.0
                )))
            }
        };
        if matches!(
            header,
            MessageHeader::RecordBatch | MessageHeader::DictionaryBatch
        ) {
            let batch =
                batch.ok_or_else(|| bad(format!("message {index}: batch header missing")))?;
            if batch.length() < 0 {
                return Err(bad(format!("message {index}: negative row count")));
            }
            let codec = Compression::from_arrow(batch.compression().map(|c| c.codec()))?;
            if codec != expected {
                return Err(NetError::CompressionMismatch {
                    flag: expected.name(),
                    stream: codec.name(),
                });
            }
            let buffers = batch.buffers().into_iter().flatten();
            for b in buffers {
                let (off, len) = (b.offset(), b.length());
                let end = off.checked_add(len);
                let inside = off >= 0
                    && len >= 0
                    && end.is_some_and(|e| usize::try_from(e).is_ok_and(|e| e <= body.len()));
                if !inside {
                    return Err(bad(format!(
                        "message {index}: buffer [{off}, +{len}) lies outside the {body_len}-byte body"
                    )));
                }
                let add = if codec == Compression::None || len == 0 {
                    len as u64
                } else {
                    // A compressed buffer: i64 decompressed size, then the data; -1 means
                    // "stored uncompressed".
                    let start = off as usize;
                    let prefix = body
                        .get(start..start + 8)
                        .and_then(|p| p.first_chunk::<8>())
                        .ok_or_else(|| {
                            bad(format!("message {index}: compressed buffer under 8 bytes"))
                        })?;
                    match i64::from_le_bytes(*prefix) {
                        -1 => len as u64,
                        n if n < 0 => {
                            return Err(bad(format!(
                                "message {index}: negative decompressed size {n}"
                            )))
                        }
                        n => n as u64,
                    }
                };
                declared = declared.saturating_add(add);
                if declared > limits.max_decoded_bytes {
                    return Err(NetError::ArrowTooLarge {
                        declared,
                        max: limits.max_decoded_bytes,
                    });
                }
            }
        }
        rest = after;
        index += 1;
    }
}
