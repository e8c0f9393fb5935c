//! Measurements shared by the criterion benchmarks and the load test.

pub mod floor;
