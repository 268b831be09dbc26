//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs`, `/v1/metrics` (answers in
//! [`super`]). Behind the same layers as `POST /events`: a token that may
//! write, a browser `Origin` that may write, gzip decoded before the size
//! limit; only `application/x-protobuf` and `application/json` bodies are
//! read, so the types a web page may send cross-site without asking are
//! refused (415).

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{export_logs, export_metrics, export_traces, ExportError, Exported};
use crate::hub::ingest::{read_body_sized, ReadError};
use crate::hub::{error_response, SharedState};
use crate::otel::decode::{self, code, Encoding, ACCEPTED_TYPES};
use crate::otel::Signal;

/// `POST /v1/traces`.
pub async fn traces(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Signal::Traces).await
}

/// `POST /v1/logs`.
pub async fn logs(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Signal::Logs).await
}

/// `POST /v1/metrics`.
pub async fn metrics(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Signal::Metrics).await
}

fn reply(status: StatusCode, enc: Encoding, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, enc.content_type())], body).into_response()
}

async fn handle(state: SharedState, headers: HeaderMap, body: Body, signal: Signal) -> Response {
    let c = &state.otlp.counters;
    c.http_requests.fetch_add(1, Ordering::Relaxed);
    let refused = || c.refused_bodies.fetch_add(1, Ordering::Relaxed);
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(enc) = ct.and_then(Encoding::from_content_type) else {
        refused();
        let what = match ct {
            Some(t) => format!("content type {t:?} is not accepted"),
            None => "no Content-Type given".to_owned(),
        };
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{what}: send Content-Type: {ACCEPTED_TYPES}"),
        );
    };
    let limit = state.config.max_body_bytes;
    // The declared length, unless gzip was decoded (the length was the
    // compressed one, and the header is gone).
    let hint = headers
        .get(header::CONTENT_LENGTH)
        .filter(|_| !headers.contains_key(header::CONTENT_ENCODING))
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let timeout = state.config.body_timeout;
    let read = tokio::time::timeout(timeout, read_body_sized(body, limit, hint)).await;
    let Ok(read) = read else {
        refused();
        // The body is left unread, so hyper closes the connection after
        // this answer.
        return reply(
            StatusCode::REQUEST_TIMEOUT,
            enc,
            decode::status(
                enc,
                code::DEADLINE_EXCEEDED,
                &format!(
                    "the request body did not arrive within {} s (--body-timeout)",
                    timeout.as_secs_f64()
                ),
            ),
        );
    };
    let bytes = match read {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            refused();
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                enc,
                decode::status(
                    enc,
                    code::RESOURCE_EXHAUSTED,
                    &format!("request body over the {limit}-byte limit (after decompression): send smaller batches"),
                ),
            );
        }
        Err(ReadError::Broken(e)) => {
            refused();
            return reply(
                StatusCode::BAD_REQUEST,
                enc,
                decode::status(
                    enc,
                    code::INVALID_ARGUMENT,
                    &format!("could not read the request body: {e}"),
                ),
            );
        }
    };
    let outcome = match signal {
        Signal::Traces => match decode::traces(&bytes, enc) {
            Ok(d) => Ok(export_traces(&state, d).await),
            Err(e) => Err(e),
        },
        Signal::Logs => match decode::logs(&bytes, enc) {
            Ok(d) => Ok(export_logs(&state, d).await),
            Err(e) => Err(e),
        },
        Signal::Metrics => match decode::metrics(&bytes, enc) {
            Ok(d) => Ok(export_metrics(&state, d).await),
            Err(e) => Err(e),
        },
    };
    match outcome {
        Err(e) => {
            refused();
            state
                .counters
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
            reply(
                StatusCode::BAD_REQUEST,
                enc,
                decode::status(enc, code::INVALID_ARGUMENT, &e.to_string()),
            )
        }
        Ok(Ok(Exported { rejected, message })) => reply(
            StatusCode::OK,
            enc,
            decode::response(signal, enc, rejected, &message),
        ),
        Ok(Err(e @ ExportError::LogFull(_))) => reply(
            // Not a code the OTLP spec retries: the exporter drops the batch
            // and says so, instead of retrying into a full disk.
            StatusCode::INSUFFICIENT_STORAGE,
            enc,
            decode::status(enc, code::RESOURCE_EXHAUSTED, &e.message()),
        ),
        Ok(Err(e)) => {
            let status = match e {
                ExportError::QueueFull => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = reply(
                status,
                enc,
                decode::status(enc, code::UNAVAILABLE, &e.message()),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}
