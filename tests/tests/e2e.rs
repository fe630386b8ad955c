//! End to end: the collector, the processor and the dashboard run as
//! processes against the real broker and ClickHouse; the simulator sends a
//! campaign (~100 000 events, retries and malformed ones included) through
//! the import endpoint; once everything is processed, the dashboard's
//! numbers equal the ground truth computed independently from what the
//! simulator meant — counts exactly, fractional credits within 1e-9.
//!
//! It runs the binaries in `target/debug`, which `cargo test --workspace`
//! (deploy/local/test) builds first; `cargo test -p ensemble-tests` alone may
//! run stale ones.

use std::path::PathBuf;
use std::time::Duration;

use ensemble_core::Campaign;
use ensemble_tests::sim::{send_import, simulate, SimConfig};
use ensemble_tests::truth::{compute, Calendar};
use ensemble_tests::{
    campaign_file, create_topic, group_progress, kafka_brokers, migrated_database, poll_until,
    unique, Service,
};
use serde_json::Value;

const SECRET: &str = "e2e-contact-secret-0123456789";
const IMPORT: &str = "e2e-import-token-0123456789";
const ANALYST: &str = "e2e-analyst-token-0123456789";

/// A workspace binary, built by `cargo test --workspace` (deploy/local/test).
fn binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| ensemble_tests::repo_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo test --workspace` (deploy/local/test)",
        path.display()
    );
    path.display().to_string()
}

async fn ready(svc: &Service, name: &str) {
    poll_until(&format!("{name} /readyz"), Duration::from_secs(60), || {
        let r = svc.get("/readyz");
        async move { r.filter(|(c, _)| *c == 200).map(|_| ()) }
    })
    .await;
}

fn get(svc: &Service, path: &str) -> Value {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (code, body) = svc
        .get(&format!("{path}{sep}token={ANALYST}"))
        .expect("dashboard answers");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_equals_the_simulators_ground_truth() {
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let sim = simulate(
        &campaign,
        &SimConfig {
            seed: 42,
            people: 20_000,
            ..SimConfig::default()
        },
    );
    assert!(
        sim.events.len() > 90_000,
        "about 100 000 events: {}",
        sim.events.len()
    );
    let calendar = Calendar {
        zone: campaign.timezone,
        phases: campaign
            .phases
            .iter()
            .map(|p| (p.id.clone(), p.start_date, p.end_date))
            .collect(),
    };
    let truth = compute(&sim.truth, &calendar);

    let brokers = kafka_brokers();
    let topic = unique("e2e");
    let dlq = format!("{topic}.dlq");
    create_topic(&brokers, &topic, 3).await.expect("topic");
    create_topic(&brokers, &dlq, 1).await.expect("dlq");
    let store = migrated_database("it_e2e").await;
    let group = unique("g_e2e");
    let c = campaign_file().display().to_string();
    let kafka = [
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        &topic,
        "--kafka-dlq-topic",
        &dlq,
    ];
    let ch = [
        "--clickhouse-url",
        &store.url,
        "--clickhouse-database",
        &store.database,
    ];

    let mut args = vec![
        "--campaign",
        &c,
        "--import-token",
        IMPORT,
        "--contact-secret",
        SECRET,
    ];
    args.extend(kafka);
    let ingest = Service::start(&binary("ensemble-ingest"), &args, &[]).expect("ingest");
    let mut args = vec!["--campaign", &c, "--group-id", &group];
    args.extend(kafka);
    args.extend(ch);
    let processor = Service::start(&binary("ensemble-processor"), &args, &[]).expect("processor");
    let mut args = vec!["--campaign", &c, "--analyst-tokens", ANALYST];
    args.extend(ch);
    let dashboard = Service::start(&binary("ensemble-dashboard"), &args, &[]).expect("dashboard");
    for (svc, name) in [
        (&ingest, "ingest"),
        (&processor, "processor"),
        (&dashboard, "dashboard"),
    ] {
        ready(svc, name).await;
    }

    let collector = ingest.base();
    let (accepted, rejected) = send_import(&collector, IMPORT, &sim.events, 500, |_| {})
        .await
        .expect("send");
    assert_eq!(
        accepted as usize,
        sim.valid_events + sim.retries,
        "every valid event (and its retries) accepted"
    );
    assert_eq!(
        rejected.values().sum::<u64>() as usize,
        sim.malformed,
        "{rejected:?}"
    );

    // Wait until everything is processed: all distinct events in ClickHouse, offsets at the end.
    let client = store.client();
    let distinct = sim.truth.len() as u64;
    poll_until(
        "every event in ClickHouse",
        Duration::from_secs(600),
        || {
            let client = client.clone();
            async move {
                let n: u64 = client
                    .query("SELECT uniqExact(event_id) FROM events")
                    .fetch_one()
                    .await
                    .ok()?;
                (n == distinct).then_some(())
            }
        },
    )
    .await;
    poll_until(
        "the processor's offsets at the end",
        Duration::from_secs(120),
        || async {
            let (done, high) = group_progress(&brokers, &topic, &group).await.ok()?;
            (done == high).then_some(())
        },
    )
    .await;

    let overview = get(&dashboard, "/api/overview");
    assert_eq!(overview["current"]["totals"]["visitors"], truth.visitors);
    assert_eq!(overview["current"]["totals"]["signups"], truth.signups);

    let channels = get(&dashboard, "/api/channels");
    for ((channel, phase), n) in &truth.touches {
        let row = channels["rows"]
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["channel"] == *channel && r["phase"] == *phase)
            })
            .unwrap_or_else(|| panic!("no row {channel}/{phase}"));
        assert_eq!(
            row["touches"].as_u64(),
            Some(*n),
            "touches {channel}/{phase}"
        );
    }

    let attribution = get(&dashboard, "/api/attribution");
    assert_eq!(attribution["conversions"].as_u64(), Some(truth.conversions));
    for (model, credits) in &truth.credits {
        let got = attribution["by_channel"][*model]
            .as_object()
            .expect("model");
        assert_eq!(got.len(), credits.len(), "{model}: {got:?} vs {credits:?}");
        for (channel, want) in credits {
            let have = got.get(channel).and_then(Value::as_f64).unwrap_or(f64::NAN);
            assert!(
                (have - want).abs() < 1e-9,
                "{model}/{channel}: dashboard {have}, truth {want}"
            );
        }
    }
    drop((ingest, processor, dashboard));
}
