//! `RingBuffer`: the pre-allocated slots events live in.
//!
//! The ring owns a power-of-two number of slots, each filled once by the factory at
//! construction and then mutated in place for the life of the ring: publishing never allocates,
//! moves or drops an event (its previous contents are simply overwritten by the producer's
//! closure). Sequence `s` lives in slot `s & mask`.
//!
//! The ring itself synchronizes nothing. Who may touch a slot when is decided by the sequencer
//! and the sequence barriers, which is why the slot accessors are `unsafe`: the caller states
//! which claim or barrier gives it access. The safe entry points are the producer handles and
//! the managed handlers built by [`Disruptor::builder`](super::Disruptor::builder).

use std::fmt;

use super::super::primitives::UnsafeCell;

/// The largest ring accepted: large enough for anything sensible, small enough that sizes
/// and sequences convert between `usize` and `i64` without loss on every platform.
pub const MAX_RING_SIZE: usize = 1 << 30;

/// A ring size that is zero, not a power of two, or above [`MAX_RING_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring size {0} is not a power of two between 1 and 2^30")]
pub struct InvalidRingSize(pub usize);

/// Checks a ring size and returns its mask.
pub(crate) fn check_size(size: usize) -> Result<usize, InvalidRingSize> {
    if size == 0 || !size.is_power_of_two() || size > MAX_RING_SIZE {
        return Err(InvalidRingSize(size));
    }
    Ok(size - 1)
}

/// How far ahead of the slot it is at a streaming party prefetches: 1 KiB of slots (16 lines),
/// at least one slot. Measured with `benches/messaging.rs` (`u64` events, ring of 4096): 512 B
/// to 2 KiB were alike, 256 B gave half the gain.
pub(crate) fn prefetch_ahead<T>() -> i64 {
    (PREFETCH_BYTES / std::mem::size_of::<T>().max(1)).max(1) as i64
}

/// See [`prefetch_ahead`].
const PREFETCH_BYTES: usize = 1024;

/// Whether this CPU has `PREFETCHW` (CPUID `0x8000_0001`, ECX bit 8: every x86_64 AMD part,
/// Intel from Broadwell on), checked once per process. Elsewhere (or under loom) `false`.
pub(crate) fn prefetch_write_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
    {
        static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            use std::arch::x86_64::__cpuid;
            // `unsafe` for the toolchains where `__cpuid` is still an `unsafe fn`.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID exists on every x86_64 CPU and only reads identification
            // registers; the extended leaf is queried only if the CPU reports it.
            unsafe {
                __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
            }
        })
    }
    #[cfg(not(all(target_arch = "x86_64", not(feature = "loom"))))]
    false
}

/// A fixed ring of pre-allocated events. See the module docs.
pub struct RingBuffer<T> {
    slots: Box<[UnsafeCell<T>]>,
    mask: usize,
}

// SAFETY: a slot is accessed mutably by one thread at a time (the producer holding its claim,
// or the single handler of an exclusive stage) and shared (`&T`) by consumers only while no one
// mutates it; the sequencer and barriers enforce this with Release/Acquire sequences (see the
// `unsafe` accessors). `&T` handed to several consumer threads at once needs `T: Sync`; `&mut T`
// handed to different threads over time needs `T: Send`.
unsafe impl<T: Send + Sync> Sync for RingBuffer<T> {}
// SAFETY: the ring owns its events; moving it moves them, hence `T: Send`.
unsafe impl<T: Send> Send for RingBuffer<T> {}

