//! Dashboard endpoint latency with ~10 M events loaded.
//!
//! Loading bypasses the collector and the broker: the simulator's campaign
//! (in chunks of people, each chunk its own seed) goes through the
//! product's own validation, normalisation (import mode) and enrichment,
//! and the rows are bulk-inserted into ClickHouse — what the processor would
//! have written, without waiting hours for the 2-core machine to push 10 M
//! events through Kafka. The database is kept between runs (`bench_10m`)
//! and reused when its generator version and row count match.
//!
//! Baseline in the same run: ClickHouse's own time for one pass over the
//! table (`SELECT count(), uniqExact(visitor_id) FROM events`), through the
//! same HTTP interface.

use std::path::Path;
use std::time::{Duration, Instant};

use ensemble_core::{Campaign, EventRow, StoreConfig};
use ensemble_ingest::normalise::{Mode, Normaliser};
use ensemble_processor::enrich::Enricher;

use super::{peak_rss_mb, percentile, progress};
use crate::sim::{simulate, SimConfig};
use crate::Service;

/// Bumped whenever the generated rows change, so an old database is rebuilt.
const GENERATOR: &str = "sim-v2-50k-people-chunks-live-times";
/// Bumped whenever the figures change: the events are kept, the figures
/// rebuilt from them (`ensemble-processor rebuild-figures`'s code).
const FACTS: &str = "figures-v4-devices-path-delays";
const PEOPLE_PER_CHUNK: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct DashboardPlan {
    pub target_rows: u64,
    pub requests: usize,
}

/// The p95 targets: the questions the figures summed by range
/// answer (the campaign, a phase, a visitor's journey, the live figures),
/// and those on a custom range of days, a device or a placement.
const DEFAULT_TARGET_MS: f64 = 50.0;
const CUSTOM_TARGET_MS: f64 = 300.0;

#[derive(Debug, Clone)]
pub struct EndpointLatency {
    pub path: String,
    /// The p95 it should stay under (`None`: an export of everything,
    /// which has none).
    pub target_ms: Option<f64>,
    /// (p50, p95) ms, or why the endpoint failed.
    pub result: Result<(f64, f64), String>,
}

#[derive(Debug, Clone)]
pub struct DashboardResult {
    pub rows: u64,
    pub distinct_events: u64,
    pub load_note: String,
    pub baseline_p50_ms: f64,
    pub baseline_p95_ms: f64,
    pub endpoints: Vec<EndpointLatency>,
    pub peak_rss_mb: f64,
}

