//! ClickHouse side of a batch, retried with backoff until it succeeds or
//! shutdown; nothing else moves while it fails. First the ledger and the
//! dashboard's figures (`ensemble_core::ledger::account`: one INSERT, and
//! a no-op for what was accounted before), then the raw rows (one INSERT).

use std::time::{Duration, Instant};

use ensemble_core::{ledger, Campaign, EventRow, Shutdown};

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("shutdown while ClickHouse was failing; the batch was not inserted (its offsets were not stored)")]
    ShutdownDuringRetry,
}

async fn insert_once(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
) -> Result<(), clickhouse::error::Error> {
    ledger::account(client, campaign, rows).await?;
    let mut insert = client.insert::<EventRow>("events").await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

/// Inserts `rows`, retrying with exponential backoff (100 ms doubling to
/// `max_backoff`) until ClickHouse accepts them.
pub async fn insert(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
    max_backoff: Duration,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<(), SinkError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match insert_once(client, campaign, rows).await {
            Ok(()) => {
                metrics
                    .insert_duration
                    .observe(started.elapsed().as_secs_f64());
                metrics.batch_rows.observe(rows.len() as f64);
                metrics.inserted.inc_by(rows.len() as u64);
                return Ok(());
            }
            Err(e) => {
                metrics.insert_failures.inc();
                tracing::warn!(error = %e, rows = rows.len(), retry_in_ms = backoff.as_millis() as u64, "insert failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => return Err(SinkError::ShutdownDuringRetry),
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}
