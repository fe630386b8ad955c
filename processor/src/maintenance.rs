//! Retention and erasure, run as commands: each reports what it removed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use clickhouse::Row;
use ensemble_core::{ledger, rebuild, Campaign, CampaignDatabases, StoreConfig};
use ensemble_model::privacy::ContactHasher;
use serde::Deserialize;

/// The tables partitioned by month that hold event data, and the column
/// their monthly partition comes from.
const TABLES: [(&str, &str); 1] = [("events", "ts")];

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("unexpected partition id `{0}` (expected YYYYMM)")]
    Partition(String),
    #[error("the delete of {0} visitors' rows did not finish within {1:?}; it goes on in ClickHouse (system.mutations)")]
    MutationTimeout(usize, Duration),
    #[error("the delete of the rows before {0} did not finish within {1:?}; it goes on in ClickHouse (system.mutations): once it is done, run `ensemble-processor compact` to empty the ledger's carried sets")]
    RetentionTimeout(String, Duration),
    #[error("database {database}: migrations {pending:?} are not applied; run `ensemble-processor migrate` first (what is removed, and where, follows the schema this version writes)")]
    NotMigrated { database: String, pending: Vec<u32> },
    #[error("{0}")]
    Migrate(#[from] ensemble_core::migrate::MigrateError),
}

/// Refuses a database whose schema is behind this version's: retention
/// and erasure remove what this version stores, where it stores it (a
/// table an older version kept, such as the hourly rollup until 0013,
/// would keep what they remove).
async fn migrated(store: &StoreConfig) -> Result<(), MaintenanceError> {
    let pending = ensemble_core::migrate::pending(store).await?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(MaintenanceError::NotMigrated {
            database: store.database.clone(),
            pending,
        })
    }
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
    wait: Duration,
) -> Result<RetentionReport, MaintenanceError> {
    migrated(store).await?;
    let client = store.client();
    // More days than the calendar holds: nothing is that old.
    let cutoff = Utc::now()
        .date_naive()
        .checked_sub_days(chrono::Days::new(u64::from(days)))
        .unwrap_or(NaiveDate::MIN);
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
        // The deletes are mutations, run in the background: done before
        // this returns, so that nothing of those months is left behind.
        let deadline = Instant::now() + wait;
        let timeout = || MaintenanceError::RetentionTimeout(boundary.to_string(), wait);
        let left = format!(
            "SELECT (SELECT count() FROM ledger WHERE tombstone = 0 AND ms < {cutoff_ms}) \
             + (SELECT count() FROM {}.journeys WHERE {})",
            store.sql_database(),
            ledger::journeys_before(campaign, cutoff_ms)
        );
        until_none(deadline, timeout, || async {
            Ok(client.query(&left).fetch_one().await?)
        })
        .await?;
        // The journeys rows of those months other visitors' ledger rows carried.
        let carried = format!(
            "SELECT count() FROM ledger WHERE {}",
            ledger::carried_journeys_before(campaign, cutoff_ms)
        );
        empty_carried(&client, store, deadline, timeout, || async {
            Ok(client.query(&carried).fetch_one().await?)
        })
        .await?;
        // A person's first sign-up may have gone with those months.
        ensemble_core::later::settle_all(&client, campaign).await?;
    }
    Ok(report)
}

/// What an erasure removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErasureReport {
    pub contact_hash: String,
    /// Visitor ids only this person used: every row of them is deleted.
    pub own_visitors: Vec<String>,
    /// Visitor ids others use too (a hashed id — day, address, User-Agent —
    /// shared behind one network; a device someone else also signed up
    /// from): only the rows carrying this contact are deleted.
    pub shared_visitors: Vec<String>,
    /// Rows of `events` deleted.
    pub rows_deleted: u64,
}

/// Distinct visitor ids a query returns.
async fn visitor_ids(
    client: &clickhouse::Client,
    sql: &str,
    binds: &[&str],
    visitors: Option<&[String]>,
) -> Result<BTreeSet<String>, MaintenanceError> {
    let mut q = client.query(sql);
    if let Some(v) = visitors {
        q = q.bind(never_empty(v));
    }
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_all::<String>().await?.into_iter().collect())
}

