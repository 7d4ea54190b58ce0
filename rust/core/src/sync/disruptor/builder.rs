//! The builder: ring, wait strategy, consumer graph, failure policy, then producer handles.
//!
//! Handlers are added in *stages*. [`Builder::handle_events_with`] adds a handler to the
//! current stage (all handlers of a stage run in parallel, each on its own thread, and see
//! every event); [`Builder::then`] starts a new stage whose handlers process an event only
//! after every handler of the previous stage has. That expresses parallel consumers
//! (`a`, `b` in one stage), pipelines (`a.then(b).then(c)`) and diamonds (`a`, then `b` and
//! `c` in parallel, then `d` joining them). The last stage gates the producers.
//!
//! Handlers get `&T`. A handler that must mutate events in place for the stages after it uses
//! [`Builder::handle_events_mut`] / [`Builder::then_mut`] and gets `&mut T`; it must be alone
//! in its stage (checked by `build_*`: every other handler is then strictly before or after it,
//! so no one else touches the event while it holds it).
//!
//! The wait strategy is a type parameter (monomorphised into the hot loops), so it is chosen
//! first: [`Builder::wait_strategy`] after handlers were added is reported as
//! [`BuildError::WaitStrategyAfterHandlers`]. The default is [`Blocking`].

use std::fmt;

use super::super::primitives::AtomicBool;
use super::barrier::{Published, SequenceBarrier};
use super::handler::{
    run_consumer, ConsumerContext, ExceptionPolicy, Exclusive, FailureHook, HandlerFailure,
    HandlerResult, HandlerStats, Shared, SlotHandler,
};
use super::producer::{Health, MultiProducer, Runtime, SingleProducer};
use super::ring_buffer::{InvalidRingSize, RingBuffer};
use super::sequence::Sequence;
use super::sequencer::{MultiProducerSequencer, SingleProducerSequencer};
use crate::sync::wait::{Blocking, WaitStrategy};

#[cfg(feature = "loom")]
use loom::sync::Arc;
#[cfg(not(feature = "loom"))]
use std::sync::Arc;

/// Why a disruptor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The ring size is not a power of two in range.
    #[error(transparent)]
    InvalidSize(#[from] InvalidRingSize),
    /// No handler was added: published events would go nowhere.
    #[error("a disruptor needs at least one handler")]
    NoHandlers,
    /// An exclusive (`&mut T`) handler shares its stage with other handlers.
    #[error("stage {stage} has an exclusive (&mut) handler among {handlers} handlers; it must be alone in its stage")]
    ExclusiveNotAlone {
        /// The stage, counting from 0.
        stage: usize,
        /// Handlers in that stage.
        handlers: usize,
    },
    /// [`Builder::wait_strategy`] was called after handlers were added.
    #[error("the wait strategy must be chosen before handlers are added")]
    WaitStrategyAfterHandlers,
    /// The operating system refused a handler thread (threads already started were stopped).
    #[error("could not spawn handler thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The error from `std::thread::Builder::spawn`.
        source: std::io::Error,
    },
}

/// Entry point: `Disruptor::builder(size, factory)`. See the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct Disruptor;

impl Disruptor {
    /// Starts building a disruptor whose ring has `size` slots (a power of two), each filled
    /// by one call of `factory`. The wait strategy is [`Blocking`] unless changed.
    pub fn builder<T, F>(size: usize, factory: F) -> Builder<T, Blocking>
    where
        T: Send + Sync + 'static,
        F: FnMut() -> T,
    {
        Builder {
            ring: RingBuffer::new(size, factory),
            wait: Blocking::default(),
            stages: Vec::new(),
            policy: ExceptionPolicy::default(),
            on_failure: None,
            thread_name: "disruptor".to_string(),
            misuse: None,
        }
    }
}

/// What a managed thread runs: the consumer loop, monomorphised for its handler.
type Runner<T, W> = Box<dyn FnOnce(ConsumerContext<T, W>) -> HandlerStats + Send>;

struct HandlerSpec<T, W> {
    exclusive: bool,
    run: Runner<T, W>,
}

/// The handlers of each stage, with the sequence each will publish its progress in.
type Stages<T, W> = Vec<Vec<(HandlerSpec<T, W>, Arc<Sequence>)>>;

