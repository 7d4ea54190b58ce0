//! Query plans: the serialisable description the Python builder produces, and its compilation
//! into an operator chain against a known stream schema.

use arrow_schema::{DataType, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::operator::aggregate::AggSpec;
use crate::operator::expr::Expr;
use crate::operator::filter::Filter;
use crate::operator::project::Project;
use crate::operator::window::{Tumbling, WindowSpec};
use crate::operator::window_aggregate::{LatePolicy, WindowAggregate};
use crate::operator::Operator;
use crate::time::convert::bound_type;

/// When a windowed query emits results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitSpec {
    /// Once per window, when the watermark passes its end plus the allowed lateness.
    #[default]
    OnWindowClose,
}

/// One step of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpSpec {
    /// Keep rows where `predicate` is true.
    Filter {
        /// Boolean expression.
        predicate: Expr,
    },
    /// Compute output columns.
    Select {
        /// `(name, expression)` in output order.
        columns: Vec<(String, Expr)>,
    },
    /// Windowed grouped aggregation.
    WindowAggregate {
        /// The window.
        window: WindowSpec,
        /// Group-by columns (may be empty).
        #[serde(default)]
        keys: Vec<String>,
        /// Aggregates.
        aggs: Vec<AggSpec>,
        /// Allowed lateness in ms.
        #[serde(default)]
        allowed_lateness_ms: i64,
        /// Late-row policy.
        #[serde(default)]
        late: LatePolicy,
        /// Emit strategy.
        #[serde(default)]
        emit: EmitSpec,
    },
}

/// A query: its input sources (several of the same schema form a union) and its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryPlan {
    /// Source names.
    pub inputs: Vec<String>,
    /// Steps, in order.
    pub ops: Vec<OpSpec>,
}

impl QueryPlan {
    /// Parses the JSON form produced by the Python builder.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::InvalidPlan(format!("malformed plan: {e}")))
    }

    /// Whether any step routes late rows to a side output.
    pub fn has_late_output(&self) -> bool {
        self.ops.iter().any(|o| {
            matches!(
                o,
                OpSpec::WindowAggregate {
                    late: LatePolicy::SideOutput,
                    ..
                }
            )
        })
    }
}

/// A compiled chain.
pub struct Compiled {
    /// Operators in order.
    pub operators: Vec<Box<dyn Operator>>,
    /// Schema of results as the user sees them (no hidden column).
    pub output_schema: SchemaRef,
    /// Whether results still carry the hidden time column (to strip).
    pub output_is_stream: bool,
}

/// Compiles `plan` over a stream with schema `input` whose user time column had type
/// `time_type`.
pub fn compile(plan: &QueryPlan, input: SchemaRef, time_type: &DataType) -> Result<Compiled> {
    let mut schema = input;
    let mut operators: Vec<Box<dyn Operator>> = Vec::with_capacity(plan.ops.len());
    for (i, op) in plan.ops.iter().enumerate() {
        if let Some(prev) = operators.last() {
            if !prev.emits_stream() {
                return Err(Error::InvalidPlan(format!(
                    "step {} ({}) follows a windowed aggregation; a query over window results is not supported yet",
                    i + 1,
                    op_name(op)
                )));
            }
        }
        let next: Box<dyn Operator> = match op {
            OpSpec::Filter { predicate } => Box::new(Filter::new(predicate, schema.clone())?),
            OpSpec::Select { columns } => Box::new(Project::new(columns, schema.clone())?),
            OpSpec::WindowAggregate {
                window,
                keys,
                aggs,
                allowed_lateness_ms,
                late,
                emit: _,
            } => {
                let WindowSpec::Tumbling { size_ms, offset_ms } = window;
                Box::new(WindowAggregate::new(
                    Tumbling::new(*size_ms, *offset_ms)?,
                    *allowed_lateness_ms,
                    *late,
                    keys,
                    aggs,
                    schema.clone(),
                    bound_type(time_type),
                )?)
            }
        };
        schema = next.output_schema();
        operators.push(next);
    }
    // No steps at all: the source's rows pass through as they arrive.
    let output_is_stream = operators.last().is_none_or(|o| o.emits_stream());
    let output_schema = if output_is_stream {
        super::strip_schema(&schema)
    } else {
        schema
    };
    Ok(Compiled {
        operators,
        output_schema,
        output_is_stream,
    })
}

fn op_name(op: &OpSpec) -> &'static str {
    match op {
        OpSpec::Filter { .. } => "filter",
        OpSpec::Select { .. } => "select",
        OpSpec::WindowAggregate { .. } => "window aggregate",
    }
}
