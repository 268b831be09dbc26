//! agentpulse: a real-time observability hub for multi-agent LLM systems.
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod event;
pub mod logfile;
pub mod metrics;
pub mod schema;
pub mod sinks;
