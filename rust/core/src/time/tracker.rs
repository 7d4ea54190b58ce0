//! Combination of the watermarks of several inputs into one.
//!
//! This module owns [`WatermarkTracker`]: the per-query state that merges the watermarks of
//! its inputs (sources, or upstream partitions) into the single watermark that drives
//! event-time operators downstream.
//!
//! Rules:
//! - Each input's watermark only moves forward; lower reports are ignored.
//! - The combined watermark is the minimum over the *active* (non-idle) inputs; an active
//!   input without a watermark yet holds the combined watermark at `None`.
//! - An idle input stops holding the combined watermark back, but idleness alone never
//!   advances it: while every input that has not finished is idle, the combined watermark
//!   stays where it is (no live input vouches for any progress).
//! - A finished input (end of input) behaves as watermark `i64::MAX` and is never idle. When
//!   every input has finished, the combined watermark becomes `i64::MAX`.
//! - The combined watermark never decreases, even when an idle input comes back behind it
//!   (its rows below the combined watermark are late; that is the accepted cost of idleness).
//!
//! What it must never do: read a clock (wall-clock time reaches it only as explicit
//! [`mark_idle`](WatermarkTracker::mark_idle) calls), move backwards, or panic: an input index
//! out of range is ignored (queries return `None` / `false`, updates do nothing and return
//! `None`). `i64::MIN` means "no watermark"; reporting it is the same as reporting nothing.

use super::Timestamp;

/// Internal representation of "no watermark yet".
const NO_WATERMARK: Timestamp = Timestamp::MIN;