/// Right to erasure: the person who signed up with `email`, found through
/// every table that holds their contact hash (`events`, the ledger, the
/// contact pairs — also after retention dropped the months of their
/// events). The visitor ids only they used lose every row; ids others use
/// too lose only the rows carrying this contact. The figures are withdrawn
/// first (ledger tombstones), then the contact pairs and rows deleted.
/// Run again after a timeout,
/// it finishes what is left and changes nothing else.
///
/// The address is looked up under every hash it may be stored under
/// ([`ContactHasher::contact_hashes`]: today's normalisation, and the
/// lower-casing of collectors before it); the report names today's hash.
pub async fn erase(
    databases: &CampaignDatabases,
    hasher: &ContactHasher,
    email: &str,
    wait: Duration,
) -> Result<ErasureReport, MaintenanceError> {
    for store in &databases.stores {
        migrated(store).await?;
    }
    let mut hashes = hasher.contact_hashes(email).into_iter();
    let mut report = erase_contact(databases, hashes.next().unwrap_or_default(), wait).await?;
    for hash in hashes {
        let older = erase_contact(databases, hash, wait).await?;
        report.own_visitors.extend(older.own_visitors);
        report.shared_visitors.extend(older.shared_visitors);
        report.rows_deleted += older.rows_deleted;
    }
    Ok(report)
}

/// [`erase`] of one contact hash.
async fn erase_contact(
    databases: &CampaignDatabases,
    hash: String,
    wait: Duration,
) -> Result<ErasureReport, MaintenanceError> {
    // The person's visitor ids, found in any campaign's database, are
    // erased from every one: a visitor who signed up in 2025 and came back
    // in 2026 without signing up again is the same person.
    let mut found = BTreeSet::new();
    for store in &databases.stores {
        let client = store.client();
        for sql in [
            "SELECT DISTINCT visitor_id FROM events WHERE contact_hash = ?",
            "SELECT DISTINCT visitor_id FROM ledger WHERE ev_contact = ?",
            "SELECT DISTINCT visitor_id FROM contact_visitors WHERE contact_hash = ?",
            "SELECT DISTINCT visitor_id FROM shared_contacts WHERE contact_hash = ?",
        ] {
            found.extend(visitor_ids(&client, sql, &[&hash], None).await?);
        }
    }
    let found: Vec<String> = found.into_iter().collect();
    // Someone else signed up from these too.
    let mut others = BTreeSet::new();
    for store in &databases.stores {
        let client = store.client();
        for sql in [
            "SELECT DISTINCT visitor_id FROM events WHERE has(?, visitor_id) AND contact_hash != '' AND contact_hash != ?",
            "SELECT DISTINCT visitor_id FROM ledger WHERE has(?, visitor_id) AND ev_contact != '' AND ev_contact != ?",
            "SELECT DISTINCT visitor_id FROM contact_visitors WHERE has(?, visitor_id) AND contact_hash != ?",
        ] {
            others.extend(visitor_ids(&client, sql, &[&hash], Some(&found)).await?);
        }
    }
    let (shared, own): (Vec<String>, Vec<String>) = found
        .into_iter()
        .partition(|v| ensemble_core::event::is_hashed_visitor(v) || others.contains(v));
    let mut report = ErasureReport {
        contact_hash: hash,
        own_visitors: own,
        shared_visitors: shared,
        ..Default::default()
    };
    if report.own_visitors.is_empty() && report.shared_visitors.is_empty() {
        return Ok(report);
    }
    for (campaign, store) in databases.iter() {
        report.rows_deleted += erase_in(store, campaign, &report, wait).await?;
    }
    tracing::info!(
        own = report.own_visitors.len(),
        shared = report.shared_visitors.len(),
        rows = report.rows_deleted,
        "erasure done"
    );
    Ok(report)
}

