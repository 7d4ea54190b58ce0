//! Per-source watermark generation.
//!
//! This module owns how one source turns the event times it has read into a watermark: the
//! [`WatermarkStrategy`] (configuration), the [`GeneratorConfig`] around it, and the
//! [`WatermarkGenerator`] state machine that the engine drives once per non-empty batch and
//! periodically for idleness.
//!
//! A watermark `W` asserts "all events with event time `< W` have arrived". "No watermark yet"
//! is `None` in the public API and `i64::MIN` internally; a candidate of exactly `i64::MIN`
//! asserts nothing and is therefore the same as no watermark.
//!
//! Invariants:
//! - The watermark never moves backwards: [`WatermarkGenerator::current`] never decreases.
//! - All arithmetic saturates; no `i64` input (event times, punctuation, processing times,
//!   delays, caps, timeouts) can make it overflow or panic.
//! - The generator is deterministic: its output depends only on the sequence of calls and their
//!   arguments. It never reads a clock itself; the caller passes processing time in.
//!
//! What it must never do: wall-clock (processing) time never moves the watermark, except
//! through the two explicit rules here:
//! - the *future horizon* ([`GeneratorConfig::max_future_ms`]): rows more than
//!   `max_future_ms` ahead of processing time do not move the watermark (the caller leaves
//!   them out of the maximum it passes in, see [`WatermarkGenerator::horizon`]); they are
//!   still processed and counted. One row with a bogus far-future timestamp therefore
//!   cannot make every later row late. And
//! - the *idle rule* ([`GeneratorConfig::idle_timeout_ms`]) flags a source with no data for a
//!   while as idle; the generator's own watermark does not change, but a combiner
//!   ([`WatermarkTracker`](super::tracker::WatermarkTracker)) stops waiting for that source.

use super::Timestamp;

/// Internal representation of "no watermark yet".
const NO_WATERMARK: Timestamp = Timestamp::MIN;

/// How a source derives its watermark from its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatermarkStrategy {
    /// `W = max event time seen - delay_ms` (saturating). `delay_ms` is expected to be `>= 0`;
    /// a negative delay is treated as `0` (a watermark may never run ahead of the data).
    BoundedDelay {
        /// Allowed lateness in milliseconds of event time.
        delay_ms: i64,
    },
    /// `W = max event time seen` (events arrive in order; equivalent to a delay of `0`).
    Ascending,
    /// `W = max over the non-null values of a watermark column carried in the data`. The
    /// engine extracts that column; this module only receives each batch's maximum non-null
    /// value (the `punctuation` argument of [`WatermarkGenerator::on_batch`]). Event times do
    /// not influence the watermark under this strategy.
    Punctuated,
}

/// Configuration of one source's [`WatermarkGenerator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// How the watermark is derived from the data.
    pub strategy: WatermarkStrategy,
    /// Horizon: rows whose event time is more than this ahead of processing time do not move
    /// the watermark (see [`WatermarkGenerator::horizon`]). `None` disables the rule. Protects
    /// against a single row with a bogus far-future timestamp making all later data late.
    pub max_future_ms: Option<i64>,
    /// A source with no data for this long (processing time, ms) is idle. `None` disables
    /// idle detection. A negative value is treated as `0` (idle at the first check made at or
    /// after the last data's processing time).
    pub idle_timeout_ms: Option<i64>,
}

impl GeneratorConfig {
    /// A configuration with the given strategy, no future cap and no idle detection.
    pub fn new(strategy: WatermarkStrategy) -> Self {
        GeneratorConfig {
            strategy,
            max_future_ms: None,
            idle_timeout_ms: None,
        }
    }
}

/// Per-source watermark state machine.
///
/// Drive it with [`on_batch`](Self::on_batch) after each non-empty batch was handed to the
/// operators, and with [`check_idle`](Self::check_idle) periodically (processing time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkGenerator {
    config: GeneratorConfig,
    /// Everything that moves (what a checkpoint saves).
    progress: GeneratorState,
}