fn to_option(wm: Timestamp) -> Option<Timestamp> {
    if wm == NO_WATERMARK {
        None
    } else {
        Some(wm)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InputState {
    /// Highest watermark reported; `NO_WATERMARK` if none; `i64::MAX` once finished.
    watermark: Timestamp,
    idle: bool,
    finished: bool,
}

/// Combines the watermarks of several inputs (sources) of one query into one.
///
/// Index-based: inputs are `0..inputs` as given to [`new`](Self::new). Every method tolerates
/// an out-of-range index by ignoring it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkTracker {
    inputs: Vec<InputState>,
    combined: Timestamp,
}

impl WatermarkTracker {
    /// Creates a tracker for `inputs` inputs; every input starts active with no watermark.
    /// With `0` inputs the combined watermark stays `None` forever.
    pub fn new(inputs: usize) -> Self {
        WatermarkTracker {
            inputs: vec![
                InputState {
                    watermark: NO_WATERMARK,
                    idle: false,
                    finished: false,
                };
                inputs
            ],
            combined: NO_WATERMARK,
        }
    }

    /// Number of inputs.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// The combined watermark, or `None` if none yet. Never decreases.
    pub fn current(&self) -> Option<Timestamp> {
        to_option(self.combined)
    }

    /// Input `input` reports watermark `wm`; values lower than its previous one are ignored
    /// (as is anything reported after [`finish`](Self::finish)). Marks the input active.
    /// Returns `Some(new combined)` only if the combined watermark advanced. Out-of-range
    /// `input`: nothing happens, returns `None`.
    pub fn update(&mut self, input: usize, wm: Timestamp) -> Option<Timestamp> {
        let state = self.inputs.get_mut(input)?;
        state.watermark = state.watermark.max(wm);
        state.idle = false;
        self.recompute()
    }

    /// Input `input` became idle: it stops holding the combined watermark back. Returns
    /// `Some(new combined)` if that advanced it. No effect on a finished input or an
    /// out-of-range index (returns `None`).
    pub fn mark_idle(&mut self, input: usize) -> Option<Timestamp> {
        let state = self.inputs.get_mut(input)?;
        if state.finished {
            return None;
        }
        state.idle = true;
        self.recompute()
    }

    /// Input `input` has data again: it is active again and holds the combined watermark back
    /// from now on (the combined watermark still never moves back).
    ///
    /// Returns `Some(new combined)` if the combined watermark advanced. That can happen only
    /// when every unfinished input was idle (so the combined watermark was frozen) and this
    /// input's own watermark is ahead of it. Out-of-range `input`: nothing, returns `None`.
    pub fn mark_active(&mut self, input: usize) -> Option<Timestamp> {
        let state = self.inputs.get_mut(input)?;
        state.idle = false;
        self.recompute()
    }

    /// Input `input` ended (end of input): it behaves as watermark `i64::MAX` from now on and
    /// is never idle again. Returns `Some(new combined)` if the combined watermark advanced.
    /// Out-of-range `input`: nothing happens, returns `None`.
    pub fn finish(&mut self, input: usize) -> Option<Timestamp> {
        let state = self.inputs.get_mut(input)?;
        state.watermark = Timestamp::MAX;
        state.idle = false;
        state.finished = true;
        self.recompute()
    }

    /// The watermark last reported by `input` (its maximum), `Some(i64::MAX)` once finished;
    /// `None` if it has none yet or `input` is out of range.
    pub fn input_watermark(&self, input: usize) -> Option<Timestamp> {
        self.inputs.get(input).and_then(|s| to_option(s.watermark))
    }

    /// Whether `input` is currently idle (`false` if out of range or finished).
    pub fn is_idle(&self, input: usize) -> bool {
        self.inputs.get(input).is_some_and(|s| s.idle)
    }

    /// Whether `input` has finished (`false` if out of range).
    pub fn is_finished(&self, input: usize) -> bool {
        self.inputs.get(input).is_some_and(|s| s.finished)
    }

    /// `(watermark, idle, finished)` per input and the combined watermark: what a checkpoint
    /// saves (watermarks as raw values, `i64::MIN` meaning none).
    pub fn save(&self) -> (Vec<(Timestamp, bool, bool)>, Timestamp) {
        let inputs = self
            .inputs
            .iter()
            .map(|s| (s.watermark, s.idle, s.finished))
            .collect();
        (inputs, self.combined)
    }

    /// A tracker as saved by [`save`](Self::save); `None` if the number of inputs differs
    /// from `expected`.
    pub fn restored(
        inputs: &[(Timestamp, bool, bool)],
        combined: Timestamp,
        expected: usize,
    ) -> Option<Self> {
        (inputs.len() == expected).then(|| WatermarkTracker {
            inputs: inputs
                .iter()
                .map(|&(watermark, idle, finished)| InputState {
                    watermark,
                    idle,
                    finished,
                })
                .collect(),
            combined,
        })
    }

    /// Recomputes the combined watermark after a state change; returns it if it advanced.
    fn recompute(&mut self) -> Option<Timestamp> {
        let mut live_active = false;
        let mut all_finished = true;
        let mut min_active = Timestamp::MAX;
        for s in &self.inputs {
            all_finished &= s.finished;
            if !s.idle {
                live_active |= !s.finished;
                min_active = min_active.min(s.watermark);
            }
        }
        let candidate = if self.inputs.is_empty() {
            return None;
        } else if all_finished {
            Timestamp::MAX
        } else if live_active {
            min_active
        } else {
            // Every unfinished input is idle: nothing vouches for progress; stay put.
            return None;
        };
        if candidate > self.combined {
            self.combined = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_active_without_watermark() {
        let t = WatermarkTracker::new(2);
        assert_eq!(t.num_inputs(), 2);
        assert_eq!(t.current(), None);
        assert_eq!(t.input_watermark(0), None);
        assert!(!t.is_idle(0));
        assert!(!t.is_finished(1));
    }

    #[test]
    fn combined_is_min_of_inputs() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, 100), None, "input 1 has no watermark yet");
        assert_eq!(t.current(), None);
        assert_eq!(t.update(1, 50), Some(50));
        assert_eq!(t.update(1, 150), Some(100));
        assert_eq!(t.update(0, 120), Some(120));
        assert_eq!(t.update(0, 130), Some(130));
        assert_eq!(t.update(0, 200), Some(150));
        assert_eq!(t.current(), Some(150));
    }

    #[test]
    fn backwards_values_ignored() {
        let mut t = WatermarkTracker::new(1);
        assert_eq!(t.update(0, 100), Some(100));
        assert_eq!(t.update(0, 90), None);
        assert_eq!(t.input_watermark(0), Some(100));
        assert_eq!(t.current(), Some(100));
        assert_eq!(t.update(0, 100), None);
    }

    #[test]
    fn idle_input_stops_holding_back() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 100);
        assert_eq!(t.current(), None);
        assert_eq!(t.mark_idle(1), Some(100));
        assert!(t.is_idle(1));
        assert_eq!(t.update(0, 200), Some(200));
        // Input 1 comes back behind: the combined watermark does not move back.
        assert_eq!(t.mark_active(1), None);
        assert!(!t.is_idle(1));
        assert_eq!(t.current(), Some(200));
        assert_eq!(
            t.update(0, 300),
            None,
            "input 1 (no watermark) holds it again"
        );
        assert_eq!(t.update(1, 150), None);
        assert_eq!(t.update(1, 250), Some(250));
    }

    #[test]
    fn update_marks_active() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 10);
        t.update(1, 10);
        t.mark_idle(1);
        assert_eq!(t.update(1, 5), None);
        assert!(!t.is_idle(1));
        assert_eq!(
            t.update(0, 50),
            None,
            "input 1 is active again and holds it at 10"
        );
        assert_eq!(t.current(), Some(10));
    }

    #[test]
    fn all_idle_does_not_advance() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 100);
        t.update(1, 50);
        assert_eq!(t.current(), Some(50));
        assert_eq!(t.mark_idle(0), None);
        assert_eq!(t.mark_idle(1), None, "all idle: stays at 50");
        assert_eq!(t.current(), Some(50));
        // An idle input's reported watermark marks it active again.
        assert_eq!(t.update(0, 120), Some(120));
        assert!(!t.is_idle(0));
    }

    #[test]
    fn mark_active_can_release_frozen_watermark() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 100);
        t.mark_idle(0);
        t.mark_idle(1);
        assert_eq!(t.current(), None);
        assert_eq!(t.mark_active(0), Some(100));
        assert_eq!(t.mark_active(1), None);
        assert_eq!(t.current(), Some(100));
    }

    #[test]
    fn mark_idle_twice_is_harmless() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 7);
        assert_eq!(t.mark_idle(1), Some(7));
        assert_eq!(t.mark_idle(1), None);
        assert!(t.is_idle(1));
    }

    #[test]
    fn finish_behaves_as_max() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 10);
        assert_eq!(t.finish(1), Some(10));
        assert!(t.is_finished(1));
        assert_eq!(t.input_watermark(1), Some(i64::MAX));
        assert_eq!(t.update(1, 5), None, "updates after finish are ignored");
        assert_eq!(t.input_watermark(1), Some(i64::MAX));
        assert_eq!(t.update(0, 20), Some(20));
        assert_eq!(t.finish(0), Some(i64::MAX));
        assert_eq!(t.current(), Some(i64::MAX));
        assert_eq!(t.finish(0), None);
    }

    #[test]
    fn finished_input_is_never_idle() {
        let mut t = WatermarkTracker::new(2);
        t.finish(0);
        assert_eq!(t.mark_idle(0), None);
        assert!(!t.is_idle(0));
        assert!(t.is_finished(0));
        assert_eq!(t.mark_active(0), None);
    }

    #[test]
    fn finished_plus_all_idle_does_not_jump_to_max() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 30);
        t.update(1, 40);
        assert_eq!(t.finish(0), Some(40));
        assert_eq!(
            t.mark_idle(1),
            None,
            "the only live input is idle: stay at 40"
        );
        assert_eq!(t.current(), Some(40));
        assert_eq!(t.update(1, 60), Some(60));
        assert_eq!(t.finish(1), Some(i64::MAX));
    }

    #[test]
    fn finishing_an_idle_input() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, 5);
        t.mark_idle(1);
        assert_eq!(t.current(), Some(5));
        assert_eq!(t.finish(1), None);
        assert!(!t.is_idle(1));
        assert_eq!(t.finish(0), Some(i64::MAX));
    }

    #[test]
    fn out_of_range_is_ignored() {
        let mut t = WatermarkTracker::new(1);
        assert_eq!(t.update(1, 10), None);
        assert_eq!(t.update(usize::MAX, 10), None);
        assert_eq!(t.mark_idle(5), None);
        assert_eq!(t.mark_active(5), None);
        assert_eq!(t.finish(5), None);
        assert_eq!(t.input_watermark(5), None);
        assert!(!t.is_idle(5));
        assert!(!t.is_finished(5));
        assert_eq!(t.current(), None);
        assert_eq!(t, WatermarkTracker::new(1));
    }

    #[test]
    fn zero_inputs_never_advance() {
        let mut t = WatermarkTracker::new(0);
        assert_eq!(t.update(0, 10), None);
        assert_eq!(t.finish(0), None);
        assert_eq!(t.current(), None);
    }

    #[test]
    fn saturating_extremes() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, i64::MIN), None, "MIN is no watermark");
        assert_eq!(t.input_watermark(0), None);
        assert_eq!(t.update(0, i64::MAX), None);
        assert_eq!(t.update(1, i64::MIN + 1), Some(i64::MIN + 1));
        assert_eq!(t.update(1, i64::MAX), Some(i64::MAX));
        assert_eq!(t.current(), Some(i64::MAX));
        assert_eq!(t.finish(0), None);
        assert_eq!(t.finish(1), None);
    }

    // ---- property test against a straightforward model ----

    #[derive(Debug, Clone)]
    enum Op {
        Update(usize, i64),
        MarkIdle(usize),
        MarkActive(usize),
        Finish(usize),
    }

    #[derive(Debug, Clone, Default)]
    struct ModelInput {
        wm: Option<i64>,
        idle: bool,
        finished: bool,
    }

    #[derive(Debug)]
    struct Model {
        inputs: Vec<ModelInput>,
        combined: Option<i64>,
    }

    impl Model {
        /// Applies `op`; returns whether the op touched a valid input.
        fn apply(&mut self, op: &Op) -> bool {
            let n = self.inputs.len();
            let idx = match op {
                Op::Update(i, _) | Op::MarkIdle(i) | Op::MarkActive(i) | Op::Finish(i) => *i,
            };
            if idx >= n {
                return false;
            }
            let s = &mut self.inputs[idx];
            match *op {
                Op::Update(_, v) => {
                    if !s.finished && v != i64::MIN {
                        s.wm = std::cmp::max(s.wm, Some(v));
                    }
                    s.idle = false;
                }
                Op::MarkIdle(_) => {
                    if !s.finished {
                        s.idle = true;
                    }
                }
                Op::MarkActive(_) => s.idle = false,
                Op::Finish(_) => {
                    s.finished = true;
                    s.idle = false;
                    s.wm = Some(i64::MAX);
                }
            }
            true
        }

        /// The combined watermark after the last op: max(previous, min over active inputs),
        /// unless every unfinished input is idle (no change) or all inputs finished (MAX).
        fn expected(&self) -> Option<i64> {
            if self.inputs.is_empty() {
                return self.combined;
            }
            if self.inputs.iter().all(|s| s.finished) {
                return std::cmp::max(self.combined, Some(i64::MAX));
            }
            if self.inputs.iter().all(|s| s.idle || s.finished) {
                return self.combined;
            }
            // `None` sorts below every `Some`, so an active input without a watermark wins.
            let min_active = self
                .inputs
                .iter()
                .filter(|s| !s.idle)
                .map(|s| s.wm)
                .min()
                .flatten();
            std::cmp::max(self.combined, min_active)
        }
    }

    fn wm_value() -> impl Strategy<Value = i64> {
        prop_oneof![
            6 => -50i64..50,
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
            1 => any::<i64>(),
        ]
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        // One index past the end exercises the out-of-range path.
        let idx = 0..=n;
        prop_oneof![
            6 => (idx.clone(), wm_value()).prop_map(|(i, v)| Op::Update(i, v)),
            2 => idx.clone().prop_map(Op::MarkIdle),
            2 => idx.clone().prop_map(Op::MarkActive),
            1 => idx.prop_map(Op::Finish),
        ]
    }

    fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
        (1usize..5).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 0..60)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn tracker_matches_model((n, ops) in scenario()) {
            let mut t = WatermarkTracker::new(n);
            let mut m = Model { inputs: vec![ModelInput::default(); n], combined: None };
            for op in &ops {
                let prev = t.current();
                let got = match *op {
                    Op::Update(i, v) => t.update(i, v),
                    Op::MarkIdle(i) => t.mark_idle(i),
                    Op::MarkActive(i) => t.mark_active(i),
                    Op::Finish(i) => t.finish(i),
                };
                let valid = m.apply(op);
                let want = m.expected();
                let cur = t.current();
                prop_assert!(cur >= prev, "combined moved backwards: {:?} -> {:?}", prev, cur);
                prop_assert_eq!(cur, want, "after {:?}", op);
                let advanced = cur > prev;
                prop_assert_eq!(got, if advanced { cur } else { None });
                if !valid {
                    prop_assert_eq!(got, None);
                }
                m.combined = want;
                for i in 0..=n {
                    let mi = m.inputs.get(i).cloned().unwrap_or_default();
                    prop_assert_eq!(t.input_watermark(i), mi.wm);
                    prop_assert_eq!(t.is_idle(i), mi.idle);
                    prop_assert_eq!(t.is_finished(i), mi.finished);
                }
            }
        }
    }
}
