//! One core of the runtime: a native thread that owns a [`Reactor`](crate::reactor::Reactor) and runs the commands of
//! its inbox, in order, until told to stop.
//!
//! The core never blocks on anything but its own empty inbox (spin briefly, yield, then park
//! on its [`Blocking`] strategy, which the producer signals after each push). Results stay in
//! the reactor's per-query outboxes until a [`CoreCommand::Sync`] asks for them; the reply goes
//! to the core's outbox ring, which therefore never fills (one sync is outstanding at a time).
//! A credit is given back to the [`CreditGate`] as soon as the routed batch holding it has been
//! processed.
//!
//! A failing operator does not stop the core: the first error is kept and handed to the engine
//! with the next reply. A panic is caught; the core then drops further data (its state can no
//! longer be trusted), keeps giving credits back and answering syncs with the error, so the
//! engine reports it instead of hanging.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;

use super::router::Selection;
use crate::error::{Error, Result};
use crate::reactor::{Budget, CoreMessage, QueryGraph, QueryId, QueryMetrics, Reactor, SourceId};
use crate::sync::credit::CreditGate;
use crate::sync::wait::{Blocking, WaitStrategy};
use crate::sync::{Consumer, Producer};

/// A command for one core.
pub enum CoreCommand {
    /// A message for every query of this core that reads its source (watermarks, idleness,
    /// end of input), or for every query (processing time, lookup-table changes).
    Broadcast(CoreMessage),
    /// A message other than data for one input of one query only (replays of lookup-table
    /// changes to a query that starts later).
    Deliver {
        /// The query.
        query: QueryId,
        /// The query's input number.
        input: usize,
        /// The message.
        msg: CoreMessage,
    },
    /// Rows `rows` of a batch of `source` for one input of one query: every piece of data a
    /// core gets. For key-routed data the router listed the rows and the core copies them out
    /// (so the copying is spread over the cores); otherwise `rows` is `Selection::All`.
    Routed {
        /// The query.
        query: QueryId,
        /// The query's input number.
        input: usize,
        /// The source.
        source: SourceId,
        /// The whole batch.
        batch: RecordBatch,
        /// The rows of it this core gets.
        rows: Selection,
        /// Whether it holds a credit of the gate.
        credit: bool,
    },
    /// Start a query (every core starts the same queries in the same order, so a query has
    /// the same id on every core).
    AddQuery {
        /// Its sources, in input order.
        inputs: Vec<SourceId>,
        /// Its compiled graph (each core has its own).
        graph: QueryGraph,
    },
    /// Reply with every query's new results and counters.
    Sync {
        /// Echoed in the reply.
        ticket: u64,
        /// Also reply with every query's state (a checkpoint barrier: the state is that after
        /// everything sent before, and before anything sent after).
        snapshot: bool,
    },
    /// Replace the state of a query with one saved by a snapshot (recovery). A failure is
    /// reported by the next sync.
    Restore {
        /// The query.
        query: QueryId,
        /// Its saved state on this core.
        state: Vec<u8>,
    },
    /// Sleep this long (tests: a slow core, to exercise backpressure).
    Stall(Duration),
    /// Process everything before this, then stop.
    Shutdown,
}

/// New results and counters of one query on one core.
#[derive(Debug, Default)]
pub struct QueryOutput {
    /// Results since the last sync.
    pub output: Vec<RecordBatch>,
    /// Late rows since the last sync.
    pub late: Vec<RecordBatch>,
    /// Counters now.
    pub metrics: QueryMetrics,
}

/// A core's answer to [`CoreCommand::Sync`].
#[derive(Debug)]
pub struct CoreReport {
    /// The core.
    pub core: usize,
    /// The sync's ticket.
    pub ticket: u64,
    /// Per query, in id order.
    pub queries: Vec<QueryOutput>,
    /// The first error since the last sync (or, after a panic, always).
    pub error: Option<Error>,
    /// Every query's state, when the sync asked for it (see [`CoreCommand::Sync`]).
    pub snapshot: Option<Vec<Vec<u8>>>,
}

/// Counters a core updates as it works; read by anyone at any time.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Rows of routed data processed.
    pub rows: AtomicU64,
    /// Routed batches processed.
    pub batches: AtomicU64,
    /// Commands processed.
    pub commands: AtomicU64,
    /// Times the core parked or yielded because its inbox was empty.
    pub idle_waits: AtomicU64,
    /// Nanoseconds spent processing commands.
    pub busy_ns: AtomicU64,
    /// Whether the thread is pinned to a CPU.
    pub pinned: AtomicBool,
}

/// What a core thread owns.
pub(super) struct CoreContext {
    pub core: usize,
    pub inbox: Consumer<CoreCommand>,
    pub outbox: Producer<CoreReport>,
    /// Signalled by the producer after it pushes to `inbox`.
    pub wake: Arc<Blocking>,
    /// Signalled by this core after it frees inbox slots or pushes a reply: the engine waits
    /// on it for ring space and for replies.
    pub progress: Arc<Blocking>,
    pub gate: Arc<CreditGate>,
    pub counters: Arc<CoreCounters>,
    pub budget: Budget,
    pub cpu: Option<core_affinity::CoreId>,
}

