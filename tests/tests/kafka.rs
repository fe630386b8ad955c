//! The broker is real: idempotent produce, consumer groups, committed
//! offsets, and durability across a broker crash.

use std::collections::BTreeSet;
use std::time::Duration;

use ensemble_core::KafkaConfig;
use ensemble_tests::{create_topic, kafka_brokers, poll_until, unique, PrivateBroker};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Produces `payloads` with the product's idempotent producer settings and
/// waits for every delivery report.
async fn produce(brokers: &str, topic: &str, payloads: &[String]) {
    let producer: FutureProducer = KafkaConfig::new(brokers, topic)
        .producer_config(10_000)
        .create()
        .expect("producer");
    for (i, p) in payloads.iter().enumerate() {
        let key = format!("visitor-{}", i % 7);
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(p),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery report");
    }
}

fn consumer(brokers: &str, topic: &str, group: &str) -> StreamConsumer {
    let c: StreamConsumer = KafkaConfig::new(brokers, topic)
        .consumer_config(group)
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// Receives `n` messages, storing each offset, then commits synchronously.
async fn take_and_commit(c: &StreamConsumer, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = tokio::time::timeout(TIMEOUT, c.recv())
            .await
            .expect("message within the timeout")
            .expect("no consumer error");
        got.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf-8"));
        c.store_offset_from_message(&m).expect("store offset");
    }
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    got
}

/// Every message left in the topic for this consumer, until `expected` are seen
/// and no more arrive for two seconds.
async fn drain(c: &StreamConsumer, expected: usize) -> Vec<String> {
    let mut got = take_and_commit(c, expected).await;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), c.recv()).await {
        got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
    }
    got
}

fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"n\":{i}}}")).collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

#[tokio::test]
async fn a_new_consumer_resumes_at_the_committed_offset() {
    let brokers = kafka_brokers();
    let topic = unique("t_resume");
    let group = unique("g_resume");
    create_topic(&brokers, &topic, 3)
        .await
        .expect("create topic");
    let sent = payloads(30);
    produce(&brokers, &topic, &sent).await;

    let first = {
        let a = consumer(&brokers, &topic, &group);
        take_and_commit(&a, 12).await
        // `a` leaves the group here.
    };
    let b = consumer(&brokers, &topic, &group);
    let rest = drain(&b, 18).await;

    assert_eq!(first.len() + rest.len(), 30, "no message twice, none lost");
    assert!(
        set(&first).is_disjoint(&set(&rest)),
        "resumed past committed work"
    );
    let all: BTreeSet<_> = set(&first).union(&set(&rest)).cloned().collect();
    assert_eq!(all, set(&sent));
}

#[tokio::test]
async fn messages_and_committed_offsets_survive_a_broker_crash() {
    let mut broker = PrivateBroker::start().expect("private tansu");
    let brokers = broker.brokers();
    let topic = unique("t_crash");
    let group = unique("g_crash");
    create_topic(&brokers, &topic, 1)
        .await
        .expect("create topic");
    let sent = payloads(10);
    produce(&brokers, &topic, &sent).await;
    let first = {
        let c = consumer(&brokers, &topic, &group);
        take_and_commit(&c, 4).await
    };
    assert_eq!(first, sent[..4].to_vec(), "one partition keeps order");

    broker.restart().expect("broker restarts after SIGKILL");

    // The committed offset is still 4 …
    let committed = poll_until("committed offsets after restart", TIMEOUT, || {
        let brokers = brokers.clone();
        let (topic, group) = (topic.clone(), group.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let c: rdkafka::consumer::BaseConsumer = KafkaConfig::new(&brokers, &topic)
                    .consumer_config(&group)
                    .create()
                    .ok()?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, 0);
                let got = c.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
                got.find_partition(&topic, 0).map(|p| p.offset())
            })
            .await
            .ok()
            .flatten()
        }
    })
    .await;
    assert_eq!(committed, Offset::Offset(4));

    // … the group resumes there, and every message is still stored.
    let c = consumer(&brokers, &topic, &group);
    assert_eq!(drain(&c, 6).await, sent[4..].to_vec());
    let fresh = consumer(&brokers, &topic, &unique("g_fresh"));
    assert_eq!(drain(&fresh, 10).await, sent);
}

/// The processor's check before rewinding a partition whose committed
/// offset is past the end the broker reports: `message_exists` tells a
/// message the broker serves from one it does not, on both storages —
/// also on the in-memory one, which reports a wrong end and serves only
/// whole batches from their first offset on.
#[tokio::test]
async fn the_probe_tells_a_served_message_from_a_missing_one() {
    use ensemble_core::kafka::message_exists;
    for storage in ["sqlite://data/tansu.db", "memory://tansu/"] {
        let broker = PrivateBroker::start_with_storage(storage).expect("private tansu");
        let brokers = broker.brokers();
        let topic = unique("probe");
        create_topic(&brokers, &topic, 1).await.expect("topic");
        // Many batches, and more messages than the probe reads back.
        let n = 25_000_i64;
        let messages: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (format!("k{i}"), format!("{{\"n\":{i}}}").into_bytes()))
            .collect();
        ensemble_tests::produce_raw(&brokers, &topic, &messages)
            .await
            .expect("produce");
        for (offset, served) in [
            (n - 1, true),
            (n / 2 + 7, true),
            (0, true),
            (n, false),
            (n + 50_000, false),
        ] {
            let (b, t) = (brokers.clone(), topic.clone());
            let found = tokio::task::spawn_blocking(move || {
                message_exists(&b, (&t, 0), (0, offset), Duration::from_secs(10))
            })
            .await
            .expect("probe");
            assert_eq!(found, served, "{storage}: offset {offset} of {n}");
        }
    }
}
