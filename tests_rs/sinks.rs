//! `core::sink` and the engine's exactly-once epochs.
//!
//! - every file format reads back as written (Parquet with the parquet reader, JSON lines with
//!   the arrow-json reader, IPC through an `EpochQueue`); an epoch without rows leaves no file;
//! - the sink protocol refuses rows for another epoch than the open one;
//! - a property test: a durable engine with a file sink, driven through random pushes,
//!   checkpoints, clean restarts and crashes (the engine dropped without `close`, after which
//!   only what was synced counts), publishes exactly the rows an uninterrupted engine without
//!   sinks emits: no duplicate, no gap.

#[path = "common/restore.rs"]
mod restore;
#[path = "common/temp_dir.rs"]
mod temp_dir;
use temp_dir::TempDir;

use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use laminar_core::engine::{DurabilityConfig, Engine, EngineConfig, QueryPlan, SourceConfig};
use laminar_core::sink::epoch_files::new_lineage;
use laminar_core::sink::{EpochQueue, FileFormat, FileSink, Sink, SinkError};
use laminar_core::time::clock::SystemClock;
use laminar_core::time::watermark::WatermarkStrategy;
use proptest::prelude::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// Batch `k` of the test stream: a pure function of `k`.
fn batch(k: i64) -> RecordBatch {
    let n = 100;
    let ts: Vec<i64> = (0..n).map(|i| k * 500 + i * 5).collect();
    let key: Vec<i64> = (0..n).map(|i| (i * 7 + k) % 5).collect();
    let value: Vec<Option<f64>> = (0..n)
        .map(|i| (i % 9 != 0).then_some((i + k) as f64 / 4.0))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ts)),
            Arc::new(Int64Array::from(key)),
            Arc::new(Float64Array::from(value)),
        ],
    )
    .unwrap()
}

/// The rows of `batches` as text, sorted (order across epochs and cores is free).
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = restore::rows(batches);
    out.sort();
    out
}

fn part_files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("part-") && name.ends_with(ext)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_format_reads_back_as_written() {
    let dir = TempDir::new("sink-formats");
    let written = [batch(0), batch(1), batch(2)];
    for format in [
        FileFormat::Parquet,
        FileFormat::JsonLines,
        FileFormat::ArrowIpc,
    ] {
        let path = dir.file(format.extension());
        let mut sink = FileSink::open(&path, format, &new_lineage()).unwrap();
        sink.write(1, &written[..2]).unwrap();
        sink.pre_commit(1).unwrap();
        sink.commit(1).unwrap();
        sink.pre_commit(2).unwrap(); // an epoch without rows
        sink.commit(2).unwrap();
        sink.write(3, &written[2..]).unwrap();
        sink.pre_commit(3).unwrap();
        assert_eq!(
            part_files(&path, format.extension()).len(),
            1,
            "epoch 3 is staged, not published"
        );
        sink.commit(3).unwrap();
        let files = part_files(&path, format.extension());
        assert_eq!(files.len(), 2, "{format:?}: one file per epoch with rows");
        let m = sink.metrics();
        assert_eq!(
            (m.rows_written, m.rows_committed, m.epochs_committed),
            (300, 300, 2)
        );
        assert_eq!(m.last_committed_epoch, Some(3));
        let mut read = Vec::new();
        for f in &files {
            match format {
                FileFormat::Parquet => {
                    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        File::open(f).unwrap(),
                    )
                    .unwrap()
                    .build()
                    .unwrap();
                    read.extend(r.map(|b| b.unwrap()));
                }
                FileFormat::JsonLines => {
                    let r = arrow_json::ReaderBuilder::new(schema())
                        .build(BufReader::new(File::open(f).unwrap()))
                        .unwrap();
                    read.extend(r.map(|b| b.unwrap()));
                }
                FileFormat::ArrowIpc => {
                    let r = arrow_ipc::reader::StreamReader::try_new(File::open(f).unwrap(), None)
                        .unwrap();
                    read.extend(r.map(|b| b.unwrap()));
                }
            }
        }
        assert_eq!(rows(&read), rows(&written), "{format:?}");
    }
}

