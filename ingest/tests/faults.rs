//! Faults the real broker cannot produce on demand, injected with
//! librdkafka's mock cluster: Kafka answering a produce request with an error.

mod common;

use ensemble_core::Shutdown;
use ensemble_tests::campaign_file;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn collector(brokers: &str, topic: &str) -> (String, Shutdown) {
    let campaign = campaign_file().display().to_string();
    common::serve(&[
        "--campaign",
        &campaign,
        "--contact-secret",
        "fault-test-secret-0123456789",
        "--kafka-brokers",
        brokers,
        "--kafka-topic",
        topic,
        "--delivery-timeout-ms",
        "3000",
    ])
    .await
}

async fn post(base: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .json(&json!({"type": "qr_scan", "placement": "M-CHATELET", "visitor_id": "v_mocked_01"}))
        .send()
        .await
        .expect("request");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_request_errors_answer_503_or_are_retried() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events.v1", 1, 1).expect("topic");
    let (base, shutdown) = collector(&cluster.bootstrap_servers(), "events.v1").await;

    // A healthy round trip first.
    assert_eq!(post(&base).await.0, StatusCode::OK);

    // Transient errors: librdkafka retries inside the delivery timeout; the client sees 200.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 2],
    );
    let (status, body) = post(&base).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A permanent refusal: 503 with the reason, long before the delivery timeout.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );
    let started = std::time::Instant::now();
    let (status, body) = post(&base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    // What to do, and the request id that finds Kafka's own words in the
    // log: those are not sent to the client.
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("resend the whole request"), "{body}");
    assert!(
        !message.to_lowercase().contains("authorization") && !message.contains("Broker"),
        "{body}"
    );
    assert_eq!(
        body["request_id"].as_str().map(str::len),
        Some(32),
        "{body}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("ensemble_ingest_produce_failures_total{kind=\"kafka_error\"} 1"),
        "the refusal is counted by kind: {metrics}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "not a timeout"
    );

    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let (status, body) = post(&base).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "accepted again after the errors stop: {body}"
    );
    shutdown.trigger();
}
