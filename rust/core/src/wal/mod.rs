//! The write-ahead log of engine inputs (being written).
