use std::process::ExitCode;

use clap::Parser;
use ensemble_core::{launch::launch, telemetry};
use ensemble_ingest::{run, Config};

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log);
    launch("ensemble-ingest", config.validate(), run)
}
