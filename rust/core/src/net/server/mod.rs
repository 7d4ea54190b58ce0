//! The wire-protocol server: one I/O thread that accepts connections and serves frames to a
//! [`Service`].
//!
//! This module owns sockets, connection state, the request routing table, backpressure
//! toward producers and subscribers, the producer dedup table and graceful shutdown. It never
//! knows an engine: everything it needs from one goes through the [`Service`] trait, which the
//! engine implements above this layer (`engine::service`). It must never block on a socket
//! (every socket operation goes through the `IoReactor`), never hold
//! unbounded output for a peer, and never panic on anything a peer sends.
//!
//! # Shape
//!
//! * **One I/O thread** runs the accept loop and every connection on one reactor
//!   ([`open_reactor`], so `LAMINAR_IO=uring|epoll` picks the backend; see
//!   [`ServerHandle::backend`]). A thread per core comes with the thread-per-core runtime.
//! * Per frame: the [`FrameDecoder`] (max payload checked from the header), then the
//!   middleware chain's `before` hooks ([`middleware::ServerChain`]: auth, rate limit, batch
//!   size), then the handler found by indexing a 256-entry table with the opcode byte, then
//!   the `after` hooks in reverse order.
//! * **Subscriptions** are polled after pushes and every `poll_interval`; a query's new rows
//!   are encoded once as Arrow IPC and fanned out to its subscribers as `Result` frames.
//! * **Backpressure**: a connection's unsent output is bounded (`max_output_bytes`). While a
//!   subscriber of a query is over the bound the query is not polled (rows wait in the
//!   engine) and producer connections are not read (their pushes wait in TCP) until it
//!   drains. A connection over its own bound (e.g. one that never reads its Acks) is not read.
//! * **Dedup**: the highest `seq` applied per `(producer_id, source)` is kept in memory; a push
//!   at or below it is acknowledged with `applied = 0`. It does not survive a restart.
//! * **Shutdown**: stop accepting, send `Close{ShuttingDown}` to everyone, flush queued
//!   output for at most `shutdown_grace`, close, join the thread.
//!
//! # Invariants
//!
//! * A descriptor is closed only when none of its operations is in flight (a connection is
//!   `shutdown(2)` first, which completes its pending receive).
//! * Each hostile input has a counter in [`ServerMetrics`] and gets an `Error` frame (and a
//!   `Close` and a closed connection when the error is fatal); other connections are not
//!   affected.

mod handlers;
use handlers::{encode_results, truncate_message, RESULT_HEAD_ROOM};
pub mod metrics;
pub mod middleware;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::decoder::{DecoderConfig, Frame, FrameDecoder};
use super::error::{ErrorCode, NetError};
use super::frame::{Flags, Opcode, DEFAULT_MAX_PAYLOAD};
use super::ipc::IpcLimits;
use super::message::Message;
use crate::io::{
    open_reactor, Backend, Completion, IoReactor, Op, OpKind, ReactorConfig, Submission,
};

pub use metrics::{Counter, ServerMetrics};
pub use middleware::{constant_time_eq, ConnCtx, Middleware, Reject, ServerChain};

/// An error a [`Service`] reports: the code and message sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// The wire code.
    pub code: ErrorCode,
    /// Detail for the peer.
    pub message: String,
}

impl ServiceError {
    /// An error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }
}

/// What the server asks of the thing it serves. Called from the server's I/O thread only.
pub trait Service: Send + Sync {
    /// Applies batches to a source (dedup is the server's job: this is called once per new
    /// `(producer, seq)`).
    fn push(&self, source: &str, batches: Vec<RecordBatch>) -> Result<(), ServiceError>;

    /// Checks that a query exists and returns its result schema (`None` while unknown yet).
    fn subscribe(&self, query: &str) -> Result<Option<SchemaRef>, ServiceError>;

    /// Moves a query's new result rows out (they go to the subscribers).
    fn poll(&self, query: &str) -> Result<Vec<RecordBatch>, ServiceError>;
}

