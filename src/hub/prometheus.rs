//! `/metrics`: the hub's numbers in the Prometheus text format, rendered by
//! metrics-exporter-prometheus from a recorder filled at scrape time (the
//! live counters are atomics elsewhere; nothing is recorded twice).

use std::sync::atomic::Ordering::Relaxed;

use metrics::{counter, describe_counter, describe_gauge, gauge, with_local_recorder};
use metrics_exporter_prometheus::PrometheusBuilder;

use super::SharedState;
use crate::config::KPI_NAMES;

/// Renders every metric of the hub.
pub fn render(state: &SharedState) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let m = state.emitter.get_metrics();
    with_local_recorder(&recorder, || {
        let p = m.pipeline;
        describe_counter!(
            "agentpulse_events_accepted_total",
            "Events given an id and written."
        );
        counter!("agentpulse_events_accepted_total").absolute(p.accepted);
        describe_counter!(
            "agentpulse_events_rejected_total",
            "Events refused as malformed or invalid."
        );
        counter!("agentpulse_events_rejected_total").absolute(p.rejected);
        describe_counter!(
            "agentpulse_events_dropped_total",
            "Events dropped because the queue was full."
        );
        counter!("agentpulse_events_dropped_total").absolute(p.dropped);
        describe_counter!(
            "agentpulse_events_duplicate_total",
            "Retried events recognised by event_id."
        );
        counter!("agentpulse_events_duplicate_total").absolute(p.duplicates);
        describe_counter!(
            "agentpulse_events_refused_total",
            "Events refused because the log could not take them (disk full)."
        );
        counter!("agentpulse_events_refused_total").absolute(p.refused);
        describe_counter!(
            "agentpulse_tasks_evicted_total",
            "Tasks the metrics engine evicted (idle, or past --max-open-tasks)."
        );
        counter!("agentpulse_tasks_evicted_total").absolute(m.kpis.evicted_tasks);
        describe_gauge!(
            "agentpulse_open_tasks",
            "Tasks the metrics engine tracks that have not finished."
        );
        gauge!("agentpulse_open_tasks").set(m.kpis.open_tasks as f64);
        describe_gauge!("agentpulse_last_event_id", "The last id given.");
        gauge!("agentpulse_last_event_id").set(p.last_id as f64);
        describe_gauge!(
            "agentpulse_queue_depth",
            "Events waiting for the dispatcher."
        );
        gauge!("agentpulse_queue_depth").set(state.emitter.queue_depth() as f64);

        describe_counter!(
            "agentpulse_sink_events_total",
            "Events handed to each sink."
        );
        describe_counter!(
            "agentpulse_sink_errors_total",
            "Failed operations of each sink."
        );
        describe_counter!("agentpulse_sink_dropped_total", "Events each sink lost.");
        describe_gauge!(
            "agentpulse_sink_up",
            "1 when the sink's last operation succeeded."
        );
        for s in &m.sinks {
            counter!("agentpulse_sink_events_total", "sink" => s.name).absolute(s.events);
            counter!("agentpulse_sink_errors_total", "sink" => s.name).absolute(s.errors);
            counter!("agentpulse_sink_dropped_total", "sink" => s.name).absolute(s.dropped);
            gauge!("agentpulse_sink_up", "sink" => s.name).set(if s.last_error.is_none() {
                1.0
            } else {
                0.0
            });
        }

        let c = &state.counters;
        describe_gauge!("agentpulse_stream_clients", "Stream clients connected.");
        gauge!("agentpulse_stream_clients").set(c.stream_clients.load(Relaxed) as f64);
        describe_gauge!(
            "agentpulse_websocket_connections",
            "WebSocket connections open."
        );
        gauge!("agentpulse_websocket_connections").set(c.connections.load(Relaxed) as f64);
        describe_counter!(
            "agentpulse_connections_refused_total",
            "Connections refused (limit, origin, token)."
        );
        counter!("agentpulse_connections_refused_total").absolute(c.refused.load(Relaxed));
        describe_gauge!(
            "agentpulse_open_connections",
            "Connections open, HTTP and WebSocket."
        );
        gauge!("agentpulse_open_connections").set(c.tcp_connections.load(Relaxed) as f64);
        describe_counter!(
            "agentpulse_connections_over_limit_total",
            "Connections refused at accept: --max-total-connections were open."
        );
        counter!("agentpulse_connections_over_limit_total")
            .absolute(c.connections_over_limit.load(Relaxed));
        describe_counter!(
            "agentpulse_header_timeouts_total",
            "Connections closed: a request head (or TLS handshake) took longer than --header-timeout."
        );
        counter!("agentpulse_header_timeouts_total").absolute(c.header_timeouts.load(Relaxed));
        describe_counter!(
            "agentpulse_idle_connections_closed_total",
            "Kept-alive connections closed after --idle-timeout."
        );
        counter!("agentpulse_idle_connections_closed_total").absolute(c.idle_closed.load(Relaxed));
        describe_counter!(
            "agentpulse_tls_handshake_failures_total",
            "TLS handshakes that failed."
        );
        counter!("agentpulse_tls_handshake_failures_total")
            .absolute(c.tls_handshake_failures.load(Relaxed));
        describe_counter!(
            "agentpulse_slow_consumer_gaps_total",
            "Gap notices sent to slow stream clients."
        );
        counter!("agentpulse_slow_consumer_gaps_total")
            .absolute(c.slow_consumer_gaps.load(Relaxed));
        describe_counter!(
            "agentpulse_clients_dropped_total",
            "Stream clients closed for silence or a stuck socket."
        );
        counter!("agentpulse_clients_dropped_total").absolute(c.dropped_clients.load(Relaxed));
        describe_counter!(
            "agentpulse_stream_messages_total",
            "Event messages sent to stream clients."
        );
        counter!("agentpulse_stream_messages_total").absolute(c.messages_out.load(Relaxed));
        describe_counter!(
            "agentpulse_stream_messages_from_log_total",
            "Of those, messages read back from the log (readers behind the ring)."
        );
        counter!("agentpulse_stream_messages_from_log_total")
            .absolute(c.messages_from_log.load(Relaxed));
        describe_counter!(
            "agentpulse_clients_stuck_total",
            "Stream clients closed (4008) because their socket accepted no bytes."
        );
        counter!("agentpulse_clients_stuck_total").absolute(c.stuck_clients.load(Relaxed));
        describe_counter!(
            "agentpulse_ingest_requests_total",
            "Ingest requests and messages."
        );
        counter!("agentpulse_ingest_requests_total").absolute(c.ingest_requests.load(Relaxed));
        describe_gauge!(
            "agentpulse_retained_events",
            "Events held in memory for resume."
        );
        gauge!("agentpulse_retained_events").set(state.ring.len() as f64);
        describe_gauge!(
            "agentpulse_uptime_seconds",
            "Seconds since the hub started."
        );
        gauge!("agentpulse_uptime_seconds").set(state.uptime());
        if state.config.redis_url.is_some() {
            describe_gauge!(
                "agentpulse_redis_up",
                "1 when the Redis bridge is connected."
            );
            gauge!("agentpulse_redis_up").set(if c.redis_up.load(Relaxed) { 1.0 } else { 0.0 });
            describe_counter!(
                "agentpulse_redis_messages_total",
                "Messages taken from the agent-events channel."
            );
            counter!("agentpulse_redis_messages_total").absolute(c.redis_messages.load(Relaxed));
            describe_counter!(
                "agentpulse_redis_errors_total",
                "Redis connection failures."
            );
            counter!("agentpulse_redis_errors_total").absolute(c.redis_errors.load(Relaxed));
            describe_counter!(
                "agentpulse_redis_refused_total",
                "Messages of the agent-events channel refused whole (over a limit)."
            );
            counter!("agentpulse_redis_refused_total").absolute(c.redis_refused.load(Relaxed));
        }

        if let Some(store) = &state.store {
            let s = &store.stats;
            describe_gauge!(
                "agentpulse_redis_metrics_up",
                "1 when the last Redis metrics operation succeeded."
            );
            gauge!("agentpulse_redis_metrics_up").set(if s.up.load(Relaxed) { 1.0 } else { 0.0 });
            describe_counter!(
                "agentpulse_redis_metrics_flushes_total",
                "Flushes applied to Redis."
            );
            counter!("agentpulse_redis_metrics_flushes_total").absolute(s.flushes.load(Relaxed));
            describe_counter!(
                "agentpulse_redis_metrics_round_trips_total",
                "Round trips to Redis for metrics."
            );
            counter!("agentpulse_redis_metrics_round_trips_total")
                .absolute(s.round_trips.load(Relaxed));
            describe_counter!(
                "agentpulse_redis_metrics_failures_total",
                "Failed flush attempts."
            );
            counter!("agentpulse_redis_metrics_failures_total").absolute(s.failures.load(Relaxed));
            describe_counter!(
                "agentpulse_redis_metrics_dropped_events_total",
                "Events whose increments were dropped."
            );
            counter!("agentpulse_redis_metrics_dropped_events_total")
                .absolute(s.dropped_events.load(Relaxed));
            describe_gauge!(
                "agentpulse_redis_metrics_pending_events",
                "Events whose increments wait for a flush."
            );
            gauge!("agentpulse_redis_metrics_pending_events")
                .set(s.pending_events.load(Relaxed) as f64);
            describe_gauge!(
                "agentpulse_redis_metrics_last_flush_seconds",
                "Duration of the last flush."
            );
            gauge!("agentpulse_redis_metrics_last_flush_seconds")
                .set(s.last_flush_micros.load(Relaxed) as f64 / 1e6);
        }

        if let Some(cluster) = &state.config.cluster {
            crate::cluster::prometheus(&cluster.status);
        }

        otel(state);

        describe_gauge!("agentpulse_kpi", "The six KPIs over the rolling window.");
        let window = serde_json::to_value(&m.kpis.window).unwrap_or_default();
        for name in KPI_NAMES {
            if let Some(v) = window.get(name).and_then(|v| v.as_f64()) {
                gauge!("agentpulse_kpi", "kpi" => name).set(v);
            }
        }
    });
    handle.render()
}

