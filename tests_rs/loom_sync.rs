//! (being written) Run with `cargo test -p laminar-core --features loom --test loom_sync`.
#![cfg(feature = "loom")]
