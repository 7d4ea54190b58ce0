//! Column expressions for filters and projections: column references, literals, comparisons,
//! boolean logic and arithmetic, evaluated with Arrow kernels over whole batches.
//!
//! An [`Expr`] is what the Python builder sends (as JSON). [`Expr::bind`] resolves column names
//! against a schema once, when the query is compiled, and type-checks by evaluating the
//! expression on an empty batch, so a wrong column or an impossible comparison is reported
//! when the query is defined, not in the middle of a stream. Mixed numeric types are coerced
//! (integers to int64, anything with a float to float64; a literal takes the other side's type).
//! Evaluation never inspects rows one by one.

use std::sync::Arc;

use arrow_arith::boolean::{and_kleene, not, or_kleene};
use arrow_array::cast::AsArray;
use arrow_array::{
    new_null_array, Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, Scalar,
    StringArray,
};
use arrow_cast::cast;
use arrow_schema::{DataType, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Literal {
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// UTF-8 string.
    Str(String),
    /// Boolean.
    Bool(bool),
    /// SQL null.
    Null,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// Boolean and (Kleene logic for nulls).
    And,
    /// Boolean or (Kleene logic for nulls).
    Or,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
}

/// An expression tree as sent by the Python builder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A column by name.
    Col(String),
    /// A constant.
    Lit(Literal),
    /// `left op right`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// Boolean negation.
    Not(Box<Expr>),
    /// True where the operand is null.
    IsNull(Box<Expr>),
    /// True where the operand is not null.
    IsNotNull(Box<Expr>),
}

/// An expression whose columns are resolved to indices of one schema.
#[derive(Debug, Clone)]
pub enum BoundExpr {
    /// Column at this index.
    Column(usize),
    /// A one-element array used as a scalar.
    Literal(ArrayRef),
    /// Binary operation.
    Binary(BinaryOp, Box<BoundExpr>, Box<BoundExpr>),
    /// Negation.
    Not(Box<BoundExpr>),
    /// Null test (`true`: is null).
    NullTest(Box<BoundExpr>, bool),
}

/// The result of evaluating a [`BoundExpr`]: a full column or a scalar.
#[derive(Debug, Clone)]
pub enum Value {
    /// One value per row.
    Array(ArrayRef),
    /// The same value for every row (held as a one-element array).
    Scalar(ArrayRef),
}

impl Value {
    fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    fn data_type(&self) -> &DataType {
        self.array().data_type()
    }

    fn cast_to(self, dt: &DataType) -> Result<Value> {
        if self.data_type() == dt {
            return Ok(self);
        }
        Ok(match self {
            Value::Array(a) => Value::Array(cast(&a, dt)?),
            Value::Scalar(a) => Value::Scalar(cast(&a, dt)?),
        })
    }

    /// Materialises the value as a column of `len` rows.
    pub fn into_array(self, len: usize) -> Result<ArrayRef> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(s) => {
                if s.is_null(0) {
                    return Ok(new_null_array(s.data_type(), len));
                }
                let indices = arrow_array::UInt32Array::from(vec![0u32; len]);
                Ok(arrow_select::take::take(&s, &indices, None)?)
            }
        }
    }
}

impl Expr {
    /// The column a plain column reference names, if this is one.
    pub fn as_column(&self) -> Option<&str> {
        match self {
            Expr::Col(c) => Some(c),
            _ => None,
        }
    }

    /// Resolves columns against `schema` and type-checks the expression.
    pub fn bind(&self, schema: &Schema, context: &str) -> Result<BoundExpr> {
        let bound = self.bind_names(schema, context)?;
        // Type-check by running the kernels on zero rows.
        let probe = RecordBatch::new_empty(Arc::new(schema.clone()));
        bound.evaluate(&probe).map_err(|e| match e {
            Error::Arrow(a) => Error::InvalidPlan(format!("{context}: {a}")),
            other => other,
        })?;
        Ok(bound)
    }

    fn bind_names(&self, schema: &Schema, context: &str) -> Result<BoundExpr> {
        Ok(match self {
            Expr::Col(name) => BoundExpr::Column(
                schema
                    .index_of(name)
                    .map_err(|_| Error::column_not_found(name, context, schema))?,
            ),
            Expr::Lit(l) => BoundExpr::Literal(literal_array(l)),
            Expr::Binary { op, left, right } => BoundExpr::Binary(
                *op,
                Box::new(left.bind_names(schema, context)?),
                Box::new(right.bind_names(schema, context)?),
            ),
            Expr::Not(e) => BoundExpr::Not(Box::new(e.bind_names(schema, context)?)),
            Expr::IsNull(e) => BoundExpr::NullTest(Box::new(e.bind_names(schema, context)?), true),
            Expr::IsNotNull(e) => {
                BoundExpr::NullTest(Box::new(e.bind_names(schema, context)?), false)
            }
        })
    }
}

