//! # laminar-core
//!
//! The engine of laminar, an embedded streaming engine: Arrow record batches in, windowed
//! results out, event time throughout. This crate has no Python in it; `laminar-py` binds it.
//!
//! Layers, from the top (each uses only those below it):
//! - [`engine`]: sources, query registry, validation, the driver of the reactor;
//! - [`reactor`]: the single-threaded event loop (operator chains, timers, watermarks);
//! - [`operator`]: vectorised filter, projection, windows and aggregates;
//! - [`time`]: event time, watermarks, the timer wheel.
//!
//! Durability sits beside the reactor: [`wal`] (the write-ahead log of inputs),
//! [`checkpoint`] (consistent snapshots of every core, their files and manifest) and
//! [`state`] (the `StateStore` trait and its in-memory and memory-mapped stores).
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, Float64Array, RecordBatch};
//! use arrow_schema::{DataType, Field, Schema};
//! use laminar_core::engine::{Engine, QueryPlan, SourceConfig};
//! use laminar_core::time::watermark::WatermarkStrategy;
//!
//! let mut eng = Engine::default();
//! eng.add_source(SourceConfig {
//!     name: "trades".into(), time_column: "ts".into(),
//!     watermark: WatermarkStrategy::BoundedDelay { delay_ms: 200 },
//!     punctuation_column: None, max_future_ms: None, idle_timeout_ms: None, schema: None,
//! }).unwrap();
//! let plan = QueryPlan::from_json(r#"{"inputs": ["trades"], "ops": [{"op": "window_aggregate",
//!     "window": {"kind": "tumbling", "size_ms": 1000}, "keys": ["key"],
//!     "aggs": [{"name": "n", "func": "count"}, {"name": "total", "func": "sum", "column": "value"}]}]}"#).unwrap();
//! eng.add_query("per_sec", plan).unwrap();
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("ts", DataType::Int64, false),
//!     Field::new("key", DataType::Int64, false),
//!     Field::new("value", DataType::Float64, false),
//! ]));
//! let batch = RecordBatch::try_new(schema, vec![
//!     Arc::new(Int64Array::from(vec![10, 500, 1200])),
//!     Arc::new(Int64Array::from(vec![1, 1, 2])),
//!     Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
//! ]).unwrap();
//! eng.push("trades", &[batch]).unwrap();
//! eng.flush().unwrap();
//! let out = eng.take_output("per_sec").unwrap();
//! assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
//! ```

pub mod checkpoint;
#[doc(hidden)]
pub mod crash_point;
pub mod disk_budget;
pub mod engine;
pub mod error;
mod hash;
pub mod io;
pub mod net;
pub mod operator;
pub mod reactor;
pub mod runtime;
pub(crate) mod simd;
pub mod sink;
pub mod state;
pub mod sync;
pub mod time;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
