//! Benchmarks: each figure next to a baseline measured in the same run.
//!
//! `ingest`: the collector's events/s for single-event requests and for
//! 100-event batches, against the broker's raw produce ceiling (a plain
//! rdkafka producer with the collector's settings sending the same
//! payloads), p50/p99 request latency and the collector's peak RSS — on the
//! durable (SQLite) broker and on the in-memory one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ensemble_core::event::{EventMessage, EventType, Utm, SCHEMA_VERSION};
use ensemble_core::KafkaConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::{create_topic, unique, Service};

pub mod abuse;
pub mod dashboard;
pub mod faults;
pub mod freshness;
pub mod processor;
pub mod recorder;

/// Sizes of one ingest benchmark run.
#[derive(Debug, Clone, Copy)]
pub struct IngestPlan {
    pub raw_messages: usize,
    pub single_requests: usize,
    pub single_concurrency: usize,
    pub batch_requests: usize,
    pub batch_size: usize,
    pub batch_concurrency: usize,
}

/// What one broker gave.
#[derive(Debug, Clone)]
pub struct IngestResult {
    pub broker: String,
    pub raw_per_s: f64,
    pub single_per_s: f64,
    pub single_p50_ms: f64,
    pub single_p99_ms: f64,
    pub batch_events_per_s: f64,
    pub batch_p50_ms: f64,
    pub batch_p99_ms: f64,
    pub peak_rss_mb: f64,
}

/// The three services as release processes on a topic and database of
/// their own, ready: what the freshness and abuse benches measure.
pub(crate) struct Pipeline {
    pub ingest: Service,
    pub processor: Service,
    pub dashboard: Service,
    pub store: ensemble_core::StoreConfig,
}

/// Starts [`Pipeline`] on `campaign`; `ingest_extra` are the collector's
/// own flags; the dashboard opens to `token`.
pub(crate) async fn start_pipeline(
    brokers: &str,
    ch_url: &str,
    bins: [&Path; 3],
    name: &str,
    campaign: &str,
    ingest_extra: &[&str],
    token: &str,
) -> anyhow::Result<Pipeline> {
    let topic = unique(name);
    let dlq = format!("{topic}.dlq");
    create_topic(brokers, &topic, 3).await?;
    create_topic(brokers, &dlq, 1).await?;
    let store = ensemble_core::StoreConfig::new(ch_url, unique(name));
    ensemble_core::migrate::migrate(&store).await?;
    let group = unique(&format!("{name}_group"));
    let kafka = [
        "--kafka-brokers",
        brokers,
        "--kafka-topic",
        &topic,
        "--kafka-dlq-topic",
        &dlq,
    ];
    let ch = [
        "--clickhouse-url",
        ch_url,
        "--clickhouse-database",
        &store.database,
    ];
    let bin = |i: usize| bins[i].display().to_string();
    let mut args = vec![
        "--campaign",
        campaign,
        "--contact-secret",
        "bench-secret-0123456789abcdef",
    ];
    args.extend_from_slice(ingest_extra);
    args.extend(kafka);
    let ingest = Service::start(&bin(0), &args, &[])?;
    let mut args = vec!["--campaign", campaign, "--group-id", &group];
    args.extend(kafka);
    args.extend(ch);
    let processor = Service::start(&bin(1), &args, &[])?;
    let mut args = vec![
        "--campaign",
        campaign,
        "--analyst-tokens",
        token,
        "--processor-group",
        &group,
    ];
    args.extend(kafka);
    args.extend(ch);
    let dashboard = Service::start(&bin(2), &args, &[])?;
    for (svc, name) in [
        (&ingest, "ingest"),
        (&processor, "processor"),
        (&dashboard, "dashboard"),
    ] {
        svc.wait_ready(name, Duration::from_secs(60)).await;
    }
    Ok(Pipeline {
        ingest,
        processor,
        dashboard,
        store,
    })
}

pub(crate) fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// A page view as the landing page sends it: the collector's real work.
pub fn wire_event(i: usize) -> Value {
    json!({
        "type": "page_view",
        "event_id": uuid::Uuid::new_v4().to_string(),
        "visitor_id": format!("v_bench_{:08}", i % 50_000),
        "ts": Utc::now().to_rfc3339(),
        "url": "https://vivre-ensemble.example.org/barometre?utm_source=ratp&utm_medium=affiche&utm_content=m-chatelet",
        "referrer": "https://www.google.com/",
        "placement": "M-CHATELET"
    })
}