fn literal_array(l: &Literal) -> ArrayRef {
    match l {
        Literal::Int(v) => Arc::new(Int64Array::from(vec![*v])),
        Literal::Float(v) => Arc::new(Float64Array::from(vec![*v])),
        Literal::Str(v) => Arc::new(StringArray::from(vec![v.as_str()])),
        Literal::Bool(v) => Arc::new(BooleanArray::from(vec![*v])),
        Literal::Null => new_null_array(&DataType::Null, 1),
    }
}

/// The type both sides of a binary operation are brought to, if they differ.
///
/// A literal takes the type of the column it meets (so `int32_col > 2` stays int32), except a
/// float literal against an integer column, which compares as float64 (so `a > 2.5` is not
/// truncated). A literal of another kind is an error (`string_col > True`); a string literal
/// may meet a timestamp or date column (it is parsed). Two numeric columns meet at int64, or
/// float64 if either is a float.
fn common_type(l: &Value, r: &Value) -> Result<Option<DataType>> {
    let (lt, rt) = (l.data_type(), r.data_type());
    if lt == rt {
        return Ok(None);
    }
    let literal_into = |lit: &DataType, column: &DataType| -> Result<Option<DataType>> {
        let fits = match lit {
            DataType::Null => true,
            DataType::Int64 | DataType::Float64 => column.is_numeric(),
            DataType::Utf8 => matches!(
                column,
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Timestamp(_, _)
                    | DataType::Date32
                    | DataType::Date64
            ),
            _ => false,
        };
        if !fits {
            return Err(Error::InvalidPlan(format!(
                "cannot combine a column of type {column} with a literal of type {lit}"
            )));
        }
        Ok(Some(if is_float(lit) && !is_float(column) {
            DataType::Float64
        } else {
            column.clone()
        }))
    };
    match (l, r) {
        (Value::Scalar(_), Value::Array(_)) => literal_into(lt, rt),
        (Value::Array(_), Value::Scalar(_)) => literal_into(rt, lt),
        _ if lt.is_numeric() && rt.is_numeric() => Ok(Some(if is_float(lt) || is_float(rt) {
            DataType::Float64
        } else {
            DataType::Int64
        })),
        _ => Ok(None),
    }
}

fn is_float(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

fn datum(v: &Value) -> Box<dyn arrow_array::Datum + '_> {
    match v {
        Value::Array(a) => Box::new(a.clone()),
        Value::Scalar(a) => Box::new(Scalar::new(a.clone())),
    }
}

fn boolean(v: &Value, len: usize) -> Result<BooleanArray> {
    let arr = v.clone().into_array(len)?;
    let arr = if arr.data_type() == &DataType::Boolean {
        arr
    } else {
        cast(&arr, &DataType::Boolean)?
    };
    Ok(arr.as_boolean().clone())
}

