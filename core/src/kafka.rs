//! Kafka client settings: brokers and topics, and the producer / consumer
//! configurations every service uses (plain Kafka protocol only).

use clap::Args;
use rdkafka::ClientConfig;

use crate::config::ConfigError;

#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(
        global = true,
        long = "kafka-brokers",
        env = "ENSEMBLE_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Topic of accepted events.
    #[arg(
        global = true,
        long = "kafka-topic",
        env = "ENSEMBLE_KAFKA_TOPIC",
        default_value = "events.v1"
    )]
    pub topic: String,
    /// Topic of messages the processor could not use.
    #[arg(
        global = true,
        long = "kafka-dlq-topic",
        env = "ENSEMBLE_KAFKA_DLQ_TOPIC",
        default_value = "events.dlq.v1"
    )]
    pub dlq_topic: String,
}

/// Legal Kafka topic name: 1–249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn is_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Self {
            brokers: brokers.into(),
            dlq_topic: format!("{topic}.dlq"),
            topic,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.split(',').any(|b| {
            let b = b.trim();
            b.rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        }) {
            return Err(ConfigError::new(
                "--kafka-brokers",
                format!("`{}` must be comma-separated host:port", self.brokers),
            ));
        }
        for (flag, topic) in [
            ("--kafka-topic", &self.topic),
            ("--kafka-dlq-topic", &self.dlq_topic),
        ] {
            if !is_topic_name(topic) {
                return Err(ConfigError::new(
                    flag,
                    format!("`{topic}` is not a legal topic name"),
                ));
            }
        }
        if self.topic == self.dlq_topic {
            return Err(ConfigError::new(
                "--kafka-dlq-topic",
                "must differ from --kafka-topic",
            ));
        }
        Ok(())
    }

    /// Idempotent producer: acks=all, retries inside `delivery_timeout_ms`, lz4.
    pub fn producer_config(&self, delivery_timeout_ms: u64) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", delivery_timeout_ms.to_string())
            .set(
                "request.timeout.ms",
                delivery_timeout_ms.clamp(1000, 30_000).to_string(),
            );
        c
    }

    /// Group consumer that never auto-stores offsets: the application stores
    /// an offset only after its message is safely handled, and librdkafka
    /// commits stored offsets.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000");
        c
    }
}

/// How far before a message [`message_exists`] starts reading.
pub const PROBE_BACK: i64 = 10_000;

/// Whether the broker serves the message at `offset` of `topic`/`partition`
/// (read by a consumer of its own, outside any group, committing nothing).
/// `false` when it does not within `timeout`.
///
/// A committed offset past the end the broker reports is not proof that
/// data was lost: a broker may report its end wrongly (tansu 0.6's
/// in-memory storage answers the first offset of the most recently
/// written batch + 1) while it still serves the messages the group read.
/// Reading the last committed message tells the two apart. The read starts
/// up to [`PROBE_BACK`] messages earlier (not before `low`): that broker
/// serves only whole batches from their first offset on.
pub fn message_exists(
    brokers: &str,
    (topic, partition): (&str, i32),
    (low, offset): (i64, i64),
    timeout: std::time::Duration,
) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "ensemble-offset-probe")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .create();
    let Ok(consumer) = consumer else { return false };
    let mut tpl = rdkafka::TopicPartitionList::new();
    if tpl
        .add_partition_offset(
            topic,
            partition,
            rdkafka::Offset::Offset(offset.saturating_sub(PROBE_BACK).max(low)),
        )
        .and_then(|()| consumer.assign(&tpl))
        .is_err()
    {
        return false;
    }
    let deadline = std::time::Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match consumer.poll(left) {
            Some(Ok(m)) if m.offset() >= offset => return true,
            Some(Ok(_)) => {}
            // The partition's end, an offset out of range, or no message.
            Some(Err(_)) | None => return false,
        }
    }
    false
}

