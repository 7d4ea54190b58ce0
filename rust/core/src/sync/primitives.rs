//! The atomics, cells and thread functions the lock-free types are written against.
//!
//! Normally these are `std`'s. With the crate feature `loom` they are loom's model-checked
//! versions, so `cargo test --features loom --test loom_sync` explores every interleaving the
//! C++11 memory model allows for small models of [`SpscQueue`](super::SpscQueue), the
//! disruptor's sequencers and the [`Blocking`](super::wait::Blocking) handshake. Nothing here
//! adds behaviour: it only chooses which implementation the code compiles against.

#[cfg(feature = "loom")]
#[allow(unused_imports)]
pub(crate) use loom::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
    sync::{Condvar, Mutex},
    thread::yield_now,
};

#[cfg(not(feature = "loom"))]
#[allow(unused_imports)]
pub(crate) use std::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
    sync::{Condvar, Mutex},
    thread::yield_now,
};

/// An `UnsafeCell` with loom's closure-based access API, so the same code compiles against
/// both. Callers uphold the aliasing rules themselves (every use carries a `// SAFETY:`).
#[cfg(not(feature = "loom"))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(feature = "loom"))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the value.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable raw pointer to the value.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(feature = "loom")]
pub(crate) use loom::cell::UnsafeCell;

/// Locks `m`, ignoring poisoning: the guarded data of the wait handshake (nothing, or a
/// counter) stays valid if a holder panicked.
#[cfg(not(feature = "loom"))]
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Locks `m` (loom's mutex never poisons in a model that does not panic).
#[cfg(feature = "loom")]
pub(crate) fn lock<T>(m: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
