use std::process::ExitCode;

use clap::Parser;
use ensemble_core::{launch::launch, migrate, telemetry};
use ensemble_processor::{run, Command, Config};

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
                Ok::<(), migrate::MigrateError>(())
            },
        ),
        None => launch("ensemble-processor", config.validate(), run),
    }
}
