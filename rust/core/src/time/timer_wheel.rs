//! Hierarchical timer wheel for event-time timers.
//!
//! A [`TimerWheel`] owns a set of pending timers, each a deadline (`i64` milliseconds of event
//! time) plus a payload, and a current time [`now`](TimerWheel::now). Advancing the wheel with
//! [`advance_to`](TimerWheel::advance_to) hands back, in order, every timer whose deadline has
//! been reached. The engine drives it with watermarks, so time only ever moves forward and may
//! jump by any amount: one millisecond, or from the epoch to the year 9999 in a single call.
//!
//! # What it owns
//!
//! * A slab of entries (`Vec` plus an intrusive free list). An entry holds the deadline, an
//!   insertion sequence number, the payload, the links of the list it sits in, and a
//!   generation. A [`TimerId`] is the pair (slab index, generation); the generation changes
//!   every time the entry is released, so an id kept after its timer fired or was cancelled
//!   can never cancel a later timer that reuses the same index. An index whose generation
//!   would wrap around is retired instead of reused, so generations never repeat.
//! * Six levels of 64 slots. Each slot is a doubly linked list threaded through
//!   the slab (head, tail, and per entry prev/next), so append, removal and detaching a whole
//!   slot are O(1) and allocation free. Each level has a `u64` bitmask of non-empty slots.
//! * The *outside* store: a `BTreeMap` keyed by (deadline, sequence) holding every entry that
//!   is not in the wheel, i.e. timers that are already due (deadline <= now) and timers too far
//!   in the future for the wheel (the overflow).
//!
//! # Keys
//!
//! Deadlines are mapped order-preservingly onto `u64` by flipping the sign bit
//! (`i64::MIN -> 0`, `i64::MAX -> u64::MAX`); all arithmetic is done on these keys and no
//! operation can overflow: slot starts are built with masks and shifts, never by adding spans.
//!
//! # Level layout
//!
//! Level `k` (0..6) has 64 slots, each spanning `64^k` ms, so the whole level spans
//! `64^(k+1)` ms:
//!
//! | level | slot span | level span     |
//! |-------|-----------|----------------|
//! | 0     | 1 ms      | 64 ms          |
//! | 1     | 64 ms     | ~4.1 s         |
//! | 2     | ~4.1 s    | ~4.4 min       |
//! | 3     | ~4.4 min  | ~4.7 h         |
//! | 4     | ~4.7 h    | ~12.4 days     |
//! | 5     | ~12.4 days| ~2.2 years     |
//!
//! The level of a pending entry is a function of its key and `now` only: it is the highest
//! 6-bit digit in which the key differs from `now`, i.e. `(63 - lz(now ^ key)) / 6`. If that
//! is 6 or more (the key lies in a different `2^36` ms block than `now`) the entry goes to the
//! overflow. Its slot is the key's digit at that level, `(key >> 6k) & 63`.
//!
//! # Invariants
//!
//! Between public calls:
//!
//! 1. Every live entry is in exactly one place: one wheel slot, or the outside store. `len()`
//!    counts exactly the live entries; cancelled or fired entries are unlinked immediately.
//! 2. An entry in the wheel has `key > now`, and sits at level `level(now, key)` and slot
//!    `(key >> 6k) & 63`. In particular its key agrees with `now` in every digit above its
//!    level, and its digit at its level is strictly greater than `now`'s. So the slot's start
//!    time (`now`'s higher digits, then the slot digit, then zeros) is `> now`, slots at a lower
//!    level all start (and end) before any slot at a higher level, and a level-0 slot holds
//!    entries with exactly one deadline.
//! 3. An entry in the outside store either has `key <= now` (due) or lies in a later `2^36`
//!    block than `now` (overflow); overflow entries are later than every wheel entry.
//! 4. Within every slot list, entries with equal deadlines appear in insertion order.
//! 5. Each slot caches a lower bound of its keys that is exact unless the minimum entry was
//!    cancelled; this keeps [`next_deadline`](TimerWheel::next_deadline) O(levels) normally.
//!
//! Invariant 2 is maintained while advancing: time never jumps past the start of a non-empty
//! slot. [`advance_to`](TimerWheel::advance_to) first fires the due entries, then repeatedly
//! finds the earliest non-empty slot (lowest non-empty level, lowest set bit of its mask,
//! O(levels)), or, if the wheel is empty, the start of the overflow's earliest block; if that
//! start is within the target it sets `now` to it and processes the slot: entries whose
//! deadline equals `now` fire, the others are *cascaded* to the lower level that invariant 2
//! now demands. When there is nothing before the target, time jumps straight to it. Every
//! iteration empties a non-empty slot or overflow block, and an entry is moved at most once
//! per level (plus once out of the overflow, O(log n)) before it fires, so the cost of a call
//! is bounded by the entries it touches times the number of levels, whatever the jump.
//!
//! # Why order is preserved
//!
//! Every distinct start time belongs to at most one non-empty slot (invariant 2), and start
//! times are visited in increasing order, so firing happens in increasing deadline order and
//! all timers with one deadline fire from one list. Invariant 4 holds because a list only
//! grows by appending: a new insertion has the newest sequence number, and a cascade (or a
//! move out of the overflow, which is itself sorted by (deadline, sequence)) can never meet
//! an entry with the same deadline already in its target list, since that entry would have
//! been inserted at a time `>=` the start of the slot being cascaded, i.e. after the cascade.
//! Due entries, drained first in (deadline, sequence) order, are all earlier than the wheel.
//!
//! # What it must never do
//!
//! * Never move time backwards: `advance_to` with an earlier time only fires due entries.
//! * Never return a cancelled timer, never return a timer twice, never lose one.
//! * Never step millisecond by millisecond: work is proportional to entries, not to time.
//! * Never allocate per expired timer beyond growing the caller's output `Vec`; advancing
//!   allocates nothing of its own (lists are intrusive, the slab is reused).
//! * Never overflow or panic on any `i64` deadline or time, `i64::MIN` and `i64::MAX`
//!   included.

