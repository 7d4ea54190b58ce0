//! `WindowAggregate`: tumbling and sliding windows grouped by key, with every emit strategy.
//!
//! State is kept per *pane* (see [`Panes`]): a group is `(pane start, key)`, each row is
//! folded into exactly one group, and a window's result is the merge of its panes' groups.
//! Tumbling windows have one pane per window, so their results are read straight from the
//! groups with no merge.
//!
//! Per batch, in this order (the order is the correctness argument):
//! 1. Rows are judged late against the watermark *in force when the batch arrives*: a row is
//!    late when every window holding it is closed (`end + allowed_lateness <= watermark`).
//!    Late rows are counted and dropped, or sent to the late side output.
//! 2. Every other row is assigned its pane (vectorised), then its group id (one hash probe),
//!    then every aggregate folds the batch in one typed loop.
//! 3. Per-batch emit strategies (`on_update`, `changelog`, late refires of `on_window_close`)
//!    emit the windows the batch changed; `changelog` first retracts their previous rows,
//!    computed from the state before step 2 folded the batch in.
//! 4. Only after that does the reactor let the batch's own event times move the watermark,
//!    which fires the timers of the windows it closes.
//!
//! A window registers its timers (`end` to fire, `end + allowed_lateness` to close) when its
//! first pane gets a group. When it closes, the panes no later window needs are released, so
//! state is bounded by keys x open panes, never by the number of events.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_schema::{DataType, SchemaRef};
use arrow_select::filter::filter_record_batch;

use super::aggregate::{Accumulator, AccumulatorState, AggSpec};
use super::emit::{EmitSpec, PeriodicClock, ResultLayout};
use super::group_keys::{GroupIds, GroupIdsState, GroupKeys, GroupKeysState};
use super::snapshot::{decode, encode};
use super::window::{Panes, MAX_SPAN_MS};
use super::{metrics_from_array, metrics_to_array, Operator, OperatorContext, OperatorMetrics};
use crate::engine::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// What happens to rows whose window has already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Count and discard.
    #[default]
    Drop,
    /// Send to the query's late side output.
    SideOutput,
}

/// What every windowed aggregation is configured with.
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Allowed lateness in ms.
    pub lateness_ms: i64,
    /// Late-row policy.
    pub late: LatePolicy,
    /// Emit strategy.
    pub emit: EmitSpec,
    /// Group-by columns.
    pub keys: Vec<String>,
    /// Aggregates.
    pub aggs: Vec<AggSpec>,
    /// Input stream schema.
    pub input: SchemaRef,
    /// Type of the window bound columns (int64 or a millisecond timestamp).
    pub bound_type: DataType,
}

/// The parts every window operator binds from a [`WindowConfig`].
pub(crate) struct Bound {
    pub time_index: usize,
    pub keys: GroupKeys,
    pub aggs: Aggregates,
    pub layout: ResultLayout,
}

impl WindowConfig {
    /// Validates the configuration and binds keys, aggregates and the result layout.
    pub(crate) fn bind(&self) -> Result<Bound> {
        if !(0..=MAX_SPAN_MS).contains(&self.lateness_ms) {
            return Err(Error::InvalidPlan(format!(
                "allowed lateness must be between 0 and 100 years, got {} ms",
                self.lateness_ms
            )));
        }
        if self.aggs.is_empty() {
            return Err(Error::InvalidPlan(
                "agg() needs at least one aggregate, e.g. .agg(n=lm.count())".into(),
            ));
        }
        self.emit.validate()?;
        let time_index = self
            .input
            .index_of(TIME_COLUMN)
            .map_err(|_| Error::InvalidPlan("window input has no event-time column".into()))?;
        let keys = GroupKeys::new(&self.keys, &self.input)?;
        let aggs = Aggregates::new(&self.aggs, &self.input)?;
        let agg_fields: Vec<_> = aggs.list.iter().map(|a| a.field().clone()).collect();
        let layout = ResultLayout::new(
            keys.fields(),
            &agg_fields,
            self.bound_type.clone(),
            self.emit == EmitSpec::Changelog,
        )?;
        Ok(Bound {
            time_index,
            keys,
            aggs,
            layout,
        })
    }

