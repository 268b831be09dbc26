//! Console sink.