use std::collections::BTreeMap;
use std::fmt;

/// Bits of a deadline consumed by one level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Number of wheel levels; deadlines further away than the top level go to the overflow.
const LEVELS: usize = 6;
/// Bits of a key covered by the whole wheel (`64^6 ms`, about 2.2 years).
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// Mask of the slot digit.
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// "No entry" link value; also the one slab index that is never used.
const NIL: u32 = u32::MAX;
/// Flipping this bit maps `i64` order onto `u64` order.
const SIGN: u64 = 1 << 63;

/// Maps a time onto an order-preserving unsigned key.
#[inline]
fn to_key(t: i64) -> u64 {
    (t as u64) ^ SIGN
}

/// Inverse of [`to_key`].
#[inline]
fn from_key(k: u64) -> i64 {
    (k ^ SIGN) as i64
}

/// Level an entry with `key > now` belongs at, or `None` if it is beyond the wheel.
#[inline]
fn level_for(now: u64, key: u64) -> Option<usize> {
    debug_assert!(key > now);
    // now ^ key != 0 because key > now, so ilog2 cannot panic.
    let top_bit = (now ^ key).ilog2();
    let level = (top_bit / SLOT_BITS) as usize;
    (level < LEVELS).then_some(level)
}

/// Slot of `key` at `level`.
#[inline]
fn slot_for(key: u64, level: usize) -> usize {
    ((key >> (level as u32 * SLOT_BITS)) & SLOT_MASK) as usize
}

/// Start time of slot `slot` at `level`, given that the level's slots share `now`'s higher
/// digits.
#[inline]
fn slot_start(now: u64, level: usize, slot: usize) -> u64 {
    let shift = level as u32 * SLOT_BITS;
    // shift + SLOT_BITS <= WHEEL_BITS = 36, so the shifts below cannot overflow.
    let level_span_mask = (1u64 << (shift + SLOT_BITS)) - 1;
    (now & !level_span_mask) | ((slot as u64) << shift)
}

/// Identifies a timer for [`TimerWheel::cancel`].
///
/// It carries a generation, so an id kept after its timer fired or was cancelled never
/// cancels another timer that later reuses the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// A timer that has fired, as appended to the output of [`TimerWheel::advance_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<T> {
    /// The deadline the timer was inserted with (event time, ms).
    pub deadline: i64,
    /// The payload the timer was inserted with.
    pub payload: T,
}

/// Where a slab entry currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not live: on the free list, or retired.
    Free,
    /// Linked into a wheel slot.
    Wheel { level: u8, slot: u8 },
    /// In the outside store (due, or overflow).
    Outside,
}

/// One slab entry.
#[derive(Clone)]
struct Entry<T> {
    generation: u32,
    place: Place,
    /// Mapped deadline.
    key: u64,
    /// Insertion sequence number; breaks ties between equal deadlines.
    seq: u64,
    /// Previous entry in the slot list (unused outside the wheel).
    prev: u32,
    /// Next entry in the slot list, or next free entry while on the free list.
    next: u32,
    /// `Some` exactly while the entry is live.
    payload: Option<T>,
}

/// Head and tail of a slot list, and a cached minimum key.
#[derive(Debug, Clone, Copy)]
struct SlotList {
    head: u32,
    tail: u32,
    /// Lower bound of the keys in the list (meaningless when the list is empty).
    min_key: u64,
    /// Whether some entry in the list has key `min_key`.
    min_exact: bool,
}

impl SlotList {
    const EMPTY: SlotList = SlotList {
        head: NIL,
        tail: NIL,
        min_key: 0,
        min_exact: false,
    };
}

/// One level of the wheel.
#[derive(Debug, Clone)]
struct Level {
    /// Bit `s` is set iff slot `s` is non-empty.
    occupied: u64,
    slots: [SlotList; SLOTS],
}

impl Level {
    const EMPTY: Level = Level {
        occupied: 0,
        slots: [SlotList::EMPTY; SLOTS],
    };
}

/// The next thing `advance_to` must handle.
#[derive(Debug, Clone, Copy)]
enum Event {
    Slot { level: usize, slot: usize },
    Overflow,
}

/// A hierarchical timer wheel keyed by event time.
///
/// See the [module documentation](self) for the layout and invariants. All operations are
/// total: every `i64` is a valid deadline and a valid time.
#[derive(Clone)]
pub struct TimerWheel<T> {
    /// Current time, as a key.
    now: u64,
    entries: Vec<Entry<T>>,
    free_head: u32,
    live: usize,
    next_seq: u64,
    levels: Box<[Level; LEVELS]>,
    /// Entries not in the wheel: due ones (`key <= now`) and overflow ones.
    outside: BTreeMap<(u64, u64), u32>,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose time is `i64::MIN`.
    #[must_use]
    pub fn new() -> Self {
        TimerWheel {
            now: to_key(i64::MIN),
            entries: Vec::new(),
            free_head: NIL,
            live: 0,
            next_seq: 0,
            levels: Box::new([Level::EMPTY; LEVELS]),
            outside: BTreeMap::new(),
        }
    }

    /// The time the wheel has advanced to (`i64::MIN` for a new wheel).
    #[must_use]
    pub fn now(&self) -> i64 {
        from_key(self.now)
    }

