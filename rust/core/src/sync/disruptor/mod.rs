//! The LMAX disruptor (being written).
