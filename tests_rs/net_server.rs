//! The wire-protocol server (`laminar_core::net::server`) over real loopback sockets, with a
//! fake in-memory service: the hostile corpus (each case gets an Error frame or a closed
//! connection and its counter, and a well-behaved client is still served), authentication,
//! rate limits, the connection cap, the handshake timeout, backpressure toward a subscriber
//! that does not read, dedup of retried pushes, and graceful shutdown. Every test runs on both
//! reactor backends (epoll and io_uring; io_uring is skipped with a note where the kernel
//! refuses it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use laminar_core::io::{BackendChoice, ReactorConfig, UringReactor};
use laminar_core::net::server::{
    Counter, Server, ServerConfig, ServerHandle, ServerMetrics, Service, ServiceError,
};
use laminar_core::net::{
    decode_ipc, encode_ipc, Compression, ErrorCode, Flags, FrameHeader, IpcLimits, Message,
};

/// One source `s` (a: int64) and one query `q` that echoes every pushed row.
struct Fake {
    schema: SchemaRef,
    pending: Mutex<Vec<RecordBatch>>,
    pushed_rows: Mutex<u64>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            schema: Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)])),
            pending: Mutex::new(Vec::new()),
            pushed_rows: Mutex::new(0),
        })
    }
}

impl Service for Fake {
    fn push(&self, source: &str, batches: Vec<RecordBatch>) -> Result<(), ServiceError> {
        if source != "s" {
            return Err(ServiceError::new(
                ErrorCode::UnknownSource,
                format!("unknown source '{source}'"),
            ));
        }
        for b in &batches {
            if b.schema().fields() != self.schema.fields() {
                return Err(ServiceError::new(ErrorCode::SchemaMismatch, "schema"));
            }
        }
        *self.pushed_rows.lock().unwrap() +=
            batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        self.pending.lock().unwrap().extend(batches);
        Ok(())
    }

    fn subscribe(&self, query: &str) -> Result<Option<SchemaRef>, ServiceError> {
        if query == "q" {
            Ok(Some(self.schema.clone()))
        } else {
            Err(ServiceError::new(ErrorCode::UnknownQuery, "unknown query"))
        }
    }

    fn poll(&self, _query: &str) -> Result<Vec<RecordBatch>, ServiceError> {
        Ok(std::mem::take(&mut *self.pending.lock().unwrap()))
    }
}

fn uring_available() -> bool {
    UringReactor::new(&ReactorConfig::default()).is_ok()
}

fn config(backend: BackendChoice) -> ServerConfig {
    let mut c = ServerConfig {
        token: Some(b"secret".to_vec()),
        handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    c.reactor.backend = backend;
    c
}

fn start(cfg: ServerConfig) -> (ServerHandle, Arc<Fake>) {
    let fake = Fake::new();
    let h = Server::start(cfg, fake.clone()).expect("server starts");
    (h, fake)
}

struct Client {
    s: TcpStream,
    seq: u16,
}

impl Client {
    fn raw(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, seq: 0 }
    }

    fn authed(addr: SocketAddr) -> Client {
        let mut c = Client::raw(addr);
        c.send(&Message::Hello {
            version: 1,
            token: b"secret",
        });
        let (h, p) = c.read().expect("welcome");
        assert_eq!(h.opcode, laminar_core::net::Opcode::Welcome, "{p:?}");
        c
    }

    fn send(&mut self, m: &Message<'_>) -> u16 {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut buf = Vec::new();
        m.encode(
            self.seq,
            m.opcode()
                .allowed_flags()
                .without(Flags::FINAL)
                .without(Flags::COMPRESSED_LZ4)
                .without(Flags::COMPRESSED_ZSTD),
            &mut buf,
        )
        .unwrap();
        self.s.write_all(&buf).unwrap();
        self.seq
    }

    fn send_raw(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// The next frame, or None at EOF / reset / timeout.
    fn read(&mut self) -> Option<(FrameHeader, Vec<u8>)> {
        let mut h = [0u8; 8];
        self.s.read_exact(&mut h).ok()?;
        let header = FrameHeader::decode(&h).expect("server sends valid headers");
        let mut p = vec![0u8; header.len as usize];
        self.s.read_exact(&mut p).ok()?;
        Some((header, p))
    }

    fn ping_ok(&mut self) -> bool {
        let seq = self.send(&Message::Ping { nonce: 99 });
        while let Some((h, p)) = self.read() {
            if h.seq == seq {
                return Message::decode(h.opcode, &p).ok() == Some(Message::Pong { nonce: 99 });
            }
        }
        false
    }

    /// Reads until an Error frame; returns its code (None if the connection ended first).
    fn error_code(&mut self) -> Option<ErrorCode> {
        while let Some((h, p)) = self.read() {
            if let Ok(Message::Error { code, .. }) = Message::decode(h.opcode, &p) {
                return Some(code);
            }
        }
        None
    }

    /// Whether the server closes the connection (after at most a Close frame).
    fn closed(&mut self) -> bool {
        loop {
            match self.read() {
                None => return true,
                Some((h, _)) if h.opcode == laminar_core::net::Opcode::Close => continue,
                Some(_) => continue,
            }
        }
    }
}

fn ipc(rows: std::ops::Range<i64>) -> Vec<u8> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
    let b = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(rows))],
    )
    .unwrap();
    encode_ipc(&schema, &[b], Compression::None).unwrap()
}

