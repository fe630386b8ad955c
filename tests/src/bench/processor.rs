//! The processor bench: events/s against a replay floor, and what each
//! event costs (rows and bytes written, CPU of every process involved).
//!
//! Two profiles:
//!
//! - **backfill**: a campaign's worth of imported events over 60 days,
//!   one per visitor (today's bulk import: every visitor new);
//! - **live**: a few events per person near now, most of them from
//!   visitors the ledger already knows (their history is accounted before
//!   the clock starts), on a campaign whose calendar includes today.
//!
//! For each, the processor drains a backlog from start-up (group join,
//! reading the ledger, accounting, INSERTs, offset commits) until every
//! event is in the ledger. It talks to ClickHouse through
//! [`super::recorder::Recorder`], and the floor is ClickHouse alone
//! replaying those exact INSERTs into a fresh database
//! ([`super::recorder::replay`]). CPU is read from `/proc` for the
//! processor, the ClickHouse server and the broker, between the first
//! consumed message and the last accounted one. Rows and bytes written are
//! ClickHouse's own count of new parts (`system.part_log`) in the replay's
//! database, which holds exactly the measured events' writes.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ensemble_core::event::{Consent, EventMessage, EventType, TinderAction, Utm, SCHEMA_VERSION};
use ensemble_core::KafkaConfig;

use super::recorder::{replay, Recorder};
use super::{peak_rss_mb, progress, ProcessorWiring};
use crate::{create_topic, poll_until, unique, Service};

/// Which traffic the processor is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Backfill,
    Live,
}

impl Profile {
    pub fn label(self) -> &'static str {
        match self {
            Profile::Backfill => "backfill",
            Profile::Live => "live",
        }
    }
}

/// Sizes of one processor benchmark run.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorPlan {
    /// Events measured per run.
    pub messages: usize,
    /// The processor's `--batch-max-rows` (its own default when `None`).
    pub batch_max_rows: Option<usize>,
    /// The processor's `--history-cache-events` (its own default when
    /// `None`; 0 reads every batch's histories from the ledger).
    pub history_cache_events: Option<usize>,
}

impl ProcessorPlan {
    /// Live profile: distinct visitors among the measured events (about
    /// 3.3 events each), five in six of them with history.
    fn live_visitors(&self) -> usize {
        (self.messages * 3 / 10).max(1)
    }
}

/// Rows and bytes ClickHouse wrote for one table, and the time it spent
/// writing its new parts and merging them (`system.part_log`'s
/// `duration_ms`, one thread each).
#[derive(Debug, Clone)]
pub struct Written {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub new_part_ms: u64,
    pub merge_ms: u64,
}

/// The statements of one kind the processor sent (`INSERT INTO ledger`,
/// `SELECT … FROM ledger`): how many, and ClickHouse's CPU seconds for
/// them (user and system time of the threads that ran them).
#[derive(Debug, Clone)]
pub struct Statement {
    pub kind: String,
    pub count: u64,
    pub cpu_seconds: f64,
}

/// CPU seconds of one process over the measured span.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub processor: f64,
    pub clickhouse: Option<f64>,
    pub broker: Option<f64>,
    /// The bench's own process (the recording proxy in front of ClickHouse).
    pub recorder: f64,
}

#[derive(Debug, Clone)]
pub struct ProcessorResult {
    pub broker: String,
    pub profile: Profile,
    pub events: usize,
    pub raw_consume_per_s: f64,
    pub processor_per_s: f64,
    pub floor_per_s: f64,
    pub cpu: Cpu,
    /// ClickHouse's CPU seconds during the replay.
    pub floor_clickhouse_cpu: Option<f64>,
    pub written: Option<Vec<Written>>,
    /// ClickHouse's CPU per statement the measured processor sent.
    pub statements: Option<Vec<Statement>>,
    pub inserts: u64,
    pub wire_bytes: u64,
    pub kafka_bytes: u64,
    pub peak_rss_mb: f64,
}

fn base_ts() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-17T08:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
}

