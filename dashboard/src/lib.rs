//! ensemble-dashboard: JSON / CSV API and the HTML page over ClickHouse, for
//! analysts (everything) and the agency (aggregates), behind access tokens.

pub mod access;
pub mod admission;
pub mod answers;
pub mod campaigns;
pub mod compare;
pub mod config;
pub mod csv;
pub mod endpoints;
pub mod error;
pub mod filters;
pub mod qr;
pub mod reconciliation;
pub mod state;
pub mod watch;

use std::time::Duration;

use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{probe, store, Shutdown};

pub use campaigns::Served;
pub use config::{Config, Settings};

/// Request metrics: `ensemble_dashboard_requests_total{route,status}` and
/// `ensemble_dashboard_request_duration_seconds{route}`; routes are the
/// fixed route templates.
#[derive(Debug, Clone)]
struct RequestMetrics {
    requests: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
}

impl RequestMetrics {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "ensemble_dashboard_requests_total",
                "API and page requests by route and status",
            ),
            &["route", "status"],
        )?;
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "ensemble_dashboard_request_duration_seconds",
                "Time to answer, by route (ClickHouse queries included)",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.0, 12)?),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

async fn track(
    axum::extract::State(m): axum::extract::State<RequestMetrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    m.duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

/// The API behind its token check, the page, and the open ops routes.
pub fn router(served: Served, registry: prometheus::Registry, readiness: Readiness) -> Router {
    public_router(served, &registry).merge(ops_router(registry, readiness))
}

/// The API behind its token check and the page, without the ops routes
/// (served on `--ops-listen`): one copy of the API per campaign, a request
/// going to the one its `campaign=` names (`campaigns::dispatch`).
pub fn public_router(served: Served, registry: &prometheus::Registry) -> Router {
    // A duplicate registration can only come from calling this twice on one
    // registry; the routes then go without request metrics rather than fail.
    let metrics = RequestMetrics::register(registry).ok();
    let main = served.states[0].clone();
    let timeout = main.request_timeout;
    // One memory of failed tokens for every campaign's API.
    let failures = std::sync::Arc::new(access::Failures::new(access::FAILURES_PER_MINUTE));
    let dispatch = std::sync::Arc::new(campaigns::Dispatch {
        campaigns: served.campaigns.clone(),
        routers: served
            .states
            .iter()
            .map(|s| campaign_api(s.clone(), failures.clone(), metrics.clone()))
            .collect(),
        tokens: main.clone(),
    });
    let served = std::sync::Arc::new(served);
    let listing = Router::new()
        .route("/api/campaigns", axum::routing::get(campaigns::list))
        .route("/api/years", axum::routing::get(campaigns::years))
        .with_state(served)
        .route_layer(axum::middleware::from_fn_with_state(
            main,
            access::require_token,
        ));
    // The page holds no data: it asks for the token and sends it in a header.
    let api = Router::new()
        .route("/", axum::routing::get(page))
        .route("/api/openapi.json", axum::routing::get(openapi))
        .merge(listing);
    let api = match &metrics {
        Some(m) => api.route_layer(axum::middleware::from_fn_with_state(m.clone(), track)),
        None => api,
    };
    let api = api.fallback(campaigns::dispatch).with_state(dispatch);
    ensemble_core::service::harden(api, timeout)
        .layer(axum::middleware::from_fn(ensemble_core::service::private))
}

/// One campaign's API, behind its token check.
fn campaign_api(
    state: state::Shared,
    failures: std::sync::Arc<access::Failures>,
    metrics: Option<RequestMetrics>,
) -> Router {
    let api = Router::new()
        .route(
            "/api/overview",
            axum::routing::get(endpoints::overview::overview),
        )
        .route(
            "/api/attribution",
            axum::routing::get(endpoints::attribution::attribution),
        )
        .route(
            "/api/channels",
            axum::routing::get(endpoints::channels::channels),
        )
        .route("/api/live", axum::routing::get(endpoints::live::live))
        .route(
            "/api/placements",
            axum::routing::get(endpoints::placements::placements),
        )
        .route("/api/funnel", axum::routing::get(endpoints::funnel::funnel))
        .route("/api/reach", axum::routing::get(endpoints::reach::reach))
        .route("/api/paths", axum::routing::get(endpoints::paths::paths))
        .route("/api/media", axum::routing::get(endpoints::media::media))
        .route(
            "/api/devices",
            axum::routing::get(endpoints::devices::devices),
        )
        .route(
            "/api/scan-hours",
            axum::routing::get(endpoints::scan_hours::scan_hours),
        )
        .route(
            "/api/timeseries",
            axum::routing::get(endpoints::timeseries::timeseries),
        )
        .route("/api/uplift", axum::routing::get(endpoints::uplift::uplift))
        .route(
            "/api/journey",
            axum::routing::get(endpoints::journey::journey),
        )
        .route(
            "/api/placements/{code}/{file}",
            axum::routing::get(qr::placement_qr),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require_token,
        ))
        // Outside the token check: each compared request passes it (and
        // the admission) on its own.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            compare::compare,
        ))
        // The token first, before any parameter (compare= included) is read.
        .route_layer(axum::middleware::from_fn_with_state(
            access::Door {
                state: state.clone(),
                failures,
            },
            access::door,
        ))
        .with_state(state);
    match metrics {
        Some(m) => api.route_layer(axum::middleware::from_fn_with_state(m, track)),
        None => api,
    }
}

