//! In-process calls of the hub's router (`tower::ServiceExt::oneshot`), for
//! the tests of [`super::api`] and [`super::auth`]: a real pipeline and
//! state, no socket between the test and the handlers.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use super::{api, HubConfig, RunningHub};
use crate::emitter::Emitter;

/// A hub with `config` (no log, quiet; a free port it is not called on)
/// and its router.
pub(crate) async fn hub(config: HubConfig) -> (RunningHub, Router) {
    let config = HubConfig {
        port: 0,
        log: None,
        ..config
    };
    let builder = Emitter::builder().no_log().quiet();
    let running = super::start(config, builder, tokio_util::sync::CancellationToken::new())
        .await
        .expect("the hub starts");
    let router = api::router(running.state().clone());
    (running, router)
}

/// A request to `uri` with the `Host` a local client sends and these
/// headers.
pub(crate) fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:3010");
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(Body::from(body.to_owned()))
        .expect("a valid request")
}

/// Calls the router once: the status and the body as JSON (`Null` when
/// it is not JSON).
pub(crate) async fn call(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("the body is read");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The `error` text of a refusal.
pub(crate) fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}