    /// Counts late rows (given as a mask over `batch`) and routes them per the policy.
    pub(crate) fn route_late(
        &self,
        batch: &RecordBatch,
        late: &BooleanBuffer,
        metrics: &mut OperatorMetrics,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<RecordBatch> {
        let n_late = late.count_set_bits() as u64;
        match self.late {
            LatePolicy::Drop => metrics.late_dropped += n_late,
            LatePolicy::SideOutput => {
                metrics.late_side_output += n_late;
                ctx.emit_late(filter_record_batch(batch, &late.clone().into())?);
            }
        }
        Ok(filter_record_batch(batch, &(!late).into())?)
    }
}

/// The accumulators of one query, all indexed by the same group ids.
pub(crate) struct Aggregates {
    pub list: Vec<Accumulator>,
}

impl Aggregates {
    pub fn new(specs: &[AggSpec], input: &arrow_schema::Schema) -> Result<Self> {
        Ok(Aggregates {
            list: specs
                .iter()
                .map(|a| Accumulator::new(a, input))
                .collect::<Result<_>>()?,
        })
    }

    pub fn reset(&mut self, g: u32) {
        self.list.iter_mut().for_each(|a| a.reset(g));
    }

    pub fn update(&mut self, groups: &[u32], batch: &RecordBatch, seq0: u64) -> Result<()> {
        self.list
            .iter_mut()
            .try_for_each(|a| a.update(groups, batch, seq0))
    }

    pub fn merge_from(&mut self, src: &Aggregates, pairs: &[(u32, u32)]) -> Result<()> {
        for (d, s) in self.list.iter_mut().zip(&src.list) {
            d.merge_from(s, pairs)?;
        }
        Ok(())
    }

    pub fn merge_within(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        self.list.iter_mut().try_for_each(|a| a.merge_within(pairs))
    }

    pub fn finish(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        self.list.iter().map(|a| a.finish(groups)).collect()
    }
}

/// Scratch space where pane groups are merged into window results.
struct MergeArea {
    keys: GroupKeys,
    ids: GroupIds,
    aggs: Aggregates,
    /// (merged group, window start) of the units gathered so far.
    units: Vec<(u32, i64)>,
    /// (merged group, pane group) pairs to fold.
    pairs: Vec<(u32, u32)>,
    /// Every merged group allocated since the last release.
    allocated: Vec<u32>,
    /// Per merged group: whether a pane group of it predates the batch.
    existed: Vec<bool>,
}

/// An open window (one that has not closed yet).
#[derive(Debug, Clone, Copy, Default)]
struct OpenWindow {
    /// The window has emitted its rows at its end (on_window_close with lateness).
    fired: bool,
}

/// The checkpoint form of a [`WindowAggregate`]: everything it keeps between batches.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WindowAggregateState {
    ids: GroupIdsState,
    keys: GroupKeysState,
    aggs: Vec<AccumulatorState>,
    pane_groups: Vec<(i64, Vec<u32>)>,
    /// (start, fired) of each open window.
    windows: Vec<(i64, bool)>,
    metrics: [u64; 7],
    seq: u64,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    periodic_last: Option<i64>,
}

/// Tumbling- or sliding-window grouped aggregation.
pub struct WindowAggregate {
    panes: Panes,
    config: WindowConfig,
    time_index: usize,
    keys: GroupKeys,
    aggs: Aggregates,
    ids: GroupIds,
    layout: ResultLayout,
    merge: MergeArea,
    /// Panes holding groups, by start, with their groups in creation order.
    pane_groups: BTreeMap<Timestamp, Vec<u32>>,
    /// Open windows by start.
    windows: BTreeMap<Timestamp, OpenWindow>,
    metrics: OperatorMetrics,
    /// Arrival number of the next row (for first/last across panes).
    seq: u64,
    /// Per group: created by the batch being processed.
    fresh: Vec<bool>,
    /// Per group: changed since the last periodic emit.
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    periodic: PeriodicClock,
    // Scratch reused across batches.
    starts: Vec<i64>,
    groups: Vec<u32>,
    created: Vec<u32>,
    touched: Vec<u32>,
    seen: Vec<bool>,
}

