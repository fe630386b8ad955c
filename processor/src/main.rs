use std::process::ExitCode;

use clap::Parser;
use ensemble_core::{launch::launch, telemetry};
use ensemble_processor::{commands, run, Command, Config};

/// mimalloc rather than the system allocator: the processor's live heap
/// peaks under 200 MB on the 200 000-event bench, but glibc's per-thread
/// arenas kept ~700 MB resident after each batch's allocations were freed
/// (measured with heaptrack; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Transparent huge pages off for this process: mimalloc asks for them on
/// its arenas (`madvise`), and a 2 MB page that holds a few live objects
/// counts whole in the resident set (see docs/benchmarks.md for what it
/// changed). A kernel that refuses leaves them as they were.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("ensemble-processor: transparent huge pages stay on ({e})");
    }
}
