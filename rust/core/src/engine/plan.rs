//! Query plans: the serialisable description the Python builder produces, and its compilation
//! into an operator graph against the known stream schemas of its sources.
//!
//! A plan is a chain of steps over a union of sources. A join step carries the plan of its
//! right side, so a query is a tree of chains; compiling it lays the operators out in
//! topological order (left steps, right steps, the join, what follows) and numbers the
//! query's inputs in the order [`QueryPlan::sources`] lists them.

use std::collections::HashMap;

use arrow_schema::{DataType, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::operator::aggregate::AggSpec;
use crate::operator::dedup::Dedup;
use crate::operator::emit::EmitSpec;
use crate::operator::expr::Expr;
use crate::operator::filter::Filter;
use crate::operator::interval_join::{IntervalJoin, JoinKind, JoinSpec};
use crate::operator::lookup_join::{LookupJoin, LookupKind, LookupTables};
use crate::operator::project::Project;
use crate::operator::session_window::SessionWindow;
use crate::operator::window::WindowSpec;
use crate::operator::window_aggregate::{LatePolicy, WindowAggregate, WindowConfig};
use crate::operator::Operator;
use crate::reactor::{Node, QueryGraph, Target};
use crate::state::MmapStore;
use crate::time::convert::bound_type;

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
    /// Interval join with the stream described by `right`.
    Join {
        /// The right side.
        right: Box<QueryPlan>,
        /// Key columns (same names on both sides).
        on: Vec<String>,
        /// Lower bound of `right.t - left.t` in ms (inclusive).
        lower_ms: i64,
        /// Upper bound of `right.t - left.t` in ms (inclusive).
        upper_ms: i64,
        /// Inner or outer.
        #[serde(default)]
        how: JoinKind,
        /// Allowed lateness in ms.
        #[serde(default)]
        allowed_lateness_ms: i64,
        /// Late-row policy.
        #[serde(default)]
        late: LatePolicy,
    },
    /// Lookup join against a named reference table of the engine.
    Lookup {
        /// Table name.
        table: String,
        /// Key columns (same names in the stream and the table).
        on: Vec<String>,
        /// Inner or left.
        #[serde(default)]
        how: LookupKind,
    },
    /// Drop rows whose key was kept less than `within_ms` before (or after) them in event
    /// time (`docs/SEMANTICS.md`, "Dedup").
    Dedup {
        /// Key columns.
        on: Vec<String>,
        /// The event-time distance below which a row of a kept key is a duplicate (ms, > 0).
        within_ms: i64,
        /// Keep the per-key state in a memory-mapped scratch file in this directory (one per
        /// core) instead of in memory: for more keys than memory holds.
        #[serde(default)]
        mmap_dir: Option<std::path::PathBuf>,
    },
}

impl OpSpec {
    fn name(&self) -> &'static str {
        match self {
            OpSpec::Filter { .. } => "filter",
            OpSpec::Select { .. } => "select",
            OpSpec::WindowAggregate { .. } => "window aggregate",
            OpSpec::Join { .. } => "join",
            OpSpec::Lookup { .. } => "lookup",
            OpSpec::Dedup { .. } => "dedup",
        }
    }

    fn late_side_output(&self) -> bool {
        matches!(
            self,
            OpSpec::WindowAggregate {
                late: LatePolicy::SideOutput,
                ..
            } | OpSpec::Join {
                late: LatePolicy::SideOutput,
                ..
            }
        )
    }
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

    /// The unions the query reads: each is a list of sources that must share one schema.
    pub fn branches(&self) -> Vec<Vec<String>> {
        let mut out = vec![self.inputs.clone()];
        for op in &self.ops {
            if let OpSpec::Join { right, .. } = op {
                out.extend(right.branches());
            }
        }
        out
    }

    /// Every lookup table the query reads.
    pub fn tables(&self) -> Vec<String> {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                OpSpec::Lookup { table, .. } => out.push(table.clone()),
                OpSpec::Join { right, .. } => out.extend(right.tables()),
                _ => {}
            }
        }
        out
    }
}

