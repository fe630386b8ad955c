//! Faults: a simulated campaign (≥ 100 000 events, client retries
//! included) goes through the release collector's import endpoint and the
//! release processor while one thing breaks, on a private durable broker
//! (tansu, SQLite) and a private ClickHouse so they can be killed:
//!
//! - the processor SIGKILLed, then started again once;
//! - ClickHouse SIGKILLed, started again 5 s later;
//! - the broker SIGKILLed and started again (its SQLite storage kept);
//! - one poison message per 10 000 written to the topic by another producer
//!   (undecodable bytes, or a time no column can hold);
//! - a second processor joining the group, then leaving it (SIGTERM).
//!
//! Each run counts: events the collector accepted (2xx, by event id), how
//! many of them are in ClickHouse, events the dashboard's figures count
//! more than once, accepted events missing, dead letters, and the time to
//! recover: from the fault (the kill; for the member, its leaving) until
//! everything the topic held when the broken part was back is in
//! ClickHouse and committed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_core::{Campaign, StoreConfig};
use serde_json::{json, Value};

use super::{progress, ProcessorWiring};
use crate::sim::{simulate, SimConfig};
use crate::{create_topic, group_progress, unique, PrivateBroker, PrivateClickHouse, Service};

const IMPORT_TOKEN: &str = "faults-import-token-0123456789";

