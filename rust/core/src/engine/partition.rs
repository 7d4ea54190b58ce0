//! Where a query's rows may run: which source columns its rows must be routed by so that every
//! piece of keyed state lives on one core.
//!
//! A stateful step (a window's group-by keys, a join's or a dedup's `on` keys) needs all rows
//! with equal keys on one core. Routing by a set `P` of source columns satisfies a step with
//! keys `K` when `P` is a subset of `K` traced back to the source (equal `K` then implies
//! equal `P`). So `P` is the intersection of every stateful step's keys, traced through the
//! steps before it: a filter keeps names, a select keeps only plain column references
//! (renames followed), a window keeps its keys, a join keeps the left side's names, a lookup
//! and a dedup keep the stream's. The right side of a join is routed by the right-side
//! columns paired with `P` through the join's `on`, which hash alike because their types
//! must match.
//!
//! - no stateful step: [`Partitioning::Even`], rows may go anywhere;
//! - a non-empty `P`: [`Partitioning::Keys`];
//! - otherwise (a global window, keys computed by expressions, a join whose sides' key types
//!   differ, nested joins): [`Partitioning::Single`], the whole query on one core. Correct,
//!   only not parallel; the choice is visible in `metrics()`.
//!
//! This module only reads plans and schemas; it never routes anything.

use std::collections::{BTreeSet, HashMap};

use arrow_schema::SchemaRef;

use super::plan::{OpSpec, QueryPlan};
use crate::operator::expr::Expr;
pub use crate::runtime::Partitioning;

/// One branch (union of sources) walked so far: current column name → source column name.
type Lineage = HashMap<String, String>;

struct Walk {
    /// Each stateful step's traced keys, as left-source (main branch) column names.
    constraints: Vec<BTreeSet<String>>,
    /// Set when something cannot be traced in a way that keeps correctness.
    single: bool,
}

fn identity(schema: &SchemaRef) -> Lineage {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.name().clone()))
        .collect()
}

fn trace(lineage: &Lineage, keys: &[String]) -> BTreeSet<String> {
    keys.iter()
        .filter_map(|k| lineage.get(k).cloned())
        .collect()
}

/// Walks the steps of a branch without joins (the right side of a join), returning its
/// lineage at the end and its constraints in its own source's names.
fn walk_simple(
    plan: &QueryPlan,
    schema: &SchemaRef,
    w: &mut Walk,
) -> (Lineage, Vec<BTreeSet<String>>) {
    let mut lin = identity(schema);
    let mut cons = Vec::new();
    for op in &plan.ops {
        match op {
            OpSpec::Join { .. } => {
                w.single = true;
                return (Lineage::new(), cons);
            }
            other => step(other, &mut lin, &mut cons),
        }
    }
    (lin, cons)
}

/// Applies a non-join step to a lineage, adding its constraint if stateful.
fn step(op: &OpSpec, lin: &mut Lineage, cons: &mut Vec<BTreeSet<String>>) {
    match op {
        OpSpec::Filter { .. } | OpSpec::Lookup { .. } => {}
        OpSpec::Select { columns } => {
            *lin = columns
                .iter()
                .filter_map(|(name, e)| match e {
                    Expr::Col(c) => lin.get(c).map(|s| (name.clone(), s.clone())),
                    _ => None,
                })
                .collect();
        }
        OpSpec::WindowAggregate { keys, .. } => {
            cons.push(trace(lin, keys));
            *lin = keys
                .iter()
                .filter_map(|k| lin.get(k).map(|s| (k.clone(), s.clone())))
                .collect();
        }
        OpSpec::Dedup { on, .. } => cons.push(trace(lin, on)),
        OpSpec::Join { .. } => {}
    }
}