/// True when the brokers answer and `topic` exists with at least one
/// partition (topics are created by the deployment, not auto-created).
pub async fn topic_ready(brokers: &str, topic: &str, timeout: std::time::Duration) -> bool {
    use rdkafka::producer::{BaseProducer, Producer};
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let producer: Result<BaseProducer, _> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create();
        producer.is_ok_and(|p| {
            p.client()
                .fetch_metadata(Some(&topic), timeout)
                .is_ok_and(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let mut k = KafkaConfig::new("127.0.0.1:9092", "events.v1");
        assert!(k.validate().is_ok());
        k.brokers = "localhost".into();
        assert_eq!(
            k.validate().map_err(|e| e.setting).err().as_deref(),
            Some("--kafka-brokers")
        );
        let mut k = KafkaConfig::new("a:1,b:2", "bad topic");
        assert_eq!(
            k.validate().map_err(|e| e.setting).err().as_deref(),
            Some("--kafka-topic")
        );
        k.topic = "events.v1".into();
        k.dlq_topic = "events.v1".into();
        assert_eq!(
            k.validate().map_err(|e| e.setting).err().as_deref(),
            Some("--kafka-dlq-topic")
        );
    }
}

/// How far a consumer group is behind on a topic, per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupLag {
    pub partitions: Vec<PartitionLag>,
}

/// One partition: the group's committed offset (the next message it will
/// read; `None` when it has never committed) and the partition's first and
/// end offsets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    pub committed: Option<i64>,
    pub low: i64,
    pub end: i64,
}

/// What a partition's offsets say about the group's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    /// Everything in the partition is committed.
    UpToDate,
    /// Messages are waiting.
    Behind,
    /// Messages exist and the group never committed here: nobody has
    /// processed this partition yet.
    NoCommit,
    /// The committed offset is past the partition's end: the broker lost or
    /// reset its data. A consumer that trusts that offset reads nothing until
    /// new messages pass it, and skips them. Never "up to date".
    AheadOfEnd,
}

impl PartitionState {
    pub const ALL: [PartitionState; 4] = [
        PartitionState::UpToDate,
        PartitionState::Behind,
        PartitionState::NoCommit,
        PartitionState::AheadOfEnd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PartitionState::UpToDate => "up_to_date",
            PartitionState::Behind => "behind",
            PartitionState::NoCommit => "no_commit",
            PartitionState::AheadOfEnd => "ahead_of_end",
        }
    }
}

impl PartitionLag {
    pub fn state(&self) -> PartitionState {
        match self.committed {
            Some(c) if c > self.end => PartitionState::AheadOfEnd,
            Some(c) if c.max(self.low) >= self.end => PartitionState::UpToDate,
            Some(_) => PartitionState::Behind,
            None if self.end > self.low => PartitionState::NoCommit,
            None => PartitionState::UpToDate,
        }
    }

    /// Messages in the partition the group has not committed (those below
    /// the partition's first offset are gone and do not count). For a
    /// committed offset past the end, the messages that are there: the
    /// group has processed none of them that it knows of.
    pub fn pending(&self) -> i64 {
        match self.committed {
            Some(c) if c > self.end => self.end - self.low,
            Some(c) => self.end - c.max(self.low),
            None => self.end - self.low,
        }
        .max(0)
    }
}

