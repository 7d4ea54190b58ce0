//! (being written) Run with `cargo test -p laminar-core --features loom --test loom_disruptor`.
#![cfg(feature = "loom")]
