//! The server's middleware: a compile-time chain of before/after hooks run around every frame.
//!
//! This module owns the per-frame policy checks (authentication, rate limits, batch-size
//! limits) and the per-connection state they need ([`ConnCtx`]). It never touches sockets,
//! the reactor or a [`Service`](super::Service): a hook only looks at a frame's header (or a
//! push's row count) and the connection's context, and says yes or [`Reject`].
//!
//! A chain is a type, not a list: `Chain<A, Chain<B, C>>` runs `A.before`, `B.before`,
//! `C.before` in that order, then the handler, then `C.after`, `B.after`, `A.after` (after
//! hooks in reverse order). Dispatch is static; there is no allocation per frame.
//!
//! # Invariants
//!
//! * A `before` hook that fails stops the chain: later hooks and the handler do not run, and
//!   the frame's payload is not interpreted (an unauthenticated frame is never decoded).
//! * `after` hooks run for every frame whose `before` hooks all passed, whatever the outcome.
//! * The token comparison takes time that depends only on the lengths, never on where the
//!   first differing byte is.

use std::time::Instant;

use super::super::error::ErrorCode;
use super::super::frame::{FrameHeader, Opcode, HEADER_LEN};
use super::metrics::Counter;

/// Why a frame (or a connection) is refused: the code and message sent back in an `Error`
/// frame and the counter to increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The wire code; a fatal code closes the connection.
    pub code: ErrorCode,
    /// Human-readable detail for the peer.
    pub message: String,
    /// Which server counter counts it.
    pub counter: Counter,
}

impl Reject {
    /// A rejection.
    pub fn new(code: ErrorCode, message: impl Into<String>, counter: Counter) -> Self {
        Reject {
            code,
            message: message.into(),
            counter,
        }
    }
}

/// A token bucket: `rate` units per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second with a capacity of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` units if they are there.
    pub fn try_take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// What the middleware knows of one connection.
#[derive(Debug)]
pub struct ConnCtx {
    /// Whether the handshake succeeded (a Welcome was sent).
    pub authenticated: bool,
    /// Frames per second allowance, when limited.
    pub frames: Option<TokenBucket>,
    /// Bytes per second allowance (header + payload), when limited.
    pub bytes: Option<TokenBucket>,
    /// Whether the connection has pushed data (it is a producer: paused under backpressure).
    pub producer: bool,
}

impl ConnCtx {
    /// The context of a new connection with these limits (`None`: unlimited).
    pub fn new(frames_per_sec: Option<u32>, bytes_per_sec: Option<u64>) -> Self {
        ConnCtx {
            authenticated: false,
            frames: frames_per_sec.map(|r| TokenBucket::new(r as f64, r.max(1) as f64)),
            bytes: bytes_per_sec.map(|r| TokenBucket::new(r as f64, r.max(1) as f64)),
            producer: false,
        }
    }
}

/// One link of the chain.
pub trait Middleware: Send {
    /// Runs before the frame's handler; an error refuses the frame.
    fn before(&self, ctx: &mut ConnCtx, header: &FrameHeader) -> Result<(), Reject>;

    /// Runs on a decoded push before it reaches the service (`rows`: all its batches).
    fn check_push(&self, _ctx: &mut ConnCtx, _rows: usize) -> Result<(), Reject> {
        Ok(())
    }

    /// Runs after the handler (in reverse order of the chain), with its outcome.
    fn after(&self, _ctx: &mut ConnCtx, _header: &FrameHeader, _outcome: &Result<(), Reject>) {}
}

/// `A` then `B` (and after hooks: `B` then `A`).
#[derive(Debug, Clone, Default)]
pub struct Chain<A, B>(pub A, pub B);

impl<A: Middleware, B: Middleware> Middleware for Chain<A, B> {
    #[inline]
    fn before(&self, ctx: &mut ConnCtx, header: &FrameHeader) -> Result<(), Reject> {
        self.0.before(ctx, header)?;
        self.1.before(ctx, header)
    }

    #[inline]
    fn check_push(&self, ctx: &mut ConnCtx, rows: usize) -> Result<(), Reject> {
        self.0.check_push(ctx, rows)?;
        self.1.check_push(ctx, rows)
    }

    #[inline]
    fn after(&self, ctx: &mut ConnCtx, header: &FrameHeader, outcome: &Result<(), Reject>) {
        self.1.after(ctx, header, outcome);
        self.0.after(ctx, header, outcome);
    }
}

/// Authentication: every frame but `Hello` needs a completed handshake. (The token itself is
/// checked by the Hello handler with [`constant_time_eq`].)
#[derive(Debug, Clone, Default)]
pub struct Auth;

