//! `Project`: computes the output columns of a `select` (plain columns or expressions), and
//! always carries the hidden event-time column along so later windows still see event time.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};

use super::expr::{BoundExpr, Expr};
use super::{Operator, OperatorContext};
use crate::engine::TIME_COLUMN;
use crate::error::{Error, Result};

/// Column projection over a stream.
pub struct Project {
    columns: Vec<BoundExpr>,
    time_index: usize,
    schema: SchemaRef,
}

impl Project {
    /// `columns`: output name and expression, in output order.
    pub fn new(columns: &[(String, Expr)], input: SchemaRef) -> Result<Self> {
        let time_index = input
            .index_of(TIME_COLUMN)
            .map_err(|_| Error::InvalidPlan("projection input has no event-time column".into()))?;
        let probe = RecordBatch::new_empty(input.clone());
        let mut fields = Vec::with_capacity(columns.len() + 1);
        let mut bound = Vec::with_capacity(columns.len());
        for (name, expr) in columns {
            if name == TIME_COLUMN || fields.iter().any(|f: &Field| f.name() == name) {
                return Err(Error::InvalidPlan(format!(
                    "select produces column '{name}' twice; give expressions distinct names with .alias(...)"
                )));
            }
            let b = expr.bind(&input, " in select")?;
            let field = match (expr, &b) {
                (Expr::Col(_), BoundExpr::Column(i)) => {
                    input.field(*i).as_ref().clone().with_name(name.clone())
                }
                _ => {
                    let dt = b.evaluate(&probe)?.into_array(0)?.data_type().clone();
                    Field::new(name.clone(), dt, true)
                }
            };
            fields.push(field);
            bound.push(b);
        }
        fields.push(input.field(time_index).as_ref().clone());
        Ok(Project {
            columns: bound,
            time_index,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

impl Operator for Project {
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "select"
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, input: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let rows = input.num_rows();
        let mut out = Vec::with_capacity(self.columns.len() + 1);
        for c in &self.columns {
            out.push(c.evaluate(input)?.into_array(rows)?);
        }
        out.push(input.column(self.time_index).clone());
        ctx.emit(RecordBatch::try_new(self.schema.clone(), out)?);
        Ok(())
    }
}
