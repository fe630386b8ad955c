//! The maintenance subcommands' bodies, one function each: what
//! `ensemble-processor <subcommand>` does to every campaign's database and
//! prints. `main.rs` only picks one; the work itself is in
//! [`crate::maintenance`] and `ensemble-core`.

use std::time::{Duration, Instant};

use ensemble_core::{batches, compact, ledger, migrate, ranges, rebuild};

use crate::maintenance::{self, MaintenanceError};
use crate::Settings;

/// `migrate`: every campaign's database, each with the same schema; a
/// migration that stores figures anew rebuilds them from `events`.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    for (campaign, store) in settings.databases.iter() {
        let report = migrate::migrate(store).await?;
        println!(
            "database {} (campaign {}): applied {:?}, already applied {:?}",
            store.database, campaign.id, report.applied, report.already_applied
        );
        if report.rebuild_pending || rebuild::needs_rebuild(&store.client()).await? {
            // What migrations store anew (`migrate::REBUILT_FROM_EVENTS`)
            // starts from what is already there.
            maintenance::rebuild_figures(store, campaign).await?;
        }
        let ranges = ranges::ensure(store, campaign).await?;
        println!(
            "database {}: figures by range: {}",
            store.database,
            ranges.describe()
        );
    }
    Ok(())
}

/// `retention --days N`.
pub async fn retention(settings: Settings, days: u32) -> Result<(), MaintenanceError> {
    for (campaign, store) in settings.databases.iter() {
        let report =
            maintenance::retention(store, campaign, days, Duration::from_secs(600)).await?;
        let db = &store.database;
        if report.dropped.is_empty() {
            println!("database {db}: nothing older than {days} days, no partition dropped");
        }
        for (table, partition, rows) in &report.dropped {
            println!("database {db}: dropped {table} partition {partition}: {rows} rows");
        }
    }
    Ok(())
}

/// `rebuild-figures` (also `rebuild-facts`).
pub async fn rebuild_figures(settings: Settings) -> Result<(), MaintenanceError> {
    for (campaign, store) in settings.databases.iter() {
        maintenance::rebuild_figures(store, campaign).await?;
    }
    Ok(())
}

/// `rebuild-ranges`: the figures summed anew over the campaign's ranges.
pub async fn rebuild_ranges(settings: Settings) -> anyhow::Result<()> {
    for (campaign, store) in settings.databases.iter() {
        let started = Instant::now();
        let status = ranges::refill(store, campaign).await?;
        println!(
            "database {}: figures by range: {} ({:.1} s)",
            store.database,
            status.describe(),
            started.elapsed().as_secs_f64()
        );
        if status == ranges::Status::Partial {
            anyhow::bail!(
                "database {}: the figures summed by range disagree with the figures \
                 after the refill; stop every processor and run it again",
                store.database
            );
        }
    }
    Ok(())
}

/// `compact`: old batch markers deleted, each figures table merged into
/// one part, the ledger's carried sets emptied.
pub async fn compact(settings: Settings) -> anyhow::Result<()> {
    for (_, store) in settings.databases.iter() {
        let db = &store.database;
        batches::retire(store)
            .await
            .map_err(|e| anyhow::anyhow!("database {db}: batch markers: {e}"))?;
        println!(
            "database {db}: batch markers older than a day deleted (in the background: system.mutations)"
        );
        for table in compact::FIGURES_TABLES {
            let started = Instant::now();
            let merged = compact::compact(store, table)
                .await
                .map_err(|e| anyhow::anyhow!("database {db}: {table}: {e}"))?;
            if merged {
                println!(
                    "database {db}: {table} merged into one part ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            } else {
                println!(
                    "database {db}: cluster mode, {table} left to ClickHouse's merges \
                     (its tables are local to each node)"
                );
            }
        }
        let started = Instant::now();
        ledger::clear_carried(&store.client(), |t| store.ddl_target(t))
            .await
            .map_err(|e| anyhow::anyhow!("database {db}: ledger: {e}"))?;
        println!(
            "database {db}: ledger's carried sets emptied ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `erase --email …`: the person, from every campaign's database.
pub async fn erase(settings: Settings, email: String) -> Result<(), MaintenanceError> {
    let Some(hasher) = settings.hasher.as_ref() else {
        unreachable!("validate() requires --contact-secret for erase")
    };
    let report = maintenance::erase(
        &settings.databases,
        hasher,
        &email,
        Duration::from_secs(120),
    )
    .await?;
    println!(
        "contact_hash {}: {} visitors ({} only theirs: every row deleted; {} shared with others: \
         only their rows), {} rows deleted",
        report.contact_hash,
        report.own_visitors.len() + report.shared_visitors.len(),
        report.own_visitors.len(),
        report.shared_visitors.len(),
        report.rows_deleted,
    );
    Ok(())
}