/// The message mix the simulator sends: scans, views, cards, sign-ups.
fn message(
    kind: usize,
    i: usize,
    visitor: String,
    ts: DateTime<Utc>,
    imported: bool,
) -> EventMessage {
    let scan = kind <= 2;
    let view = (3..=6).contains(&kind);
    EventMessage {
        v: SCHEMA_VERSION,
        event_id: uuid::Uuid::new_v4(),
        event_type: match kind {
            0..=2 => EventType::QrScan,
            3..=6 => EventType::PageView,
            7 | 8 => EventType::TinderCard,
            _ => EventType::Signup,
        },
        ts,
        received_at: ts,
        ts_clamped: false,
        imported,
        visitor_id: visitor,
        placement: scan.then(|| ["M-CHATELET", "G-NATIONAL", "A-NATIONAL-1"][i % 3].to_owned()),
        utm: Utm {
            source: view.then(|| "ratp".to_owned()),
            ..Utm::default()
        },
        url: view.then(|| "https://vivre-ensemble.example.org/barometre?utm_source=ratp".to_owned()),
        referrer_host: None,
        user_agent: Some(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
                .into(),
        ),
        bot: false,
        repeat: false,
        action: matches!(kind, 7 | 8).then_some(TinderAction::Impression),
        contact_hash: (kind == 9).then(|| format!("{i:064x}")),
        consent: (kind == 9).then_some(Consent {
            results: true,
            newsletter: false,
        }),
        custom_name: None,
        props: Default::default(),
    }
}

/// Backfill: imported events spread over 60 days, one per visitor.
pub fn backfill_message(i: usize) -> EventMessage {
    let ts = base_ts() + chrono::Duration::seconds((i as i64 * 37) % (60 * 86_400));
    message(i % 10, i, format!("v_bench_{:08}", i % 200_000), ts, true)
}

/// A well-mixed visitor number for event `i` of `visitors`.
fn spread(i: usize, visitors: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) >> 7) % visitors
}

/// Live history: two events per returning visitor, 1–13 days before `now`.
fn history_messages(plan: &ProcessorPlan, now: DateTime<Utc>) -> Vec<EventMessage> {
    let returning = plan.live_visitors() * 5 / 6;
    (0..returning * 2)
        .map(|i| {
            let v = i / 2;
            let ts = now - chrono::Duration::days(1 + (v % 13) as i64)
                + chrono::Duration::minutes(i as i64 % 2 * 5);
            let kind = if i % 2 == 0 { i % 3 } else { 3 + i % 4 };
            message(kind, i, format!("v_live_{v:08}"), ts, false)
        })
        .collect()
}

/// Live events: the last `messages` events before `now`, in time order,
/// a few per visitor, five in six of the visitors returning.
fn live_messages(plan: &ProcessorPlan, now: DateTime<Utc>) -> Vec<EventMessage> {
    let n = plan.messages;
    let visitors = plan.live_visitors();
    (0..n)
        .map(|i| {
            // 20 events a second, the newest a second ago.
            let ts = now - chrono::Duration::milliseconds(((n - i) * 50) as i64 + 1_000);
            let v = spread(i, visitors);
            message(i % 10, i, format!("v_live_{v:08}"), ts, false)
        })
        .collect()
}

