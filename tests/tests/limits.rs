//! A dashboard user cannot take ClickHouse down: while the processor writes
//! a steady stream, one agency token fires eight questions that recount raw
//! events, again and again. One runs at a time under the dashboard's query
//! limits, the others are told to wait (429 + Retry-After); the processor's
//! inserts keep flowing and other users are answered.
//!
//! The dashboard runs as the local stack's read-only ClickHouse user
//! `ensemble_dashboard`, which is checked to refuse writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_core::event::{EventMessage, EventType};
use ensemble_core::{Campaign, StoreConfig};
use ensemble_tests::{
    campaign_file, clickhouse_url, create_topic, group_progress, kafka_brokers, metric_value,
    poll_until, send_all, unique, workspace_binary, Service,
};

const ANALYST: &str = "limits-analyst-token-0123456789";
const AGENCY: &str = "limits-agency-token-0123456789";

fn live_event(i: u64) -> (String, Vec<u8>) {
    let mut m = EventMessage::new(
        EventType::PageView,
        format!("v_limits_{:06}", i % 50_000),
        chrono::Utc::now(),
    );
    m.placement = Some("M-CHATELET".into());
    (m.visitor_id.clone(), m.encode())
}

fn inserted(p: &Service) -> f64 {
    p.get("/metrics")
        .and_then(|(_, m)| metric_value(&m, "ensemble_processor_rows_inserted_total"))
        .unwrap_or(0.0)
}

