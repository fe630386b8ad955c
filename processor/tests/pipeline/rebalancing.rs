//! Rebalancing: two processors share the partitions; one leaving, killed
//! or joining mid-insert hands over without counting twice.

use super::*;

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
    assert_eq!(
        s.breakdown().await,
        expected_breakdown(&all),
        "split {split:?}"
    );
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
    let proxy = ensemble_tests::hold::HoldingProxy::start(
        &upstream,
        // The ledger INSERT's statement, in its URL (form-encoded).
        b"query=INSERT+INTO+ledger+%28",
    )
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
    assert_eq!(s.breakdown().await, expected_breakdown(&messages));
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
