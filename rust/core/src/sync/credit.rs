//! Credit-based backpressure (being written).
