//! OTLP request bodies in, response bodies out (pure): protobuf
//! (`application/x-protobuf`) and OTLP/JSON (`application/json`: hex
//! trace and span ids, 64-bit integers as strings or numbers, enums as
//! integers, unknown fields ignored), through `opentelemetry-proto`'s
//! prost and serde types.
//!
//! **Keeping neighbours.** A body is first decoded whole. When that fails,
//! it is decoded again item by item (each resource, scope, span, record or
//! metric on its own), so one span whose bytes are broken (a string that
//! is not UTF-8, a bad hex id in JSON) is rejected alone and named, and the
//! others are kept; only a body whose framing itself is broken (truncated,
//! not protobuf, not JSON) is refused whole (HTTP 400). The item-by-item
//! pass reads the three outer levels of the request as bytes (protobuf)
//! or JSON values; every item is then decoded with the crate's own types.
//! JSON that is not valid UTF-8 is read with the bad bytes replaced by
//! U+FFFD, and the response says so.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

use super::Signal;

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names, `None` for any other type.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        }
    }
}

/// The content types the OTLP endpoints parse, for error messages.
pub const ACCEPTED_TYPES: &str = "application/x-protobuf or application/json (OTLP/JSON)";

/// The body could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not an OTLP {what} export request in {encoding}: {message}")]
pub struct DecodeError {
    /// `traces`, `logs` or `metrics`.
    pub what: &'static str,
    /// `protobuf` or `JSON`.
    pub encoding: &'static str,
    /// The decoder's message.
    pub message: String,
}

/// A decoded request, with the items that could not be decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded<T> {
    /// The request. An undecodable item is left in place as a default
    /// value, so positions stay those of the body.
    pub request: T,
    /// Undecodable items: (resource, scope, item) index → why.
    pub broken: HashMap<(usize, usize, usize), String>,
    /// Remarks on the whole body.
    pub warnings: Vec<String>,
}

impl<T> Decoded<T> {
    /// A request decoded elsewhere (gRPC), with nothing broken.
    pub fn whole(request: T) -> Decoded<T> {
        Decoded {
            request,
            broken: HashMap::new(),
            warnings: Vec::new(),
        }
    }
}

/// The three outer levels of any OTLP export request, items left as bytes
/// (field numbers are the same for traces, logs and metrics).
mod outer {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, repeated, tag = "1")]
        pub resources: Vec<Resource>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(bytes = "vec", tag = "1")]
        pub resource: Vec<u8>,
        #[prost(message, repeated, tag = "2")]
        pub scopes: Vec<Scope>,
        #[prost(bytes = "vec", tag = "3")]
        pub schema_url: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Scope {
        #[prost(bytes = "vec", tag = "1")]
        pub scope: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub items: Vec<Vec<u8>>,
        #[prost(bytes = "vec", tag = "3")]
        pub schema_url: Vec<u8>,
    }
}

type Broken = HashMap<(usize, usize, usize), String>;

/// One resource of a request, generic over the signal.
struct Parts<I> {
    resource: Option<Resource>,
    scopes: Vec<(Option<InstrumentationScope>, Vec<I>)>,
}

fn decode_message<M: Message + Default>(bytes: &[u8]) -> Result<M, String> {
    M::decode(bytes).map_err(|e| e.to_string())
}

/// Item by item, from protobuf.
fn lenient_proto<I: Message + Default>(bytes: &[u8]) -> Result<(Vec<Parts<I>>, Broken), String> {
    let req = outer::Request::decode(bytes).map_err(|e| e.to_string())?;
    let mut broken = Broken::new();
    let mut out = Vec::with_capacity(req.resources.len());
    for (r, res) in req.resources.into_iter().enumerate() {
        let (resource, res_err) = if res.resource.is_empty() {
            (None, None)
        } else {
            match decode_message::<Resource>(&res.resource) {
                Ok(x) => (Some(x), None),
                Err(e) => (None, Some(format!("resource: undecodable: {e}"))),
            }
        };
        let mut scopes = Vec::with_capacity(res.scopes.len());
        for (s, sc) in res.scopes.into_iter().enumerate() {
            let (scope, sc_err) = if sc.scope.is_empty() {
                (None, None)
            } else {
                match decode_message::<InstrumentationScope>(&sc.scope) {
                    Ok(x) => (Some(x), None),
                    Err(e) => (None, Some(format!("scope: undecodable: {e}"))),
                }
            };
            let mut items = Vec::with_capacity(sc.items.len());
            for (i, b) in sc.items.iter().enumerate() {
                let why = res_err.clone().or_else(|| sc_err.clone());
                match (why, decode_message::<I>(b)) {
                    (None, Ok(item)) => items.push(item),
                    (Some(why), _) | (None, Err(why)) => {
                        broken.insert((r, s, i), undecodable(why));
                        items.push(I::default());
                    }
                }
            }
            scopes.push((scope, items));
        }
        out.push(Parts { resource, scopes });
    }
    Ok((out, broken))
}