/// What compiling needs to know about a source: its stream schema and the type of its user
/// time column.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    /// Stream schema (user columns plus the hidden time column).
    pub stream: SchemaRef,
    /// Type of the user's time column.
    pub time_type: DataType,
}

/// A compiled query.
pub struct Compiled {
    /// The operator graph.
    pub graph: QueryGraph,
    /// Schema of results as the user sees them (no hidden column).
    pub output_schema: SchemaRef,
    /// Schema of late rows (no hidden column); the output schema when no step has a side
    /// output.
    pub late_schema: SchemaRef,
}

struct Builder<'a> {
    schemas: &'a HashMap<String, SourceSchema>,
    tables: &'a LookupTables,
    nodes: Vec<Node>,
    inputs: Vec<Target>,
    late_schema: Option<SchemaRef>,
}

/// A chain being built: its open ends (inputs not yet connected, or the last node).
struct Branch {
    heads: Vec<usize>,
    tail: Option<usize>,
    schema: SchemaRef,
    time_type: DataType,
    append_only: bool,
}

impl Branch {
    /// Refuses step `step` ("a window", "dedup") over rows that may still be updated: it
    /// needs final rows from the window before it.
    fn require_append_only(&self, step: &str) -> Result<()> {
        if self.append_only {
            return Ok(());
        }
        Err(Error::InvalidPlan(format!(
            "{step} over window results needs the earlier window to emit final rows: use .emit(lm.final()) there (or on_window_close() without allowed lateness)"
        )))
    }
}

