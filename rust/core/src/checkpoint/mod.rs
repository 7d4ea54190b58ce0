//! Checkpoints: the files that hold consistent snapshots of the engine, and the lock that
//! keeps one engine per state directory.
//!
//! - [`store`] — `CheckpointStore`: checksummed checkpoint files written atomically (temporary
//!   file, fsync, rename, directory fsync), a MANIFEST naming the latest complete one,
//!   retention of the last K, and an explicit repair (`fall_back`) for a damaged latest.
//! - [`lock`] — `StateDirLock` — an OS file lock on `<state_dir>/LOCK`.
//! - [`error`] — `CheckpointError`.
//!
//! What goes *into* a checkpoint (operator state, watermarks, timers, source positions) is
//! decided by the engine (`engine::durable`); this module only stores bytes and never
//! interprets them.

pub mod error;
pub mod lock;
pub mod store;

pub use error::CheckpointError;
pub use lock::StateDirLock;
pub use store::{write_atomically, CheckpointStore};
