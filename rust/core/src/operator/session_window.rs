//! `SessionWindow`: per-key session windows closed by a gap of inactivity.
//!
//! A session is `[first, last + gap)`; a row at `t` joins every session its own interval
//! `[t, t + gap)` overlaps, and when it overlaps several, they merge into one (an
//! out-of-order row can bridge two sessions). Rows are late when `t < watermark - lateness`;
//! no on-time row can then touch a session that has closed (closed sessions end at or
//! before `watermark - lateness`), so a session's result never depends on how the input was
//! split into batches.
//!
//! Layout: a key table maps each key to a dense key id, each key id owns a short list of
//! open sessions sorted by start, and each session owns a group id into the accumulators.
//! Per batch: late rows are split off (vectorised), key ids are assigned (one probe per row),
//! one pass assigns each row to a session (merging where rows bridge), then merged sessions'
//! accumulators are folded together and every aggregate folds the batch in one typed loop.
//!
//! Timers: a session arms one close timer (and, for `on_window_close` with lateness, one fire
//! timer) when it starts; growth does not re-arm. When a timer fires for a session that has
//! since grown, it re-arms at the new deadline. Closing sessions are gathered and emitted as
//! one batch per watermark.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::RecordBatch;
use arrow_buffer::BooleanBuffer;
use arrow_schema::SchemaRef;

use super::aggregate::{Accumulator, AccumulatorState};
use super::emit::{EmitSpec, PeriodicClock, ResultLayout};
use super::group_keys::{GroupIds, GroupIdsState, GroupKeys, GroupKeysState};
use super::snapshot::{decode, encode};
use super::window::MAX_SPAN_MS;
use super::window_aggregate::{Aggregates, Bound, WindowConfig};
use super::{metrics_from_array, metrics_to_array, Operator, OperatorContext, OperatorMetrics};
use crate::error::{Error, Result};
use crate::time::Timestamp;

const NONE: i64 = i64::MIN;

/// Per-session fields, indexed by session (group) id.
#[derive(Default)]
struct Sessions {
    start: Vec<i64>,
    last: Vec<i64>,
    key: Vec<u32>,
    alive: Vec<bool>,
    /// A row for this session was emitted (changelog: it must be retracted on change).
    emitted: Vec<bool>,
    /// The session fired at its end (on_window_close with lateness).
    fired: Vec<bool>,
    armed_close: Vec<i64>,
    armed_fire: Vec<i64>,
    /// Touched by the batch being processed.
    touched: Vec<bool>,
    dirty: Vec<bool>,
    /// Merged into another session during this batch.
    redirect: Vec<u32>,
}

impl Sessions {
    fn grow(&mut self, g: u32) {
        let n = g as usize + 1;
        if self.start.len() < n {
            self.start.resize(n, 0);
            self.last.resize(n, 0);
            self.key.resize(n, 0);
            self.alive.resize(n, false);
            self.emitted.resize(n, false);
            self.fired.resize(n, false);
            self.armed_close.resize(n, NONE);
            self.armed_fire.resize(n, NONE);
            self.touched.resize(n, false);
            self.dirty.resize(n, false);
            self.redirect.resize(n, u32::MAX);
        }
    }

    fn find(&mut self, mut g: u32) -> u32 {
        while self.redirect[g as usize] != u32::MAX {
            g = self.redirect[g as usize];
        }
        g
    }
}

/// The checkpoint form of a [`SessionWindow`]: everything it keeps between batches. The
/// per-session vectors are indexed by session id and saved whole (ids that are free hold
/// values that are never read); the per-batch flags (`touched`, `redirect`) are clear between
/// batches and are not saved, nor are the timers (the query saves those).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SessionWindowState {
    key_ids: GroupIdsState,
    keys: GroupKeysState,
    /// Open sessions of each key id, sorted by start.
    lists: Vec<Vec<u32>>,
    ids: GroupIdsState,
    aggs: Vec<AccumulatorState>,
    start: Vec<i64>,
    last: Vec<i64>,
    key: Vec<u32>,
    alive: Vec<bool>,
    emitted: Vec<bool>,
    fired: Vec<bool>,
    armed_close: Vec<i64>,
    armed_fire: Vec<i64>,
    dirty: Vec<bool>,
    metrics: [u64; 7],
    seq: u64,
    dirty_list: Vec<u32>,
    periodic_last: Option<i64>,
}