/// Configures a disruptor; see the module docs.
pub struct Builder<T, W> {
    ring: Result<RingBuffer<T>, InvalidRingSize>,
    wait: W,
    stages: Vec<Vec<HandlerSpec<T, W>>>,
    policy: ExceptionPolicy,
    on_failure: Option<Arc<FailureHook>>,
    thread_name: String,
    misuse: Option<BuildError>,
}

impl<T, W> Builder<T, W>
where
    T: Send + Sync + 'static,
    W: WaitStrategy + 'static,
{
    /// Uses `wait` for consumers waiting for events and producers waiting for space. Call it
    /// before adding handlers.
    pub fn wait_strategy<W2: WaitStrategy + 'static>(self, wait: W2) -> Builder<T, W2> {
        let misuse = match self.misuse {
            Some(e) => Some(e),
            None if !self.stages.is_empty() => Some(BuildError::WaitStrategyAfterHandlers),
            None => None,
        };
        Builder {
            ring: self.ring,
            wait,
            stages: Vec::new(),
            policy: self.policy,
            on_failure: self.on_failure,
            thread_name: self.thread_name,
            misuse,
        }
    }

    /// What a consumer does when its handler fails (returns `Err` or panics); applies to
    /// every handler. Default: [`ExceptionPolicy::Continue`].
    pub fn exception_policy(mut self, policy: ExceptionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Calls `f` on every handler failure, from the failing handler's thread (after which the
    /// policy applies). A panic in `f` halts that consumer.
    pub fn on_failure<F>(mut self, f: F) -> Self
    where
        F: Fn(&HandlerFailure<'_>) + Send + Sync + 'static,
    {
        self.on_failure = Some(Arc::new(FailureHook(Box::new(f))));
        self
    }

    /// Names the handler threads `{prefix}-{stage}.{index}` (default prefix `disruptor`; a NUL
    /// character, which thread names cannot hold, becomes `_`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into().replace('\0', "_");
        self
    }

    fn add(
        mut self,
        new_stage: bool,
        exclusive: bool,
        handler: impl SlotHandler<T> + 'static,
    ) -> Self {
        if new_stage || self.stages.is_empty() {
            self.stages.push(Vec::new());
        }
        let run: Runner<T, W> = Box::new(move |ctx| run_consumer(ctx, handler));
        if let Some(stage) = self.stages.last_mut() {
            stage.push(HandlerSpec { exclusive, run });
        }
        self
    }

    /// Adds a handler to the current stage (the first stage if there is none yet): it runs
    /// in parallel with the other handlers of the stage and sees every event as `&T`, with its
    /// sequence and whether it ends the batch.
    pub fn handle_events_with<F>(self, handler: F) -> Self
    where
        F: FnMut(&T, i64, bool) -> HandlerResult + Send + 'static,
    {
        self.add(false, false, Shared(handler))
    }

    /// Starts a new stage with `handler`: it sees an event only after every handler of the
    /// previous stage has processed it.
    pub fn then<F>(self, handler: F) -> Self
    where
        F: FnMut(&T, i64, bool) -> HandlerResult + Send + 'static,
    {
        self.add(true, false, Shared(handler))
    }

    /// Adds an exclusive handler (`&mut T`) to the current stage, which must have no other
    /// handler (checked at build).
    pub fn handle_events_mut<F>(self, handler: F) -> Self
    where
        F: FnMut(&mut T, i64, bool) -> HandlerResult + Send + 'static,
    {
        self.add(false, true, Exclusive(handler))
    }

    /// Starts a new stage with an exclusive handler (`&mut T`): it may modify each event in
    /// place for the stages after it. No handler may be added to its stage.
    pub fn then_mut<F>(self, handler: F) -> Self
    where
        F: FnMut(&mut T, i64, bool) -> HandlerResult + Send + 'static,
    {
        self.add(true, true, Exclusive(handler))
    }

    /// Checks the graph and creates the ring and one sequence per handler.
    fn prepare(self) -> Result<Prepared<T, W>, BuildError> {
        if let Some(e) = self.misuse {
            return Err(e);
        }
        let ring = Arc::new(self.ring?);
        if self.stages.is_empty() {
            return Err(BuildError::NoHandlers);
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if stage.len() > 1 && stage.iter().any(|h| h.exclusive) {
                return Err(BuildError::ExclusiveNotAlone {
                    stage: i,
                    handlers: stage.len(),
                });
            }
        }
        let stages: Stages<T, W> = self
            .stages
            .into_iter()
            .map(|stage| {
                stage
                    .into_iter()
                    .map(|h| (h, Arc::new(Sequence::new())))
                    .collect()
            })
            .collect();
        let gating = stages
            .last()
            .map(|s| s.iter().map(|(_, seq)| seq.clone()).collect())
            .unwrap_or_default();
        Ok(Prepared {
            ring,
            wait: Arc::new(self.wait),
            stages,
            gating,
            policy: self.policy,
            on_failure: self.on_failure,
            thread_name: self.thread_name,
        })
    }

    /// Builds a disruptor with exactly one producer and starts its handler threads.
    pub fn build_single_producer(self) -> Result<SingleProducer<T, W>, BuildError> {
        let p = self.prepare()?;
        let sequencer =
            SingleProducerSequencer::new(p.ring.capacity(), p.wait.clone(), p.gating.clone())?;
        let ring = p.ring.clone();
        let (runtime, health) = p.spawn(sequencer.published(), sequencer.gating().into())?;
        Ok(SingleProducer::new(sequencer, ring, health, runtime))
    }

    /// Builds a disruptor with any number of producers (clone the handle) and starts its
    /// handler threads.
    pub fn build_multi_producer(self) -> Result<MultiProducer<T, W>, BuildError> {
        let p = self.prepare()?;
        let sequencer =
            MultiProducerSequencer::new(p.ring.capacity(), p.wait.clone(), p.gating.clone())?;
        let ring = p.ring.clone();
        let (runtime, health) = p.spawn(sequencer.published(), sequencer.gating().into())?;
        Ok(MultiProducer::new(sequencer, ring, health, runtime))
    }
}