/// The OpenAPI 3.1 description of the API (checked against the routes,
/// validated and fuzzed by the tests).
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn openapi() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The dashboard page: one HTML file, charts in inline SVG, no CDN.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

/// The API state of every campaign of `settings`.
pub fn state(settings: &Settings) -> anyhow::Result<Served> {
    let lag = std::sync::Arc::new(ensemble_core::kafka::LagReader::new(
        &settings.kafka.brokers,
        &settings.kafka.topic,
        &settings.processor_group,
    )?);
    // One admission for every campaign: a token's share is the same
    // whichever campaign it asks about.
    let gate = admission::Gate::new(
        settings.heavy,
        settings
            .analyst_tokens
            .iter()
            .map(|_| settings.heavy.per_analyst)
            .chain(
                settings
                    .agency_tokens
                    .iter()
                    .map(|_| settings.heavy.per_agency),
            )
            .enumerate(),
    );
    // By calendar start, so that the campaign holding the days before
    // each one is built before it.
    let campaigns = &settings.databases.campaigns;
    let listed: Vec<_> = settings.databases.iter().collect();
    let mut states: Vec<Option<state::Shared>> = vec![None; listed.len()];
    for i in campaigns.by_start() {
        let (campaign, store) = listed[i];
        let preceding = campaigns
            .preceding(i)
            .and_then(|j| states.get(j).cloned().flatten());
        states[i] = Some(campaign_state(
            settings, campaign, store, &lag, &gate, preceding,
        ));
    }
    let states = states.into_iter().flatten().collect();
    Ok(Served {
        campaigns: settings.databases.campaigns.clone(),
        states,
    })
}

/// One campaign's API state.
fn campaign_state(
    settings: &Settings,
    campaign: &ensemble_core::Campaign,
    store: &ensemble_core::StoreConfig,
    lag: &std::sync::Arc<ensemble_core::kafka::LagReader>,
    gate: &admission::Gate,
    preceding: Option<state::Shared>,
) -> state::Shared {
    std::sync::Arc::new(state::ApiState {
        campaign: campaign.clone(),
        collector_url: settings.collector_url.clone(),
        request_timeout: settings.request_timeout,
        // Every query under the dashboard's limits (time, memory, threads),
        // whatever the ClickHouse user's profile says; large GROUP BYs and
        // sorts spill to disk from half the memory instead of failing. The
        // read-only user (`ensemble_dashboard` in the shipped configs) adds
        // that it can write nothing.
        cluster: store.is_cluster(),
        client: store
            .client()
            .with_setting("max_execution_time", settings.query.timeout_s.to_string())
            .with_setting(
                "max_memory_usage",
                settings.query.max_memory_bytes.to_string(),
            )
            .with_setting("max_threads", settings.query.max_threads.to_string())
            .with_setting(
                "max_bytes_before_external_group_by",
                (settings.query.max_memory_bytes / 2).to_string(),
            )
            .with_setting(
                "max_bytes_before_external_sort",
                (settings.query.max_memory_bytes / 2).to_string(),
            )
            // The pre-summed tables are read again and again, a few granules
            // at a time: without the cache of decompressed blocks, each
            // seek decompressed a whole block (6.5 MB for the 35 top paths'
            // median minutes, most of that query's CPU). ClickHouse skips
            // the cache for reads of more than a million rows
            // (`merge_tree_max_rows_to_use_cache`), so the scans of raw
            // events behind custom filters do not flush it; its size is the
            // server's `uncompressed_cache_size`.
            .with_setting("use_uncompressed_cache", "1"),
        analyst_tokens: settings.analyst_tokens.clone(),
        agency_tokens: settings.agency_tokens.clone(),
        lag: lag.clone(),
        gate: gate.clone(),
        summed: state::Summed::new(campaign, store),
        reconciliation: reconciliation::Latest::default(),
        preceding,
    })
}

/// Serves until `shutdown` trips.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let readiness = Readiness::default();
    let stores = settings.databases.stores.clone();
    probe::spawn(
        readiness.clone(),
        "clickhouse",
        Duration::from_secs(5),
        shutdown.clone(),
        move || {
            let stores = stores.clone();
            async move { store::all_ready(&stores).await }
        },
    );
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "dashboard listening");
    let registry = prometheus::Registry::new();
    let state = state(&settings)?;
    watch::spawn(
        state.clone(),
        &registry,
        (Duration::from_secs(15), settings.reconcile_every),
        shutdown.clone(),
    )?;
    match settings.ops_listen {
        None => serve(listener, router(state, registry, readiness), shutdown).await?,
        Some(ops) => {
            let ops = tokio::net::TcpListener::bind(ops).await?;
            tracing::info!(addr = %ops.local_addr()?, "ops routes listening");
            let public = public_router(state, &registry);
            let ops_task = tokio::spawn(serve(
                ops,
                ops_router(registry, readiness),
                shutdown.clone(),
            ));
            serve(listener, public, shutdown).await?;
            ops_task.await??;
        }
    }
    Ok(())
}
