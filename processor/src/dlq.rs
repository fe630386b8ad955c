//! Dead letters: a message the processor cannot use goes to the dead-letter
//! topic with its original bytes and headers saying why and where from, so
//! it never blocks its partition and can be replayed after a fix.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    /// Produces the dead letter and waits for Kafka to confirm it, retrying
    /// until it does: the source offset may only move once the letter is safe.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        detail: &str,
        from: Origin<'_>,
    ) {
        let partition = from.partition.to_string();
        let offset = from.offset.to_string();
        let detail: String = detail.chars().take(1000).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "ensemble-reason",
                    value: Some(reason),
                })
                .insert(Header {
                    key: "ensemble-detail",
                    value: Some(detail.as_str()),
                })
                .insert(Header {
                    key: "ensemble-source-topic",
                    value: Some(from.topic),
                })
                .insert(Header {
                    key: "ensemble-source-partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "ensemble-source-offset",
                    value: Some(offset.as_str()),
                });
            let mut record = FutureRecord::to(&self.topic)
                .payload(payload)
                .headers(headers);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::warn!(error = %e, reason, "dead-letter produce failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