fn undecodable(why: String) -> String {
    if why.starts_with("resource:") || why.starts_with("scope:") {
        why
    } else {
        format!("undecodable: {why}")
    }
}

/// Item by item, from JSON, with the signal's key names.
fn lenient_json<I: serde::de::DeserializeOwned + Default>(
    text: &str,
    keys: [&str; 3],
) -> Result<(Vec<Parts<I>>, Broken), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Object(mut top) = v else {
        return Err("expected a JSON object".into());
    };
    let resources = match top.remove(keys[0]) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("{}: expected an array", keys[0])),
    };
    let mut broken = Broken::new();
    let mut out = Vec::with_capacity(resources.len());
    for (r, res) in resources.into_iter().enumerate() {
        let Value::Object(mut res) = res else {
            return Err(format!("{}[{r}]: expected an object", keys[0]));
        };
        let (resource, res_err) = match res.remove("resource") {
            None | Some(Value::Null) => (None, None),
            Some(v) => match serde_json::from_value::<Resource>(v) {
                Ok(x) => (Some(x), None),
                Err(e) => (None, Some(format!("resource: {e}"))),
            },
        };
        let scope_list = match res.remove(keys[1]) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(format!("{}[{r}].{}: expected an array", keys[0], keys[1])),
        };
        let mut scopes = Vec::with_capacity(scope_list.len());
        for (s, sc) in scope_list.into_iter().enumerate() {
            let Value::Object(mut sc) = sc else {
                return Err(format!(
                    "{}[{r}].{}[{s}]: expected an object",
                    keys[0], keys[1]
                ));
            };
            let (scope, sc_err) = match sc.remove("scope") {
                None | Some(Value::Null) => (None, None),
                Some(v) => match serde_json::from_value::<InstrumentationScope>(v) {
                    Ok(x) => (Some(x), None),
                    Err(e) => (None, Some(format!("scope: {e}"))),
                },
            };
            let list = match sc.remove(keys[2]) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a,
                Some(_) => {
                    return Err(format!(
                        "{}[{r}].{}[{s}].{}: expected an array",
                        keys[0], keys[1], keys[2]
                    ))
                }
            };
            let mut items = Vec::with_capacity(list.len());
            for (i, v) in list.into_iter().enumerate() {
                let why = res_err.clone().or_else(|| sc_err.clone());
                match (why, serde_json::from_value::<I>(v)) {
                    (None, Ok(item)) => items.push(item),
                    (Some(why), _) => {
                        broken.insert((r, s, i), why);
                        items.push(I::default());
                    }
                    (None, Err(e)) => {
                        broken.insert((r, s, i), format!("undecodable: {e}"));
                        items.push(I::default());
                    }
                }
            }
            scopes.push((scope, items));
        }
        out.push(Parts { resource, scopes });
    }
    Ok((out, broken))
}

/// JSON text of a body, invalid UTF-8 replaced (with a warning).
fn json_text<'a>(bytes: &'a [u8], warnings: &mut Vec<String>) -> std::borrow::Cow<'a, str> {
    let text = String::from_utf8_lossy(bytes);
    if let std::borrow::Cow::Owned(_) = text {
        warnings.push(
            "the JSON body was not valid UTF-8: the bad bytes were read as U+FFFD".to_owned(),
        );
    }
    text
}

fn decode_with<T, I>(
    bytes: &[u8],
    enc: Encoding,
    signal: Signal,
    keys: [&str; 3],
    assemble: impl Fn(Vec<Parts<I>>) -> T,
) -> Result<Decoded<T>, DecodeError>
where
    T: Message + Default + serde::de::DeserializeOwned,
    I: Message + Default + serde::de::DeserializeOwned,
{
    let err = |message: String| DecodeError {
        what: signal.as_str(),
        encoding: enc.name(),
        message,
    };
    let mut warnings = Vec::new();
    match enc {
        Encoding::Protobuf => match T::decode(bytes) {
            Ok(request) => Ok(Decoded {
                request,
                broken: Broken::new(),
                warnings,
            }),
            Err(whole) => match lenient_proto::<I>(bytes) {
                Ok((parts, broken)) => Ok(Decoded {
                    request: assemble(parts),
                    broken,
                    warnings,
                }),
                Err(_) => Err(err(whole.to_string())),
            },
        },
        Encoding::Json => {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Err(err("empty body (an empty request is {})".into()));
            }
            let text = json_text(bytes, &mut warnings);
            match serde_json::from_str::<T>(&text) {
                Ok(request) => Ok(Decoded {
                    request,
                    broken: Broken::new(),
                    warnings,
                }),
                Err(whole) => match lenient_json::<I>(&text, keys) {
                    Ok((parts, broken)) => Ok(Decoded {
                        request: assemble(parts),
                        broken,
                        warnings,
                    }),
                    Err(_) => Err(err(whole.to_string())),
                },
            }
        }
    }
}