/// The Kafka message the collector makes of [`wire_event`]: the raw
/// producer sends exactly this shape.
fn kafka_payload(i: usize) -> (String, Vec<u8>) {
    let m = EventMessage {
        v: SCHEMA_VERSION,
        event_id: uuid::Uuid::new_v4(),
        event_type: EventType::PageView,
        ts: Utc::now(),
        received_at: Utc::now(),
        ts_clamped: false,
        imported: false,
        visitor_id: format!("v_bench_{:08}", i % 50_000),
        placement: Some("M-CHATELET".into()),
        utm: Utm {
            source: Some("ratp".into()),
            medium: Some("affiche".into()),
            content: Some("m-chatelet".into()),
            ..Utm::default()
        },
        url: Some("https://vivre-ensemble.example.org/barometre?utm_source=ratp&utm_medium=affiche&utm_content=m-chatelet".into()),
        referrer_host: Some("www.google.com".into()),
        user_agent: Some("Mozilla/5.0 (bench)".into()),
        bot: false,
        repeat: false,
        action: None,
        contact_hash: None,
        consent: None,
        custom_name: None,
        props: Default::default(),
    };
    (m.visitor_id.clone(), m.encode())
}

/// The raw produce ceiling: messages/s of a plain producer with the
/// collector's settings, all in flight at once, every report awaited.
pub async fn raw_ceiling(brokers: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    let producer: FutureProducer = KafkaConfig::new(brokers, topic)
        .producer_config(30_000)
        .create()?;
    // Warm-up outside the clock: connection, metadata and the idempotent
    // producer id (about 0.5 s with tansu) are paid once, as in the collector.
    let (key, payload) = kafka_payload(0);
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let payloads: Vec<_> = (0..n).map(kafka_payload).collect();
    let started = Instant::now();
    crate::send_all(&producer, topic, &payloads).await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

pub(crate) fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[idx.min(sorted_ms.len() - 1)]
}