impl WindowAggregate {
    /// Builds the operator for windows laid out as `panes`.
    pub fn new(panes: Panes, config: WindowConfig) -> Result<Self> {
        let Bound {
            time_index,
            keys,
            aggs,
            layout,
        } = config.bind()?;
        let merge = MergeArea {
            keys: GroupKeys::new(&config.keys, &config.input)?,
            ids: GroupIds::default(),
            aggs: Aggregates::new(&config.aggs, &config.input)?,
            units: Vec::new(),
            pairs: Vec::new(),
            allocated: Vec::new(),
            existed: Vec::new(),
        };
        Ok(WindowAggregate {
            panes,
            time_index,
            keys,
            aggs,
            ids: GroupIds::default(),
            layout,
            merge,
            config,
            pane_groups: BTreeMap::new(),
            windows: BTreeMap::new(),
            metrics: OperatorMetrics::default(),
            seq: 0,
            fresh: Vec::new(),
            dirty: Vec::new(),
            dirty_list: Vec::new(),
            periodic: PeriodicClock::default(),
            starts: Vec::new(),
            groups: Vec::new(),
            created: Vec::new(),
            touched: Vec::new(),
            seen: Vec::new(),
        })
    }

    fn lateness(&self) -> i64 {
        self.config.lateness_ms
    }

    /// Whether window `s` is closed at watermark `wm`.
    fn closed(&self, s: Timestamp, wm: Option<Timestamp>) -> bool {
        wm.is_some_and(|w| {
            s.saturating_add(self.panes.size())
                .saturating_add(self.lateness())
                <= w
        })
    }

