//! ensemble-processor: Kafka → ClickHouse. Owns the schema (`migrate`),
//! serves the ops routes and reports broker and ClickHouse readiness; the
//! consume → enrich → dedup → insert loop is the processor issue's work.

pub mod config;

use std::time::Duration;

use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{kafka, probe, store, Shutdown};

pub use config::{Command, Config, Settings};

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
    tracing::info!(addr = %listener.local_addr()?, group = %settings.group_id, "processor listening");
    serve(
        listener,
        router(prometheus::Registry::new(), readiness),
        shutdown,
    )
    .await?;
    Ok(())
}