/// Sends `requests` requests of `size` events with `concurrency` workers;
/// returns (events/s, p50 ms, p99 ms). Every request must answer 200.
pub async fn load(
    base: &str,
    requests: usize,
    size: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Bodies are made before the clock starts: the generator shares the
    // machine's two cores with the collector and the broker.
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..requests)
            .map(|i| {
                if size == 1 {
                    wire_event(i).to_string()
                } else {
                    json!({"batch": (0..size).map(|j| wire_event(i * size + j)).collect::<Vec<_>>()}).to_string()
                }
            })
            .collect(),
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, base, bodies) = (
            client.clone(),
            next.clone(),
            base.to_owned(),
            bodies.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .post(format!("{base}/v1/events"))
                    .header("content-type", "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await?;
                let status = r.status();
                let _ = r.bytes().await?;
                anyhow::ensure!(
                    status == reqwest::StatusCode::OK,
                    "collector answered {status}"
                );
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for w in workers {
        all.extend(w.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((
        (requests * size) as f64 / secs,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    ))
}

/// Peak resident memory of a process (VmHWM), in MB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts the release collector and waits until it is ready.
async fn start_collector(
    bin: &Path,
    campaign: &Path,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<Service> {
    let campaign = campaign.display().to_string();
    let svc = Service::start(
        &bin.display().to_string(),
        &[
            "--campaign",
            &campaign,
            "--contact-secret",
            "bench-secret-0123456789abcdef",
            "--kafka-brokers",
            brokers,
            "--kafka-topic",
            topic,
            "--rate-limit-per-s",
            "1000000",
            "--rate-limit-burst",
            "1000000",
            "--delivery-timeout-ms",
            "10000",
        ],
        &[],
    )?;
    svc.wait_ready("collector", Duration::from_secs(30)).await;
    Ok(svc)
}

/// One broker's run.
pub async fn ingest(
    broker_label: &str,
    brokers: &str,
    collector_bin: &Path,
    campaign: &Path,
    plan: IngestPlan,
) -> anyhow::Result<IngestResult> {
    let topic = unique("bench_ingest");
    create_topic(brokers, &topic, 3).await?;
    progress(&format!(
        "{broker_label}: raw producer, {} messages",
        plan.raw_messages
    ));
    let raw_per_s = raw_ceiling(brokers, &topic, plan.raw_messages).await?;
    progress(&format!("{broker_label}: raw ceiling {raw_per_s:.0} msg/s"));

    let collector = start_collector(collector_bin, campaign, brokers, &topic).await?;
    // Warm-up: connections, producer id, metadata.
    load(&collector.base(), 50, 1, 4).await?;
    progress(&format!(
        "{broker_label}: {} single-event requests, {} clients",
        plan.single_requests, plan.single_concurrency
    ));
    let (single_per_s, single_p50_ms, single_p99_ms) = load(
        &collector.base(),
        plan.single_requests,
        1,
        plan.single_concurrency,
    )
    .await?;
    progress(&format!(
        "{broker_label}: single {single_per_s:.0} events/s"
    ));
    progress(&format!(
        "{broker_label}: {} requests of {} events, {} clients",
        plan.batch_requests, plan.batch_size, plan.batch_concurrency
    ));
    let (batch_events_per_s, batch_p50_ms, batch_p99_ms) = load(
        &collector.base(),
        plan.batch_requests,
        plan.batch_size,
        plan.batch_concurrency,
    )
    .await?;
    progress(&format!(
        "{broker_label}: batches {batch_events_per_s:.0} events/s"
    ));
    let peak_rss_mb = peak_rss_mb(collector.pid());
    Ok(IngestResult {
        broker: broker_label.to_owned(),
        raw_per_s,
        single_per_s,
        single_p50_ms,
        single_p99_ms,
        batch_events_per_s,
        batch_p50_ms,
        batch_p99_ms,
        peak_rss_mb,
    })
}

/// The report as a markdown table, with ratios and targets.
pub fn ingest_report(results: &[IngestResult], plan: &IngestPlan) -> String {
    let mut out = String::from("## ingest\n\n");
    out.push_str(&format!(
        "Baseline: the broker's raw produce ceiling — a plain rdkafka producer with the collector's settings \
         (idempotent, acks=all, lz4) sending the same messages, measured in the same run. Load: {} single-event \
         requests ({} clients), {} requests of {} events ({} clients), generator on the same 2-core machine.\n\n",
        plan.single_requests, plan.single_concurrency, plan.batch_requests, plan.batch_size, plan.batch_concurrency
    ));
    out.push_str("| broker | raw ceiling msg/s | single events/s | single p50 / p99 ms | batch events/s | batch p50 / p99 ms | batch ÷ raw (target ≥ 0.70) | collector peak RSS MB (target ≤ 150) |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.1} / {:.1} | {:.0} | {:.1} / {:.1} | {:.2} {} | {:.1} {} |\n",
            r.broker,
            r.raw_per_s,
            r.single_per_s,
            r.single_p50_ms,
            r.single_p99_ms,
            r.batch_events_per_s,
            r.batch_p50_ms,
            r.batch_p99_ms,
            r.batch_events_per_s / r.raw_per_s,
            if r.batch_events_per_s / r.raw_per_s >= 0.7 { "✓" } else { "✗" },
            r.peak_rss_mb,
            if r.peak_rss_mb <= 150.0 { "✓" } else { "✗" },
        ));
    }
    out
}

/// Where the release binaries are.
pub fn release_bin(name: &str) -> PathBuf {
    crate::repo_root().join("target/release").join(name)
}

/// Where a bench's release processor reads and writes (its dead letters go
/// to `<topic>.dlq`).
pub(crate) struct ProcessorWiring<'a> {
    pub bin: &'a Path,
    pub campaign: &'a str,
    pub brokers: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
    pub clickhouse_url: &'a str,
    pub database: &'a str,
}

impl ProcessorWiring<'_> {
    /// Starts the processor with `extra` arguments and nothing in its
    /// environment but `PATH` and `RUST_LOG`: what it runs with as deployed
    /// (its allocator's settings are built in). A switch read from the
    /// environment does not reach it from here: compare builds instead.
    pub fn start(&self, extra: &[&str]) -> anyhow::Result<Service> {
        let dlq = format!("{}.dlq", self.topic);
        let mut args = vec![
            "--campaign",
            self.campaign,
            "--kafka-brokers",
            self.brokers,
            "--kafka-topic",
            self.topic,
            "--kafka-dlq-topic",
            &dlq,
            "--group-id",
            self.group,
            "--clickhouse-url",
            self.clickhouse_url,
            "--clickhouse-database",
            self.database,
        ];
        args.extend_from_slice(extra);
        Service::start(&self.bin.display().to_string(), &args, &[])
    }
}
