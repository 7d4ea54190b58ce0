//! State stores: where operators keep keyed state between batches.
//!
//! What this module owns:
//! - [`StateStore`] ([`store`]): ordered byte keys to byte values — `get` / `put` / `delete`,
//!   prefix and range scans in key order, `snapshot` / `restore`, and `maintain` between
//!   batches. Operators see `dyn StateStore` (the dedup operator owns a `Box<dyn StateStore>`
//!   for its keyed state).
//! - [`MemStore`] ([`memory`]): an ordered map on the heap, for state that fits in memory.
//! - [`MmapStore`] ([`mmap`]): large state in a memory-mapped, hash-indexed, sorted file,
//!   with an in-memory overlay of recent writes and atomic compaction into a new file (by
//!   `maintain` once the overlay is large); [`MmapStore::scratch`] makes one in a file of its
//!   own that is deleted with the store (`dedup(state="mmap")`).
//! - the state image format (`image`): the bytes of every snapshot and of every `MmapStore`
//!   file — sorted records, a sparse index for seeks, an optional open-addressing hash index
//!   (`index`, slots that hold small records inline so that a lookup costs one cache miss;
//!   keyed by the fixed hash of `hash`), the index archived with rkyv and validated with
//!   bytecheck, a masked crc32c over everything.
//! - [`StateError`] ([`error`]).
//!
//! Invariants:
//! - a snapshot written by either store restores into either store; `restore` replaces the
//!   whole contents or fails leaving the store unchanged;
//! - file and snapshot bytes are validated once (at open / restore) before use; afterwards
//!   every access is still bounds-checked, so no file content can cause a panic or undefined
//!   behaviour — at worst a validated-but-wrong file (faulty writer) misdirects a lookup;
//! - state files are replaced only by write-temporary, fsync, rename, fsync-directory; a
//!   mapped file is never modified.
//!
//! What it must never do: allocate on `get`; panic on anything read from a file or snapshot;
//! write into a file that is (or may be) mapped; know about operators, threads or
//! checkpoints (it sits below `checkpoint`, which stores the snapshots it produces).
//!
//! Measured on the project's 2-vCPU VM (`cargo bench -p laminar-core --bench state_store`):
//! a cold, dependent `MmapStore` point lookup at 10M keys (8-byte keys, 16-byte values) takes
//! about 290 ns (225 ns at 1M) against the 500 ns budget; a `MemStore` (`BTreeMap`) lookup
//! takes 1.2 µs at 1M and 2.3 µs at 10M, so large keyed state belongs in an `MmapStore`.

pub mod error;
mod file;
mod hash;
mod image;
mod index;
pub mod memory;
pub mod mmap;
pub mod store;

pub use error::StateError;
pub use memory::MemStore;
pub use mmap::MmapStore;
pub use store::{Scan, StateStore};
