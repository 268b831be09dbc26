//! Sink runner.