impl<T> RingBuffer<T> {
    /// A ring of `size` slots (a power of two, at most [`MAX_RING_SIZE`]), each filled by one
    /// call of `factory`.
    pub fn new(size: usize, mut factory: impl FnMut() -> T) -> Result<Self, InvalidRingSize> {
        let mask = check_size(size)?;
        let slots = (0..size)
            .map(|_| UnsafeCell::new(factory()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(RingBuffer { slots, mask })
    }

    /// Slots in the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Hints the CPU to fetch the cache line of the slot of `sequence`, without reading it
    /// (a prefetch is no memory access, so it is safe whoever owns the slot; a no-op off
    /// x86_64). A polling consumer that found `sequence` not yet available calls it before it
    /// polls again: when the producer publishes, the consumer's next poll then misses on the
    /// cursor and on the slot line at the same time instead of one after the other (measured
    /// with `benches/messaging.rs`: round trip p50 about one line transfer lower).
    #[inline(always)]
    pub fn prefetch(&self, sequence: i64) {
        self.slots().prefetch(sequence);
    }

    /// The slots and their mask, for loops over many sequences: read once into a local view,
    /// they stay in registers instead of being reloaded through the ring after every atomic
    /// store.
    #[inline(always)]
    pub(crate) fn slots(&self) -> Slots<'_, T> {
        Slots {
            slots: &self.slots,
            mask: self.mask,
        }
    }

    /// Runs `f` on a shared reference to the event of `sequence`.
    ///
    /// # Safety
    /// No one may mutate the slot while `f` runs: `sequence` must be published and visible to
    /// the caller (returned by a [`SequenceBarrier`](super::SequenceBarrier) wait), the caller's
    /// own consumer sequence must still be below `sequence` (so producers, gated on it, cannot
    /// reclaim the slot), and no exclusive (`&mut`) handler may be processing `sequence`.
    #[inline]
    pub unsafe fn with_slot<R>(&self, sequence: i64, f: impl FnOnce(&T) -> R) -> R {
        // SAFETY: the caller guarantees that nobody mutates the slot meanwhile (see above).
        unsafe { self.slots().with(sequence, f) }
    }

    /// Runs `f` on an exclusive reference to the event of `sequence`.
    ///
    /// # Safety
    /// No one else may access the slot while `f` runs: either the caller holds an unpublished
    /// claim on `sequence` whose wrap point the gating sequences have passed, or the caller is
    /// the only consumer of its stage and `sequence` is available to it but not yet released
    /// by it.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn with_slot_mut<R>(&self, sequence: i64, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the caller guarantees exclusive access to the slot (see above).
        unsafe { self.slots().with_mut(sequence, f) }
    }
}

/// A borrowed view of a ring's slots (see [`RingBuffer::slots`]); its accessors have the
/// contracts of the ring's.
pub(crate) struct Slots<'a, T> {
    slots: &'a [UnsafeCell<T>],
    /// `slots.len() - 1`, with `slots.len()` a power of two.
    mask: usize,
}

impl<T> Clone for Slots<'_, T> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slots<'_, T> {}

impl<'a, T> Slots<'a, T> {
    /// Slots in the ring.
    #[inline(always)]
    pub(crate) fn capacity(self) -> usize {
        self.mask + 1
    }

