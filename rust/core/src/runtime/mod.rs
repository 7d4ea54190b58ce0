//! The thread-per-core runtime: N core threads, each owning a [`Reactor`](crate::reactor::Reactor), fed by a key
//! router through per-core SPSC rings, with credit-based backpressure.
//!
//! ```text
//!  producer (the engine, on the pushing thread)             core threads (pinned)
//!  ┌────────────────────────────┐  SpscQueue<CoreCommand>  ┌────────────────────┐
//!  │ KeyRouter: hash keys, take │ ───── inbox 0 ─────────▶ │ core 0: Reactor    │
//!  │ CreditGate: 1 credit per   │ ───── inbox 1 ─────────▶ │ core 1: Reactor    │
//!  │   routed batch per core    │ ◀──── outbox (replies) ─ │  ...               │
//!  └────────────────────────────┘                          └────────────────────┘
//! ```
//!
//! Invariants:
//! - One producer per inbox at a time: the runtime is driven through `&mut self` (the engine
//!   is behind a lock when several threads push), so each inbox is a true SPSC ring and every
//!   core sees every command in the one order the producer sent them. Watermarks are
//!   broadcast in that order, so each core judges lateness and closes windows exactly as a
//!   single core would; together with key routing (equal keys, one core) the union of the
//!   cores' results equals a single core's.
//!   Several Python threads pushing at once therefore share one ingress through that lock,
//!   not through a multi-producer ring: a source's watermark must be generated in one order
//!   by one thread anyway, and a multi-producer claim (measured ~33 M/s against ~135 M/s for
//!   single-producer rings on this machine) would only add cost behind it. The
//!   multi-producer [`disruptor`](crate::sync::disruptor) stays available for ingress that
//!   does not need that order.
//! - Routed data takes a credit per core before it is pushed, and the core gives it back once
//!   the batch is processed: at most `exclusive + floating` routed batches wait per core.
//!   Control commands (watermarks, syncs) take none; when a ring is full the producer waits
//!   for the core (which always makes progress, never waiting on the producer).
//! - Idle cores spin briefly, yield, then park ([`Blocking`]); the producer signals a core
//!   after each push, with the handshake that cannot lose a wake-up.
//! - [`ThreadPerCoreRuntime::sync`] is the only way results leave the cores: each core answers
//!   with its queries' new results after processing everything sent before, so a sync sees
//!   every effect of earlier pushes.
//! - Shutdown sends `Shutdown` behind everything queued, so each core drains its inbox, then
//!   joins every thread. Dropping the runtime does the same.

mod core_thread;
mod router;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use core_thread::{CoreCommand, CoreCounters, CoreReport, QueryOutput};
pub use router::{KeyRouter, Partitioning, Selection};

use crate::error::{Error, Result};
use crate::reactor::Budget;
use crate::sync::credit::{CreditConfig, CreditGate, CreditMetrics, Refused};
use crate::sync::wait::{Blocking, WaitStrategy};
use crate::sync::{Consumer, Producer, SpscQueue};
use core_thread::{run_core, CoreContext};

/// Settings of a [`ThreadPerCoreRuntime`].
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    /// Core threads.
    pub cores: usize,
    /// Slots of each core's inbox ring (rounded up to a power of two).
    pub inbox_capacity: usize,
    /// Backpressure credits.
    pub credits: CreditConfig,
    /// Pin core `i` to CPU `i` (modulo the CPUs this process may use) where allowed.
    pub pin: bool,
    /// Messages per reactor poll.
    pub budget: Budget,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: 2,
            inbox_capacity: 4096,
            credits: CreditConfig::default(),
            pin: true,
            budget: Budget::default(),
        }
    }
}

/// A snapshot of one core's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreMetrics {
    /// Core number.
    pub core: usize,
    /// Whether its thread is pinned to a CPU.
    pub pinned: bool,
    /// Routed rows processed.
    pub rows: u64,
    /// Routed batches processed.
    pub batches: u64,
    /// Commands processed.
    pub commands: u64,
    /// Commands waiting in its inbox now.
    pub queue_depth: u64,
    /// Routed batches holding a credit now (sent, not yet processed).
    pub credits_in_use: u64,
    /// Whether its channel is backpressured now.
    pub backpressured: bool,
    /// Times it found its inbox empty and waited.
    pub idle_waits: u64,
    /// Seconds spent processing.
    pub busy_s: f64,
}

