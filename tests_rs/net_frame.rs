//! The wire protocol's codec (`core::net`): property tests of the header, of every message
//! type, of the incremental decoder under arbitrary splits and of Arrow IPC payloads; the
//! corpus of hostile inputs, each with the `NetError` it must give; and bounded fuzz-style
//! properties (arbitrary and mutated bytes into every decoder: an error, never a panic).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use laminar_core::net::{
    decode_ipc, decode_ipc_buffer, encode_ipc, Compression, DecoderConfig, ErrorCode, Flags, Frame,
    FrameDecoder, FrameHeader, IpcLimits, Message, NetError, Opcode, HEADER_LEN, MAGIC,
    MAX_CONTROL_PAYLOAD, MAX_NAME_LEN, MAX_TOKEN_LEN,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Owned messages, for generating and comparing.

#[derive(Debug, Clone)]
enum Owned {
    Hello(u16, Vec<u8>),
    Welcome(u16, u32, String),
    Ping(u64),
    Pong(u64),
    Error(u16, String),
    Close(u16),
    Push(u64, u64, String, Vec<u8>),
    Ack(u64, u64, bool),
    Subscribe(String),
    Subscribed(String, Vec<u8>),
    Unsubscribe(String),
    Result(String, Vec<u8>),
}

impl Owned {
    fn msg(&self) -> Message<'_> {
        match self {
            Owned::Hello(version, token) => Message::Hello {
                version: *version,
                token,
            },
            Owned::Welcome(version, max_payload, server) => Message::Welcome {
                version: *version,
                max_payload: *max_payload,
                server,
            },
            Owned::Ping(nonce) => Message::Ping { nonce: *nonce },
            Owned::Pong(nonce) => Message::Pong { nonce: *nonce },
            Owned::Error(code, message) => Message::Error {
                code: ErrorCode::from_u16(*code),
                message,
            },
            Owned::Close(code) => Message::Close {
                code: (*code != 0).then(|| ErrorCode::from_u16(*code)),
            },
            Owned::Push(producer_id, seq, source, ipc) => Message::Push {
                producer_id: *producer_id,
                seq: *seq,
                source,
                ipc,
            },
            Owned::Ack(producer_id, seq, applied) => Message::Ack {
                producer_id: *producer_id,
                seq: *seq,
                applied: *applied,
            },
            Owned::Subscribe(query) => Message::Subscribe { query },
            Owned::Subscribed(query, schema_ipc) => Message::Subscribed { query, schema_ipc },
            Owned::Unsubscribe(query) => Message::Unsubscribe { query },
            Owned::Result(query, ipc) => Message::Result { query, ipc },
        }
    }
}

/// Source/query names: short ASCII, arbitrary Unicode, and exactly at the cap.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,20}",
        "\\PC{1,60}".prop_filter("within the cap", |s| s.len() <= MAX_NAME_LEN),
        Just("n".repeat(MAX_NAME_LEN)),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    "\\PC{0,80}".prop_filter("within the cap", move |s| s.len() <= max)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<u16>(), bytes(MAX_TOKEN_LEN + 1)).prop_map(|(v, t)| Owned::Hello(v, t)),
        (any::<u16>(), any::<u32>(), text(MAX_NAME_LEN))
            .prop_map(|(v, m, s)| Owned::Welcome(v, m, s)),
        any::<u64>().prop_map(Owned::Ping),
        any::<u64>().prop_map(Owned::Pong),
        (1..=u16::MAX, text(4096)).prop_map(|(c, m)| Owned::Error(c, m)),
        any::<u16>().prop_map(Owned::Close),
        (any::<u64>(), any::<u64>(), name(), bytes(300))
            .prop_map(|(p, s, n, b)| Owned::Push(p, s, n, b)),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(p, s, a)| Owned::Ack(p, s, a)),
        name().prop_map(Owned::Subscribe),
        (name(), bytes(300)).prop_map(|(n, b)| Owned::Subscribed(n, b)),
        name().prop_map(Owned::Unsubscribe),
        (name(), bytes(300)).prop_map(|(n, b)| Owned::Result(n, b)),
    ]
}

