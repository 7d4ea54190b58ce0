//! `Filter`: keeps the rows for which a boolean expression is true (null counts as false).
//! One kernel call per batch; a batch that passes whole is forwarded without copying.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use arrow_select::filter::filter_record_batch;

use super::expr::{BoundExpr, Expr, Value};
use super::{Operator, OperatorContext};
use crate::error::{Error, Result};

/// Row filter over a stream.
pub struct Filter {
    predicate: BoundExpr,
    schema: SchemaRef,
}

impl Filter {
    /// Binds `predicate` against the input `schema`; it must evaluate to booleans.
    pub fn new(predicate: &Expr, schema: SchemaRef) -> Result<Self> {
        let bound = predicate.bind(&schema, " in filter")?;
        let probe = bound.evaluate(&RecordBatch::new_empty(schema.clone()))?;
        let dt = match &probe {
            Value::Array(a) | Value::Scalar(a) => a.data_type().clone(),
        };
        if dt != DataType::Boolean && dt != DataType::Null {
            return Err(Error::InvalidPlan(format!(
                "filter predicate must be boolean, but it evaluates to {dt}; compare a column, e.g. lm.col(\"x\") > 0"
            )));
        }
        Ok(Filter {
            predicate: bound,
            schema,
        })
    }
}

impl Operator for Filter {
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "filter"
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let mask = match self.predicate.evaluate(input)? {
            Value::Scalar(s) => {
                let keep =
                    s.data_type() == &DataType::Boolean && s.is_valid(0) && s.as_boolean().value(0);
                if keep {
                    ctx.emit(input.clone());
                }
                return Ok(());
            }
            Value::Array(a) => a,
        };
        let mask = mask.as_boolean();
        let kept = mask.true_count();
        if kept == input.num_rows() && mask.null_count() == 0 {
            ctx.emit(input.clone());
        } else if kept > 0 {
            ctx.emit(filter_record_batch(input, mask)?);
        }
        Ok(())
    }
}