impl BoundExpr {
    /// Evaluates the expression over `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Value> {
        match self {
            BoundExpr::Column(i) => Ok(Value::Array(batch.column(*i).clone())),
            BoundExpr::Literal(a) => Ok(Value::Scalar(a.clone())),
            BoundExpr::Not(e) => {
                let v = e.evaluate(batch)?;
                let scalar = matches!(v, Value::Scalar(_));
                let len = if scalar { 1 } else { batch.num_rows() };
                let b = boolean(&v, len)?;
                let out: ArrayRef = Arc::new(not(&b)?);
                Ok(if scalar {
                    Value::Scalar(out)
                } else {
                    Value::Array(out)
                })
            }
            BoundExpr::NullTest(e, want_null) => {
                let v = e.evaluate(batch)?;
                let arr = v.into_array(batch.num_rows())?;
                let out = if *want_null {
                    arrow_arith::boolean::is_null(&arr)?
                } else {
                    arrow_arith::boolean::is_not_null(&arr)?
                };
                Ok(Value::Array(Arc::new(out)))
            }
            BoundExpr::Binary(op, l, r) => {
                let mut lv = l.evaluate(batch)?;
                let mut rv = r.evaluate(batch)?;
                let both_scalar = matches!(lv, Value::Scalar(_)) && matches!(rv, Value::Scalar(_));
                if both_scalar {
                    // Constant folding stays simple: make the left side a column of one row.
                    lv = Value::Array(lv.array().clone());
                }
                if let Some(t) = common_type(&lv, &rv)? {
                    lv = lv.cast_to(&t)?;
                    rv = rv.cast_to(&t)?;
                }
                let (ld, rd) = (datum(&lv), datum(&rv));
                let out: ArrayRef = match op {
                    BinaryOp::Eq => Arc::new(arrow_ord::cmp::eq(&*ld, &*rd)?),
                    BinaryOp::Ne => Arc::new(arrow_ord::cmp::neq(&*ld, &*rd)?),
                    BinaryOp::Lt => Arc::new(arrow_ord::cmp::lt(&*ld, &*rd)?),
                    BinaryOp::Le => Arc::new(arrow_ord::cmp::lt_eq(&*ld, &*rd)?),
                    BinaryOp::Gt => Arc::new(arrow_ord::cmp::gt(&*ld, &*rd)?),
                    BinaryOp::Ge => Arc::new(arrow_ord::cmp::gt_eq(&*ld, &*rd)?),
                    BinaryOp::Add => arrow_arith::numeric::add(&*ld, &*rd)?,
                    BinaryOp::Sub => arrow_arith::numeric::sub(&*ld, &*rd)?,
                    BinaryOp::Mul => arrow_arith::numeric::mul(&*ld, &*rd)?,
                    BinaryOp::Div => arrow_arith::numeric::div(&*ld, &*rd)?,
                    BinaryOp::Mod => arrow_arith::numeric::rem(&*ld, &*rd)?,
                    BinaryOp::And | BinaryOp::Or => {
                        let len = if both_scalar { 1 } else { batch.num_rows() };
                        let (a, b) = (boolean(&lv, len)?, boolean(&rv, len)?);
                        Arc::new(if *op == BinaryOp::And {
                            and_kleene(&a, &b)?
                        } else {
                            or_kleene(&a, &b)?
                        })
                    }
                };
                Ok(if both_scalar {
                    Value::Scalar(out)
                } else {
                    Value::Array(out)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(arrow_array::Int32Array::from(vec![Some(1), Some(5), None])),
                Arc::new(Float64Array::from(vec![0.5, 2.5, 9.0])),
                Arc::new(StringArray::from(vec!["x", "y", "x"])),
            ],
        )
        .unwrap()
    }

    fn col(n: &str) -> Box<Expr> {
        Box::new(Expr::Col(n.into()))
    }
    fn bin(op: BinaryOp, l: Box<Expr>, r: Box<Expr>) -> Expr {
        Expr::Binary {
            op,
            left: l,
            right: r,
        }
    }

    fn eval(e: &Expr) -> ArrayRef {
        let b = batch();
        e.bind(&b.schema(), "test")
            .unwrap()
            .evaluate(&b)
            .unwrap()
            .into_array(3)
            .unwrap()
    }

    #[test]
    fn comparison_with_coerced_literal() {
        let e = bin(BinaryOp::Gt, col("a"), Box::new(Expr::Lit(Literal::Int(2))));
        let r = eval(&e);
        let r = r.as_boolean();
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![Some(false), Some(true), None]
        );
    }

    #[test]
    fn mixed_column_types_compare_as_float() {
        let e = bin(BinaryOp::Lt, col("a"), col("b"));
        let r = eval(&e);
        assert_eq!(
            r.as_boolean().iter().collect::<Vec<_>>(),
            vec![Some(false), Some(false), None]
        );
    }

    #[test]
    fn boolean_logic_and_strings() {
        let e = bin(
            BinaryOp::And,
            Box::new(bin(
                BinaryOp::Eq,
                col("s"),
                Box::new(Expr::Lit(Literal::Str("x".into()))),
            )),
            Box::new(Expr::IsNotNull(col("a"))),
        );
        let r = eval(&e);
        assert_eq!(
            r.as_boolean().iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(false)]
        );
    }

    #[test]
    fn arithmetic() {
        let e = bin(
            BinaryOp::Mul,
            col("b"),
            Box::new(Expr::Lit(Literal::Int(2))),
        );
        let r = eval(&e);
        assert_eq!(
            r.as_primitive::<arrow_array::types::Float64Type>()
                .values()
                .to_vec(),
            vec![1.0, 5.0, 18.0]
        );
    }

    #[test]
    fn errors_at_bind_time() {
        let b = batch();
        let missing = bin(BinaryOp::Gt, col("nope"), col("a"));
        assert!(matches!(
            missing.bind(&b.schema(), "filter"),
            Err(Error::ColumnNotFound { .. })
        ));
        let bad = bin(
            BinaryOp::Gt,
            col("s"),
            Box::new(Expr::Lit(Literal::Bool(true))),
        );
        assert!(bad.bind(&b.schema(), "filter").is_err());
    }
}
