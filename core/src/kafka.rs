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

/// How far a consumer group is behind on a topic: per partition, the
/// group's committed offset (0 when it has none yet) and the end offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupLag {
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    pub committed: i64,
    pub end: i64,
}

impl GroupLag {
    pub fn committed(&self) -> i64 {
        self.partitions.iter().map(|p| p.committed).sum()
    }

    pub fn end(&self) -> i64 {
        self.partitions.iter().map(|p| p.end).sum()
    }

    /// Messages written to the topic and not yet committed by the group:
    /// with offsets committed only after ClickHouse has the rows, 0 means
    /// every event the collector accepted is in ClickHouse.
    pub fn pending(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| (p.end - p.committed).max(0))
            .sum()
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

    /// The group's committed offset (0 when it has none yet) and the end
    /// offset of every partition of the topic.
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
                lag.partitions.push(PartitionLag {
                    partition: p.id(),
                    committed: 0,
                    end: c.fetch_watermarks(&topic, p.id(), timeout)?.1,
                });
            }
            for e in c.committed_offsets(tpl, timeout)?.elements() {
                if let (Some(o), Some(p)) = (
                    e.offset().to_raw().filter(|o| *o >= 0),
                    lag.partitions
                        .iter_mut()
                        .find(|p| p.partition == e.partition()),
                ) {
                    p.committed = o;
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