/// Flags allowed on `op`, chosen from `bits` (one compression flag at most).
fn allowed_flags(op: Opcode, bits: u8) -> Flags {
    let mut f = Flags::from_bits(bits & op.allowed_flags().bits()).unwrap();
    if f.contains(Flags::COMPRESSED_LZ4) && f.contains(Flags::COMPRESSED_ZSTD) {
        f = f.without(Flags::COMPRESSED_ZSTD);
    }
    f
}

fn encode(m: &Message<'_>, seq: u16, flags: Flags) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(seq, flags, &mut out).expect("encode");
    out
}

fn decode_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<Frame>, NetError> {
    let mut input = bytes;
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut input)? {
        frames.push(f);
    }
    assert!(
        input.is_empty(),
        "decode returns None only with its input used up"
    );
    Ok(frames)
}

/// The frame's payload decoded as a message (the only way to get a `Message` out of a frame
/// in a test without tying lifetimes in knots).
fn one_frame(bytes: &[u8]) -> Result<Frame, NetError> {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut frames = decode_all(&mut dec, bytes)?;
    dec.finish()?;
    assert_eq!(frames.len(), 1);
    Ok(frames.remove(0))
}

/// A raw frame with any header fields and payload, bypassing every check of the encoder.
fn raw(opcode: u8, flags: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![opcode, flags];
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn payload_err(op: Opcode, payload: &[u8]) -> NetError {
    Message::decode(op, payload).expect_err("payload must be refused")
}

// ---------------------------------------------------------------------------------------
// Arrow data.

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("id", DataType::Int64, false),
        Field::new("px", DataType::Float64, true),
        Field::new("sym", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, false),
        Field::new("q", DataType::Int32, true),
    ]))
}

type Row = (i64, i64, Option<f64>, Option<String>, bool, Option<i32>);

