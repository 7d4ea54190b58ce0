//! Credit-based backpressure in the style of Flink's network stack.
//!
//! A [`CreditGate`] guards `n` channels (the runtime's per-core inboxes). Sending one message
//! on a channel takes one credit; the receiver gives it back after processing the message.
//! Each channel owns `exclusive` credits, and all channels share a pool of `floating`
//! credits that a busy channel borrows once its own are in use; released credits go back to
//! the pool first. A channel therefore never has more than `exclusive + floating` messages in
//! flight, and the gate never more than `n * exclusive + floating`: memory stays bounded
//! however fast producers push.
//!
//! Hysteresis: when a channel cannot get a credit it becomes *backpressured* and stays so until
//! its messages in flight fall to the `low_watermark`. Without this a producer would be let in
//! again as soon as one credit came back and the channel would flap at its limit.
//!
//! What happens when a credit is refused is the [`Overflow`] policy: [`Overflow::Block`] waits
//! (on a [`Blocking`] wait strategy that releases signal), [`Overflow::Drop`] reports
//! [`Refused::Dropped`] so the caller discards the message and counts it, and
//! [`Overflow::Error`] reports [`Refused::Full`] so the caller can fail the push.
//!
//! Invariants (checked by the tests and `tests_rs/sync_stress.rs`): for every channel
//! `exclusive_used <= exclusive`; `pool + sum(floating_used) == floating` whenever no call is
//! in progress; a release never takes a counter below zero, because a message is released only
//! after its acquire completed (the send happens-after the acquire).

use crossbeam_utils::CachePadded;

use super::primitives::{AtomicBool, AtomicU64, Ordering};
use super::wait::{Blocking, WaitStrategy};

/// What to do when a channel has no credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Wait until the receiver gives credits back.
    #[default]
    Block,
    /// Refuse the message; the caller discards it and counts it.
    Drop,
    /// Refuse the message; the caller reports an error.
    Error,
}

impl Overflow {
    /// Parses "block", "drop" or "error".
    pub fn parse(s: &str) -> Option<Overflow> {
        match s {
            "block" => Some(Overflow::Block),
            "drop" => Some(Overflow::Drop),
            "error" => Some(Overflow::Error),
            _ => None,
        }
    }

    /// The name [`parse`](Self::parse) accepts.
    pub fn name(self) -> &'static str {
        match self {
            Overflow::Block => "block",
            Overflow::Drop => "drop",
            Overflow::Error => "error",
        }
    }
}

/// Settings of a [`CreditGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditConfig {
    /// Credits owned by each channel.
    pub exclusive: u64,
    /// Credits shared by all channels.
    pub floating: u64,
    /// A backpressured channel re-opens when its messages in flight fall to this.
    pub low_watermark: u64,
    /// What to do when a credit is refused.
    pub overflow: Overflow,
}

impl Default for CreditConfig {
    fn default() -> Self {
        CreditConfig {
            exclusive: 32,
            floating: 32,
            low_watermark: 16,
            overflow: Overflow::Block,
        }
    }
}

/// Why [`CreditGate::acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Policy [`Overflow::Drop`]: discard the message.
    Dropped,
    /// Policy [`Overflow::Error`]: report that the channel is full.
    Full,
}

struct Channel {
    exclusive_used: AtomicU64,
    floating_used: AtomicU64,
    backpressured: AtomicBool,
}

impl Channel {
    fn in_flight(&self) -> u64 {
        self.exclusive_used.load(Ordering::Acquire) + self.floating_used.load(Ordering::Acquire)
    }
}

/// Counters of a [`CreditGate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditMetrics {
    /// Credits granted.
    pub acquired: u64,
    /// Credits given back.
    pub released: u64,
    /// Acquisitions that had to wait (policy Block).
    pub blocked: u64,
    /// Messages refused under policy Drop.
    pub dropped: u64,
    /// Messages refused under policy Error.
    pub refused: u64,
    /// Floating credits free now.
    pub floating_available: u64,
    /// Per channel: messages in flight now.
    pub in_flight: Vec<u64>,
    /// Per channel: whether it is backpressured now.
    pub backpressured: Vec<bool>,
}

