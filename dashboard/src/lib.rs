//! ensemble-dashboard: JSON API and HTML page over ClickHouse. Serves the ops
//! routes and reports ClickHouse readiness; the API and page are the
//! dashboard issue's work.

pub mod api;
pub mod attribution;
pub mod config;
pub mod filters;

use std::time::Duration;

use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{probe, store, Shutdown};

pub use config::{Config, Settings};

/// The API behind its token check, and the open ops routes.
pub fn router(state: api::Shared, registry: prometheus::Registry, readiness: Readiness) -> Router {
    let api = Router::new()
        .route("/", axum::routing::get(page))
        .route("/api/overview", axum::routing::get(api::overview))
        .route("/api/attribution", axum::routing::get(api::attribution))
        .route("/api/channels", axum::routing::get(api::channels))
        .route("/api/live", axum::routing::get(api::live))
        .route("/api/placements", axum::routing::get(api::placements))
        .route("/api/funnel", axum::routing::get(api::funnel))
        .route("/api/reach", axum::routing::get(api::reach))
        .route("/api/timeseries", axum::routing::get(api::timeseries))
        .route("/api/journey", axum::routing::get(api::journey))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::require_token,
        ))
        .with_state(state);
    api.merge(ops_router(registry, readiness))
}

/// The dashboard page: one HTML file, charts in inline SVG, no CDN.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

/// The API state for `settings`.
pub fn state(settings: &Settings) -> api::Shared {
    std::sync::Arc::new(api::ApiState {
        campaign: settings.campaign.clone(),
        client: settings.store.client(),
        analyst_tokens: settings.analyst_tokens.clone(),
        agency_tokens: settings.agency_tokens.clone(),
    })
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
        router(state(&settings), prometheus::Registry::new(), readiness),
        shutdown,
    )
    .await?;
    Ok(())
}