/// Makes sure `bench_10m` holds about `target_rows` simulated, processed rows.
pub async fn load(
    store: &StoreConfig,
    campaign: &Campaign,
    target_rows: u64,
) -> anyhow::Result<String> {
    let server = store.server_client();
    let meta: Option<(String, u64)> = server
        .query(&format!(
            "SELECT generator, rows FROM {}.bench_meta ORDER BY at DESC LIMIT 1",
            store.database
        ))
        .fetch_optional()
        .await
        .ok()
        .flatten();
    // The meta row is written after the last chunk: its presence means a
    // complete load (merges may since have folded the duplicate deliveries,
    // so `count()` is not compared).
    let complete = format!("{GENERATOR}+{FACTS}");
    if let Some((generator, rows)) = meta {
        if generator == complete && rows >= target_rows {
            progress(&format!(
                "dashboard: reusing {} ({rows} rows inserted earlier, {complete})",
                store.database
            ));
            // A database built before the figures were summed by range:
            // summed now, as `ensemble-processor rebuild-ranges` does.
            ensemble_core::migrate::migrate(store).await?;
            // Each figures table in one part, as a rebuild leaves them,
            // whatever version built them: `figures` first (the refill
            // reads it), `figures_ranges` by the refill or here.
            progress("dashboard:   merging each figures table into one part");
            let [figures, summed, delays] = ensemble_core::compact::FIGURES_TABLES;
            ensemble_core::compact::compact(store, figures).await?;
            if !ensemble_core::ranges::usable(&store.client(), campaign).await? {
                progress("dashboard:   summing the figures by range (rebuild-ranges)");
                let started = Instant::now();
                ensemble_core::ranges::refill(store, campaign).await?;
                return Ok(format!(
                    "reused from an earlier run ({rows} rows inserted); figures summed by range in {:.0} s",
                    started.elapsed().as_secs_f64()
                ));
            }
            ensemble_core::compact::compact(store, summed).await?;
            ensemble_core::compact::compact(store, delays).await?;
            return Ok(format!("reused from an earlier run ({rows} rows inserted), each figures table merged into one part as a rebuild leaves it"));
        }
        if generator.starts_with(GENERATOR) && rows >= target_rows {
            progress(&format!(
                "dashboard: reusing the events of {} ({rows} rows); rebuilding the figures",
                store.database
            ));
            ensemble_core::migrate::migrate(store).await?;
            let took = build_figures(store, campaign, rows).await?;
            write_meta(store, &complete, rows).await?;
            return Ok(format!(
                "events reused from an earlier run ({rows} rows inserted); figures rebuilt from them in {took:.0} s"
            ));
        }
    }
    progress(&format!(
        "dashboard: building {} with ~{target_rows} rows",
        store.database
    ));
    server
        .query(&format!("DROP DATABASE IF EXISTS {}", store.database))
        .execute()
        .await?;
    ensemble_core::migrate::migrate(store).await?;
    let hasher = ensemble_model::privacy::ContactHasher::new(b"bench-contact-secret-0123456789")?;
    let normaliser = Normaliser::new(
        hasher,
        ensemble_ingest::visitor::VisitorIds::new(
            b"bench-visitor-secret-0123456789",
            campaign.timezone,
        ),
        300,
        86_400,
        300,
    );
    let enricher = Enricher::new();
    let client = store.client();
    let started = Instant::now();
    let mut rows_total = 0u64;
    let mut chunk = 0u64;
    while rows_total < target_rows {
        let sim = simulate(
            campaign,
            &SimConfig {
                seed: 10_000 + chunk,
                people: PEOPLE_PER_CHUNK,
                first_person: chunk as usize * PEOPLE_PER_CHUNK,
                ..SimConfig::default()
            },
        );
        let mut insert = client.insert::<EventRow>("events").await?;
        for e in &sim.events {
            let Ok(valid) = ensemble_core::event::validate(e) else {
                continue; // malformed: the collector refuses it
            };
            // As if the campaign had run live: received a second after the
            // event, processed a second later.
            let Some(at) = valid.ts else { continue };
            let received = at + chrono::Duration::seconds(1);
            let ctx = normaliser.context(received, [127, 0, 0, 1].into(), None, Mode::Import);
            let Ok(n) = normaliser.normalise(valid, &ctx) else {
                continue;
            };
            let m = n.message;
            let row = EventRow::new(
                &m,
                enricher.enrich(campaign, &m),
                received + chrono::Duration::seconds(1),
            );
            insert.write(&row).await?;
            rows_total += 1;
        }
        insert.end().await?;
        chunk += 1;
        progress(&format!(
            "dashboard:   {rows_total} rows inserted ({:.0} rows/s)",
            rows_total as f64 / started.elapsed().as_secs_f64()
        ));
    }
    let loaded = started.elapsed().as_secs_f64();
    let took = build_figures(store, campaign, rows_total).await?;
    write_meta(store, &complete, rows_total).await?;
    Ok(format!(
        "built in this run: {rows_total} rows in {loaded:.0} s, figures built from them in {took:.0} s"
    ))
}

/// The processor's figures for the loaded events, built the way
/// `ensemble-processor rebuild-figures` does; seconds taken.
async fn build_figures(store: &StoreConfig, campaign: &Campaign, rows: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    ensemble_core::rebuild::rebuild(store, campaign, |done| {
        progress(&format!(
            "dashboard:   figures: {done} of ~{rows} events accounted ({:.0} s)",
            started.elapsed().as_secs_f64()
        ));
    })
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn write_meta(store: &StoreConfig, generator: &str, rows: u64) -> anyhow::Result<()> {
    let server = store.server_client();
    server
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.bench_meta (at DateTime, generator String, rows UInt64) \
             ENGINE = MergeTree ORDER BY at",
            store.database
        ))
        .execute()
        .await?;
    server
        .query(&format!(
            "INSERT INTO {}.bench_meta VALUES (now(), ?, ?)",
            store.database
        ))
        .bind(generator)
        .bind(rows)
        .execute()
        .await?;
    Ok(())
}

