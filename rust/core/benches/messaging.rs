//! Workload F (being written).
fn main() {}