/// A restore error about damaged or foreign session state.
fn foreign(what: &str) -> Error {
    Error::Snapshot(format!(
        "session_window: {what} (was the pipeline changed?)"
    ))
}

/// Session-window grouped aggregation.
pub struct SessionWindow {
    gap: i64,
    config: WindowConfig,
    time_index: usize,
    keys: GroupKeys,
    key_ids: GroupIds,
    lists: Vec<Vec<u32>>,
    aggs: Aggregates,
    ids: GroupIds,
    s: Sessions,
    layout: ResultLayout,
    metrics: OperatorMetrics,
    seq: u64,
    /// Sessions whose timers found them due, emitted and released on the next watermark.
    closing: Vec<u32>,
    firing: Vec<u32>,
    dirty_list: Vec<u32>,
    periodic: PeriodicClock,
    // Scratch reused across batches.
    zeros: Vec<i64>,
    kids: Vec<u32>,
    created: Vec<u32>,
    groups: Vec<u32>,
    touched: Vec<u32>,
    merges: Vec<(u32, u32)>,
    /// (session, start, end) of emitted sessions as they were before this batch changed them.
    before: Vec<(u32, i64, i64)>,
}

impl SessionWindow {
    /// Builds the operator: sessions of one key end after `gap_ms` without rows.
    pub fn new(gap_ms: i64, config: WindowConfig) -> Result<Self> {
        if gap_ms <= 0 || gap_ms > MAX_SPAN_MS {
            return Err(Error::InvalidPlan(format!(
                "a session gap must be between 1 ms and 100 years, got {gap_ms} ms"
            )));
        }
        let Bound {
            time_index,
            keys,
            aggs,
            layout,
        } = config.bind()?;
        Ok(SessionWindow {
            gap: gap_ms,
            config,
            time_index,
            keys,
            key_ids: GroupIds::default(),
            lists: Vec::new(),
            aggs,
            ids: GroupIds::default(),
            s: Sessions::default(),
            layout,
            metrics: OperatorMetrics::default(),
            seq: 0,
            closing: Vec::new(),
            firing: Vec::new(),
            dirty_list: Vec::new(),
            periodic: PeriodicClock::default(),
            zeros: Vec::new(),
            kids: Vec::new(),
            created: Vec::new(),
            groups: Vec::new(),
            touched: Vec::new(),
            merges: Vec::new(),
            before: Vec::new(),
        })
    }

    fn lateness(&self) -> i64 {
        self.config.lateness_ms
    }

    fn end(&self, g: u32) -> i64 {
        self.s.last[g as usize].saturating_add(self.gap)
    }

    fn close_deadline(&self, g: u32) -> i64 {
        self.end(g).saturating_add(self.lateness())
    }

    /// A new session for key `kid` holding `t`.
    fn open(&mut self, kid: u32, t: i64, pos: usize, ctx: &mut OperatorContext<'_>) -> Result<u32> {
        let g = self.ids.allocate(0)?;
        self.s.grow(g);
        let gi = g as usize;
        self.s.start[gi] = t;
        self.s.last[gi] = t;
        self.s.key[gi] = kid;
        self.s.alive[gi] = true;
        self.s.emitted[gi] = false;
        self.s.fired[gi] = false;
        self.s.redirect[gi] = u32::MAX;
        self.aggs.reset(g);
        let close = self.close_deadline(g);
        self.s.armed_close[gi] = close;
        ctx.register_timer(close, g as i64);
        self.s.armed_fire[gi] = NONE;
        if self.config.emit.fires_at_end(self.lateness()) {
            let fire = self.end(g);
            if ctx.watermark().is_some_and(|w| fire <= w) {
                // Already past its end: it counts as fired; rows are emitted after the batch.
                self.s.fired[gi] = true;
            } else {
                self.s.armed_fire[gi] = fire;
                ctx.register_timer(fire, g as i64);
            }
        }
        self.lists[kid as usize].insert(pos, g);
        Ok(g)
    }