struct CoreState {
    reactor: Reactor,
    error: Option<Error>,
    /// Set after a panic: data is dropped from then on.
    poisoned: Option<String>,
}

/// The core thread's body.
pub(super) fn run_core(mut cx: CoreContext) {
    if let Some(cpu) = cx.cpu {
        let pinned = core_affinity::set_for_current(cpu);
        cx.counters.pinned.store(pinned, Ordering::Relaxed);
    }
    let mut st = CoreState {
        reactor: Reactor::new(cx.budget.messages.max(1)),
        error: None,
        poisoned: None,
    };
    let mut commands: Vec<CoreCommand> = Vec::with_capacity(32);
    loop {
        cx.inbox.pop_batch(32, |c| commands.push(c));
        if commands.is_empty() {
            cx.counters.idle_waits.fetch_add(1, Ordering::Relaxed);
            let inbox = &cx.inbox;
            cx.wake.wait_until(&mut || !inbox.is_empty());
            continue;
        }
        // The producer may be waiting for ring space.
        cx.progress.signal();
        cx.counters
            .commands
            .fetch_add(commands.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let mut stop = false;
        for cmd in commands.drain(..) {
            match cmd {
                CoreCommand::Shutdown => stop = true,
                cmd => handle(&mut st, &mut cx, cmd),
            }
        }
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        cx.counters.busy_ns.fetch_add(ns, Ordering::Relaxed);
        if stop {
            return;
        }
    }
}

fn handle(st: &mut CoreState, cx: &mut CoreContext, cmd: CoreCommand) {
    match cmd {
        CoreCommand::Sync { ticket, snapshot } => reply(st, cx, ticket, snapshot),
        CoreCommand::Restore { query, state } => {
            guarded(st, cx.core, |r| r.restore_query(query, &state));
        }
        CoreCommand::Stall(d) => std::thread::sleep(d),
        CoreCommand::Shutdown => {}
        CoreCommand::Deliver { query, input, msg } => {
            guarded(st, cx.core, |r| r.replay(query, input, &msg));
        }
        CoreCommand::Routed {
            query,
            input,
            source,
            batch,
            rows,
            credit,
        } => {
            let n = rows.len(&batch) as u64;
            cx.counters.rows.fetch_add(n, Ordering::Relaxed);
            cx.counters.batches.fetch_add(1, Ordering::Relaxed);
            guarded(st, cx.core, |r| {
                let batch = rows.apply(&batch)?;
                r.replay(query, input, &CoreMessage::Data { source, batch })
            });
            if credit {
                cx.gate.release(cx.core, 1);
            }
        }
        CoreCommand::Broadcast(msg) => {
            let budget = cx.budget;
            guarded(st, cx.core, |r| r.run(msg, budget));
        }
        CoreCommand::AddQuery { inputs, graph } => {
            // Always added, even when poisoned, so that query ids stay aligned across cores.
            st.reactor.add_query(&inputs, graph);
        }
    }
}

/// Runs `f` on the reactor unless the core is poisoned, keeping the first error and turning
/// a panic into a poisoned core.
fn guarded(st: &mut CoreState, core: usize, f: impl FnOnce(&mut Reactor) -> Result<()>) {
    if st.poisoned.is_some() {
        return;
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut st.reactor))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            st.error.get_or_insert(e);
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            st.poisoned = Some(format!(
                "core {core} panicked ({what}); its state is lost: create a new Engine"
            ));
        }
    }
}

fn reply(st: &mut CoreState, cx: &mut CoreContext, ticket: u64, snapshot: bool) {
    let mut saved = None;
    if snapshot && st.poisoned.is_none() && st.error.is_none() {
        match catch_unwind(AssertUnwindSafe(|| st.reactor.snapshot())) {
            Ok(Ok(s)) => saved = Some(s),
            Ok(Err(e)) => {
                st.error.get_or_insert(e);
            }
            Err(_) => {
                st.error.get_or_insert(Error::Runtime(format!(
                    "core {} panicked while saving its state",
                    cx.core
                )));
            }
        }
    }
    let queries = (0..st.reactor.query_count() as QueryId)
        .map(|q| QueryOutput {
            output: st.reactor.take_output(q),
            late: st.reactor.take_late(q),
            metrics: st.reactor.query_metrics(q).unwrap_or_default(),
        })
        .collect();
    let error = match &st.poisoned {
        Some(m) => Some(Error::Runtime(m.clone())),
        None => st.error.take(),
    };
    let mut report = CoreReport {
        core: cx.core,
        ticket,
        queries,
        error,
        snapshot: saved,
    };
    // The engine has at most one sync outstanding and drains the replies before the next,
    // so the ring has room; should it not, wait rather than lose the reply.
    while let Err(back) = cx.outbox.push(report) {
        report = back;
        std::thread::yield_now();
    }
    cx.progress.signal();
}