impl<T, W: fmt::Debug> fmt::Debug for Builder<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("ring", &self.ring.as_ref().map(|r| r.capacity()))
            .field("wait", &self.wait)
            .field(
                "stages",
                &self.stages.iter().map(|s| s.len()).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .field("thread_name", &self.thread_name)
            .finish_non_exhaustive()
    }
}

/// A checked graph, ready to be started once the sequencer exists.
struct Prepared<T, W> {
    ring: Arc<RingBuffer<T>>,
    wait: Arc<W>,
    stages: Stages<T, W>,
    gating: Vec<Arc<Sequence>>,
    policy: ExceptionPolicy,
    on_failure: Option<Arc<FailureHook>>,
    thread_name: String,
}

impl<T, W> Prepared<T, W>
where
    T: Send + Sync + 'static,
    W: WaitStrategy + 'static,
{
    /// Starts one named thread per handler. On failure, stops those already started.
    fn spawn(
        self,
        published: Published,
        gating: Box<[Arc<Sequence>]>,
    ) -> Result<(Runtime<W>, Health), BuildError> {
        let alert = Arc::new(AtomicBool::new(false));
        let any_halted = Arc::new(AtomicBool::new(false));
        let mut runtime = Runtime {
            threads: Vec::new(),
            alert: alert.clone(),
            gating,
            wait: self.wait.clone(),
        };
        let mut previous: Vec<Arc<Sequence>> = Vec::new();
        for (k, stage) in self.stages.into_iter().enumerate() {
            let current: Vec<Arc<Sequence>> = stage.iter().map(|(_, s)| s.clone()).collect();
            for (j, (spec, sequence)) in stage.into_iter().enumerate() {
                let name = format!("{}-{k}.{j}", self.thread_name);
                let ctx = ConsumerContext {
                    name: name.clone(),
                    ring: self.ring.clone(),
                    barrier: SequenceBarrier::new(
                        published.clone(),
                        previous.clone(),
                        self.wait.clone(),
                        Some(alert.clone()),
                    ),
                    sequence,
                    wait: self.wait.clone(),
                    policy: self.policy,
                    on_failure: self.on_failure.clone(),
                    any_halted: any_halted.clone(),
                };
                let run = spec.run;
                match std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || run(ctx))
                {
                    Ok(handle) => runtime.threads.push((name, handle)),
                    Err(source) => {
                        // Nothing was published: the started threads are waiting for
                        // sequence 0 and return as soon as they are alerted.
                        runtime.stop_now();
                        return Err(BuildError::Spawn { name, source });
                    }
                }
            }
            previous = current;
        }
        Ok((runtime, Health { any_halted }))
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use crate::sync::wait::{BusySpinWithHint, Yielding};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex as StdMutex;

    #[test]
    fn graph_errors_are_reported_at_build() {
        let r = Disruptor::builder(3, || 0u8)
            .handle_events_with(|_, _, _| Ok(()))
            .build_single_producer();
        assert!(matches!(
            r,
            Err(BuildError::InvalidSize(InvalidRingSize(3)))
        ));
        let r = Disruptor::builder(4, || 0u8).build_single_producer();
        assert!(matches!(r, Err(BuildError::NoHandlers)));
        let r = Disruptor::builder(4, || 0u8)
            .handle_events_with(|_, _, _| Ok(()))
            .handle_events_mut(|_, _, _| Ok(()))
            .build_multi_producer();
        assert!(matches!(
            r,
            Err(BuildError::ExclusiveNotAlone {
                stage: 0,
                handlers: 2
            })
        ));
        let r = Disruptor::builder(4, || 0u8)
            .handle_events_with(|_, _, _| Ok(()))
            .wait_strategy(Yielding::default())
            .handle_events_with(|_, _, _| Ok(()))
            .build_single_producer();
        assert!(matches!(r, Err(BuildError::WaitStrategyAfterHandlers)));
        let msg = BuildError::ExclusiveNotAlone {
            stage: 1,
            handlers: 3,
        }
        .to_string();
        assert!(msg.contains("stage 1"), "{msg}");
    }

    #[test]
    fn threads_are_named_and_stats_come_back_in_order() {
        let names = Arc::new(StdMutex::new(Vec::new()));
        let record = |names: &Arc<StdMutex<Vec<String>>>| {
            let names = names.clone();
            let mut first = true;
            move |_: &u64, _: i64, _: bool| -> HandlerResult {
                if first {
                    first = false;
                    let n = std::thread::current().name().unwrap_or("?").to_string();
                    names.lock().unwrap().push(n);
                }
                Ok(())
            }
        };
        let mut p = Disruptor::builder(8, || 0u64)
            .wait_strategy(BusySpinWithHint)
            .thread_name("dte\0st")
            .handle_events_with(record(&names))
            .handle_events_with(record(&names))
            .then(record(&names))
            .build_single_producer()
            .unwrap();
        p.publish(|e| *e = 1);
        let report = p.shutdown();
        let mut got = names.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec!["dte_st-0.0", "dte_st-0.1", "dte_st-1.0"]);
        let order: Vec<&str> = report.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(order, vec!["dte_st-0.0", "dte_st-0.1", "dte_st-1.0"]);
        assert_eq!(report.published, 1);
        assert!(report.handlers.iter().all(|h| h.processed == 1));
    }

    #[test]
    fn exclusive_stage_mutates_for_the_next_stage() {
        let sum = Arc::new(AtomicU64::new(0));
        let s2 = sum.clone();
        let mut p = Disruptor::builder(16, || (0u64, 0u64))
            .wait_strategy(Yielding::default())
            .handle_events_mut(|e: &mut (u64, u64), _, _| {
                e.1 = e.0 * 2;
                Ok(())
            })
            .then(move |e, _, _| {
                assert_eq!(e.1, e.0 * 2);
                s2.fetch_add(e.1, Ordering::Relaxed);
                Ok(())
            })
            .build_single_producer()
            .unwrap();
        for i in 0..1000u64 {
            p.publish(|e| *e = (i, 0));
        }
        let report = p.shutdown();
        assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000);
        assert_eq!(report.failures(), 0);
    }

    #[test]
    fn on_failure_sees_each_failure_and_a_panicking_callback_halts() {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut p = Disruptor::builder(8, || 0u64)
            .wait_strategy(Yielding::default())
            .on_failure(move |f| {
                s2.lock().unwrap().push((
                    f.handler.to_string(),
                    f.sequence,
                    f.error.to_string(),
                    f.panicked,
                ));
                if f.sequence == 5 {
                    panic!("callback panics too");
                }
            })
            .handle_events_with(|e: &u64, _, _| {
                if *e % 2 == 1 {
                    return Err(format!("odd {e}").into());
                }
                Ok(())
            })
            .build_single_producer()
            .unwrap();
        for i in 0..10u64 {
            p.publish(|e| *e = i);
            p.wait_until_processed(i as i64);
        }
        assert!(p.is_halted());
        let report = p.shutdown();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], ("disruptor-0.0".into(), 1, "odd 1".into(), false));
        let h = &report.handlers[0];
        assert!(h.halted);
        assert_eq!(
            h.seen(),
            10 + 1,
            "the escaped panic is counted on top of the failure"
        );
        assert_eq!(h.last_sequence, 9);
    }
}