fn row() -> impl Strategy<Value = Row> {
    (
        any::<i64>(),
        any::<i64>(),
        proptest::option::of(-1e9f64..1e9),
        proptest::option::of("\\PC{0,12}"),
        any::<bool>(),
        proptest::option::of(any::<i32>()),
    )
}

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from(
            rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

/// A compressible batch of `n` rows of one Int64 column.
fn long_batch(n: i64) -> (SchemaRef, RecordBatch) {
    let s = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let b = RecordBatch::try_new(
        s.clone(),
        vec![Arc::new(Int64Array::from(
            (0..n).map(|i| i % 7).collect::<Vec<_>>(),
        ))],
    )
    .unwrap();
    (s, b)
}

/// Offsets, within `ipc`, of each record-batch message's body start and its buffers'
/// (offset, length), found by walking the stream (test-side, independent of the scanner).
fn batch_buffers(ipc: &[u8]) -> Vec<(usize, Vec<(usize, usize)>)> {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let len = i32::from_le_bytes(ipc[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if len == 0 {
            return out;
        }
        let meta = &ipc[pos + 8..pos + 8 + len];
        let m = arrow_ipc::root_as_message(meta).unwrap();
        let body = pos + 8 + len;
        if let Some(rb) = m.header_as_record_batch() {
            let bufs = rb
                .buffers()
                .unwrap()
                .iter()
                .map(|b| (b.offset() as usize, b.length() as usize))
                .collect();
            out.push((body, bufs));
        }
        pos = body + m.bodyLength() as usize;
    }
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn header_round_trip(op in 0..Opcode::ALL.len(), bits in any::<u8>(), seq in any::<u16>(),
                         len in any::<u32>()) {
        let opcode = Opcode::ALL[op];
        let h = FrameHeader { opcode, flags: allowed_flags(opcode, bits), seq, len };
        let b = h.encode();
        prop_assert_eq!(b[0], opcode as u8);
        prop_assert_eq!(u16::from_le_bytes([b[2], b[3]]), seq);
        prop_assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), len);
        prop_assert_eq!(FrameHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn every_header_byte_pattern_decodes_or_errs(b in any::<[u8; 8]>()) {
        match FrameHeader::decode(&b) {
            Ok(h) => {
                prop_assert_eq!(h.encode(), b);
                prop_assert!(h.flags.without(h.opcode.allowed_flags()).is_empty());
            }
            Err(NetError::UnknownOpcode(o)) => prop_assert!(Opcode::from_u8(o).is_none()),
            Err(NetError::UnknownFlags { bits, .. }) => prop_assert!(bits & 0xf0 != 0),
            Err(NetError::FlagsNotAllowed { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn message_round_trip(m in owned(), seq in any::<u16>(), bits in any::<u8>()) {
        let msg = m.msg();
        let flags = allowed_flags(msg.opcode(), bits);
        let wire = encode(&msg, seq, flags);
        prop_assert_eq!(wire.len(), HEADER_LEN + msg.payload_len());
        let h = FrameHeader::decode_slice(&wire).unwrap();
        prop_assert_eq!(h, FrameHeader { opcode: msg.opcode(), flags, seq,
                                         len: msg.payload_len() as u32 });
        prop_assert_eq!(Message::decode(h.opcode, &wire[HEADER_LEN..]).unwrap(), msg);
        // And through the stream decoder.
        let f = one_frame(&wire).unwrap();
        prop_assert_eq!(f.message().unwrap(), msg);
    }

    #[test]
    fn decoder_yields_the_same_frames_whatever_the_splits(
        ms in proptest::collection::vec((owned(), any::<u16>(), any::<u8>()), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for (m, seq, bits) in &ms {
            let msg = m.msg();
            let flags = allowed_flags(msg.opcode(), *bits);
            let start = wire.len();
            msg.encode(*seq, flags, &mut wire).unwrap();
            want.push(wire[start..].to_vec());
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(0);
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut dec = FrameDecoder::new(DecoderConfig::default());
        let mut got = Vec::new();
        for w in cuts.windows(2) {
            got.extend(decode_all(&mut dec, &wire[w[0]..w[1]]).unwrap());
        }
        dec.finish().unwrap();
        prop_assert!(!dec.is_mid_frame());
        prop_assert_eq!(got.len(), want.len());
        for ((f, w), (m, _, _)) in got.iter().zip(&want).zip(&ms) {
            let mut re = f.header.encode().to_vec();
            re.extend_from_slice(&f.payload);
            prop_assert_eq!(&re, w);
            prop_assert_eq!(f.message().unwrap(), m.msg());
        }
    }

    #[test]
    fn arrow_payload_round_trip(
        batches in proptest::collection::vec(proptest::collection::vec(row(), 0..40), 0..4),
        c in compression(),
        producer_id in any::<u64>(),
        pseq in any::<u64>(),
    ) {
        let batches: Vec<RecordBatch> = batches.iter().map(|rows| batch(rows)).collect();
        let ipc = encode_ipc(&schema(), &batches, c).unwrap();
        let (s, got) = decode_ipc(&ipc, c, &IpcLimits::default()).unwrap();
        prop_assert_eq!(&s, &schema());
        prop_assert_eq!(&got, &batches);
        // Through a Push frame, decoding the IPC bytes in place (no copy of the payload).
        let msg = Message::Push { producer_id, seq: pseq, source: "trades", ipc: &ipc };
        let wire = encode(&msg, 1, c.flags() | Flags::EXPECTS_RESPONSE);
        let f = one_frame(&wire).unwrap();
        prop_assert_eq!(f.compression(), c);
        let head = {
            let Message::Push { ipc, .. } = f.message().unwrap() else { unreachable!() };
            f.payload.len() - ipc.len()
        };
        let compression = f.compression();
        let buffer = Buffer::from_vec(f.payload).slice(head);
        let (_, got) = decode_ipc_buffer(buffer, compression, &IpcLimits::default()).unwrap();
        prop_assert_eq!(&got, &batches);
    }

    /// Fuzz-style: arbitrary bytes into the frame decoder (small limits, so that oversized
    /// headers are common), then every frame into the message decoder and, for data frames,
    /// the IPC decoder. Anything may be refused; nothing may panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                   max in 0u32..300) {
        let mut dec = FrameDecoder::new(DecoderConfig { max_payload: max });
        let mut input = &bytes[..];
        loop {
            match dec.decode(&mut input) {
                Ok(Some(f)) => {
                    prop_assert!(f.payload.len() as u32 == f.header.len);
                    prop_assert!(f.header.len <= max);
                    if let Ok(Message::Push { ipc, .. } | Message::Result { ipc, .. }
                        | Message::Subscribed { schema_ipc: ipc, .. }) = f.message() {
                        let _ = decode_ipc(ipc, f.compression(), &IpcLimits::default());
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    prop_assert!(matches!(dec.decode(&mut input), Err(NetError::Poisoned)));
                    break;
                }
            }
        }
        for op in Opcode::ALL {
            let _ = Message::decode(op, &bytes);
        }
        let _ = FrameHeader::decode_slice(&bytes);
    }

    /// Fuzz-style: valid Arrow IPC streams with bytes overwritten or cut; the decoder must
    /// return an error or batches, never panic or abort.
    #[test]
    fn mutated_arrow_never_panics(
        rows in proptest::collection::vec(row(), 0..20),
        c in compression(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut ipc = encode_ipc(&schema(), &[batch(&rows)], c).unwrap();
        for (i, b) in edits {
            let i = i.index(ipc.len());
            ipc[i] = b;
        }
        if let Some(cut) = cut {
            ipc.truncate(cut.index(ipc.len()));
        }
        let limits = IpcLimits { max_decoded_bytes: 1 << 20 };
        let _ = decode_ipc(&ipc, c, &limits);
    }
}

// ---------------------------------------------------------------------------------------
// The hostile corpus.

#[test]
fn unknown_opcodes() {
    for b in [0x00u8, 0x07, 0x0f, 0x12, 0x24, 0x7f, 0xff] {
        let e = one_frame(&raw(b, 0, 0, &[])).unwrap_err();
        assert!(matches!(e, NetError::UnknownOpcode(x) if x == b), "{e}");
        assert_eq!(e.code(), ErrorCode::UnknownOpcode);
    }
    // An HTTP request sent to the port: 'G' is no opcode.
    let e = one_frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
    assert!(matches!(e, NetError::UnknownOpcode(b'G')));
}

#[test]
fn bad_flags() {
    let e = one_frame(&raw(Opcode::Ping as u8, 0x10, 0, &[0; 8])).unwrap_err();
    assert!(
        matches!(e, NetError::UnknownFlags { bits: 0x10, .. }),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::BadFlags);
    // FINAL on a Ping, compression on an Ack, both codecs on a Push.
    for (op, flags) in [
        (Opcode::Ping, Flags::FINAL.bits()),
        (Opcode::Ack, Flags::COMPRESSED_LZ4.bits()),
        (Opcode::Push, 0x03),
    ] {
        let e = one_frame(&raw(op as u8, flags, 0, &[])).unwrap_err();
        assert!(matches!(e, NetError::FlagsNotAllowed { .. }), "{op:?}: {e}");
    }
    // The encoder refuses the same.
    let mut out = Vec::new();
    assert!(Message::Ping { nonce: 1 }
        .encode(0, Flags::FINAL, &mut out)
        .is_err());
    assert!(out.is_empty());
}

#[test]
fn oversized_frames_are_refused_from_the_header_alone() {
    let max = 1000;
    let mut dec = FrameDecoder::new(DecoderConfig { max_payload: max });
    // Only the header is sent: the error comes before any payload is buffered.
    let header = FrameHeader {
        opcode: Opcode::Push,
        flags: Flags::NONE,
        seq: 1,
        len: max + 1,
    };
    let mut input = &header.encode()[..];
    let e = dec.decode(&mut input).unwrap_err();
    assert!(matches!(e, NetError::FrameTooLarge { len, max: m, .. } if len == max + 1 && m == max));
    assert_eq!(e.code(), ErrorCode::TooLarge);
    assert_eq!(dec.buffered(), 0);
    assert!(matches!(dec.decode(&mut &[][..]), Err(NetError::Poisoned)));
    // A 4 GiB claim.
    let e = one_frame(&[0x23, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(e, NetError::FrameTooLarge { len: u32::MAX, .. }));
    // Control frames are capped at MAX_CONTROL_PAYLOAD whatever the configured maximum.
    let big = vec![0u8; MAX_CONTROL_PAYLOAD as usize + 1];
    let e = one_frame(&raw(Opcode::Hello as u8, 0, 0, &big)).unwrap_err();
    assert!(matches!(e, NetError::FrameTooLarge { max, .. } if max == MAX_CONTROL_PAYLOAD));
}

#[test]
fn a_header_claiming_a_large_payload_does_not_allocate_it() {
    // 16 MiB claimed, 10 bytes sent: the decoder holds what it received, not what was claimed.
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut wire = raw(Opcode::Push as u8, 0, 0, &[]);
    wire[4..8].copy_from_slice(&(16u32 << 20).to_le_bytes());
    wire.extend_from_slice(&[0u8; 10]);
    let mut input = &wire[..];
    assert!(dec.decode(&mut input).unwrap().is_none());
    assert_eq!(dec.buffered(), 10);
    assert!(matches!(dec.finish(), Err(NetError::Truncated { .. })));
}

#[test]
fn truncated_frames() {
    let wire = encode(&Message::Ping { nonce: 9 }, 1, Flags::NONE);
    for cut in 1..wire.len() {
        let mut dec = FrameDecoder::new(DecoderConfig::default());
        let frames = decode_all(&mut dec, &wire[..cut]).unwrap();
        assert!(frames.is_empty());
        let e = dec.finish().unwrap_err();
        assert!(matches!(e, NetError::Truncated { .. }), "cut {cut}: {e}");
        assert_eq!(e.code(), ErrorCode::BadFrame);
    }
    assert!(matches!(
        FrameHeader::decode_slice(&wire[..5]),
        Err(NetError::Truncated {
            needed: 8,
            available: 5
        })
    ));
}

#[test]
fn short_and_trailing_payloads() {
    assert!(matches!(
        payload_err(Opcode::Ping, &[0; 7]),
        NetError::ShortPayload {
            field: "nonce",
            needed: 1
        }
    ));
    assert!(matches!(
        payload_err(Opcode::Ack, &[0; 16]),
        NetError::ShortPayload {
            field: "applied",
            ..
        }
    ));
    assert!(matches!(
        payload_err(Opcode::Close, &[]),
        NetError::ShortPayload { field: "code", .. }
    ));
    assert!(matches!(
        payload_err(Opcode::Ping, &[0; 9]),
        NetError::TrailingBytes {
            opcode: Opcode::Ping,
            count: 1
        }
    ));
    assert!(matches!(
        payload_err(Opcode::Subscribe, &[1, 0, b'q', b'x']),
        NetError::TrailingBytes { count: 1, .. }
    ));
}

#[test]
fn lying_lengths_at_every_level() {
    // Hello token.
    let mut p = MAGIC.to_le_bytes().to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&10u16.to_le_bytes());
    p.extend_from_slice(b"short");
    assert!(matches!(
        payload_err(Opcode::Hello, &p),
        NetError::LyingLength {
            field: "token",
            len: 10,
            remaining: 5
        }
    ));
    // Welcome server name.
    let mut p = vec![1, 0, 0, 0, 0, 1];
    p.extend_from_slice(&3u16.to_le_bytes());
    assert!(matches!(
        payload_err(Opcode::Welcome, &p),
        NetError::LyingLength {
            field: "server",
            ..
        }
    ));
    // Error message.
    let p = [1, 0, 200, 0, b'x'];
    assert!(matches!(
        payload_err(Opcode::Error, &p),
        NetError::LyingLength {
            field: "message",
            ..
        }
    ));
    // Push source (the rest would be the IPC bytes).
    let mut p = vec![0u8; 16];
    p.extend_from_slice(&40u16.to_le_bytes());
    p.extend_from_slice(b"trades");
    assert!(matches!(
        payload_err(Opcode::Push, &p),
        NetError::LyingLength {
            field: "source",
            len: 40,
            remaining: 6
        }
    ));
    // Subscribe / Unsubscribe / Subscribed / Result query names.
    for op in [
        Opcode::Subscribe,
        Opcode::Unsubscribe,
        Opcode::Subscribed,
        Opcode::Result,
    ] {
        assert!(matches!(
            payload_err(op, &[9, 0, b'a']),
            NetError::LyingLength { field: "query", .. }
        ));
        // A length prefix that is itself cut.
        assert!(matches!(
            payload_err(op, &[9]),
            NetError::ShortPayload { field: "query", .. }
        ));
    }
    // The frame header's length is a lie too when the stream ends before it.
    let mut wire = encode(&Message::Subscribe { query: "q" }, 0, Flags::NONE);
    wire[4] += 5;
    let e = one_frame(&wire).unwrap_err();
    assert!(matches!(e, NetError::Truncated { .. }));
}

#[test]
fn fields_over_their_caps() {
    let mut p = MAGIC.to_le_bytes().to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&(MAX_TOKEN_LEN as u16 + 1).to_le_bytes());
    p.extend(std::iter::repeat_n(b'x', MAX_TOKEN_LEN + 1));
    assert!(matches!(
        payload_err(Opcode::Hello, &p),
        NetError::FieldTooLong { field: "token", .. }
    ));
    let long = "q".repeat(MAX_NAME_LEN + 1);
    let mut p = (long.len() as u16).to_le_bytes().to_vec();
    p.extend_from_slice(long.as_bytes());
    assert!(matches!(
        payload_err(Opcode::Subscribe, &p),
        NetError::FieldTooLong { field: "query", .. }
    ));
    // The encoder refuses what the decoder would.
    let mut out = Vec::new();
    let e = Message::Subscribe { query: &long }
        .encode(0, Flags::NONE, &mut out)
        .unwrap_err();
    assert!(matches!(e, NetError::FieldTooLong { .. }));
    let e = Message::Push {
        producer_id: 0,
        seq: 0,
        source: "",
        ipc: &[],
    }
    .encode(0, Flags::NONE, &mut out)
    .unwrap_err();
    assert!(matches!(e, NetError::EmptyName { field: "source" }));
    assert!(out.is_empty());
}

#[test]
fn invalid_utf8_and_empty_names() {
    let mut p = vec![0u8; 16];
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&[0xff, 0xfe]);
    let e = payload_err(Opcode::Push, &p);
    assert!(matches!(e, NetError::InvalidUtf8 { field: "source" }));
    assert_eq!(e.code(), ErrorCode::BadFrame);
    let e = payload_err(Opcode::Result, &[1, 0, 0x80]);
    assert!(matches!(e, NetError::InvalidUtf8 { field: "query" }));
    let e = payload_err(Opcode::Error, &[1, 0, 2, 0, 0xc3, 0x28]);
    assert!(matches!(e, NetError::InvalidUtf8 { field: "message" }));
    let e = payload_err(Opcode::Subscribe, &[0, 0]);
    assert!(matches!(e, NetError::EmptyName { field: "query" }));
}

#[test]
fn bad_magic_bad_bool_zero_code() {
    let mut p = b"HTTP".to_vec();
    p.extend_from_slice(&[1, 0, 0, 0]);
    let e = payload_err(Opcode::Hello, &p);
    assert!(matches!(e, NetError::BadMagic(m) if m == u32::from_le_bytes(*b"HTTP")));
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
    let mut p = vec![0u8; 16];
    p.push(2);
    assert!(matches!(
        payload_err(Opcode::Ack, &p),
        NetError::BadBool {
            field: "applied",
            value: 2
        }
    ));
    assert!(matches!(
        payload_err(Opcode::Error, &[0, 0, 0, 0]),
        NetError::ZeroCode {
            opcode: Opcode::Error
        }
    ));
    // Close with code 0 is a normal close; an unknown code is kept.
    assert_eq!(
        Message::decode(Opcode::Close, &[0, 0]).unwrap(),
        Message::Close { code: None }
    );
    assert_eq!(
        Message::decode(Opcode::Close, &[0x39, 0x05]).unwrap(),
        Message::Close {
            code: Some(ErrorCode::Unknown(0x0539))
        }
    );
}

#[test]
fn invalid_arrow_ipc() {
    let limits = IpcLimits::default();
    let (s, b) = long_batch(100);
    let good = encode_ipc(&s, &[b], Compression::None).unwrap();
    let bad_cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"definitely not arrow".to_vec()),
        (
            "only the end marker",
            vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        ),
        ("cut in half", good[..good.len() / 2].to_vec()),
        ("no end marker", good[..good.len() - 8].to_vec()),
        (
            "bytes after the end",
            [good.clone(), vec![1, 2, 3]].concat(),
        ),
        ("legacy framing", good[4..].to_vec()),
        ("negative metadata length", {
            let mut g = good.clone();
            g[4..8].copy_from_slice(&(-5i32).to_le_bytes());
            g
        }),
        ("metadata length past the end", {
            let mut g = good.clone();
            g[4..8].copy_from_slice(&(1_000_000i32).to_le_bytes());
            g
        }),
        ("garbage metadata", {
            let mut g = good.clone();
            for x in &mut g[8..40] {
                *x = 0xee;
            }
            g
        }),
    ];
    for (what, bytes) in bad_cases {
        let e = decode_ipc(&bytes, Compression::None, &limits).unwrap_err();
        assert!(matches!(e, NetError::BadArrow(_)), "{what}: {e}");
        assert_eq!(e.code(), ErrorCode::BadArrow);
    }
    // A buffer that lies outside its body.
    let (body, bufs) = batch_buffers(&good).remove(0);
    let _ = body;
    assert!(!bufs.is_empty());
    // Find and corrupt the first buffer's length inside the flatbuffer metadata: search for
    // its (offset, length) pair as two little-endian i64s.
    let (off, len) = *bufs.last().unwrap();
    let mut pat = (off as i64).to_le_bytes().to_vec();
    pat.extend_from_slice(&(len as i64).to_le_bytes());
    let at = good
        .windows(16)
        .position(|w| w == &pat[..])
        .expect("buffer entry in the metadata");
    let mut g = good.clone();
    g[at + 8..at + 16].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let e = decode_ipc(&g, Compression::None, &limits).unwrap_err();
    assert!(
        matches!(e, NetError::BadArrow(ref m) if m.contains("outside")),
        "{e}"
    );
}

#[test]
fn decompression_bombs_are_refused_before_allocation() {
    let (s, b) = long_batch(10_000);
    for c in [Compression::Lz4, Compression::Zstd] {
        let ipc = encode_ipc(&s, std::slice::from_ref(&b), c).unwrap();
        // Untouched, it decodes.
        decode_ipc(&ipc, c, &IpcLimits::default()).unwrap();
        // Over a small limit, refused with the declared size.
        let e = decode_ipc(
            &ipc,
            c,
            &IpcLimits {
                max_decoded_bytes: 1000,
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, NetError::ArrowTooLarge { max: 1000, .. }),
            "{e}"
        );
        // A lying decompressed size of 1 TiB in the first compressed buffer.
        let (body, bufs) = batch_buffers(&ipc).remove(0);
        let (off, len) = *bufs.iter().find(|(_, l)| *l >= 8).unwrap();
        assert!(len >= 8);
        let mut bomb = ipc.clone();
        bomb[body + off..body + off + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
        let e = decode_ipc(&bomb, c, &IpcLimits::default()).unwrap_err();
        assert!(
            matches!(e, NetError::ArrowTooLarge { declared, .. } if declared >= 1 << 40),
            "{e}"
        );
        assert_eq!(e.code(), ErrorCode::BadArrow);
        // A negative one.
        bomb[body + off..body + off + 8].copy_from_slice(&(-7i64).to_le_bytes());
        let e = decode_ipc(&bomb, c, &IpcLimits::default()).unwrap_err();
        assert!(matches!(e, NetError::BadArrow(_)), "{e}");
    }
}

#[test]
fn compression_flag_must_match_the_stream() {
    let (s, b) = long_batch(1000);
    let lz4 = encode_ipc(&s, std::slice::from_ref(&b), Compression::Lz4).unwrap();
    let plain = encode_ipc(&s, &[b], Compression::None).unwrap();
    assert!(
        lz4.len() < plain.len(),
        "lz4 compresses a repetitive column"
    );
    let e = decode_ipc(&lz4, Compression::None, &IpcLimits::default()).unwrap_err();
    assert!(matches!(
        e,
        NetError::CompressionMismatch {
            flag: "none",
            stream: "lz4"
        }
    ));
    let e = decode_ipc(&plain, Compression::Zstd, &IpcLimits::default()).unwrap_err();
    assert!(matches!(e, NetError::CompressionMismatch { .. }));
    // A stream with no batches carries no codec: any flag is fine.
    let empty = encode_ipc(&s, &[], Compression::Zstd).unwrap();
    let (got_schema, got) = decode_ipc(&empty, Compression::Zstd, &IpcLimits::default()).unwrap();
    assert_eq!(got_schema, s);
    assert!(got.is_empty());
}

#[test]
fn arrow_round_trip_of_empty_and_many_batches() {
    let empty = batch(&[]);
    let some = batch(&[
        (1, 2, Some(1.5), Some("a".into()), true, None),
        (3, 4, None, None, false, Some(-1)),
    ]);
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        for batches in [
            vec![],
            vec![empty.clone()],
            vec![some.clone(), empty.clone(), some.clone()],
        ] {
            let ipc = encode_ipc(&schema(), &batches, c).unwrap();
            let (s, got) = decode_ipc(&ipc, c, &IpcLimits::default()).unwrap();
            assert_eq!(s, schema());
            assert_eq!(got, batches);
        }
    }
}

#[test]
fn decoder_is_poisoned_after_an_error() {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut input = &[0xffu8, 0, 0, 0, 0, 0, 0, 0][..];
    assert!(matches!(
        dec.decode(&mut input),
        Err(NetError::UnknownOpcode(0xff))
    ));
    let good = encode(&Message::Ping { nonce: 1 }, 0, Flags::NONE);
    assert!(matches!(
        dec.decode(&mut &good[..]),
        Err(NetError::Poisoned)
    ));
    assert!(matches!(dec.finish(), Err(NetError::Poisoned)));
}

#[test]
fn codes_round_trip_and_fatality() {
    for c in 1..=15u16 {
        let code = ErrorCode::from_u16(c);
        assert!(!matches!(code, ErrorCode::Unknown(_)), "{c} is documented");
        assert_eq!(code.as_u16(), c);
    }
    assert_eq!(ErrorCode::from_u16(16), ErrorCode::Unknown(16));
    assert!(ErrorCode::TooLarge.is_fatal());
    assert!(!ErrorCode::UnknownSource.is_fatal());
}

/// The examples of `docs/protocol.md`, section 12, byte for byte.
#[test]
fn spec_examples_are_exact() {
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }
    let er = Flags::EXPECTS_RESPONSE;
    let hello = Message::Hello {
        version: 1,
        token: b"tok",
    };
    assert_eq!(
        encode(&hello, 1, er),
        hex("01 04 01 00 0b 00 00 00 4c 4d 4e 52 01 00 03 00 74 6f 6b")
    );
    assert_eq!(
        encode(&Message::Ping { nonce: 42 }, 2, er),
        hex("03 04 02 00 08 00 00 00 2a 00 00 00 00 00 00 00")
    );
    assert_eq!(
        encode(&Message::Pong { nonce: 42 }, 2, Flags::NONE),
        hex("04 00 02 00 08 00 00 00 2a 00 00 00 00 00 00 00")
    );
    let ack = Message::Ack {
        producer_id: 5,
        seq: 9,
        applied: true,
    };
    assert_eq!(
        encode(&ack, 7, Flags::NONE),
        hex("11 00 07 00 11 00 00 00 05 00 00 00 00 00 00 00 09 00 00 00 00 00 00 00 01")
    );
    let push = Message::Push {
        producer_id: 5,
        seq: 10,
        source: "trades",
        ipc: b"IPC",
    };
    let wire = encode(&push, 3, er | Flags::COMPRESSED_ZSTD);
    assert_eq!(wire[..4], hex("10 06 03 00")[..]);
    assert_eq!(
        wire[8..wire.len() - 3],
        hex("05 00 00 00 00 00 00 00 0a 00 00 00 00 00 00 00 06 00 74 72 61 64 65 73")[..]
    );
    let err = Message::Error {
        code: ErrorCode::UnknownSource,
        message: "no source trades2",
    };
    assert_eq!(
        encode(&err, 3, Flags::NONE),
        hex("05 00 03 00 15 00 00 00 09 00 11 00 6e 6f 20 73 6f 75 72 63 65 20 74 72 61 64 65 73 32")
    );
}

/// Arrow's IPC reader panics on some malformed schemas (an Int of bit width 7 reaches a
/// `panic!` in `arrow_ipc::convert::get_data_type`; found by the fuzz target). `decode_ipc`
/// must turn that into `BadArrow`, never let it escape.
#[test]
fn arrow_panics_on_hostile_schemas_are_caught() {
    let (s, b) = long_batch(10);
    let good = encode_ipc(&s, &[b], Compression::None).unwrap();
    let schema_end = 8 + i32::from_le_bytes(good[4..8].try_into().unwrap()) as usize;
    let mut caught = 0;
    for i in 8..schema_end {
        // 64 is the Int64 column's bit width (among other bytes that happen to be 64).
        if good[i] != 64 {
            continue;
        }
        let mut bad = good.clone();
        bad[i] = 7;
        match decode_ipc(&bad, Compression::None, &IpcLimits::default()) {
            Err(NetError::BadArrow(m)) if m.contains("panicked") => caught += 1,
            _ => {}
        }
    }
    assert!(caught >= 1, "no mutation reached Arrow's panic");
}