    /// Notes that session `g` changes in this batch (remembering its emitted bounds once).
    fn touch(&mut self, g: u32) {
        let gi = g as usize;
        if !std::mem::replace(&mut self.s.touched[gi], true) {
            self.touched.push(g);
            if self.s.emitted[gi] {
                self.before.push((g, self.s.start[gi], self.end(g)));
            }
        }
    }

    /// Assigns row time `t` of key `kid` to its session, merging sessions it bridges.
    fn assign(&mut self, kid: u32, t: i64, ctx: &mut OperatorContext<'_>) -> Result<u32> {
        let gap = self.gap;
        let list = &self.lists[kid as usize];
        // Sessions are sorted by start and disjoint: the ones overlapping [t, t + gap) are a
        // contiguous run.
        let mut lo = list.len();
        let mut hi = list.len();
        for (j, &g) in list.iter().enumerate().rev() {
            let gi = g as usize;
            let (start, end) = (self.s.start[gi], self.s.last[gi].saturating_add(gap));
            if start >= t.saturating_add(gap) {
                hi = j;
                lo = j;
                continue;
            }
            if end > t {
                lo = j;
            } else {
                break;
            }
        }
        if lo == hi {
            let g = self.open(kid, t, lo, ctx)?;
            self.touch(g);
            return Ok(g);
        }
        let target = self.lists[kid as usize][lo];
        self.touch(target);
        let ti = target as usize;
        self.s.start[ti] = self.s.start[ti].min(t);
        self.s.last[ti] = self.s.last[ti].max(t);
        for _ in lo + 1..hi {
            let other = self.lists[kid as usize].remove(lo + 1);
            self.touch(other);
            let oi = other as usize;
            self.s.start[ti] = self.s.start[ti].min(self.s.start[oi]);
            self.s.last[ti] = self.s.last[ti].max(self.s.last[oi]);
            self.s.alive[oi] = false;
            self.s.redirect[oi] = target;
            self.merges.push((target, other));
        }
        Ok(target)
    }

    fn emit_sessions(
        &self,
        gs: &[u32],
        weight: Option<i64>,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        if gs.is_empty() {
            return Ok(());
        }
        let starts = gs.iter().map(|&g| self.s.start[g as usize]).collect();
        let ends = gs.iter().map(|&g| self.end(g)).collect();
        let kids: Vec<u32> = gs.iter().map(|&g| self.s.key[g as usize]).collect();
        let keys = self.keys.finish(&kids)?;
        let aggs = self.aggs.finish(gs)?;
        ctx.emit(self.layout.build(starts, ends, keys, aggs, weight)?);
        Ok(())
    }

    /// Retractions of the rows emitted before this batch for the sessions it changed.
    fn emit_retractions(&self, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if self.before.is_empty() {
            return Ok(());
        }
        let gs: Vec<u32> = self.before.iter().map(|b| b.0).collect();
        let starts = self.before.iter().map(|b| b.1).collect();
        let ends = self.before.iter().map(|b| b.2).collect();
        let kids: Vec<u32> = gs.iter().map(|&g| self.s.key[g as usize]).collect();
        let keys = self.keys.finish(&kids)?;
        let aggs = self.aggs.finish(&gs)?;
        ctx.emit(self.layout.build(starts, ends, keys, aggs, Some(-1))?);
        Ok(())
    }