    /// The cell of `sequence` (slot `sequence & mask`).
    #[inline(always)]
    fn cell(self, sequence: i64) -> &'a UnsafeCell<T> {
        // `as usize` keeps the low bits, which is all the mask looks at (also for negative
        // sequences, which the accessors' contracts exclude anyway).
        let index = (sequence as usize) & self.mask;
        debug_assert!(index < self.slots.len());
        // SAFETY: `mask == slots.len() - 1` with `slots.len()` a power of two (`check_size` in
        // `RingBuffer::new`; neither changes afterwards), so `index <= mask < slots.len()`.
        unsafe { self.slots.get_unchecked(index) }
    }

    /// [`RingBuffer::prefetch`] on this view.
    #[inline(always)]
    pub(crate) fn prefetch(self, sequence: i64) {
        #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.cell(sequence).with(|p| p as *const i8);
            // SAFETY: `_mm_prefetch` only needs SSE (baseline on x86_64); it never faults and
            // is no memory access in the language's sense, and `p` points into our slots.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
        }
        #[cfg(not(all(target_arch = "x86_64", not(feature = "loom"))))]
        let _ = sequence;
    }

    /// Hints the CPU to fetch the line of the slot of `sequence` *for writing* (`PREFETCHW`:
    /// the line arrives exclusive, so a later store to it needs no ownership request). Like
    /// [`prefetch`](Self::prefetch) it is no memory access, whoever owns the slot. The caller
    /// checks [`prefetch_write_supported`] first (on a CPU without the instruction it is not
    /// guaranteed to be a no-op). A no-op off x86_64.
    #[inline(always)]
    pub(crate) fn prefetch_write(self, sequence: i64) {
        #[cfg(all(target_arch = "x86_64", not(feature = "loom")))]
        {
            let p = self.cell(sequence).with(|p| p as *const u8);
            // SAFETY: the caller checked `prefetch_write_supported`; a prefetch never faults
            // and writes nothing (declared `readonly`, the conservative choice: it reads no
            // value either), and `p` points into our slots anyway.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) p,
                    options(readonly, nostack, preserves_flags)
                )
            };
        }
        #[cfg(not(all(target_arch = "x86_64", not(feature = "loom"))))]
        let _ = sequence;
    }

    /// [`RingBuffer::with_slot`] on this view.
    ///
    /// # Safety
    /// As for [`RingBuffer::with_slot`].
    #[inline(always)]
    pub(crate) unsafe fn with<R>(self, sequence: i64, f: impl FnOnce(&T) -> R) -> R {
        // SAFETY: the caller guarantees that nobody mutates the slot meanwhile.
        self.cell(sequence).with(|p| f(unsafe { &*p }))
    }

    /// [`RingBuffer::with_slot_mut`] on this view.
    ///
    /// # Safety
    /// As for [`RingBuffer::with_slot_mut`].
    #[inline(always)]
    pub(crate) unsafe fn with_mut<R>(self, sequence: i64, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the caller guarantees exclusive access to the slot.
        self.cell(sequence).with_mut(|p| f(unsafe { &mut *p }))
    }
}

impl<T> fmt::Debug for RingBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuffer")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_powers_of_two() {
        assert_eq!(RingBuffer::new(0, || 0u8).err(), Some(InvalidRingSize(0)));
        assert_eq!(RingBuffer::new(6, || 0u8).err(), Some(InvalidRingSize(6)));
        assert!(RingBuffer::new(MAX_RING_SIZE * 2, || 0u8).is_err());
        assert_eq!(RingBuffer::new(1, || 0u8).map(|r| r.capacity()), Ok(1));
        assert_eq!(RingBuffer::new(8, || 0u8).map(|r| r.capacity()), Ok(8));
    }

    #[test]
    fn factory_fills_every_slot_once_and_slots_are_mutated_in_place() {
        let mut calls = 0;
        let ring = RingBuffer::new(4, || {
            calls += 1;
            Vec::<u32>::with_capacity(16)
        })
        .unwrap();
        assert_eq!(calls, 4);
        // SAFETY: single-threaded test; nothing else touches the ring.
        let before = unsafe { ring.with_slot(2, |v| v.as_ptr()) };
        for seq in [2i64, 6, 10] {
            // SAFETY: as above.
            unsafe {
                ring.with_slot_mut(seq, |v| {
                    v.clear();
                    v.push(seq as u32);
                })
            };
        }
        // SAFETY: as above.
        let (after, last) = unsafe { ring.with_slot(2, |v| (v.as_ptr(), v[0])) };
        assert_eq!(
            before, after,
            "the event's buffer was reused, not reallocated"
        );
        assert_eq!(last, 10);
        // A prefetch touches nothing: any sequence, published or not, negative included.
        for seq in [-1i64, 0, 3, 1 << 40] {
            ring.prefetch(seq);
        }
        // SAFETY: as above.
        assert_eq!(unsafe { ring.with_slot(2, |v| v[0]) }, 10);
        if prefetch_write_supported() {
            for seq in [-1i64, 0, 2, 3, 1 << 40] {
                ring.slots().prefetch_write(seq);
            }
        }
        // SAFETY: as above.
        assert_eq!(unsafe { ring.with_slot(2, |v| v[0]) }, 10);
    }

    #[test]
    fn prefetch_distance_is_a_kibibyte_of_slots_and_at_least_one() {
        assert_eq!(prefetch_ahead::<u64>(), 128);
        assert_eq!(prefetch_ahead::<[u64; 3]>(), 42);
        assert_eq!(prefetch_ahead::<[u8; 4096]>(), 1);
        assert_eq!(prefetch_ahead::<()>(), 1024);
    }
}
