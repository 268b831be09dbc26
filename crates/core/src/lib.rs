//! agentpulse's pure core: what an event is and what it means, with no
//! I/O. No tokio, axum, redis or files; the hub (`agentpulse`) and the
//! client (`agentpulse-client`) build on it.
//!
//! # Layout, bottom up (each module uses only those above it)
//!
//! - [`suggest`], [`clock`]: "did you mean ...?" and the wall clock.
//! - [`event`]: the event model and its wire format (one JSON line,
//!   serialised once: [`event::Record`]).
//! - [`schema`]: which events exist and what their payloads hold;
//!   validation of what producers send.
//! - [`metrics`]: the KPI maths over time buckets ([`metrics::MetricsEngine`]).
//! - [`stats`]: the pipeline's counters, as alert rules read them.
//! - [`units`]: durations as the configuration writes them.
//! - [`prices`]: model prices, to cost tokens.
//! - [`alerts`]: alert rules over KPIs and counters, and budgets.
//! - [`config`]: the configuration file's model (the original
//!   `observability.yaml` format), its layering over the built-in one, and
//!   what it builds: the schema, the rules, the price table.
#![deny(missing_docs)]

pub mod alerts;
pub mod clock;
pub mod config;
pub mod event;
pub mod metrics;
pub mod prices;
pub mod schema;
pub mod stats;
pub mod suggest;
mod swar;
pub mod units;

pub use event::{Event, NewEvent};
