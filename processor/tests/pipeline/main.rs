//! The processor against the real broker and ClickHouse: the harness here,
//! the tests by job in `consuming`, `rebalancing` and `maintenance`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ensemble_core::event::{Consent, EventMessage, EventType, TinderAction, Utm, SCHEMA_VERSION};
use ensemble_core::StoreConfig;
use ensemble_model::privacy::ContactHasher;
use ensemble_tests::{
    campaign_file, create_topic, group_progress, kafka_brokers, metric_value, migrated_database,
    poll_until, produce_raw, run_binary, unique, PrivateClickHouse, Service,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

mod consuming;
mod maintenance;
mod rebalancing;

const BIN: &str = env!("CARGO_BIN_EXE_ensemble-processor");
const SECRET: &str = "processor-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(300);

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

    /// Per channel × phase × type × device, from the raw table (distinct ids).
    async fn breakdown(&self) -> BTreeMap<String, u64> {
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
        raw.into_iter().map(|r| (r.key, r.n)).collect()
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

/// The figures and the analysts' journeys as they stand: every key with a
/// non-zero sum, batch markers left out (`figures_snapshot`, without the
/// tables summed by range, which these tests compare on their own).
async fn stored_snapshot(store: &StoreConfig) -> BTreeMap<String, (i64, i64)> {
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