/// Credits for `n` channels. See the module docs.
pub struct CreditGate {
    config: CreditConfig,
    channels: Box<[CachePadded<Channel>]>,
    pool: CachePadded<AtomicU64>,
    acquired: AtomicU64,
    released: AtomicU64,
    blocked: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    waiter: Blocking,
}

impl CreditGate {
    /// A gate for `channels` channels. `low_watermark` is capped below the channel's limit.
    pub fn new(channels: usize, mut config: CreditConfig) -> Self {
        config.exclusive = config.exclusive.max(1);
        let limit = config.exclusive + config.floating;
        config.low_watermark = config.low_watermark.min(limit - 1);
        CreditGate {
            config,
            channels: (0..channels)
                .map(|_| {
                    CachePadded::new(Channel {
                        exclusive_used: AtomicU64::new(0),
                        floating_used: AtomicU64::new(0),
                        backpressured: AtomicBool::new(false),
                    })
                })
                .collect(),
            pool: CachePadded::new(AtomicU64::new(config.floating)),
            acquired: AtomicU64::new(0),
            released: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            waiter: Blocking::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> CreditConfig {
        self.config
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Decrements `counter` if it is below `limit` (`increment`) or above zero (decrement).
    fn bump(counter: &AtomicU64, up: bool, limit: u64) -> bool {
        let mut cur = counter.load(Ordering::Acquire);
        loop {
            let next = if up {
                if cur >= limit {
                    return false;
                }
                cur + 1
            } else {
                if cur == 0 {
                    return false;
                }
                cur - 1
            };
            match counter.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes one credit of `channel` if one is free and the channel is not backpressured,
    /// without counting it (see [`try_acquire`](Self::try_acquire)).
    fn take(&self, channel: usize) -> bool {
        let Some(ch) = self.channels.get(channel) else {
            return false;
        };
        if ch.backpressured.load(Ordering::Acquire) {
            return false;
        }
        let granted = Self::bump(&ch.exclusive_used, true, self.config.exclusive)
            || (Self::bump(&self.pool, false, 0) && {
                ch.floating_used.fetch_add(1, Ordering::AcqRel);
                true
            });
        if !granted {
            ch.backpressured.store(true, Ordering::Release);
            // A release may have run between our failed attempt and the store above and seen
            // the flag clear: re-check so the channel cannot stay closed with nothing in
            // flight to re-open it.
            if ch.in_flight() <= self.config.low_watermark {
                ch.backpressured.store(false, Ordering::Release);
            }
        }
        granted
    }

    /// Takes one credit of `channel` if one is free and the channel is not backpressured.
    pub fn try_acquire(&self, channel: usize) -> bool {
        let granted = self.take(channel);
        if granted {
            self.acquired.fetch_add(1, Ordering::Relaxed);
        }
        granted
    }

    /// Takes one credit on each channel in `channels` (repeats allowed), all or nothing,
    /// applying the overflow policy when one is refused.
    pub fn acquire(&self, channels: &[usize]) -> Result<(), Refused> {
        if self.try_acquire_all(channels) {
            return Ok(());
        }
        match self.config.overflow {
            Overflow::Drop => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(Refused::Dropped)
            }
            Overflow::Error => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Refused::Full)
            }
            Overflow::Block => {
                self.blocked.fetch_add(1, Ordering::Relaxed);
                self.waiter
                    .wait_until(&mut || self.try_acquire_all(channels));
                Ok(())
            }
        }
    }

    /// All or nothing: a partial take is put back uncounted, so the counters see only whole
    /// acquisitions.
    fn try_acquire_all(&self, channels: &[usize]) -> bool {
        for (i, &c) in channels.iter().enumerate() {
            if !self.take(c) {
                for &done in &channels[..i] {
                    self.give_back(done, 1);
                }
                return false;
            }
        }
        self.acquired
            .fetch_add(channels.len() as u64, Ordering::Relaxed);
        true
    }

    /// Returns up to `n` credits of `channel` (floating ones to the pool first), re-opens
    /// the channel at its low watermark, and says how many were held.
    fn give_back(&self, channel: usize, n: u64) -> u64 {
        let Some(ch) = self.channels.get(channel) else {
            return 0;
        };
        let mut given = 0;
        for _ in 0..n {
            if Self::bump(&ch.floating_used, false, 0) {
                self.pool.fetch_add(1, Ordering::AcqRel);
            } else if !Self::bump(&ch.exclusive_used, false, 0) {
                break; // more released than held: a caller bug; never go below zero
            }
            given += 1;
        }
        if ch.backpressured.load(Ordering::Acquire) && ch.in_flight() <= self.config.low_watermark {
            ch.backpressured.store(false, Ordering::Release);
        }
        given
    }

    /// Gives `n` credits of `channel` back (the receiver processed `n` messages) and wakes a
    /// blocked producer.
    pub fn release(&self, channel: usize, n: u64) {
        if n == 0 {
            return;
        }
        let given = self.give_back(channel, n);
        self.released.fetch_add(given, Ordering::Relaxed);
        self.waiter.signal();
    }

    /// Messages in flight on `channel`.
    pub fn in_flight(&self, channel: usize) -> u64 {
        self.channels.get(channel).map_or(0, |c| c.in_flight())
    }

    /// The counters now.
    pub fn metrics(&self) -> CreditMetrics {
        CreditMetrics {
            acquired: self.acquired.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            floating_available: self.pool.load(Ordering::Relaxed),
            in_flight: self.channels.iter().map(|c| c.in_flight()).collect(),
            backpressured: self
                .channels
                .iter()
                .map(|c| c.backpressured.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl std::fmt::Debug for CreditGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditGate")
            .field("config", &self.config)
            .field("metrics", &self.metrics())
            .finish()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gate(exclusive: u64, floating: u64, low: u64, overflow: Overflow) -> CreditGate {
        CreditGate::new(
            2,
            CreditConfig {
                exclusive,
                floating,
                low_watermark: low,
                overflow,
            },
        )
    }

    #[test]
    fn exclusive_then_floating_then_refused() {
        let g = gate(2, 1, 0, Overflow::Error);
        assert!(g.try_acquire(0) && g.try_acquire(0));
        assert!(g.try_acquire(0), "borrows the floating credit");
        assert!(!g.try_acquire(0));
        assert!(g.try_acquire(1) && g.try_acquire(1));
        assert!(!g.try_acquire(1), "the pool is empty");
        assert_eq!(g.acquire(&[1]), Err(Refused::Full));
        let m = g.metrics();
        assert_eq!((m.acquired, m.refused, m.floating_available), (5, 1, 0));
        assert_eq!(m.in_flight, vec![3, 2]);
    }

    #[test]
    fn hysteresis_keeps_a_channel_closed_until_the_low_watermark() {
        let g = gate(4, 0, 1, Overflow::Drop);
        for _ in 0..4 {
            assert!(g.try_acquire(0));
        }
        assert_eq!(g.acquire(&[0]), Err(Refused::Dropped));
        g.release(0, 1);
        assert!(!g.try_acquire(0), "3 in flight > low watermark 1");
        g.release(0, 2);
        assert!(g.try_acquire(0), "re-opened at 1 in flight");
        assert_eq!(g.metrics().dropped, 1);
    }

    #[test]
    fn released_credits_refill_the_pool_first() {
        let g = gate(1, 2, 0, Overflow::Error);
        assert!(g.try_acquire(0) && g.try_acquire(0) && g.try_acquire(0));
        assert_eq!(g.metrics().floating_available, 0);
        g.release(0, 2);
        assert_eq!(g.metrics().floating_available, 2);
        assert!(g.try_acquire(1) && g.try_acquire(1));
    }

    #[test]
    fn all_or_nothing_rolls_back() {
        let g = gate(1, 0, 0, Overflow::Error);
        assert!(g.try_acquire(1));
        assert_eq!(g.acquire(&[0, 1]), Err(Refused::Full));
        assert_eq!(g.in_flight(0), 0, "channel 0's credit was given back");
        let m = g.metrics();
        assert_eq!((m.acquired, m.released), (1, 0));
    }

    #[test]
    fn block_waits_for_a_release() {
        let g = Arc::new(gate(1, 0, 0, Overflow::Block));
        g.acquire(&[0]).unwrap();
        let g2 = g.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            g2.release(0, 1);
        });
        g.acquire(&[0]).unwrap();
        t.join().unwrap();
        assert_eq!(g.metrics().blocked, 1);
        assert_eq!(g.in_flight(0), 1);
    }
}
