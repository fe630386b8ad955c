//! Consuming: exact counts under replays, an upgrade waiting for its
//! rebuild, a SIGKILL mid-stream, offsets past the topic's end, a ClickHouse
//! outage, poison messages and rows.

use super::*;

#[tokio::test]
async fn n_events_in_n_counted_and_a_replay_changes_nothing() {
    let s = setup(migrated_database("it_proc_exact").await).await;
    let messages: Vec<_> = (0..3000).map(|i| message(1, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce");
    let _p = s.start(&[]);
    s.wait_for(3000).await;
    let raw = s.breakdown().await;
    assert_eq!(
        raw,
        expected_breakdown(&messages),
        "enriched as the campaign file says"
    );

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
    assert_eq!(s.breakdown().await, raw);
    s.assert_figures_match_events().await;
}

/// A database upgraded from a version that stored the figures elsewhere
/// (events, and a row in `rebuild_pending`): the processor does not account
/// anything on top of figures that leave the history out; it says what to
/// do and exits. `rebuild-figures` restores the figures, and then it runs.
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
    let figures = stored_snapshot(&s.store).await;
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
            "rebuild-figures",
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
        stored_snapshot(&s.store).await,
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
    assert_eq!(s.breakdown().await, expected_breakdown(&messages));
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
    assert_eq!(s.breakdown().await, expected_breakdown(&messages));
}

/// Partitions each processor of the group consumed from, per its /metrics
/// (`ensemble_processor_consumer_lag_messages{partition=…}` is set for
/// assigned partitions).

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
    assert_eq!(s.breakdown().await, expected_breakdown(&all));
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
    assert_eq!(
        s.breakdown().await,
        expected_breakdown(&good),
        "every other row, once"
    );
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
