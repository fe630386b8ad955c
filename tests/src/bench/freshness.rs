//! Event → dashboard freshness under a steady load of half the collector's
//! ceiling measured in the same run.
//!
//! The collector, the processor and the dashboard run as release processes
//! on the durable broker. First the collector's batch ceiling is measured
//! (100-event requests, 32 clients); once the processor has caught up, an
//! open-loop pacer sends 100-event batches at half that rate for the
//! configured time, and every 500 ms a marker event with a visitor id of its
//! own: its freshness is the time from just before its request until the
//! dashboard's `/api/journey` shows it (polled every 100 ms).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{load, peak_rss_mb, percentile, progress, start_pipeline, wire_event, Pipeline};
use crate::poll_until;

#[derive(Debug, Clone, Copy)]
pub struct FreshnessPlan {
    pub ceiling_requests: usize,
    pub seconds: u64,
}

#[derive(Debug, Clone)]
pub struct FreshnessResult {
    pub ceiling_per_s: f64,
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    pub markers: usize,
    pub p50_s: f64,
    pub p95_s: f64,
    pub max_s: f64,
    pub rss_mb: [(String, f64); 3],
}

const TOKEN: &str = "bench-analyst-token-0123456789";
const BATCH: usize = 100;

async fn pending(http: &reqwest::Client, dashboard: &str) -> Option<i64> {
    let v: Value = http
        .get(format!("{dashboard}/api/live"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["pending_events"].as_i64()
}

/// Sends one marker event and waits until the dashboard shows it; seconds.
async fn marker(
    http: reqwest::Client,
    collector: String,
    dashboard: String,
    k: usize,
) -> anyhow::Result<f64> {
    let vid = format!("v_fresh_{k:06}_{}", std::process::id());
    let mut e = wire_event(k);
    e["visitor_id"] = json!(vid);
    let started = Instant::now();
    let r = http
        .post(format!("{collector}/v1/events"))
        .json(&e)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "marker answered {}", r.status());
    loop {
        let v: Value = http
            .get(format!("{dashboard}/api/journey?visitor_id={vid}"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if v["events"].as_array().is_some_and(|a| !a.is_empty()) {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "marker {vid} not on the dashboard after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(
    brokers: &str,
    ch_url: &str,
    bins: [&Path; 3],
    plan: FreshnessPlan,
) -> anyhow::Result<FreshnessResult> {
    let campaign = crate::campaign_file().display().to_string();
    let Pipeline {
        ingest,
        processor,
        dashboard,
        store,
    } = start_pipeline(
        brokers,
        ch_url,
        bins,
        "bench_fresh",
        &campaign,
        &[
            "--rate-limit-per-s",
            "1000000",
            "--rate-limit-burst",
            "1000000",
        ],
        TOKEN,
    )
    .await?;
    let (collector, dash) = (ingest.base(), dashboard.base());

    load(&collector, 50, 1, 4).await?;
    progress(&format!(
        "freshness: collector ceiling, {} requests of {BATCH} events, 32 clients",
        plan.ceiling_requests
    ));
    let (ceiling_per_s, _, _) = load(&collector, plan.ceiling_requests, BATCH, 32).await?;
    progress(&format!(
        "freshness: ceiling {ceiling_per_s:.0} events/s; waiting for the processor to catch up"
    ));
    let http = reqwest::Client::new();
    poll_until("the processor caught up", Duration::from_secs(300), || {
        let (http, dash) = (http.clone(), dash.clone());
        async move { (pending(&http, &dash).await == Some(0)).then_some(()) }
    })
    .await;

    let offered_per_s = ceiling_per_s / 2.0;
    let total_batches = (offered_per_s * plan.seconds as f64 / BATCH as f64).ceil() as usize;
    progress(&format!(
        "freshness: steady {offered_per_s:.0} events/s for {} s ({total_batches} requests), a marker every 500 ms",
        plan.seconds
    ));
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..total_batches)
            .map(|i| {
                json!({"batch": (0..BATCH).map(|j| wire_event(i * BATCH + j)).collect::<Vec<_>>()})
                    .to_string()
            })
            .collect(),
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(BATCH as f64 / offered_per_s);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sends = Vec::with_capacity(total_batches);
    let mut markers = Vec::new();
    let mut next_marker = Instant::now();
    for i in 0..total_batches {
        ticker.tick().await;
        let (client, url, bodies, accepted, failed) = (
            http.clone(),
            format!("{collector}/v1/events"),
            bodies.clone(),
            accepted.clone(),
            failed.clone(),
        );
        sends.push(tokio::spawn(async move {
            let ok = client
                .post(url)
                .header("content-type", "application/json")
                .body(bodies[i].clone())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                accepted.fetch_add(BATCH as u64, Ordering::Relaxed);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
        if Instant::now() >= next_marker {
            next_marker += Duration::from_millis(500);
            markers.push(tokio::spawn(marker(
                http.clone(),
                collector.clone(),
                dash.clone(),
                markers.len(),
            )));
        }
    }
    for s in sends {
        s.await?;
    }
    let achieved_per_s = accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "{} load requests failed",
        failed.load(Ordering::Relaxed)
    );
    let mut secs = Vec::new();
    for m in markers {
        secs.push(m.await??);
    }
    secs.sort_by(f64::total_cmp);
    progress(&format!(
        "freshness: {} markers, p50 {:.2} s, p95 {:.2} s",
        secs.len(),
        percentile(&secs, 0.5),
        percentile(&secs, 0.95)
    ));
    let rss_mb = [
        ("collector".to_owned(), peak_rss_mb(ingest.pid())),
        ("processor".to_owned(), peak_rss_mb(processor.pid())),
        ("dashboard".to_owned(), peak_rss_mb(dashboard.pid())),
    ];
    drop((ingest, processor, dashboard));
    store
        .server_client()
        .query(&format!("DROP DATABASE {}", store.database))
        .execute()
        .await?;
    Ok(FreshnessResult {
        ceiling_per_s,
        offered_per_s,
        achieved_per_s,
        markers: secs.len(),
        p50_s: percentile(&secs, 0.5),
        p95_s: percentile(&secs, 0.95),
        max_s: secs.last().copied().unwrap_or(0.0),
        rss_mb,
    })
}

pub fn report(r: &FreshnessResult, plan: &FreshnessPlan) -> String {
    let mut out = String::from("## freshness\n\n");
    out.push_str(&format!(
        "Collector, processor and dashboard as release processes on the durable broker. Baseline: the collector's \
         ceiling in the same run, {} requests of {BATCH} events from 32 clients: **{:.0} events/s**. Then {} s of \
         open-loop load at half of it ({:.0} events/s offered, {:.0} achieved) and a marker event every 500 ms; \
         a marker's freshness runs from just before its request until the dashboard's `/api/journey` shows it \
         (polled every 100 ms, so figures are up to 0.1 s high). The processor flushes a batch when its oldest \
         row is 500 ms old.\n\n",
        plan.ceiling_requests, r.ceiling_per_s, plan.seconds, r.offered_per_s, r.achieved_per_s
    ));
    out.push_str("| markers | p50 s | p95 s | max s | target p95 ≤ 3 s |\n| ---: | ---: | ---: | ---: | :---: |\n");
    out.push_str(&format!(
        "| {} | {:.2} | {:.2} | {:.2} | {} |\n\n",
        r.markers,
        r.p50_s,
        r.p95_s,
        r.max_s,
        if r.p95_s <= 3.0 { "✓" } else { "✗" }
    ));
    out.push_str("Peak RSS during this run (VmHWM): ");
    out.push_str(
        &r.rss_mb
            .iter()
            .map(|(n, mb)| format!("{n} {mb:.1} MB"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str(".\n");
    out
}
