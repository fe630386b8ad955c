use std::process::ExitCode;

use clap::Parser;
use ensemble_core::{launch::launch, telemetry};
use ensemble_processor::{commands, run, Command, Config};

/// jemalloc rather than the system allocator, for librdkafka's C
/// allocations too (it replaces `malloc`): the processor's live heap swings
/// between ~90 and ~190 MB with every batch on the live bench, and what a
/// batch frees must go back to the system soon. glibc's per-thread arenas
/// kept ~700 MB resident, mimalloc 340-390 MB (and glibc another ~38 MB for
/// librdkafka beside it); jemalloc, with the decay built in by
/// `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`: two arenas, freed
/// pages returned after 100 ms), 205-270 MB at the same speed
/// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Picks the subcommand; its body is in `commands`.
fn main() -> ExitCode {
    no_huge_pages();
    let config = Config::parse();
    telemetry::init(&config.log);
    let settings = config.clone().validate();
    match config.command {
        Some(Command::Migrate) => launch("ensemble-processor migrate", settings, |s, _| {
            commands::migrate(s)
        }),
        Some(Command::Retention { days }) => {
            launch("ensemble-processor retention", settings, move |s, _| {
                commands::retention(s, days)
            })
        }
        Some(Command::RebuildFigures) => {
            launch("ensemble-processor rebuild-figures", settings, |s, _| {
                commands::rebuild_figures(s)
            })
        }
        Some(Command::RebuildRanges) => {
            launch("ensemble-processor rebuild-ranges", settings, |s, _| {
                commands::rebuild_ranges(s)
            })
        }
        Some(Command::Compact) => launch("ensemble-processor compact", settings, |s, _| {
            commands::compact(s)
        }),
        Some(Command::Erase { email }) => {
            launch("ensemble-processor erase", settings, move |s, _| {
                commands::erase(s, email)
            })
        }
        None => launch("ensemble-processor", settings, run),
    }
}

/// Transparent huge pages off for this process: an allocator's arenas can
/// be backed by them, and a 2 MB page that holds a few live objects counts
/// whole in the resident set (see docs/benchmarks.md for what it changed).
/// A kernel that refuses leaves them as they were.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("ensemble-processor: transparent huge pages stay on ({e})");
    }
}
