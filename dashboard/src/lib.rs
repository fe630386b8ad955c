//! ensemble-dashboard: JSON API and HTML page over ClickHouse. Serves the ops
//! routes and reports ClickHouse readiness; the API and page are the
//! dashboard issue's work.

pub mod attribution;
pub mod config;

use std::time::Duration;

use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{probe, store, Shutdown};

pub use config::{Config, Settings};

pub fn router(registry: prometheus::Registry, readiness: Readiness) -> Router {
    ops_router(registry, readiness)
}

/// Serves until `shutdown` trips.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let readiness = Readiness::default();
    let store = settings.store.clone();
    probe::spawn(
        readiness.clone(),
        "clickhouse",
        Duration::from_secs(5),
        shutdown.clone(),
        move || {
            let store = store.clone();
            async move { store::schema_ready(&store).await }
        },
    );
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "dashboard listening");
    serve(
        listener,
        router(prometheus::Registry::new(), readiness),
        shutdown,
    )
    .await?;
    Ok(())
}
