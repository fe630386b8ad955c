//! ensemble-ingest: the collector. Events in over HTTP (`/v1/events`,
//! `/v1/import`, `/r/{code}`, `/p.gif`, tracker `/t.js`), validated,
//! normalised (no raw e-mail, phone or IP leaves it), produced to Kafka with
//! the answer held until every delivery report is in.

pub mod body;
pub mod client;
pub mod config;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod normalise;
pub mod producer;
pub mod ratelimit;
pub mod routes;
pub mod visitor;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{probe, Shutdown};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::{Config, Settings};

use crate::guard::RepeatScans;
use crate::metrics::Metrics;
use crate::normalise::Normaliser;
use crate::producer::EventProducer;
use crate::ratelimit::RateLimiter;
use crate::routes::{AppState, Shared};
use crate::visitor::VisitorIds;

/// How long shutdown waits for the producer to flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The collector, built from its settings.
#[derive(Debug, Clone)]
pub struct Collector {
    pub state: Shared,
    pub readiness: Readiness,
}

impl Collector {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let producer = EventProducer::new(&settings.kafka, settings.delivery_timeout_ms)?;
        let mut declared = ensemble_model::declared::Declared::default();
        for c in settings.campaigns.iter() {
            declared.merge(&c.declared);
        }
        let state = AppState {
            campaigns: settings.campaigns.clone(),
            declared,
            normaliser: Normaliser::new(
                settings.hasher.clone(),
                // The day of a hashed visitor id is the main campaign's.
                VisitorIds::new(&settings.secret, settings.campaigns.get(0).timezone),
                settings.max_future_skew_s,
                settings.max_past_skew_s,
                settings.visit_token_ttl_s,
            ),
            producer,
            metrics: Metrics::new()?,
            limiter: RateLimiter::new(
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
                settings.rate_limit_max_clients,
            ),
            auth_failures: RateLimiter::per_minute(
                settings.auth_failures_per_min,
                settings.auth_failures_per_min,
                settings.rate_limit_max_clients,
            ),
            repeats: RepeatScans::new(
                Duration::from_secs(settings.repeat_scan_window_s),
                settings.rate_limit_max_clients,
            ),
            limits: settings.limits,
            import_token: settings.import_token.clone(),
            clients: settings.clients.clone(),
            retry_after_s: settings.retry_after_s,
            redirect_wait: Duration::from_millis(settings.redirect_wait_ms),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
        };
        Ok(Self {
            state: Arc::new(state),
            readiness: Readiness::default(),
        })
    }

    /// Every route: the collector's (see [`Collector::public_router`]) and the ops routes.
    pub fn router(&self) -> Router {
        self.public_router().merge(self.ops_router())
    }

    /// `/metrics`, `/healthz`, `/readyz`.
    pub fn ops_router(&self) -> Router {
        ops_router(self.state.metrics.registry.clone(), self.readiness.clone())
    }

    /// The event endpoints only: CORS for the landing origins, request
    /// metrics, request ids, no Referer leaks.
    pub fn public_router(&self) -> Router {
        let mut origins: Vec<_> = self
            .state
            .campaigns
            .iter()
            .flat_map(|c| &c.landing_origins)
            .filter_map(|o| o.parse().ok())
            .collect();
        origins.dedup();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::CONTENT_ENCODING,
            ])
            .max_age(Duration::from_secs(3600));
        let routes = Router::new()
            .route("/v1/events", post(routes::post_events))
            .route("/v1/import", post(routes::post_import))
            .route("/r/{code}", get(routes::redirect))
            .route("/p.gif", get(routes::pixel))
            .route("/t.js", get(routes::tracker))
            .route("/openapi.json", get(routes::openapi))
            .route_layer(middleware::from_fn_with_state(self.state.clone(), track))
            .layer(DefaultBodyLimit::disable())
            .with_state(self.state.clone());
        ensemble_core::service::harden(routes, self.state.request_timeout)
            .layer(middleware::from_fn(no_referrer))
            .layer(cors)
    }
}

/// No answer of the collector sends its URL (with a visit token) on as a Referer.
async fn no_referrer(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Counts requests by route and status and keeps the in-flight gauge.
async fn track(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = match req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/v1/events") => "events",
        Some("/v1/import") => "import",
        Some("/r/{code}") => "redirect",
        Some("/p.gif") => "pixel",
        Some("/t.js") => "tracker",
        Some("/openapi.json") => "openapi",
        _ => "other",
    };
    state.metrics.in_flight.inc();
    let resp = next.run(req).await;
    state.metrics.in_flight.dec();
    state
        .metrics
        .requests
        .with_label_values(&[route, resp.status().as_str()])
        .inc();
    resp
}

/// Serves on `listener` until `shutdown` trips, then flushes the producer.
/// Ready once the events topic exists on answering brokers.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    collector: Collector,
    kafka: ensemble_core::KafkaConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let router = collector.router();
    serve_router(listener, collector, router, kafka, shutdown).await
}

/// As [`serve_on`], without the ops routes on `listener` (they are served
/// elsewhere: `--ops-listen`).
pub async fn serve_public_on(
    listener: tokio::net::TcpListener,
    collector: Collector,
    kafka: ensemble_core::KafkaConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let router = collector.public_router();
    serve_router(listener, collector, router, kafka, shutdown).await
}

async fn serve_router(
    listener: tokio::net::TcpListener,
    collector: Collector,
    router: Router,
    kafka: ensemble_core::KafkaConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    probe::kafka_topic(
        collector.readiness.clone(),
        "kafka",
        &kafka,
        shutdown.clone(),
    );
    tracing::info!(addr = %listener.local_addr()?, campaign = %collector.state.campaigns.get(0).id, campaigns = collector.state.campaigns.len(), "ingest listening");
    serve(listener, router, shutdown).await?;
    let producer = collector.state.producer.clone();
    tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await??;
    tracing::info!("ingest stopped; producer flushed");
    Ok(())
}

/// Binds `settings.listen` (and `settings.ops_listen`) and serves until
/// `shutdown` trips.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let collector = Collector::new(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    match settings.ops_listen {
        None => serve_on(listener, collector, settings.kafka.clone(), shutdown).await,
        Some(ops) => {
            let ops = tokio::net::TcpListener::bind(ops).await?;
            tracing::info!(addr = %ops.local_addr()?, "ops routes listening");
            let ops_task = tokio::spawn(serve(ops, collector.ops_router(), shutdown.clone()));
            serve_public_on(listener, collector, settings.kafka.clone(), shutdown).await?;
            ops_task.await??;
            Ok(())
        }
    }
}