/// The progress of a [`WatermarkGenerator`] (everything but its configuration), as a
/// checkpoint saves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GeneratorState {
    /// Current watermark; `NO_WATERMARK` until the first advance.
    watermark: Timestamp,
    /// Maximum event time seen over all batches.
    max_event_ts: Option<Timestamp>,
    /// Maximum punctuation value seen over all batches (only used by `Punctuated`).
    max_punctuation: Option<Timestamp>,
    /// Processing time of the last batch, or of creation if there was none.
    last_data_proc_ms: i64,
    idle: bool,
    future_rows: u64,
}

impl WatermarkGenerator {
    /// Its progress, for a checkpoint.
    pub fn save(&self) -> GeneratorState {
        self.progress
    }

    /// Puts back progress saved by [`save`](Self::save) (the configuration stays).
    pub fn load(&mut self, progress: GeneratorState) {
        self.progress = progress;
    }

    /// Creates a generator with no watermark, active (not idle), whose idle timer starts at
    /// `created_at_proc_ms` (processing time).
    pub fn new(config: GeneratorConfig, created_at_proc_ms: i64) -> Self {
        WatermarkGenerator {
            config,
            progress: GeneratorState {
                watermark: NO_WATERMARK,
                max_event_ts: None,
                max_punctuation: None,
                last_data_proc_ms: created_at_proc_ms,
                idle: false,
                future_rows: 0,
            },
        }
    }

    /// The configuration this generator was built with.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// The current watermark, or `None` if none was produced yet. Never decreases.
    pub fn current(&self) -> Option<Timestamp> {
        if self.progress.watermark == NO_WATERMARK {
            None
        } else {
            Some(self.progress.watermark)
        }
    }

    /// The largest event time that may move the watermark at processing time `now_proc_ms`
    /// (`now + max_future_ms`, saturating), or `None` when the rule is disabled. The caller
    /// leaves rows beyond it out of the maximum it passes to [`on_batch`](Self::on_batch) and
    /// reports how many with [`record_future_rows`](Self::record_future_rows).
    pub fn horizon(&self, now_proc_ms: i64) -> Option<Timestamp> {
        self.config
            .max_future_ms
            .map(|f| now_proc_ms.saturating_add(f))
    }

    /// Counts rows that were beyond the [`horizon`](Self::horizon) and so did not move the
    /// watermark.
    pub fn record_future_rows(&mut self, rows: u64) {
        self.progress.future_rows = self.progress.future_rows.saturating_add(rows);
    }