struct CoreHandle {
    inbox: Producer<CoreCommand>,
    outbox: Consumer<CoreReport>,
    wake: Arc<Blocking>,
    counters: Arc<CoreCounters>,
    thread: Option<JoinHandle<()>>,
}

/// The runtime. See the module docs.
pub struct ThreadPerCoreRuntime {
    config: RuntimeConfig,
    cores: Vec<CoreHandle>,
    gate: Arc<CreditGate>,
    progress: Arc<Blocking>,
    next_ticket: u64,
    /// Channels needing a credit for the routed batches being sent (reused).
    claim: Vec<usize>,
}

impl ThreadPerCoreRuntime {
    /// Starts `config.cores` core threads.
    pub fn start(config: RuntimeConfig) -> Result<Self> {
        let n = config.cores.max(1);
        let gate = Arc::new(CreditGate::new(n, config.credits));
        let progress = Arc::new(Blocking::default());
        let cpus = if config.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut rt = ThreadPerCoreRuntime {
            config,
            cores: Vec::with_capacity(n),
            gate,
            progress,
            next_ticket: 0,
            claim: Vec::with_capacity(n),
        };
        for core in 0..n {
            let (inbox_tx, inbox_rx) = SpscQueue::with_capacity(config.inbox_capacity);
            let (outbox_tx, outbox_rx) = SpscQueue::with_capacity(4);
            let wake = Arc::new(Blocking::default());
            let counters = Arc::new(CoreCounters::default());
            let cx = CoreContext {
                core,
                inbox: inbox_rx,
                outbox: outbox_tx,
                wake: wake.clone(),
                progress: rt.progress.clone(),
                gate: rt.gate.clone(),
                counters: counters.clone(),
                budget: config.budget,
                cpu: (!cpus.is_empty()).then(|| cpus[core % cpus.len()]),
            };
            let thread = std::thread::Builder::new()
                .name(format!("laminar-core-{core}"))
                .spawn(move || run_core(cx))
                .map_err(|e| Error::Runtime(format!("cannot start core thread {core}: {e}")))?;
            rt.cores.push(CoreHandle {
                inbox: inbox_tx,
                outbox: outbox_rx,
                wake,
                counters,
                thread: Some(thread),
            });
        }
        Ok(rt)
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// The settings.
    pub fn config(&self) -> RuntimeConfig {
        self.config
    }

    /// Pushes `cmd` to core `core`, waiting for ring space if needed, and wakes the core.
    pub fn send(&mut self, core: usize, cmd: CoreCommand) -> Result<()> {
        let progress = self.progress.clone();
        let h = self
            .cores
            .get_mut(core)
            .ok_or_else(|| Error::Runtime(format!("no core {core}")))?;
        if h.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(Error::Runtime(format!("core {core} has stopped")));
        }
        let mut cmd = cmd;
        while let Err(back) = h.inbox.push(cmd) {
            cmd = back;
            // Let the core run; it signals `progress` after freeing slots.
            let inbox = &h.inbox;
            let cap = inbox.capacity();
            progress.wait_until(&mut || inbox.len() < cap);
        }
        h.wake.signal();
        Ok(())
    }

    /// Sends `make()` to every core.
    pub fn broadcast(&mut self, mut make: impl FnMut() -> CoreCommand) -> Result<()> {
        for core in 0..self.cores.len() {
            self.send(core, make())?;
        }
        Ok(())
    }

