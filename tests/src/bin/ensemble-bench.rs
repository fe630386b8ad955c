//! `ensemble-bench`: benchmarks that print each figure beside the baseline
//! measured in the same run. Run through `deploy/local/bench`, which builds
//! release binaries and brings the local stack up.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ensemble_tests::bench::{self, IngestPlan, ProcessorPlan};
use ensemble_tests::PrivateBroker;

#[derive(Debug, Parser)]
#[command(
    name = "ensemble-bench",
    about = "ensemble benchmarks (figures with same-run baselines)"
)]
struct Args {
    #[command(subcommand)]
    what: What,
    /// ClickHouse of the local stack.
    #[arg(
        long,
        env = "ENSEMBLE_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        global = true
    )]
    clickhouse_url: String,
    /// Durable broker (the local stack's).
    #[arg(
        long,
        env = "ENSEMBLE_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    kafka_brokers: String,
    /// Write the markdown report here too.
    #[arg(long, global = true)]
    report: Option<PathBuf>,
    /// Smaller runs, for a quick look.
    #[arg(long, global = true)]
    quick: bool,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Collector events/s vs the raw produce ceiling, latency, peak RSS.
    Ingest,
    /// Processor events/s vs raw consume and ClickHouse bulk insert, peak RSS.
    Processor,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = match args.what {
        What::Ingest => ingest(&args).await?,
        What::Processor => processor(&args).await?,
    };
    println!("{report}");
    if let Some(path) = &args.report {
        std::fs::write(path, &report)?;
        eprintln!("[bench] report written to {}", path.display());
    }
    Ok(())
}

async fn ingest(args: &Args) -> anyhow::Result<String> {
    let plan = if args.quick {
        IngestPlan {
            raw_messages: 10_000,
            single_requests: 2_000,
            single_concurrency: 32,
            batch_requests: 300,
            batch_size: 100,
            batch_concurrency: 32,
        }
    } else {
        IngestPlan {
            raw_messages: 50_000,
            single_requests: 10_000,
            single_concurrency: 64,
            batch_requests: 1_000,
            batch_size: 100,
            batch_concurrency: 32,
        }
    };
    let collector = bench::release_bin("ensemble-ingest");
    anyhow::ensure!(
        collector.exists(),
        "{} missing: run deploy/local/bench",
        collector.display()
    );
    let campaign = ensemble_tests::campaign_file();
    let durable = bench::ingest(
        "tansu sqlite (durable)",
        &args.kafka_brokers,
        &collector,
        &campaign,
        plan,
    )
    .await?;
    let memory_broker = PrivateBroker::start_with_storage("memory://tansu/")?;
    let memory = bench::ingest(
        "tansu memory",
        &memory_broker.brokers(),
        &collector,
        &campaign,
        plan,
    )
    .await?;
    Ok(bench::ingest_report(&[durable, memory], &plan))
}

async fn processor(args: &Args) -> anyhow::Result<String> {
    let plan = ProcessorPlan {
        messages: if args.quick { 50_000 } else { 200_000 },
    };
    let bin = bench::release_bin("ensemble-processor");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run deploy/local/bench",
        bin.display()
    );
    let durable = bench::processor(
        "tansu sqlite (durable)",
        &args.kafka_brokers,
        &args.clickhouse_url,
        &bin,
        plan,
    )
    .await?;
    let memory_broker = PrivateBroker::start_with_storage("memory://tansu/")?;
    let memory = bench::processor(
        "tansu memory",
        &memory_broker.brokers(),
        &args.clickhouse_url,
        &bin,
        plan,
    )
    .await?;
    Ok(bench::processor_report(&[durable, memory], &plan))
}
