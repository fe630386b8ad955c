//! ensemble-ingest: the collector. Serves the ops routes and reports broker
//! readiness; the event endpoints (`/v1/events`, `/r/{code}`, `/p.gif`,
//! `/t.js`, `/v1/import`) are the collector issue's work.

pub mod config;

use std::time::Duration;

use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{kafka, probe, Shutdown};

pub use config::{Config, Settings};

/// The collector's routes.
pub fn router(registry: prometheus::Registry, readiness: Readiness) -> Router {
    ops_router(registry, readiness)
}

/// Serves until `shutdown` trips.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let readiness = Readiness::default();
    let brokers = settings.kafka.brokers.clone();
    probe::spawn(
        readiness.clone(),
        "kafka",
        Duration::from_secs(5),
        shutdown.clone(),
        move || {
            let brokers = brokers.clone();
            async move { kafka::metadata_reachable(&brokers, Duration::from_secs(3)).await }
        },
    );
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, campaign = %settings.campaign.id, "ingest listening");
    serve(
        listener,
        router(prometheus::Registry::new(), readiness),
        shutdown,
    )
    .await?;
    Ok(())
}