fn wait_for(m: &ServerMetrics, c: Counter, at_least: u64) -> u64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if m.read(c) >= at_least {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    m.read(c)
}

/// A hostile case: `bytes` sent after an optional handshake must give `code` (an Error frame,
/// then a closed connection when fatal) and bump `counter`; another client is still served.
fn hostile(
    backend: BackendChoice,
    handshake: bool,
    bytes: &[u8],
    code: ErrorCode,
    counter: Counter,
) {
    let (h, _) = start(config(backend));
    let addr = h.local_addr();
    let mut good = Client::authed(addr);
    let mut bad = if handshake {
        Client::authed(addr)
    } else {
        Client::raw(addr)
    };
    bad.send_raw(bytes);
    assert_eq!(bad.error_code(), Some(code), "{code:?} for {bytes:02x?}");
    if code.is_fatal() {
        assert!(bad.closed(), "a fatal error closes the connection");
    } else {
        assert!(
            bad.ping_ok(),
            "a non-fatal error leaves the connection usable"
        );
    }
    assert!(
        wait_for(h.metrics(), counter, 1) >= 1,
        "{counter:?} counted"
    );
    assert!(good.ping_ok(), "the other client is still served");
    assert!(
        Client::authed(addr).ping_ok(),
        "new clients are still served"
    );
}

