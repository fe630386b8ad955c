//! The processor against the real broker and ClickHouse: exact counts under
//! replays, a SIGKILL mid-stream, a ClickHouse outage, and poison messages.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ensemble_core::event::{Consent, EventMessage, EventType, TinderAction, Utm, SCHEMA_VERSION};
use ensemble_core::privacy::ContactHasher;
use ensemble_core::StoreConfig;
use ensemble_tests::{
    campaign_file, create_topic, group_progress, kafka_brokers, metric_value, migrated_database,
    poll_until, produce_raw, run_binary, unique, PrivateClickHouse, Service,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_ensemble-processor");
const SECRET: &str = "processor-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(120);

/// A deterministic message: the same `i` and `seed` give the same event
/// (same event id), as a redelivery or a client retry would.
fn message(seed: u128, i: u32) -> EventMessage {
    let base = Utc
        .with_ymd_and_hms(2025, 1, 17, 8, 0, 0)
        .single()
        .expect("ts");
    let ts: DateTime<Utc> = base + chrono::Duration::minutes(i64::from(i) * 7);
    let kind = i % 4;
    EventMessage {
        v: SCHEMA_VERSION,
        event_id: Uuid::from_u128(seed << 32 | u128::from(i)),
        event_type: match kind {
            0 => EventType::QrScan,
            1 => EventType::PageView,
            2 => EventType::TinderCard,
            _ => EventType::Signup,
        },
        ts,
        received_at: ts + chrono::Duration::seconds(1),
        ts_clamped: false,
        imported: true,
        visitor_id: format!("v_visitor_{:05}", i % 997),
        placement: (kind == 0)
            .then(|| ["M-CHATELET", "G-NATIONAL", "A-NATIONAL-1"][(i as usize / 4) % 3].to_owned()),
        utm: Utm {
            source: (kind == 1).then(|| "tinder".to_owned()),
            ..Utm::default()
        },
        url: None,
        referrer_host: None,
        user_agent: Some(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Mobile/15E148".into(),
        ),
        bot: false,
        repeat: false,
        action: (kind == 2).then_some(TinderAction::Impression),
        contact_hash: (kind == 3).then(|| format!("{:064x}", i)),
        consent: (kind == 3).then_some(Consent {
            results: true,
            newsletter: false,
        }),
        custom_name: None,
        props: Default::default(),
    }
}

fn encoded(messages: &[EventMessage]) -> Vec<(String, Vec<u8>)> {
    messages
        .iter()
        .map(|m| (m.visitor_id.clone(), m.encode()))
        .collect()
}

struct Setup {
    brokers: String,
    topic: String,
    dlq: String,
    group: String,
    store: StoreConfig,
}

async fn setup(store: StoreConfig) -> Setup {
    let brokers = kafka_brokers();
    let topic = unique("proc");
    let dlq = format!("{topic}.dlq");
    create_topic(&brokers, &topic, 3).await.expect("topic");
    create_topic(&brokers, &dlq, 1).await.expect("dlq topic");
    Setup {
        brokers,
        topic,
        dlq,
        group: unique("g_proc"),
        store,
    }
}

impl Setup {
    fn start(&self, extra: &[&str]) -> Service {
        self.start_on(&self.store.url, extra)
    }

    /// A processor that reaches ClickHouse at `clickhouse_url`.
    fn start_on(&self, clickhouse_url: &str, extra: &[&str]) -> Service {
        let campaign = campaign_file().display().to_string();
        let mut args = vec![
            "--campaign",
            &campaign,
            "--kafka-brokers",
            &self.brokers,
            "--kafka-topic",
            &self.topic,
            "--kafka-dlq-topic",
            &self.dlq,
            "--group-id",
            &self.group,
            "--clickhouse-url",
            clickhouse_url,
            "--clickhouse-database",
            &self.store.database,
        ];
        if !extra.contains(&"--flush-interval-ms") {
            args.extend_from_slice(&["--flush-interval-ms", "200"]);
        }
        args.extend_from_slice(extra);
        Service::start(BIN, &args, &[]).expect("start processor")
    }

    async fn uniq_events(&self) -> u64 {
        self.count("SELECT uniqExact(event_id) FROM events").await
    }

    /// The `table.column`s of both databases (tables, not views) holding
    /// `value` in a String column or an element of an Array(String) one:
    /// where a person's data could be left behind.
    async fn columns_holding(&self, value: &str) -> Vec<String> {
        let client = self.store.server_client();
        let columns: Vec<(String, String, String, String)> = client
            .query(
                "SELECT c.database, c.table, c.name, c.type FROM system.columns AS c \
                 ANY INNER JOIN (SELECT database, name AS table, engine FROM system.tables) AS t \
                 USING (database, table) \
                 WHERE c.database IN (?, ?) AND c.type IN ('String', 'Array(String)') \
                 AND t.engine NOT IN ('View', 'MaterializedView')",
            )
            .bind(&self.store.database)
            .bind(self.store.sql_database())
            .fetch_all()
            .await
            .expect("columns");
        assert!(columns.len() > 20, "{columns:?}");
        let mut found = Vec::new();
        for (db, table, column, ty) in columns {
            let test = if ty == "String" {
                "`{c}` = ?"
            } else {
                "has(`{c}`, ?)"
            }
            .replace("{c}", &column);
            let n: u64 = client
                .query(&format!("SELECT count() FROM {db}.{table} WHERE {test}"))
                .bind(value)
                .fetch_one()
                .await
                .expect("search");
            if n > 0 {
                found.push(format!("{table}.{column} ({n} rows)"));
            }
        }
        found
    }

    async fn count(&self, sql: &str) -> u64 {
        self.store
            .client()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or(u64::MAX)
    }

    /// Waits until ClickHouse holds `n` distinct events and the group has
    /// committed everything in the topic.
    async fn wait_for(&self, n: u64) {
        poll_until(
            &format!("{n} distinct events in ClickHouse"),
            WAIT,
            || async { (self.uniq_events().await == n).then_some(()) },
        )
        .await;
        poll_until(
            "committed offsets to reach the end of the topic",
            WAIT,
            || async {
                let (done, high) = group_progress(&self.brokers, &self.topic, &self.group)
                    .await
                    .ok()?;
                (done == high).then_some(())
            },
        )
        .await;
    }

    /// Per channel × phase × type, from the raw table (distinct ids) and from the rollup.
    async fn breakdowns(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Row {
            key: String,
            n: u64,
        }
        let raw: Vec<Row> = self
            .store
            .client()
            .query(
                "SELECT concat(channel, '/', phase, '/', event_type, '/', device_class) AS key, uniqExact(event_id) AS n \
                 FROM events GROUP BY key ORDER BY key",
            )
            .fetch_all()
            .await
            .expect("raw breakdown");
        let rollup: Vec<Row> = self
            .store
            .client()
            .query(
                "SELECT concat(channel, '/', phase, '/', event_type, '/', device_class) AS key, uniqExactMerge(events) AS n \
                 FROM events_hourly GROUP BY key ORDER BY key",
            )
            .fetch_all()
            .await
            .expect("rollup breakdown");
        (
            raw.into_iter().map(|r| (r.key, r.n)).collect(),
            rollup.into_iter().map(|r| (r.key, r.n)).collect(),
        )
    }
}

impl Setup {
    /// Reads `n` dead letters: (headers, original bytes) each.
    async fn dead_letters(&self, n: usize) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        let c: StreamConsumer = ensemble_core::KafkaConfig::new(&self.brokers, &self.dlq)
            .consumer_config(&unique("g_dlq"))
            .create()
            .expect("consumer");
        c.subscribe(&[&self.dlq]).expect("subscribe");
        let mut letters = Vec::new();
        while letters.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
                .await
                .expect("dead letter")
                .expect("recv");
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_owned(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            assert_eq!(headers["ensemble-source-topic"], self.topic);
            assert!(headers["ensemble-source-offset"].parse::<i64>().is_ok());
            letters.push((headers, m.payload().unwrap_or_default().to_vec()));
        }
        letters
    }

    /// Every event the figures count is in `events`, and the reverse: the
    /// ledger's event ids and the table's are the same set.
    async fn assert_figures_match_events(&self) {
        let only_ledger = self
            .count(
                "SELECT count() FROM ledger WHERE tombstone = 0 \
                 AND event_id NOT IN (SELECT event_id FROM events)",
            )
            .await;
        let only_events = self
            .count(
                "SELECT count() FROM (SELECT DISTINCT event_id FROM events) \
                 WHERE event_id NOT IN (SELECT event_id FROM ledger WHERE tombstone = 0)",
            )
            .await;
        assert_eq!(
            (only_ledger, only_events),
            (0, 0),
            "(events counted by the figures only, events in the table only)"
        );
        assert_eq!(
            self.count("SELECT count() FROM ledger WHERE tombstone = 0")
                .await,
            self.uniq_events().await,
            "each event accounted once"
        );
        // The figures summed by range (made by the processor at start)
        // follow the figures through kills, restarts and takeovers.
        let campaign = ensemble_core::Campaign::load(&campaign_file()).expect("campaign");
        if let Err(e) = ensemble_tests::summed_ranges_agree(&self.store, &campaign).await {
            panic!("figures_ranges disagrees with figures: {e}");
        }
    }
}