impl Builder<'_> {
    fn connect(&mut self, branch: &mut Branch, node: usize, port: usize) {
        match branch.tail {
            Some(t) => self.nodes[t].next = Some((node, port)),
            None => {
                for &i in &branch.heads {
                    self.inputs[i] = Some((node, port));
                }
            }
        }
        branch.heads.clear();
        branch.tail = Some(node);
    }

    fn push(&mut self, op: Box<dyn Operator>) -> usize {
        self.nodes.push(Node { op, next: None });
        self.nodes.len() - 1
    }

    fn branch(&mut self, plan: &QueryPlan) -> Result<Branch> {
        if plan.inputs.is_empty() {
            return Err(Error::InvalidPlan(
                "a query needs at least one source".into(),
            ));
        }
        // The union's schema: every source with a known schema must agree.
        let mut known: Option<(&String, &SourceSchema)> = None;
        for s in &plan.inputs {
            if let Some(ss) = self.schemas.get(s) {
                match known {
                    Some((first, k)) if k.stream != ss.stream => {
                        return Err(Error::InvalidPlan(format!(
                            "sources '{first}' and '{s}' have different schemas; a union needs identical schemas"
                        )))
                    }
                    Some(_) => {}
                    None => known = Some((s, ss)),
                }
            }
        }
        let Some((_, ss)) = known else {
            return Err(Error::InvalidPlan(format!(
                "no schema known yet for {:?}",
                plan.inputs
            )));
        };
        let heads = (0..plan.inputs.len())
            .map(|_| {
                self.inputs.push(None);
                self.inputs.len() - 1
            })
            .collect();
        let mut b = Branch {
            heads,
            tail: None,
            schema: ss.stream.clone(),
            time_type: ss.time_type.clone(),
            append_only: true,
        };
        for (i, op) in plan.ops.iter().enumerate() {
            self.step(&mut b, op)
                .map_err(|e| in_step(e, i + 1, op.name()))?;
        }
        Ok(b)
    }

    fn step(&mut self, b: &mut Branch, op: &OpSpec) -> Result<()> {
        let input = b.schema.clone();
        let (node, late_shape): (Box<dyn Operator>, Option<SchemaRef>) = match op {
            OpSpec::Filter { predicate } => (Box::new(Filter::new(predicate, input)?), None),
            OpSpec::Select { columns } => (Box::new(Project::new(columns, input)?), None),
            OpSpec::WindowAggregate {
                window,
                keys,
                aggs,
                allowed_lateness_ms,
                late,
                emit,
            } => {
                b.require_append_only("a window")?;
                let config = WindowConfig {
                    lateness_ms: *allowed_lateness_ms,
                    late: *late,
                    emit: *emit,
                    keys: keys.clone(),
                    aggs: aggs.clone(),
                    input: input.clone(),
                    bound_type: bound_type(&b.time_type),
                };
                let op: Box<dyn Operator> = match window {
                    WindowSpec::Session { gap_ms } => {
                        Box::new(SessionWindow::new(*gap_ms, config)?)
                    }
                    w => Box::new(WindowAggregate::new(w.assigner()?, config)?),
                };
                (op, Some(input))
            }
            OpSpec::Join {
                right,
                on,
                lower_ms,
                upper_ms,
                how,
                allowed_lateness_ms,
                late,
            } => {
                let mut r = self.branch(right)?;
                let join = IntervalJoin::new(JoinSpec {
                    left: input,
                    right: r.schema.clone(),
                    on: on.clone(),
                    lower_ms: *lower_ms,
                    upper_ms: *upper_ms,
                    how: *how,
                    lateness_ms: *allowed_lateness_ms,
                    late: *late,
                })?;
                let schema = join.output_schema();
                let n = self.push(Box::new(join));
                self.connect(b, n, 0);
                self.connect(&mut r, n, 1);
                b.schema = schema.clone();
                b.append_only &= r.append_only;
                if op.late_side_output() {
                    self.set_late(schema)?;
                }
                return Ok(());
            }
            OpSpec::Lookup { table, on, how } => {
                let t = self
                    .tables
                    .get(table)
                    .ok_or_else(|| Error::InvalidPlan(format!("unknown lookup table '{table}'")))?;
                (Box::new(LookupJoin::new(t, on, *how, input)?), None)
            }
            OpSpec::Dedup {
                on,
                within_ms,
                mmap_dir,
            } => {
                b.require_append_only("dedup")?;
                let op = match mmap_dir {
                    None => Dedup::new(on, *within_ms, input)?,
                    Some(dir) => {
                        let store = MmapStore::scratch(dir).map_err(|e| {
                            Error::InvalidPlan(format!(
                                "dedup state=\"mmap\" could not create its file in {}: {e}",
                                dir.display()
                            ))
                        })?;
                        Dedup::with_store(on, *within_ms, input, Box::new(store))?
                    }
                };
                (Box::new(op), None)
            }
        };
        if op.late_side_output() {
            if let Some(shape) = late_shape {
                self.set_late(shape)?;
            }
        }
        b.append_only = node.append_only();
        b.schema = node.output_schema();
        let n = self.push(node);
        self.connect(b, n, 0);
        Ok(())
    }

    fn set_late(&mut self, schema: SchemaRef) -> Result<()> {
        if self.late_schema.is_some() {
            return Err(Error::InvalidPlan(
                "only one step of a query can send late rows to the side output (late=\"side\")"
                    .into(),
            ));
        }
        self.late_schema = Some(schema);
        Ok(())
    }
}

fn in_step(e: Error, step: usize, name: &str) -> Error {
    match e {
        Error::InvalidPlan(m) if !m.starts_with("step ") => {
            Error::InvalidPlan(format!("step {step} ({name}): {m}"))
        }
        other => other,
    }
}

/// Compiles `plan` given the schemas of its sources (every union must have at least one
/// known schema) and the engine's lookup tables.
pub fn compile(
    plan: &QueryPlan,
    schemas: &HashMap<String, SourceSchema>,
    tables: &LookupTables,
) -> Result<Compiled> {
    let mut builder = Builder {
        schemas,
        tables,
        nodes: Vec::new(),
        inputs: Vec::new(),
        late_schema: None,
    };
    let b = builder.branch(plan)?;
    let output_schema = super::strip_schema(&b.schema);
    let late_schema = builder
        .late_schema
        .as_deref()
        .map(super::strip_schema)
        .unwrap_or_else(|| output_schema.clone());
    Ok(Compiled {
        graph: QueryGraph {
            nodes: builder.nodes,
            inputs: builder.inputs,
        },
        output_schema,
        late_schema,
    })
}