fn frame(op: u8, flags: u8, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![op, flags, 1, 0];
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fn hostile_corpus(backend: BackendChoice) {
    // Unknown opcode.
    hostile(
        backend,
        true,
        &frame(0x7f, 0, 0, &[]),
        ErrorCode::UnknownOpcode,
        Counter::UnknownOpcode,
    );
    // Undefined flag bits; a flag the opcode does not allow.
    hostile(
        backend,
        true,
        &frame(0x03, 0x80, 8, &[0; 8]),
        ErrorCode::BadFlags,
        Counter::BadHeader,
    );
    hostile(
        backend,
        true,
        &frame(0x03, 0x08, 8, &[0; 8]),
        ErrorCode::BadFlags,
        Counter::BadHeader,
    );
    // Oversized: a header claiming more than the maximum payload (the payload is never sent).
    hostile(
        backend,
        true,
        &frame(0x10, 0, 64 * 1024 * 1024, &[]),
        ErrorCode::TooLarge,
        Counter::Oversized,
    );
    hostile(
        backend,
        true,
        &frame(0x03, 0, 100_000, &[]),
        ErrorCode::TooLarge,
        Counter::Oversized,
    );
    // Lying length inside a payload: a name of 200 bytes in a 5-byte payload.
    hostile(
        backend,
        true,
        &frame(0x20, 0, 5, &[200, 0, b'q', b'q', b'q']),
        ErrorCode::BadFrame,
        Counter::BadFrame,
    );
    // Trailing bytes after a Ping's nonce.
    hostile(
        backend,
        true,
        &frame(0x03, 0, 9, &[0; 9]),
        ErrorCode::BadFrame,
        Counter::BadFrame,
    );
    // Invalid Arrow IPC in a Push: not fatal.
    let mut push = Vec::new();
    Message::Push {
        producer_id: 1,
        seq: 1,
        source: "s",
        ipc: b"definitely not arrow",
    }
    .encode(1, Flags::EXPECTS_RESPONSE, &mut push)
    .unwrap();
    hostile(backend, true, &push, ErrorCode::BadArrow, Counter::BadArrow);
    // Truncated Arrow (a valid stream cut in half).
    let whole = ipc(0..100);
    let mut cut = Vec::new();
    Message::Push {
        producer_id: 1,
        seq: 1,
        source: "s",
        ipc: &whole[..whole.len() / 2],
    }
    .encode(1, Flags::EXPECTS_RESPONSE, &mut cut)
    .unwrap();
    hostile(backend, true, &cut, ErrorCode::BadArrow, Counter::BadArrow);
    // Compressed Arrow whose codec the frame's flags do not announce.
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..1000))],
    )
    .unwrap();
    let zstd = encode_ipc(&schema, &[batch], Compression::Zstd).unwrap();
    let mut mismatch = Vec::new();
    Message::Push {
        producer_id: 1,
        seq: 1,
        source: "s",
        ipc: &zstd,
    }
    .encode(
        1,
        Flags::EXPECTS_RESPONSE | Flags::COMPRESSED_LZ4,
        &mut mismatch,
    )
    .unwrap();
    hostile(
        backend,
        true,
        &mismatch,
        ErrorCode::BadArrow,
        Counter::BadArrow,
    );
    // Unauthenticated push (no Hello first).
    let mut good_push = Vec::new();
    Message::Push {
        producer_id: 1,
        seq: 1,
        source: "s",
        ipc: &whole,
    }
    .encode(1, Flags::EXPECTS_RESPONSE, &mut good_push)
    .unwrap();
    hostile(
        backend,
        false,
        &good_push,
        ErrorCode::Unauthenticated,
        Counter::Unauthenticated,
    );
    // A wrong token.
    let mut hello = Vec::new();
    Message::Hello {
        version: 1,
        token: b"wrong",
    }
    .encode(1, Flags::NONE, &mut hello)
    .unwrap();
    hostile(
        backend,
        false,
        &hello,
        ErrorCode::Unauthenticated,
        Counter::Unauthenticated,
    );
    // Wrong magic.
    hostile(
        backend,
        false,
        &frame(0x01, 0, 8, b"HTTP\x01\x00\x00\x00"),
        ErrorCode::UnsupportedVersion,
        Counter::BadVersion,
    );
    // A frame only a server may send.
    hostile(
        backend,
        true,
        &frame(0x11, 0, 17, &[0; 17]),
        ErrorCode::BadFrame,
        Counter::UnexpectedOpcode,
    );
    // A second Hello.
    hostile(
        backend,
        true,
        &hello,
        ErrorCode::BadFrame,
        Counter::BadFrame,
    );
    // Unknown source and unknown query: not fatal.
    let mut p2 = Vec::new();
    Message::Push {
        producer_id: 1,
        seq: 1,
        source: "nope",
        ipc: &whole,
    }
    .encode(1, Flags::EXPECTS_RESPONSE, &mut p2)
    .unwrap();
    hostile(
        backend,
        true,
        &p2,
        ErrorCode::UnknownSource,
        Counter::ServiceErrors,
    );
    let mut sub = Vec::new();
    Message::Subscribe { query: "nope" }
        .encode(1, Flags::NONE, &mut sub)
        .unwrap();
    hostile(
        backend,
        true,
        &sub,
        ErrorCode::UnknownQuery,
        Counter::ServiceErrors,
    );
}