/// The erasure of `report`'s visitors and contact in one campaign's
/// database: the rows of `events` deleted there.
async fn erase_in(
    store: &StoreConfig,
    campaign: &Campaign,
    report: &ErasureReport,
    wait: Duration,
) -> Result<u64, MaintenanceError> {
    let client = store.client();
    const THEIRS: &str = "(has(?, visitor_id) OR contact_hash = ?)";
    let own = never_empty(&report.own_visitors);
    let rows_deleted: u64 = client
        .query(&format!("SELECT count() FROM events WHERE {THEIRS}"))
        .bind(&own)
        .bind(&report.contact_hash)
        .fetch_one()
        .await?;
    // The figures first: they are recomputed from the ledger, not from events.
    let signups = ledger::forget(
        &client,
        campaign,
        |t| store.ddl_target(t),
        &report.contact_hash,
        &report.own_visitors,
        &report.shared_visitors,
    )
    .await?;
    let signups: Vec<String> = signups.iter().map(ToString::to_string).collect();
    let signups = never_empty(&signups);
    client
        .query(&format!(
            "ALTER TABLE {} DELETE WHERE {THEIRS}",
            store.ddl_target("events")
        ))
        .bind(&own)
        .bind(&report.contact_hash)
        .execute()
        .await?;
    // Mutations run in the background on every version: wait for them.
    let deadline = Instant::now() + wait;
    let left = format!(
        "SELECT (SELECT count() FROM events WHERE {THEIRS}) \
         + (SELECT count() FROM ledger WHERE ev_contact = ?) \
         + (SELECT count() FROM contact_visitors WHERE contact_hash = ?) \
         + (SELECT count() FROM shared_contacts WHERE contact_hash = ?) \
         + (SELECT count() FROM {sql}.journeys WHERE has(?, toString(event_id)) OR has(?, visitor_id)) \
         + (SELECT count() FROM {sql}.later_conversions WHERE has(?, toString(event_id)) OR has(?, visitor_id))",
        sql = store.sql_database()
    );
    let timeout = || {
        MaintenanceError::MutationTimeout(
            report.own_visitors.len() + report.shared_visitors.len(),
            wait,
        )
    };
    until_none(deadline, timeout, || async {
        Ok(client
            .query(&left)
            .bind(&own)
            .bind(&report.contact_hash)
            .bind(&report.contact_hash)
            .bind(&report.contact_hash)
            .bind(&report.contact_hash)
            .bind(&signups)
            .bind(&own)
            .bind(&signups)
            .bind(&own)
            .fetch_one()
            .await?)
    })
    .await?;
    // Other visitors' ledger rows carried this person's journeys rows in
    // their sets: emptied once the deletes are done (a mutation or merge
    // under way could bring back a part from before), then checked — again
    // every few seconds while they are not (in cluster mode the replicas
    // apply it in the background).
    let journey = ensemble_core::ledger::carried::set("journey");
    let carried = format!(
        "SELECT count() FROM ledger WHERE {}",
        journey.any_sql(&format!(
            "{} = ? OR has(?, {})",
            journey.field_sql("contact", "r"),
            journey.field_sql("visitor_id", "r")
        ))
    );
    empty_carried(&client, store, deadline, timeout, || async {
        Ok(client
            .query(&carried)
            .bind(&report.contact_hash)
            .bind(&own)
            .fetch_one()
            .await?)
    })
    .await?;
    Ok(rows_deleted)
}

/// Runs `left` every 200 ms until it counts nothing; `timeout()` once
/// `deadline` has passed.
async fn until_none<F, Fut>(
    deadline: Instant,
    timeout: impl Fn() -> MaintenanceError,
    mut left: F,
) -> Result<(), MaintenanceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, MaintenanceError>>,
{
    loop {
        if left().await? == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timeout());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Empties the arrays ledger rows carried (`ledger::clear_carried`) until
/// `left` counts none of what was removed: again every 3 s while some is
/// (a merge under way may write back a part from before; in cluster mode
/// the replicas apply it in the background).
async fn empty_carried<F, Fut>(
    client: &clickhouse::Client,
    store: &StoreConfig,
    deadline: Instant,
    timeout: impl Fn() -> MaintenanceError,
    mut left: F,
) -> Result<(), MaintenanceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, MaintenanceError>>,
{
    let mut cleared_at: Option<Instant> = None;
    until_none(deadline, timeout, || {
        let due = cleared_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(3));
        if due {
            cleared_at = Some(Instant::now());
        }
        let left = left();
        async move {
            if due {
                ledger::clear_carried(client, |t| store.ddl_target(t)).await?;
            }
            left.await
        }
    })
    .await
}

/// `ids` for `has(?, visitor_id)`: an empty array is `Array(Nothing)` on
/// ClickHouse 18.16, which `has` refuses; `['']` matches no visitor id.
fn never_empty(ids: &[String]) -> Vec<String> {
    if ids.is_empty() {
        vec![String::new()]
    } else {
        ids.to_vec()
    }
}

/// Rebuilds the ledger and the dashboard's figures from `events`, with
/// progress on stderr.
pub async fn rebuild_figures(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<u64, MaintenanceError> {
    let started = Instant::now();
    let n = rebuild::rebuild(store, campaign, |read| {
        eprintln!(
            "rebuild-figures: {read} events accounted ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    })
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
