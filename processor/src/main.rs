use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ensemble_core::{launch::launch, migrate, telemetry};
use ensemble_processor::{maintenance, run, Command, Config};

/// mimalloc rather than the system allocator: the processor's live heap
/// peaks under 200 MB on the 200 000-event bench, but glibc's per-thread
/// arenas kept ~700 MB resident after each batch's allocations were freed
/// (measured with heaptrack; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log);
    match config.command.clone() {
        Some(Command::Migrate) => launch(
            "ensemble-processor migrate",
            config.validate(),
            |settings, _| async move {
                // Every campaign's database, each with the same schema.
                for (campaign, store) in settings.sites.iter() {
                    let report = migrate::migrate(store).await?;
                    println!(
                        "database {} (campaign {}): applied {:?}, already applied {:?}",
                        store.database, campaign.id, report.applied, report.already_applied
                    );
                    if report.rebuild_pending
                        || ensemble_core::ledger::needs_rebuild(&store.client()).await?
                    {
                        // The figures, the journeys and the paths (stored
                        // anew by migrations 4, 5 and 6) start from what is
                        // already there.
                        maintenance::rebuild_facts(store, campaign).await?;
                    }
                    let ranges = ensemble_core::ranges::ensure(store, campaign).await?;
                    println!(
                        "database {}: figures by range: {}",
                        store.database,
                        ranges.describe()
                    );
                }
                Ok::<(), anyhow::Error>(())
            },
        ),
        Some(Command::Retention { days }) => {
            launch(
                "ensemble-processor retention",
                config.validate(),
                move |settings, _| async move {
                    for (campaign, store) in settings.sites.iter() {
                        let report =
                            maintenance::retention(store, campaign, days, Duration::from_secs(600))
                                .await?;
                        let db = &store.database;
                        if report.dropped.is_empty() {
                            println!("database {db}: nothing older than {days} days, no partition dropped");
                        }
                        for (table, partition, rows) in &report.dropped {
                            println!(
                                "database {db}: dropped {table} partition {partition}: {rows} rows"
                            );
                        }
                    }
                    Ok::<(), maintenance::MaintenanceError>(())
                },
            )
        }
        Some(Command::RebuildFacts) => launch(
            "ensemble-processor rebuild-facts",
            config.validate(),
            |settings, _| async move {
                for (campaign, store) in settings.sites.iter() {
                    maintenance::rebuild_facts(store, campaign).await?;
                }
                Ok::<(), maintenance::MaintenanceError>(())
            },
        ),
        Some(Command::RebuildRanges) => launch(
            "ensemble-processor rebuild-ranges",
            config.validate(),
            |settings, _| async move {
                for (campaign, store) in settings.sites.iter() {
                    let started = std::time::Instant::now();
                    let status = ensemble_core::ranges::refill(store, campaign).await?;
                    println!(
                        "database {}: figures by range: {} ({:.1} s)",
                        store.database,
                        status.describe(),
                        started.elapsed().as_secs_f64()
                    );
                    if status == ensemble_core::ranges::Status::Partial {
                        anyhow::bail!(
                            "database {}: the figures summed by range disagree with the figures \
                             after the refill; stop every processor and run it again",
                            store.database
                        );
                    }
                }
                Ok::<(), anyhow::Error>(())
            },
        ),
        Some(Command::Compact) => launch(
            "ensemble-processor compact",
            config.validate(),
            |settings, _| async move {
                for (_, store) in settings.sites.iter() {
                    ensemble_core::batches::retire(store).await.map_err(|e| {
                        anyhow::anyhow!("database {}: batch markers: {e}", store.database)
                    })?;
                    println!(
                        "database {}: batch markers older than a day deleted (in the background: system.mutations)",
                        store.database
                    );
                    for table in ensemble_core::ledger::FIGURES_TABLES {
                        let started = std::time::Instant::now();
                        let merged =
                            ensemble_core::ledger::compact(store, table)
                                .await
                                .map_err(|e| {
                                    anyhow::anyhow!("database {}: {table}: {e}", store.database)
                                })?;
                        if merged {
                            println!(
                                "database {}: {table} merged into one part ({:.1} s)",
                                store.database,
                                started.elapsed().as_secs_f64()
                            );
                        } else {
                            println!(
                                "database {}: cluster mode, {table} left to ClickHouse's merges \
                                 (its tables are local to each node)",
                                store.database
                            );
                        }
                    }
                    let started = std::time::Instant::now();
                    ensemble_core::ledger::clear_carried(&store.client(), |t| store.ddl_target(t))
                        .await
                        .map_err(|e| anyhow::anyhow!("database {}: ledger: {e}", store.database))?;
                    println!(
                        "database {}: ledger's carried arrays emptied ({:.1} s)",
                        store.database,
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok::<(), anyhow::Error>(())
            },
        ),
        Some(Command::Erase { email }) => launch(
            "ensemble-processor erase",
            config.validate(),
            move |settings, _| async move {
                let Some(hasher) = settings.hasher.as_ref() else {
                    unreachable!("validate() requires --contact-secret for erase")
                };
                let report =
                    maintenance::erase(&settings.sites, hasher, &email, Duration::from_secs(120))
                        .await?;
                println!(
                    "contact_hash {}: {} visitors ({} only theirs: every row deleted; {} shared with others: \
                     only their rows), {} rows deleted, hourly rollup rebuilt for months {:?}",
                    report.contact_hash,
                    report.own_visitors.len() + report.shared_visitors.len(),
                    report.own_visitors.len(),
                    report.shared_visitors.len(),
                    report.rows_deleted,
                    report.months_rebuilt
                );
                Ok::<(), maintenance::MaintenanceError>(())
            },
        ),
        None => launch("ensemble-processor", config.validate(), run),
    }
}