    /// Splits off the rows all of whose windows closed at watermark `wm`; `None` when every
    /// row is on time (the common case, which costs one comparison).
    fn split_late(
        &mut self,
        batch: &RecordBatch,
        wm: Timestamp,
        min: i64,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<Option<RecordBatch>> {
        // A row is late iff the last window holding it starts at or before the cutoff.
        let cutoff = wm
            .saturating_sub(self.panes.size())
            .saturating_sub(self.lateness());
        if self.panes.last_window(min) > cutoff {
            return Ok(None);
        }
        let times = batch
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values();
        let p = self.panes;
        let late = BooleanBuffer::collect_bool(times.len(), |i| p.last_window(times[i]) <= cutoff);
        let on_time = self
            .config
            .route_late(batch, &late, &mut self.metrics, ctx)?;
        Ok(Some(on_time))
    }

    /// A pane got its first group: open the windows holding it that are not open yet (and
    /// not already closed), registering their timers.
    fn open_windows_of(&mut self, pane: Timestamp, ctx: &mut OperatorContext<'_>) {
        let wm = ctx.watermark();
        for s in self.panes.windows_of(pane) {
            if self.windows.contains_key(&s) || self.closed(s, wm) {
                continue;
            }
            let end = s.saturating_add(self.panes.size());
            let close = end.saturating_add(self.lateness());
            let mut window = OpenWindow::default();
            if self.config.emit.fires_at_end(self.lateness()) {
                if wm.is_some_and(|w| end <= w) {
                    // Opened by allowed-late rows after its end: it has fired (empty); its rows
                    // are emitted after this batch like any other late refire.
                    window.fired = true;
                } else {
                    ctx.register_timer(end, s);
                }
            }
            ctx.register_timer(close, s);
            self.windows.insert(s, window);
        }
    }

    fn grow_flags(&mut self, g: u32) {
        let need = g as usize + 1;
        if self.fresh.len() < need {
            self.fresh.resize(need, false);
            self.dirty.resize(need, false);
            self.seen.resize(need, false);
        }
    }

    /// Adds the units `(window, key of g)` for every open window holding g's pane that
    /// `want` accepts to the merge area (one unit per window and key).
    fn gather_units(
        &mut self,
        groups: &[u32],
        only: Option<Timestamp>,
        want: impl Fn(&OpenWindow) -> bool,
    ) -> Result<()> {
        let ppw = self.panes.panes_per_window();
        let pane = self.panes.pane_size();
        for &g in groups {
            let p = self.ids.window(g);
            for s in self.panes.windows_of(p) {
                if only.is_some_and(|o| o != s) {
                    continue;
                }
                match self.windows.get(&s) {
                    Some(w) if want(w) => {}
                    _ => continue,
                }
                let (m, created) =
                    self.merge
                        .keys
                        .insert_like(&self.keys, g, s, &mut self.merge.ids)?;
                if !created {
                    continue;
                }
                self.merge.aggs.reset(m);
                self.merge.units.push((m, s));
                self.merge.allocated.push(m);
                for k in 0..ppw {
                    let q = s + k * pane;
                    let found = if q == p {
                        Some(g)
                    } else {
                        self.keys.find_like(g, q, &self.ids)
                    };
                    if let Some(pg) = found {
                        self.merge.pairs.push((m, pg));
                    }
                }
            }
        }
        Ok(())
    }

    /// Emits the gathered units (merging their panes) with `weight`, then empties the area.
    /// With `existing_only`, units none of whose pane groups predate this batch are skipped
    /// (a retraction needs a row emitted before).
    fn emit_units(
        &mut self,
        weight: Option<i64>,
        existing_only: bool,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let area = &mut self.merge;
        if existing_only {
            let need = area
                .allocated
                .iter()
                .map(|&m| m as usize + 1)
                .max()
                .unwrap_or(0);
            area.existed.clear();
            area.existed.resize(need, false);
            for &(m, pg) in &area.pairs {
                if !self.fresh[pg as usize] {
                    area.existed[m as usize] = true;
                }
            }
            let existed = &area.existed;
            area.units.retain(|&(m, _)| existed[m as usize]);
        }
        area.aggs.merge_from(&self.aggs, &area.pairs)?;
        if !area.units.is_empty() {
            let ms: Vec<u32> = area.units.iter().map(|u| u.0).collect();
            let starts: Vec<i64> = area.units.iter().map(|u| u.1).collect();
            let ends = starts.iter().map(|s| s + self.panes.size()).collect();
            let keys = area.keys.finish(&ms)?;
            let aggs = area.aggs.finish(&ms)?;
            ctx.emit(self.layout.build(starts, ends, keys, aggs, weight)?);
        }
        area.release_all();
        Ok(())
    }

    /// Emits the rows of `groups` (pane groups of tumbling windows, one per window and key).
    fn emit_groups(
        &self,
        groups: &[u32],
        weight: Option<i64>,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let starts: Vec<i64> = groups.iter().map(|&g| self.ids.window(g)).collect();
        let ends = starts.iter().map(|s| s + self.panes.size()).collect();
        let keys = self.keys.finish(groups)?;
        let aggs = self.aggs.finish(groups)?;
        ctx.emit(self.layout.build(starts, ends, keys, aggs, weight)?);
        Ok(())
    }

    /// Emits the current rows of the windows (accepted by `want`) that `groups` belong to.
    fn emit_changed(
        &mut self,
        groups: &[u32],
        want: impl Fn(&OpenWindow) -> bool,
        weight: Option<i64>,
        existing_only: bool,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        if self.panes.panes_per_window() == 1 {
            let selected: Vec<u32> = groups
                .iter()
                .copied()
                .filter(|&g| {
                    (!existing_only || !self.fresh[g as usize])
                        && self.windows.get(&self.ids.window(g)).is_some_and(&want)
                })
                .collect();
            return self.emit_groups(&selected, weight, ctx);
        }
        self.gather_units(groups, None, want)?;
        self.emit_units(weight, existing_only, ctx)
    }

    /// Window `s` fires or closes.
    fn on_window_timer(
        &mut self,
        s: Timestamp,
        close: bool,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let lateness = self.lateness();
        let emit = if close {
            self.config.emit.emits_at_close(lateness)
        } else {
            true
        };
        let Some(w) = self.windows.get_mut(&s) else {
            return Ok(());
        };
        if !close {
            if w.fired {
                return Ok(());
            }
            w.fired = true;
        }
        if emit {
            let end = s + self.panes.size();
            let groups: Vec<u32> = self
                .pane_groups
                .range(s..end)
                .flat_map(|(_, g)| g.iter().copied())
                .collect();
            if self.panes.panes_per_window() == 1 {
                self.emit_groups(&groups, None, ctx)?;
            } else {
                self.gather_units(&groups, Some(s), |_| true)?;
                self.emit_units(None, false, ctx)?;
            }
        }
        if close {
            self.windows.remove(&s);
            // Panes whose last window is `s` are no longer needed.
            let slide_end = s + self.panes.slide();
            let done: Vec<Timestamp> = self
                .pane_groups
                .range(s..slide_end)
                .map(|(&p, _)| p)
                .collect();
            for p in done {
                if let Some(groups) = self.pane_groups.remove(&p) {
                    for g in groups {
                        self.keys.remove(g, &self.ids);
                        self.ids.release(g);
                        self.dirty[g as usize] = false;
                    }
                }
            }
        }
        Ok(())
    }

    fn emit_periodic(&mut self, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let list = std::mem::take(&mut self.dirty_list);
        let live: Vec<u32> = list
            .iter()
            .copied()
            .filter(|&g| std::mem::take(&mut self.dirty[g as usize]))
            .collect();
        self.emit_changed(&live, |_| true, None, false, ctx)?;
        self.dirty_list = list;
        self.dirty_list.clear();
        Ok(())
    }
}

impl MergeArea {
    fn release_all(&mut self) {
        for &m in &self.allocated {
            self.keys.remove(m, &self.ids);
            self.ids.release(m);
        }
        self.allocated.clear();
        self.units.clear();
        self.pairs.clear();
    }
}

impl Operator for WindowAggregate {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let m = &self.metrics;
        encode(&WindowAggregateState {
            ids: self.ids.save(),
            keys: self.keys.save(),
            aggs: self.aggs.list.iter().map(Accumulator::save).collect(),
            pane_groups: self
                .pane_groups
                .iter()
                .map(|(&p, g)| (p, g.clone()))
                .collect(),
            windows: self.windows.iter().map(|(&s, w)| (s, w.fired)).collect(),
            metrics: metrics_to_array(m),
            seq: self.seq,
            dirty: self.dirty.clone(),
            dirty_list: self.dirty_list.clone(),
            periodic_last: self.periodic.last(),
        })
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let st: WindowAggregateState = decode(state, self.name())?;
        if st.aggs.len() != self.aggs.list.len() {
            return Err(Error::Snapshot(format!(
                "window_aggregate: the checkpoint has {} aggregates, the query {} (was the pipeline changed?)",
                st.aggs.len(),
                self.aggs.list.len()
            )));
        }
        let ids = GroupIds::load(st.ids)?;
        self.keys.load(st.keys, &ids)?;
        let groups = ids.live_ids().last().map_or(0, |g| g as usize + 1);
        for (acc, saved) in self.aggs.list.iter_mut().zip(st.aggs) {
            acc.load(saved)?;
            if acc.slots() < groups {
                return Err(Error::Snapshot(format!(
                    "window_aggregate: aggregate '{}' has fewer slots than groups",
                    acc.field().name()
                )));
            }
        }
        let in_range = |g: &u32| (*g as usize) < groups;
        if !st.pane_groups.iter().all(|(_, g)| g.iter().all(in_range))
            || !st.dirty_list.iter().all(in_range)
        {
            return Err(Error::Snapshot(
                "window_aggregate: a group id is out of range".into(),
            ));
        }
        self.ids = ids;
        self.pane_groups = st.pane_groups.into_iter().collect();
        self.windows = st
            .windows
            .into_iter()
            .map(|(s, fired)| (s, OpenWindow { fired }))
            .collect();
        self.metrics = metrics_from_array(st.metrics);
        self.seq = st.seq;
        let flags = groups.max(st.dirty.len());
        self.dirty = st.dirty;
        self.dirty.resize(flags, false);
        self.dirty_list = st.dirty_list;
        self.fresh = vec![false; flags];
        self.seen = vec![false; flags];
        self.periodic = PeriodicClock::at(st.periodic_last);
        Ok(())
    }