fn truncated_frame(backend: BackendChoice) {
    let (h, _) = start(config(backend));
    let addr = h.local_addr();
    let mut c = Client::authed(addr);
    c.send_raw(&frame(0x03, 0, 8, &[1, 2, 3]));
    drop(c);
    assert!(wait_for(h.metrics(), Counter::Truncated, 1) >= 1);
    assert!(Client::authed(addr).ping_ok());
    // Random garbage on a fresh connection: some error, and the server lives on.
    let mut g = Client::raw(addr);
    g.send_raw(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert!(g.error_code().is_some());
    assert!(g.closed());
    assert!(Client::authed(addr).ping_ok());
}

fn push_ack_dedup_and_subscribe(backend: BackendChoice) {
    let (h, fake) = start(config(backend));
    let addr = h.local_addr();
    let mut sub = Client::authed(addr);
    let sseq = sub.send(&Message::Subscribe { query: "q" });
    let (hd, _) = sub.read().unwrap();
    assert_eq!(
        (hd.opcode, hd.seq),
        (laminar_core::net::Opcode::Subscribed, sseq)
    );
    let mut p = Client::authed(addr);
    let data = ipc(0..1000);
    let mut acks = Vec::new();
    for seq in [1u64, 2, 2, 1, 3] {
        let fseq = p.send(&Message::Push {
            producer_id: 7,
            seq,
            source: "s",
            ipc: &data,
        });
        let (hd, pl) = p.read().unwrap();
        assert_eq!(hd.seq, fseq);
        match Message::decode(hd.opcode, &pl).unwrap() {
            Message::Ack {
                producer_id: 7,
                seq: s,
                applied,
            } => {
                assert_eq!(s, seq);
                acks.push(applied);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(acks, [true, true, false, false, true]);
    // A zstd-compressed push, announced by its flag, is applied.
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..500))],
    )
    .unwrap();
    let zstd = encode_ipc(&schema, &[batch], Compression::Zstd).unwrap();
    let mut buf = Vec::new();
    Message::Push {
        producer_id: 9,
        seq: 1,
        source: "s",
        ipc: &zstd,
    }
    .encode(
        77,
        Flags::EXPECTS_RESPONSE | Flags::COMPRESSED_ZSTD,
        &mut buf,
    )
    .unwrap();
    p.send_raw(&buf);
    let (hd, pl) = p.read().unwrap();
    assert_eq!(hd.seq, 77);
    assert!(matches!(
        Message::decode(hd.opcode, &pl).unwrap(),
        Message::Ack { applied: true, .. }
    ));
    assert_eq!(*fake.pushed_rows.lock().unwrap(), 3500);
    // Another producer with the same seq is independent.
    p.send(&Message::Push {
        producer_id: 8,
        seq: 1,
        source: "s",
        ipc: &data,
    });
    p.read().unwrap();
    let mut rows = 0;
    while rows < 4500 {
        let (hd, pl) = sub.read().expect("results arrive");
        if let Ok(Message::Result { query: "q", ipc }) = Message::decode(hd.opcode, &pl) {
            assert_eq!(hd.seq, sseq);
            let (_, batches) = decode_ipc(ipc, Compression::None, &IpcLimits::default()).unwrap();
            rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
    }
    assert_eq!(rows, 4500, "every row arrives once");
    // Unsubscribe ends the stream with FINAL on the subscription's seq.
    sub.send(&Message::Unsubscribe { query: "q" });
    let (hd, _) = sub.read().unwrap();
    assert_eq!(hd.opcode, laminar_core::net::Opcode::Result);
    assert!(hd.flags.contains(Flags::FINAL));
    assert_eq!(hd.seq, sseq);
    assert_eq!(h.metrics().read(Counter::DuplicatePushes), 2);
}

fn rate_limit(backend: BackendChoice) {
    let mut cfg = config(backend);
    cfg.max_frames_per_sec = Some(5);
    let (h, _) = start(cfg);
    let mut c = Client::authed(h.local_addr());
    for _ in 0..20 {
        c.send(&Message::Ping { nonce: 1 });
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let (hd, pl) = c.read().expect("an answer per ping");
        match Message::decode(hd.opcode, &pl).unwrap() {
            Message::Pong { .. } => pongs += 1,
            Message::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 10, "pongs {pongs}, limited {limited}");
    assert_eq!(h.metrics().read(Counter::RateLimited), limited);
    // Max rows per push.
    let mut cfg = config(backend);
    cfg.max_batch_rows = Some(100);
    let (h, _) = start(cfg);
    let mut c = Client::authed(h.local_addr());
    let data = ipc(0..101);
    c.send(&Message::Push {
        producer_id: 1,
        seq: 1,
        source: "s",
        ipc: &data,
    });
    assert_eq!(c.error_code(), Some(ErrorCode::TooLarge));
    assert_eq!(h.metrics().read(Counter::BatchTooLarge), 1);
}

fn max_connections_and_handshake_timeout(backend: BackendChoice) {
    let mut cfg = config(backend);
    cfg.max_connections = 2;
    cfg.handshake_timeout = Duration::from_millis(300);
    let (h, _) = start(cfg);
    let addr = h.local_addr();
    let mut a = Client::authed(addr);
    let b = Client::authed(addr);
    let mut c = Client::raw(addr);
    assert_eq!(c.error_code(), Some(ErrorCode::Overloaded));
    assert!(c.closed());
    assert!(h.metrics().read(Counter::ConnectionsRefused) >= 1);
    // A flood of connections: every one is refused and closed; the served client is unaffected.
    let flood: Vec<TcpStream> = (0..64)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(
        wait_for(
            h.metrics(),
            Counter::ConnectionsRefused,
            1 + flood.len() as u64
        ) > flood.len() as u64
    );
    for s in flood {
        let mut c = Client { s, seq: 0 };
        c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(c.closed(), "a refused connection is closed");
    }
    assert!(a.ping_ok());
    drop(b);
    let t = Instant::now();
    while h.metrics().read(Counter::ConnectionsOpen) > 1 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut silent = Client::raw(addr);
    let t = Instant::now();
    assert!(silent.closed(), "a client that never says Hello is closed");
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(h.metrics().read(Counter::HandshakeTimeouts), 1);
    assert!(a.ping_ok());
}

fn backpressure(backend: BackendChoice) {
    let mut cfg = config(backend);
    let bound = 256 * 1024;
    cfg.max_output_bytes = bound;
    let (h, fake) = start(cfg);
    let addr = h.local_addr();
    let mut sub = Client::authed(addr);
    sub.send(&Message::Subscribe { query: "q" });
    sub.read().unwrap();
    // A producer pushes ~80 KB batches without waiting for Acks; the subscriber reads nothing.
    let total_pushes = 400u64;
    let producer = std::thread::spawn(move || {
        let mut p = Client::authed(addr);
        let data = ipc(0..10_000);
        for seq in 1..=total_pushes {
            let mut buf = Vec::new();
            Message::Push {
                producer_id: 3,
                seq,
                source: "s",
                ipc: &data,
            }
            .encode(1, Flags::NONE, &mut buf)
            .unwrap();
            if p.s.write_all(&buf).is_err() {
                break;
            }
        }
        p
    });
    assert!(
        wait_for(h.metrics(), Counter::SubscriberStalls, 1) >= 1,
        "the query stalls"
    );
    std::thread::sleep(Duration::from_millis(500));
    let pushed_while_stalled = *fake.pushed_rows.lock().unwrap();
    assert!(
        pushed_while_stalled < total_pushes * 10_000,
        "producers are not read while the subscriber is stalled"
    );
    assert!(h.metrics().read(Counter::ProducerPauses) >= 1);
    let peak = h.metrics().read(Counter::OutputBytesPeak);
    assert!(
        peak <= (bound + 2 * 1024 * 1024) as u64,
        "output bounded: peak {peak}"
    );
    // Now the subscriber reads: everything arrives, once.
    let mut rows = 0u64;
    sub.s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while rows < total_pushes * 10_000 {
        let (hd, pl) = sub.read().expect("results keep coming");
        if let Ok(Message::Result { ipc, .. }) = Message::decode(hd.opcode, &pl) {
            let (_, batches) = decode_ipc(ipc, Compression::None, &IpcLimits::default()).unwrap();
            rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        }
    }
    assert_eq!(rows, total_pushes * 10_000);
    let _p = producer.join().unwrap();
    let peak = h.metrics().read(Counter::OutputBytesPeak);
    assert!(
        peak <= (bound + 2 * 1024 * 1024) as u64,
        "output bounded: peak {peak}"
    );
}

fn graceful_shutdown(backend: BackendChoice) {
    let (mut h, _) = start(config(backend));
    let addr = h.local_addr();
    let mut c = Client::authed(addr);
    let mut idle = Client::raw(addr);
    let t = Instant::now();
    h.shutdown();
    assert!(t.elapsed() < Duration::from_secs(4), "shutdown is bounded");
    let mut got_close = false;
    while let Some((hd, pl)) = c.read() {
        if let Ok(Message::Close { code }) = Message::decode(hd.opcode, &pl) {
            assert_eq!(code, Some(ErrorCode::ShuttingDown));
            got_close = true;
        }
    }
    assert!(got_close, "clients get Close{{ShuttingDown}}");
    assert!(idle.closed());
    assert!(!h.is_running());
    assert_eq!(h.metrics().connections_open.load(Ordering::Relaxed), 0);
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod epoll {
            use super::*;
            $( #[test] fn $name() { super::$name(BackendChoice::Epoll) } )*
        }
        mod uring {
            use super::*;
            $( #[test] fn $name() {
                if !uring_available() {
                    eprintln!("io_uring unavailable here: skipped");
                    return;
                }
                super::$name(BackendChoice::Uring)
            } )*
        }
    };
}

both_backends!(
    hostile_corpus,
    truncated_frame,
    push_ack_dedup_and_subscribe,
    rate_limit,
    max_connections_and_handshake_timeout,
    backpressure,
    graceful_shutdown,
);