async fn get(http: &reqwest::Client, base: &str, path: &str, token: &str) -> (u16, Option<String>) {
    match http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => {
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (r.status().as_u16(), retry)
        }
        Err(_) => (0, None),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_heavy_requests_from_an_agency_token_stop_neither_inserts_nor_other_users() {
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    // ~250 000 simulated events with their figures, as the benchmark loads them.
    let store = StoreConfig::new(clickhouse_url(), unique("it_limits"));
    ensemble_tests::bench::dashboard::load(&store, &campaign, 200_000)
        .await
        .expect("load simulated events");

    // The dashboard's ClickHouse user reads and cannot write.
    let readonly = StoreConfig {
        user: "ensemble_dashboard".into(),
        ..store.clone()
    };
    let refused = readonly
        .client()
        .query("INSERT INTO events (event_id) VALUES (generateUUIDv4())")
        .execute()
        .await
        .expect_err("a write as the dashboard's user");
    assert!(
        refused.to_string().contains("Code: 164"),
        "readonly: {refused}"
    );

    let brokers = kafka_brokers();
    let topic = unique("limits");
    let dlq = format!("{topic}.dlq");
    create_topic(&brokers, &topic, 3).await.expect("topic");
    create_topic(&brokers, &dlq, 1).await.expect("dlq");
    let group = unique("g_limits");
    let c = campaign_file().display().to_string();
    let common = [
        "--campaign",
        &c,
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        &topic,
        "--kafka-dlq-topic",
        &dlq,
        "--clickhouse-url",
        &store.url,
        "--clickhouse-database",
        &store.database,
    ];
    let mut args = common.to_vec();
    args.extend(["--group-id", &group]);
    let processor =
        Service::start(&workspace_binary("ensemble-processor"), &args, &[]).expect("processor");
    let mut args = common.to_vec();
    args.extend([
        "--analyst-tokens",
        ANALYST,
        "--agency-tokens",
        AGENCY,
        "--processor-group",
        &group,
        "--clickhouse-user",
        "ensemble_dashboard",
    ]);
    let dashboard =
        Service::start(&workspace_binary("ensemble-dashboard"), &args, &[]).expect("dashboard");
    processor
        .wait_ready("processor", Duration::from_secs(60))
        .await;
    dashboard
        .wait_ready("dashboard", Duration::from_secs(60))
        .await;

    // A steady stream: 200 events about every 100 ms.
    let producing = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let (brokers, topic, producing, sent) = (
            brokers.clone(),
            topic.clone(),
            producing.clone(),
            sent.clone(),
        );
        tokio::spawn(async move {
            let producer: rdkafka::producer::FutureProducer =
                ensemble_core::KafkaConfig::new(&brokers, &topic)
                    .producer_config(30_000)
                    .create()
                    .expect("producer");
            let mut i = 0u64;
            while producing.load(Ordering::Relaxed) {
                let batch: Vec<_> = (i..i + 200).map(live_event).collect();
                send_all(&producer, &topic, &batch).await.expect("produce");
                i += 200;
                sent.store(i, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    poll_until(
        "the processor to insert the stream",
        Duration::from_secs(60),
        || async { (inserted(&processor) > 0.0).then_some(()) },
    )
    .await;
    let window = Duration::from_secs(8);
    let (t0, n0) = (Instant::now(), inserted(&processor));
    tokio::time::sleep(window).await;
    let before = (inserted(&processor) - n0) / t0.elapsed().as_secs_f64();

    // Eight heavy questions at once from one agency token, round after
    // round: questions the stored figures do not answer (times that are not
    // local midnights, a device and a placement at once), recomputed from
    // the ledger. (Custom day ranges, a device or a placement alone are
    // answered from the stored figures.)
    let http = reqwest::Client::new();
    let base = dashboard.base();
    let heavy = [
        "/api/channels?device=mobile&placement=M-CHATELET",
        "/api/overview?from=2025-01-20T10:00:00Z&to=2025-02-20T10:00:00Z",
        "/api/reach?device=mobile&placement=M-CHATELET",
        "/api/funnel?from=2025-01-20T06:30:00Z",
        "/api/placements?from=2025-02-01T12:00:00Z",
        "/api/attribution?from=2025-01-18T08:00:00Z",
        "/api/timeseries?metric=visitors&bucket=day&from=2025-02-01T09:00:00Z",
        "/api/channels?from=2025-01-18T00:30:00Z",
    ];
    let (t1, n1) = (Instant::now(), inserted(&processor));
    let mut agency = Vec::new();
    let mut others = Vec::new();
    while t1.elapsed() < window {
        let round: Vec<_> = heavy
            .iter()
            .map(|p| {
                let (http, url) = (http.clone(), format!("{base}{p}"));
                tokio::spawn(async move { get(&http, &url, "", AGENCY).await })
            })
            .collect();
        let (light, analysts_heavy) = tokio::join!(
            get(&http, &base, "/api/overview", AGENCY),
            get(
                &http,
                &base,
                "/api/channels?device=mobile&placement=M-CHATELET",
                ANALYST
            ),
        );
        let mut answers = Vec::new();
        for r in round {
            answers.push(r.await.expect("request task"));
        }
        agency.push(answers);
        others.push((light, analysts_heavy));
    }
    let during = (inserted(&processor) - n1) / t1.elapsed().as_secs_f64();
    eprintln!(
        "processor inserts: {before:.0} rows/s before, {during:.0} rows/s during {} rounds of 8 heavy agency requests",
        agency.len()
    );

    for round in &agency {
        let admitted = round.iter().filter(|(s, _)| *s != 429).count();
        assert!(
            admitted <= 1,
            "one heavy question at a time per agency token: {round:?}"
        );
        for (status, retry) in round {
            match status {
                429 => assert_eq!(retry.as_deref(), Some("2"), "{round:?}"),
                // Answered, or refused as too large with how to narrow it.
                200 | 503 => {}
                other => panic!("unexpected status {other}: {round:?}"),
            }
        }
    }
    assert!(
        agency.iter().flatten().any(|(s, _)| *s == 200),
        "the admitted questions are answered"
    );
    for (light, analysts_heavy) in &others {
        assert_eq!(
            light.0, 200,
            "a question the figures answer is never held back"
        );
        assert_eq!(
            analysts_heavy.0, 200,
            "another token's heavy question has its own slot"
        );
    }
    assert!(during > 0.0, "the processor kept inserting");

    producing.store(false, Ordering::Relaxed);
    producer.await.expect("producer");
    let total = sent.load(Ordering::Relaxed);
    poll_until(
        "the processor to catch up",
        Duration::from_secs(120),
        || async {
            let (done, high) = group_progress(&brokers, &topic, &group).await.ok()?;
            (done == high && high as u64 == total).then_some(())
        },
    )
    .await;
}