    /// Number of live timers: inserted, and neither fired nor cancelled.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are no live timers.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Inserts a timer and returns its id.
    ///
    /// A deadline `<= now()` is already due: the timer fires on the next
    /// [`advance_to`](Self::advance_to), whatever its argument, in order with the others.
    ///
    /// # Panics
    ///
    /// Only if more than `u32::MAX - 1` slab entries would be needed (far beyond memory).
    pub fn insert(&mut self, deadline: i64, payload: T) -> TimerId {
        let key = to_key(deadline);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let index = self.alloc(key, seq, payload);
        let generation = self.entries[index as usize].generation;
        if key <= self.now {
            self.put_outside(index);
        } else {
            self.place_pending(index);
        }
        TimerId { index, generation }
    }

    /// Cancels a timer and returns its payload.
    ///
    /// Returns `None` if the timer already fired or was cancelled, or if the id is stale
    /// (its slot has since been reused) or was never issued by this wheel.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let entry = self.entries.get(id.index as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        match entry.place {
            Place::Free => return None,
            Place::Wheel { .. } => self.unlink(id.index),
            Place::Outside => {
                let k = (entry.key, entry.seq);
                self.outside.remove(&k);
            }
        }
        self.release(id.index)
    }

    /// Moves time to `now` and appends every live timer with deadline `<= now` to `out`,
    /// in ascending deadline order, equal deadlines in insertion order.
    ///
    /// If `now <= self.now()` time does not move (it never goes back); only timers inserted
    /// with a deadline `<= self.now()` fire. `out` is appended to, not cleared. Nothing is
    /// allocated except by `out` growing; the cost is independent of the size of the jump.
    pub fn advance_to(&mut self, now: i64, out: &mut Vec<Expired<T>>) {
        let target = to_key(now);
        self.fire_due(out);
        if target <= self.now {
            return;
        }
        loop {
            match self.next_event() {
                Some((start, event)) if start <= target => {
                    debug_assert!(start > self.now);
                    self.now = start;
                    match event {
                        Event::Slot { level, slot } => self.process_slot(level, slot, out),
                        Event::Overflow => self.pull_overflow(out),
                    }
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
    }

    /// Every live timer as `(deadline, payload)`, in the order they would fire (deadline, then
    /// insertion order): what a checkpoint saves. Allocates; never on the hot path.
    pub fn pending(&self) -> Vec<(i64, T)>
    where
        T: Clone,
    {
        let mut live: Vec<(u64, u64, &T)> = self
            .entries
            .iter()
            .filter_map(|e| e.payload.as_ref().map(|p| (e.key, e.seq, p)))
            .collect();
        live.sort_unstable_by_key(|&(key, seq, _)| (key, seq));
        live.into_iter()
            .map(|(key, _, p)| (from_key(key), p.clone()))
            .collect()
    }

    /// A wheel at time `now` holding `pending` (as returned by [`pending`](Self::pending)):
    /// timers fire in the same order as in the wheel they were read from.
    pub fn restored(now: i64, pending: impl IntoIterator<Item = (i64, T)>) -> Self {
        let mut wheel = TimerWheel::new();
        let mut none = Vec::new();
        wheel.advance_to(now, &mut none);
        for (deadline, payload) in pending {
            wheel.insert(deadline, payload);
        }
        wheel
    }

    /// Earliest deadline of any live timer, or `None` if there is none.
    ///
    /// O(levels + log(outside)) except right after the earliest timer of a higher-level slot
    /// was cancelled, when that one slot is scanned.
    #[must_use]
    pub fn next_deadline(&self) -> Option<i64> {
        let outside_min = self.outside.first_key_value().map(|(&(key, _), _)| key);
        if let Some(key) = outside_min {
            if key <= self.now {
                // Due entries precede every wheel entry.
                return Some(from_key(key));
            }
        }
        for (level_index, level) in self.levels.iter().enumerate() {
            if level.occupied == 0 {
                continue;
            }
            let slot = level.occupied.trailing_zeros() as usize;
            let key = if level_index == 0 {
                slot_start(self.now, 0, slot)
            } else {
                let list = &level.slots[slot];
                if list.min_exact {
                    list.min_key
                } else {
                    self.scan_min(list.head)
                }
            };
            return Some(from_key(key));
        }
        outside_min.map(from_key)
    }

    // ----- internals -----

    /// Takes a free slab entry (or grows the slab) and makes it live with the given data.
    /// The entry's place is left `Free` for the caller to set by placing it.
    fn alloc(&mut self, key: u64, seq: u64, payload: T) -> u32 {
        self.live += 1;
        if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.next;
            entry.key = key;
            entry.seq = seq;
            entry.prev = NIL;
            entry.next = NIL;
            entry.payload = Some(payload);
            return index;
        }
        let index = match u32::try_from(self.entries.len()) {
            Ok(index) if index != NIL => index,
            _ => panic!("TimerWheel: too many timers (slab index space exhausted)"),
        };
        self.entries.push(Entry {
            generation: 0,
            place: Place::Free,
            key,
            seq,
            prev: NIL,
            next: NIL,
            payload: Some(payload),
        });
        index
    }

    /// Makes a live entry (already unlinked from everything) free and returns its payload.
    fn release(&mut self, index: u32) -> Option<T> {
        let entry = &mut self.entries[index as usize];
        entry.place = Place::Free;
        entry.prev = NIL;
        let payload = entry.payload.take();
        self.live -= 1;
        if entry.generation == u32::MAX {
            // Retire the index rather than let a generation repeat.
            entry.next = NIL;
        } else {
            entry.generation += 1;
            entry.next = self.free_head;
            self.free_head = index;
        }
        payload
    }

    /// Puts an entry into the outside store.
    fn put_outside(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        entry.place = Place::Outside;
        self.outside.insert((entry.key, entry.seq), index);
    }

    /// Places an unlinked entry with `key > now` in its wheel slot, or in the overflow.
    fn place_pending(&mut self, index: u32) {
        let key = self.entries[index as usize].key;
        match level_for(self.now, key) {
            Some(level) => self.link(index, level, slot_for(key, level)),
            None => self.put_outside(index),
        }
    }

    /// Appends an entry to the list of a wheel slot.
    fn link(&mut self, index: u32, level: usize, slot: usize) {
        let lvl = &mut self.levels[level];
        let list = &mut lvl.slots[slot];
        let entry = &mut self.entries[index as usize];
        let key = entry.key;
        entry.place = Place::Wheel {
            level: level as u8,
            slot: slot as u8,
        };
        entry.prev = list.tail;
        entry.next = NIL;
        if list.tail == NIL {
            list.head = index;
            list.min_key = key;
            list.min_exact = true;
            lvl.occupied |= 1 << slot;
        } else {
            self.entries[list.tail as usize].next = index;
            // min_key is a lower bound of the true minimum, so key <= min_key means key is
            // the new exact minimum.
            if key <= list.min_key {
                list.min_key = key;
                list.min_exact = true;
            }
        }
        list.tail = index;
    }

    /// Removes a wheel entry from its slot list.
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let Place::Wheel { level, slot } = entry.place else {
            return;
        };
        let (prev, next, key) = (entry.prev, entry.next, entry.key);
        let (level, slot) = (level as usize, slot as usize);
        let lvl = &mut self.levels[level];
        let list = &mut lvl.slots[slot];
        if prev == NIL {
            list.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if list.head == NIL {
            *list = SlotList::EMPTY;
            lvl.occupied &= !(1u64 << slot);
        } else if key == list.min_key {
            list.min_exact = false;
        }
    }

    /// Smallest key in a non-empty slot list.
    fn scan_min(&self, head: u32) -> u64 {
        let mut min = u64::MAX;
        let mut cur = head;
        while cur != NIL {
            let entry = &self.entries[cur as usize];
            min = min.min(entry.key);
            cur = entry.next;
        }
        min
    }

    /// Releases a live, unlinked entry and appends it to `out`.
    fn fire(&mut self, index: u32, out: &mut Vec<Expired<T>>) {
        let deadline = from_key(self.entries[index as usize].key);
        if let Some(payload) = self.release(index) {
            out.push(Expired { deadline, payload });
        }
    }

    /// Fires every outside entry with `key <= now`, in (deadline, insertion) order.
    fn fire_due(&mut self, out: &mut Vec<Expired<T>>) {
        while let Some(first) = self.outside.first_entry() {
            if first.key().0 > self.now {
                break;
            }
            let index = first.remove();
            self.fire(index, out);
        }
    }

    /// Start time and kind of the earliest pending slot or overflow block (all `> now`).
    fn next_event(&self) -> Option<(u64, Event)> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied != 0 {
                let slot = lvl.occupied.trailing_zeros() as usize;
                return Some((
                    slot_start(self.now, level, slot),
                    Event::Slot { level, slot },
                ));
            }
        }
        // The wheel is empty; the overflow holds only keys in later 2^36 blocks than now.
        self.outside
            .first_key_value()
            .map(|(&(key, _), _)| (key & !((1u64 << WHEEL_BITS) - 1), Event::Overflow))
    }

    /// Empties the slot that starts at `now`: fires entries due exactly now, cascades the rest.
    fn process_slot(&mut self, level: usize, slot: usize, out: &mut Vec<Expired<T>>) {
        let lvl = &mut self.levels[level];
        let list = std::mem::replace(&mut lvl.slots[slot], SlotList::EMPTY);
        lvl.occupied &= !(1u64 << slot);
        let mut cur = list.head;
        while cur != NIL {
            let entry = &mut self.entries[cur as usize];
            let next = entry.next;
            let key = entry.key;
            entry.place = Place::Free;
            if key == self.now {
                self.fire(cur, out);
            } else {
                debug_assert!(key > self.now);
                self.place_pending(cur);
            }
            cur = next;
        }
    }

    /// Moves the overflow block that starts at `now` into the wheel (or fires it if due now).
    fn pull_overflow(&mut self, out: &mut Vec<Expired<T>>) {
        let block = self.now >> WHEEL_BITS;
        while let Some(first) = self.outside.first_entry() {
            let key = first.key().0;
            if key >> WHEEL_BITS != block {
                break;
            }
            let index = first.remove();
            if key == self.now {
                self.fire(index, out);
            } else {
                debug_assert!(key > self.now);
                self.place_pending(index);
            }
        }
    }
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("now", &self.now())
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::collections::BTreeMap;

    const M: i64 = i64::MIN;
    const X: i64 = i64::MAX;

    /// Advances and returns what fired as (deadline, payload) pairs.
    fn adv<T>(w: &mut TimerWheel<T>, now: i64) -> Vec<(i64, T)> {
        let mut out = Vec::new();
        w.advance_to(now, &mut out);
        out.into_iter().map(|e| (e.deadline, e.payload)).collect()
    }

    /// A wheel whose time is `now`.
    fn wheel_at<T>(now: i64) -> TimerWheel<T> {
        let mut w = TimerWheel::new();
        assert!(adv(&mut w, now).is_empty());
        assert_eq!(w.now(), now);
        w
    }

    /// Checks the structural invariants of the module docs.
    fn check_invariants<T>(w: &TimerWheel<T>) {
        let mut live = 0;
        for (level, lvl) in w.levels.iter().enumerate() {
            for (slot, list) in lvl.slots.iter().enumerate() {
                assert_eq!(lvl.occupied >> slot & 1 == 1, list.head != NIL);
                let mut cur = list.head;
                let mut prev = NIL;
                let mut last_seq_for: BTreeMap<u64, u64> = BTreeMap::new();
                while cur != NIL {
                    let e = &w.entries[cur as usize];
                    live += 1;
                    assert_eq!(
                        e.place,
                        Place::Wheel {
                            level: level as u8,
                            slot: slot as u8
                        }
                    );
                    assert_eq!(e.prev, prev);
                    assert!(e.key > w.now);
                    assert_eq!(level_for(w.now, e.key), Some(level));
                    assert_eq!(slot_for(e.key, level), slot);
                    assert!(list.min_key <= e.key);
                    if let Some(&s) = last_seq_for.get(&e.key) {
                        assert!(s < e.seq, "equal deadlines out of insertion order");
                    }
                    last_seq_for.insert(e.key, e.seq);
                    prev = cur;
                    cur = e.next;
                }
                assert_eq!(list.tail, prev);
                if list.head != NIL && list.min_exact {
                    assert_eq!(w.scan_min(list.head), list.min_key);
                }
            }
        }
        for (&(key, seq), &index) in &w.outside {
            let e = &w.entries[index as usize];
            live += 1;
            assert_eq!((e.key, e.seq, e.place), (key, seq, Place::Outside));
            assert!(key <= w.now || key >> WHEEL_BITS != w.now >> WHEEL_BITS);
        }
        assert_eq!(live, w.len());
        assert_eq!(
            w.entries.iter().filter(|e| e.payload.is_some()).count(),
            w.len()
        );
    }

    #[test]
    fn new_wheel_is_empty_and_jumps() {
        let w: TimerWheel<u32> = TimerWheel::new();
        assert_eq!(w.now(), M);
        assert_eq!(w.len(), 0);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        let d: TimerWheel<u32> = TimerWheel::default();
        assert_eq!(d.now(), M);

        let mut w: TimerWheel<u32> = TimerWheel::new();
        assert!(adv(&mut w, 1_700_000_000_000).is_empty());
        assert_eq!(w.now(), 1_700_000_000_000);
        assert!(adv(&mut w, 5).is_empty());
        assert_eq!(w.now(), 1_700_000_000_000, "time never moves back");
        assert!(adv(&mut w, X).is_empty());
        assert_eq!(w.now(), X);
        check_invariants(&w);
        assert!(format!("{w:?}").contains("TimerWheel"));
    }

    #[test]
    fn ties_fire_in_insertion_order() {
        let mut w = wheel_at(0);
        for (d, p) in [
            (30, 'a'),
            (10, 'b'),
            (30, 'c'),
            (10, 'd'),
            (20, 'e'),
            (30, 'f'),
        ] {
            w.insert(d, p);
        }
        assert_eq!(w.len(), 6);
        assert_eq!(w.next_deadline(), Some(10));
        assert_eq!(
            adv(&mut w, 100),
            vec![
                (10, 'b'),
                (10, 'd'),
                (20, 'e'),
                (30, 'a'),
                (30, 'c'),
                (30, 'f')
            ]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn ties_inserted_at_different_levels_keep_insertion_order() {
        // Same deadline inserted while it is at level 3, 2, 1, 0 and already due.
        let d = 1_000_000;
        let mut w = wheel_at(0);
        w.insert(d, 'a');
        assert!(adv(&mut w, d - 5000).is_empty());
        w.insert(d, 'b');
        assert!(adv(&mut w, d - 70).is_empty());
        w.insert(d, 'c');
        assert!(adv(&mut w, d - 1).is_empty());
        w.insert(d, 'd');
        w.insert(d + 1, 'x');
        check_invariants(&w);
        assert_eq!(adv(&mut w, d), vec![(d, 'a'), (d, 'b'), (d, 'c'), (d, 'd')]);
        w.insert(d, 'e');
        w.insert(d - 3, 'f');
        assert_eq!(
            adv(&mut w, d + 1),
            vec![(d - 3, 'f'), (d, 'e'), (d + 1, 'x')]
        );

        // Same deadline inserted while in the overflow, then in the wheel.
        let d = (1i64 << 40) + 123;
        let mut w = wheel_at(0);
        w.insert(d, 1);
        assert!(adv(&mut w, (1 << 40) - 10).is_empty());
        w.insert(d, 2); // still overflow (different 2^36 block)
        assert!(adv(&mut w, 1 << 40).is_empty());
        w.insert(d, 3); // now in the wheel
        check_invariants(&w);
        assert_eq!(adv(&mut w, d), vec![(d, 1), (d, 2), (d, 3)]);
    }

    #[test]
    fn cancel_before_and_after_fire() {
        let mut w = wheel_at(1000);
        let due = w.insert(900, "due");
        let near = w.insert(1010, "near");
        let mid = w.insert(1_000_000, "mid");
        let far = w.insert(1 << 50, "far");
        let keep = w.insert(1020, "keep");
        assert_eq!(w.len(), 5);
        assert_eq!(w.cancel(near), Some("near"));
        assert_eq!(w.cancel(near), None);
        assert_eq!(w.cancel(due), Some("due"));
        assert_eq!(w.cancel(mid), Some("mid"));
        assert_eq!(w.cancel(far), Some("far"));
        assert_eq!(w.len(), 1);
        check_invariants(&w);
        assert_eq!(adv(&mut w, X), vec![(1020, "keep")]);
        assert_eq!(w.cancel(keep), None, "fired timers cannot be cancelled");
        assert_eq!(w.len(), 0);
        // An id that was never issued.
        assert_eq!(
            w.cancel(TimerId {
                index: 77,
                generation: 0
            }),
            None
        );
    }

    #[test]
    fn stale_id_never_cancels_reused_slot() {
        let mut w = wheel_at(0);
        let a = w.insert(10, 'a');
        assert_eq!(w.cancel(a), Some('a'));
        let b = w.insert(10, 'b');
        assert_eq!(a.index, b.index, "slot reused");
        assert_ne!(a, b);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.len(), 1);
        assert_eq!(adv(&mut w, 10), vec![(10, 'b')]);
        let c = w.insert(20, 'c');
        assert_eq!(c.index, b.index);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.cancel(c), Some('c'));
    }

    #[test]
    fn exhausted_generation_is_retired() {
        let mut w = wheel_at(0);
        let a = w.insert(10, 'a');
        assert_eq!(w.cancel(a), Some('a'));
        w.entries[a.index as usize].generation = u32::MAX;
        let b = w.insert(10, 'b');
        assert_eq!((b.index, b.generation), (a.index, u32::MAX));
        assert_eq!(w.cancel(b), Some('b'));
        let c = w.insert(10, 'c');
        assert_ne!(
            c.index, b.index,
            "index with exhausted generations is not reused"
        );
        assert_eq!(w.cancel(b), None);
        assert_eq!(adv(&mut w, 10), vec![(10, 'c')]);
    }

    #[test]
    fn slab_is_reused() {
        let mut w = wheel_at(0);
        for t in 1..1000 {
            w.insert(t, t);
            assert_eq!(adv(&mut w, t), vec![(t, t)]);
        }
        assert_eq!(w.entries.len(), 1);
    }

    #[test]
    fn insert_in_the_past_fires_on_next_advance_even_backwards() {
        let mut w = wheel_at(1000);
        w.insert(500, 1);
        w.insert(1000, 2);
        w.insert(999, 3);
        w.insert(200, 4);
        w.insert(1500, 5);
        w.insert(M, 6);
        assert_eq!(w.next_deadline(), Some(M));
        assert_eq!(
            adv(&mut w, 0),
            vec![(M, 6), (200, 4), (500, 1), (999, 3), (1000, 2)]
        );
        assert_eq!(w.now(), 1000);
        assert_eq!(w.len(), 1);
        assert!(adv(&mut w, 1000).is_empty());
        w.insert(900, 7);
        w.insert(1001, 8);
        assert_eq!(adv(&mut w, 2000), vec![(900, 7), (1001, 8), (1500, 5)]);
    }

    #[test]
    fn output_is_appended_not_cleared() {
        let mut w = wheel_at(0);
        w.insert(5, 'b');
        let mut out = vec![Expired {
            deadline: -1,
            payload: 'a',
        }];
        w.advance_to(10, &mut out);
        assert_eq!(
            out,
            vec![
                Expired {
                    deadline: -1,
                    payload: 'a'
                },
                Expired {
                    deadline: 5,
                    payload: 'b'
                }
            ]
        );
        let cap = out.capacity();
        w.advance_to(1_000_000, &mut out);
        assert_eq!((out.len(), out.capacity()), (2, cap));
    }

    #[test]
    fn big_jumps() {
        let t = 1_700_000_000_000i64;
        let deadlines = [
            1,
            63,
            64,
            4095,
            4096,
            1_000_000,
            (1 << 36) - 1,
            1 << 36,
            1 << 40,
            t - 1,
            t,
            t + 1,
            t + (1 << 36),
            X,
        ];
        let mut w = wheel_at(0);
        for (i, &d) in deadlines.iter().enumerate() {
            w.insert(d, i);
        }
        let fired = adv(&mut w, t);
        let expected: Vec<_> = deadlines
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, d)| d <= t)
            .map(|(i, d)| (d, i))
            .collect();
        assert_eq!(fired, expected);
        assert_eq!(w.now(), t);
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_deadline(), Some(t + 1));
        check_invariants(&w);
        assert_eq!(
            adv(&mut w, X),
            vec![(t + 1, 11), (t + (1 << 36), 12), (X, 13)]
        );
    }

    #[test]
    fn extremes_min_to_max() {
        let mut w = TimerWheel::new();
        let ds = [X, M, 0, -1, 1, X - 1, M + 1, X, M];
        for (i, &d) in ds.iter().enumerate() {
            w.insert(d, i);
        }
        assert_eq!(w.next_deadline(), Some(M));
        // Inserted at now == MIN with deadline MIN: already due; fires on any advance.
        assert_eq!(adv(&mut w, M), vec![(M, 1), (M, 8)]);
        assert_eq!(w.next_deadline(), Some(M + 1));
        assert_eq!(adv(&mut w, M + 1), vec![(M + 1, 6)]);
        check_invariants(&w);
        assert_eq!(
            adv(&mut w, X),
            vec![(-1, 3), (0, 2), (1, 4), (X - 1, 5), (X, 0), (X, 7)]
        );
        assert_eq!(w.now(), X);
        assert!(w.is_empty());
        // At the end of time everything inserted is already due.
        w.insert(X, 100);
        w.insert(M, 101);
        check_invariants(&w);
        assert_eq!(w.next_deadline(), Some(M));
        assert_eq!(adv(&mut w, 0), vec![(M, 101), (X, 100)]);
        assert_eq!(w.now(), X);
    }

    #[test]
    fn extremes_single_jump() {
        let mut w = TimerWheel::new();
        w.insert(X, 1);
        w.insert(X - 1, 2);
        assert_eq!(w.next_deadline(), Some(X - 1));
        assert!(adv(&mut w, X - 2).is_empty());
        check_invariants(&w);
        assert_eq!(adv(&mut w, X - 1), vec![(X - 1, 2)]);
        assert_eq!(adv(&mut w, X), vec![(X, 1)]);

        let mut w = wheel_at(X - 1);
        w.insert(X, 1);
        assert_eq!(adv(&mut w, X), vec![(X, 1)]);
    }

    #[test]
    fn negative_times_stepwise() {
        let deadlines = [-9_999, -5000, -4096, -4097, -64, -65, -1, 0, 1, 63, 64];
        for step in [1, 7, 64, 1000] {
            let mut w = wheel_at(-10_000);
            for &d in &deadlines {
                w.insert(d, d);
            }
            let mut now = -10_000;
            let mut fired = Vec::new();
            while now < 100 {
                let prev = now;
                now += step;
                for (d, p) in adv(&mut w, now) {
                    assert!(d > prev && d <= now, "{d} fired at {now}");
                    assert_eq!(d, p);
                    fired.push(d);
                }
                check_invariants(&w);
            }
            let mut sorted = deadlines.to_vec();
            sorted.sort_unstable();
            assert_eq!(fired, sorted);
        }
    }

    #[test]
    fn cascades_across_every_level_boundary() {
        for level in 0..=LEVELS as u32 {
            let span = 1i64 << (SLOT_BITS * level); // slot span at `level` (2^36: overflow)
            for base in [
                0i64,
                1_700_000_000_000,
                -(1 << 40),
                12_345,
                (1 << 36) - 1,
                M,
                X - (1 << 38),
            ] {
                let aligned = base & !(span * 64 - 1);
                for start in [base, aligned, aligned.saturating_sub(1)] {
                    for delta in [
                        span - 1,
                        span,
                        span + 1,
                        2 * span - 1,
                        63 * span,
                        64 * span,
                        65 * span,
                    ] {
                        let Some(deadline) = start.checked_add(delta) else {
                            continue;
                        };
                        if delta <= 0 {
                            continue;
                        }
                        let mut w = wheel_at(start);
                        w.insert(deadline, ());
                        w.insert(deadline.saturating_add(1), ());
                        check_invariants(&w);
                        assert_eq!(w.next_deadline(), Some(deadline));
                        // Approach in a few jumps, ending just before the deadline.
                        for probe in [start + delta / 3, start + delta / 2, deadline - 1] {
                            assert!(adv(&mut w, probe).is_empty(), "fired early at {probe}");
                            check_invariants(&w);
                            assert_eq!(w.next_deadline(), Some(deadline));
                        }
                        let mut expected = vec![(deadline, ())];
                        if deadline == X {
                            expected.push((X, ()));
                        }
                        assert_eq!(adv(&mut w, deadline), expected);
                        check_invariants(&w);
                        assert_eq!(w.len(), usize::from(deadline != X));
                    }
                }
            }
        }
    }

    #[test]
    fn overflow_entries_come_into_range() {
        let b = 1i64 << 36;
        let ds = [b + 5, 3 * b + 7, 3 * b + 7, 1 << 50, X];
        let mut w = wheel_at(0);
        for (i, &d) in ds.iter().enumerate() {
            w.insert(d, i);
        }
        assert_eq!(w.outside.len(), 5);
        let mut now = 0;
        let mut fired = Vec::new();
        while now < 4 * b {
            let prev = now;
            now += b / 2 - 1;
            for (d, i) in adv(&mut w, now) {
                assert!(d > prev && d <= now);
                fired.push((d, i));
            }
            check_invariants(&w);
            assert_eq!(
                w.next_deadline(),
                ds.iter().copied().filter(|&d| d > now).min()
            );
        }
        assert_eq!(fired, vec![(b + 5, 0), (3 * b + 7, 1), (3 * b + 7, 2)]);
        assert_eq!(adv(&mut w, X), vec![(1 << 50, 3), (X, 4)]);
    }

    #[test]
    fn next_deadline_follows_cancels() {
        let mut w = wheel_at(0);
        // 4096..8191 is one level-2 slot when now == 0.
        let a = w.insert(5000, ());
        let b = w.insert(5001, ());
        let c = w.insert(5002, ());
        let far = w.insert(1 << 45, ());
        assert_eq!(w.next_deadline(), Some(5000));
        w.cancel(a);
        assert_eq!(w.next_deadline(), Some(5001));
        let d = w.insert(4500, ());
        assert_eq!(w.next_deadline(), Some(4500));
        w.cancel(d);
        assert_eq!(w.next_deadline(), Some(5001));
        w.cancel(c);
        assert_eq!(w.next_deadline(), Some(5001));
        w.insert(5001, ());
        w.cancel(b);
        assert_eq!(w.next_deadline(), Some(5001));
        check_invariants(&w);
        assert_eq!(adv(&mut w, 5001), vec![(5001, ())]);
        assert_eq!(w.next_deadline(), Some(1 << 45));
        w.insert(-3, ());
        assert_eq!(w.next_deadline(), Some(-3));
        w.insert(5002, ());
        assert_eq!(adv(&mut w, 0), vec![(-3, ())]);
        assert_eq!(w.next_deadline(), Some(5002));
        w.cancel(far);
        assert_eq!(adv(&mut w, X), vec![(5002, ())]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn many_equal_deadlines_from_many_insert_times() {
        let mut w = wheel_at(0);
        let d = 3_000_000;
        let mut expected = Vec::new();
        for i in 0..2000i64 {
            let at = i * 1500; // crosses many slot boundaries at several levels
            assert!(adv(&mut w, at.min(d - 1)).is_empty());
            w.insert(d, i);
            w.insert(d + (i % 3) - 1, -i);
            expected.push(i);
        }
        check_invariants(&w);
        let fired = adv(&mut w, d);
        let at_d: Vec<i64> = fired
            .iter()
            .filter(|&&(t, _)| t == d)
            .map(|&(_, p)| p)
            .filter(|&p| p >= 0)
            .collect();
        assert_eq!(at_d, expected);
        assert!(fired.windows(2).all(|p| p[0].0 <= p[1].0));
    }

    // ----- property test against a model -----

    #[derive(Debug, Clone)]
    enum When {
        /// Relative to now, clustered.
        Near(i64),
        /// Relative to now, spanning all levels and the overflow.
        Far(i64),
        Abs(i64),
        /// The deadline of a previously inserted timer (ties across insert times).
        SameAs(Index),
    }

    #[derive(Debug, Clone)]
    enum Step {
        By(i64),
        To(i64),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(When),
        Cancel(Index),
        Advance(Step),
    }

    fn extreme() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(M),
            Just(M + 1),
            Just(-1),
            Just(0),
            Just(1),
            Just(X - 1),
            Just(X),
            Just(1 << 36),
            Just(-(1 << 36)),
            Just(1_700_000_000_000),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let when = prop_oneof![
            8 => (-100i64..5000).prop_map(When::Near),
            3 => (-(1i64 << 40)..(1i64 << 42)).prop_map(When::Far),
            1 => prop_oneof![any::<i64>(), extreme()].prop_map(When::Abs),
            3 => any::<Index>().prop_map(When::SameAs),
        ];
        let step = prop_oneof![
            10 => (0i64..200).prop_map(Step::By),
            4 => (0i64..100_000).prop_map(Step::By),
            2 => (0i64..(1 << 44)).prop_map(Step::By),
            2 => (-1000i64..0).prop_map(Step::By),
            1 => prop_oneof![any::<i64>(), extreme()].prop_map(Step::To),
        ];
        prop_oneof![
            5 => when.prop_map(Op::Insert),
            2 => any::<Index>().prop_map(Op::Cancel),
            3 => step.prop_map(Op::Advance),
        ]
    }

    fn start() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(M),
            extreme(),
            -(1i64 << 45)..(1i64 << 45),
            1_700_000_000_000i64..1_700_100_000_000,
            any::<i64>(),
        ]
    }

    /// Runs `ops` against the wheel and a `BTreeMap` model, checking every step.
    fn run_model(start: i64, ops: &[Op], deep_checks: bool) {
        let mut w: TimerWheel<u64> = TimerWheel::new();
        let mut model_now = M;
        let mut pending: BTreeMap<(i64, u64), u64> = BTreeMap::new();
        let mut ids: Vec<(TimerId, i64, u64)> = Vec::new();
        let mut seq = 0u64;
        let mut out = Vec::new();

        let mut advance = |w: &mut TimerWheel<u64>,
                           pending: &mut BTreeMap<(i64, u64), u64>,
                           model_now: &mut i64,
                           to: i64| {
            *model_now = (*model_now).max(to);
            let rest = match model_now.checked_add(1) {
                Some(bound) => pending.split_off(&(bound, 0)),
                None => BTreeMap::new(),
            };
            let expected: Vec<(i64, u64)> = std::mem::replace(pending, rest)
                .into_iter()
                .map(|((d, _), p)| (d, p))
                .collect();
            out.clear();
            w.advance_to(to, &mut out);
            let got: Vec<(i64, u64)> = out.iter().map(|e| (e.deadline, e.payload)).collect();
            assert_eq!(got, expected, "advance_to({to})");
        };

        advance(&mut w, &mut pending, &mut model_now, start);
        for op in ops {
            match op {
                Op::Insert(when) => {
                    let deadline = match when {
                        When::Near(off) | When::Far(off) => model_now.saturating_add(*off),
                        When::Abs(t) => *t,
                        When::SameAs(i) if !ids.is_empty() => ids[i.index(ids.len())].1,
                        When::SameAs(_) => model_now,
                    };
                    let id = w.insert(deadline, seq);
                    pending.insert((deadline, seq), seq);
                    ids.push((id, deadline, seq));
                    seq += 1;
                }
                Op::Cancel(i) => {
                    if !ids.is_empty() {
                        let (id, deadline, s) = ids[i.index(ids.len())];
                        assert_eq!(w.cancel(id), pending.remove(&(deadline, s)));
                    }
                }
                Op::Advance(step) => {
                    let to = match step {
                        Step::By(d) => model_now.saturating_add(*d),
                        Step::To(t) => *t,
                    };
                    advance(&mut w, &mut pending, &mut model_now, to);
                }
            }
            assert_eq!(w.now(), model_now);
            assert_eq!(w.len(), pending.len());
            assert_eq!(w.is_empty(), pending.is_empty());
            assert_eq!(w.next_deadline(), pending.keys().next().map(|&(d, _)| d));
            if deep_checks {
                check_invariants(&w);
            }
        }
        advance(&mut w, &mut pending, &mut model_now, X);
        assert!(w.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn matches_model(start in start(), ops in prop::collection::vec(op(), 0..200)) {
            run_model(start, &ops, false);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn matches_model_with_invariant_checks(start in start(), ops in prop::collection::vec(op(), 0..120)) {
            run_model(start, &ops, true);
        }
    }
}
