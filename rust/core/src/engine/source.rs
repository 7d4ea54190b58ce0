//! Sources: the engine's inputs. A source owns its schema, its time column and its watermark
//! generator; it validates every pushed batch before anything is applied and turns it into a
//! stream batch (user columns plus the hidden event-time column).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::time::convert::{is_time_type, max_millis, to_event_times};
use crate::time::watermark::{GeneratorConfig, WatermarkGenerator, WatermarkStrategy};
use crate::time::Timestamp;

/// How a source is declared.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique name.
    pub name: String,
    /// Event-time column (int64 epoch ms or a timestamp).
    pub time_column: String,
    /// Watermark strategy.
    pub watermark: WatermarkStrategy,
    /// Column carrying watermarks, for [`WatermarkStrategy::Punctuated`].
    pub punctuation_column: Option<String>,
    /// Rows more than this ahead of processing time do not move the watermark (`None`: off).
    pub max_future_ms: Option<i64>,
    /// Processing time without data after which the source stops holding watermarks back.
    pub idle_timeout_ms: Option<i64>,
    /// Declared schema; if `None`, the first push fixes it.
    pub schema: Option<SchemaRef>,
}

/// A validated batch ready for the reactor.
pub(crate) struct Prepared {
    pub batch: RecordBatch,
    pub times: arrow_array::Int64Array,
    pub max_time: Timestamp,
    pub punctuation: Option<Timestamp>,
}

/// Resolved schema information of a source.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub user: SchemaRef,
    pub stream: SchemaRef,
    pub time_index: usize,
    pub punct_index: Option<usize>,
}

pub(crate) struct Source {
    pub config: SourceConfig,
    pub bound: Option<Bound>,
    pub generator: WatermarkGenerator,
    pub ended: bool,
    pub rows: u64,
    pub batches: u64,
    /// Rows refused by backpressure policy "drop".
    pub dropped_rows: u64,
    /// The highest sequence number a producer pushed with (`push` with `seq`): a push with
    /// one at or below it is recognised as already applied.
    pub last_seq: Option<u64>,
}

impl Source {
    pub fn new(config: SourceConfig, now_ms: i64) -> Result<Self> {
        if config.watermark == WatermarkStrategy::Punctuated && config.punctuation_column.is_none()
        {
            return Err(Error::InvalidPlan(format!(
                "source '{}': a punctuated watermark needs the column that carries it",
                config.name
            )));
        }
        let generator = WatermarkGenerator::new(
            GeneratorConfig {
                strategy: config.watermark.clone(),
                max_future_ms: config.max_future_ms,
                idle_timeout_ms: config.idle_timeout_ms,
            },
            now_ms,
        );
        let mut source = Source {
            config,
            bound: None,
            generator,
            ended: false,
            rows: 0,
            batches: 0,
            dropped_rows: 0,
            last_seq: None,
        };
        if let Some(schema) = source.config.schema.clone() {
            source.bound = Some(source.bind(&schema)?);
        }
        Ok(source)
    }

    /// Checks that `schema` can be this source's schema and derives the stream schema.
    pub fn bind(&self, schema: &SchemaRef) -> Result<Bound> {
        let name = &self.config.name;
        let context = format!(" in source '{name}' (its time column)");
        let time_index = schema
            .index_of(&self.config.time_column)
            .map_err(|_| Error::column_not_found(&self.config.time_column, &context, schema))?;
        let time_type = schema.field(time_index).data_type();
        if !is_time_type(time_type) {
            return Err(Error::ColumnType {
                column: self.config.time_column.clone(),
                expected: "the time column must be int64 epoch milliseconds or a timestamp".into(),
                found: time_type.to_string(),
            });
        }
        if schema.fields().iter().any(|f| f.name() == TIME_COLUMN) {
            return Err(Error::InvalidPlan(format!(
                "column name '{TIME_COLUMN}' is reserved"
            )));
        }
        let punct_index = match &self.config.punctuation_column {
            None => None,
            Some(p) => {
                let i = schema.index_of(p).map_err(|_| {
                    Error::column_not_found(
                        p,
                        &format!(" in source '{name}' (its watermark column)"),
                        schema,
                    )
                })?;
                if !is_time_type(schema.field(i).data_type()) {
                    return Err(Error::ColumnType {
                        column: p.clone(),
                        expected:
                            "the watermark column must be int64 epoch milliseconds or a timestamp"
                                .into(),
                        found: schema.field(i).data_type().to_string(),
                    });
                }
                Some(i)
            }
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(TIME_COLUMN, DataType::Int64, false));
        let user = Arc::new(Schema::new(schema.fields().clone()));
        Ok(Bound {
            user,
            stream: Arc::new(Schema::new(fields)),
            time_index,
            punct_index,
        })
    }

    /// Validates `batch` against `bound` and builds the stream batch. Applies nothing.
    pub fn prepare(&self, bound: &Bound, batch: &RecordBatch) -> Result<Prepared> {
        let got = batch.schema();
        let same_layout = got.fields() == bound.user.fields();
        if !same_layout {
            check_same_fields(&self.config.name, &bound.user, &got)?;
        }
        let time_col = batch
            .column_by_name(&self.config.time_column)
            .ok_or_else(|| {
                Error::column_not_found(&self.config.time_column, " (time column)", &batch.schema())
            })?;
        let times = to_event_times(time_col).map_err(|p| Error::TimeColumn {
            source_name: self.config.name.clone(),
            column: self.config.time_column.clone(),
            problem: p.to_string(),
        })?;
        let punctuation = match bound.punct_index {
            None => None,
            Some(i) => {
                max_millis(batch.column(batch.schema().index_of(bound.user.field(i).name())?))
                    .map_err(|p| Error::TimeColumn {
                        source_name: self.config.name.clone(),
                        column: self.config.punctuation_column.clone().unwrap_or_default(),
                        problem: p.to_string(),
                    })?
            }
        };
        // Columns are matched by name: a batch with the same columns in another order is fine.
        let mut columns = Vec::with_capacity(bound.user.fields().len() + 1);
        if same_layout {
            columns.extend(batch.columns().iter().cloned());
        } else {
            for f in bound.user.fields() {
                columns.push(batch.column(got.index_of(f.name())?).clone());
            }
        }
        columns.push(Arc::new(times.millis.clone()));
        let batch = RecordBatch::try_new(bound.stream.clone(), columns)?;
        Ok(Prepared {
            batch,
            times: times.millis,
            max_time: times.max,
            punctuation,
        })
    }
}

/// Compares names and types (not nullability, order or metadata) and says what differs.
fn check_same_fields(source: &str, expected: &Schema, got: &Schema) -> Result<()> {
    let mismatch = |detail: String| Error::SchemaMismatch {
        source_name: source.to_string(),
        detail,
    };
    for f in expected.fields() {
        match got.field_with_name(f.name()) {
            Err(_) => {
                return Err(mismatch(format!(
                    "column '{}' ({}) is missing",
                    f.name(),
                    f.data_type()
                )))
            }
            Ok(g) if g.data_type() != f.data_type() => {
                return Err(mismatch(format!(
                    "column '{}' has type {} but the source has {}",
                    f.name(),
                    g.data_type(),
                    f.data_type()
                )))
            }
            Ok(_) => {}
        }
    }
    for g in got.fields() {
        if expected.field_with_name(g.name()).is_err() {
            return Err(mismatch(format!(
                "unexpected extra column '{}' ({})",
                g.name(),
                g.data_type()
            )));
        }
    }
    Ok(())
}
