//! The consume loop: Kafka → decode → re-check → enrich → batch → one INSERT
//! per flush → store offsets only after ClickHouse accepted the batch
//! (rust-rdkafka's at-least-once pattern: `enable.auto.offset.store=false`,
//! stored offsets committed by librdkafka and after every flush).
//!
//! While an INSERT fails the loop retries it and consumes nothing more, so
//! memory stays bounded by one batch. Duplicates — redelivery after a crash
//! or a rebalance, client retries — are removed by event_id downstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ensemble_core::event::EventMessage;
use ensemble_core::{Campaign, EventRow, Shutdown};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};

use crate::batcher::{Batch, BatchLimits};
use crate::dlq::{DeadLetters, Origin};
use crate::enrich::{recheck, Enricher};
use crate::metrics::Metrics;
use crate::sink;

pub struct Pipeline {
    pub consumer: Arc<StreamConsumer>,
    pub client: clickhouse::Client,
    pub campaign: Campaign,
    pub enricher: Enricher,
    pub dead_letters: DeadLetters,
    pub metrics: Metrics,
    pub limits: BatchLimits,
    pub insert_retry_max: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Runs until `shutdown`: then inserts what it holds (if ClickHouse takes
    /// it), stores and commits those offsets, and returns.
    ///
    /// One INSERT may run while the next batch fills; the loop waits for it
    /// before starting another, so batches land — and their offsets are
    /// stored — in order, and memory holds at most two batches.
    pub async fn run(self, shutdown: Shutdown) {
        let mut batch = Batch::default();
        let mut inflight: Option<Inflight> = None;
        let mut abandoned = false;
        loop {
            let wait = if inflight.is_some() {
                // Look at the insert under way soon: its offsets are stored once it is done.
                Duration::from_millis(20).min(batch.time_left(&self.limits, Instant::now()))
            } else if batch.is_empty() {
                Duration::from_secs(1)
            } else {
                batch.time_left(&self.limits, Instant::now())
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                received = tokio::time::timeout(wait, self.consumer.recv()) => match received {
                    Err(_idle) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(Ok(m)) => self.handle(&m, &mut batch).await,
                },
            }
            if inflight.as_ref().is_some_and(|t| t.is_finished()) {
                abandoned |= !self.finish(inflight.take(), abandoned).await;
            }
            if batch.is_due(&self.limits, Instant::now()) {
                abandoned |= !self.finish(inflight.take(), abandoned).await;
                inflight = Some(self.start_insert(std::mem::take(&mut batch), &shutdown));
            }
        }
        abandoned |= !self.finish(inflight.take(), abandoned).await;
        let last = self.start_insert(batch, &shutdown);
        self.finish(Some(last), abandoned).await;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored, or partitions revoked)");
        }
        tracing::info!("consume loop stopped");
    }

    async fn handle(&self, m: &BorrowedMessage<'_>, batch: &mut Batch) {
        self.metrics.consumed.inc();
        let payload = m.payload().unwrap_or_default();
        let decoded = EventMessage::decode(payload)
            .map_err(|e| (e.code(), e.to_string()))
            .and_then(|msg| {
                recheck(&msg)
                    .map(|()| msg)
                    .map_err(|r| (r, format!("message fails re-check: {r}")))
            });
        match decoded {
            Ok(msg) => {
                let enrichment = self.enricher.enrich(&self.campaign, &msg);
                batch.push(EventRow::new(&msg, enrichment, Utc::now()), payload.len());
            }
            Err((reason, detail)) => {
                let from = Origin {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                };
                tracing::warn!(
                    reason,
                    partition = from.partition,
                    offset = from.offset,
                    "dead-lettering a message"
                );
                self.dead_letters
                    .send(m.key(), payload, reason, &detail, from)
                    .await;
                self.metrics
                    .dead_lettered
                    .with_label_values(&[reason])
                    .inc();
            }
        }
        batch.handled(m.topic(), m.partition(), m.offset());
    }

    /// Starts the INSERT of `batch`; the task gives the batch back once
    /// ClickHouse accepted it, or `None` if shutdown came while it failed.
    fn start_insert(&self, batch: Batch, shutdown: &Shutdown) -> Inflight {
        let (client, campaign, metrics, max, shutdown) = (
            self.client.clone(),
            self.campaign.clone(),
            self.metrics.clone(),
            self.insert_retry_max,
            shutdown.clone(),
        );
        tokio::spawn(async move {
            if batch.rows.is_empty() {
                return Some(batch);
            }
            if let Err(e) =
                sink::insert(&client, &campaign, &batch.rows, max, &metrics, &shutdown).await
            {
                // Not inserted: its offsets are not stored; the messages come again.
                tracing::warn!(error = %e, rows = batch.len(), "batch abandoned at shutdown");
                return None;
            }
            let now = Utc::now();
            for r in &batch.rows {
                let event_delay = (now - r.ts).num_milliseconds().max(0) as f64 / 1000.0;
                let ingest_delay = (now - r.received_at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics
                    .delay
                    .with_label_values(&["event"])
                    .observe(event_delay);
                metrics
                    .delay
                    .with_label_values(&["ingest"])
                    .observe(ingest_delay);
            }
            Some(batch)
        })
    }

    /// Waits for an INSERT and stores its batch's offsets. Returns false if
    /// the batch was abandoned. Once one batch is abandoned no later offset
    /// is stored (`after_abandoned`): that would skip its messages.
    async fn finish(&self, inflight: Option<Inflight>, after_abandoned: bool) -> bool {
        let Some(task) = inflight else { return true };
        let batch = match task.await {
            Ok(Some(batch)) => batch,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(error = %e, "insert task failed");
                return false;
            }
        };
        if after_abandoned {
            return true;
        }
        for (topic, partition, offset) in batch.offsets() {
            // rd_kafka_offset_store stores offset + 1: the next message to read.
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // The partition was revoked meanwhile: its new owner reads
                // these messages again, and duplicates are removed by event_id.
                tracing::info!(error = %e, topic, partition, "offset not stored (partition no longer assigned)");
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(error = %e, "async commit not started");
        }
        true
    }
}

/// An INSERT under way.
type Inflight = tokio::task::JoinHandle<Option<Batch>>;

/// Every `every`, sets the lag gauge of each partition assigned to this
/// member (high watermark − committed offset), and of no other.
pub fn spawn_lag_probe(
    consumer: Arc<StreamConsumer>,
    metrics: Metrics,
    every: Duration,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        loop {
            let c = consumer.clone();
            let m = metrics.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(committed) = c.committed(Duration::from_secs(5)) else {
                    return;
                };
                // Only the partitions assigned now: a revoked partition's
                // last figure would otherwise stay, counted twice in the group.
                m.lag.reset();
                for e in committed.elements() {
                    let Ok((_low, high)) =
                        c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                    else {
                        continue;
                    };
                    let done = e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0);
                    m.lag
                        .with_label_values(&[&e.partition().to_string()])
                        .set((high - done).max(0));
                }
            })
            .await;
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}