    /// Sends routed data (`(core, command)` pairs, several per core allowed) after taking one
    /// credit per pair under the overflow policy, all or nothing. `Ok(false)`: refused under
    /// policy Drop; policy Error gives [`Error::Backpressure`]. Nothing is sent when refused.
    pub fn send_routed(&mut self, sends: Vec<(usize, CoreCommand)>) -> Result<bool> {
        self.claim.clear();
        self.claim.extend(sends.iter().map(|(c, _)| *c));
        match self.gate.acquire(&self.claim) {
            Ok(()) => {}
            Err(Refused::Dropped) => return Ok(false),
            Err(Refused::Full) => {
                let m = self.gate.metrics();
                return Err(Error::Backpressure(format!(
                    "the engine's cores are behind (routed batches in flight per core: {:?}, limit {} each); nothing of this batch was applied: retry later, or use backpressure='block'",
                    m.in_flight,
                    self.config.credits.exclusive + self.config.credits.floating
                )));
            }
        }
        for (core, cmd) in sends {
            self.send(core, cmd)?;
        }
        Ok(true)
    }

    /// Waits until every core has processed everything sent before, and returns each core's
    /// reply (in core order).
    pub fn sync(&mut self) -> Result<Vec<CoreReport>> {
        self.sync_with(false)
    }

    /// [`sync`](Self::sync); with `snapshot`, each reply also carries its core's query states
    /// (a checkpoint barrier: every core saves its state at the same point of the stream of
    /// commands, since every core's inbox is FIFO and this is sent to all of them at once).
    pub fn sync_with(&mut self, snapshot: bool) -> Result<Vec<CoreReport>> {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.broadcast(|| CoreCommand::Sync { ticket, snapshot })?;
        let mut reports = Vec::with_capacity(self.cores.len());
        for (core, h) in self.cores.iter_mut().enumerate() {
            loop {
                if let Some(r) = h.outbox.pop() {
                    if r.ticket == ticket {
                        reports.push(r);
                        break;
                    }
                    continue; // a stale reply of an abandoned sync
                }
                if h.thread.as_ref().is_none_or(|t| t.is_finished()) && h.outbox.is_empty() {
                    return Err(Error::Runtime(format!(
                        "core {core} stopped before answering"
                    )));
                }
                let outbox = &h.outbox;
                let thread = &h.thread;
                self.progress.wait_until(&mut || {
                    !outbox.is_empty() || thread.as_ref().is_none_or(|t| t.is_finished())
                });
            }
        }
        Ok(reports)
    }

    /// Makes core `core` sleep for `d` (tests: a slow core).
    pub fn stall(&mut self, core: usize, d: Duration) -> Result<()> {
        self.send(core, CoreCommand::Stall(d))
    }

    /// Counters of every core.
    pub fn core_metrics(&self) -> Vec<CoreMetrics> {
        let credits = self.gate.metrics();
        self.cores
            .iter()
            .enumerate()
            .map(|(core, h)| {
                let c = &h.counters;
                CoreMetrics {
                    core,
                    pinned: c.pinned.load(Ordering::Relaxed),
                    rows: c.rows.load(Ordering::Relaxed),
                    batches: c.batches.load(Ordering::Relaxed),
                    commands: c.commands.load(Ordering::Relaxed),
                    queue_depth: h.inbox.len() as u64,
                    credits_in_use: credits.in_flight.get(core).copied().unwrap_or(0),
                    backpressured: credits.backpressured.get(core).copied().unwrap_or(false),
                    idle_waits: c.idle_waits.load(Ordering::Relaxed),
                    busy_s: c.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
                }
            })
            .collect()
    }

    /// Counters of the credit gate.
    pub fn credit_metrics(&self) -> CreditMetrics {
        self.gate.metrics()
    }

    /// Drains every core (everything queued is processed), stops and joins the threads.
    /// Idempotent. Fails if a core thread panicked outside the reactor.
    pub fn shutdown(&mut self) -> Result<()> {
        let mut failed = None;
        for core in 0..self.cores.len() {
            let running = self.cores[core]
                .thread
                .as_ref()
                .is_some_and(|t| !t.is_finished());
            if running {
                let _ = self.send(core, CoreCommand::Shutdown);
            }
        }
        for (core, h) in self.cores.iter_mut().enumerate() {
            if let Some(t) = h.thread.take() {
                if t.join().is_err() {
                    failed = Some(Error::Runtime(format!("core thread {core} panicked")));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Drop for ThreadPerCoreRuntime {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
