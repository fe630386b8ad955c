//! Retention and erasure, run as commands: each reports what it removed.

use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use clickhouse::Row;
use ensemble_core::privacy::ContactHasher;
use ensemble_core::{ledger, Campaign, StoreConfig};
use serde::Deserialize;

/// Tables partitioned by month that hold event data.
/// The partitioned tables and the column their monthly partition comes from.
const TABLES: [(&str, &str); 2] = [("events", "ts"), ("events_hourly", "hour")];

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("unexpected partition id `{0}` (expected YYYYMM)")]
    Partition(String),
    #[error("the delete of {0} visitors' rows did not finish within {1:?}; it goes on in ClickHouse (system.mutations)")]
    MutationTimeout(usize, Duration),
}

#[derive(Debug, Row, Deserialize)]
struct PartitionRows {
    partition: String,
    rows: u64,
}

/// What retention dropped: (table, partition, rows).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub dropped: Vec<(String, String, u64)>,
    /// Ledger rows given up with them (the dashboard's figures follow).
    pub ledger_rows: u64,
}

/// First day of the month after `yyyymm`.
fn month_end(yyyymm: &str) -> Result<NaiveDate, MaintenanceError> {
    let bad = || MaintenanceError::Partition(yyyymm.to_owned());
    if yyyymm.len() != 6 || !yyyymm.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let y: i32 = yyyymm[..4].parse().map_err(|_| bad())?;
    let m: u32 = yyyymm[4..].parse().map_err(|_| bad())?;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    NaiveDate::from_ymd_opt(ny, nm, 1).ok_or_else(bad)
}

/// Drops every monthly partition whose whole month is older than `days`.
pub async fn retention(
    store: &StoreConfig,
    campaign: &Campaign,
    days: u32,
) -> Result<RetentionReport, MaintenanceError> {
    let client = store.client();
    let cutoff = Utc::now().date_naive() - chrono::Duration::days(i64::from(days));
    let mut report = RetentionReport::default();
    for (table, time_column) in TABLES {
        let parts: Vec<PartitionRows> = if store.is_cluster() {
            // Each node holds its shard's parts: ask the distributed table.
            client
                .query(&format!(
                    "SELECT toString(toYYYYMM({time_column})) AS partition, count() AS rows FROM {table} \
                     GROUP BY partition ORDER BY partition"
                ))
                .fetch_all()
                .await?
        } else {
            client
                .query(
                    "SELECT partition, sum(rows) AS rows FROM system.parts \
                     WHERE database = ? AND table = ? AND active GROUP BY partition ORDER BY partition",
                )
                .bind(&store.database)
                .bind(table)
                .fetch_all()
                .await?
        };
        for p in parts {
            if month_end(&p.partition)? <= cutoff {
                // The partition id is checked to be six digits above: safe to write in.
                client
                    .query(&format!(
                        "ALTER TABLE {} DROP PARTITION {}",
                        store.ddl_target(table),
                        p.partition
                    ))
                    .execute()
                    .await?;
                tracing::info!(table, partition = %p.partition, rows = p.rows, "partition dropped");
                report.dropped.push((table.to_owned(), p.partition, p.rows));
            }
        }
    }
    // The ledger holds visitor ids too: it forgets the same months (every
    // month before the cutoff's), and the figures with them.
    if !report.dropped.is_empty() {
        let boundary = cutoff.with_day(1).unwrap_or(cutoff);
        let cutoff_ms = boundary.and_hms_opt(0, 0, 0).map_or(0, |t| {
            u64::try_from(t.and_utc().timestamp_millis().max(0)).unwrap_or(0)
        });
        report.ledger_rows =
            ledger::retain(&client, campaign, |t| store.ddl_target(t), cutoff_ms).await?;
    }
    Ok(report)
}

/// What an erasure removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErasureReport {
    pub contact_hash: String,
    pub visitors: Vec<String>,
    pub rows_deleted: u64,
    pub months_rebuilt: Vec<u32>,
}