/// Settings of a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// The token clients must send in Hello; `None`: any token is accepted.
    pub token: Option<Vec<u8>>,
    /// Connections served at once; more are refused with `Error{Overloaded}` and closed.
    pub max_connections: usize,
    /// The largest data-frame payload accepted (announced in Welcome).
    pub max_payload: u32,
    /// The most decoded Arrow bytes one payload may declare.
    pub max_decoded_bytes: u64,
    /// The most rows one push may carry; `None`: no limit beyond the payload size.
    pub max_batch_rows: Option<usize>,
    /// Frames per second per connection; `None`: unlimited.
    pub max_frames_per_sec: Option<u32>,
    /// Bytes per second per connection; `None`: unlimited.
    pub max_bytes_per_sec: Option<u64>,
    /// Unsent output held per connection before backpressure applies.
    pub max_output_bytes: usize,
    /// A connection that has not completed its handshake by then is closed.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for queued output to be sent.
    pub shutdown_grace: Duration,
    /// How often subscribed queries are polled when nothing is pushed.
    pub poll_interval: Duration,
    /// The reactor (backend; `LAMINAR_IO` overrides it).
    pub reactor: ReactorConfig,
    /// Free-form server identification sent in Welcome.
    pub server_info: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            max_connections: 256,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_decoded_bytes: super::ipc::DEFAULT_MAX_DECODED_BYTES,
            max_batch_rows: None,
            max_frames_per_sec: None,
            max_bytes_per_sec: None,
            max_output_bytes: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            poll_interval: Duration::from_millis(2),
            reactor: ReactorConfig::default(),
            server_info: format!("laminar {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding or configuring the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system error.
        source: io::Error,
    },
    /// The reactor could not be opened.
    #[error(transparent)]
    Reactor(#[from] crate::io::IoError),
    /// The I/O thread could not be started.
    #[error("cannot start the server thread: {0}")]
    Thread(io::Error),
}

/// The server; see the module documentation.
pub struct Server;

impl Server {
    /// Binds, opens the reactor and starts the I/O thread.
    pub fn start(
        config: ServerConfig,
        service: Arc<dyn Service>,
    ) -> Result<ServerHandle, ServerError> {
        let listener = TcpListener::bind(config.addr).map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
        let mut rc = config.reactor.clone();
        // Two operations per connection, plus the accept.
        let want = (config.max_connections.saturating_add(2)).min(1 << 15) as u32;
        rc.entries = rc.entries.max(want.next_power_of_two());
        let reactor = open_reactor(&rc)?;
        let backend = reactor.backend();
        let fallback = reactor.fallback_reason().map(str::to_string);
        let metrics = Arc::new(ServerMetrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop::new(config, service, reactor, listener, metrics.clone());
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("laminar-net".into())
            .spawn(move || lp.run(&stop2))
            .map_err(ServerError::Thread)?;
        Ok(ServerHandle {
            addr,
            metrics,
            stop,
            thread: Some(thread),
            backend,
            fallback,
        })
    }
}

/// A running server. Dropping it shuts the server down.
pub struct ServerHandle {
    addr: SocketAddr,
    metrics: Arc<ServerMetrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    backend: Backend,
    fallback: Option<String>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.metrics
    }

