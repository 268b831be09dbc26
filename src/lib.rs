//! agentpulse: a real-time observability hub for multi-agent LLM systems.
//!
//! Agents (a router, a test writer, a critic, a runner, a bug fixer, a
//! validator) emit lifecycle events; agentpulse checks them against a schema,
//! writes them to a colour-coded console and a JSONL log, streams them live
//! over WebSocket and turns them into KPIs.
//!
//! # Crates
//!
//! This crate is the hub: pipeline, sinks, HTTP/WebSocket/OTLP server and
//! (in the binary) the CLI. It builds on two crates of the workspace:
//! `agentpulse-core` (pure: the event model and wire format, schema, metrics
//! maths, alert rules, budgets, the configuration model), re-exported here
//! as [`event`], [`schema`], [`metrics`], [`alerts`], [`stats`], [`clock`],
//! [`suggest`] and, with the file reading added, [`config`]; and
//! `agentpulse-client` (the Rust SDK), re-exported as [`client`]. A program
//! that only sends events depends on `agentpulse-client` alone.
//!
//! # Layout: follow an event
//!
//! - **Where events come in**: [`emitter`] (in process: [`emit_event`],
//!   [`Emitter`]) and [`hub::ingest`] (HTTP `POST /events`, the `/ingest`
//!   WebSocket, the Redis `agent-events` bridge, OpenTelemetry over
//!   `/v1/traces`, `/v1/logs`, `/v1/metrics` and gRPC: [`hub::otlp`]).
//! - **How OpenTelemetry becomes events**: [`otel`] (pure): GenAI spans,
//!   Claude Code's records and metric points mapped to agentpulse events,
//!   costs from tokens ([`otel::prices`]).
//! - **Where they are checked**: [`schema`] (pure, in the core), built from the
//!   [`config`] file (the original `observability.yaml` format).
//! - **How they move**: [`pipeline`]: a bounded queue, one dispatcher
//!   thread that gives ids, drops retries by `event_id` ([`pipeline::dedup`])
//!   and serialises each event once ([`event::Record`]).
//! - **Where they go out**: [`sinks`] (console, JSONL log, metrics, each on
//!   its own thread) and [`hub::stream`] (the live WebSocket stream, fed
//!   from an in-memory ring).
//! - **Where metrics are computed**: [`metrics`] (pure, no I/O); alert
//!   rules and budgets over them: [`alerts`] (pure), run by
//!   `sinks::alerts` and delivered by `sinks::notify`.
//! - **Reading logs back**: [`logfile`] (recovery at start, `validate`,
//!   `report`, resume from old ids).
//! - **Sending from another process**: [`client`] ([`Client`]: batched,
//!   non-blocking, at-least-once delivery to a hub over its `/ingest`
//!   WebSocket or `POST /events`).
//!
//! - **Many hubs, one stream**: [`cluster`] (`serve --cluster`): ids and
//!   dedup in Redis, every hub tails the shared Redis Stream.
//!
//! The wire format is documented in [`event`].
#![deny(missing_docs)]

// The pure core (event model, schema, metrics maths, alert rules,
// configuration model) and the client SDK are crates of their own; their
// modules are re-exported here under the names they have always had.
pub use agentpulse_client as client;
pub use agentpulse_core::{alerts, clock, event, metrics, schema, stats, suggest};

pub mod cluster;
pub mod config;
pub mod emitter;
pub mod hub;
pub mod logfile;
pub mod otel;
pub mod pipeline;
pub mod sinks;

pub use client::Client;
pub use emitter::{emit_event, get_emitter, Emitter, EmitterBuilder};
pub use event::{Event, NewEvent};
