//! `ensemble-sim`: generates a simulated campaign (seeded) and sends it to a
//! collector's import endpoint, with its original timestamps, showing
//! progress. A 503 or 429 is retried with the same events (same ids).

use std::time::{Duration, Instant};

use clap::Parser;
use ensemble_tests::sim::{send_import, simulate, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "ensemble-sim",
    about = "send a simulated campaign to the collector"
)]
struct Args {
    /// Collector base URL.
    #[arg(
        long,
        env = "ENSEMBLE_COLLECTOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    collector: String,
    /// The collector's import token.
    #[arg(long, env = "ENSEMBLE_IMPORT_TOKEN", hide_env_values = true)]
    import_token: String,
    /// Campaign file.
    #[arg(
        long,
        env = "ENSEMBLE_CAMPAIGN",
        default_value = "deploy/campaign.toml"
    )]
    campaign: std::path::PathBuf,
    #[arg(long, default_value_t = 20_000)]
    people: usize,
    #[arg(long, default_value_t = 2025)]
    seed: u64,
    /// Days before the first phase that people come by themselves (and go
    /// on coming during the campaign): what the uplift is measured against.
    #[arg(long, default_value_t = 0)]
    organic_days: u32,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let campaign = ensemble_core::Campaign::load(&args.campaign)?;
    let sim = simulate(
        &campaign,
        &SimConfig {
            seed: args.seed,
            people: args.people,
            organic_days: args.organic_days,
            ..SimConfig::default()
        },
    );
    eprintln!(
        "[sim] {} people → {} events to send ({} distinct, {} client retries, {} malformed)",
        args.people,
        sim.events.len(),
        sim.valid_events,
        sim.retries,
        sim.malformed
    );
    let started = Instant::now();
    let total = sim.events.len();
    let mut last = Instant::now();
    let (accepted, rejected) = send_import(
        &args.collector,
        &args.import_token,
        &sim.events,
        args.batch,
        |sent| {
            if last.elapsed() > Duration::from_secs(2) || sent == total {
                eprintln!(
                    "[sim] {sent}/{total} sent ({:.0} %), {:.0} events/s",
                    100.0 * sent as f64 / total as f64,
                    sent as f64 / started.elapsed().as_secs_f64()
                );
                last = Instant::now();
            }
        },
    )
    .await?;
    println!(
        "accepted {accepted}, rejected {rejected:?}, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