    fn output_schema(&self) -> SchemaRef {
        self.layout.schema().clone()
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
        let times = input
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values();
        let (mut min, mut max) = crate::time::convert::min_max(times);
        let on_time = match ctx.watermark() {
            Some(wm) => self.split_late(input, wm, min, ctx)?,
            None => None,
        };
        let batch = on_time.as_ref().unwrap_or(input);
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = batch
            .column(self.time_index)
            .as_primitive::<Int64Type>()
            .values();
        if on_time.is_some() {
            (min, max) = crate::time::convert::min_max(times);
        }
        self.panes.pane().assign(times, min, max, &mut self.starts);
        self.created.clear();
        self.keys.assign(
            batch,
            &self.starts,
            &mut self.ids,
            &mut self.groups,
            &mut self.created,
        )?;
        for i in 0..self.created.len() {
            let g = self.created[i];
            self.grow_flags(g);
            self.fresh[g as usize] = true;
            self.aggs.reset(g);
            let pane = self.ids.window(g);
            match self.pane_groups.get_mut(&pane) {
                Some(groups) => groups.push(g),
                None => {
                    self.pane_groups.insert(pane, vec![g]);
                    self.open_windows_of(pane, ctx);
                }
            }
        }
        let emit = self.config.emit;
        let lateness = self.lateness();
        // Which windows the batch changed, for the strategies that emit per batch.
        let refire = emit.fires_at_end(lateness) && self.windows.values().any(|w| w.fired);
        let track = emit.per_batch() || refire || matches!(emit, EmitSpec::Periodic { .. });
        if track {
            self.touched.clear();
            for &g in &self.groups {
                if !std::mem::replace(&mut self.seen[g as usize], true) {
                    self.touched.push(g);
                }
            }
            for &g in &self.touched {
                self.seen[g as usize] = false;
            }
        }
        let touched = std::mem::take(&mut self.touched);
        if emit == EmitSpec::Changelog {
            self.emit_changed(&touched, |_| true, Some(-1), true, ctx)?;
        }
        self.aggs.update(&self.groups, batch, self.seq)?;
        self.seq += batch.num_rows() as u64;
        match emit {
            EmitSpec::Changelog => self.emit_changed(&touched, |_| true, Some(1), false, ctx)?,
            EmitSpec::OnUpdate => self.emit_changed(&touched, |_| true, None, false, ctx)?,
            EmitSpec::OnWindowClose if refire => {
                self.emit_changed(&touched, |w| w.fired, None, false, ctx)?
            }
            EmitSpec::Periodic { .. } => {
                for &g in &touched {
                    if !std::mem::replace(&mut self.dirty[g as usize], true) {
                        self.dirty_list.push(g);
                    }
                }
            }
            _ => {}
        }
        self.touched = touched;
        for &g in &self.created {
            self.fresh[g as usize] = false;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        deadline: Timestamp,
        start: i64,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let end = start.saturating_add(self.panes.size());
        let close = deadline >= end.saturating_add(self.lateness());
        self.on_window_timer(start, close, ctx)
    }

    fn uses_processing_time(&self) -> bool {
        matches!(self.config.emit, EmitSpec::Periodic { .. })
    }

    fn on_processing_time(&mut self, now: Timestamp, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if self.periodic.due(self.config.emit, now) {
            self.emit_periodic(ctx)?;
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            open_windows: self.windows.len() as u64,
            live_groups: self.ids.live() as u64,
            peak_groups: self.ids.peak() as u64,
            ..self.metrics
        }
    }
}