impl GroupLag {
    /// Sum of committed offsets (0 where none): with [`GroupLag::end`], a
    /// quick "has the group caught up" for tests.
    pub fn committed(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| p.committed.unwrap_or(0))
            .sum()
    }

    pub fn end(&self) -> i64 {
        self.partitions.iter().map(|p| p.end).sum()
    }

    /// Messages written to the topic and not yet committed by the group:
    /// with offsets committed only after ClickHouse has the rows, 0 (and
    /// [`GroupLag::up_to_date`]) means every event the collector accepted is
    /// in ClickHouse.
    pub fn pending(&self) -> i64 {
        self.partitions.iter().map(PartitionLag::pending).sum()
    }

    /// Every partition is [`PartitionState::UpToDate`].
    pub fn up_to_date(&self) -> bool {
        self.partitions
            .iter()
            .all(|p| p.state() == PartitionState::UpToDate)
    }

    /// How many partitions are in each state.
    pub fn states(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut out: std::collections::BTreeMap<&'static str, usize> = PartitionState::ALL
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        for p in &self.partitions {
            *out.entry(p.state().as_str()).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod lag_tests {
    use super::*;

    fn p(committed: Option<i64>, low: i64, end: i64) -> PartitionLag {
        PartitionLag {
            partition: 0,
            committed,
            low,
            end,
        }
    }

    #[test]
    fn every_partition_state_and_its_pending_messages() {
        use PartitionState::*;
        let cases = [
            (p(Some(10), 0, 10), UpToDate, 0),
            (p(Some(4), 0, 10), Behind, 6),
            (p(Some(2), 5, 10), Behind, 5),
            (p(Some(5), 5, 5), UpToDate, 0),
            (p(None, 0, 0), UpToDate, 0),
            (p(None, 0, 7), NoCommit, 7),
            (p(None, 3, 7), NoCommit, 4),
            (p(Some(500), 0, 40), AheadOfEnd, 40),
            (p(Some(500), 0, 0), AheadOfEnd, 0),
        ];
        for (lag, state, pending) in cases {
            assert_eq!((lag.state(), lag.pending()), (state, pending), "{lag:?}");
        }
    }

    #[test]
    fn a_group_whose_offsets_are_past_the_end_is_never_up_to_date() {
        let g = GroupLag {
            partitions: vec![p(Some(10), 0, 10), p(Some(900), 0, 0)],
        };
        assert_eq!(g.pending(), 0);
        assert!(!g.up_to_date(), "0 pending, yet the group's offsets lie");
        assert_eq!(g.states()["ahead_of_end"], 1);
        assert_eq!(g.states()["up_to_date"], 1);
        assert_eq!(g.states()["no_commit"], 0);
    }
}

/// Reads a consumer group's progress on a topic over one long-lived client
/// (a consumer configured with the group id that never subscribes, so it
/// never joins the group): a metadata, a watermark and an offset-fetch round
/// trip per read, no client set-up.
pub struct LagReader {
    consumer: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    topic: String,
}

impl std::fmt::Debug for LagReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LagReader {
    pub fn new(brokers: &str, topic: &str, group: &str) -> anyhow::Result<Self> {
        Ok(Self {
            consumer: std::sync::Arc::new(
                KafkaConfig::new(brokers, topic)
                    .consumer_config(group)
                    .create()?,
            ),
            topic: topic.to_owned(),
        })
    }

    /// The group's committed offset and the first and end offsets of
    /// every partition of the topic.
    pub async fn read(&self, timeout: std::time::Duration) -> anyhow::Result<GroupLag> {
        use rdkafka::consumer::Consumer;
        let (c, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            // The client never subscribes: nothing but queued client events
            // (e.g. a broker that went away) can come out; drop them.
            while c.poll(std::time::Duration::ZERO).is_some() {}
            let md = c.fetch_metadata(Some(&topic), timeout)?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| anyhow::anyhow!("topic `{topic}` does not exist"))?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            let mut lag = GroupLag::default();
            for p in t.partitions() {
                tpl.add_partition(&topic, p.id());
                let (low, end) = c.fetch_watermarks(&topic, p.id(), timeout)?;
                lag.partitions.push(PartitionLag {
                    partition: p.id(),
                    committed: None,
                    low,
                    end,
                });
            }
            for e in c.committed_offsets(tpl, timeout)?.elements() {
                if let (Some(o), Some(p)) = (
                    e.offset().to_raw().filter(|o| *o >= 0),
                    lag.partitions
                        .iter_mut()
                        .find(|p| p.partition == e.partition()),
                ) {
                    p.committed = Some(o);
                }
            }
            Ok(lag)
        })
        .await?
    }
}

/// [`LagReader::read`] once, with a client made for the occasion.
pub async fn group_lag(
    brokers: &str,
    topic: &str,
    group: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<GroupLag> {
    LagReader::new(brokers, topic, group)?.read(timeout).await
}