#[test]
fn an_epoch_queue_hands_out_committed_epochs_until_acknowledged() {
    let dir = TempDir::new("sink-queue");
    let lineage = new_lineage();
    let mut q =
        EpochQueue::in_files(FileSink::open(dir.path(), FileFormat::ArrowIpc, &lineage).unwrap())
            .unwrap();
    q.write(1, &[batch(0)]).unwrap();
    q.pre_commit(1).unwrap();
    assert!(q.oldest().unwrap().is_none(), "staged is not committed");
    q.commit(1).unwrap();
    q.write(2, &[batch(1)]).unwrap();
    q.pre_commit(2).unwrap();
    drop(q); // a crash after checkpoint 2 was written, before its commit

    let mut q =
        EpochQueue::in_files(FileSink::open(dir.path(), FileFormat::ArrowIpc, &lineage).unwrap())
            .unwrap();
    q.recover(Some(2)).unwrap();
    let (e, got) = q.oldest().unwrap().unwrap();
    assert_eq!((e, rows(&got)), (1, rows(&[batch(0)])));
    assert_eq!(
        q.oldest().unwrap().unwrap().0,
        1,
        "handed out again until acknowledged"
    );
    q.acknowledge(1).unwrap();
    let (e, got) = q.oldest().unwrap().unwrap();
    assert_eq!((e, rows(&got)), (2, rows(&[batch(1)])));
    q.acknowledge(2).unwrap();
    assert!(q.oldest().unwrap().is_none());

    let mut mem = EpochQueue::in_memory();
    mem.write(1, &[batch(0)]).unwrap();
    mem.pre_commit(1).unwrap();
    mem.commit(1).unwrap();
    assert_eq!(mem.oldest().unwrap().unwrap().0, 1);
    mem.acknowledge(1).unwrap();
    assert!(mem.oldest().unwrap().is_none());
}

#[test]
fn rows_for_another_epoch_than_the_open_one_are_refused() {
    let dir = TempDir::new("sink-protocol");
    let mut sink = FileSink::open(dir.path(), FileFormat::Parquet, &new_lineage()).unwrap();
    sink.write(1, &[batch(0)]).unwrap();
    let err = sink.write(2, &[batch(1)]).unwrap_err();
    assert!(matches!(err, SinkError::Protocol(_)), "{err}");
    let err = sink.pre_commit(2).unwrap_err();
    assert!(matches!(err, SinkError::Protocol(_)), "{err}");
    sink.pre_commit(1).unwrap();
    sink.commit(1).unwrap();
    assert_eq!(sink.metrics().rows_committed, 100);
}

/// A full disk is reported as such in every format, whether it is hit inside the encoder
/// (an epoch larger than the 1 MiB write buffer: the encoder wraps the I/O error in its own
/// type) or when the buffer is flushed at pre-commit (a small epoch); nothing is staged.
#[test]
fn a_full_disk_is_disk_full_in_every_format_and_stages_nothing() {
    for format in [
        FileFormat::Parquet,
        FileFormat::JsonLines,
        FileFormat::ArrowIpc,
    ] {
        for (batches, budget) in [(2_000i64, 64 << 10), (1, 64)] {
            let dir = TempDir::new("sink-full");
            let mut sink = FileSink::open(dir.path(), format, &new_lineage())
                .unwrap()
                .with_disk_budget(Some(budget));
            let data: Vec<RecordBatch> = (0..batches).map(batch).collect();
            let err = match sink.write(1, &data) {
                Err(e) => e,
                Ok(()) => sink.pre_commit(1).unwrap_err(),
            };
            assert!(
                matches!(err, SinkError::DiskFull { .. }),
                "{format:?}, {batches} batches: {err}"
            );
            assert!(err.to_string().contains("is full"), "{err}");
            let staged: Vec<_> = fs::read_dir(dir.path().join("_staging"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("part-") && !n.ends_with(".inprogress"))
                .collect();
            assert!(staged.is_empty(), "{staged:?}");
            assert!(part_files(dir.path(), format.extension()).is_empty());
        }
    }
}

const PLAN: &str = r#"{"inputs": ["events"], "ops": [{"op": "window_aggregate",
    "window": {"kind": "tumbling", "size_ms": 1000}, "keys": ["key"],
    "aggs": [{"name": "n", "func": "count"}, {"name": "total", "func": "sum", "column": "value"}]}]}"#;