    /// The reactor backend serving connections.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why the reactor fell back to epoll, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Whether the I/O thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Graceful shutdown: stop accepting, send Close to every connection, flush queued output
    /// (bounded by `shutdown_grace`), close everything, join the thread. Idempotent.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Token of the accept operation.
const ACCEPT: u64 = u64::MAX;
/// Bytes received per Recv.
const RECV_BUF: usize = 256 * 1024;
/// Frames smaller than this are coalesced into one Send.
const COALESCE: usize = 64 * 1024;
/// How long a closed connection keeps reading (and dropping) input after its last frame, so
/// that the peer reads our Error/Close before it sees a reset.
const LINGER: Duration = Duration::from_millis(500);

fn recv_token(id: u64) -> u64 {
    id << 1
}
fn send_token(id: u64) -> u64 {
    (id << 1) | 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Serving frames.
    Open,
    /// No more frames are served; queued output is sent, then the write side is shut.
    Draining { until: Instant },
    /// Write side shut; input is read and dropped until EOF or the deadline.
    Lingering { until: Instant },
    /// Shut down; waits for its operations to complete, then is dropped.
    Dead,
}

struct Conn {
    fd: OwnedFd,
    dec: FrameDecoder,
    ctx: ConnCtx,
    state: State,
    recv_in_flight: bool,
    send_in_flight: bool,
    spare: Option<Vec<u8>>,
    out: VecDeque<Vec<u8>>,
    /// Unsent bytes, queued and in flight.
    out_bytes: usize,
    /// Subscribed query → the Subscribe's seq.
    subs: HashMap<String, u16>,
    opened: Instant,
    paused: bool,
    shut: bool,
}

impl Conn {
    fn push_out(&mut self, buf: Vec<u8>, m: &ServerMetrics) {
        if buf.is_empty() {
            return;
        }
        self.out_bytes += buf.len();
        self.out.push_back(buf);
        let peak = m.read(Counter::OutputBytesPeak);
        if self.out_bytes as u64 > peak {
            m.get(Counter::OutputBytesPeak)
                .store(self.out_bytes as u64, Ordering::Relaxed);
        }
    }

    /// Queues a whole control message (Error, Close, Ack, Pong, Welcome, ...).
    fn send_msg(&mut self, msg: &Message<'_>, seq: u16, flags: Flags, m: &ServerMetrics) {
        let mut buf = Vec::with_capacity(msg.payload_len() + 8);
        if msg.encode(seq, flags, &mut buf).is_ok() {
            m.inc(Counter::FramesOut);
            self.push_out(buf, m);
        }
    }

    /// Queues `Error{code, message}` and, if fatal, `Close{code}` and starts closing.
    fn reject(&mut self, seq: u16, r: &Reject, m: &ServerMetrics, grace: Duration) {
        m.inc(r.counter);
        let msg = truncate_message(&r.message);
        self.send_msg(
            &Message::Error {
                code: r.code,
                message: msg,
            },
            seq,
            Flags::NONE,
            m,
        );
        if r.code.is_fatal() {
            self.close_with(Some(r.code), m, grace);
        }
    }

    /// Queues `Close{code}` and stops serving frames.
    fn close_with(&mut self, code: Option<ErrorCode>, m: &ServerMetrics, grace: Duration) {
        if self.state == State::Open {
            self.send_msg(&Message::Close { code }, 0, Flags::NONE, m);
            self.state = State::Draining {
                until: Instant::now() + grace,
            };
        }
    }