/// Decodes a trace export request.
pub fn traces(
    bytes: &[u8],
    enc: Encoding,
) -> Result<Decoded<ExportTraceServiceRequest>, DecodeError> {
    decode_with::<_, Span>(
        bytes,
        enc,
        Signal::Traces,
        ["resourceSpans", "scopeSpans", "spans"],
        |parts| ExportTraceServiceRequest {
            resource_spans: parts
                .into_iter()
                .map(|p| ResourceSpans {
                    resource: p.resource,
                    scope_spans: p
                        .scopes
                        .into_iter()
                        .map(|(scope, spans)| ScopeSpans {
                            scope,
                            spans,
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        },
    )
}

/// Decodes a logs export request.
pub fn logs(bytes: &[u8], enc: Encoding) -> Result<Decoded<ExportLogsServiceRequest>, DecodeError> {
    decode_with::<_, LogRecord>(
        bytes,
        enc,
        Signal::Logs,
        ["resourceLogs", "scopeLogs", "logRecords"],
        |parts| ExportLogsServiceRequest {
            resource_logs: parts
                .into_iter()
                .map(|p| ResourceLogs {
                    resource: p.resource,
                    scope_logs: p
                        .scopes
                        .into_iter()
                        .map(|(scope, log_records)| ScopeLogs {
                            scope,
                            log_records,
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        },
    )
}

/// Decodes a metrics export request.
pub fn metrics(
    bytes: &[u8],
    enc: Encoding,
) -> Result<Decoded<ExportMetricsServiceRequest>, DecodeError> {
    decode_with::<_, Metric>(
        bytes,
        enc,
        Signal::Metrics,
        ["resourceMetrics", "scopeMetrics", "metrics"],
        |parts| ExportMetricsServiceRequest {
            resource_metrics: parts
                .into_iter()
                .map(|p| ResourceMetrics {
                    resource: p.resource,
                    scope_metrics: p
                        .scopes
                        .into_iter()
                        .map(|(scope, metrics)| ScopeMetrics {
                            scope,
                            metrics,
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        },
    )
}

/// The success response body: `partial_success` set when something was
/// rejected or there is a message, in the request's encoding.
pub fn response(signal: Signal, enc: Encoding, rejected: u64, message: &str) -> Vec<u8> {
    let partial = rejected > 0 || !message.is_empty();
    let rejected_i = i64::try_from(rejected).unwrap_or(i64::MAX);
    match enc {
        Encoding::Protobuf => match signal {
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: partial.then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected_i,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: partial.then(|| ExportLogsPartialSuccess {
                    rejected_log_records: rejected_i,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse {
                partial_success: partial.then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: rejected_i,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec(),
        },
        Encoding::Json => {
            if !partial {
                return b"{}".to_vec();
            }
            let key = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Logs => "rejectedLogRecords",
                Signal::Metrics => "rejectedDataPoints",
            };
            let mut p = serde_json::Map::new();
            p.insert(key.into(), Value::from(rejected));
            p.insert("errorMessage".into(), Value::from(message));
            serde_json::to_vec(&serde_json::json!({ "partialSuccess": p })).expect("JSON of a map")
        }
    }
}

/// gRPC status codes used in `google.rpc.Status` error bodies.
pub mod code {
    /// The request is malformed.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// A token is missing or unknown.
    pub const UNAUTHENTICATED: i32 = 16;
    /// The token may not write.
    pub const PERMISSION_DENIED: i32 = 7;
    /// Over a limit (size, queue).
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// The body did not arrive in time.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// Try again later.
    pub const UNAVAILABLE: i32 = 14;
    /// Something unexpected.
    pub const INTERNAL: i32 = 13;
}

/// An error response body (`google.rpc.Status`) in `enc`.
pub fn status(enc: Encoding, code: i32, message: &str) -> Vec<u8> {
    match enc {
        Encoding::Protobuf => tonic_types::pb::Status {
            code,
            message: message.to_owned(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": code,
            "message": message,
        }))
        .expect("JSON of a map"),
    }
}