/// Times `n` sequential calls of `f` after one warm-up call; (p50, p95) ms.
async fn time<F, Fut>(n: usize, mut f: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.50), percentile(&ms, 0.95)))
}

pub async fn run(
    ch_url: &str,
    brokers: &str,
    dashboard_bin: &Path,
    plan: DashboardPlan,
) -> anyhow::Result<DashboardResult> {
    let campaign_path = crate::campaign_file();
    let campaign = Campaign::load(&campaign_path)?;
    let store = StoreConfig::new(ch_url, "bench_10m");
    let load_note = load(&store, &campaign, plan.target_rows).await?;
    let client = store.client();
    let rows: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await?;
    let distinct_events: u64 = client
        .query("SELECT uniqExact(event_id) FROM events")
        .fetch_one()
        .await?;

    progress(&format!(
        "dashboard: {rows} rows; baseline, one pass over the table"
    ));
    let (baseline_p50_ms, baseline_p95_ms) = time(plan.requests, || {
        let client = client.clone();
        async move {
            let _: (u64, u64) = client
                .query("SELECT count(), uniqExact(visitor_id) FROM events")
                .fetch_one()
                .await?;
            Ok(())
        }
    })
    .await?;
    progress(&format!(
        "dashboard:   baseline p50 {baseline_p50_ms:.0} ms, p95 {baseline_p95_ms:.0} ms"
    ));

    let token = "bench-analyst-token-0123456789";
    let c = campaign_path.display().to_string();
    let svc = Service::start(
        &dashboard_bin.display().to_string(),
        &[
            "--campaign",
            &c,
            "--analyst-tokens",
            token,
            "--clickhouse-url",
            ch_url,
            "--clickhouse-database",
            &store.database,
            "--kafka-brokers",
            brokers,
        ],
        &[],
    )?;
    svc.wait_ready("dashboard", Duration::from_secs(30)).await;
    let visitor: String = client
        .query("SELECT any(visitor_id) FROM events WHERE event_type = 'signup'")
        .fetch_one()
        .await?;
    let defaults = [
        "/api/overview".to_owned(),
        "/api/channels".to_owned(),
        "/api/attribution".to_owned(),
        "/api/attribution?phase=p2-saint-valentin".to_owned(),
        "/api/placements".to_owned(),
        "/api/funnel".to_owned(),
        "/api/reach".to_owned(),
        // Conversion paths and the data-driven models (the attribution
        // above includes Markov and Shapley).
        "/api/paths".to_owned(),
        "/api/paths?phase=p2-saint-valentin".to_owned(),
        "/api/media".to_owned(),
        "/api/media?phase=p2-saint-valentin".to_owned(),
        "/api/scan-hours".to_owned(),
        "/api/devices".to_owned(),
        "/api/devices?phase=p2-saint-valentin".to_owned(),
        "/api/timeseries?metric=signups&bucket=day".to_owned(),
        "/api/timeseries?metric=events&bucket=hour".to_owned(),
        // Each phase's daily sign-ups against the days before the campaign.
        "/api/uplift".to_owned(),
        "/api/live".to_owned(),
        format!("/api/journey?visitor_id={visitor}"),
        "/api/channels?format=csv".to_owned(),
    ];
    // Every path with its medians, as a download for other tools.
    let exports = ["/api/paths?limit=100000&format=csv".to_owned()];
    // Questions the defaults do not cover: a custom range of days cutting
    // two phases, a device, a placement.
    let custom = [
        "/api/overview?from=2025-02-01&to=2025-02-20".to_owned(),
        "/api/channels?from=2025-02-01&to=2025-02-20".to_owned(),
        "/api/attribution?from=2025-02-01&to=2025-02-20".to_owned(),
        "/api/funnel?from=2025-02-01&to=2025-02-20".to_owned(),
        "/api/overview?device=desktop".to_owned(),
        "/api/channels?device=desktop".to_owned(),
        "/api/reach?device=desktop".to_owned(),
        "/api/overview?placement=M-CHATELET".to_owned(),
        "/api/placements?placement=M-CHATELET".to_owned(),
        "/api/timeseries?metric=signups&bucket=day&placement=M-CHATELET".to_owned(),
    ];
    let paths = defaults
        .into_iter()
        .map(|p| (p, Some(DEFAULT_TARGET_MS)))
        .chain(exports.into_iter().map(|p| (p, None)))
        .chain(custom.into_iter().map(|p| (p, Some(CUSTOM_TARGET_MS))));
    let http = reqwest::Client::new();
    let mut endpoints = Vec::new();
    for (path, target_ms) in paths {
        progress(&format!("dashboard: {path} × {}", plan.requests));
        let url = format!("{}{path}", svc.base());
        let result = time(plan.requests, || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).bearer_auth(token).send().await?;
                let status = r.status();
                let body = r.bytes().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "{status} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
        })
        .await
        .map_err(|e| format!("{e:#}"));
        match &result {
            Ok((p50, p95)) => progress(&format!("dashboard:   p50 {p50:.0} ms, p95 {p95:.0} ms")),
            Err(e) => progress(&format!("dashboard:   failed: {e}")),
        }
        endpoints.push(EndpointLatency {
            path,
            target_ms,
            result,
        });
    }
    let peak_rss_mb = peak_rss_mb(svc.pid());
    Ok(DashboardResult {
        rows,
        distinct_events,
        load_note,
        baseline_p50_ms,
        baseline_p95_ms,
        endpoints,
        peak_rss_mb,
    })
}