/// Raw consume ceiling: a group consumer reading `n` messages, no processing.
pub async fn raw_consume(brokers: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = KafkaConfig::new(brokers, topic)
        .consumer_config(&unique("bench_raw"))
        .create()?;
    c.subscribe(&[topic])?;
    // The clock starts at the first message: group join is not consumption.
    let first = tokio::time::timeout(Duration::from_secs(60), c.recv()).await??;
    drop(first);
    let started = Instant::now();
    for _ in 1..n {
        tokio::time::timeout(Duration::from_secs(60), c.recv()).await??;
    }
    Ok((n - 1) as f64 / started.elapsed().as_secs_f64())
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The local stack's ClickHouse server (its pid file), if it runs.
fn clickhouse_pid() -> Option<u32> {
    let state = std::env::var("ENSEMBLE_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::repo_root().join(".stack"));
    let pid: u32 = std::fs::read_to_string(state.join("clickhouse.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// CPU seconds of every process measured, now.
#[derive(Clone, Copy)]
struct CpuMark {
    processor: f64,
    clickhouse: Option<f64>,
    broker: Option<f64>,
    recorder: f64,
}

fn cpu_mark(processor: u32, clickhouse: Option<u32>, broker: Option<u32>) -> CpuMark {
    CpuMark {
        processor: cpu_seconds(processor).unwrap_or(0.0),
        clickhouse: clickhouse.and_then(cpu_seconds),
        broker: broker.and_then(cpu_seconds),
        recorder: cpu_seconds(std::process::id()).unwrap_or(0.0),
    }
}

fn cpu_between(a: CpuMark, b: CpuMark) -> Cpu {
    let d = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
    Cpu {
        processor: b.processor - a.processor,
        clickhouse: d(a.clickhouse, b.clickhouse),
        broker: d(a.broker, b.broker),
        recorder: b.recorder - a.recorder,
    }
}

/// Rows and bytes of the new parts ClickHouse wrote in `database` and its
/// SQL-access twin, per table, with the time spent writing them and
/// merging parts until now (merges still due later are not counted);
/// `None` when the server keeps no part log (any other failure is the
/// bench's error, not a missing figure).
async fn written(store: &ensemble_core::StoreConfig) -> anyhow::Result<Option<Vec<Written>>> {
    let server = store.server_client();
    server.query("SYSTEM FLUSH LOGS").execute().await?;
    let kept: u64 = server
        .query("SELECT count() FROM system.tables WHERE database = 'system' AND name = 'part_log'")
        .fetch_one()
        .await?;
    if kept == 0 {
        return Ok(None);
    }
    let rows: Vec<(String, u64, u64, u64, u64)> = server
        .query(&format!(
            "SELECT table, sumIf(rows, new), sumIf(size_in_bytes, new), \
             sumIf(duration_ms, new), sumIf(duration_ms, merge) FROM \
             (SELECT *, toString(event_type) IN ('NewPart', 'NEW_PART') AS new, \
             toString(event_type) IN ('MergeParts', 'MERGE_PARTS') AS merge FROM system.part_log) \
             WHERE database IN ('{}', '{}') \
             AND table NOT IN ('schema_migrations', 'figures_ranges_state') \
             GROUP BY table ORDER BY sumIf(rows, new) DESC",
            store.database,
            store.sql_database()
        ))
        .fetch_all()
        .await?;
    Ok(Some(
        rows.into_iter()
            .map(|(table, rows, bytes, new_part_ms, merge_ms)| Written {
                table,
                rows,
                bytes,
                new_part_ms,
                merge_ms,
            })
            .collect(),
    ))
}

/// What the statements logged between `from` and `to` cost ClickHouse, by
/// kind (the recorder asks the server to log each one it relays, and only
/// those). `None` when the server keeps no query log or its log has
/// another layout (ProfileEvents as a map on newer servers): the figure is
/// missing, the bench goes on.
async fn statements(
    store: &ensemble_core::StoreConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<Vec<Statement>> {
    let server = store.server_client();
    server.query("SYSTEM FLUSH LOGS").execute().await.ok()?;
    let rows: Vec<(String, u64, u64)> = server
        .query(
            "SELECT if(startsWith(query, 'INSERT'), \
             concat('INSERT INTO ', replaceAll(extract(query, '^INSERT INTO\\\\s+([^\\\\s(]+)'), '`', '')), \
             concat(extract(query, '^(\\\\w+)'), ' … FROM ', extract(query, 'FROM\\\\s+([\\\\w.]+)'))) AS kind, \
             count(), \
             toUInt64(sum(arraySum(arrayFilter((v, n) -> n IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds'), \
             ProfileEvents.Values, ProfileEvents.Names)))) \
             FROM system.query_log WHERE type = 2 AND event_time >= toDateTime(?) AND event_time <= toDateTime(?) \
             GROUP BY kind",
        )
        .bind(from.timestamp())
        .bind(to.timestamp() + 1)
        .fetch_all()
        .await
        .ok()?;
    let mut out: Vec<Statement> = rows
        .into_iter()
        .map(|(kind, count, us)| Statement {
            kind,
            count,
            cpu_seconds: us as f64 / 1e6,
        })
        .collect();
    out.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    Some(out)
}

fn metric(proc: &Service, series: &str) -> Option<f64> {
    proc.get("/metrics")
        .and_then(|(_, body)| crate::metric_value(&body, series))
}

/// Waits until `proc` has accounted `n` rows and the ledger holds
/// `distinct` distinct events (a message read twice cannot end it early).
async fn drained(
    label: &str,
    proc: &Service,
    client: &clickhouse::Client,
    n: u64,
    distinct: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        // The processor's own counter, read ten times a second (a query on
        // ClickHouse that often would take CPU from what is measured).
        let done = metric(proc, "ensemble_processor_rows_inserted_total").unwrap_or(0.0) as u64;
        if done >= n {
            let in_ledger: u64 = client
                .query("SELECT uniqExact(event_id) FROM ledger WHERE tombstone = 0")
                .fetch_one()
                .await
                .unwrap_or(0);
            if in_ledger >= distinct {
                return Ok(());
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!("{label}:   {done} of {n} events accounted"));
            last_report = Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "{label}: the processor did not drain in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a broker under test offers the bench.
pub struct BrokerUnderTest<'a> {
    pub label: &'a str,
    pub brokers: String,
    pub pid: Option<u32>,
}

/// One broker and profile: the processor's run, then its floor.
pub async fn processor(
    broker: &BrokerUnderTest<'_>,
    profile: Profile,
    ch_url: &str,
    processor_bin: &Path,
    plan: ProcessorPlan,
) -> anyhow::Result<ProcessorResult> {
    let label = format!("{} {}", broker.label, profile.label());
    let brokers = broker.brokers.as_str();
    let topic = unique("bench_proc");
    create_topic(brokers, &topic, 3).await?;
    create_topic(brokers, &format!("{topic}.dlq"), 1).await?;
    let dir = tempfile::tempdir()?;
    let now = Utc::now();
    let campaign = match profile {
        Profile::Backfill => crate::campaign_file().display().to_string(),
        Profile::Live => {
            let today = now.with_timezone(&chrono_tz::Europe::Paris).date_naive();
            let path = dir.path().join("campaign.toml");
            let text = std::fs::read_to_string(crate::campaign_file())?;
            std::fs::write(&path, crate::live::live_campaign_toml(&text, today)?)?;
            path.display().to_string()
        }
    };
    let store = ensemble_core::StoreConfig::new(ch_url, unique("bench_proc"));
    ensemble_core::migrate::migrate(&store).await?;
    let client = store.client();
    let group = unique("bench_group");
    let encode = |ms: &[EventMessage]| -> Vec<(String, Vec<u8>)> {
        ms.iter()
            .map(|m| (m.visitor_id.clone(), m.encode()))
            .collect()
    };

    let batch_rows = plan.batch_max_rows.map(|n| n.to_string());
    let cache_events = plan.history_cache_events.map(|n| n.to_string());
    let mut extra: Vec<&str> = Vec::new();
    if let Some(n) = &batch_rows {
        extra.extend(["--batch-max-rows", n]);
    }
    if let Some(n) = &cache_events {
        extra.extend(["--history-cache-events", n]);
    }
    let wiring = |clickhouse_url| ProcessorWiring {
        bin: processor_bin,
        campaign: &campaign,
        brokers,
        topic: &topic,
        group: &group,
        clickhouse_url,
        database: &store.database,
    };
    let mut history = 0usize;
    if profile == Profile::Live {
        let earlier = encode(&history_messages(&plan, now));
        history = earlier.len();
        progress(&format!(
            "{label}: accounting {history} events of history first (not measured)"
        ));
        crate::produce_raw(brokers, &topic, &earlier).await?;
        let mut proc = wiring(ch_url).start(&extra)?;
        drained(&label, &proc, &client, history as u64, history as u64).await?;
        anyhow::ensure!(
            proc.terminate(Duration::from_secs(60)).is_some(),
            "{label}: the processor did not stop on SIGTERM within 60 s"
        );
    }

    let messages = match profile {
        Profile::Backfill => (0..plan.messages).map(backfill_message).collect(),
        Profile::Live => live_messages(&plan, now),
    };
    let encoded = encode(&messages);
    let kafka_bytes: u64 = encoded.iter().map(|(_, p)| p.len() as u64).sum();
    drop(messages);
    progress(&format!("{label}: producing {} messages", plan.messages));
    crate::produce_raw(brokers, &topic, &encoded).await?;
    drop(encoded);

    progress(&format!("{label}: raw consume"));
    let raw_consume_per_s = raw_consume(brokers, &topic, history + plan.messages).await?;
    progress(&format!(
        "{label}: raw consume {raw_consume_per_s:.0} msg/s"
    ));

    let recording = dir.path().join("inserts.bin");
    let logged_from = Utc::now();
    let recorder = Recorder::start(ch_url, &recording).await?;
    progress(&format!("{label}: processor draining the backlog"));
    let proc = wiring(&recorder.url).start(&extra)?;
    let clickhouse = clickhouse_pid();
    // As for the raw consumer, the clock starts at the first consumed
    // message: the group join is not the processor's work.
    poll_until(
        "the processor's first consumed message",
        Duration::from_secs(60),
        || {
            let n = metric(&proc, "ensemble_processor_messages_consumed_total");
            async move { n.filter(|n| *n > 0.0).map(|_| ()) }
        },
    )
    .await;
    let started = Instant::now();
    let before = cpu_mark(proc.pid(), clickhouse, broker.pid);
    drained(
        &label,
        &proc,
        &client,
        plan.messages as u64,
        (history + plan.messages) as u64,
    )
    .await?;
    let processor_per_s = plan.messages as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu_between(before, cpu_mark(proc.pid(), clickhouse, broker.pid));
    let peak_rss_mb = peak_rss_mb(proc.pid());
    // Where the batches' visitors' histories came from (the cache starts
    // empty: the history was accounted by an earlier process).
    let sources: Vec<String> = ["cache", "batch_before", "ledger", "new"]
        .iter()
        .map(|s| {
            let series = format!("ensemble_processor_history_visitors_total{{source=\"{s}\"}}");
            format!("{s} {:.0}", metric(&proc, &series).unwrap_or(0.0))
        })
        .collect();
    progress(&format!(
        "{label}: the batches' visitors' histories from {}",
        sources.join(", ")
    ));
    drop(proc);
    let logged_to = Utc::now();
    let (recorded, recording) = recorder.finish()?;
    let distinct: u64 = client
        .query("SELECT uniqExact(event_id) FROM events")
        .fetch_one()
        .await?;
    anyhow::ensure!(
        distinct == (history + plan.messages) as u64,
        "{label}: the processor stored {distinct} distinct events of {}",
        history + plan.messages
    );

    progress(&format!(
        "{label}: {processor_per_s:.0} events/s; replaying its {} INSERTs into a fresh database",
        recorded.inserts
    ));
    let floor = ensemble_core::StoreConfig::new(ch_url, unique("bench_floor"));
    ensemble_core::migrate::migrate(&floor).await?;
    // With the views the processor makes at start-up (the figures summed
    // by range), as on the processor's own database.
    ensemble_core::ranges::ensure(
        &floor,
        &ensemble_core::Campaign::load(Path::new(&campaign))?,
    )
    .await?;
    let ch_before = clickhouse.and_then(cpu_seconds);
    let seconds = replay(&recording, ch_url, &store.database, &floor.database).await?;
    let floor_clickhouse_cpu = ch_before.and_then(|b| Some(clickhouse.and_then(cpu_seconds)? - b));
    let floor_per_s = plan.messages as f64 / seconds;
    progress(&format!("{label}: floor {floor_per_s:.0} events/s"));
    let written = written(&floor).await?;
    let statements = statements(&store, logged_from, logged_to).await;

    // `ENSEMBLE_BENCH_KEEP=1` keeps both databases, to look into what was
    // written (the ledger's carried sets, the parts).
    let keep = std::env::var("ENSEMBLE_BENCH_KEEP").is_ok_and(|v| v == "1");
    if keep {
        progress(&format!(
            "{label}: kept databases {} (processor) and {} (floor)",
            store.database, floor.database
        ));
    }
    for s in [&store, &floor].into_iter().filter(|_| !keep) {
        for db in [s.database.clone(), s.sql_database()] {
            s.server_client()
                .query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute()
                .await?;
        }
    }
    Ok(ProcessorResult {
        broker: broker.label.to_owned(),
        profile,
        events: plan.messages,
        raw_consume_per_s,
        processor_per_s,
        floor_per_s,
        cpu,
        floor_clickhouse_cpu,
        written,
        statements,
        inserts: recorded.inserts,
        wire_bytes: recorded.body_bytes,
        kafka_bytes,
        peak_rss_mb,
    })
}

/// A report row: the run's broker and profile, then `cells`.
fn table_row<S: AsRef<str>, const N: usize>(r: &ProcessorResult, cells: [S; N]) -> String {
    let mut row = format!("| {} | {} |", r.broker, r.profile.label());
    for c in &cells {
        row.push(' ');
        row.push_str(c.as_ref());
        row.push_str(" |");
    }
    row.push('\n');
    row
}

fn per_event_us(seconds: Option<f64>, events: usize) -> String {
    seconds.map_or("n/a".to_owned(), |s| {
        format!("{:.0}", s * 1e6 / events as f64)
    })
}

/// Targets on the 2-core box, live profile.
fn target_per_s(broker: &str) -> f64 {
    if broker.contains("memory") {
        40_000.0
    } else {
        25_000.0
    }
}

pub fn processor_report(results: &[ProcessorResult], plan: &ProcessorPlan) -> String {
    let mut out = String::from("## processor\n\n");
    out.push_str(&format!(
        "{} events per run ({}), in a 3-partition topic, drained by the release processor from start-up \
         (group join excluded: the clock starts at its first consumed message) until every event is \
         in the ledger. *backfill*: imported events over 60 days, one per visitor. *live*: events of the \
         last few minutes, ~3.3 per visitor, five in six visitors with a history accounted before the clock. \
         *floor*: ClickHouse alone replaying, one at a time and in order, the exact INSERTs the processor \
         sent (recorded by a proxy in front of ClickHouse) into a fresh database. CPU from `/proc` between \
         the first consumed and the last accounted event. Rows and bytes: ClickHouse's new parts \
         (`system.part_log`) in the floor's database, every table and view target. Targets (live): \
         ≥ 40 000 events/s in memory, ≥ 25 000 durable, ≥ 0.70 of the floor, ≤ 300 MB.\n\n",
        plan.messages,
        match plan.batch_max_rows {
            Some(n) => format!("`--batch-max-rows {n}`"),
            None => "the processor's default batch size".to_owned(),
        }
    ));
    out.push_str(
        "| broker | profile | processor events/s | floor events/s | ÷ floor | raw consume msg/s | peak RSS MB |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        let ratio = r.processor_per_s / r.floor_per_s;
        let live = r.profile == Profile::Live;
        let mark = |ok: bool| {
            if !live {
                ""
            } else if ok {
                " ✓"
            } else {
                " ✗"
            }
        };
        out.push_str(&format!(
            "| {} | {} | {:.0}{} | {:.0} | {:.2}{} | {:.0} | {:.0}{} |\n",
            r.broker,
            r.profile.label(),
            r.processor_per_s,
            mark(r.processor_per_s >= target_per_s(&r.broker)),
            r.floor_per_s,
            ratio,
            mark(ratio >= 0.7),
            r.raw_consume_per_s,
            r.peak_rss_mb,
            mark(r.peak_rss_mb <= 300.0),
        ));
    }
    out.push_str(
        "\nCPU µs per event (the recorder is the bench's proxy, not part of the product):\n\n\
         | broker | profile | processor | ClickHouse | broker | total | ClickHouse in the floor | recorder |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        let total = r
            .cpu
            .clickhouse
            .zip(r.cpu.broker)
            .map(|(c, b)| c + b + r.cpu.processor);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.broker,
            r.profile.label(),
            per_event_us(Some(r.cpu.processor), r.events),
            per_event_us(r.cpu.clickhouse, r.events),
            per_event_us(r.cpu.broker, r.events),
            per_event_us(total, r.events),
            per_event_us(r.floor_clickhouse_cpu, r.events),
            per_event_us(Some(r.cpu.recorder), r.events),
        ));
    }
    out.push_str(
        "\nWritten per event (target ≤ 3 rows): INSERT requests, bytes sent to ClickHouse (LZ4 where \
         the client compresses) against the event's Kafka message, and rows and compressed bytes of new \
         parts per table:\n\n\
         | broker | profile | INSERTs per 1 000 events | wire bytes | Kafka bytes | rows | part bytes | rows by table |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in results {
        let n = r.events as f64;
        let (rows, bytes, tables) = match &r.written {
            Some(w) => (
                format!("{:.2}", w.iter().map(|t| t.rows).sum::<u64>() as f64 / n),
                format!("{:.0}", w.iter().map(|t| t.bytes).sum::<u64>() as f64 / n),
                w.iter()
                    .map(|t| format!("{} {:.2}", t.table, t.rows as f64 / n))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => (
                "n/a".into(),
                "n/a".into(),
                "no system.part_log on this server".into(),
            ),
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {} | {} | {} |\n",
            r.broker,
            r.profile.label(),
            r.inserts as f64 * 1000.0 / n,
            r.wire_bytes as f64 / n,
            r.kafka_bytes as f64 / n,
            rows,
            bytes,
            tables,
        ));
    }
    out.push_str(
        "\nClickHouse's time per table in the floor (`system.part_log`, µs per event, one thread \
         each): writing the new parts (a view's under the table it fills) and merging parts \
         until the replay ended; merges due later are not counted, so the split between tables is \
         the point, not the total:\n\n\
         | broker | profile | new parts | merges | by table (new parts + merges) |\n\
         | --- | --- | ---: | ---: | --- |\n",
    );
    for r in results {
        let Some(w) = &r.written else {
            out.push_str(&table_row(
                r,
                ["n/a", "n/a", "no system.part_log on this server"],
            ));
            continue;
        };
        let us = |ms: u64| ms as f64 * 1000.0 / r.events as f64;
        let mut by_cost: Vec<&Written> = w.iter().collect();
        by_cost.sort_by_key(|t| std::cmp::Reverse(t.new_part_ms + t.merge_ms));
        out.push_str(&table_row(
            r,
            [
                format!("{:.1}", us(w.iter().map(|t| t.new_part_ms).sum())),
                format!("{:.1}", us(w.iter().map(|t| t.merge_ms).sum())),
                by_cost
                    .iter()
                    .filter(|t| t.new_part_ms + t.merge_ms > 0)
                    .map(|t| {
                        format!(
                            "{} {:.1} + {:.1}",
                            t.table,
                            us(t.new_part_ms),
                            us(t.merge_ms)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
        ));
    }
    out.push_str(
        "\nClickHouse's CPU per statement the processor sent (`system.query_log`, µs per event, from \
         its start to its last accounted event; merges run beside them and are not statements):\n\n\
         | broker | profile | statements | by kind (how many): µs per event |\n\
         | --- | --- | ---: | --- |\n",
    );
    for r in results {
        let Some(st) = &r.statements else {
            out.push_str(&table_row(
                r,
                [
                    "n/a",
                    "no system.query_log on this server (or not in 18.16's layout)",
                ],
            ));
            continue;
        };
        let us = |s: f64| s * 1e6 / r.events as f64;
        out.push_str(&table_row(
            r,
            [
                format!("{:.1}", us(st.iter().map(|s| s.cpu_seconds).sum())),
                st.iter()
                    .filter(|s| us(s.cpu_seconds) >= 0.05)
                    .map(|s| format!("{} ({}): {:.1}", s.kind, s.count, us(s.cpu_seconds)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
        ));
    }
    out
}
