//! Shared fixtures for the PAO benchmarks.
