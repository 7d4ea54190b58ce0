//! `DiskBudget`: the fault injection of a full disk, for tests.
//!
//! A budget is the free space of a pretend disk: writers that honour it take the bytes they
//! are about to write from it, write what they were granted, and fail with `ENOSPC` when that
//! was less than asked, which is what a real disk does when it fills up (a short write, then
//! the error). The write-ahead log (`WalConfig::disk_budget`) and the file sinks
//! (`FileSink::with_disk_budget`) use it. Production code never creates one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes that may still be written before writes fail as on a full disk.
#[derive(Debug)]
pub struct DiskBudget(AtomicU64);

impl DiskBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        DiskBudget(AtomicU64::new(bytes))
    }

    /// Takes up to `n` bytes; returns how many were granted (less than `n` once it runs out).
    pub fn take(&self, n: u64) -> u64 {
        let mut granted = 0;
        // fetch_update only fails when the closure returns None, which it never does.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                granted = left.min(n);
                Some(left - granted)
            });
        granted
    }

    /// How many of `n` bytes a writer under `budget` may write: all of them without one.
    pub fn grant(budget: Option<&DiskBudget>, n: u64) -> u64 {
        match budget {
            Some(b) => b.take(n),
            None => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_what_is_left_then_nothing() {
        let b = DiskBudget::new(10);
        assert_eq!(b.take(6), 6);
        assert_eq!(b.take(6), 4);
        assert_eq!(b.take(1), 0);
        assert_eq!(b.take(0), 0);
    }
}