pub fn report(r: &DashboardResult, plan: &DashboardPlan) -> String {
    let mut out = String::from("## dashboard\n\n");
    out.push_str(&format!(
        "{} rows ({} distinct events; the rest are the simulated client retries) in one ClickHouse 18.16 table. \
         **Loaded by bulk INSERT, not through the collector:** the simulator's events went through the product's \
         validation, normalisation (import mode) and enrichment and were inserted directly ({}), received and \
         processed one and two seconds after their event time, as if the campaign had run live. Each endpoint: \
         one warm-up request, then {} sequential requests with an analyst token over the whole campaign (the \
         default range), timed by the client. Baseline: ClickHouse alone, one pass over the table \
         (`SELECT count(), uniqExact(visitor_id) FROM events`): p50 {:.0} ms, p95 {:.0} ms.\n\n",
        r.rows, r.distinct_events, r.load_note, plan.requests, r.baseline_p50_ms, r.baseline_p95_ms
    ));
    out.push_str(&format!(
        "Targets: p95 ≤ {DEFAULT_TARGET_MS:.0} ms for the questions the figures summed by \
         range answer (the campaign, a phase, a journey, the live figures), ≤ {CUSTOM_TARGET_MS:.0} ms \
         for a custom range of days, a device or a placement; none for the export of every path.\n\n"
    ));
    out.push_str("| endpoint | p50 ms | p95 ms | ÷ baseline p95 | target p95 |\n");
    out.push_str("| --- | ---: | ---: | ---: | :---: |\n");
    let (mut missed, mut failed) = (0, 0);
    for e in &r.endpoints {
        let target = |p95: f64| match e.target_ms {
            None => "–".to_owned(),
            Some(t) if p95 <= t => format!("≤ {t:.0} ✓"),
            Some(t) => format!("≤ {t:.0} ✗"),
        };
        match &e.result {
            Ok((p50, p95)) => {
                missed += usize::from(e.target_ms.is_some_and(|t| *p95 > t));
                out.push_str(&format!(
                    "| `{}` | {p50:.0} | {p95:.0} | {:.1} | {} |\n",
                    e.path,
                    p95 / r.baseline_p95_ms.max(0.001),
                    target(*p95)
                ));
            }
            Err(why) => {
                failed += 1;
                out.push_str(&format!(
                    "| `{}` | – | – | – | ✗ failed: {} |\n",
                    e.path,
                    why.replace('|', "/").chars().take(160).collect::<String>()
                ));
            }
        }
    }
    out.push_str(&format!(
        "\n{missed} of {} endpoints with a target miss it; {failed} failed. Dashboard peak RSS: {:.1} MB.\n",
        r.endpoints.iter().filter(|e| e.target_ms.is_some()).count(),
        r.peak_rss_mb
    ));
    out
}