fn engine(state: Option<&Path>, sink_dir: Option<&Path>, cores: usize) -> Engine {
    let config = EngineConfig {
        cores,
        sink_commit_every_ms: None,
        ..EngineConfig::default()
    };
    let mut eng = Engine::new(config, Arc::new(SystemClock)).unwrap();
    if let Some(state) = state {
        eng.enable_durability(DurabilityConfig {
            checkpoint_every_ms: None,
            sync: false,
            ..DurabilityConfig::new(state)
        })
        .unwrap();
    }
    eng.add_source(SourceConfig {
        name: "events".into(),
        time_column: "ts".into(),
        watermark: WatermarkStrategy::BoundedDelay { delay_ms: 100 },
        punctuation_column: None,
        max_future_ms: None,
        idle_timeout_ms: None,
        schema: None,
    })
    .unwrap();
    eng.add_query("per_sec", QueryPlan::from_json(PLAN).unwrap())
        .unwrap();
    if let Some(dir) = sink_dir {
        eng.add_file_sink("per_sec", "per_sec", dir, FileFormat::ArrowIpc, None)
            .unwrap();
    }
    eng
}

#[derive(Debug, Clone)]
enum Step {
    Push,
    Checkpoint,
    /// Dropped without `close`: nothing after the last checkpoint is published.
    Crash,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => Just(Step::Push),
        2 => Just(Step::Checkpoint),
        1 => Just(Step::Crash),
        1 => Just(Step::Restart),
    ]
}

fn published(dir: &Path) -> Vec<String> {
    let mut read = Vec::new();
    for f in part_files(dir, "arrows") {
        let r = arrow_ipc::reader::StreamReader::try_new(File::open(f).unwrap(), None).unwrap();
        read.extend(r.map(|b| b.unwrap()));
    }
    rows(&read)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn crashes_and_restarts_publish_exactly_what_an_uninterrupted_run_emits(
        steps in proptest::collection::vec(step(), 1..24),
        cores in 1usize..=2,
    ) {
        let state = TempDir::new("sink-prop-state");
        let out = TempDir::new("sink-prop-out");
        let sink_dir = out.file("per_sec");
        let mut k = 0i64;
        let mut eng = engine(Some(state.path()), Some(&sink_dir), cores);
        for s in &steps {
            match s {
                Step::Push => {
                    prop_assert!(eng.push_seq("events", &[batch(k)], Some(k as u64)).unwrap());
                    k += 1;
                }
                Step::Checkpoint => {
                    eng.checkpoint().unwrap();
                }
                Step::Crash | Step::Restart => {
                    if matches!(s, Step::Restart) {
                        eng.close().unwrap();
                    }
                    drop(eng);
                    eng = engine(Some(state.path()), Some(&sink_dir), cores);
                    let pos = eng.source_position("events").unwrap();
                    // Pushes are synced before they return (sync=false: to the page cache,
                    // which a dropped engine keeps), so none is lost.
                    prop_assert_eq!(pos.last_seq, (k > 0).then(|| (k - 1) as u64));
                }
            }
        }
        eng.flush().unwrap();
        eng.close().unwrap();

        let mut reference = engine(None, None, 1);
        let pushed: Vec<RecordBatch> = (0..k).map(batch).collect();
        for b in &pushed {
            reference.push("events", std::slice::from_ref(b)).unwrap();
        }
        reference.flush().unwrap();
        let want = rows(&reference.take_output("per_sec").unwrap());
        prop_assert_eq!(published(&sink_dir), want);
        let staged: Vec<_> = fs::read_dir(sink_dir.join("_staging")).unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "LOCK")
            .collect();
        prop_assert!(staged.is_empty(), "left staged: {:?}", staged);
    }
}

#[test]
fn without_a_state_directory_flush_and_close_publish() {
    let out = TempDir::new("sink-volatile");
    let dir = out.file("per_sec");
    let mut eng = engine(None, Some(&dir), 2);
    for k in 0..6 {
        eng.push("events", &[batch(k)]).unwrap();
    }
    assert!(
        published(&dir).is_empty(),
        "no epoch closed yet (sink_commit_every_ms: None)"
    );
    let err = eng.take_output("per_sec").unwrap_err().to_string();
    assert!(err.contains("go to sink 'per_sec'"), "{err}");
    eng.flush().unwrap();
    let after_flush = published(&dir);
    eng.close().unwrap();
    let mut reference = engine(None, None, 1);
    for k in 0..6 {
        reference.push("events", &[batch(k)]).unwrap();
    }
    reference.flush().unwrap();
    assert_eq!(
        after_flush,
        rows(&reference.take_output("per_sec").unwrap())
    );
    assert_eq!(
        published(&dir),
        after_flush,
        "close publishes nothing twice"
    );
}