/// The OTLP endpoints' counters and the per-model counters of metric points.
fn otel(state: &SharedState) {
    let o = &state.otlp;
    describe_counter!(
        "agentpulse_otlp_requests_total",
        "OTLP export requests, by transport."
    );
    counter!("agentpulse_otlp_requests_total", "transport" => "http")
        .absolute(o.counters.http_requests.load(Relaxed));
    counter!("agentpulse_otlp_requests_total", "transport" => "grpc")
        .absolute(o.counters.grpc_requests.load(Relaxed));
    describe_counter!(
        "agentpulse_otlp_throttled_total",
        "OTLP requests answered 429/503 (queue full, not durable)."
    );
    counter!("agentpulse_otlp_throttled_total").absolute(o.counters.throttled.load(Relaxed));
    describe_gauge!("agentpulse_otlp_grpc_up", "1 when OTLP/gRPC listens.");
    gauge!("agentpulse_otlp_grpc_up").set(
        if matches!(o.grpc, super::otlp::GrpcStatus::Listening(_)) {
            1.0
        } else {
            0.0
        },
    );
    let m = o.mapper.counters();
    describe_counter!(
        "agentpulse_otlp_items_total",
        "Spans, log records and data points received, and what became of them."
    );
    let st = m.stats;
    for (kind, n) in [
        ("spans", st.spans),
        ("log_records", st.log_records),
        ("data_points", st.data_points),
        ("rejected", st.rejected),
        ("truncated", st.truncated),
        ("points_used", st.points_used),
        ("points_ignored", st.points_ignored),
        ("points_skipped", st.points_skipped),
    ] {
        counter!("agentpulse_otlp_items_total", "kind" => kind).absolute(n);
    }
    describe_gauge!(
        "agentpulse_otel_model_tokens",
        "Tokens per model and type, from GenAI and Claude Code metric points."
    );
    describe_gauge!(
        "agentpulse_otel_model_cost_usd",
        "USD per model, from GenAI and Claude Code metric points."
    );
    for (model, c) in m.usage.iter() {
        let model = model.to_owned();
        for (ty, n) in [
            ("input", c.input_tokens),
            ("output", c.output_tokens),
            ("cache_read", c.cache_read_tokens),
            ("cache_creation", c.cache_creation_tokens),
        ] {
            gauge!("agentpulse_otel_model_tokens", "model" => model.clone(), "type" => ty).set(n);
        }
        gauge!("agentpulse_otel_model_cost_usd", "model" => model).set(c.cost_usd);
    }
    describe_counter!(
        "agentpulse_otel_unpriced_total",
        "Model calls and points that cost 0 for want of a price, per model."
    );
    for (model, n) in m.unpriced.iter() {
        counter!("agentpulse_otel_unpriced_total", "model" => model.to_owned()).absolute(*n);
    }
}
