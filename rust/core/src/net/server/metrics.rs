//! The server's counters: relaxed atomics written by the I/O thread, read by anyone.
//!
//! This module owns the names and meaning of every counter and nothing else. Counters are
//! monotonic except the gauges `connections_open` and `output_bytes_peak` (the largest unsent
//! output any one connection has held).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $field:ident => $variant:ident ),* $(,)?) => {
        /// One counter of [`ServerMetrics`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        /// The server's counters; see the module documentation.
        #[derive(Debug, Default)]
        pub struct ServerMetrics {
            $( $(#[$doc])* pub $field: AtomicU64, )*
        }

        impl ServerMetrics {
            /// The atomic of a counter.
            pub fn get(&self, c: Counter) -> &AtomicU64 {
                match c {
                    $( Counter::$variant => &self.$field, )*
                }
            }

            /// Every counter with its name, read now.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($field), self.$field.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

counters! {
    /// Connections open now (gauge).
    connections_open => ConnectionsOpen,
    /// Connections accepted and served, ever.
    connections_total => ConnectionsTotal,
    /// Connections refused at accept (over `max_connections`, or shutting down).
    connections_refused => ConnectionsRefused,
    /// Connections closed because no Hello arrived in time.
    handshake_timeouts => HandshakeTimeouts,
    /// Frames received and decoded.
    frames_in => FramesIn,
    /// Frames queued for sending.
    frames_out => FramesOut,
    /// Bytes received.
    bytes_in => BytesIn,
    /// Bytes sent.
    bytes_out => BytesOut,
    /// Pushes applied.
    pushes => Pushes,
    /// Pushes acknowledged as duplicates (a retry of a push already applied).
    duplicate_pushes => DuplicatePushes,
    /// Rows applied.
    rows_in => RowsIn,
    /// Result frames queued to subscribers.
    results_sent => ResultsSent,
    /// Result rows queued to subscribers (counted once per subscriber).
    result_rows_sent => ResultRowsSent,
    /// Times a query stopped being polled because a subscriber's output was over its bound.
    subscriber_stalls => SubscriberStalls,
    /// Times a producer connection stopped being read because of backpressure.
    producer_pauses => ProducerPauses,
    /// Largest unsent output held for one connection, in bytes (gauge).
    output_bytes_peak => OutputBytesPeak,
    /// Headers with undefined, contradictory or disallowed flags.
    bad_header => BadHeader,
    /// Opcode bytes that name no opcode.
    unknown_opcode => UnknownOpcode,
    /// Frames over the maximum payload.
    oversized => Oversized,
    /// Malformed payloads (lying lengths, short payloads, trailing bytes, bad UTF-8, ...).
    bad_frame => BadFrame,
    /// Frames cut by the end of the connection.
    truncated => Truncated,
    /// Opcodes a client may not send to a server (Welcome, Ack, Result, ...).
    unexpected_opcode => UnexpectedOpcode,
    /// Hellos with the wrong magic or no common version.
    bad_version => BadVersion,
    /// Arrow payloads that do not validate or decode.
    bad_arrow => BadArrow,
    /// Frames before the handshake, and refused tokens.
    unauthenticated => Unauthenticated,
    /// Frames over a connection's rate limit.
    rate_limited => RateLimited,
    /// Pushes over the maximum rows per push.
    batch_too_large => BatchTooLarge,
    /// Requests the service refused (unknown source or query, schema mismatch, ...).
    service_errors => ServiceErrors,
}

impl ServerMetrics {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.get(c).fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Reads a counter.
    pub fn read(&self, c: Counter) -> u64 {
        self.get(c).load(Ordering::Relaxed)
    }
}