impl Middleware for Auth {
    fn before(&self, ctx: &mut ConnCtx, header: &FrameHeader) -> Result<(), Reject> {
        if ctx.authenticated || header.opcode == Opcode::Hello {
            return Ok(());
        }
        Err(Reject::new(
            ErrorCode::Unauthenticated,
            format!(
                "{:?} before the handshake: the first frame must be Hello",
                header.opcode
            ),
            Counter::Unauthenticated,
        ))
    }
}

/// Per-connection rate limits on frames/s and bytes/s (token buckets in [`ConnCtx`]).
#[derive(Debug, Clone, Default)]
pub struct RateLimit;

impl Middleware for RateLimit {
    fn before(&self, ctx: &mut ConnCtx, header: &FrameHeader) -> Result<(), Reject> {
        let frames_ok = ctx.frames.as_mut().is_none_or(|b| b.try_take(1.0));
        let size = (HEADER_LEN as f64) + header.len as f64;
        let bytes_ok = frames_ok && ctx.bytes.as_mut().is_none_or(|b| b.try_take(size));
        if frames_ok && bytes_ok {
            return Ok(());
        }
        Err(Reject::new(
            ErrorCode::RateLimited,
            if frames_ok {
                "over the connection's bytes-per-second allowance; the frame was dropped"
            } else {
                "over the connection's frames-per-second allowance; the frame was dropped"
            },
            Counter::RateLimited,
        ))
    }
}

/// The largest push, in rows (all batches of one Push frame together).
#[derive(Debug, Clone, Default)]
pub struct MaxBatchRows(pub Option<usize>);

impl Middleware for MaxBatchRows {
    fn before(&self, _ctx: &mut ConnCtx, _header: &FrameHeader) -> Result<(), Reject> {
        Ok(())
    }

    fn check_push(&self, ctx: &mut ConnCtx, rows: usize) -> Result<(), Reject> {
        ctx.producer = true;
        match self.0 {
            Some(max) if rows > max => Err(Reject::new(
                ErrorCode::TooLarge,
                format!("a push of {rows} rows is over the server's maximum of {max} rows per push; split it"),
                Counter::BatchTooLarge,
            )),
            _ => Ok(()),
        }
    }
}

/// The chain every server connection runs: authentication, rate limits, batch size.
pub type ServerChain = Chain<Auth, Chain<RateLimit, MaxBatchRows>>;

/// Compares two byte strings in time that depends only on their lengths: every byte of the
/// longer one is looked at, there is no early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff: u8 = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::super::super::frame::Flags;
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Rec(&'static str, Arc<Mutex<Vec<String>>>);
    impl Middleware for Rec {
        fn before(&self, _: &mut ConnCtx, _: &FrameHeader) -> Result<(), Reject> {
            self.1.lock().unwrap().push(format!("before {}", self.0));
            Ok(())
        }
        fn after(&self, _: &mut ConnCtx, _: &FrameHeader, _: &Result<(), Reject>) {
            self.1.lock().unwrap().push(format!("after {}", self.0));
        }
    }

    fn header(op: Opcode) -> FrameHeader {
        FrameHeader {
            opcode: op,
            flags: Flags::NONE,
            seq: 1,
            len: 10,
        }
    }

    #[test]
    fn after_hooks_run_in_reverse_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain = Chain(
            Rec("a", log.clone()),
            Chain(Rec("b", log.clone()), Rec("c", log.clone())),
        );
        let mut ctx = ConnCtx::new(None, None);
        let h = header(Opcode::Ping);
        chain.before(&mut ctx, &h).unwrap();
        chain.after(&mut ctx, &h, &Ok(()));
        assert_eq!(
            *log.lock().unwrap(),
            ["before a", "before b", "before c", "after c", "after b", "after a"]
        );
    }

    #[test]
    fn auth_refuses_everything_but_hello_before_the_handshake() {
        let mut ctx = ConnCtx::new(None, None);
        assert!(Auth.before(&mut ctx, &header(Opcode::Hello)).is_ok());
        let r = Auth.before(&mut ctx, &header(Opcode::Push)).unwrap_err();
        assert_eq!(r.code, ErrorCode::Unauthenticated);
        ctx.authenticated = true;
        assert!(Auth.before(&mut ctx, &header(Opcode::Push)).is_ok());
    }

    #[test]
    fn rate_limit_refuses_over_the_burst() {
        let mut ctx = ConnCtx::new(Some(3), None);
        let h = header(Opcode::Ping);
        let ok = (0..10)
            .filter(|_| RateLimit.before(&mut ctx, &h).is_ok())
            .count();
        assert_eq!(ok, 3);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