    /// Releases session `g` (closed or merged away).
    fn release(&mut self, g: u32) {
        let gi = g as usize;
        self.s.alive[gi] = false;
        self.s.dirty[gi] = false;
        self.s.redirect[gi] = u32::MAX;
        self.ids.release(g);
    }

    /// Removes closed session `g` from its key's list, releasing the key when it has none.
    fn close(&mut self, g: u32) {
        let kid = self.s.key[g as usize];
        let list = &mut self.lists[kid as usize];
        if let Some(pos) = list.iter().position(|&x| x == g) {
            list.remove(pos);
        }
        if list.is_empty() {
            self.keys.remove(kid, &self.key_ids);
            self.key_ids.release(kid);
        }
        self.release(g);
    }

    /// The state to checkpoint (see [`SessionWindowState`]).
    fn save(&self) -> SessionWindowState {
        // Sessions found due by timers are closed by the watermark that fired them, within
        // the same message: nothing is pending between messages.
        debug_assert!(self.closing.is_empty() && self.firing.is_empty());
        let s = &self.s;
        SessionWindowState {
            key_ids: self.key_ids.save(),
            keys: self.keys.save(),
            lists: self.lists.clone(),
            ids: self.ids.save(),
            aggs: self.aggs.list.iter().map(Accumulator::save).collect(),
            start: s.start.clone(),
            last: s.last.clone(),
            key: s.key.clone(),
            alive: s.alive.clone(),
            emitted: s.emitted.clone(),
            fired: s.fired.clone(),
            armed_close: s.armed_close.clone(),
            armed_fire: s.armed_fire.clone(),
            dirty: s.dirty.clone(),
            metrics: metrics_to_array(&self.metrics),
            seq: self.seq,
            dirty_list: self.dirty_list.clone(),
            periodic_last: self.periodic.last(),
        }
    }

    /// Puts back `st` after checking that it is consistent: every live session has its
    /// fields, belongs to a live key and is listed exactly once, in its key's list.
    fn load(&mut self, st: SessionWindowState) -> Result<()> {
        if st.aggs.len() != self.aggs.list.len() {
            return Err(foreign(&format!(
                "the checkpoint has {} aggregates, the query {}",
                st.aggs.len(),
                self.aggs.list.len()
            )));
        }
        let n = st.start.len();
        let lens = [
            st.last.len(),
            st.key.len(),
            st.alive.len(),
            st.emitted.len(),
            st.fired.len(),
            st.armed_close.len(),
            st.armed_fire.len(),
            st.dirty.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(foreign("per-session vectors of different lengths"));
        }
        let key_ids = GroupIds::load(st.key_ids)?;
        let mut keys = self.keys_like()?;
        keys.load(st.keys, &key_ids)?;
        let ids = GroupIds::load(st.ids)?;
        let mut live = vec![false; n];
        for g in ids.live_ids() {
            match live.get_mut(g as usize) {
                Some(l) => *l = true,
                None => return Err(foreign("a session id has no session fields")),
            }
        }
        if live != st.alive {
            return Err(foreign("the live sessions disagree with the session ids"));
        }
        let mut key_live = vec![false; st.lists.len()];
        for k in key_ids.live_ids() {
            match key_live.get_mut(k as usize) {
                Some(l) => *l = true,
                None => return Err(foreign("a key has no session list")),
            }
        }
        // Every live session is listed once, in the list of its key, in start order.
        let mut listed = vec![false; n];
        for (kid, list) in st.lists.iter().enumerate() {
            if !key_live[kid] && !list.is_empty() {
                return Err(foreign("a released key still has sessions"));
            }
            let mut prev = i64::MIN;
            for &g in list {
                let gi = g as usize;
                let ok = gi < n
                    && st.alive[gi]
                    && st.key[gi] as usize == kid
                    && !std::mem::replace(&mut listed[gi], true)
                    && st.start[gi] >= prev;
                if !ok {
                    return Err(foreign("a key's session list is inconsistent"));
                }
                prev = st.start[gi];
            }
        }
        if listed != st.alive {
            return Err(foreign("a live session is in no key's list"));
        }
        if st.dirty_list.iter().any(|&g| g as usize >= n) {
            return Err(foreign("a session id is out of range"));
        }
        for (acc, saved) in self.aggs.list.iter_mut().zip(st.aggs) {
            acc.load(saved)?;
            if acc.slots() < n {
                return Err(foreign(&format!(
                    "aggregate '{}' has fewer slots than sessions",
                    acc.field().name()
                )));
            }
        }
        self.keys = keys;
        self.key_ids = key_ids;
        self.lists = st.lists;
        self.ids = ids;
        self.s = Sessions {
            start: st.start,
            last: st.last,
            key: st.key,
            alive: st.alive,
            emitted: st.emitted,
            fired: st.fired,
            armed_close: st.armed_close,
            armed_fire: st.armed_fire,
            touched: vec![false; n],
            dirty: st.dirty,
            redirect: vec![u32::MAX; n],
        };
        self.metrics = metrics_from_array(st.metrics);
        self.seq = st.seq;
        self.closing.clear();
        self.firing.clear();
        self.dirty_list = st.dirty_list;
        self.periodic = PeriodicClock::at(st.periodic_last);
        Ok(())
    }