#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    /// Simulated people per run (about five events each).
    pub people: usize,
    /// Events per second the sender offers.
    pub rate_per_s: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ProcessorKill,
    ClickHouseKill,
    BrokerRestart,
    Poison,
    MemberJoinsAndLeaves,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::ProcessorKill,
        Fault::ClickHouseKill,
        Fault::BrokerRestart,
        Fault::Poison,
        Fault::MemberJoinsAndLeaves,
    ];

    fn label(self) -> &'static str {
        match self {
            Fault::ProcessorKill => "processor SIGKILL + restart",
            Fault::ClickHouseKill => "ClickHouse SIGKILL + restart after 5 s",
            Fault::BrokerRestart => "broker SIGKILL + restart",
            Fault::Poison => "1 poison message per 10 000",
            Fault::MemberJoinsAndLeaves => "second processor joins, leaves after 20 s",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultResult {
    pub fault: Fault,
    pub accepted: usize,
    pub in_clickhouse: usize,
    pub double_counted: i64,
    pub lost: usize,
    pub dead_letters: i64,
    pub poison_sent: usize,
    /// Fault → caught up with the topic as it was when the broken part was
    /// back; `None`: not within 5 minutes.
    pub recovery_s: Option<f64>,
    pub total_s: f64,
}

/// Sends `events` in batches through `/v1/import` at about `rate` events/s,
/// resending a refused or unanswered batch (same event ids) until it is
/// accepted; returns the accepted event ids. `sent` counts progress.
async fn send(
    base: String,
    events: Arc<Vec<Value>>,
    rate: usize,
    sent: Arc<AtomicUsize>,
) -> anyhow::Result<BTreeSet<String>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let mut accepted = BTreeSet::new();
    let started = Instant::now();
    for chunk in events.chunks(200) {
        let body = json!({ "batch": chunk }).to_string();
        loop {
            let r = client
                .post(format!("{base}/v1/import"))
                .bearer_auth(IMPORT_TOKEN)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() || r.status() == 400 => {
                    let answer: Value = r.json().await?;
                    for id in answer["event_ids"].as_array().into_iter().flatten() {
                        accepted.insert(id.as_str().unwrap_or_default().to_owned());
                    }
                    break;
                }
                // 503 (Kafka did not confirm), 429, a broken connection:
                // resend the whole batch with the same event ids.
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let done = sent.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
        let due = Duration::from_secs_f64(done as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(accepted)
}

/// A poison message: alternately undecodable bytes and a time no column holds.
fn poison(i: usize) -> (String, Vec<u8>) {
    if i.is_multiple_of(2) {
        (format!("poison-{i}"), b"\x00\xffnot an event".to_vec())
    } else {
        let m = json!({
            "v": 1, "event_id": uuid::Uuid::new_v4(), "type": "page_view",
            "ts": "1960-05-01T00:00:00Z", "received_at": "1960-05-01T00:00:00Z",
            "visitor_id": format!("v_poison_{i:06}"),
        });
        (format!("poison-{i}"), m.to_string().into_bytes())
    }
}

/// One run with `fault`.
#[allow(clippy::too_many_arguments)]
async fn run_one(
    fault: Fault,
    broker: &mut PrivateBroker,
    ch: &mut PrivateClickHouse,
    bins: (&Path, &Path),
    campaign_path: &Path,
    events: Arc<Vec<Value>>,
    plan: FaultPlan,
) -> anyhow::Result<FaultResult> {
    let started = Instant::now();
    let brokers = broker.brokers();
    let topic = unique("faults");
    let dlq = format!("{topic}.dlq");
    create_topic(&brokers, &topic, 3).await?;
    create_topic(&brokers, &dlq, 1).await?;
    let store = StoreConfig::new(ch.url(), unique("bench_faults"));
    ensemble_core::migrate::migrate(&store).await?;
    let group = unique("g_faults");
    let campaign = campaign_path.display().to_string();
    let collector = Service::start(
        &bins.0.display().to_string(),
        &[
            "--campaign",
            &campaign,
            "--contact-secret",
            "faults-contact-secret-0123456789",
            "--import-token",
            IMPORT_TOKEN,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &topic,
        ],
        &[],
    )?;
    collector
        .wait_ready("collector", Duration::from_secs(60))
        .await;
    let wiring = ProcessorWiring {
        bin: bins.1,
        campaign: &campaign,
        brokers: &brokers,
        topic: &topic,
        group: &group,
        clickhouse_url: &store.url,
        database: &store.database,
    };
    let start_proc = || wiring.start(&["--insert-retry-max-ms", "2000"]);
    let mut processor = start_proc()?;
    processor
        .wait_ready("processor", Duration::from_secs(60))
        .await;

    let sent = Arc::new(AtomicUsize::new(0));
    let total = events.len();
    let sender = tokio::spawn(send(
        collector.base(),
        events.clone(),
        plan.rate_per_s,
        sent.clone(),
    ));
    // Poison from another producer, one per 10 000 events sent.
    let poison_sent = Arc::new(Mutex::new(0usize));
    let poisoner = (fault == Fault::Poison).then(|| {
        let (brokers, topic, sent, poison_sent) = (
            brokers.clone(),
            topic.clone(),
            sent.clone(),
            poison_sent.clone(),
        );
        tokio::spawn(async move {
            let mut next = 10_000;
            while next <= total {
                if sent.load(Ordering::Relaxed) >= next {
                    let i = next / 10_000;
                    if crate::produce_raw(&brokers, &topic, &[poison(i)])
                        .await
                        .is_ok()
                    {
                        if let Ok(mut n) = poison_sent.lock() {
                            *n += 1;
                        }
                    }
                    next += 10_000;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });

    // The fault, once 30 % is sent.
    while sent.load(Ordering::Relaxed) < total * 3 / 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress(&format!(
        "faults: {} at {} events sent",
        fault.label(),
        sent.load(Ordering::Relaxed)
    ));
    let mut t_fault = Instant::now();
    match fault {
        Fault::ProcessorKill => {
            processor.kill();
            processor = start_proc()?;
        }
        Fault::ClickHouseKill => {
            ch.stop();
            tokio::time::sleep(Duration::from_secs(5)).await;
            ch.restart()?;
        }
        Fault::BrokerRestart => broker.restart()?,
        Fault::Poison => {}
        Fault::MemberJoinsAndLeaves => {
            let mut second = start_proc()?;
            tokio::time::sleep(Duration::from_secs(20)).await;
            // The fault is the member leaving: its partitions change hands.
            t_fault = Instant::now();
            second.terminate(Duration::from_secs(30));
        }
    }
    // Recovered: everything in the topic when the broken part was back is
    // in ClickHouse and committed (the sender keeps sending meanwhile).
    let deadline = Instant::now() + Duration::from_secs(300);
    let targets = loop {
        match ensemble_core::kafka::group_lag(&brokers, &topic, &group, Duration::from_secs(5))
            .await
        {
            Ok(lag) => break lag.partitions,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => return Err(e.context("the broker did not come back")),
        }
    };
    let mut recovery_s = None;
    while Instant::now() < deadline {
        let caught_up =
            ensemble_core::kafka::group_lag(&brokers, &topic, &group, Duration::from_secs(5))
                .await
                .is_ok_and(|lag| {
                    targets.iter().all(|t| {
                        lag.partitions.iter().any(|p| {
                            p.partition == t.partition && p.committed.unwrap_or(0) >= t.end
                        })
                    })
                });
        if caught_up {
            recovery_s = Some(t_fault.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let accepted = sender.await??;
    if let Some(p) = poisoner {
        p.await?;
    }
    progress(&format!(
        "faults: {}: all sent, waiting for the processor",
        fault.label()
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok((done, high)) = group_progress(&brokers, &topic, &group).await {
            if done == high {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: the processor did not catch up in 5 min",
            fault.label()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let client = store.client();
    let stored: BTreeSet<String> = client
        .query("SELECT DISTINCT toString(event_id) FROM events")
        .fetch_all::<String>()
        .await?
        .into_iter()
        .collect();
    let lost = accepted.difference(&stored).count();
    let in_clickhouse = accepted.intersection(&stored).count();
    // What the dashboard's figures count, bots in (both bots scopes),
    // against the distinct events they cover.
    let campaign = Campaign::load(campaign_path)?;
    let (Some(first), Some(last)) = (campaign.phases.first(), campaign.phases.last()) else {
        anyhow::bail!("campaign without phases");
    };
    let (start, end) = (first.starts_at.timestamp(), last.ends_at.timestamp());
    let figures: i64 = client
        .query(
            "SELECT toInt64(sum(n)) FROM figures WHERE figure = 'events' AND device_filter = '*' \
             AND placement_filter = '*' AND first_day >= toDate(?) AND last_day <= toDate(?)",
        )
        .bind(first.start_date.to_string())
        .bind(last.end_date.to_string())
        .fetch_one()
        .await?;
    let distinct_in_range: u64 = client
        .query("SELECT uniqExact(event_id) FROM events WHERE ts >= toDateTime(?) AND ts < toDateTime(?)")
        .bind(u32::try_from(start).unwrap_or(0))
        .bind(u32::try_from(end).unwrap_or(u32::MAX))
        .fetch_one()
        .await?;
    let dlq_lag =
        ensemble_core::kafka::group_lag(&brokers, &dlq, "nobody", Duration::from_secs(5)).await?;
    drop((collector, processor));
    let poison_sent = poison_sent.lock().map_or(0, |n| *n);
    Ok(FaultResult {
        fault,
        accepted: accepted.len(),
        in_clickhouse,
        double_counted: figures - i64::try_from(distinct_in_range).unwrap_or(i64::MAX),
        lost,
        dead_letters: dlq_lag.end(),
        poison_sent,
        recovery_s,
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// Every fault, each on a fresh topic and database.
pub async fn run(
    ingest_bin: &Path,
    processor_bin: &Path,
    plan: FaultPlan,
) -> anyhow::Result<Vec<FaultResult>> {
    let campaign_path = crate::campaign_file();
    let campaign = Campaign::load(&campaign_path)?;
    let sim = simulate(
        &campaign,
        &SimConfig {
            seed: 7,
            people: plan.people,
            ..SimConfig::default()
        },
    );
    // Events the collector takes (the malformed ones are refused, not faults).
    let events: Vec<Value> = sim
        .events
        .into_iter()
        .filter(|e| ensemble_core::event::validate(e).is_ok() && e.get("event_id").is_some())
        .collect();
    progress(&format!(
        "faults: {} events per run ({} people)",
        events.len(),
        plan.people
    ));
    let events = Arc::new(events);
    let mut broker = PrivateBroker::start()?;
    let mut ch = PrivateClickHouse::start()?;
    let mut out = Vec::new();
    for fault in Fault::ALL {
        let r = run_one(
            fault,
            &mut broker,
            &mut ch,
            (ingest_bin, processor_bin),
            &campaign_path,
            events.clone(),
            plan,
        )
        .await?;
        progress(&format!("faults: {r:?}"));
        out.push(r);
    }
    Ok(out)
}

pub fn report(results: &[FaultResult], plan: &FaultPlan) -> String {
    let mut out = String::from("## faults\n\n");
    out.push_str(&format!(
        "Each run: a simulated campaign of {} people (client retries included) through the release collector's \
         `/v1/import` at about {} events/s and the release processor, on a private durable broker (tansu, SQLite) \
         and a private ClickHouse 18.16; the fault strikes once 30 % is sent. *Accepted*: distinct event ids the \
         collector answered 2xx for. *Double-counted*: what the dashboard's figures count minus the distinct events \
         they cover. *Recovery*: from the fault (the kill; for the member, its leaving) until everything the topic held when the broken part was back is in ClickHouse and committed. Targets: 0 lost, 0 \
         double-counted, recovery ≤ 60 s.\n\n",
        plan.people, plan.rate_per_s
    ));
    out.push_str("| fault | accepted | in ClickHouse | double-counted | lost | dead letters (poison sent) | recovery s | run s |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} {} | {} {} | {} ({}) | {} {} | {:.0} |\n",
            r.fault.label(),
            r.accepted,
            r.in_clickhouse,
            r.double_counted,
            if r.double_counted == 0 { "✓" } else { "✗" },
            r.lost,
            if r.lost == 0 { "✓" } else { "✗" },
            r.dead_letters,
            r.poison_sent,
            r.recovery_s.map_or("never".into(), |s| format!("{s:.1}")),
            if r.recovery_s.is_some_and(|s| s <= 60.0) {
                "✓"
            } else {
                "✗"
            },
            r.total_s,
        ));
    }
    out
}