    fn kill(&mut self) {
        self.state = State::Dead;
    }
}

/// Subscribers of one query.
struct QuerySubs {
    schema: Option<SchemaRef>,
    /// (connection, Subscribe seq)
    subscribers: Vec<(u64, u16)>,
    stalled: bool,
}

type Handler = fn(&mut Shared, u64, &mut Conn, Frame) -> Result<(), Reject>;

/// The routing table: opcode byte → handler. Opcodes a client may not send have none.
const ROUTES: [Option<Handler>; 256] = {
    let mut t: [Option<Handler>; 256] = [None; 256];
    use handlers::{on_close, on_hello, on_ignore, on_ping, on_push, on_subscribe, on_unsubscribe};
    t[Opcode::Hello as usize] = Some(on_hello as Handler);
    t[Opcode::Ping as usize] = Some(on_ping as Handler);
    t[Opcode::Pong as usize] = Some(on_ignore as Handler);
    t[Opcode::Error as usize] = Some(on_ignore as Handler);
    t[Opcode::Close as usize] = Some(on_close as Handler);
    t[Opcode::Push as usize] = Some(on_push as Handler);
    t[Opcode::Subscribe as usize] = Some(on_subscribe as Handler);
    t[Opcode::Unsubscribe as usize] = Some(on_unsubscribe as Handler);
    t
};

/// Everything of the loop but the connections.
struct Shared {
    config: ServerConfig,
    service: Arc<dyn Service>,
    metrics: Arc<ServerMetrics>,
    chain: ServerChain,
    limits: IpcLimits,
    /// (producer_id, source) → highest seq applied.
    dedup: HashMap<(u64, String), u64>,
    subs: HashMap<String, QuerySubs>,
    /// Something was pushed since the last poll.
    dirty: bool,
}

struct Loop {
    shared: Shared,
    reactor: Box<dyn IoReactor>,
    listener: TcpListener,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    accept_in_flight: bool,
    /// No accept is issued before this (after a failed accept).
    accept_after: Instant,
    pending: Vec<Submission>,
    done: Vec<Completion>,
    /// Some query is stalled by a slow subscriber: producers are not read.
    stalled: bool,
    last_poll: Instant,
}

impl Loop {
    fn new(
        config: ServerConfig,
        service: Arc<dyn Service>,
        reactor: Box<dyn IoReactor>,
        listener: TcpListener,
        metrics: Arc<ServerMetrics>,
    ) -> Self {
        let chain = middleware::Chain(
            middleware::Auth,
            middleware::Chain(
                middleware::RateLimit,
                middleware::MaxBatchRows(config.max_batch_rows),
            ),
        );
        let limits = IpcLimits {
            max_decoded_bytes: config.max_decoded_bytes,
        };
        Loop {
            shared: Shared {
                config,
                service,
                metrics,
                chain,
                limits,
                dedup: HashMap::new(),
                subs: HashMap::new(),
                dirty: false,
            },
            reactor,
            listener,
            conns: HashMap::new(),
            next_id: 0,
            accept_in_flight: false,
            accept_after: Instant::now(),
            pending: Vec::new(),
            done: Vec::new(),
            stalled: false,
            last_poll: Instant::now(),
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut stopping: Option<Instant> = None;
        loop {
            if stopping.is_none() && stop.load(Ordering::Acquire) {
                let grace = self.shared.config.shutdown_grace;
                stopping = Some(Instant::now() + grace);
                let m = self.shared.metrics.clone();
                for c in self.conns.values_mut() {
                    c.close_with(Some(ErrorCode::ShuttingDown), &m, grace);
                }
            }
            if let Some(deadline) = stopping {
                if self.conns.is_empty() || Instant::now() >= deadline {
                    break;
                }
            } else if !self.accept_in_flight && Instant::now() >= self.accept_after {
                self.pending.push(Submission::new(
                    ACCEPT,
                    Op::Accept {
                        fd: self.listener.as_raw_fd(),
                    },
                ));
                self.accept_in_flight = true;
            }
            self.schedule();
            if self.submit().is_err() {
                break;
            }
            let timeout = if self.shared.subs.is_empty() {
                Duration::from_millis(20)
            } else {
                self.shared.config.poll_interval
            };
            let mut done = std::mem::take(&mut self.done);
            done.clear();
            if self.reactor.wait(Some(timeout), &mut done).is_err() {
                break;
            }
            for c in done.drain(..) {
                self.complete(c, stopping.is_some());
            }
            self.done = done;
            let now = Instant::now();
            if self.shared.dirty
                || now.saturating_duration_since(self.last_poll) >= self.shared.config.poll_interval
            {
                self.poll_queries();
                self.last_poll = now;
            }
            self.timeouts(now);
            self.reap();
        }
        // Dropping the reactor cancels (io_uring) or forgets (epoll) what is in flight before
        // the descriptors close.
        let reactor = std::mem::replace(&mut self.reactor, Box::new(NoReactor));
        drop(reactor);
        let m = &self.shared.metrics;
        m.get(Counter::ConnectionsOpen).store(0, Ordering::Relaxed);
        self.conns.clear();
    }

    fn submit(&mut self) -> Result<(), crate::io::IoError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.reactor.submit(&mut self.pending) {
            Ok(()) => Ok(()),
            // Full: the rest waits for the next round (completions free slots).
            Err(crate::io::IoError::Full { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Issues receives and sends each connection needs.
    fn schedule(&mut self) {
        let max_out = self.shared.config.max_output_bytes;
        let m = &self.shared.metrics;
        for (&id, c) in self.conns.iter_mut() {
            let want_recv = match c.state {
                State::Open => {
                    let pause = c.out_bytes > max_out || (self.stalled && c.ctx.producer);
                    if pause && !c.paused {
                        m.inc(Counter::ProducerPauses);
                    }
                    c.paused = pause;
                    !pause
                }
                State::Draining { .. } | State::Lingering { .. } => true,
                State::Dead => false,
            };
            if want_recv && !c.recv_in_flight {
                let mut buf = c.spare.take().unwrap_or_default();
                buf.clear();
                if buf.capacity() < RECV_BUF {
                    buf.reserve(RECV_BUF);
                }
                self.pending.push(Submission::new(
                    recv_token(id),
                    Op::Recv {
                        fd: c.fd.as_raw_fd(),
                        buf,
                    },
                ));
                c.recv_in_flight = true;
            }
            if !c.send_in_flight && c.state != State::Dead {
                if let Some(mut buf) = c.out.pop_front() {
                    while buf.len() < COALESCE {
                        match c.out.front() {
                            Some(next) if next.len() < COALESCE => {
                                if let Some(next) = c.out.pop_front() {
                                    buf.extend_from_slice(&next);
                                }
                            }
                            _ => break,
                        }
                    }
                    self.pending.push(Submission::new(
                        send_token(id),
                        Op::Send {
                            fd: c.fd.as_raw_fd(),
                            buf,
                        },
                    ));
                    c.send_in_flight = true;
                }
            }
        }
    }

    fn complete(&mut self, c: Completion, stopping: bool) {
        if c.token == ACCEPT {
            self.accept_in_flight = false;
            if let Some(fd) = c.accepted_fd() {
                // SAFETY: a successful Accept hands over a new descriptor nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                self.accepted(fd, stopping);
            } else {
                // EMFILE and the like: do not spin on a failing accept.
                self.accept_after = Instant::now() + Duration::from_millis(50);
            }
            return;
        }
        let id = c.token >> 1;
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let m = self.shared.metrics.clone();
        match c.kind {
            OpKind::Recv => {
                conn.recv_in_flight = false;
                let buf = c.buf.unwrap_or_default();
                match c.result {
                    Ok(n) if n > 0 => {
                        m.add(Counter::BytesIn, n as u64);
                        if conn.state == State::Open {
                            self.on_bytes(id, &mut conn, &buf);
                        }
                    }
                    _ => {
                        // EOF or error: a frame cut short is counted; the connection is done.
                        if conn.state == State::Open && conn.dec.finish().is_err() {
                            m.inc(Counter::Truncated);
                        }
                        conn.kill();
                    }
                }
                conn.spare = Some(buf);
            }
            OpKind::Send => {
                conn.send_in_flight = false;
                let buf = c.buf.unwrap_or_default();
                match c.result {
                    Ok(n) => {
                        m.add(Counter::BytesOut, n as u64);
                        conn.out_bytes = conn.out_bytes.saturating_sub(n);
                        if n < buf.len() {
                            let mut rest = buf;
                            rest.drain(..n);
                            conn.out.push_front(rest);
                        }
                    }
                    Err(_) => conn.kill(),
                }
            }
            _ => {}
        }
        self.conns.insert(id, conn);
    }

    fn accepted(&mut self, fd: OwnedFd, stopping: bool) {
        let m = &self.shared.metrics;
        if stopping || self.conns.len() >= self.shared.config.max_connections {
            m.inc(Counter::ConnectionsRefused);
            let (code, text) = if stopping {
                (ErrorCode::ShuttingDown, "the server is shutting down")
            } else {
                (
                    ErrorCode::Overloaded,
                    "too many connections; try again later",
                )
            };
            let mut buf = Vec::new();
            let _ = Message::Error {
                code,
                message: text,
            }
            .encode(0, Flags::NONE, &mut buf);
            let _ = Message::Close { code: Some(code) }.encode(0, Flags::NONE, &mut buf);
            send_now(fd.as_raw_fd(), &buf);
            return;
        }
        set_nodelay(fd.as_raw_fd());
        m.inc(Counter::ConnectionsTotal);
        m.inc(Counter::ConnectionsOpen);
        let id = self.next_id;
        self.next_id += 1;
        let cfg = &self.shared.config;
        self.conns.insert(
            id,
            Conn {
                fd,
                dec: FrameDecoder::new(DecoderConfig {
                    max_payload: cfg.max_payload,
                }),
                ctx: ConnCtx::new(cfg.max_frames_per_sec, cfg.max_bytes_per_sec),
                state: State::Open,
                recv_in_flight: false,
                send_in_flight: false,
                spare: None,
                out: VecDeque::new(),
                out_bytes: 0,
                subs: HashMap::new(),
                opened: Instant::now(),
                paused: false,
                shut: false,
            },
        );
    }

    /// Feeds received bytes to the decoder and serves every whole frame.
    fn on_bytes(&mut self, id: u64, conn: &mut Conn, bytes: &[u8]) {
        let m = self.shared.metrics.clone();
        let grace = self.shared.config.shutdown_grace;
        let mut input = bytes;
        while conn.state == State::Open {
            match conn.dec.decode(&mut input) {
                Ok(Some(frame)) => {
                    m.inc(Counter::FramesIn);
                    let header = frame.header;
                    let sh = &mut self.shared;
                    if let Err(r) = sh.chain.before(&mut conn.ctx, &header) {
                        conn.reject(header.seq, &r, &m, grace);
                        continue;
                    }
                    let outcome = match ROUTES[header.opcode as u8 as usize] {
                        Some(h) => h(sh, id, conn, frame),
                        None => Err(Reject::new(
                            ErrorCode::BadFrame,
                            format!("{:?} is not a frame a client may send", header.opcode),
                            Counter::UnexpectedOpcode,
                        )),
                    };
                    sh.chain.after(&mut conn.ctx, &header, &outcome);
                    if let Err(r) = outcome {
                        conn.reject(header.seq, &r, &m, grace);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let counter = match &e {
                        NetError::UnknownOpcode(_) => Counter::UnknownOpcode,
                        NetError::UnknownFlags { .. } | NetError::FlagsNotAllowed { .. } => {
                            Counter::BadHeader
                        }
                        NetError::FrameTooLarge { .. } => Counter::Oversized,
                        _ => Counter::BadFrame,
                    };
                    conn.reject(0, &Reject::new(e.code(), e.to_string(), counter), &m, grace);
                }
            }
        }
    }

    /// Polls subscribed queries and fans their new rows out.
    fn poll_queries(&mut self) {
        self.shared.dirty = false;
        let max_out = self.shared.config.max_output_bytes;
        let m = self.shared.metrics.clone();
        let mut any_stalled = false;
        let mut dead_queries = Vec::new();
        for (query, qs) in self.shared.subs.iter_mut() {
            qs.subscribers
                .retain(|(id, _)| self.conns.get(id).is_some_and(|c| c.state == State::Open));
            if qs.subscribers.is_empty() {
                dead_queries.push(query.clone());
                continue;
            }
            let over = qs
                .subscribers
                .iter()
                .any(|(id, _)| self.conns.get(id).is_some_and(|c| c.out_bytes > max_out));
            if over {
                if !qs.stalled {
                    m.inc(Counter::SubscriberStalls);
                }
                qs.stalled = true;
                any_stalled = true;
                continue;
            }
            qs.stalled = false;
            let limit = (self.shared.config.max_payload as usize)
                .saturating_sub(RESULT_HEAD_ROOM + query.len());
            let polled = self.shared.service.poll(query).and_then(|batches| {
                // Rows go out as Result frames that each fit the frame limit; rows that can
                // never fit end the subscription loudly rather than vanish.
                let mut chunks = Vec::new();
                if let Some(schema) = batches.first().map(|b| b.schema()) {
                    if qs.schema.is_none() {
                        qs.schema = Some(schema.clone());
                    }
                    encode_results(&schema, &batches, limit, &mut chunks)?;
                }
                Ok(chunks)
            });
            let chunks = match polled {
                Ok(c) => c,
                Err(e) => {
                    // The query cannot be read (it failed, it feeds a sink, or a row exceeds
                    // the frame limit): every subscription of it ends with a FINAL Error.
                    m.inc(Counter::ServiceErrors);
                    for (id, seq) in qs.subscribers.drain(..) {
                        if let Some(conn) = self.conns.get_mut(&id) {
                            conn.subs.remove(query.as_str());
                            conn.send_msg(
                                &Message::Error {
                                    code: e.code,
                                    message: truncate_message(&e.message),
                                },
                                seq,
                                Flags::FINAL,
                                &m,
                            );
                        }
                    }
                    dead_queries.push(query.clone());
                    continue;
                }
            };
            let n = qs.subscribers.len();
            for (ipc, rows) in chunks {
                let mut ipc = Some(ipc);
                for (i, (id, seq)) in qs.subscribers.iter().enumerate() {
                    let Some(conn) = self.conns.get_mut(id) else {
                        continue;
                    };
                    let body = if i + 1 == n {
                        ipc.take().unwrap_or_default()
                    } else {
                        ipc.as_ref().cloned().unwrap_or_default()
                    };
                    // The header and fixed fields go in `head`; the IPC bytes follow as their
                    // own buffer (no copy into the head).
                    let mut head = Vec::with_capacity(16 + query.len());
                    let encoded = (Message::Result { query, ipc: &body })
                        .encode_head(*seq, Flags::NONE, &mut head)
                        .map(|tail| tail.len() == body.len());
                    if !matches!(encoded, Ok(true)) {
                        // Cannot happen for a chunk under the limit; counted if it does.
                        m.inc(Counter::ServiceErrors);
                        continue;
                    }
                    m.inc(Counter::FramesOut);
                    m.inc(Counter::ResultsSent);
                    m.add(Counter::ResultRowsSent, rows as u64);
                    conn.push_out(head, &m);
                    conn.push_out(body, &m);
                }
            }
        }
        for q in dead_queries {
            self.shared.subs.remove(&q);
        }
        self.stalled = any_stalled;
    }

    fn timeouts(&mut self, now: Instant) {
        let m = self.shared.metrics.clone();
        let hs = self.shared.config.handshake_timeout;
        for c in self.conns.values_mut() {
            match c.state {
                State::Open if !c.ctx.authenticated && now.duration_since(c.opened) > hs => {
                    m.inc(Counter::HandshakeTimeouts);
                    c.kill();
                }
                State::Draining { until } if now >= until => c.kill(),
                State::Draining { until } if c.out.is_empty() && !c.send_in_flight => {
                    // SAFETY: shutdown takes no pointers; fd is open (owned by the Conn).
                    unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_WR) };
                    c.state = State::Lingering {
                        until: until.min(now + LINGER),
                    };
                }
                State::Lingering { until } if now >= until => c.kill(),
                _ => {}
            }
        }
    }

    /// Shuts dead connections and drops those with nothing in flight.
    fn reap(&mut self) {
        let m = &self.shared.metrics;
        let mut gone = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            if c.state != State::Dead {
                continue;
            }
            if !c.shut {
                // SAFETY: shutdown takes no pointers; fd is open (owned by the Conn). It
                // completes a pending receive (with 0) and a pending send (with an error).
                unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
                c.shut = true;
            }
            if !c.recv_in_flight && !c.send_in_flight {
                gone.push(id);
            }
        }
        for id in gone {
            self.conns.remove(&id);
            m.get(Counter::ConnectionsOpen)
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Best-effort immediate send on a non-blocking socket (refusals at accept).
fn send_now(fd: RawFd, buf: &[u8]) {
    // SAFETY: buf is a live slice of buf.len() bytes; fd is an open socket owned by the caller.
    unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the size passed; fd is an open
    // socket owned by the caller.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Stands in for the reactor once it has been dropped at the end of `run`.
struct NoReactor;

impl IoReactor for NoReactor {
    fn backend(&self) -> Backend {
        Backend::Epoll
    }
    fn fallback_reason(&self) -> Option<&str> {
        None
    }
    fn submit(&mut self, _: &mut Vec<Submission>) -> Result<(), crate::io::IoError> {
        Err(crate::io::IoError::InvalidOp("the server has stopped"))
    }
    fn wait(
        &mut self,
        _: Option<Duration>,
        _: &mut Vec<Completion>,
    ) -> Result<usize, crate::io::IoError> {
        Ok(0)
    }
    fn in_flight(&self) -> usize {
        0
    }
}
