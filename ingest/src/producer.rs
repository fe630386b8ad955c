//! Kafka side of the collector: produce a request's messages (key = visitor
//! id) and wait for every delivery report, so that a 2xx means "in Kafka".

use std::time::{Duration, Instant};

use ensemble_core::event::EventMessage;
use ensemble_core::KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::{Arc, RwLock};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("delivery not confirmed within {0:?}")]
    Timeout(Duration),
    #[error("kafka refused the message: {0}")]
    Kafka(String),
}

impl ProduceError {
    /// Label for the produce-failures metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProduceError::QueueFull => "queue_full",
            ProduceError::Timeout(_) => "timeout",
            ProduceError::Kafka(_) => "kafka_error",
        }
    }
}

#[derive(Clone)]
pub struct EventProducer {
    producer: Arc<RwLock<FutureProducer>>,
    config: ClientConfig,
    topic: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .finish()
    }
}

fn classify(e: KafkaError, timeout: Duration) -> ProduceError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => ProduceError::QueueFull,
        Some(RDKafkaErrorCode::MessageTimedOut) => ProduceError::Timeout(timeout),
        _ => ProduceError::Kafka(e.to_string()),
    }
}

impl EventProducer {
    pub fn new(kafka: &KafkaConfig, delivery_timeout_ms: u64) -> Result<Self, KafkaError> {
        let config = kafka.producer_config(delivery_timeout_ms);
        let producer: FutureProducer = config.create()?;
        Ok(Self {
            producer: Arc::new(RwLock::new(producer)),
            config,
            topic: kafka.topic.clone(),
            delivery_timeout: Duration::from_millis(delivery_timeout_ms),
        })
    }

    /// Enqueues every message, then waits for every delivery report. Returns
    /// how long that took. Any failure fails the whole call: the caller
    /// answers 503 and the client resends (the same event ids: no double count).
    pub async fn send_all(&self, messages: &[EventMessage]) -> Result<Duration, ProduceError> {
        let producer = self.current();
        let result = self.send_with(&producer, messages).await;
        if let Err(e @ (ProduceError::Kafka(_) | ProduceError::Timeout(_))) = &result {
            self.replace(&producer, &e.to_string());
        }
        result
    }

    fn current(&self) -> FutureProducer {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a failed delivery the producer is replaced by a fresh one
    /// (a new producer id), and the old one's queued and in-flight messages
    /// are purged: their requests fail and answer 503, never a false 2xx.
    ///
    /// Why not let librdkafka recover in place: after timed-out messages it
    /// bumps the idempotent producer's epoch on the same producer id, and
    /// tansu 0.6.0 (the broker here) panics in its storage task on that
    /// (`lite.rs:503`, "more or less than one row") and stops accepting any
    /// produce until restarted. A fresh producer is correct on any Kafka.
    fn replace(&self, failed: &FutureProducer, reason: &str) {
        let fresh: FutureProducer = match self.config.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a replacement kafka producer");
                return;
            }
        };
        let old = {
            let mut slot = match self.producer.write() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Another request may have replaced it already.
            if !std::ptr::eq(slot.client().native_ptr(), failed.client().native_ptr()) {
                return;
            }
            std::mem::replace(&mut *slot, fresh)
        };
        tracing::warn!(reason, "kafka producer replaced after a failed delivery");
        old.purge(PurgeConfig::default().queue().inflight());
        // Dropping a producer flushes for up to 500 ms: not on an async worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    async fn send_with(
        &self,
        producer: &FutureProducer,
        messages: &[EventMessage],
    ) -> Result<Duration, ProduceError> {
        let started = Instant::now();
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let payload = m.encode();
            let record = FutureRecord::to(&self.topic)
                .key(&m.visitor_id)
                .payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(classify(e, self.delivery_timeout)),
            }
        }
        // librdkafka enforces message.timeout.ms itself; the outer guard only
        // protects against a report that never comes.
        let guard = self.delivery_timeout + Duration::from_secs(2);
        for delivery in pending {
            match tokio::time::timeout(guard, delivery).await {
                Err(_) => return Err(ProduceError::Timeout(self.delivery_timeout)),
                Ok(Err(_canceled)) => return Err(ProduceError::Kafka("producer shut down".into())),
                Ok(Ok(Err((e, _)))) => return Err(classify(e, self.delivery_timeout)),
                Ok(Ok(Ok(_))) => {}
            }
        }
        Ok(started.elapsed())
    }

    /// Messages waiting in the producer (queued or in flight).
    pub fn queue_depth(&self) -> i32 {
        self.current().in_flight_count()
    }

    /// Flushes what is queued, within `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }
}
