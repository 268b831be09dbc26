//! The metrics engine (pure, no I/O).

mod histogram;

pub use histogram::{LogHistogram, RELATIVE_ERROR};