    /// An empty key table of this query's layout.
    fn keys_like(&self) -> Result<GroupKeys> {
        GroupKeys::new(&self.config.keys, &self.config.input)
    }
}

impl Operator for SessionWindow {
    fn name(&self) -> &'static str {
        "session_window"
    }

    fn output_schema(&self) -> SchemaRef {
        self.layout.schema().clone()
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        encode(&self.save())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let st: SessionWindowState = decode(state, self.name())?;
        self.load(st)
    }

    fn watermark_delay(&self) -> i64 {
        self.lateness()
    }

    fn append_only(&self) -> bool {
        self.config.emit.append_only(self.lateness())
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if input.num_rows() == 0 {
            return Ok(());
        }
        let mut on_time = None;
        if let Some(wm) = ctx.watermark() {
            let cutoff = wm.saturating_sub(self.lateness());
            let times = input
                .column(self.time_index)
                .as_primitive::<Int64Type>()
                .values();
            let (min, _) = crate::time::convert::min_max(times);
            if min < cutoff {
                let late = BooleanBuffer::collect_bool(times.len(), |i| times[i] < cutoff);
                on_time = Some(
                    self.config
                        .route_late(input, &late, &mut self.metrics, ctx)?,
                );
            }
        }
        let batch = on_time.as_ref().unwrap_or(input);
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        self.zeros.resize(n, 0);
        self.zeros.truncate(n);
        self.created.clear();
        self.keys.assign(
            batch,
            &self.zeros,
            &mut self.key_ids,
            &mut self.kids,
            &mut self.created,
        )?;
        for &kid in &self.created {
            if self.lists.len() <= kid as usize {
                self.lists.resize_with(kid as usize + 1, Vec::new);
            }
            self.lists[kid as usize].clear();
        }
        let times = batch
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values()
            .clone();
        let kids = std::mem::take(&mut self.kids);
        self.groups.clear();
        self.touched.clear();
        self.merges.clear();
        self.before.clear();
        let mut result = Ok(());
        for (i, &kid) in kids.iter().enumerate() {
            match self.assign(kid, times[i], ctx) {
                Ok(g) => self.groups.push(g),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.kids = kids;
        result?;
        let emit = self.config.emit;
        if emit == EmitSpec::Changelog {
            self.emit_retractions(ctx)?;
        }
        // Fold merged-away sessions into their targets, in merge order, then point this
        // batch's rows at the surviving sessions.
        if !self.merges.is_empty() {
            let merges = std::mem::take(&mut self.merges);
            self.aggs.merge_within(&merges)?;
            for k in 0..self.groups.len() {
                let g = self.groups[k];
                self.groups[k] = self.s.find(g);
            }
            for &(_, other) in &merges {
                self.release(other);
            }
            self.merges = merges;
        }
        self.aggs.update(&self.groups, batch, self.seq)?;
        self.seq += n as u64;
        let touched = std::mem::take(&mut self.touched);
        let live: Vec<u32> = touched
            .iter()
            .copied()
            .filter(|&g| {
                self.s.touched[g as usize] = false;
                self.s.alive[g as usize]
            })
            .collect();
        match emit {
            EmitSpec::Changelog => {
                self.emit_sessions(&live, Some(1), ctx)?;
                for &g in &live {
                    self.s.emitted[g as usize] = true;
                }
            }
            EmitSpec::OnUpdate => self.emit_sessions(&live, None, ctx)?,
            EmitSpec::OnWindowClose if emit.fires_at_end(self.lateness()) => {
                let fired: Vec<u32> = live
                    .iter()
                    .copied()
                    .filter(|&g| self.s.fired[g as usize])
                    .collect();
                self.emit_sessions(&fired, None, ctx)?;
            }
            EmitSpec::Periodic { .. } => {
                for &g in &live {
                    if !std::mem::replace(&mut self.s.dirty[g as usize], true) {
                        self.dirty_list.push(g);
                    }
                }
            }
            _ => {}
        }
        self.touched = touched;
        Ok(())
    }

    fn on_timer(
        &mut self,
        deadline: Timestamp,
        key: i64,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let g = key as u32;
        let gi = g as usize;
        if gi >= self.s.alive.len() || !self.s.alive[gi] {
            return Ok(());
        }
        let wm = ctx.watermark().unwrap_or(Timestamp::MIN);
        if deadline == self.s.armed_close[gi] {
            let close = self.close_deadline(g);
            if close <= wm {
                self.s.armed_close[gi] = NONE;
                self.closing.push(g);
            } else {
                self.s.armed_close[gi] = close;
                ctx.register_timer(close, key);
            }
        } else if deadline == self.s.armed_fire[gi] && !self.s.fired[gi] {
            let fire = self.end(g);
            if fire <= wm {
                self.s.fired[gi] = true;
                self.firing.push(g);
            } else {
                self.s.armed_fire[gi] = fire;
                ctx.register_timer(fire, key);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, _wm: Timestamp, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if !self.firing.is_empty() {
            let firing = std::mem::take(&mut self.firing);
            let live: Vec<u32> = firing
                .iter()
                .copied()
                .filter(|&g| self.s.alive[g as usize])
                .collect();
            self.emit_sessions(&live, None, ctx)?;
            self.firing = firing;
            self.firing.clear();
        }
        if !self.closing.is_empty() {
            let closing = std::mem::take(&mut self.closing);
            if self.config.emit.emits_at_close(self.lateness()) {
                self.emit_sessions(&closing, None, ctx)?;
            }
            for &g in &closing {
                self.close(g);
            }
            self.closing = closing;
            self.closing.clear();
        }
        Ok(())
    }

    fn uses_processing_time(&self) -> bool {
        matches!(self.config.emit, EmitSpec::Periodic { .. })
    }

    fn on_processing_time(&mut self, now: Timestamp, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if !self.periodic.due(self.config.emit, now) {
            return Ok(());
        }
        let list = std::mem::take(&mut self.dirty_list);
        let live: Vec<u32> = list
            .iter()
            .copied()
            .filter(|&g| std::mem::take(&mut self.s.dirty[g as usize]) && self.s.alive[g as usize])
            .collect();
        self.emit_sessions(&live, None, ctx)?;
        self.dirty_list = list;
        self.dirty_list.clear();
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            open_windows: self.ids.live() as u64,
            live_groups: self.ids.live() as u64,
            peak_groups: self.ids.peak() as u64,
            ..self.metrics
        }
    }
}
