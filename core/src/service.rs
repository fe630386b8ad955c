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
    use super::*;

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