    /// Called once per non-empty batch, AFTER the batch's rows were handed to the operators
    /// (so the rows of this batch are never late with respect to the watermark it produces).
    ///
    /// - `max_event_ts`: the batch's maximum event time among the rows within the
    ///   [`horizon`](Self::horizon) (`i64::MIN` if there are none: it asserts nothing).
    /// - `punctuation`: for [`WatermarkStrategy::Punctuated`], the maximum non-null value of
    ///   the watermark column in the batch (`None` if all null); ignored by other strategies.
    /// - `now_proc_ms`: processing time (only recorded for idleness).
    ///
    /// The candidate is computed from the maxima seen over *all* batches so far.
    ///
    /// Also records `now_proc_ms` as the time of the last data and clears the idle flag
    /// (callers that combine sources should check [`is_idle`](Self::is_idle) *before* this
    /// call to learn that the source became active again).
    ///
    /// Returns `Some(new watermark)` only if the watermark advanced.
    pub fn on_batch(
        &mut self,
        max_event_ts: Timestamp,
        punctuation: Option<Timestamp>,
        now_proc_ms: i64,
    ) -> Option<Timestamp> {
        self.progress.last_data_proc_ms = now_proc_ms;
        self.progress.idle = false;

        self.progress.max_event_ts = Some(match self.progress.max_event_ts {
            Some(seen) => seen.max(max_event_ts),
            None => max_event_ts,
        });
        if let Some(p) = punctuation {
            self.progress.max_punctuation = Some(match self.progress.max_punctuation {
                Some(seen) => seen.max(p),
                None => p,
            });
        }

        let candidate = self.candidate()?;
        if candidate > self.progress.watermark {
            self.progress.watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }

    /// The watermark the strategy derives from the maxima seen so far.
    fn candidate(&self) -> Option<Timestamp> {
        match self.config.strategy {
            WatermarkStrategy::BoundedDelay { delay_ms } => self
                .progress
                .max_event_ts
                .map(|max| max.saturating_sub(delay_ms.max(0))),
            WatermarkStrategy::Ascending => self.progress.max_event_ts,
            WatermarkStrategy::Punctuated => self.progress.max_punctuation,
        }
    }

    /// Processing-time idleness check. Returns `true` exactly once when the source transitions
    /// to idle, i.e. when `now_proc_ms - last data` (or `- creation` if there never was any
    /// data) `>= idle_timeout_ms`. Later calls return `false` until data
    /// ([`on_batch`](Self::on_batch)) clears idleness. Always `false` when idle detection is
    /// disabled. Never changes the watermark.
    pub fn check_idle(&mut self, now_proc_ms: i64) -> bool {
        let timeout = match self.config.idle_timeout_ms {
            Some(t) => t.max(0),
            None => return false,
        };
        if self.progress.idle {
            return false;
        }
        if now_proc_ms.saturating_sub(self.progress.last_data_proc_ms) >= timeout {
            self.progress.idle = true;
            true
        } else {
            false
        }
    }

    /// Whether the source is currently idle (set by [`check_idle`](Self::check_idle), cleared
    /// by [`on_batch`](Self::on_batch)).
    pub fn is_idle(&self) -> bool {
        self.progress.idle
    }

    /// How many rows were beyond the horizon and did not move the watermark.
    pub fn future_rows(&self) -> u64 {
        self.progress.future_rows
    }

    /// Maximum event time seen so far, or `None` before the first batch.
    pub fn max_event_ts(&self) -> Option<Timestamp> {
        self.progress.max_event_ts
    }

    /// Processing time of the last batch, or of creation if there was none.
    pub fn last_data_proc_ms(&self) -> i64 {
        self.progress.last_data_proc_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gen(strategy: WatermarkStrategy) -> WatermarkGenerator {
        WatermarkGenerator::new(GeneratorConfig::new(strategy), 0)
    }

    fn cfg(
        strategy: WatermarkStrategy,
        max_future_ms: Option<i64>,
        idle_timeout_ms: Option<i64>,
    ) -> GeneratorConfig {
        GeneratorConfig {
            strategy,
            max_future_ms,
            idle_timeout_ms,
        }
    }

    #[test]
    fn starts_without_watermark() {
        let g = gen(WatermarkStrategy::Ascending);
        assert_eq!(g.current(), None);
        assert_eq!(g.max_event_ts(), None);
        assert!(!g.is_idle());
        assert_eq!(g.future_rows(), 0);
        assert_eq!(g.last_data_proc_ms(), 0);
    }

    #[test]
    fn bounded_delay_subtracts_delay() {
        let mut g = gen(WatermarkStrategy::BoundedDelay { delay_ms: 100 });
        assert_eq!(g.on_batch(1_000, None, 0), Some(900));
        assert_eq!(g.current(), Some(900));
        assert_eq!(g.on_batch(1_050, None, 0), Some(950));
        assert_eq!(g.max_event_ts(), Some(1_050));
    }

    #[test]
    fn ascending_is_max_seen() {
        let mut g = gen(WatermarkStrategy::Ascending);
        assert_eq!(g.on_batch(5, None, 0), Some(5));
        assert_eq!(g.on_batch(7, None, 0), Some(7));
        assert_eq!(g.on_batch(7, None, 0), None);
        assert_eq!(g.current(), Some(7));
    }

    #[test]
    fn backwards_values_are_ignored() {
        let mut g = gen(WatermarkStrategy::BoundedDelay { delay_ms: 10 });
        assert_eq!(g.on_batch(100, None, 0), Some(90));
        assert_eq!(g.on_batch(50, None, 0), None);
        assert_eq!(g.current(), Some(90));
        assert_eq!(g.max_event_ts(), Some(100));
        // The next higher batch advances from the max seen, not from the lower batch.
        assert_eq!(g.on_batch(101, None, 0), Some(91));
    }

    #[test]
    fn negative_delay_is_treated_as_zero() {
        let mut g = gen(WatermarkStrategy::BoundedDelay { delay_ms: -50 });
        assert_eq!(g.on_batch(100, None, 0), Some(100));
    }

    #[test]
    fn punctuated_uses_punctuation_only() {
        let mut g = gen(WatermarkStrategy::Punctuated);
        // All-null watermark column: no watermark, but the event time is still recorded.
        assert_eq!(g.on_batch(1_000, None, 0), None);
        assert_eq!(g.current(), None);
        assert_eq!(g.max_event_ts(), Some(1_000));
        assert_eq!(g.on_batch(1_100, Some(500), 0), Some(500));
        assert_eq!(g.on_batch(1_200, Some(400), 0), None);
        assert_eq!(g.on_batch(1_300, None, 0), None);
        assert_eq!(g.current(), Some(500));
        assert_eq!(g.on_batch(0, Some(600), 0), Some(600));
    }

    #[test]
    fn punctuation_ignored_by_other_strategies() {
        let mut g = gen(WatermarkStrategy::Ascending);
        assert_eq!(g.on_batch(10, Some(1_000), 0), Some(10));
        let mut g = gen(WatermarkStrategy::BoundedDelay { delay_ms: 5 });
        assert_eq!(g.on_batch(10, Some(1_000), 0), Some(5));
    }

    #[test]
    fn horizon_follows_processing_time_and_saturates() {
        let g = WatermarkGenerator::new(cfg(WatermarkStrategy::Ascending, Some(1_000), None), 0);
        assert_eq!(g.horizon(10_000), Some(11_000));
        assert_eq!(g.horizon(i64::MAX), Some(i64::MAX));
        assert_eq!(gen(WatermarkStrategy::Ascending).horizon(5), None);
    }

    #[test]
    fn future_rows_are_counted_and_do_not_move_the_watermark() {
        let config = cfg(WatermarkStrategy::Ascending, Some(1_000), Some(1_000));
        let mut g = WatermarkGenerator::new(config, 0);
        assert_eq!(g.on_batch(100, None, 10_000), Some(100));
        // A batch whose only row is beyond the horizon: the caller passes i64::MIN.
        g.record_future_rows(1);
        assert_eq!(g.on_batch(i64::MIN, None, 10_000), None);
        assert_eq!(g.current(), Some(100));
        assert_eq!(g.future_rows(), 1);
        // It still counts as data for idleness.
        assert!(!g.check_idle(10_500));
        assert_eq!(g.on_batch(200, None, 10_000), Some(200));
    }

    #[test]
    fn processing_time_never_moves_the_watermark() {
        let config = cfg(WatermarkStrategy::Ascending, Some(0), Some(1_000));
        let mut g = WatermarkGenerator::new(config, 0);
        assert_eq!(g.on_batch(100, None, 100), Some(100));
        assert!(!g.check_idle(500));
        assert!(g.check_idle(10_000));
        assert_eq!(g.current(), Some(100));
    }

    #[test]
    fn idle_transitions_exactly_once() {
        let config = cfg(WatermarkStrategy::Ascending, None, Some(1_000));
        let mut g = WatermarkGenerator::new(config, 0);
        assert_eq!(g.on_batch(10, None, 100), Some(10));
        assert!(!g.check_idle(1_099));
        assert!(!g.is_idle());
        assert!(g.check_idle(1_100));
        assert!(g.is_idle());
        assert!(!g.check_idle(1_200));
        assert!(!g.check_idle(i64::MAX));
        assert!(g.is_idle());
        assert_eq!(g.current(), Some(10));
    }

    #[test]
    fn idle_without_any_data_counts_from_creation() {
        let config = cfg(WatermarkStrategy::Ascending, None, Some(500));
        let mut g = WatermarkGenerator::new(config, 1_000);
        assert!(!g.check_idle(1_499));
        assert!(g.check_idle(1_500));
        assert!(g.is_idle());
        assert_eq!(g.current(), None);
    }

    #[test]
    fn data_clears_idle_and_restarts_timer() {
        let config = cfg(WatermarkStrategy::Ascending, None, Some(100));
        let mut g = WatermarkGenerator::new(config, 0);
        assert!(g.check_idle(100));
        // A batch that does not advance the watermark still clears idleness.
        assert_eq!(g.on_batch(i64::MIN, None, 150), None);
        assert!(!g.is_idle());
        assert_eq!(g.last_data_proc_ms(), 150);
        assert!(!g.check_idle(249));
        assert!(g.check_idle(250));
        assert!(!g.check_idle(251));
    }

    #[test]
    fn idle_disabled_never_idle() {
        let mut g = gen(WatermarkStrategy::Ascending);
        assert!(!g.check_idle(i64::MAX));
        assert!(!g.is_idle());
    }

    #[test]
    fn non_positive_idle_timeout_is_idle_at_first_check() {
        let config = cfg(WatermarkStrategy::Ascending, None, Some(0));
        let mut g = WatermarkGenerator::new(config, 0);
        assert!(g.check_idle(0));
        let config = cfg(WatermarkStrategy::Ascending, None, Some(-5));
        let mut g = WatermarkGenerator::new(config, 0);
        assert!(
            !g.check_idle(-3),
            "negative timeout is 0; processing time went back"
        );
        assert!(g.check_idle(0));
    }

    #[test]
    fn saturating_extremes() {
        // Huge delay: saturates at i64::MIN, which is "no watermark".
        let mut g = gen(WatermarkStrategy::BoundedDelay { delay_ms: i64::MAX });
        assert_eq!(g.on_batch(-10, None, 0), None);
        assert_eq!(g.current(), None);
        assert_eq!(g.on_batch(i64::MAX, None, 0), Some(0));

        // i64::MIN event time: recorded, but asserts nothing.
        let mut g = gen(WatermarkStrategy::Ascending);
        assert_eq!(g.on_batch(i64::MIN, None, 0), None);
        assert_eq!(g.max_event_ts(), Some(i64::MIN));
        assert_eq!(g.current(), None);

        // Horizon arithmetic saturates in both directions.
        let config = cfg(WatermarkStrategy::Ascending, Some(i64::MAX), Some(i64::MAX));
        let mut g = WatermarkGenerator::new(config, i64::MIN);
        assert_eq!(g.horizon(i64::MAX), Some(i64::MAX));
        assert_eq!(g.on_batch(i64::MAX, None, i64::MAX), Some(i64::MAX));
        let config = cfg(WatermarkStrategy::Ascending, Some(i64::MIN), Some(1));
        let mut g = WatermarkGenerator::new(config, i64::MAX);
        assert_eq!(g.horizon(i64::MIN), Some(i64::MIN));
        assert_eq!(g.on_batch(i64::MIN, None, i64::MIN), None);
        assert_eq!(g.current(), None);
        // Idle arithmetic saturates: last data at MIN, now at MAX.
        assert!(g.check_idle(i64::MAX));

        let config = cfg(WatermarkStrategy::Ascending, Some(10), Some(i64::MAX));
        let mut g = WatermarkGenerator::new(config, i64::MAX);
        assert!(!g.check_idle(i64::MIN));
        assert_eq!(g.on_batch(i64::MAX, None, i64::MAX), Some(i64::MAX));
    }

    #[test]
    fn config_round_trips() {
        let c = cfg(WatermarkStrategy::Punctuated, Some(1), Some(2));
        let g = WatermarkGenerator::new(c.clone(), 0);
        assert_eq!(g.config(), &c);
        assert_eq!(
            GeneratorConfig::new(WatermarkStrategy::Ascending),
            cfg(WatermarkStrategy::Ascending, None, None)
        );
    }

    // ---- property test against a straightforward model (exact i128 arithmetic) ----

    #[derive(Debug, Clone)]
    enum Op {
        Batch {
            ts: i64,
            punct: Option<i64>,
            now: i64,
        },
        CheckIdle {
            now: i64,
        },
    }

    #[derive(Debug, Default)]
    struct Model {
        events: Vec<i64>,
        puncts: Vec<i64>,
        wm: Option<i64>,
        last: i64,
        idle: bool,
    }

    fn clamp(v: i128) -> i64 {
        v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    impl Model {
        fn batch(
            &mut self,
            c: &GeneratorConfig,
            ts: i64,
            punct: Option<i64>,
            now: i64,
        ) -> Option<i64> {
            self.last = now;
            self.idle = false;
            self.events.push(ts);
            self.puncts.extend(punct);
            let raw = match c.strategy {
                WatermarkStrategy::BoundedDelay { delay_ms } => self
                    .events
                    .iter()
                    .max()
                    .map(|&m| clamp(m as i128 - (delay_ms.max(0) as i128))),
                WatermarkStrategy::Ascending => self.events.iter().max().copied(),
                WatermarkStrategy::Punctuated => self.puncts.iter().max().copied(),
            };
            let cand = raw?;
            // i64::MIN asserts nothing: it is "no watermark".
            if cand != i64::MIN && self.wm.is_none_or(|w| cand > w) {
                self.wm = Some(cand);
                Some(cand)
            } else {
                None
            }
        }

        fn check_idle(&mut self, c: &GeneratorConfig, now: i64) -> bool {
            match c.idle_timeout_ms {
                Some(t) if !self.idle && (now as i128 - self.last as i128) >= t.max(0) as i128 => {
                    self.idle = true;
                    true
                }
                _ => false,
            }
        }
    }

    fn ts() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => -1_000i64..1_000,
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
            1 => any::<i64>(),
        ]
    }

    fn strategy() -> impl Strategy<Value = WatermarkStrategy> {
        prop_oneof![
            ts().prop_map(|delay_ms| WatermarkStrategy::BoundedDelay { delay_ms }),
            (0i64..100).prop_map(|delay_ms| WatermarkStrategy::BoundedDelay { delay_ms }),
            Just(WatermarkStrategy::Ascending),
            Just(WatermarkStrategy::Punctuated),
        ]
    }

    fn config() -> impl Strategy<Value = GeneratorConfig> {
        (
            strategy(),
            proptest::option::of(ts()),
            proptest::option::of(ts()),
        )
            .prop_map(
                |(strategy, max_future_ms, idle_timeout_ms)| GeneratorConfig {
                    strategy,
                    max_future_ms,
                    idle_timeout_ms,
                },
            )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (ts(), proptest::option::of(ts()), ts())
                .prop_map(|(ts, punct, now)| Op::Batch { ts, punct, now }),
            1 => ts().prop_map(|now| Op::CheckIdle { now }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn generator_matches_model(
            c in config(),
            created in ts(),
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let mut g = WatermarkGenerator::new(c.clone(), created);
            let mut m = Model { last: created, ..Model::default() };
            let mut prev = g.current();
            for op in ops {
                match op {
                    Op::Batch { ts, punct, now } => {
                        let got = g.on_batch(ts, punct, now);
                        let want = m.batch(&c, ts, punct, now);
                        prop_assert_eq!(got, want);
                        prop_assert_eq!(got.is_some(), g.current() != prev);
                    }
                    Op::CheckIdle { now } => {
                        prop_assert_eq!(g.check_idle(now), m.check_idle(&c, now));
                        prop_assert_eq!(g.current(), prev, "idle checks never move the watermark");
                    }
                }
                let cur = g.current();
                prop_assert!(cur >= prev, "watermark moved backwards: {:?} -> {:?}", prev, cur);
                prop_assert_eq!(cur, m.wm);
                prop_assert_eq!(g.is_idle(), m.idle);
                prop_assert_eq!(g.max_event_ts(), m.events.iter().max().copied());
                prev = cur;
            }
        }
    }
}
