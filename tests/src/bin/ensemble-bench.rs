//! `ensemble-bench`: benchmarks that print each figure beside the baseline
//! measured in the same run. Run through `deploy/local/bench`, which builds
//! release binaries and brings the local stack up.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ensemble_tests::bench::abuse::AbusePlan;
use ensemble_tests::bench::dashboard::DashboardPlan;
use ensemble_tests::bench::faults::FaultPlan;
use ensemble_tests::bench::freshness::FreshnessPlan;
use ensemble_tests::bench::processor::{BrokerUnderTest, ProcessorPlan, Profile};
use ensemble_tests::bench::{self, IngestPlan};
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
    /// `processor` only: run against one broker (a quicker look while
    /// working on one side).
    #[arg(long, value_enum, global = true)]
    only: Option<Broker>,
    /// `processor` only: run one profile (default: both).
    #[arg(long, value_enum, global = true)]
    profile: Option<ProfileArg>,
    /// `processor` only: the processor's `--batch-max-rows` (default: its own).
    #[arg(long, global = true)]
    batch_max_rows: Option<usize>,
    /// `processor` only: the processor's `--history-cache-events`
    /// (default: its own; 0 to compare with every history read).
    #[arg(long, global = true)]
    history_cache_events: Option<usize>,
    /// `processor` only: events per run (default 200 000, 50 000 with
    /// `--quick`): a longer run shows whether memory creeps batch after
    /// batch. The live profile's events stay 20 a second apart, so they
    /// span more hours.
    #[arg(long, global = true)]
    events: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProfileArg {
    Backfill,
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Broker {
    Durable,
    Memory,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Collector events/s vs the raw produce ceiling, latency, peak RSS.
    Ingest,
    /// Processor events/s vs a replay floor, rows, bytes and CPU per event,
    /// peak RSS; backfill and live profiles.
    Processor,
    /// Event → dashboard freshness at half the collector's ceiling, RSS of the three services.
    Freshness,
    /// Every dashboard endpoint's p50/p95 with ~10 M events loaded.
    Dashboard,
    /// ≥ 100 000 events through collector and processor while one thing
    /// breaks (processor, ClickHouse, broker, poison, a member joining and
    /// leaving): accepted, stored, double-counted, lost, recovery time.
    Faults,
    /// What a hostile script can do to the figures (scan floods, garbage,
    /// minted identities, replayed tokens, undeclared free text, token
    /// guessing), and what honest visitors see meanwhile.
    Abuse,
    /// All five, one report.
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = match args.what {
        What::Ingest => ingest(&args).await?,
        What::Processor => processor(&args).await?,
        What::Freshness => freshness(&args).await?,
        What::Dashboard => dashboard(&args).await?,
        What::Faults => faults(&args).await?,
        What::Abuse => abuse(&args).await?,
        What::All => {
            let mut out = format!(
                "# ensemble benchmark report\n\n{} on {}; `deploy/local/bench all`{}. Every figure sits next to a \
                 baseline measured in the same run.\n\n",
                chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
                machine(),
                if args.quick { " --quick (smaller runs)" } else { "" },
            );
            for part in [
                ingest(&args).await?,
                processor(&args).await?,
                freshness(&args).await?,
                dashboard(&args).await?,
                faults(&args).await?,
            ] {
                out.push_str(&part);
                out.push('\n');
            }
            out
        }
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
    let collector = release("ensemble-ingest")?;
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
        messages: args
            .events
            .unwrap_or(if args.quick { 50_000 } else { 200_000 })
            .max(1),
        batch_max_rows: args.batch_max_rows,
        history_cache_events: args.history_cache_events,
    };
    let bin = release("ensemble-processor")?;
    let profiles: Vec<Profile> = [Profile::Live, Profile::Backfill]
        .into_iter()
        .filter(|p| match args.profile {
            None => true,
            Some(ProfileArg::Live) => *p == Profile::Live,
            Some(ProfileArg::Backfill) => *p == Profile::Backfill,
        })
        .collect();
    let mut results = Vec::new();
    for (broker, storage) in [
        // A fresh durable broker, as the stack runs it, rather than the
        // stack's own: that one's SQLite file holds every topic earlier runs
        // and tests made (8 GB after a few weeks), which slowed it down and
        // made runs on different days incomparable.
        (Broker::Durable, "sqlite://data/tansu.db"),
        (Broker::Memory, "memory://tansu/"),
    ] {
        if args.only.is_some_and(|only| only != broker) {
            continue;
        }
        for &profile in &profiles {
            // A broker of its own per run: the backlog of one run does not
            // weigh on the next.
            let private = PrivateBroker::start_with_storage(storage)?;
            let under_test = BrokerUnderTest {
                label: match broker {
                    Broker::Durable => "tansu sqlite (durable)",
                    Broker::Memory => "tansu memory",
                },
                brokers: private.brokers(),
                pid: private.pid(),
            };
            results.push(
                bench::processor::processor(&under_test, profile, &args.clickhouse_url, &bin, plan)
                    .await?,
            );
        }
    }
    Ok(bench::processor::processor_report(&results, &plan))
}

/// CPU model and count, memory: what the figures were measured on.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} × {cpu}, {mem_gb:.0} GB")
}

fn release(name: &str) -> anyhow::Result<PathBuf> {
    let bin = bench::release_bin(name);
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run deploy/local/bench",
        bin.display()
    );
    Ok(bin)
}

async fn freshness(args: &Args) -> anyhow::Result<String> {
    let plan = FreshnessPlan {
        ceiling_requests: if args.quick { 300 } else { 1_000 },
        seconds: if args.quick { 10 } else { 30 },
    };
    let (i, p, d) = (
        release("ensemble-ingest")?,
        release("ensemble-processor")?,
        release("ensemble-dashboard")?,
    );
    let r = bench::freshness::run(
        &args.kafka_brokers,
        &args.clickhouse_url,
        [&i, &p, &d],
        plan,
    )
    .await?;
    Ok(bench::freshness::report(&r, &plan))
}

async fn abuse(args: &Args) -> anyhow::Result<String> {
    let plan = AbusePlan {
        flood: if args.quick { 400 } else { 2_000 },
        honest: if args.quick { 20 } else { 100 },
    };
    let (i, p, d) = (
        release("ensemble-ingest")?,
        release("ensemble-processor")?,
        release("ensemble-dashboard")?,
    );
    let attacks = bench::abuse::run(
        &args.kafka_brokers,
        &args.clickhouse_url,
        [&i, &p, &d],
        plan,
    )
    .await?;
    Ok(bench::abuse::report(&attacks, &plan))
}

async fn faults(args: &Args) -> anyhow::Result<String> {
    let plan = FaultPlan {
        people: if args.quick { 4_000 } else { 20_000 },
        rate_per_s: 3_000,
    };
    let (i, p) = (release("ensemble-ingest")?, release("ensemble-processor")?);
    let r = bench::faults::run(&i, &p, plan).await?;
    Ok(bench::faults::report(&r, &plan))
}

async fn dashboard(args: &Args) -> anyhow::Result<String> {
    let plan = DashboardPlan {
        target_rows: if args.quick { 1_000_000 } else { 10_000_000 },
        requests: 10,
    };
    let bin = release("ensemble-dashboard")?;
    let r = bench::dashboard::run(&args.clickhouse_url, &args.kafka_brokers, &bin, plan).await?;
    Ok(bench::dashboard::report(&r, &plan))
}
