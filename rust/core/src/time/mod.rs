//! Event time: timestamps, conversion of time columns, watermark generation and combination,
//! processing-time clocks, and the hierarchical timer wheel for event-time timers.
//!
//! Event time is always `i64` milliseconds since the Unix epoch inside the engine. Wall-clock
//! (processing) time never moves a watermark, except through the two explicit rules in
//! [`watermark`]: idle-source detection and the cap on timestamps far in the future.

pub mod clock;
pub mod convert;
pub mod timer_wheel;
pub mod tracker;
pub mod watermark;

/// Event time in milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// Largest event time the engine accepts (9999-12-31T23:59:59.999Z). Beyond it window
/// arithmetic could overflow, so rows outside `[MIN_EVENT_TIME, MAX_EVENT_TIME]` are rejected.
pub const MAX_EVENT_TIME: Timestamp = 253_402_300_799_999;
/// Smallest event time the engine accepts (the negation of [`MAX_EVENT_TIME`]).
pub const MIN_EVENT_TIME: Timestamp = -MAX_EVENT_TIME;
