//! OTLP/gRPC: the `opentelemetry-proto` trace, logs and metrics services
//! served with tonic on `--otlp-grpc-port` (answers in [`super`]).
//!
//! The token comes as `authorization: Bearer <token>` metadata (what
//! `OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer <token>"` sends) and
//! must grant writing. Requests may be gzip-compressed; a message may be as
//! large as `--max-body-bytes`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{export_logs, export_metrics, export_traces, ExportError, Exported};
use crate::hub::tokens::{Access, Denied};
use crate::hub::SharedState;
use crate::otel::Decoded;

/// Serves until the hub shuts down.
pub async fn serve(state: SharedState, listener: tokio::net::TcpListener) {
    let limit = state.config.max_body_bytes;
    let auth = {
        let st = state.clone();
        move |req: Request<()>| authorize(&st, req)
    };
    let traces = TraceServiceServer::new(Svc(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::new(Svc(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let metrics = MetricsServiceServer::new(Svc(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let shutdown = state.shutdown.clone();
    let served = tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            traces,
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            logs,
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            metrics, auth,
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move { shutdown.cancelled().await },
        )
        .await;
    if let Err(e) = served {
        tracing::error!("OTLP/gRPC server stopped: {e}");
    }
}

#[allow(clippy::result_large_err)]
fn authorize(state: &SharedState, req: Request<()>) -> Result<Request<()>, Status> {
    state
        .otlp
        .counters
        .grpc_requests
        .fetch_add(1, Ordering::Relaxed);
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let how = "send metadata authorization: Bearer <token> (OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer <token>\")";
    match state.config.tokens.authorize(given, Access::Write, how) {
        Ok(()) => Ok(req),
        Err(d) => {
            state.counters.refused.fetch_add(1, Ordering::Relaxed);
            Err(match d {
                Denied::Unauthenticated(m) => Status::unauthenticated(m),
                Denied::Forbidden(m) => Status::permission_denied(m),
            })
        }
    }
}

struct Svc(SharedState);

fn refused(e: ExportError) -> Status {
    match e {
        ExportError::QueueFull => Status::with_error_details(
            tonic::Code::Unavailable,
            e.message(),
            ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
        ),
        ExportError::Unavailable(_) => Status::unavailable(e.message()),
        ExportError::LogFull(_) => Status::resource_exhausted(e.message()),
    }
}

fn partial(e: &Exported) -> bool {
    e.rejected > 0 || !e.message.is_empty()
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let e = export_traces(&self.0, Decoded::whole(request.into_inner()))
            .await
            .map_err(refused)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(&e).then(|| ExportTracePartialSuccess {
                rejected_spans: count(e.rejected),
                error_message: e.message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let e = export_logs(&self.0, Decoded::whole(request.into_inner()))
            .await
            .map_err(refused)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(&e).then(|| ExportLogsPartialSuccess {
                rejected_log_records: count(e.rejected),
                error_message: e.message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let e = export_metrics(&self.0, Decoded::whole(request.into_inner()))
            .await
            .map_err(refused)?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(&e).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: count(e.rejected),
                error_message: e.message,
            }),
        }))
    }
}
