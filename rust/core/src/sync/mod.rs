//! Messaging between threads: the lock-free types the runtime is built from.
//!
//! - [`SpscQueue`]: bounded single-producer single-consumer ring with batch push and pop;
//!   the runtime's per-core inboxes and outboxes.
//! - [`wait`]: wait strategies (busy spin, spin with hint, yielding, sleeping, blocking with
//!   a wake-up handshake that cannot be lost).
//! - [`disruptor`]: the LMAX pattern: a ring of pre-allocated slots, single- and
//!   multi-producer sequencers, sequence barriers for consumer graphs and a builder.
//! - [`credit`]: credit-based backpressure (exclusive and floating credits, hysteresis,
//!   block / drop / error when exhausted).
//!
//! Nothing here knows about rows, operators or Python. Every `unsafe` block states its
//! invariant; `tests_rs/sync_stress.rs` runs each type under many threads and
//! `tests_rs/loom_sync.rs` model-checks small configurations (`--features loom`).

mod primitives;

pub mod credit;
pub mod disruptor;
pub mod spsc;
pub mod wait;

pub use spsc::{Consumer, Producer, SpscQueue};