/// The partitioning of each input of `plan` (in [`QueryPlan::branches`] order, flattened),
/// given each source's stream schema. `single_core` is the core for `Single`.
pub fn partition(
    plan: &QueryPlan,
    schemas: &dyn Fn(&str) -> Option<SchemaRef>,
    single_core: usize,
) -> Vec<Partitioning> {
    let inputs: usize = plan.branches().iter().map(Vec::len).sum();
    let single = vec![Partitioning::Single(single_core); inputs];
    let Some(left_schema) = plan.inputs.iter().find_map(|s| schemas(s)) else {
        return single;
    };
    let mut w = Walk {
        constraints: Vec::new(),
        single: false,
    };
    let mut lin = identity(&left_schema);
    // The one join's right side: its schema and (left source col → right source col) pairs.
    let mut right: Option<(SchemaRef, HashMap<String, String>, usize)> = None;
    for op in &plan.ops {
        match op {
            OpSpec::Join { right: rp, on, .. } => {
                let Some(rs) = rp.inputs.iter().find_map(|s| schemas(s)) else {
                    return single;
                };
                if right.is_some() {
                    return single; // several joins: not traced
                }
                let (rlin, rcons) = walk_simple(rp, &rs, &mut w);
                let mut pairs = HashMap::new();
                for k in on {
                    if let (Some(l), Some(r)) = (lin.get(k), rlin.get(k)) {
                        let lt = left_schema
                            .field_with_name(l)
                            .map(|f| f.data_type().clone());
                        let rt = rs.field_with_name(r).map(|f| f.data_type().clone());
                        if lt.is_ok() && lt.ok() == rt.ok() {
                            pairs.insert(l.clone(), r.clone());
                        }
                    }
                }
                let back: HashMap<&String, &String> = pairs.iter().map(|(l, r)| (r, l)).collect();
                w.constraints.push(pairs.keys().cloned().collect());
                for c in rcons {
                    w.constraints.push(
                        c.iter()
                            .filter_map(|r| back.get(r).map(|l| (*l).clone()))
                            .collect(),
                    );
                }
                right = Some((rs, pairs, rp.inputs.len()));
            }
            other => step(other, &mut lin, &mut w.constraints),
        }
    }
    if w.single {
        return single;
    }
    let keys: Option<BTreeSet<String>> = w
        .constraints
        .iter()
        .cloned()
        .reduce(|a, b| a.intersection(&b).cloned().collect());
    let Some(keys) = keys else {
        return vec![Partitioning::Even; inputs];
    };
    if keys.is_empty() {
        return single;
    }
    // Column order of the left schema, so both sides hash their columns in the same order.
    let left_cols: Vec<&String> = left_schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| keys.contains(*n))
        .collect();
    let index = |schema: &SchemaRef, names: &[&String]| -> Option<Vec<usize>> {
        names.iter().map(|n| schema.index_of(n).ok()).collect()
    };
    let Some(left_idx) = index(&left_schema, &left_cols) else {
        return single;
    };
    let mut out = vec![Partitioning::Keys(left_idx); plan.inputs.len()];
    if let Some((rs, pairs, n)) = right {
        let rnames: Option<Vec<&String>> = left_cols.iter().map(|l| pairs.get(*l)).collect();
        let Some(ridx) = rnames.and_then(|r| index(&rs, &r)) else {
            return single;
        };
        out.extend(std::iter::repeat_n(Partitioning::Keys(ridx), n));
    }
    if out.len() != inputs {
        return single;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schemas(name: &str) -> Option<SchemaRef> {
        let f = |n: &str, t: DataType| Field::new(n, t, true);
        match name {
            "trades" | "trades2" => Some(Arc::new(Schema::new(vec![
                f("ts", DataType::Int64),
                f("sym", DataType::Utf8),
                f("venue", DataType::Utf8),
                f("px", DataType::Float64),
            ]))),
            "quotes" => Some(Arc::new(Schema::new(vec![
                f("ts", DataType::Int64),
                f("px", DataType::Float64),
                f("sym", DataType::Utf8),
            ]))),
            "ids" => Some(Arc::new(Schema::new(vec![
                f("ts", DataType::Int64),
                f("sym", DataType::Int64),
            ]))),
            _ => None,
        }
    }

    fn plan(json: &str) -> Vec<Partitioning> {
        partition(&QueryPlan::from_json(json).unwrap(), &schemas, 1)
    }

    const W: &str = r#""window": {"kind": "tumbling", "size_ms": 1000}, "aggs": [{"name": "n", "func": "count"}]"#;

    #[test]
    fn windows_route_by_the_common_keys() {
        let p = plan(&format!(
            r#"{{"inputs": ["trades", "trades2"], "ops": [
                {{"op": "window_aggregate", {W}, "keys": ["sym", "venue"]}},
                {{"op": "window_aggregate", {W}, "keys": ["sym"]}}]}}"#
        ));
        assert_eq!(p, vec![Partitioning::Keys(vec![1]); 2]);
    }

    #[test]
    fn stateless_global_and_computed_keys() {
        assert_eq!(
            plan(r#"{"inputs": ["trades"], "ops": []}"#),
            vec![Partitioning::Even]
        );
        assert_eq!(
            plan(&format!(
                r#"{{"inputs": ["trades"], "ops": [{{"op": "window_aggregate", {W}}}]}}"#
            )),
            vec![Partitioning::Single(1)]
        );
        let renamed = plan(&format!(
            r#"{{"inputs": ["trades"], "ops": [
                {{"op": "select", "columns": [["ts", {{"col": "ts"}}], ["s", {{"col": "sym"}}]]}},
                {{"op": "window_aggregate", {W}, "keys": ["s"]}}]}}"#
        ));
        assert_eq!(renamed, vec![Partitioning::Keys(vec![1])]);
    }

    #[test]
    fn dedup_routes_by_its_keys_like_a_window() {
        let alone = plan(
            r#"{"inputs": ["trades"], "ops": [
                {"op": "dedup", "on": ["venue", "sym"], "within_ms": 50}]}"#,
        );
        assert_eq!(alone, vec![Partitioning::Keys(vec![1, 2])]);
        let then_window = plan(&format!(
            r#"{{"inputs": ["trades"], "ops": [
                {{"op": "dedup", "on": ["sym", "venue"], "within_ms": 50}},
                {{"op": "window_aggregate", {W}, "keys": ["sym"]}}]}}"#
        ));
        assert_eq!(then_window, vec![Partitioning::Keys(vec![1])]);
        let disjoint = plan(&format!(
            r#"{{"inputs": ["trades"], "ops": [
                {{"op": "dedup", "on": ["venue"], "within_ms": 50}},
                {{"op": "window_aggregate", {W}, "keys": ["sym"]}}]}}"#
        ));
        assert_eq!(disjoint, vec![Partitioning::Single(1)]);
    }

    #[test]
    fn joins_route_both_sides_by_the_paired_keys() {
        let p = plan(&format!(
            r#"{{"inputs": ["trades"], "ops": [
                {{"op": "join", "right": {{"inputs": ["quotes"], "ops": []}}, "on": ["sym"], "lower_ms": 0, "upper_ms": 10}},
                {{"op": "window_aggregate", {W}, "keys": ["sym", "venue"]}}]}}"#
        ));
        assert_eq!(
            p,
            vec![Partitioning::Keys(vec![1]), Partitioning::Keys(vec![2])]
        );
        let mismatched = plan(
            r#"{"inputs": ["trades"], "ops": [
                {"op": "join", "right": {"inputs": ["ids"], "ops": []}, "on": ["sym"], "lower_ms": 0, "upper_ms": 10}]}"#,
        );
        assert_eq!(mismatched, vec![Partitioning::Single(1); 2]);
    }
}
