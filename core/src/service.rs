//! HTTP plumbing every service shares: the `/metrics`, `/healthz` and
//! `/readyz` routes, a readiness registry, and serving with graceful shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::shutdown::Shutdown;

/// Named readiness checks; the service is ready when all are.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    pub fn set(&self, component: &'static str, ready: bool) {
        if let Ok(mut c) = self.components.lock() {
            c.insert(component, ready);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.components
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn is_ready(&self) -> bool {
        let snap = self.snapshot();
        !snap.is_empty() && snap.values().all(|r| *r)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Registry,
    readiness: Readiness,
}

/// `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (all components ready).
pub fn ops_router(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState {
            registry,
            readiness,
        })
}

async fn metrics(State(s): State<OpsState>) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<OpsState>) -> Response {
    let snap = s.readiness.snapshot();
    let status = if s.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(snap)).into_response()
}

/// Gives every request an id: in the `x-request-id` header of the answer,
/// in the JSON body of an error answer (`request_id`), and on every log
/// line written while serving it (a span field). Errors from ClickHouse or
/// Kafka are logged, not sent: the id is what ties a client's report to
/// the log line.
pub async fn request_id(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!("request", request_id = %id);
    let (method, started) = (req.method().clone(), std::time::Instant::now());
    // The path only (never the query), with any personal data typed into
    // it (`/r/0612345678`) redacted.
    let path = req.uri().path().to_owned();
    let path =
        ensemble_model::redact::redact(&path, ensemble_model::redact::Kinds::ALL).unwrap_or(path);
    let resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            %method,
            path,
            status = resp.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        parts.headers.insert("x-request-id", v);
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(json && (parts.status.is_client_error() || parts.status.is_server_error())) {
        return Response::from_parts(parts, body);
    }
    // Error bodies are small JSON objects: add the id to them.
    match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => {
            let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(mut o)) => {
                    o.insert("request_id".into(), serde_json::Value::String(id));
                    serde_json::to_vec(&o).unwrap_or_else(|_| bytes.to_vec())
                }
                _ => bytes.to_vec(),
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(body))
        }
        Err(_) => Response::from_parts(parts, axum::body::Body::empty()),
    }
}

/// Answers that must not be kept or leak where they came from: no caching
/// anywhere (`Cache-Control: no-store`), no Referer to other sites.
pub async fn private(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The layers of every public router (collector, dashboard), outermost
/// first: a request id and one log line per request ([`request_id`]); a
/// panic in a handler answered 500 (the service goes on serving others); a
/// request that takes longer than `timeout` answered 503.
pub fn harden(router: Router, timeout: std::time::Duration) -> Router {
    router
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(request_id))
}

/// The answer to a request whose handler panicked: the panic is logged
/// (with the request id), the client told what to give the administrator.
fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({
            "error": "internal",
            "message": "an internal error happened; the service goes on: retry, and give the request id to the administrator if it persists",
        })),
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` trips, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `GET path` through `app`: status, headers and body.
    async fn get_path(
        app: Router,
        path: &str,
    ) -> (StatusCode, axum::http::HeaderMap, axum::body::Bytes) {
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, headers, body)
    }

    #[tokio::test]
    async fn a_panic_or_a_slow_handler_is_answered_and_the_service_goes_on() {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let app = harden(
            Router::new()
                .route("/boom", get(boom))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        "late"
                    }),
                )
                .route("/ok", get(|| async { "fine" })),
            std::time::Duration::from_millis(200),
        );
        let call = |path: &'static str| get_path(app.clone(), path);
        let (status, headers, body) = call("/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "internal");
        assert_eq!(v["request_id"], headers["x-request-id"].to_str().unwrap());
        let (status, headers, _) = call("/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "timed out");
        assert!(headers.contains_key("x-request-id"));
        let (status, _, body) = call("/ok").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"fine"[..]),
            "still serving"
        );
    }

    #[tokio::test]
    async fn error_answers_carry_the_request_id_and_nothing_is_cached() {
        let app = Router::new()
            .route(
                "/fail",
                get(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(serde_json::json!({"error": "store_unavailable"})),
                    )
                }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(request_id))
            .layer(axum::middleware::from_fn(private));
        let call = |path: &'static str| get_path(app.clone(), path);
        let (_, h, body) = call("/fail").await;
        let id = h["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["request_id"], id.as_str());
        assert_eq!(v["error"], "store_unavailable");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let (_, h, body) = call("/ok").await;
        assert_eq!(&body[..], b"fine", "success bodies are left alone");
        assert!(h.contains_key("x-request-id"));
    }

    #[test]
    fn ready_only_when_every_component_is() {
        let r = Readiness::default();
        assert!(!r.is_ready(), "nothing registered is not ready");
        r.set("kafka", true);
        r.set("clickhouse", false);
        assert!(!r.is_ready());
        r.set("clickhouse", true);
        assert!(r.is_ready());
    }
}
