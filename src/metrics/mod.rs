//! The metrics engine (pure, no I/O).
