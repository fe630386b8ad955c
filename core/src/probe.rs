//! Background readiness probes: keep a [`Readiness`] component up to date by
//! asking a dependency every few seconds until shutdown.

use std::future::Future;
use std::time::Duration;

use crate::service::Readiness;
use crate::shutdown::Shutdown;

/// Runs `check` now and then every `every`, recording its answer as `component`.
pub fn spawn<F, Fut>(
    readiness: Readiness,
    component: &'static str,
    every: Duration,
    shutdown: Shutdown,
    check: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    readiness.set(component, false);
    tokio::spawn(async move {
        loop {
            let ok = check().await;
            readiness.set(component, ok);
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// Keeps `component` up to date with whether the Kafka topic of `kafka` exists
/// and its brokers answer.
pub fn kafka_topic(
    readiness: Readiness,
    component: &'static str,
    kafka: &crate::KafkaConfig,
    shutdown: Shutdown,
) {
    let (brokers, topic) = (kafka.brokers.clone(), kafka.topic.clone());
    spawn(
        readiness,
        component,
        Duration::from_secs(5),
        shutdown,
        move || {
            let (brokers, topic) = (brokers.clone(), topic.clone());
            async move { crate::kafka::topic_ready(&brokers, &topic, Duration::from_secs(3)).await }
        },
    );
}
