use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ensemble_core::{launch::launch, migrate, telemetry};
use ensemble_processor::{maintenance, run, Command, Config};

/// mimalloc rather than the system allocator: the processor's live heap
/// peaks under 200 MB on the 200 000-event bench, but glibc's per-thread
/// arenas kept ~700 MB resident after each batch's allocations were freed
/// (measured with heaptrack; see the README's benchmark section).
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
                let report = migrate::migrate(&settings.store).await?;
                println!(
                    "database {}: applied {:?}, already applied {:?}",
                    settings.store.database, report.applied, report.already_applied
                );
                if report.rebuild_pending
                    || ensemble_core::ledger::needs_rebuild(&settings.store.client()).await?
                {
                    // The figures, the journeys and the paths (stored
                    // anew by migrations 4, 5 and 6) start from what is
                    // already there.
                    maintenance::rebuild_facts(&settings.store, &settings.campaign).await?;
                }
                Ok::<(), anyhow::Error>(())
            },
        ),
        Some(Command::Retention { days }) => launch(
            "ensemble-processor retention",
            config.validate(),
            move |settings, _| async move {
                let report =
                    maintenance::retention(&settings.store, &settings.campaign, days).await?;
                if report.dropped.is_empty() {
                    println!("nothing older than {days} days: no partition dropped");
                }
                for (table, partition, rows) in &report.dropped {
                    println!("dropped {table} partition {partition}: {rows} rows");
                }
                Ok::<(), maintenance::MaintenanceError>(())
            },
        ),
        Some(Command::RebuildFacts) => launch(
            "ensemble-processor rebuild-facts",
            config.validate(),
            |settings, _| async move {
                maintenance::rebuild_facts(&settings.store, &settings.campaign).await?;
                Ok::<(), maintenance::MaintenanceError>(())
            },
        ),
        Some(Command::Erase { email }) => launch(
            "ensemble-processor erase",
            config.validate(),
            move |settings, _| async move {
                let Some(hasher) = settings.hasher.as_ref() else {
                    unreachable!("validate() requires --contact-secret for erase")
                };
                let report = maintenance::erase(
                    &settings.store,
                    &settings.campaign,
                    hasher,
                    &email,
                    Duration::from_secs(120),
                )
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
