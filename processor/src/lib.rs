//! ensemble-processor: Kafka → ClickHouse. Consumes the events topic in a
//! group, dead-letters what it cannot use, enriches (channel, phase, device,
//! bot), inserts in batches and stores offsets only after ClickHouse has the
//! rows. Also owns the schema (`migrate`), retention and erasure.

pub mod batcher;
pub mod chain;
pub mod commands;
pub mod config;
pub mod dlq;
pub mod enrich;
pub mod handover;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod pipeline;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ensemble_core::service::{ops_router, serve, Readiness};
use ensemble_core::{probe, store, Shutdown};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;

pub use config::{Command, Config, Settings};

use crate::dlq::DeadLetters;
use crate::enrich::Enricher;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

pub fn router(registry: prometheus::Registry, readiness: Readiness) -> Router {
    ops_router(registry, readiness)
}

/// Consumes and serves the ops routes on `listener` until `shutdown` trips.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    probe::kafka_topic(
        readiness.clone(),
        "kafka",
        &settings.kafka,
        shutdown.clone(),
    );
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

    tracing::info!(addr = %listener.local_addr()?, group = %settings.group_id, topic = %settings.kafka.topic, "processor running");
    let consume = tokio::spawn({
        let (shutdown, metrics, readiness) = (shutdown.clone(), metrics.clone(), readiness.clone());
        async move {
            // Before joining the group: a processor that must not consume
            // never holds partitions (a member that exits without leaving
            // keeps the next processor waiting for its session; seen as a
            // flaky upgrade test under load). The cost: a processor started
            // while ClickHouse is down joins, and reports lag, once it answers
            // (the dashboard's /api/live reads the group's lag from the broker
            // meanwhile).
            for store in &settings.databases.stores {
                if figures_need_rebuild(store, &shutdown).await {
                    shutdown.trigger();
                    anyhow::bail!(
                        "database {}: the figures need a rebuild (ensemble-processor rebuild-figures)",
                        store.database
                    );
                }
            }
            for (campaign, store) in settings.databases.iter() {
                keep_ranges(store, campaign).await;
            }
            let pipeline = match consumer_pipeline(&settings, &metrics, &readiness, &shutdown) {
                Ok(p) => p,
                Err(e) => {
                    shutdown.trigger();
                    return Err(e);
                }
            };
            pipeline.run(shutdown).await;
            Ok(())
        }
    });
    serve(
        listener,
        router(metrics.registry.clone(), readiness),
        shutdown,
    )
    .await?;
    consume.await?
}

/// The consumer (subscribed), its lag probe and membership watchdog, and
/// the pipeline around it.
fn consumer_pipeline(
    settings: &Settings,
    metrics: &Metrics,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> anyhow::Result<Pipeline> {
    let mut consumer_config = settings.kafka.consumer_config(&settings.group_id);
    consumer_config.set(
        "max.poll.interval.ms",
        settings.max_poll_interval_ms.to_string(),
    );
    // The eager protocol (librdkafka's default, written out): a rebalance
    // revokes every partition and each restarts from its committed offset,
    // which the hand-over relies on (`handover.rs`). A cooperative revoke of
    // some partitions would keep the others' positions past a batch that
    // was given up.
    consumer_config.set("partition.assignment.strategy", "range,roundrobin");
    // librdkafka's prefetch, bounded: by default it queues up to 100 000
    // messages or 64 MB ahead of the loop, which on a backlog is a third
    // of the processor's memory and buys nothing (a batch takes far longer
    // to write than to read).
    consumer_config
        .set("queued.min.messages", "5000")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.max.bytes", "4194304");
    let consumer: handover::EventsConsumer =
        consumer_config.create_with_context(handover::Handover::new(metrics.clone()))?;
    consumer.subscribe(&[&settings.kafka.topic])?;
    let consumer = Arc::new(consumer);
    let dlq_producer: FutureProducer = settings.kafka.producer_config(10_000).create()?;
    pipeline::spawn_lag_probe(
        consumer.clone(),
        settings.kafka.brokers.clone(),
        metrics.clone(),
        Duration::from_secs(5),
        shutdown.clone(),
    );
    let rejoin = Arc::new(std::sync::atomic::AtomicBool::new(false));
    membership::spawn_watchdog(
        consumer.clone(),
        settings.kafka.topic.clone(),
        readiness.clone(),
        rejoin.clone(),
        Duration::from_secs(5),
        Duration::from_millis(settings.rejoin_after_ms),
        shutdown.clone(),
    );
    Ok(Pipeline {
        consumer,
        topic: settings.kafka.topic.as_str().into(),
        campaigns: settings.databases.campaigns.clone(),
        clients: settings
            .databases
            .stores
            .iter()
            .map(|s| s.client())
            .collect(),
        histories: settings
            .databases
            .stores
            .iter()
            .map(|_| ensemble_core::ledger::Histories::new(settings.history_cache_events))
            .collect(),
        enricher: Enricher::new(),
        dead_letters: DeadLetters::new(dlq_producer, settings.kafka.dlq_topic.clone()),
        metrics: metrics.clone(),
        limits: settings.batch,
        insert_retry_max: Duration::from_millis(settings.insert_retry_max_ms),
        rejoin,
    })
}

/// Makes the view that sums the figures by range when there is none
/// (`ensemble_core::ranges::ensure`), and says how far the dashboard can
/// use it. Never stops the processor: without it the dashboard reads the
/// unsummed figures, which give the same answers.
async fn keep_ranges(store: &ensemble_core::StoreConfig, campaign: &ensemble_core::Campaign) {
    use ensemble_core::ranges::{self, Status};
    match ranges::ensure(store, campaign).await {
        Ok(s @ (Status::Whole | Status::NotKept)) => {
            tracing::info!(database = %store.database, "figures by range: {}", s.describe());
        }
        Ok(s) => tracing::warn!(database = %store.database, "figures by range: {}", s.describe()),
        Err(e) => tracing::warn!(
            database = %store.database,
            error = %e,
            "figures by range: could not check them (run ensemble-processor migrate); \
             the dashboard reads the unsummed figures"
        ),
    }
}

/// Waits for ClickHouse, then says whether the figures still have to be
/// rebuilt from `events` (a database upgraded from a version that stored
/// them differently): accounting new events on top would leave the history
/// out of every figure for good, so the processor stops and says what to do.
async fn figures_need_rebuild(store: &ensemble_core::StoreConfig, shutdown: &Shutdown) -> bool {
    let client = store.client();
    loop {
        match ensemble_core::rebuild::needs_rebuild(&client).await {
            Ok(false) => return false,
            Ok(true) => {
                tracing::error!(
                    database = %store.database,
                    "the figures must be rebuilt from `events` (this database was written by a version that \
                     stored them differently; see table rebuild_pending). Stop every processor, run \
                     `ensemble-processor rebuild-figures` once (or `ensemble-processor migrate`), then start \
                     the processors again"
                );
                return true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "waiting for ClickHouse before consuming");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown.wait() => return false,
                }
            }
        }
    }
}

/// Binds `settings.listen` and runs until `shutdown` trips.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    serve_on(listener, settings, shutdown).await
}