/// What the test data must give per channel/phase/type/device, computed here
/// from the messages themselves (placements and UTM tags of `message`).
fn expected_breakdown(messages: &[EventMessage]) -> BTreeMap<String, u64> {
    let campaign = ensemble_core::Campaign::load(&campaign_file()).expect("campaign");
    let mut out = BTreeMap::new();
    for m in messages {
        let channel =
            campaign.resolve_channel(m.placement.as_deref(), m.utm.source.as_deref(), None);
        let key = format!(
            "{channel}/{}/{}/mobile",
            campaign.phase_at(m.ts),
            m.event_type
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn n_events_in_n_counted_and_a_replay_changes_nothing() {
    let s = setup(migrated_database("it_proc_exact").await).await;
    let messages: Vec<_> = (0..3000).map(|i| message(1, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce");
    let _p = s.start(&[]);
    s.wait_for(3000).await;
    let (raw, rollup) = s.breakdowns().await;
    assert_eq!(
        raw,
        expected_breakdown(&messages),
        "enriched as the campaign file says"
    );
    assert_eq!(rollup, raw, "the hourly rollup agrees");

    // The same events again (a client retry, a replay): every row lands twice, no count moves.
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce again");
    poll_until("the replay to be inserted", WAIT, || async {
        let (done, high) = group_progress(&s.brokers, &s.topic, &s.group).await.ok()?;
        (done == high && high == 6000).then_some(())
    })
    .await;
    assert!(s.count("SELECT count() FROM events").await >= 3000);
    assert_eq!(s.uniq_events().await, 3000);
    assert_eq!(s.breakdowns().await, (raw.clone(), raw));
}

/// A database upgraded from a version that stored the figures elsewhere
/// (events, and a row in `rebuild_pending`): the processor does not account
/// anything on top of figures that leave the history out; it says what to
/// do and exits. `rebuild-facts` restores the figures, and then it runs.
#[tokio::test]
async fn after_an_upgrade_the_processor_waits_for_the_figures_rebuild() {
    let s = setup(migrated_database("it_proc_upgrade").await).await;
    let first: Vec<_> = (0..400).map(|i| message(21, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&first))
        .await
        .expect("produce");
    let mut p = s.start(&[]);
    s.wait_for(400).await;
    p.terminate(Duration::from_secs(20));
    let figures = facts_snapshot(&s.store).await;
    // What migrate leaves on a database written by 0003's version.
    for sql in [
        "TRUNCATE TABLE ledger",
        "TRUNCATE TABLE figures",
        "INSERT INTO rebuild_pending (reason, since) VALUES ('test: upgraded', now())",
    ] {
        s.store.client().query(sql).execute().await.expect(sql);
    }
    let more: Vec<_> = (400..600).map(|i| message(21, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&more))
        .await
        .expect("produce more");
    let mut refused = s.start(&[]);
    let status = refused
        .wait_exit(Duration::from_secs(30))
        .expect("the processor exits by itself");
    assert!(!status.success(), "{status:?}");
    assert_eq!(s.uniq_events().await, 400, "nothing consumed meanwhile");

    let campaign = campaign_file().display().to_string();
    let (code, stderr) = run_binary(
        BIN,
        &[
            "rebuild-facts",
            "--campaign",
            &campaign,
            "--clickhouse-url",
            &s.store.url,
            "--clickhouse-database",
            &s.store.database,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        facts_snapshot(&s.store).await,
        figures,
        "rebuilt as they were"
    );
    assert_eq!(s.count("SELECT count() FROM rebuild_pending").await, 0);
    let _p = s.start(&[]);
    s.wait_for(600).await;
    s.assert_figures_match_events().await;
}

/// 20 000 messages; the processor SIGKILLed once 2 000 rows are in, then
/// started again once: it resumes by itself within a minute and every
/// count is exact. Returns how long after the restart it consumed again.
async fn kill_mid_stream_and_restart(s: &Setup, seed: u128) -> Duration {
    let messages: Vec<_> = (0..20_000).map(|i| message(seed, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce");
    let mut p = s.start(&["--batch-max-rows", "500"]);
    poll_until("some batches inserted", WAIT, || async {
        let n = s.count("SELECT count() FROM events").await;
        (n != u64::MAX && n >= 2000).then_some(())
    })
    .await;
    p.kill();
    let at_kill = s.uniq_events().await;
    assert!(
        at_kill < 20_000,
        "killed mid-stream ({at_kill} of 20000 in)"
    );
    let restarted = std::time::Instant::now();
    let p2 = s.start(&["--batch-max-rows", "500"]);
    poll_until(
        "the restarted processor to consume",
        Duration::from_secs(60),
        || async {
            let (_, body) = p2.get("/metrics")?;
            metric_value(&body, "ensemble_processor_messages_consumed_total")
                .filter(|n| *n > 0.0)
                .map(|_| ())
        },
    )
    .await;
    let resumed = restarted.elapsed();
    s.wait_for(20_000).await;
    let (raw, rollup) = s.breakdowns().await;
    assert_eq!(raw, expected_breakdown(&messages));
    assert_eq!(rollup, raw);
    s.assert_figures_match_events().await;
    resumed
}

/// On librdkafka's mock cluster, which behaves as Apache Kafka does.
#[tokio::test]
async fn sigkill_mid_stream_then_restart_leaves_counts_exact() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let s = mock_setup(&cluster, "it_proc_kill").await;
    kill_mid_stream_and_restart(&s, 2).await;
    drop(cluster);
}

/// On the local broker (tansu 0.6.0), which may leave the restarted member
/// without a partition: the membership watchdog rejoins.
#[tokio::test]
async fn sigkill_mid_stream_then_one_restart_resumes_on_the_real_broker() {
    let s = setup(migrated_database("it_proc_kill_real").await).await;
    let resumed = kill_mid_stream_and_restart(&s, 9).await;
    eprintln!("resumed {resumed:?} after the restart");
}

/// The group's committed offsets are past the end of the topic (a broker
/// whose data was reset while the group kept its offsets): the lag reads as
/// such, not as 0 pending, and the processor rewinds and processes what the
/// topic holds.
#[tokio::test]
async fn committed_offsets_past_the_end_are_reported_and_the_processor_rewinds() {
    use ensemble_core::kafka::PartitionState;
    let s = setup(migrated_database("it_proc_ahead").await).await;
    let messages: Vec<_> = (0..300).map(|i| message(11, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce");
    // The group "remembers" offsets from before the reset.
    let c: rdkafka::consumer::BaseConsumer = ensemble_core::KafkaConfig::new(&s.brokers, &s.topic)
        .consumer_config(&s.group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&s.topic, p, rdkafka::Offset::Offset(50_000))
            .expect("offset");
    }
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit far ahead");
    drop(c);
    let lag =
        ensemble_core::kafka::group_lag(&s.brokers, &s.topic, &s.group, Duration::from_secs(5))
            .await
            .expect("lag");
    assert!(
        lag.partitions
            .iter()
            .all(|p| p.state() == PartitionState::AheadOfEnd),
        "{lag:?}"
    );
    assert!(!lag.up_to_date(), "0 pending, and not up to date: {lag:?}");
    // The dashboard says so too: on /api/live and in /metrics.
    let token = "processor-test-analyst-0123456789";
    let campaign = campaign_file().display().to_string();
    let dashboard = Service::start(
        &ensemble_tests::workspace_binary("ensemble-dashboard"),
        &[
            "--campaign",
            &campaign,
            "--analyst-tokens",
            token,
            "--kafka-brokers",
            &s.brokers,
            "--kafka-topic",
            &s.topic,
            "--processor-group",
            &s.group,
            "--clickhouse-url",
            &s.store.url,
            "--clickhouse-database",
            &s.store.database,
        ],
        &[],
    )
    .expect("dashboard");
    dashboard.wait_ready("dashboard", WAIT).await;
    let live = dashboard.get_json("/api/live", token);
    assert_eq!(
        live["pending_events"], 300,
        "the messages the topic holds, none of them processed (not 0): {live}"
    );
    assert_eq!(live["up_to_date"], false, "{live}");
    assert_eq!(live["partitions"]["ahead_of_end"], 3, "{live}");
    assert_eq!(
        live["lagging_partitions"][0]["state"], "ahead_of_end",
        "{live}"
    );
    poll_until("the dashboard's gauge", WAIT, || async {
        let (_, m) = dashboard.get("/metrics")?;
        (metric_value(&m, "ensemble_pipeline_partitions{state=\"ahead_of_end\"}") == Some(3.0))
            .then_some(())
    })
    .await;

    let p = s.start(&[]);
    poll_until(
        "the processor to rewind and take the 300 events",
        WAIT,
        || async { (s.uniq_events().await == 300).then_some(()) },
    )
    .await;
    s.wait_for(300).await;
    let lag =
        ensemble_core::kafka::group_lag(&s.brokers, &s.topic, &s.group, Duration::from_secs(5))
            .await
            .expect("lag");
    assert!(lag.up_to_date(), "{lag:?}");
    let live = dashboard.get_json("/api/live", token);
    assert_eq!(live["up_to_date"], true, "{live}");
    let (_, metrics) = p.get("/metrics").expect("metrics");
    assert_eq!(
        metric_value(&metrics, "ensemble_processor_rewinds_total"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(s.breakdowns().await.0, expected_breakdown(&messages));
}

/// Partitions each processor of the group consumed from, per its /metrics
/// (`ensemble_processor_consumer_lag_messages{partition=…}` is set for
/// assigned partitions).
fn assigned(p: &Service) -> Vec<String> {
    p.get("/metrics")
        .map(|(_, body)| {
            body.lines()
                .filter_map(|l| {
                    l.strip_prefix("ensemble_processor_consumer_lag_messages{partition=\"")
                })
                .filter_map(|rest| rest.split('"').next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Two processors in one group split the 3 partitions; while events flow,
/// `stop` takes one down and the other must end up owning every partition,
/// with every count exact.
async fn pair_takeover(s: Setup, seed: u128, stop: impl FnOnce(&mut Service)) -> String {
    let first: Vec<_> = (0..6_000).map(|i| message(seed, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&first))
        .await
        .expect("produce");
    let mut a = s.start(&["--batch-max-rows", "300"]);
    let b = s.start(&["--batch-max-rows", "300"]);
    // Both members hold partitions, none twice.
    let split = poll_until("the group to split the partitions", WAIT, || async {
        let (pa, pb) = (assigned(&a), assigned(&b));
        let mut all: Vec<String> = pa.iter().chain(&pb).cloned().collect();
        all.sort();
        all.dedup();
        (!pa.is_empty() && !pb.is_empty() && all.len() == 3 && pa.len() + pb.len() == 3)
            .then_some((pa, pb))
    })
    .await;
    s.wait_for(6_000).await;

    let second: Vec<_> = (6_000..20_000).map(|i| message(seed, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&second))
        .await
        .expect("produce more");
    stop(&mut a);
    poll_until("the survivor to own all three partitions", WAIT, || async {
        (assigned(&b).len() == 3).then_some(())
    })
    .await;
    s.wait_for(20_000).await;
    let all: Vec<_> = first.into_iter().chain(second).collect();
    let (raw, rollup) = s.breakdowns().await;
    assert_eq!(raw, expected_breakdown(&all), "split {split:?}");
    assert_eq!(rollup, raw);
    s.assert_figures_match_events().await;
    b.get("/metrics").map(|(_, m)| m).unwrap_or_default()
}

/// On the real broker: one member stops (SIGTERM: it leaves the group) and
/// the other takes over its partitions.
#[tokio::test]
async fn two_processors_share_the_partitions_and_one_takes_over_when_the_other_leaves() {
    let s = setup(migrated_database("it_proc_pair").await).await;
    pair_takeover(s, 6, |a| {
        assert!(
            a.terminate(Duration::from_secs(30))
                .is_some_and(|st| st.success()),
            "clean exit on SIGTERM"
        );
    })
    .await;
}

/// On the real broker: one member is SIGKILLed. tansu 0.6.0 drops it after
/// its session but starts no new generation, so its partitions wait; the
/// survivor's membership watchdog sees them wait with no consumer, leaves
/// and rejoins, and owns all three (see `membership.rs`).
#[tokio::test]
async fn when_one_of_two_processors_is_sigkilled_the_survivor_takes_over_on_the_real_broker() {
    let s = setup(migrated_database("it_proc_pair_kill_real").await).await;
    let metrics = pair_takeover(s, 10, Service::kill).await;
    assert!(
        metric_value(&metrics, "ensemble_processor_group_rejoins_total").is_some_and(|n| n >= 1.0),
        "the survivor rejoined: {metrics}"
    );
}

/// On the real broker: a member's figures INSERT is held on its way to
/// ClickHouse (a slow store) when a second member joins the group. The
/// partitions change hands only once that INSERT has landed and its
/// offsets are committed; the batch the member was filling is dropped and
/// read again by the new owner. Without that hand-over both members count
/// the held batch (the new owner reads the ledger before the held write).
#[tokio::test]
async fn a_member_joining_during_a_slow_insert_takes_over_without_counting_twice() {
    let s = setup(migrated_database("it_proc_handover").await).await;
    let upstream = s
        .store
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = ensemble_tests::hold::HoldingProxy::start(&upstream, b"INSERT INTO ledger (")
        .await
        .expect("proxy");
    let messages: Vec<_> = (0..2_100).map(|i| message(11, i)).collect();
    // Whole batches of 300, so that the held INSERT is the only one: the
    // member then keeps polling, and the rebalance reaches it meanwhile.
    let batch = ["--batch-max-rows", "300", "--flush-interval-ms", "5000"];
    produce_raw(&s.brokers, &s.topic, &encoded(&messages[..1_500]))
        .await
        .expect("produce");
    let slow = s.start_on(&proxy.url(), &batch);
    s.wait_for(1_500).await;
    poll_until("the first member to own every partition", WAIT, || async {
        (assigned(&slow).len() == 3).then_some(())
    })
    .await;

    proxy.hold(true);
    produce_raw(&s.brokers, &s.topic, &encoded(&messages[1_500..1_800]))
        .await
        .expect("produce one batch");
    poll_until(
        "the slow member's figures INSERT to be held",
        WAIT,
        || async { (proxy.held() > 0).then_some(()) },
    )
    .await;
    let joining = s.start(&batch);
    // The group rebalances while the INSERT is held: long enough for the
    // joining member to take partitions and count them if nothing waited.
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.hold(false);
    s.wait_for(1_800).await;
    poll_until("both members to hold partitions", WAIT, || async {
        let (a, b) = (assigned(&slow), assigned(&joining));
        (!a.is_empty() && !b.is_empty() && a.len() + b.len() == 3).then_some(())
    })
    .await;
    produce_raw(&s.brokers, &s.topic, &encoded(&messages[1_800..]))
        .await
        .expect("produce after the hand-over");
    s.wait_for(2_100).await;
    let (raw, rollup) = s.breakdowns().await;
    assert_eq!(raw, expected_breakdown(&messages));
    assert_eq!(rollup, raw);
    s.assert_figures_match_events().await;
    // The hand-over is what kept it exact: the slow member waited for its
    // held INSERT when the joining member took partitions.
    let metrics = slow.get("/metrics").map(|(_, m)| m).unwrap_or_default();
    assert!(
        metric_value(
            &metrics,
            "ensemble_processor_partitions_revoked_total{insert=\"waited\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

/// SIGKILL on librdkafka's mock cluster, which rebalances by itself after
/// the session timeout as Apache Kafka does: the survivor owns every
/// partition without rejoining, and the counts in the real ClickHouse are exact.
#[tokio::test]
async fn when_one_of_two_processors_is_sigkilled_the_other_takes_over_its_partitions() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let s = mock_setup(&cluster, "it_proc_pair_kill").await;
    let metrics = pair_takeover(s, 7, Service::kill).await;
    assert_eq!(
        metric_value(&metrics, "ensemble_processor_group_rejoins_total"),
        Some(0.0),
        "the broker's own rebalance comes first: {metrics}"
    );
    drop(cluster);
}

/// Topics on the mock cluster, a database on the real ClickHouse.
async fn mock_setup(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    database: &str,
) -> Setup {
    let topic = unique("proc_mock");
    let dlq = format!("{topic}.dlq");
    cluster.create_topic(&topic, 3, 1).expect("topic");
    cluster.create_topic(&dlq, 1, 1).expect("dlq");
    Setup {
        brokers: cluster.bootstrap_servers(),
        topic,
        dlq,
        group: unique("g_proc_mock"),
        store: migrated_database(database).await,
    }
}

#[tokio::test]
async fn clickhouse_down_for_30s_loses_nothing_and_the_lag_drains() {
    let mut ch = PrivateClickHouse::start().expect("private clickhouse");
    let store = StoreConfig::new(ch.url(), unique("it_proc_outage"));
    ensemble_core::migrate::migrate(&store)
        .await
        .expect("migrate");
    let s = setup(store).await;
    let first: Vec<_> = (0..1000).map(|i| message(3, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&first))
        .await
        .expect("produce");
    let p = s.start(&["--insert-retry-max-ms", "1000"]);
    s.wait_for(1000).await;

    ch.stop();
    let second: Vec<_> = (1000..2000).map(|i| message(3, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&second))
        .await
        .expect("produce during outage");
    // The outage itself lasts 30 s; meanwhile the processor must be failing its inserts.
    let outage = tokio::time::sleep(Duration::from_secs(30));
    poll_until("insert failures to show in /metrics", WAIT, || async {
        let (_, body) = p.get("/metrics")?;
        metric_value(&body, "ensemble_processor_insert_failures_total")
            .filter(|n| *n > 0.0)
            .map(|_| ())
    })
    .await;
    let (done, high) = group_progress(&s.brokers, &s.topic, &s.group)
        .await
        .expect("progress");
    assert!(
        done < high,
        "no offset moves while ClickHouse is down ({done} of {high})"
    );
    outage.await;
    ch.restart().expect("clickhouse back");
    s.wait_for(2000).await;
    let all: Vec<_> = first.into_iter().chain(second).collect();
    assert_eq!(s.breakdowns().await.0, expected_breakdown(&all));
}

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_topic_while_the_rest_flows() {
    let s = setup(migrated_database("it_proc_dlq").await).await;
    let good: Vec<_> = (0..200).map(|i| message(4, i)).collect();
    let mut v2 = serde_json::to_value(message(4, 9999)).expect("json");
    v2["v"] = serde_json::json!(2);
    let mut bad_visitor = message(4, 9998);
    bad_visitor.visitor_id = "no spaces allowed".into();
    let mut no_hash = message(4, 9997);
    no_hash.event_type = EventType::Signup;
    no_hash.contact_hash = None;
    let poison: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "k1".into(),
            b"\x00\xffnot json at all".to_vec(),
            "undecodable",
        ),
        (
            "k2".into(),
            serde_json::to_vec(&v2).expect("json"),
            "unsupported_version",
        ),
        ("k3".into(), bad_visitor.encode(), "invalid_visitor_id"),
        ("k4".into(), no_hash.encode(), "signup_without_contact_hash"),
    ];
    let mut all = encoded(&good[..100]);
    all.extend(poison.iter().map(|(k, p, _)| (k.clone(), p.clone())));
    all.extend(encoded(&good[100..]));
    produce_raw(&s.brokers, &s.topic, &all)
        .await
        .expect("produce");
    let p = s.start(&[]);
    s.wait_for(200).await;

    let letters: BTreeMap<String, Vec<u8>> = s
        .dead_letters(poison.len())
        .await
        .into_iter()
        .map(|(headers, payload)| (headers["ensemble-reason"].clone(), payload))
        .collect();
    for (_, payload, reason) in &poison {
        assert_eq!(
            letters.get(*reason),
            Some(payload),
            "{reason}: original bytes kept"
        );
    }
    let (_, metrics) = p.get("/metrics").expect("metrics");
    assert_eq!(
        metric_value(
            &metrics,
            "ensemble_processor_messages_dead_lettered_total{reason=\"undecodable\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// One batch of thousands with poison rows among them: times no column can
/// hold (caught before the INSERT) and a row a rule of the schema refuses
/// (found by splitting the INSERT). The poison goes to the dead-letter
/// topic with its bytes, every other row is written and counted once by the
/// figures, the offsets move on and later events flow.
#[tokio::test]
async fn poison_rows_in_a_big_batch_are_dead_lettered_and_the_rest_is_written() {
    let s = setup(migrated_database("it_proc_poison").await).await;
    // A rule of this test's schema: ClickHouse itself refuses the row (an
    // INSERT containing it fails as a whole), as a CONSTRAINT would on
    // current releases.
    s.store
        .client()
        .query("ALTER TABLE events ADD COLUMN guard UInt8 MATERIALIZED throwIf(custom_name = 'poison_pill')")
        .execute()
        .await
        .expect("schema rule");

    let mut good: Vec<_> = (0..6_000).map(|i| message(8, i)).collect();
    // A backfill spread over 26 years of months: one INSERT could not take
    // it on current ClickHouse (at most 100 partitions per INSERT).
    for (k, m) in good.iter_mut().take(312).enumerate() {
        m.ts = Utc
            .with_ymd_and_hms(2000 + (k / 12) as i32, (k % 12) as u32 + 1, 3, 10, 0, 0)
            .single()
            .expect("ts");
        m.received_at = m.ts + chrono::Duration::seconds(1);
    }
    let at = |y: i32| Utc.with_ymd_and_hms(y, 5, 1, 0, 0, 0).single().expect("ts");
    let mut year_1960 = message(8, 100_000);
    (year_1960.ts, year_1960.event_type, year_1960.placement) =
        (at(1960), EventType::PageView, None);
    let mut year_2150 = message(8, 100_001);
    (year_2150.ts, year_2150.event_type, year_2150.placement) =
        (at(2150), EventType::PageView, None);
    let mut pill = message(8, 100_002);
    pill.event_type = EventType::Custom;
    pill.custom_name = Some("poison_pill".into());
    (pill.placement, pill.contact_hash, pill.consent, pill.action) = (None, None, None, None);
    let poison = [
        (year_1960, "out_of_range"),
        (year_2150, "out_of_range"),
        (pill, "refused_by_store"),
    ];
    let mut all = encoded(&good[..2_000]);
    all.push((poison[0].0.visitor_id.clone(), poison[0].0.encode()));
    all.extend(encoded(&good[2_000..4_000]));
    all.push((poison[1].0.visitor_id.clone(), poison[1].0.encode()));
    all.push((poison[2].0.visitor_id.clone(), poison[2].0.encode()));
    all.extend(encoded(&good[4_000..]));
    produce_raw(&s.brokers, &s.topic, &all)
        .await
        .expect("produce");
    let p = s.start(&["--batch-max-rows", "10000", "--flush-interval-ms", "2000"]);
    s.wait_for(6_000).await;

    let mut letters: Vec<(String, Vec<u8>)> = s
        .dead_letters(poison.len())
        .await
        .into_iter()
        .map(|(h, payload)| (h["ensemble-reason"].clone(), payload))
        .collect();
    letters.sort();
    let mut want: Vec<(String, Vec<u8>)> = poison
        .iter()
        .map(|(m, reason)| ((*reason).to_owned(), m.encode()))
        .collect();
    want.sort();
    assert_eq!(
        letters, want,
        "each poison message dead-lettered with its own bytes"
    );
    assert_eq!(
        s.count("SELECT count() FROM events WHERE custom_name = 'poison_pill'")
            .await,
        0
    );
    let (raw, rollup) = s.breakdowns().await;
    assert_eq!(raw, expected_breakdown(&good), "every other row, once");
    assert_eq!(rollup, raw);
    s.assert_figures_match_events().await;
    let (_, metrics) = p.get("/metrics").expect("metrics");
    for (reason, n) in [("out_of_range", 2.0), ("refused_by_store", 1.0)] {
        assert_eq!(
            metric_value(
                &metrics,
                &format!("ensemble_processor_messages_dead_lettered_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason}"
        );
    }

    // Later events flow.
    let later: Vec<_> = (6_000..7_000).map(|i| message(8, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&later))
        .await
        .expect("produce later");
    s.wait_for(7_000).await;
    s.assert_figures_match_events().await;
}

#[tokio::test]
async fn erasure_removes_a_contacts_visitors_and_retention_drops_old_months() {
    let s = setup(migrated_database("it_proc_erase").await).await;
    let hasher = ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let mut messages: Vec<_> = (0..400).map(|i| message(5, i)).collect();
    // Visitor v_visitor_00004 (no other sign-up) signs up as jeanne; all of that visitor's rows must go.
    let target = "v_visitor_00004";
    let mut signup = message(5, 100_000);
    signup.event_type = EventType::Signup;
    signup.visitor_id = target.into();
    signup.contact_hash = Some(hasher.contact_hash("Jeanne.Dupont@example.fr"));
    signup.action = None;
    signup.placement = None;
    messages.push(signup);
    // One old event for retention.
    let mut old = message(5, 100_001);
    old.ts = Utc
        .with_ymd_and_hms(2020, 3, 1, 12, 0, 0)
        .single()
        .expect("ts");
    messages.push(old);
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce");
    {
        // Stopped with SIGTERM: it leaves the group, so the processor
        // started for the later batch gets the partitions at once (a
        // killed member stays in tansu's group until the survivors'
        // 30 s watchdog).
        let mut p = s.start(&[]);
        s.wait_for(402).await;
        p.terminate(Duration::from_secs(10));
    }
    let targets_rows = messages.iter().filter(|m| m.visitor_id == target).count() as u64;
    assert!(targets_rows > 1);

    let common = [
        "--campaign",
        &campaign_file().display().to_string(),
        "--clickhouse-url",
        &s.store.url,
        "--clickhouse-database",
        &s.store.database,
    ]
    .map(str::to_owned);
    let mut args: Vec<&str> = vec!["erase", "--email", " jeanne.dupont@EXAMPLE.fr "];
    args.extend(common.iter().map(String::as_str));
    let (code, stderr) = run_binary(BIN, &args, &[]);
    assert_eq!(
        code,
        Some(2),
        "erase without the secret is refused: {stderr}"
    );
    assert!(stderr.contains("--contact-secret"));
    let out = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .env("ENSEMBLE_CONTACT_SECRET", SECRET)
        .output()
        .expect("erase");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 visitors (1 only theirs"), "{stdout}");
    assert!(
        stdout.contains(&format!("{targets_rows} rows deleted")),
        "{stdout}"
    );
    let sql = format!("SELECT count() FROM events WHERE visitor_id = '{target}'");
    assert_eq!(s.count(&sql).await, 0);
    // Nothing of the person anywhere: not their visitor id, not their
    // contact, in whatever column or array of whatever row.
    let hash = messages
        .iter()
        .find_map(|m| m.contact_hash.clone().filter(|_| m.visitor_id == target))
        .expect("the sign-up's contact");
    for value in [target, hash.as_str()] {
        assert_eq!(
            s.columns_holding(value).await,
            Vec::<String>::new(),
            "{value}"
        );
    }
    assert_eq!(s.uniq_events().await, 402 - targets_rows);
    let rollup = s
        .count("SELECT uniqExactMerge(events) FROM events_hourly")
        .await;
    assert_eq!(
        rollup,
        402 - targets_rows,
        "rollup rebuilt without the erased rows"
    );

    // Keep everything since 2024-01-01, whatever today is: 2025 stays, March 2020 goes.
    let days = (Utc::now().date_naive()
        - chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"))
    .num_days()
    .to_string();
    let mut args: Vec<&str> = vec!["retention", "--days", &days];
    args.extend(common.iter().map(String::as_str));
    let (code, _) = run_binary(BIN, &["retention", "--days", "0"], &[]);
    assert_eq!(code, Some(2), "zero days refused");
    // More days than the calendar holds (it panicked): nothing is that old.
    let mut ages: Vec<&str> = vec!["retention", "--days", "4000000000"];
    ages.extend(common.iter().map(String::as_str));
    let (code, stderr) = run_binary(BIN, &ages, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        s.count("SELECT count() FROM events WHERE toYear(ts) = 2020")
            .await,
        1
    );
    // The analysts' journeys hold the old event's rows (its touch).
    let journeys = |cond: &str| {
        format!(
            "SELECT count() FROM {}.journeys WHERE {cond}",
            s.store.sql_database()
        )
    };
    let old_rows = journeys(
        "(kind = 'placement_day' AND day < '2024-01-01') \
         OR (kind != 'placement_day' AND ms < 1704067200000)",
    );
    assert!(
        s.count(&old_rows).await > 0,
        "the old event's journeys rows"
    );
    let out = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .output()
        .expect("retention");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("dropped events partition 202003: 1 rows"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dropped events_hourly partition 202003"),
        "{stdout}"
    );
    assert_eq!(
        s.count("SELECT count() FROM events WHERE toYear(ts) = 2020")
            .await,
        0
    );
    assert_eq!(s.uniq_events().await, 401 - targets_rows);
    // Nor in the journeys once retention returns: the old event's rows
    // go, not only their sums (withdrawn, they would stay until ClickHouse
    // merged them), nor in the arrays other ledger rows carried.
    assert_eq!(s.count(&old_rows).await, 0, "old journeys rows deleted");
    let carried_old = "SELECT count() FROM ledger \
                       WHERE arrayExists(m -> m > 0 AND m < 1704067200000, journey.ms)";
    assert_eq!(s.count(carried_old).await, 0, "nor carried");
    // Only what summed to zero went: the figures and journeys equal those
    // rebuilt from the events left.
    let retained = facts_snapshot(&s.store).await;
    let mut args: Vec<&str> = vec!["rebuild-facts"];
    args.extend(common.iter().map(String::as_str));
    let (code, stderr) = run_binary(BIN, &args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        facts_snapshot(&s.store).await,
        retained,
        "as rebuilt from the events"
    );

    // `compact` (daily): each figures table in one part, the figures as
    // they were, and the arrays the ledger's rows carried to the figures
    // (those of a batch accounted after the retention's) emptied.
    let later: Vec<_> = (0..20).map(|i| message(6, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&later))
        .await
        .expect("produce");
    {
        let _p = s.start(&[]);
        s.wait_for(421 - targets_rows).await;
    }
    let carried = "SELECT count() FROM ledger WHERE arrayExists(x -> x != '', change.figure) \
                   OR arrayExists(x -> x != '', journey.visitor_id)";
    assert!(
        s.count(carried).await > 0,
        "the new batch's rows carry arrays"
    );
    let before = facts_snapshot(&s.store).await;
    let mut args: Vec<&str> = vec!["compact"];
    args.extend(common.iter().map(String::as_str));
    let out = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .output()
        .expect("compact");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for table in ensemble_core::ledger::FIGURES_TABLES {
        assert!(
            stdout.contains(&format!("{table} merged into one part")),
            "{stdout}"
        );
        let sql = format!(
            "SELECT count() FROM system.parts WHERE database = '{}' AND table = '{table}' AND active",
            s.store.database
        );
        // One part, or none for a table without rows (no sign-up of
        // these events has a path with a delay).
        let rows = s.count(&format!("SELECT count() FROM {table}")).await;
        assert_eq!(
            s.count(&sql).await,
            u64::from(rows > 0),
            "{table}: {rows} rows"
        );
        if table == ensemble_core::ranges::DELAYS_TABLE {
            // Its rows but the batch markers (rounding 0).
            let rows = s
                .count(&format!("SELECT count() FROM {table} WHERE rounding != 0"))
                .await;
            let delays = s
                .count("SELECT count() FROM figures_ranges WHERE figure = 'paths_delays'")
                .await;
            assert_eq!(rows > 0, delays > 0, "{rows} rows for {delays} delays");
        }
    }
    assert!(
        stdout.contains("ledger's carried arrays emptied"),
        "{stdout}"
    );
    assert_eq!(s.count(carried).await, 0, "no array left in the ledger");
    assert_eq!(facts_snapshot(&s.store).await, before, "the same figures");
}

/// The figures and the analysts' journeys as they stand: every key with a
/// non-zero sum, batch markers left out (`figures_snapshot`, without the
/// tables summed by range, which these tests compare on their own).
async fn facts_snapshot(store: &StoreConfig) -> BTreeMap<String, (i64, i64)> {
    let all = ensemble_tests::figures_snapshot(store).await;
    let part = |prefix: &str| -> BTreeMap<String, (i64, i64)> {
        all.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let (rows, journeys) = (part("figures|"), part("journeys|"));
    assert!(
        rows.is_empty() || !journeys.is_empty(),
        "figures without journeys rows"
    );
    rows.into_iter()
        .chain(journeys)
        .chain(part("later_conversions|"))
        .collect()
}

/// One event of a person in the erasure tests: `kind` by `visitor` at
/// `at` (a QR scan of M-CHATELET), a sign-up with `contact_hash` and its
/// consent when given.
fn person_event(
    id: u32,
    visitor: &str,
    kind: EventType,
    contact_hash: Option<String>,
    at: DateTime<Utc>,
) -> EventMessage {
    let mut m = message(12, id);
    m.visitor_id = visitor.into();
    m.event_type = kind;
    m.ts = at;
    m.received_at = at;
    m.placement = (kind == EventType::QrScan).then(|| "M-CHATELET".into());
    m.utm = Utm::default();
    m.action = None;
    m.consent = contact_hash.as_ref().map(|_| Consent {
        results: true,
        newsletter: false,
    });
    m.contact_hash = contact_hash;
    m
}

/// Erasure takes a person's rows and nobody else's: the visitor ids only
/// they used lose everything; a hashed id several people share behind one
/// network (same phone model, same day) and a device someone else also
/// signed up from lose only that person's rows. A person whose events
/// retention already dropped is still found through the contact pairs.
/// Run twice, nothing more changes; the figures equal a rebuild from what
/// is left.
#[tokio::test]
async fn erasure_takes_the_persons_rows_and_nobody_elses() {
    use ensemble_processor::maintenance;
    let s = setup(migrated_database("it_proc_erase_people").await).await;
    let campaign = ensemble_core::Campaign::load(&campaign_file()).expect("campaign");
    let hasher = ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let mut n = 0u32;
    let mut ev = |visitor: &str, kind: EventType, contact: Option<&str>, minutes: i64| {
        n += 1;
        let at = Utc
            .with_ymd_and_hms(2025, 2, 10, 9, 0, 0)
            .single()
            .expect("ts")
            + chrono::Duration::minutes(minutes);
        person_event(
            200_000 + n,
            visitor,
            kind,
            contact.map(|c| hasher.contact_hash(c)),
            at,
        )
    };
    let nat = "h_0123456789abcdef0123456789abcd"; // one phone model, one carrier address, one day
    let mut people = vec![
        // Alice: her own phone, and a sign-up from the shared hashed id.
        ev("v_alice_phone_001", EventType::QrScan, None, 0),
        ev("v_alice_phone_001", EventType::PageView, None, 1),
        ev(
            "v_alice_phone_001",
            EventType::Signup,
            Some("alice@exemple.fr"),
            2,
        ),
        ev(nat, EventType::PageView, None, 10),
        ev(nat, EventType::Signup, Some("alice@exemple.fr"), 11),
        // Bob, behind the same network with the same phone model.
        ev(nat, EventType::QrScan, None, 20),
        ev(nat, EventType::Signup, Some("bob@exemple.fr"), 21),
        // Chloé and Dan on one family tablet.
        ev("v_family_tablet_01", EventType::PageView, None, 30),
        ev(
            "v_family_tablet_01",
            EventType::Signup,
            Some("chloe@exemple.fr"),
            31,
        ),
        ev(
            "v_family_tablet_01",
            EventType::Signup,
            Some("dan@exemple.fr"),
            32,
        ),
    ];
    // Eve signed up in 2020: retention drops her month, her contact pairs stay.
    let mut old = ev(
        "v_eve_laptop_0001",
        EventType::Signup,
        Some("eve@exemple.fr"),
        0,
    );
    old.ts = Utc
        .with_ymd_and_hms(2020, 3, 1, 12, 0, 0)
        .single()
        .expect("ts");
    old.received_at = old.ts;
    people.push(old);
    let crowd: Vec<_> = (0..300).map(|i| message(12, i)).collect();
    let all: Vec<_> = crowd.iter().chain(&people).cloned().collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&all))
        .await
        .expect("produce");
    {
        let _p = s.start(&[]);
        s.wait_for(all.len() as u64).await;
    }
    // The processor made the view that sums the figures by range on this
    // empty database at start: it holds every value, summed per range.
    let summed = |when: &'static str| {
        let store = s.store.clone();
        let campaign = campaign.clone();
        async move {
            let n = ensemble_tests::summed_ranges_agree(&store, &campaign)
                .await
                .unwrap_or_else(|e| panic!("{when}: figures_ranges disagrees with figures: {e}"));
            assert!(n > 100, "{when}: only {n} values compared");
        }
    };
    assert_eq!(
        ensemble_core::ranges::state(&s.store.client())
            .await
            .expect("state")
            .map(|(_, whole)| whole),
        Some(true),
        "made whole at the processor's start"
    );
    summed("accounted").await;
    let days = (Utc::now().date_naive()
        - chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"))
    .num_days() as u32;
    maintenance::retention(&s.store, &campaign, days, WAIT)
        .await
        .expect("retention");
    let pairs = |contact: &str| {
        let hash = hasher.contact_hash(contact);
        let store = s.store.clone();
        async move {
            store
                .client()
                .query("SELECT (SELECT count() FROM contact_visitors WHERE contact_hash = ?) + (SELECT count() FROM shared_contacts WHERE contact_hash = ?)")
                .bind(&hash)
                .bind(&hash)
                .fetch_one::<u64>()
                .await
                .expect("pairs")
        }
    };
    assert!(
        pairs("eve@exemple.fr").await > 0,
        "retention left Eve's contact pairs"
    );
    // Alice signed up on her phone, then behind the shared id: the
    // analysts' views count her once, at her phone's sign-up, and no table
    // they read holds a contact hash.
    let sql_db = s.store.sql_database();
    let signups_of = |who: &str| {
        let sql = format!(
            "SELECT toString(event_id) FROM events WHERE contact_hash = '{}' ORDER BY ts",
            hasher.contact_hash(who)
        );
        let client = s.store.client();
        async move {
            client
                .query(&sql)
                .fetch_all::<String>()
                .await
                .expect("sign-ups")
        }
    };
    let alice = signups_of("alice@exemple.fr").await;
    assert_eq!(alice.len(), 2);
    let converted: Vec<String> = s
        .store
        .client()
        .query(&format!(
            "SELECT toString(signup_event_id) FROM {sql_db}.conversions \
             WHERE toString(signup_event_id) IN ('{}', '{}')",
            alice[0], alice[1]
        ))
        .fetch_all()
        .await
        .expect("conversions");
    assert_eq!(converted, [alice[0].clone()], "one conversion, her first");
    assert!(
        facts_snapshot(&s.store)
            .await
            .keys()
            .any(|k| k.starts_with("later_conversions|") && k.ends_with(&alice[1])),
        "her second sign-up is a later conversion"
    );
    let credited = s
        .count(&format!(
            "SELECT uniqExact(signup_event_id) FROM {sql_db}.credits \
             WHERE toString(signup_event_id) IN ('{}', '{}')",
            alice[0], alice[1]
        ))
        .await;
    assert_eq!(credited, 1, "credited once");
    let columns: Vec<String> = s
        .store
        .client()
        .query(&format!(
            "SELECT concat(table, '.', name) FROM system.columns WHERE database = '{sql_db}' \
             AND name LIKE '%contact%'"
        ))
        .fetch_all()
        .await
        .expect("columns");
    assert!(columns.is_empty(), "the analysts' tables hold {columns:?}");
    let mut erased_signups: BTreeMap<&str, String> = BTreeMap::new();
    for who in ["alice@exemple.fr", "chloe@exemple.fr", "eve@exemple.fr"] {
        // Eve's sign-up went with retention: none.
        let ids: Vec<String> = signups_of(who)
            .await
            .iter()
            .map(String::as_str)
            .chain(["ffffffff-ffff-ffff-ffff-ffffffffffff"])
            .map(|id| format!("toUUID('{id}')"))
            .collect();
        erased_signups.insert(who, ids.join(","));
    }
    let erase = |email: &'static str| {
        let sites = ensemble_core::Sites::one(campaign.clone(), s.store.clone());
        let hasher = hasher.clone();
        async move {
            maintenance::erase(&sites, &hasher, email, Duration::from_secs(120))
                .await
                .expect("erase")
        }
    };

    let eve = erase("eve@exemple.fr").await;
    assert_eq!(eve.own_visitors, vec!["v_eve_laptop_0001".to_owned()]);
    assert_eq!(
        pairs("eve@exemple.fr").await,
        0,
        "found after retention, pairs gone"
    );

    let alice = erase("alice@exemple.fr").await;
    assert_eq!(alice.own_visitors, vec!["v_alice_phone_001".to_owned()]);
    assert_eq!(alice.shared_visitors, vec![nat.to_owned()]);
    assert_eq!(
        alice.rows_deleted, 4,
        "her phone's three rows and her sign-up behind the NAT"
    );
    let chloe = erase("chloe@exemple.fr").await;
    assert!(chloe.own_visitors.is_empty());
    assert_eq!(chloe.shared_visitors, vec!["v_family_tablet_01".to_owned()]);
    assert_eq!(chloe.rows_deleted, 1);

    let count = |sql: &'static str| s.count(sql);
    assert_eq!(
        count("SELECT count() FROM events WHERE visitor_id = 'v_alice_phone_001'").await,
        0
    );
    let sql = format!(
        "SELECT count() FROM {}.journeys WHERE visitor_id = 'v_alice_phone_001'",
        s.store.sql_database()
    );
    assert_eq!(s.count(&sql).await, 0, "her phone's journeys rows gone");
    // Bob's conversion stays, behind the shared id.
    let sql = format!(
        "SELECT count() FROM {}.conversions WHERE visitor_id = '{nat}'",
        s.store.sql_database()
    );
    assert_eq!(s.count(&sql).await, 1, "Bob's conversion stays");
    let gone = ["alice@exemple.fr", "chloe@exemple.fr", "eve@exemple.fr"];
    for who in gone {
        let h = hasher.contact_hash(who);
        let sql = format!(
            "SELECT (SELECT count() FROM events WHERE contact_hash = '{h}') + \
             (SELECT count() FROM ledger WHERE ev_contact = '{h}') + \
             (SELECT count() FROM contact_visitors WHERE contact_hash = '{h}') + \
             (SELECT count() FROM shared_contacts WHERE contact_hash = '{h}') + \
             (SELECT count() FROM {sql}.journeys WHERE event_id IN ({signups})) + \
             (SELECT count() FROM {sql}.later_conversions WHERE event_id IN ({signups}))",
            sql = s.store.sql_database(),
            signups = erased_signups[who]
        );
        assert_eq!(s.count(&sql).await, 0, "{who}: nothing left anywhere");
    }
    // Nobody else's rows went: Bob's and Dan's sign-ups, the shared ids' views.
    for who in ["bob@exemple.fr", "dan@exemple.fr"] {
        let h = hasher.contact_hash(who);
        let sql = format!("SELECT count() FROM events WHERE contact_hash = '{h}'");
        assert_eq!(s.count(&sql).await, 1, "{who}'s sign-up stays");
        assert!(pairs(who).await > 0, "{who}'s contact pair stays");
    }
    let sql = format!("SELECT uniqExact(event_id) FROM events WHERE visitor_id = '{nat}'");
    assert_eq!(
        s.count(&sql).await,
        3,
        "the shared id keeps Bob's scan and sign-up and the view"
    );
    assert_eq!(
        count("SELECT uniqExact(event_id) FROM events WHERE visitor_id = 'v_family_tablet_01'")
            .await,
        2
    );
    let crowd_ids = s.uniq_events().await;
    assert_eq!(crowd_ids, 300 + 5, "the crowd untouched");
    s.assert_figures_match_events().await;

    // Again: nothing more to do, nothing changes.
    let figures = facts_snapshot(&s.store).await;
    let again = erase("alice@exemple.fr").await;
    assert_eq!(again.rows_deleted, 0, "{again:?}");
    assert_eq!(
        facts_snapshot(&s.store).await,
        figures,
        "a second run changes no figure"
    );
    summed("erased").await;
    // And the figures are what a rebuild from the rows left gives.
    ensemble_core::ledger::rebuild(&s.store, &campaign, |_| {})
        .await
        .expect("rebuild");
    assert_eq!(facts_snapshot(&s.store).await, figures, "withdrawn exactly");
    summed("rebuilt").await;
    // Summed anew from the figures as they are (`rebuild-ranges`).
    assert_eq!(
        ensemble_core::ranges::refill(&s.store, &campaign)
            .await
            .expect("refill"),
        ensemble_core::ranges::Status::Whole
    );
    summed("refilled").await;
}

/// With last year's campaign beside this year's, in its own database:
/// Alice signed up last year and came back this year without signing up
/// again (the same phone). Erasing her e-mail removes her rows from both
/// databases — this year's found through last year's sign-up — and leaves
/// Bob's, in both, as they were.
#[tokio::test]
async fn erasure_covers_every_campaign_and_nobody_elses() {
    use ensemble_processor::maintenance;
    let s = setup(migrated_database("it_proc_erase_years").await).await;
    let last_store = migrated_database("it_proc_erase_years_last").await;
    let dir = tempfile::tempdir().expect("dir");
    let last_file = dir.path().join("2024.toml");
    let text = std::fs::read_to_string(campaign_file()).expect("campaign");
    std::fs::write(
        &last_file,
        ensemble_tests::live::moved_campaign_toml(&text, -364, "vivre-ensemble-2024")
            .expect("last year"),
    )
    .expect("write");
    let also = format!("{}={}", last_file.display(), last_store.database);
    let hasher = ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let mut n = 0u32;
    let mut ev = |visitor: &str, kind: EventType, contact: Option<&str>, year: i32| {
        n += 1;
        let at = Utc
            .with_ymd_and_hms(year, 2, 12, 9, 0, 0)
            .single()
            .expect("ts")
            + chrono::Duration::minutes(i64::from(n));
        person_event(
            300_000 + n,
            visitor,
            kind,
            contact.map(|c| hasher.contact_hash(c)),
            at,
        )
    };
    let people = vec![
        ev("v_alice_phone_001", EventType::QrScan, None, 2024),
        ev(
            "v_alice_phone_001",
            EventType::Signup,
            Some("alice@exemple.fr"),
            2024,
        ),
        ev("v_alice_phone_001", EventType::QrScan, None, 2025),
        ev("v_alice_phone_001", EventType::PageView, None, 2025),
        ev("v_bob_phone_00001", EventType::QrScan, None, 2024),
        ev("v_bob_phone_00001", EventType::QrScan, None, 2025),
        ev(
            "v_bob_phone_00001",
            EventType::Signup,
            Some("bob@exemple.fr"),
            2025,
        ),
    ];
    produce_raw(&s.brokers, &s.topic, &encoded(&people))
        .await
        .expect("produce");
    let rows = |store: StoreConfig, visitor: &'static str| async move {
        // A tombstone (no event, no contact) marks where her ledger ended.
        let sql = "SELECT (SELECT count() FROM events WHERE visitor_id = ?) \
                   + (SELECT count() FROM ledger WHERE visitor_id = ? AND tombstone = 0)";
        store
            .client()
            .query(sql)
            .bind(visitor)
            .bind(visitor)
            .fetch_one::<u64>()
            .await
            .expect("count")
    };
    {
        let _p = s.start(&["--also-campaign", &also]);
        poll_until("both years' events in their databases", WAIT, || async {
            let now = rows(s.store.clone(), "v_alice_phone_001").await;
            let then = rows(last_store.clone(), "v_alice_phone_001").await;
            // Each event once in `events` and once in the ledger.
            (now == 4 && then == 4).then_some(())
        })
        .await;
        poll_until("Bob's too", WAIT, || async {
            let now = rows(s.store.clone(), "v_bob_phone_00001").await;
            let then = rows(last_store.clone(), "v_bob_phone_00001").await;
            (now == 4 && then == 2).then_some(())
        })
        .await;
    }
    let sites = ensemble_core::Sites::load(&campaign_file(), &s.store, std::slice::from_ref(&also))
        .expect("sites");
    let report = maintenance::erase(&sites, &hasher, "alice@exemple.fr", WAIT)
        .await
        .expect("erase");
    assert_eq!(report.own_visitors, vec!["v_alice_phone_001".to_owned()]);
    // The ledger's rows before her tombstone go by a mutation (reads skip
    // them meanwhile).
    poll_until("Alice gone from both years", WAIT, || async {
        let now = rows(s.store.clone(), "v_alice_phone_001").await;
        let then = rows(last_store.clone(), "v_alice_phone_001").await;
        (now == 0 && then == 0).then_some(())
    })
    .await;
    assert_eq!(rows(s.store.clone(), "v_bob_phone_00001").await, 4);
    assert_eq!(rows(last_store.clone(), "v_bob_phone_00001").await, 2);
}
