//! The LMAX disruptor: a ring of pre-allocated events, single- and multi-producer
//! sequencers, sequence barriers for consumer graphs, and a builder that runs handlers on
//! managed threads.
//!
//! This module owns the whole pattern, one concept per file:
//! - [`Sequence`] (`sequence.rs`): a padded `i64` cursor, Release stores, Acquire loads;
//! - [`RingBuffer`] (`ring_buffer.rs`): `2^k` slots filled once by a factory and then mutated
//!   in place, never reallocated; sequence `s` lives in slot `s & mask`;
//! - [`SingleProducerSequencer`], [`MultiProducerSequencer`] (`sequencer.rs`): claiming
//!   (`next(n)` waits for space, `try_next(n)` fails with [`ClaimError::Full`]), gating on the
//!   last consumers, publishing a [`Claim`];
//! - [`SequenceBarrier`] (`barrier.rs`): what a consumer waits on (the published cursor and
//!   the consumers it depends on), with an alert for shutdown;
//! - handlers, failure policy, counts and the managed consumer loop (`handler.rs`), the
//!   [`Builder`] (`builder.rs`) and the producer handles with shutdown (`producer.rs`).
//!
//! Waiting uses the strategies of [`crate::sync::wait`]. Every wait is on a condition over
//! sequences, and everyone who advances a sequence signals after the Release store: producers
//! after publishing, consumers after each batch (so a producer parked by
//! [`Blocking`](crate::sync::wait::Blocking) on a full ring wakes too), shutdown after alerting.
//! A managed consumer that trails a streaming producer by a small batch also backs off briefly
//! after the batch, so that the two do not trade the same cache lines for every event (see
//! "Trailing closely" in `handler.rs`). Both ends also prefetch 1 KiB ahead: the single
//! producer's per-item `publish` the slot line it will write (for writing, once the consumers
//! have released it), a managed consumer the slots further on in its batch (see
//! `fill_one_and_commit` in `producer.rs` and "Reading ahead" in `handler.rs`). A prefetch is
//! a hint, no memory access: it orders nothing and changes no invariant below.
//!
//! # Invariants
//! - A slot is written only by the producer that holds an unpublished claim on its sequence,
//!   and only after every gating consumer has passed the sequence one lap earlier (Acquire load
//!   of their sequences, which they Release-store after reading the slot).
//! - A consumer reads sequence `s` only after the barrier showed `s` published (Acquire load of
//!   the single-producer cursor, or of the slot's availability flag holding `s`'s round) and
//!   processed by every consumer it depends on (Acquire loads of their sequences).
//! - Handlers of one stage share events as `&T`; a `&mut T` handler is alone in its stage.
//! - Consumers store their sequence once per batch, Release, after the batch's slot accesses.
//! - The single-producer horizon is recomputed from the consumers' sequences, never
//!   accumulated; multi-producer availability rounds never repeat, so nothing is reset at the
//!   wrap.
//!
//! These are the items of the memory-ordering checklist that other disruptors shipped as bugs
//! (`Relaxed` cursor or consumer stores, a parity flag not flipped at the wrap, an accumulated
//! horizon, lost wake-ups, handlers aliased through `UnsafeCell`).
//! `tests_rs/disruptor_stress.rs` runs them under many threads and every wait strategy, and
//! `tests_rs/loom_disruptor.rs` model-checks small rings (`--features loom`).
//!
//! # Example: a pipeline
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use laminar_core::sync::disruptor::{Disruptor, ExceptionPolicy};
//! use laminar_core::sync::wait::Blocking;
//!
//! #[derive(Default)]
//! struct Trade { price: u64, qty: u64, notional: u64 }
//!
//! let total = Arc::new(AtomicU64::new(0));
//! let total_in_handler = total.clone();
//! let mut producer = Disruptor::builder(1024, Trade::default)
//!     .wait_strategy(Blocking::default())
//!     .exception_policy(ExceptionPolicy::Halt)
//!     // Stage 1: enrich each event in place (an exclusive stage gets `&mut Trade`).
//!     .handle_events_mut(|t: &mut Trade, _seq, _end_of_batch| {
//!         t.notional = t.price * t.qty;
//!         Ok(())
//!     })
//!     // Stage 2: two handlers in parallel, each sees every enriched event.
//!     .then(|t, _seq, _end_of_batch| {
//!         if t.qty == 0 { return Err("empty trade".into()); }
//!         Ok(())
//!     })
//!     .handle_events_with(move |t, _seq, _end_of_batch| {
//!         total_in_handler.fetch_add(t.notional, Ordering::Relaxed);
//!         Ok(())
//!     })
//!     .build_single_producer()?;
//!
//! for i in 0..10_000u64 {
//!     producer.publish(|t| { t.price = i; t.qty = 2; });
//! }
//! // Ten events with one claim and one publish.
//! producer.batch_publish(10, |i, t| { t.price = 1; t.qty = i as u64 + 1; })?;
//!
//! // Drains everything published, then joins the handler threads.
//! let report = producer.shutdown();
//! assert_eq!(report.published, 10_010);
//! assert_eq!(report.failures(), 0);
//! assert!(report.handlers.iter().all(|h| h.processed == 10_010));
//! assert_eq!(total.load(Ordering::Relaxed), 2 * (0..10_000u64).sum::<u64>() + 55);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod barrier;
mod builder;
mod handler;
mod producer;
mod ring_buffer;
mod sequence;
mod sequencer;

pub use barrier::{Alerted, SequenceBarrier};
pub use builder::{BuildError, Builder, Disruptor};
pub use handler::{ExceptionPolicy, HandlerError, HandlerFailure, HandlerResult, HandlerStats};
pub use producer::{MultiProducer, ShutdownReport, SingleProducer};
pub use ring_buffer::{InvalidRingSize, RingBuffer, MAX_RING_SIZE};
pub use sequence::Sequence;
pub use sequencer::{Claim, ClaimError, MultiProducerSequencer, RingFull, SingleProducerSequencer};