/// Right to erasure: every row of every visitor who signed up with `email`
/// is deleted from `events`, and the hourly rollup of the months they
/// touched is rebuilt from what remains.
pub async fn erase(
    store: &StoreConfig,
    campaign: &Campaign,
    hasher: &ContactHasher,
    email: &str,
    wait: Duration,
) -> Result<ErasureReport, MaintenanceError> {
    let client = store.client();
    let contact_hash = hasher.contact_hash(email);
    let visitors: Vec<String> = client
        .query("SELECT DISTINCT visitor_id FROM events WHERE contact_hash = ? ORDER BY visitor_id")
        .bind(&contact_hash)
        .fetch_all()
        .await?;
    let mut report = ErasureReport {
        contact_hash,
        visitors,
        ..Default::default()
    };
    if report.visitors.is_empty() {
        return Ok(report);
    }
    report.rows_deleted = client
        .query("SELECT count() FROM events WHERE has(?, visitor_id)")
        .bind(&report.visitors)
        .fetch_one()
        .await?;
    report.months_rebuilt = client
        .query("SELECT DISTINCT toYYYYMM(ts) AS m FROM events WHERE has(?, visitor_id) ORDER BY m")
        .bind(&report.visitors)
        .fetch_all()
        .await?;
    // The figures first: they are recomputed from the ledger, not from events.
    ledger::forget(&client, campaign, |t| store.ddl_target(t), &report.visitors).await?;
    client
        .query(&format!(
            "ALTER TABLE {} DELETE WHERE has(?, visitor_id)",
            store.ddl_target("events")
        ))
        .bind(&report.visitors)
        .execute()
        .await?;
    // Mutations run in the background on every version: wait for this one.
    let deadline = Instant::now() + wait;
    loop {
        let left: u64 = client
            .query("SELECT count() FROM events WHERE has(?, visitor_id)")
            .bind(&report.visitors)
            .fetch_one()
            .await?;
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(MaintenanceError::MutationTimeout(
                report.visitors.len(),
                wait,
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for month in &report.months_rebuilt {
        // States are sets of event ids / visitors: rows the live view adds
        // while this runs merge with the rebuilt ones without double counting.
        client
            .query(&format!(
                "ALTER TABLE {} DROP PARTITION {month}",
                store.ddl_target("events_hourly")
            ))
            .execute()
            .await?;
        client
            .query(
                "INSERT INTO events_hourly SELECT toStartOfHour(ts) AS hour, channel, phase, event_type, action, \
                 placement, device_class, is_bot, uniqExactState(event_id) AS events, uniqExactState(visitor_id) AS visitors \
                 FROM events WHERE toYYYYMM(ts) = ? \
                 GROUP BY hour, channel, phase, event_type, action, placement, device_class, is_bot",
            )
            .bind(*month)
            .execute()
            .await?;
    }
    tracing::info!(
        visitors = report.visitors.len(),
        rows = report.rows_deleted,
        "erasure done"
    );
    Ok(report)
}

/// Rebuilds the ledger and the dashboard's figures from `events`, with
/// progress on stderr.
pub async fn rebuild_facts(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<u64, MaintenanceError> {
    let client = store.client();
    let started = Instant::now();
    let n = ledger::rebuild(
        &client,
        campaign,
        |t| store.ddl_target(t),
        |read| {
            eprintln!(
                "rebuild-facts: {read} events accounted ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        },
    )
    .await?;
    tracing::info!(
        events = n,
        seconds = started.elapsed().as_secs_f64(),
        "figures rebuilt from events"
    );
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn month_ends() {
        assert_eq!(
            month_end("202501").unwrap(),
            NaiveDate::from_ymd_opt(2025, 2, 1).unwrap()
        );
        assert_eq!(
            month_end("202412").unwrap(),
            NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
        );
        assert!(month_end("2025-1").is_err());
        assert!(month_end("tuple()").is_err());
    }
}
