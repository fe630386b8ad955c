//! `ensemble-sim`: generates a simulated campaign (seeded) and sends it to a
//! collector's import endpoint, with its original timestamps, showing
//! progress. A 503 or 429 is retried with the same events (same ids).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use ensemble_tests::sim::{simulate, SimConfig};
use serde_json::{json, Value};

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
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    batch: &[Value],
) -> anyhow::Result<Value> {
    let body = json!({ "batch": batch }).to_string();
    let mut wait = Duration::from_millis(500);
    loop {
        let r = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 400 => {
                return Ok(r.json().await?)
            }
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                eprintln!(
                    "[sim] collector answered {}; resending the same events in {wait:?}",
                    r.status()
                );
            }
            Ok(r) => anyhow::bail!(
                "collector answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => eprintln!("[sim] {e}; resending in {wait:?}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
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
    let client = reqwest::Client::new();
    let url = format!("{}/v1/import", args.collector.trim_end_matches('/'));
    let started = Instant::now();
    let (mut accepted, mut sent) = (0u64, 0usize);
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = Instant::now();
    for chunk in sim.events.chunks(args.batch.max(1)) {
        let answer = send(&client, &url, &args.import_token, chunk).await?;
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        for r in answer["rejected"].as_array().into_iter().flatten() {
            *rejected
                .entry(r["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        sent += chunk.len();
        if last.elapsed() > Duration::from_secs(2) || sent == sim.events.len() {
            eprintln!(
                "[sim] {sent}/{} sent ({:.0} %), {:.0} events/s",
                sim.events.len(),
                100.0 * sent as f64 / sim.events.len() as f64,
                sent as f64 / started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    println!(
        "accepted {accepted}, rejected {rejected:?}, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
